"""The deployment id (`--deployment-id`): made at first start, the configured one when given, then held to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.store import keys
from dockyard.store.db import make_engine, make_sessionmaker
from dockyard.store.migrate import migrate


def test_a_configured_id_is_the_one_made_and_another_is_refused_later(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as db:
            assert keys.deployment_id(db, configured="deploy-a") == "deploy-a"
        keys._known.clear()
        with sessions() as db:
            # Without the option a server keeps the stored id; with another one it refuses to start.
            assert keys.deployment_id(db) == "deploy-a"
            with pytest.raises(keys.DeploymentIdMismatch) as refused:
                keys.deployment_id(db, configured="deploy-b")
            assert str(refused.value) == (
                "the deployment id is 'deploy-b', but this database belongs to deployment 'deploy-a'; "
                "start with --deployment-id deploy-a (or without the option)"
            )
            assert keys.deployment_id(db) == "deploy-a"
    finally:
        keys._known.clear()
        engine.dispose()


def test_a_deployment_id_that_is_no_label_value_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dockyard"), "provisioner", "--data-dir", str(tmp_path / "data"),
         "--deployment-id", "not a label!"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "--deployment-id" in done.stderr
    assert "must be a Kubernetes label value" in done.stderr
    assert not (tmp_path / "data").exists()

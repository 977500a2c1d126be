"""The SDK examples in docs/examples/ run as written, against a real server on the real Docker engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dockyard_sdk import models as m
from tests.live import LiveServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.mark.parametrize("script", ["orchestrator.py", "async_orchestrator.py", "orchestrator_raw_http.py"])
def test_orchestrator_example_runs_and_leaves_nothing(live: LiveServer, script: str) -> None:
    env = {**live.env, "DOCKYARD_URL": live.url, "DOCKYARD_TOKEN": live.token}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    assert "results: ['1', '4', '9', '16', '25']" in done.stdout
    for n in range(1, 6):
        assert f"[{n}] checking {n}" in done.stdout
        assert f"[{n}] 3" in done.stdout
    left = [w for w in live.client.list_workspaces().workspaces if w.status != m.WorkspaceStatus.DELETED]
    assert left == []

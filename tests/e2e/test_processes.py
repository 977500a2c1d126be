"""The real processes: `dockyard server` with no workers of its own, and a separate `dockyard provisioner`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard.runtimes.docker import DockerRuntime
from dockyard_sdk import Client
from dockyard_sdk import models as m

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def processes(tmp_path: Path, database_url: str, engine: DockerRuntime, base_image: str) -> Iterator[Client]:
    port = _free_port()
    env = {
        **os.environ,
        "DOCKYARD_DATABASE_URL": database_url,
        "DOCKYARD_DATA_DIR": str(tmp_path),
        "DOCKYARD_WORKSPACE_SUBNETS": "10.217.0.0/16",
    }
    server = subprocess.Popen(
        [
            DOCKYARD,
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--provisioner-workers",
            "0",
            "--ssh-listen",
            "",
            # Networks made ahead of demand would outlive this test on the shared engine.
            "--warm-networks",
            "0",
        ],
        env=env,
        stdout=(tmp_path / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    provisioner = None
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "admin-token").exists() or not _healthy(port):
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        provisioner = subprocess.Popen(
            [DOCKYARD, "provisioner", "--workers", "2"],
            env=env,
            stdout=(tmp_path / "provisioner.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        client = Client(f"http://127.0.0.1:{port}", (tmp_path / "admin-token").read_text().strip())
        yield client
        for workspace in client.list_workspaces().workspaces:
            client.delete_workspace(workspace.id)
            client.get_workspace(workspace.id, wait="done", timeout=60)
        # The deployment bridge outlives its workspaces (it is the deployment's); unused now, it is pruned.
        client.prune()
        client.close()
    finally:
        for process in (provisioner, server):
            if process is not None:
                process.terminate()
                process.wait(30)


def _healthy(port: int) -> bool:
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            return client.health().status == "ok"
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def test_separate_provisioner_process_runs_the_builds(
    processes: Client, tmp_path: Path, db_kind: str
) -> None:
    created = processes.create_workspace(m.CreateWorkspaceRequest(template="base", name="dev"))
    ws = processes.get_workspace(created.id, wait="done", timeout=120)
    answered = datetime.now(UTC)
    assert ws.status == m.WorkspaceStatus.RUNNING, ws.status_reason
    if db_kind == "postgres":
        # The server's waiting request is woken by the provisioner's event through LISTEN/NOTIFY, not by a
        # re-check (every 5 s); on SQLite each process has its own in-memory pubsub.
        assert ws.latest_build.completed_at is not None
        assert (answered - ws.latest_build.completed_at).total_seconds() < 1.0
    assert "provisioner started" in (tmp_path / "provisioner.log").read_text()
    processes.stop_workspace(ws.id)
    assert processes.get_workspace(ws.id, wait="done", timeout=60).status == m.WorkspaceStatus.STOPPED

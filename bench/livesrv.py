"""A real `dockyard server` process for the benchmarks, on the standard library and the SDK alone.

The same server as `tests/live.py` starts for the tests, without pytest: the benchmarks run from the install's
virtualenv, which has no test tools (`uv sync --no-dev`).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def template_archive(**manifest: object) -> bytes:
    """A template upload holding only its `dockyard.yaml`."""
    data = yaml.safe_dump({"description": "a benchmark template", **manifest}).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("dockyard.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class LiveServer:
    url: str
    ssh_port: int
    data_dir: Path
    token: str
    process: subprocess.Popen[bytes]
    client: Client
    env: dict[str, str] = field(default_factory=dict)

    def workspace(self, name: str, template: str = "base", timeout: float = 120) -> m.Workspace:
        """A running workspace whose agent is ready, created on first use and reused after."""
        existing = [w for w in self.client.list_workspaces(name=name).workspaces if w.name == name]
        if existing:
            ws = existing[0]
            if ws.status in (m.WorkspaceStatus.STOPPED, m.WorkspaceStatus.FAILED):
                self.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.START))
        else:
            ws = self.client.create_workspace(m.CreateWorkspaceRequest(template=template, name=name))
        ready = self.client.get_workspace(ws.id, wait="ready", timeout=timeout)
        if ready.status != m.WorkspaceStatus.RUNNING or ready.agent is None:
            raise RuntimeError(f"workspace {name} did not become ready: {ready.status_reason}")
        return ready


def _healthy(url: str) -> bool:
    try:
        with Client(url) as client:
            return client.health().status == "ok"
    except (ApiError, ConnectionFailed, ValueError):
        return False  # not listening yet, or still starting


def start_live_server(*, subnets: str, extra_env: dict[str, str] | None = None) -> LiveServer:
    # Short path: the agent socket inside it must fit the kernel's 108-byte limit for unix sockets.
    data_dir = Path(tempfile.mkdtemp(prefix="dy-"))
    port, ssh_port = free_port(), free_port()
    env = {
        **os.environ,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_WORKSPACE_SUBNETS": subnets,
        "DOCKYARD_LOG_FORMAT": "json",
        # Networks made ahead of demand would outlive the benchmark's workspaces on a shared engine.
        "DOCKYARD_WARM_NETWORKS": "0",
        **(extra_env or {}),
    }
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            DOCKYARD,
            "server",
            "--listen",
            url.removeprefix("http://"),
            "--ssh-listen",
            f"127.0.0.1:{ssh_port}",
        ],
        env=env,
        stdout=(data_dir / "server.log").open("a"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180  # a loaded 2-core host imports the server slowly
    while not (data_dir / "admin-token").exists() or not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not start; see {data_dir / 'server.log'}")
        time.sleep(0.1)
    token = (data_dir / "admin-token").read_text().strip()
    return LiveServer(url, ssh_port, data_dir, token, process, Client(url, token), env)


def stop_live_server(server: LiveServer) -> None:
    """Delete the server's workspaces (only its own), then stop it."""
    try:
        for ws in server.client.list_workspaces().workspaces:
            if ws.status not in (m.WorkspaceStatus.DELETED, m.WorkspaceStatus.DELETING):
                server.client.get_workspace(ws.id, wait="done", timeout=60)
                server.client.delete_workspace(ws.id)
        for ws in server.client.list_workspaces().workspaces:
            server.client.get_workspace(ws.id, wait="done", timeout=60)
        # The deployment bridge outlives its workspaces (it is the deployment's); unused now, it is pruned.
        server.client.prune()
    finally:
        server.client.close()
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
        shutil.rmtree(server.data_dir, ignore_errors=True)

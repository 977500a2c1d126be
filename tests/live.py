"""A real `dockyard server` process on the real Docker engine, for tests that need real clients (OpenSSH,
WebSockets, the CLI) and for the benchmarks. Use the `live` fixture (module scope: one server per test module).

def test_x(live: LiveServer) -> None:
    ws = live.workspace("dev")          # created from `base`, running, agent ready
    live.client.exec(ws.id, ...)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockyard_sdk import Client
from dockyard_sdk import models as m

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with Client(url) as client:
            return client.health().status == "ok"
    except Exception:  # noqa: BLE001 - not listening yet
        return False


@dataclass
class LiveServer:
    url: str
    ssh_port: int
    data_dir: Path
    token: str
    process: subprocess.Popen[bytes]
    client: Client
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def workspace(self, name: str, template: str = "base", timeout: float = 120) -> m.Workspace:
        """A running workspace whose agent is ready, created on first use and reused after."""
        found = self.client.list_workspaces(name=name).workspaces
        existing = [w for w in found if w.name == name]
        if existing:
            ws = existing[0]
            if ws.status in (m.WorkspaceStatus.STOPPED, m.WorkspaceStatus.FAILED):
                self.client.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.START))
        else:
            ws = self.client.create_workspace(m.CreateWorkspaceRequest(template=template, name=name))
        ready = self.client.get_workspace(ws.id, wait="ready", timeout=timeout)
        assert ready.status == m.WorkspaceStatus.RUNNING, ready.status_reason
        assert ready.agent is not None
        assert ready.agent.lifecycle == m.AgentLifecycle.READY, ready.agent
        return ready

    def log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")

    def restart(self) -> None:
        """Stop the server process and start it again on the same ports and data (agents must re-dial)."""
        self.process.terminate()
        self.process.wait(30)
        self.process = _spawn(self.data_dir, self.url, self.ssh_port, self.env, self.args)
        _await_healthy(self)


def _spawn(
    data_dir: Path, url: str, ssh_port: int, env: dict[str, str], args: list[str] | None = None
) -> subprocess.Popen[bytes]:
    listen = url.removeprefix("http://")
    return subprocess.Popen(
        [DOCKYARD, "server", "--listen", listen, "--ssh-listen", f"127.0.0.1:{ssh_port}", *(args or [])],
        env=env,
        stdout=(data_dir / "server.log").open("a"),
        stderr=subprocess.STDOUT,
    )


def _await_healthy(server: LiveServer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (server.data_dir / "admin-token").exists() or not _healthy(server.url):
        assert server.process.poll() is None, server.log()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def start_live_server(
    database_url: str | None = None,
    *,
    subnets: str = "10.218.0.0/16",
    args: Callable[[str], list[str]] | None = None,
    host: str = "127.0.0.1",
    env_extra: dict[str, str] | None = None,
) -> LiveServer:
    """`args(url)` gives extra `dockyard server` arguments that need the server's URL (e.g. --access-url);
    `host` is the address the server listens on (and the tests reach it by); `env_extra` adds settings."""
    # Short path: the agent socket inside it must fit the kernel's 108-byte limit for unix sockets.
    data_dir = Path(tempfile.mkdtemp(prefix="dy-"))
    port, ssh_port = free_port(), free_port()
    env = {
        **os.environ,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_WORKSPACE_SUBNETS": subnets,
        "DOCKYARD_LOG_FORMAT": "json",
        # Networks made ahead of demand would outlive the test's workspaces on the shared engine.
        "DOCKYARD_WARM_NETWORKS": "0",
    }
    if database_url:
        env["DOCKYARD_DATABASE_URL"] = database_url
    url = f"http://{host}:{port}"
    env.update({k: v.replace("{url}", url) for k, v in (env_extra or {}).items()})
    extra = args(url) if args is not None else []
    process = _spawn(data_dir, url, ssh_port, env, extra)
    server = LiveServer(url, ssh_port, data_dir, "", process, Client(url), env, extra)
    _await_healthy(server)
    server.token = (data_dir / "admin-token").read_text().strip()
    server.client = Client(url, server.token)
    return server


def stop_live_server(server: LiveServer) -> None:
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


@pytest.fixture(scope="module")
def live(base_image: str) -> Iterator[LiveServer]:
    """A `dockyard server` process (SQLite, Docker runtime, SSH gateway) shared by one test module."""
    server = start_live_server()
    try:
        yield server
    finally:
        stop_live_server(server)

"""HA with real processes: two `dockyard server` replicas on one PostgreSQL, a separate `dockyard provisioner`,
Docker workspaces whose agents dial the replicas over the network (docs/ARCHITECTURE.md, "Replicas").

Exec, files and a PTY work through either replica (one of them relays to the other); after `kill -9` of the
replica holding the agent, the agent is back on the survivor within 10 s and the survivor serves it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from dockyard.store.db import normalize_url
from dockyard.store.models import AgentSession, Replica
from dockyard_sdk import Client
from dockyard_sdk import models as m
from dockyard_sdk.streams import PtySize
from tests.live import DOCKYARD, _healthy, free_port

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(900)]

# docker0's address: workspaces reach the replicas through their own bridges; nothing leaves the machine.
HOST = "172.17.0.1"
SUBNETS = "10.221.0.0/16"


class Processes:
    def __init__(self, database_url: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dy-ha-"))
        self.database_url = database_url
        self.ports = [free_port(), free_port()]
        self.urls = [f"http://{HOST}:{port}" for port in self.ports]
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, name: str) -> dict[str, str]:
        data_dir = self.root / name
        data_dir.mkdir(mode=0o700, exist_ok=True)
        return {
            **os.environ,
            "DOCKYARD_DATA_DIR": str(data_dir),
            "DOCKYARD_DATABASE_URL": self.database_url,
            "DOCKYARD_WORKSPACE_SUBNETS": SUBNETS,
            "DOCKYARD_WARM_NETWORKS": "0",
            "DOCKYARD_LOG_FORMAT": "json",
            "DOCKYARD_AGENT_URL": ",".join(self.urls),
        }

    def start(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("a")
        self.running[name] = subprocess.Popen(
            [DOCKYARD, *argv], env=self.env(name), stdout=log, stderr=subprocess.STDOUT
        )

    def server(self, index: int) -> None:
        self.start(
            f"server{index}",
            [
                "server",
                "--listen",
                f"{HOST}:{self.ports[index]}",
                "--relay-url",
                self.urls[index],
                "--ssh-listen",
                "",
                "--provisioner-workers",
                "0",
            ],
        )
        # Generous: on a loaded 2-core machine the server's imports alone have taken over a minute.
        deadline = time.monotonic() + 240
        while not _healthy(self.urls[index]):
            process = self.running[f"server{index}"]
            assert process.poll() is None, self.log(f"server{index}")
            assert time.monotonic() < deadline, "the replica did not start"
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def cluster(database_url: str, db_kind: str, base_image: str) -> Iterator[Processes]:
    if db_kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database: run with --db postgres")
    processes = Processes(database_url)
    try:
        processes.server(0)
        processes.server(1)
        processes.start("provisioner", ["provisioner", "--workers", "2"])
        yield processes
    finally:
        processes.stop()


def _holder(database_url: str, workspace_id: str) -> str | None:
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(Replica.relay_url)
                .join(AgentSession, AgentSession.replica_id == Replica.id)
                .where(AgentSession.workspace_id == workspace_id)
            ).scalar()
    finally:
        engine.dispose()


def test_either_replica_serves_the_agent_and_the_survivor_takes_it_over(cluster: Processes) -> None:
    token = (cluster.root / "server0" / "admin-token").read_text().strip()
    clients = [Client(url, token, timeout=120) for url in cluster.urls]
    created = clients[0].create_workspace(m.CreateWorkspaceRequest(template="base", name="ha"))
    ready = clients[1].get_workspace(created.id, wait="ready", timeout=180)
    assert ready.status == m.WorkspaceStatus.RUNNING, ready.status_reason
    holder = _holder(cluster.database_url, created.id)
    assert holder in cluster.urls
    for index, client in enumerate(clients):
        result = client.exec(created.id, m.ExecRequest(command=f"echo via-{index}; exit {index + 3}"))
        assert (result.exit_code, result.stdout) == (index + 3, f"via-{index}\n")
        client.write_file(created.id, f"from-{index}.txt", f"replica {index}".encode())
    for client in clients:
        assert client.read_file(created.id, "from-0.txt") == b"replica 0"
        assert client.read_file(created.id, "from-1.txt") == b"replica 1"
        # Exits 0 only when its stdin and stdout are a terminal: the PTY reached the agent through this replica.
        with client.exec_stream(
            created.id, m.ExecRequest(command=["sh", "-c", "test -t 0 && test -t 1"]), pty=PtySize(100, 30)
        ) as pty:
            _, _, exited = pty.wait()
        assert exited.exit_code == 0

    dead = cluster.urls.index(holder)
    survivor = 1 - dead
    killed = time.monotonic()
    cluster.running[f"server{dead}"].kill()
    cluster.running[f"server{dead}"].wait()
    while _holder(cluster.database_url, created.id) != cluster.urls[survivor]:
        assert time.monotonic() - killed < 10, cluster.log(f"server{survivor}")
        time.sleep(0.1)
    back = time.monotonic() - killed
    result = clients[survivor].exec(created.id, m.ExecRequest(command=["cat", "from-1.txt"]))
    assert (result.exit_code, result.stdout) == (0, "replica 1")
    shown = clients[survivor].get_workspace(created.id)
    assert shown.agent is not None
    assert shown.agent.status == m.AgentConnection.CONNECTED
    print(f"agent back on the surviving replica {back:.2f} s after kill -9")
    clients[survivor].delete_workspace(created.id)
    done = clients[survivor].get_workspace(created.id, wait="done", timeout=120)
    assert done.status == m.WorkspaceStatus.DELETED
    for client in clients:
        client.close()

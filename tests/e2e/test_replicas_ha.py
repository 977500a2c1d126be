"""HA with real processes: two `dockyard server` replicas on one PostgreSQL, a separate `dockyard provisioner`,
Docker workspaces whose agents dial the replicas over the network (docs/ARCHITECTURE.md, "Replicas").

Exec, files, a PTY and OpenSSH through each replica's gateway work through either replica (one of them relays
to the other). Then, with 20 creates and 20 execs in flight, `kill -9` of the replica holding the agent: its
agents are back on the survivor within 10 s, every workspace (including any create the dead replica committed
before it died) ends running with its agent ready, no build is left behind, every request sent to the survivor
succeeds, and requests sent to the dead replica fail with connection errors only.

The survivor's execs go to the workspace whose agent the dead replica held, issued as the kill lands: they must
wait for the agent to re-dial and then succeed. (An exec already streaming through the dead replica at that
instant cannot survive it, wherever the client sent it: its bytes and the process's pipes ran through the
replica that died.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from dockyard.store.db import normalize_url
from dockyard.store.models import AgentSession, Replica, WorkspaceBuild
from dockyard_sdk import Client
from dockyard_sdk import models as m
from dockyard_sdk.errors import ConnectionFailed
from dockyard_sdk.streams import PtySize
from tests.gateway.conftest import make_key, openssh_for, register_key, text_of
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
        self.ssh_ports = [free_port(), free_port()]
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
                f"127.0.0.1:{self.ssh_ports[index]}",
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
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster(database_url: str, db_kind: str, base_image: str) -> Iterator[Processes]:
    if db_kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database: run with --db postgres")
    processes = Processes(database_url)
    try:
        processes.server(0)
        processes.server(1)
        processes.start("provisioner", ["provisioner", "--workers", "4"])
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


def _held_by(database_url: str, relay_url: str) -> set[str]:
    """The workspaces whose agents the replica at `relay_url` holds, as the database says."""
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    select(AgentSession.workspace_id)
                    .join(Replica, AgentSession.replica_id == Replica.id)
                    .where(Replica.relay_url == relay_url)
                ).scalars()
            )
    finally:
        engine.dispose()


def _unfinished_builds(database_url: str) -> int:
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count())
                    .select_from(WorkspaceBuild)
                    .where(WorkspaceBuild.status != "succeeded")
                )
                or 0
            )
    finally:
        engine.dispose()


LOAD = 20


def _outcome(future: Future[object]) -> str:
    """`ok`, or `connection error` for a replica that could not be reached (or died mid-request); anything
    else (an HTTP error, a timeout) fails the test."""
    try:
        future.result(timeout=300)
    except ConnectionFailed:
        return "connection error"
    return "ok"


def test_either_replica_serves_the_agent_and_the_survivor_takes_it_over(
    cluster: Processes, tmp_path: Path
) -> None:
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
    key = make_key(tmp_path / "keys")
    register_key(clients[0], key)
    for index, client in enumerate(clients):
        assert client.read_file(created.id, "from-0.txt") == b"replica 0"
        assert client.read_file(created.id, "from-1.txt") == b"replica 1"
        # Exits 0 only when its stdin and stdout are a terminal: the PTY reached the agent through this replica.
        with client.exec_stream(
            created.id, m.ExecRequest(command=["sh", "-c", "test -t 0 && test -t 1"]), pty=PtySize(100, 30)
        ) as pty:
            _, _, exited = pty.wait()
        assert exited.exit_code == 0
        # The OpenSSH client through this replica's own gateway (relayed when the other one holds the agent).
        ssh = openssh_for(client, tmp_path / f"ssh-{index}", ("127.0.0.1", cluster.ssh_ports[index]))
        answer = text_of(ssh.run("ha", key, f"cat from-{1 - index}.txt; echo; echo ssh-{index}"))
        assert answer == (0, f"replica {1 - index}\nssh-{index}\n", "")

    dead = cluster.urls.index(holder)
    survivor = 1 - dead
    load_names = [f"load-{i}" for i in range(LOAD)]
    try:
        with ThreadPoolExecutor(2 * LOAD) as pool:

            def create(index: int, name: str) -> m.Workspace:
                return clients[index].create_workspace(m.CreateWorkspaceRequest(template="base", name=name))

            def run(index: int, i: int) -> m.ExecResult:
                result = clients[index].exec(created.id, m.ExecRequest(command=f"sleep 1; echo exec-{i}"))
                assert (result.exit_code, result.stdout) == (0, f"exec-{i}\n"), result
                return result

            sent: list[tuple[int, str, Future[object]]] = []
            submit: Callable[..., Future[object]] = pool.submit
            sent += [(i % 2, "create", submit(create, i % 2, name)) for i, name in enumerate(load_names)]
            sent += [(dead, "exec", submit(run, dead, i)) for i in range(LOAD // 2)]
            # Once one create has been answered by the replica about to die, the others are still on their way.
            first_answered = time.monotonic() + 30
            while not any(f.done() for i, k, f in sent if (i, k) == (dead, "create")):
                assert time.monotonic() < first_answered, "no create answered in 30 s"
                time.sleep(0.02)
            # Read before the kill: an agent re-dials within its jittered backoff (from a few ms), so a read
            # after it can already find the agent on the survivor.
            orphans = _held_by(cluster.database_url, cluster.urls[dead])
            assert created.id in orphans
            cluster.running[f"server{dead}"].kill()
            killed = time.monotonic()
            sent += [(survivor, "exec", submit(run, survivor, i)) for i in range(LOAD // 2, LOAD)]
            cluster.running[f"server{dead}"].wait()
            while moved := orphans & _held_by(cluster.database_url, cluster.urls[dead]):
                assert time.monotonic() - killed < 10, (moved, cluster.log(f"server{survivor}"))
                time.sleep(0.1)
            back = time.monotonic() - killed
            outcomes = [(index, kind, _outcome(future)) for index, kind, future in sent]
        on_survivor = [outcome for outcome in outcomes if outcome[0] == survivor]
        assert {outcome[2] for outcome in on_survivor} == {"ok"}, on_survivor
        assert len(on_survivor) == LOAD  # half the creates and half the execs
        assert {outcome[2] for outcome in outcomes} <= {"ok", "connection error"}

        # Every workspace ends running, including creates the dead replica committed before it died.
        survivor_client = clients[survivor]
        listed = survivor_client.list_workspaces(limit=100).workspaces
        loaded = [ws for ws in listed if ws.name in load_names]
        survived_creates = sum(1 for index, kind, result in outcomes if kind == "create" and result == "ok")
        assert len(loaded) >= survived_creates
        with ThreadPoolExecutor(len(loaded)) as pool:
            final = list(
                pool.map(lambda ws: survivor_client.get_workspace(ws.id, wait="ready", timeout=300), loaded)
            )
        assert {(ws.status, ws.agent.lifecycle if ws.agent else None) for ws in final} == {
            (m.WorkspaceStatus.RUNNING, m.AgentLifecycle.READY)
        }, [(ws.name, ws.status, ws.status_reason, ws.agent) for ws in final]
        held = _held_by(cluster.database_url, cluster.urls[survivor])
        assert {ws.id for ws in final} | {created.id} <= held
        assert _unfinished_builds(cluster.database_url) == 0
        result = survivor_client.exec(created.id, m.ExecRequest(command=["cat", "from-1.txt"]))
        assert (result.exit_code, result.stdout) == (0, "replica 1")
        failed = sum(1 for outcome in outcomes if outcome[2] != "ok")
        print(
            f"kill -9 with {LOAD} creates and {LOAD} execs in flight: {len(orphans)} agents back on the survivor "
            f"{back:.2f} s after the kill, {len(final)} workspaces running, {failed} requests failed (all to "
            "the dead replica, with connection errors)"
        )
    finally:
        _delete_everything(clients[survivor])
    for client in clients:
        client.close()


def _delete_everything(client: Client) -> None:
    """Leave nothing on the shared engine: delete every workspace through the survivor, in parallel."""
    found = [
        ws for ws in client.list_workspaces(limit=100).workspaces if ws.status != m.WorkspaceStatus.DELETED
    ]

    def delete(ws: m.Workspace) -> m.Workspace:
        # A build still in progress (the test failed early) must end before the delete is accepted.
        client.get_workspace(ws.id, wait="done", timeout=300)
        client.delete_workspace(ws.id)
        return client.get_workspace(ws.id, wait="done", timeout=300)

    with ThreadPoolExecutor(max(1, len(found))) as pool:
        done = list(pool.map(delete, found))
    assert {ws.status for ws in done} <= {m.WorkspaceStatus.DELETED}, [(ws.name, ws.status) for ws in done]
    # The deployment bridge outlives its workspaces (it is the deployment's); unused now, it is pruned.
    client.prune()

"""Events across replicas on one PostgreSQL database: waits wake, caches drop, within the promised times."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard.events.bus import RECHECK_POSTGRES
from dockyard_sdk import ApiError, Client
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness, make_harness
from tests.live import DOCKYARD, _healthy, free_port

pytestmark = pytest.mark.postgres

# How soon an event must wake a waiter on the other replica: well short of the re-read it would otherwise wait
# for (RECHECK_POSTGRES, 5 s), with room for a loaded 2-core CI host (one woke after 0.61 s under a full run).
WAKE = 2.0


@pytest.fixture
def replicas(tmp_path: Path, database_url: str, db_kind: str) -> Iterator[tuple[Harness, Harness]]:
    """Replica A runs no workers; replica B runs them. Each has its own pubsub sessions."""
    if db_kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database: run with --db postgres")
    (tmp_path / "a").mkdir()
    a = make_harness(tmp_path / "a", database_url, workers=0)
    # B finds the database set up; it is given A's admin token, which the first start wrote for A.
    (tmp_path / "b" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data" / "admin-token").write_text((a.data_dir / "admin-token").read_text())
    b = make_harness(tmp_path / "b", database_url, workers=2)
    yield a, b
    for harness in (a, b):
        harness.close()


def test_a_wait_on_one_replica_wakes_when_another_replica_finishes_the_build(
    replicas: tuple[Harness, Harness],
) -> None:
    a, _ = replicas
    a.template(name="tmpl")
    started = time.monotonic()
    created = a.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="across"))
    done = a.admin.get_workspace(created.id, wait="done", timeout=30)
    answered = datetime.now(UTC)
    elapsed = time.monotonic() - started
    assert (done.status, done.latest_build.status) == (m.WorkspaceStatus.RUNNING, m.BuildStatus.SUCCEEDED)
    assert done.latest_build.completed_at is not None
    # The wake-up: B's worker finished the build, A's waiting request answered. Without events A would only
    # notice at its 5 s re-check, and B's idle workers would only look at the queue every second.
    wake = (answered - done.latest_build.completed_at).total_seconds()
    assert wake < WAKE, wake
    assert elapsed < RECHECK_POSTGRES - 1, elapsed


def test_a_log_follow_on_one_replica_streams_a_build_run_by_another(
    replicas: tuple[Harness, Harness],
) -> None:
    a, b = replicas
    assert isinstance(b.runtime, FakeRuntime)
    a.template(name="tmpl")
    b.runtime.gate.clear()  # B's worker holds the build before its runtime calls
    created = a.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="logs"))
    received: list[tuple[m.BuildLogLine, datetime]] = []
    ended: list[datetime] = []

    def follow() -> None:
        for line in a.admin.follow_build_logs(created.latest_build.id):
            received.append((line, datetime.now(UTC)))
        ended.append(datetime.now(UTC))

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)
    assert not ended
    b.runtime.gate.set()
    follower.join(15)
    assert ended, "the follow did not end with the build"
    done = a.admin.get_workspace(created.id)
    assert done.latest_build.completed_at is not None
    assert any("started container" in line.output for line, _ in received), received
    # Each line reached A's follower soon after B wrote it, and the follow ended soon after the build did.
    late = [(line.output, (at - line.time).total_seconds()) for line, at in received]
    assert all(seconds < WAKE for _, seconds in late), late
    assert (ended[0] - done.latest_build.completed_at).total_seconds() < WAKE


def test_a_watch_on_one_replica_sees_a_stop_run_by_another(replicas: tuple[Harness, Harness]) -> None:
    a, b = replicas
    a.template(name="tmpl")
    ws = a.await_build(a.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="watch")).id)
    seen: list[tuple[m.WorkspaceStatus, datetime]] = []

    def watch() -> None:
        for event in a.admin.watch_workspace(ws.id):
            seen.append((event.status, datetime.now(UTC)))
            if event.status == m.WorkspaceStatus.STOPPED:
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    b.admin.stop_workspace(ws.id)
    watcher.join(10)
    assert not watcher.is_alive(), seen
    stopped = b.admin.get_workspace(ws.id).latest_build
    assert seen[0][0] == m.WorkspaceStatus.RUNNING
    assert seen[-1][0] == m.WorkspaceStatus.STOPPED
    assert stopped.completed_at is not None
    assert (seen[-1][1] - stopped.completed_at).total_seconds() < WAKE


def _server(data_dir: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # the server refuses a data dir other users can read
    env = {
        **os.environ,
        "DOCKYARD_DATABASE_URL": database_url,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_WORKSPACE_SUBNETS": "10.219.0.0/16",
        "DOCKYARD_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [
            DOCKYARD,
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--ssh-listen",
            "",
            "--provisioner-workers",
            "0",
            "--warm-networks",
            "0",
        ],
        env=env,
        stdout=(data_dir / "server.log").open("a"),
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def _await_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        if _healthy(url):
            return
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


@pytest.fixture
def two_servers(tmp_path: Path, database_url: str, db_kind: str) -> Iterator[tuple[Client, Client]]:
    """Two `dockyard server` processes on one database: their caches are truly apart."""
    if db_kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database: run with --db postgres")
    first, first_url = _server(tmp_path / "a", database_url)
    processes = [first]
    try:
        _await_healthy(first, first_url, tmp_path / "a" / "server.log")
        second, second_url = _server(tmp_path / "b", database_url)
        processes.append(second)
        _await_healthy(second, second_url, tmp_path / "b" / "server.log")
        token = (tmp_path / "a" / "admin-token").read_text().strip()
        with Client(first_url, token) as a, Client(second_url, token) as b:
            yield a, b
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def test_a_token_revoked_through_one_server_is_refused_by_the_other_within_a_second(
    two_servers: tuple[Client, Client],
) -> None:
    a, b = two_servers
    created = a.create_token(m.CreateTokenRequest(name="short-lived", scopes=[m.Scope.ALL]))
    with Client(b.url, created.key) as holder:
        # Used on B a few times: B now answers for it from its cache, without the database.
        for _ in range(3):
            assert holder.me().username == "admin"
        a.revoke_token(created.id)
        revoked = time.monotonic()
        while _accepted(holder):
            assert time.monotonic() - revoked < 5, "the other server still accepts the revoked token"
            time.sleep(0.02)
        refused = time.monotonic() - revoked
        with pytest.raises(ApiError) as error:
            holder.me()
    assert (error.value.status_code, error.value.message) == (401, "Invalid API token.")
    assert refused < 1.0, refused
    assert [t.name for t in a.list_tokens() if t.name == "short-lived"] == []


def _accepted(client: Client) -> bool:
    try:
        client.me()
    except ApiError:
        return False
    return True

"""Leader-run lifecycle loops: one replica at a time on PostgreSQL, failover within 15 s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from dockyard.lifecycle.leader import AdvisoryLease, SingleProcess, make_lease
from dockyard.lifecycle.runner import Background
from dockyard.store.db import libpq_url, make_engine, make_sessionmaker, normalize_url
from tests.fakes import FakeRuntime

FAILOVER = 15.0


def test_sqlite_means_one_process_which_leads(tmp_path: object) -> None:
    lease = make_lease("sqlite:///somewhere.db")
    assert isinstance(lease, SingleProcess)
    assert lease.leading()


@pytest.fixture
def runners(database_url: str, db_kind: str) -> Iterator[Callable[[], Background]]:
    if db_kind != "postgres":
        pytest.skip("leader election needs PostgreSQL: run with --db postgres")
    engine = make_engine(database_url)
    started: list[Background] = []
    runtimes: list[FakeRuntime] = []

    def start() -> Background:
        url = libpq_url(database_url)
        assert url is not None
        runtime = FakeRuntime()
        runtimes.append(runtime)
        background = Background(
            make_sessionmaker(engine), runtime, workers=0, reconcile_interval=0.2, lease=AdvisoryLease(url)
        )
        background.start()
        started.append(background)
        return background

    yield start
    for background in started:
        background.stop()
    for runtime in runtimes:
        runtime.close()
    engine.dispose()


def _leaders(runners: list[Background]) -> list[Background]:
    return [r for r in runners if isinstance(r.lease, AdvisoryLease) and r.lease.held]


def _await_one_leader(runners: list[Background], timeout: float = FAILOVER) -> Background:
    deadline = time.monotonic() + timeout
    while True:
        leaders = _leaders(runners)
        if len(leaders) == 1:
            return leaders[0]
        assert len(leaders) < 2, "two replicas lead at once"
        assert time.monotonic() < deadline, "no replica took the lease"
        time.sleep(0.05)


@pytest.mark.postgres
def test_exactly_one_of_two_replicas_leads(runners: Callable[[], Background]) -> None:
    both = [runners(), runners()]
    leader = _await_one_leader(both)
    follower = next(r for r in both if r is not leader)
    passes = follower.passes
    time.sleep(1.0)
    assert _leaders(both) == [leader]
    assert leader.passes > 1
    # The follower keeps asking for the lease but never runs a pass.
    assert follower.passes == passes == 0


@pytest.mark.postgres
def test_the_other_replica_leads_when_the_leaders_session_is_killed(
    runners: Callable[[], Background], database_url: str
) -> None:
    both = [runners(), runners()]
    leader = _await_one_leader(both)
    follower = next(r for r in both if r is not leader)
    assert isinstance(leader.lease, AdvisoryLease)
    pid = leader.lease.backend_pid
    admin = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
    admin.dispose()
    started = time.monotonic()
    # The old leader's flag is stale until its next check (before its next pass, which it then skips).
    while _leaders(both) != [follower]:
        assert time.monotonic() - started < FAILOVER, "the follower did not take over"
        time.sleep(0.05)
    passes = follower.passes
    time.sleep(0.6)
    assert follower.passes > passes
    assert _leaders(both) == [follower]


@pytest.mark.postgres
def test_the_other_replica_leads_when_the_leader_stops(runners: Callable[[], Background]) -> None:
    both = [runners(), runners()]
    leader = _await_one_leader(both)
    follower = next(r for r in both if r is not leader)
    started = time.monotonic()
    leader.stop()
    assert _await_one_leader([follower]) is follower
    assert time.monotonic() - started < FAILOVER
    assert not _leaders([leader])

"""The warm network pool against the fake runtime: filling, claiming, waiting for builds, shrinking, failing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from dockyard.runtimes.base import RuntimeUnavailable
from dockyard.store.models import WarmNetwork
from dockyard.warmpool import pool as warmpool
from dockyard.warmpool.pool import WarmPool, parse_sizes
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness, make_harness


@pytest.fixture
def wh(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    harness = make_harness(tmp_path, database_url, warm_networks={"open": 2, "internal": 1})
    yield harness
    harness.close()


def _pool(h: Harness) -> WarmPool:
    pool = h.app.state.background.warm_pool
    assert isinstance(pool, WarmPool)
    return pool


def _fake(h: Harness) -> FakeRuntime:
    assert isinstance(h.runtime, FakeRuntime)
    return h.runtime


def _warm(h: Harness, network_class: str) -> set[str]:
    return {w for w, c in _fake(h).network_classes.items() if c == network_class}


def test_the_pool_fills_each_class_and_a_create_takes_a_warm_network(wh: Harness) -> None:
    _pool(wh).fill()
    open_ids, internal_ids = _warm(wh, "open"), _warm(wh, "internal")
    assert (len(open_ids), len(internal_ids)) == (2, 1)
    report = wh.admin.doctor()
    assert report.warm_networks == {"open": 2, "internal": 1}
    assert report.orphans == []  # made for workspaces to come, not left behind

    wh.template(name="tmpl")  # egress: all
    wh.template(name="sealed", network={"egress": "none"})
    ws = wh.workspace(template="tmpl", name="a")
    sealed = wh.workspace(template="sealed", name="b")

    assert ws.status == m.WorkspaceStatus.RUNNING
    assert ws.id in open_ids
    # Egress "none" has no network at all (loopback only): it leaves the pool as it was.
    assert sealed.status == m.WorkspaceStatus.RUNNING
    assert sealed.id not in internal_ids | open_ids
    assert wh.admin.doctor().warm_networks == {"open": 1, "internal": 1}
    _pool(wh).fill()
    assert wh.admin.doctor().warm_networks == {"open": 2, "internal": 1}
    # Deleting a workspace that came from the pool removes its network like any other.
    wh.admin.delete_workspace(ws.id)
    wh.await_build(ws.id)
    assert ws.id not in _fake(wh).networks


def test_creates_arriving_together_each_take_a_different_warm_network(
    tmp_path: Path, database_url: str
) -> None:
    harness = make_harness(tmp_path, database_url, warm_networks={"open": 8})
    try:
        _pool(harness).fill()
        warm = _warm(harness, "open")
        harness.template(name="tmpl")

        def create(index: int) -> str:
            request = m.CreateWorkspaceRequest(template="tmpl", name=f"ws{index}")
            return harness.admin.create_workspace(request).id

        with ThreadPoolExecutor(8) as pool:
            created = set(pool.map(create, range(8)))

        assert created == warm
        assert harness.admin.doctor().warm_networks == {"open": 0, "internal": 0}
        for workspace_id in created:
            harness.await_build(workspace_id)
    finally:
        harness.close()


def test_a_refused_create_takes_nothing_from_the_pool(wh: Harness) -> None:
    _pool(wh).fill()
    wh.workspace(name="a")
    with pytest.raises(ApiError) as taken:
        wh.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="a"))
    assert taken.value.status_code == 409
    assert wh.admin.doctor().warm_networks == {"open": 1, "internal": 1}


def test_the_pool_waits_while_builds_run(wh: Harness) -> None:
    _pool(wh).fill()
    fake = _fake(wh)
    wh.template(name="tmpl")
    fake.gate.clear()  # hold the build mid-flight
    created = wh.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="a"))

    assert _pool(wh).fill() == 0
    assert wh.admin.doctor().warm_networks == {"open": 1, "internal": 1}
    fake.gate.set()
    wh.await_build(created.id)
    assert _pool(wh).fill() == 1
    assert wh.admin.doctor().warm_networks == {"open": 2, "internal": 1}


def test_a_smaller_pool_removes_the_networks_over_its_size(wh: Harness) -> None:
    pool = _pool(wh)
    pool.fill()
    pool.sizes = {"open": 1}

    assert pool.fill() == 2
    assert wh.admin.doctor().warm_networks == {"open": 1, "internal": 0}
    assert _fake(wh).networks == _warm(wh, "open")


def test_networks_removed_behind_the_pools_back_are_made_again(
    wh: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(wh)
    pool.fill()
    pruned = _warm(wh, "open")
    for workspace_id in pruned:  # as `docker network prune` would
        _fake(wh).networks.discard(workspace_id)
        _fake(wh).network_classes.pop(workspace_id)
    assert pool.fill() == 0  # a network may still be in the making shortly after its row was written

    monkeypatch.setattr(warmpool, "LOST_AFTER", timedelta(0))
    assert pool.fill() == 4  # two forgotten, two made
    assert wh.admin.doctor().warm_networks == {"open": 2, "internal": 1}
    assert _warm(wh, "open").isdisjoint(pruned)


def test_a_network_still_in_the_making_is_not_claimed(wh: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The row of a network being made (or whose maker died) is written first; a create must not take it, or
    # its build would make a second network of the same name beside the pool's.
    making = WarmNetwork(network_class="open")
    with wh.app.state.sessions() as db:
        db.add(making)
        db.commit()
        making_id = making.id
    wh.template(name="tmpl")
    ws = wh.workspace(template="tmpl", name="a")
    assert ws.status == m.WorkspaceStatus.RUNNING
    assert ws.id != making_id
    # Its maker died after the engine made the network: the pool removes both once the row has settled.
    _fake(wh).networks.add(making_id)
    _fake(wh).network_classes[making_id] = "open"
    monkeypatch.setattr(warmpool, "LOST_AFTER", timedelta(0))
    _pool(wh).fill()
    assert making_id not in _fake(wh).networks
    assert wh.admin.doctor().warm_networks == {"open": 2, "internal": 1}


def test_an_engine_that_fails_leaves_no_row_behind(wh: Harness) -> None:
    _fake(wh).down = True
    with pytest.raises(RuntimeUnavailable):
        _pool(wh).fill()
    assert wh.admin.doctor().warm_networks == {"open": 0, "internal": 0}


def test_without_warm_networks_a_create_makes_its_own(h: Harness) -> None:
    assert h.app.state.background.warm_pool is None
    ws = h.workspace(name="a")
    assert _fake(h).networks == {ws.id}


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("8", {"open": 8, "internal": 8}),
        ("0", {"open": 0, "internal": 0}),
        ("open=50", {"open": 50, "internal": 0}),
        (" open=3, internal=1 ", {"open": 3, "internal": 1}),
    ],
)
def test_sizes_are_read_from_the_option(text: str, sizes: dict[str, int]) -> None:
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lots", "unknown network class 'lots'"),
        ("open=-1", "must be a whole number, not '-1'"),
        ("egress=2", "unknown network class 'egress'; the classes are open, internal"),
    ],
)
def test_bad_sizes_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_sizes(text)

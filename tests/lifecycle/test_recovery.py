"""Truthful after a crash: builds of dead processes come back at once, a retried start keeps its agent's state,
and a workload killed by a signal says so. (The real `kill -9` of a server is tests/security/test_crash_recovery.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.lifecycle.reconcile import drift_reason, killed_by
from dockyard.provisioner.instance import Instance, Signature
from dockyard.runtimes.base import ContainerState, Observation
from dockyard.store.models import WorkspaceAgent, WorkspaceBuild
from dockyard.tunnel import state
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness


@pytest.mark.parametrize(
    ("state_", "code", "reason"),
    [
        (ContainerState.STOPPED, 137, "the container's workload was killed (SIGKILL)"),
        (ContainerState.STOPPED, 143, "the container was stopped outside Dockyard"),
        (ContainerState.EXITED, 139, "the container exited with code 139: killed (SIGSEGV)"),
        (ContainerState.EXITED, 130, "the container exited with code 130: killed (SIGINT)"),
        (ContainerState.EXITED, 1, "the container exited with code 1: exited with code 1"),
        (ContainerState.OOM_KILLED, 137, "the container was killed for running out of memory"),
        (ContainerState.MISSING, None, "the container was removed outside Dockyard"),
        (ContainerState.STARTING, None, None),
    ],
)
def test_drift_reasons_name_the_signal(state_: ContainerState, code: int | None, reason: str | None) -> None:
    detail = f"exited with code {code}" if state_ == ContainerState.EXITED else ""
    assert drift_reason(Observation("w", state_, code, detail)) == reason


def test_killed_by_reads_only_signal_exit_codes() -> None:
    assert [killed_by(c) for c in (None, 0, 1, 128, 137, 143, 200)] == [
        None,
        None,
        None,
        None,
        "killed (SIGKILL)",
        "killed (SIGTERM)",
        None,
    ]


def test_slots_are_exclusive_and_a_dead_slot_is_known(tmp_path: Path) -> None:
    first = Instance.acquire(tmp_path)
    second = Instance.acquire(tmp_path)
    assert (first.slot, second.slot) == (0, 1)
    assert first.data_id == second.data_id
    assert (tmp_path / "instance-id").stat().st_mode & 0o777 == 0o600
    mine = first.worker_name("worker-0")
    assert Signature.parse(mine) == Signature(first.data_id, 0, first.boot)
    assert Signature.parse("host:1234") is None
    # Its own current signature is alive; an earlier boot of its slot is not.
    assert not first.is_gone(mine)
    assert first.is_gone(f"{first.data_id}:0@00000000/worker-0")
    # Another live process's slot is alive until it ends; another data dir's is never judged here.
    assert not first.is_gone(second.worker_name("worker-1"))
    second.release()
    assert first.is_gone(second.worker_name("worker-1"))
    assert not first.is_gone(f"ffffffffffff:1@{second.boot}/worker-1")
    assert not first.is_gone(None)
    # The freed slot is taken again by the next process, which then owns the dead boot's builds.
    third = Instance.acquire(tmp_path)
    assert third.slot == 1
    assert third.is_gone(second.worker_name("worker-1"))
    first.release()
    third.release()


def test_a_restarted_server_requeues_its_dead_builds_at_once(h: Harness) -> None:
    fake = h.runtime
    assert isinstance(fake, FakeRuntime)
    ws = h.workspace(name="alpha")
    background = h.app.state.background
    instance = background.instance
    assert isinstance(instance, Instance)
    build_id = ws.latest_build.id
    with h.app.state.sessions() as db:
        build = db.get(WorkspaceBuild, build_id)
        assert build is not None
        assert Signature.parse(build.worker) is not None
        # As a previous boot of this slot left it at a kill -9: running, with a fresh heartbeat.
        build.status = m.BuildStatus.RUNNING
        build.completed_at = None
        build.worker = f"{instance.data_id}:{instance.slot}@dead0000/worker-0"
        db.commit()
    fake.calls.clear()
    background.tick()
    done = h.await_build(ws.id)
    assert done.status == m.WorkspaceStatus.RUNNING
    assert done.latest_build.id == build_id
    assert "start" in fake.calls
    with h.app.state.sessions() as db:
        build = db.get(WorkspaceBuild, build_id)
        assert build is not None
        assert build.attempts == 2
        assert build.worker is None or build.worker.startswith(
            f"{instance.data_id}:{instance.slot}@{instance.boot}/"
        )


def test_a_retried_start_keeps_the_agents_state(h: Harness) -> None:
    ws = h.workspace(name="alpha")
    build_id = ws.latest_build.id
    sessions = h.app.state.sessions
    state.connected(sessions, ws.id, "0.1.0")
    state.lifecycle(sessions, ws.id, "ready", 0)
    with sessions() as db:
        state.reset(db, ws.id, build_id)  # the same build, run again after its worker died
        row = db.get(WorkspaceAgent, ws.id)
        assert row is not None
        assert (row.lifecycle, row.connection) == ("ready", "connected")
        state.reset(db, ws.id, "another-build")  # a new start does start over
        db.refresh(row)
        assert (row.lifecycle, row.connection) == ("created", "connecting")


def test_instance_id_survives_restarts(tmp_path: Path) -> None:
    first = Instance.acquire(tmp_path)
    first.release()
    again = Instance.acquire(tmp_path)
    assert again.data_id == first.data_id
    assert again.slot == first.slot
    assert again.boot != first.boot
    again.release()
    assert os.listdir(tmp_path / "instances") == ["slot-0.lock"]

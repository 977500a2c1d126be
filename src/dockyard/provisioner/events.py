"""Workspace, build-log and job events, over the process's pubsub (`dockyard.events`).

Anything that changes a workspace, its latest build or its agent calls `changed(db, workspace_id)` after its
commit; a waiting request (`?wait=`, `/watch`, a log follow) in any process on the same database wakes at once.
The pubsub is found through the session or session factory (`events.bus_of`); with none (a script or a unit
test with a bare session factory) nothing is published, and waiters fall back on their slow re-checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.orm import Session, sessionmaker

from dockyard.events import Waiter, bus_of, channels

Source = Session | sessionmaker[Session]


def changed(source: Source, workspace_id: str) -> None:
    """The workspace, its latest build or its agent changed (call after the commit)."""
    bus = bus_of(source)
    if bus is not None:
        bus.publish(channels.WORKSPACE, workspace_id)


def log_appended(source: Source, build_id: str) -> None:
    bus = bus_of(source)
    if bus is not None:
        bus.publish(channels.BUILD_LOG, build_id)


def job_queued(source: Source, build_id: str) -> None:
    """A build waits to be claimed: idle workers in every process look at the queue."""
    bus = bus_of(source)
    if bus is not None:
        bus.publish(channels.JOBS, build_id)


@asynccontextmanager
async def watching(
    source: Source, *, workspace_id: str, build_id: str | None = None
) -> AsyncIterator[Waiter]:
    """A waiter woken when the workspace changes (or, with `build_id`, when that build's log grows).

    Enter it before reading the state, then `await waiter.wait(waiter.recheck)` between reads: a change made
    while reading still wakes the next wait.
    """
    bus = bus_of(source)
    waiter = Waiter(recheck=bus.recheck if bus is not None else 1.0)
    if bus is not None:
        waiter.watch(bus.workspaces, workspace_id)
        if build_id is not None:
            waiter.watch(bus.build_logs, build_id)
    try:
        yield waiter
    finally:
        waiter.close()


async def wait_for_change(source: Source, workspace_id: str, timeout: float) -> None:
    """Return when the workspace changes or after `timeout` seconds, whichever is first. A change made before
    the call is not seen: loops that read then wait should hold a `watching` waiter instead."""
    async with watching(source, workspace_id=workspace_id) as waiter:
        await waiter.wait(timeout)

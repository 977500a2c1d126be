"""Restart on the server's side: a stop, then a start once the stop has finished.

The builder runs one build at a time per workspace, so a restart is two builds. `dockyard restart` waits for the
stop on the user's machine; the dashboard cannot keep a request open that long, so `begin` queues the stop and
`finish` (a task of the serving process) queues the start when the stop succeeded. The chain lives in that
process: if it stops in between, the workspace stays stopped and says so, which a Start click repairs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from dockyard.accounts.actor import Actor
from dockyard.errors import DockyardError
from dockyard.provisioner import builds, events
from dockyard.store.models import Workspace, WorkspaceBuild
from dockyard.workspaces.status import ACTIVE_BUILD_STATUSES, derive
from dockyard_sdk.models import BuildStatus, Transition, WorkspaceStatus

log = logging.getLogger(__name__)

# A stop that has not finished in this long is left alone; the user sees it on the page.
STOP_TIMEOUT = 30 * 60.0
POLL_SECONDS = 2.0


def begin(db: Session, actor: Actor, workspace: Workspace) -> WorkspaceBuild | None:
    """Queue the first build of a restart (Conflict when one is in progress). Returns the stop build that a
    start must follow, or None when the workspace was not running and the start itself was queued."""
    current = builds.latest_or_none(db, workspace)
    status, _ = derive(workspace, current) if current is not None else (WorkspaceStatus.STOPPED, "")
    if status in (WorkspaceStatus.STOPPED, WorkspaceStatus.CANCELED) or (
        status == WorkspaceStatus.FAILED and current is not None and current.transition == Transition.STOP
    ):
        builds.create_build(db, workspace, Transition.START, actor=actor)
        return None
    return builds.create_build(db, workspace, Transition.STOP, actor=actor)


def _stop_outcome(sessions: sessionmaker[Session], build_id: str) -> str | None:
    with sessions() as db:
        build = db.get(WorkspaceBuild, build_id)
        if build is None:
            return "gone"
        return None if build.status in ACTIVE_BUILD_STATUSES else build.status


async def finish(
    sessions: sessionmaker[Session], actor: Actor, workspace_id: str, stop_build_id: str, *, timeout: float
) -> None:
    """Wait for the stop build, then queue the start if it succeeded and nothing else was queued since."""
    deadline = time.monotonic() + timeout
    outcome = await asyncio.to_thread(_stop_outcome, sessions, stop_build_id)
    while outcome is None:
        if time.monotonic() > deadline:
            log.warning(
                "restart of %s: the stop build %s did not finish in time", workspace_id, stop_build_id
            )
            return
        async with events.watching(sessions, workspace_id=workspace_id) as waiter:
            outcome = await asyncio.to_thread(_stop_outcome, sessions, stop_build_id)
            if outcome is None:
                await waiter.wait(POLL_SECONDS)
                outcome = await asyncio.to_thread(_stop_outcome, sessions, stop_build_id)
    if outcome != BuildStatus.SUCCEEDED:
        log.info("restart of %s: the stop ended %s, so no start follows", workspace_id, outcome)
        return
    await asyncio.to_thread(_start_after, sessions, actor, workspace_id, stop_build_id)


def _start_after(
    sessions: sessionmaker[Session], actor: Actor, workspace_id: str, stop_build_id: str
) -> None:
    with sessions() as db:
        workspace = db.get(Workspace, workspace_id)
        if workspace is None:
            return
        latest = builds.latest_or_none(db, workspace)
        if latest is None or latest.id != stop_build_id:
            return  # someone queued another build meanwhile: theirs wins
        try:
            builds.create_build(db, workspace, Transition.START, actor=actor)
        except DockyardError as exc:
            # A quota reached meanwhile, say: the page shows the workspace stopped; the log says why.
            log.warning("restart of %s: the start was refused: %s", workspace.name, exc.message)

"""Waking workers when a build is queued, and claiming jobs so that no two workers run the same build."""

from __future__ import annotations

import threading

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from dockyard.store.models import WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard_sdk.models import BuildReason, BuildStatus


class Wakeup:
    """In-process signal from the API to the workers; other processes fall back to polling."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        """One build was queued: wake one idle worker for it.

        One, not all: each notify is one build, and with 64 workers waking every idle worker for each build of
        a burst of 50 cost thousands of wake-ups and empty claims, about a fifth of the server's CPU. A woken
        worker that finds nothing goes back to waiting; busy workers look at the queue again when they finish.
        """
        with self._condition:
            self._generation += 1
            self._condition.notify(1)

    def notify_all(self) -> None:
        """Wake every idle worker (at shutdown, so they see the stop)."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout: float, seen: int) -> int:
        with self._condition:
            if self._generation == seen:
                self._condition.wait(timeout)
            return self._generation


wakeup = Wakeup()
# One claim at a time per process. A queued build wakes every idle worker; with dozens of workers on SQLite's
# single writer, each one's claim UPDATE queued for the write lock behind the others (and behind the creates
# that queued the builds) until the busy timeout failed them, creates included. Claims take milliseconds; the
# workers still run their builds at once. Other processes are kept apart by the database, as before.
_claiming = threading.Lock()


def claim(db: Session, worker: str) -> WorkspaceBuild | None:
    """Take the oldest pending build, or None. Commits the claim."""
    with _claiming:
        return _claim(db, worker)


def _claim(db: Session, worker: str) -> WorkspaceBuild | None:
    query = (
        select(WorkspaceBuild.id)
        .where(WorkspaceBuild.status == BuildStatus.PENDING)
        # Warm pool builds go last: refilling a pool must never delay a user's create.
        .order_by(
            case((WorkspaceBuild.reason == BuildReason.PREBUILD.value, 1), else_=0), WorkspaceBuild.created_at
        )
        .limit(1)
    )
    if db.get_bind().dialect.name == "postgresql":
        # SKIP LOCKED so two workers never start the same build, and neither waits for the other.
        query = query.with_for_update(skip_locked=True)
    build_id = db.scalar(query)
    if build_id is None:
        db.rollback()
        return None
    now = utcnow()
    # The status condition makes the claim safe on SQLite too, where there is no row locking: only one
    # worker's UPDATE can still see the build as pending.
    claimed = db.execute(  # type: ignore[attr-defined]
        update(WorkspaceBuild)
        .where(WorkspaceBuild.id == build_id, WorkspaceBuild.status == BuildStatus.PENDING)
        .values(
            status=BuildStatus.RUNNING,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            attempts=WorkspaceBuild.attempts + 1,
        )
    ).rowcount
    db.commit()
    if claimed != 1:
        return None
    return db.get(WorkspaceBuild, build_id)

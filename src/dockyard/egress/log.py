"""The egress connection log: every attempt the proxy saw, per workspace, in `egress_events`.

The proxy's loop must never wait for the database, so attempts go into a queue and one thread writes them in
batches (one transaction per batch). Reads page in SQL, newest first.
"""

from __future__ import annotations

import queue
import threading
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs
from dockyard.egress.proxy import Attempt
from dockyard.store import paging
from dockyard.store.models import EgressEvent
from dockyard.store.types import utcnow

log = logs.get(__name__)

BATCH = 500
# Far more than a burst of connections should ever queue; beyond it attempts are counted as lost, not kept.
MAX_QUEUED = 100_000


class EgressLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        # Items are attempts, an Event that a flush waits on, or None: write what is queued and end.
        self._queue: queue.Queue[tuple[str, datetime, Attempt] | threading.Event | None] = queue.Queue(
            MAX_QUEUED
        )
        self.lost = 0
        self._thread = threading.Thread(target=self._run, name="egress-log", daemon=True)
        self._thread.start()

    def record(self, workspace_id: str, attempt: Attempt) -> None:
        try:
            self._queue.put_nowait((workspace_id, utcnow(), attempt))
        except queue.Full:
            self.lost += 1

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything recorded so far is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued and end the writer's thread (a process makes one log per server it runs)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[str, datetime, Attempt]] = []
            waiters: list[threading.Event] = []
            while True:
                if item is None:
                    stopping = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    batch.append(item)
                if len(batch) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for waiter in waiters:
                waiter.set()

    def _write(self, batch: list[tuple[str, datetime, Attempt]]) -> None:
        try:
            with self.sessions() as db:
                db.add_all(
                    EgressEvent(
                        workspace_id=workspace_id,
                        time=time,
                        protocol=a.protocol,
                        host=a.host[:255],
                        port=a.port,
                        decision=a.decision,
                        reason=a.reason[:255],
                    )
                    for workspace_id, time, a in batch
                )
                db.commit()
        except SQLAlchemyError as exc:
            # A workspace deleted meanwhile (its rows cascade away) or a database that is down: the log is
            # best effort, the decision was already enforced.
            self.lost += len(batch)
            log.warning("egress events not written", count=len(batch), error=str(exc)[:300])


def search(db: Session, workspace_id: str, *, limit: int, offset: int) -> tuple[list[EgressEvent], int]:
    """A page of the workspace's events, newest first, and how many there are."""
    query = select(EgressEvent).where(EgressEvent.workspace_id == workspace_id)
    return paging.newest_first(db, query, EgressEvent.id, limit=limit, offset=offset)

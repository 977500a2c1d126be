"""Warm networks: workspace networks made ahead of demand, so a burst of creates does not queue behind them.

The engine makes bridge networks one at a time (about 0.1 s each, more under load), and every workspace has a
network of its own; fifty creates at once would wait seconds for networks alone. The pool keeps a number of
networks of each class ready (`--warm-networks`), each named and labelled for the id of a workspace that does not exist yet. A
create claims one in its own transaction and becomes the workspace with that id, so its start finds the
network made. The pool refills only while no build is queued or running, so it never competes with the starts
it is there to speed up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.runtimes.base import Runtime, RuntimeFailure
from dockyard.store.models import WarmNetwork, WorkspaceBuild, new_id
from dockyard.store.types import utcnow
from dockyard.warmpool.store import CLASSES, claim, counts
from dockyard_sdk.models import BuildStatus

log = logging.get(__name__)

MAX_BACKOFF = 60.0
LOST_AFTER = timedelta(seconds=60)


def parse_sizes(text: str) -> dict[str, int]:
    """`N` (each class) or `open=N,internal=M` (a class left out gets none)."""
    text = text.strip()
    if text.isdigit():
        return dict.fromkeys(CLASSES, int(text))
    sizes = dict.fromkeys(CLASSES, 0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in sizes:
            raise ValueError(f"unknown network class {name!r}; the classes are {', '.join(CLASSES)}")
        if not value.strip().isdigit():
            raise ValueError(f"the size of {name!r} must be a whole number, not {value.strip()!r}")
        sizes[name] = int(value)
    return sizes


def _builds_in_flight(db: Session) -> bool:
    busy = (BuildStatus.PENDING, BuildStatus.RUNNING)
    return db.scalar(select(WorkspaceBuild.id).where(WorkspaceBuild.status.in_(busy)).limit(1)) is not None


class WarmPool:
    def __init__(self, sessions: sessionmaker[Session], runtime: Runtime, *, sizes: dict[str, int]) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.sizes = sizes
        self.backoff = 0.0

    def fill(self, stop: threading.Event | None = None) -> int:
        """Bring every class to its size: make what is missing while no build runs, remove what is over.

        Returns how many networks were made or removed. Stops early when a build is queued or `stop` is set.
        """
        changed = self._forget_lost()
        for network_class in CLASSES:
            size = self.sizes.get(network_class, 0)
            while not (stop is not None and stop.is_set()):
                with self.sessions() as db:
                    have = counts(db)[network_class]
                    if have > size:
                        self._shrink(db, network_class)
                    elif have == size or _builds_in_flight(db):
                        break
                    else:
                        self._grow(db, network_class)
                changed += 1
        return changed

    def _forget_lost(self) -> int:
        """Drop the rows of warm networks removed behind the pool's back (`docker network prune` removes
        every unused network), so that the pool makes new ones instead of handing out missing ones."""
        with self.sessions() as db:
            # Young rows may belong to a network another process is making right now.
            query = select(WarmNetwork.id, WarmNetwork.ready).where(
                WarmNetwork.created_at < utcnow() - LOST_AFTER
            )
            settled = {warm_id: ready for warm_id, ready in db.execute(query)}
            if not settled:
                return 0
            present = {r.workspace_id for r in self.runtime.managed_resources() if r.kind == "network"}
            # A settled row never marked ready is a process that died while making it: its network, if the
            # engine finished it, is nobody's.
            unfinished = {warm_id for warm_id, ready in settled.items() if not ready}
            for warm_id in unfinished & present:
                self.runtime.delete(warm_id, lambda line: None)
            lost = (set(settled) - present) | unfinished
            if lost:
                db.execute(delete(WarmNetwork).where(WarmNetwork.id.in_(lost)))
                db.commit()
                log.warning("warm networks were removed outside Dockyard; making new ones", count=len(lost))
            return len(lost)

    def _grow(self, db: Session, network_class: str) -> None:
        # The row comes first: until it exists, a network labelled for an unknown workspace is an orphan.
        warm = WarmNetwork(id=new_id(), network_class=network_class)
        db.add(warm)
        db.commit()
        try:
            self.runtime.prepare_network(warm.id, network_class, lambda line: None)
        except RuntimeFailure:
            db.execute(delete(WarmNetwork).where(WarmNetwork.id == warm.id))
            db.commit()
            raise
        db.execute(update(WarmNetwork).where(WarmNetwork.id == warm.id).values(ready=True))
        db.commit()

    def _shrink(self, db: Session, network_class: str) -> None:
        warm_id = claim(db, network_class)
        db.commit()
        if warm_id is not None:
            self.runtime.delete(warm_id, lambda line: None)

    def run(
        self, stop: threading.Event, interval: float, *, leading: Callable[[], bool] = lambda: True
    ) -> None:
        """Refill every `interval` seconds until `stop`, while `leading()` (one replica fills the pool); an
        engine that fails waits longer each time."""
        while not stop.wait(self.backoff or interval):
            if not leading():
                continue
            try:
                self.fill(stop)
                self.backoff = 0.0
            except RuntimeFailure as exc:
                self.backoff = min(MAX_BACKOFF, max(interval, self.backoff * 2))
                log.warning("cannot make warm networks", error=exc.message, retry_in=self.backoff)
            except Exception:
                log.exception("warm network pass failed")

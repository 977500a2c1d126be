"""The pubsub of one control-plane process, and the fan-outs its waiting requests share.

Created by `create_app` (or `dockyard provisioner`) and handed to everything through the session factories
(`store.db.make_sessionmaker(engine, bus=...)`): services already receive a session or a session factory, and a
bus found there is one per application, never a module-level global (two applications in one process, as in
the tests, each have their own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dockyard.events import channels
from dockyard.events.memory import MemoryPubsub
from dockyard.events.postgres import PostgresPubsub
from dockyard.events.pubsub import Pubsub
from dockyard.events.waiters import Fanout

INFO_KEY = "dockyard.bus"


# How often a waiter re-reads what it waits for even without a message. Over PostgreSQL this only guards
# against lost notifications. The in-memory twin cannot hear other processes, and a SQLite deployment may
# still run `dockyard provisioner` beside the server, so there it stays the way their changes are seen.
RECHECK_POSTGRES = 5.0
RECHECK_MEMORY = 1.0
# The in-memory twin where this process is known to be the only one on its database: then every change is
# published here, and the re-read only guards, as over PostgreSQL. Re-reading each waiting request's workspace
# every second was a quarter of the server's CPU in a burst of 50 creates each waiting until ready.
RECHECK_ALONE = 5.0


class Bus:
    def __init__(self, pubsub: Pubsub) -> None:
        self.pubsub = pubsub
        self._postgres = isinstance(pubsub, PostgresPubsub)
        self._alone: Callable[[], bool] | None = None
        self.workspaces = Fanout(pubsub, channels.WORKSPACE)
        self.build_logs = Fanout(pubsub, channels.BUILD_LOG)

    @property
    def recheck(self) -> float:
        if self._postgres:
            return RECHECK_POSTGRES
        return RECHECK_ALONE if self._alone is not None and self._alone() else RECHECK_MEMORY

    def hears_all_when(self, alone: Callable[[], bool]) -> None:
        """`alone()` tells (cheaply) whether this process is the only one writing the database: then the
        in-memory pubsub hears every change, and waiters re-read less often."""
        self._alone = alone

    def publish(self, channel: str, payload: str) -> None:
        self.pubsub.publish(channel, payload)

    def close(self) -> None:
        self.workspaces.close()
        self.build_logs.close()
        self.pubsub.close()


def make_pubsub(libpq_url: str | None) -> Pubsub:
    """PostgreSQL's LISTEN/NOTIFY when the database is PostgreSQL (a libpq URL), else the in-memory twin:
    SQLite means one process."""
    return PostgresPubsub(libpq_url) if libpq_url else MemoryPubsub()


def bus_of(source: Session | sessionmaker[Session]) -> Bus | None:
    """The bus a session (or session factory) was made with; None for factories made without one (scripts,
    unit tests), whose waiters then rely on their re-checks."""
    info: dict[str, Any] = source.info if isinstance(source, Session) else source.kw.get("info") or {}
    bus = info.get(INFO_KEY)
    return bus if isinstance(bus, Bus) else None

"""Which replica runs the lifecycle loops: one at a time, so two never queue the same TTL build or make the
same warm networks.

On PostgreSQL the leader holds a session-level advisory lock on a connection of its own. The lock lives exactly
as long as that session: when the leader stops, crashes or its connection is cut (`pg_terminate_backend`, a
network failure), PostgreSQL releases it and the next replica to try takes it. The leader checks its
connection before every pass, so a leader that lost its session stops acting before its next pass. On SQLite
there is one process, which always leads.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import psycopg

from dockyard import logs as logging
from dockyard.store.db import libpq_url

log = logging.get(__name__)

# One lock per database, hence per deployment: "dockyard" in ASCII, as a bigint.
LOCK_KEY = int.from_bytes(b"dockyard", "big") & (2**63 - 1)
# A follower tries this often, so a leader that went away is replaced within about this long (plus a pass).
FOLLOWER_RETRY = 5.0


class Lease(Protocol):
    def leading(self) -> bool:
        """Whether this process leads now: checks a held lease, or tries to take a free one."""

    def release(self) -> None:
        """Give the lease up (at shutdown), so another replica can take it at once."""


class SingleProcess:
    """SQLite: only one process uses the database, and it leads."""

    def leading(self) -> bool:
        return True

    def release(self) -> None:
        pass


class AdvisoryLease:
    def __init__(self, url: str, *, key: int = LOCK_KEY) -> None:
        """`url` is a libpq URL (see `store.db.libpq_url`)."""
        self.url = url
        self.key = key
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._lock = threading.Lock()
        self._quiet_until = 0.0

    @property
    def held(self) -> bool:
        """The last known state, without a round trip."""
        return self._held

    @property
    def backend_pid(self) -> int | None:
        """The session holding (or trying for) the lock: for tests and diagnostics."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def leading(self) -> bool:
        with self._lock:
            if time.monotonic() < self._quiet_until:
                return False
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                    self._held = False
                if self._held:
                    # The lock is as good as the session holding it: a live session still holds it.
                    self._conn.execute("SELECT 1")
                    return True
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self._held = bool(row and row[0])
                if self._held:
                    log.info("leading the lifecycle loops", session=self._conn.info.backend_pid)
                return self._held
            except psycopg.Error as exc:
                if self._held:
                    log.warning("lost the lifecycle lease with its connection", error=str(exc).strip())
                    # Step aside for a round: the replica whose session was cut is the likelier one to be
                    # in trouble, and a healthy follower takes over meanwhile.
                    self._quiet_until = time.monotonic() + FOLLOWER_RETRY
                else:
                    log.warning("cannot reach the database for the lifecycle lease", error=str(exc).strip())
                self._drop()
                return False

    def release(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        # Closing the session releases a session-level advisory lock; no unlock round trip is needed.
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._held = False


def make_lease(database_url: str) -> Lease:
    url = libpq_url(database_url)
    return AdvisoryLease(url) if url else SingleProcess()

"""Engine and session setup for SQLite (the default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from dockyard.events.bus import INFO_KEY, Bus

# Connections a pool opens beyond its size at its busiest, closed again when they are returned.
MAX_OVERFLOW = 10


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (`postgresql://`, `postgres://`) and pick the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers and the one writer proceed together; busy_timeout makes writers wait instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, *, pool_size: int = 40) -> Engine:
    """`pool_size` matches the request thread pool (40) so busy periods reuse connections, not open new ones."""
    url = normalize_url(url)
    if is_sqlite(url):
        if ":memory:" in url or make_url(url).database in (None, ""):
            engine = create_engine(url, poolclass=NullPool)
        else:
            engine = create_engine(
                url, pool_size=pool_size, max_overflow=MAX_OVERFLOW, connect_args={"check_same_thread": False}
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs every request a round trip. A connection broken by a database restart fails one
    # request and is then discarded by the pool (pool_recycle also retires connections after an hour).
    return create_engine(url, pool_size=pool_size, max_overflow=MAX_OVERFLOW, pool_recycle=3600)


@dataclass(frozen=True)
class Connections:
    """The database's connections as one server process sees them: the most its pool may open, and on
    PostgreSQL how many the server admits (`max_connections` less those reserved for superusers) and how many
    are open now, by every client (each replica, provisioner and gateway process has a pool of its own)."""

    backend: str
    pool_limit: int | None  # None: a connection per use (no pool)
    admitted: int | None = None
    in_use: int | None = None

    @property
    def warning(self) -> str:
        if self.admitted is None:
            return ""
        if self.pool_limit is not None and self.pool_limit > self.admitted:
            return (
                f"one server process may open {self.pool_limit} connections and PostgreSQL admits "
                f"{self.admitted}: raise its max_connections or lower DOCKYARD_PROVISIONER_WORKERS "
                "(every replica's pool counts)"
            )
        if self.in_use is not None and self.in_use * 10 >= self.admitted * 9:
            return f"{self.in_use} of the {self.admitted} connections PostgreSQL admits are open"
        return ""


def connections(db: Session) -> Connections:
    bind = db.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    pool = engine.pool
    limit = pool.size() + MAX_OVERFLOW if isinstance(pool, QueuePool) else None
    backend = engine.dialect.name
    if backend != "postgresql":
        return Connections(backend, limit)
    # `reserved_connections` (PostgreSQL 16) is held back for roles with pg_use_reserved_connections.
    settings: dict[str, int] = dict(
        db.execute(
            text(
                "SELECT name, CAST(setting AS integer) FROM pg_settings WHERE name IN "
                "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
            )
        )
        .tuples()
        .all()
    )
    admitted = settings["max_connections"] - settings.get("superuser_reserved_connections", 0)
    admitted -= settings.get("reserved_connections", 0)
    in_use = db.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
    return Connections(backend, limit, admitted, int(in_use or 0))


def libpq_url(url: str) -> str | None:
    """The URL for a plain libpq connection (the pubsub's and the leader lease's), or None for SQLite."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def make_sessionmaker(engine: Engine, *, bus: Bus | None = None) -> sessionmaker[Session]:
    """`bus`: the process's pubsub, found by services through the sessions they are given (`events.bus_of`)."""
    return sessionmaker(engine, expire_on_commit=False, info={INFO_KEY: bus} if bus is not None else None)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session

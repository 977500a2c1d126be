"""Engine and session setup for SQLite (the default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from dockyard.events.bus import INFO_KEY, Bus


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
                url, pool_size=pool_size, max_overflow=10, connect_args={"check_same_thread": False}
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs every request a round trip. A connection broken by a database restart fails one
    # request and is then discarded by the pool (pool_recycle also retires connections after an hour).
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_recycle=3600)


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

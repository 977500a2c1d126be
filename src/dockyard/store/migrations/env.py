"""Alembic environment: runs with the connection that `dockyard.store.migrate` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from dockyard.store.db import normalize_url
from dockyard.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Used by `alembic revision --autogenerate` during development.
    engine = create_engine(normalize_url(config.get_main_option("sqlalchemy.url") or ""))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()

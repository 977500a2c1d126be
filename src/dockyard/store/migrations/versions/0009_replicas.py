"""replicas and which one holds each agent

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dockyard.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("relay_url", sa.String(length=500), nullable=False),
        sa.Column("started_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    op.create_table(
        "agent_sessions",
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("replica_id", sa.String(length=64), nullable=False),
        sa.Column("connected_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_agent_sessions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_agent_sessions")),
    )
    with op.batch_alter_table("agent_sessions") as batch:
        batch.create_index(batch.f("ix_agent_sessions_replica_id"), ["replica_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_index(batch.f("ix_agent_sessions_replica_id"))
    op.drop_table("agent_sessions")
    op.drop_table("replicas")

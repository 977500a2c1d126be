"""lifetimes and guardrails: activity reasons, stop warnings, autostart, quotas, idempotency keys

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 11:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dockyard.store.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = dockyard.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("last_activity_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("stop_warned_for", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("autostart_timezone", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("autostart_next_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("created_by_token_id", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("cpu_millis", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("memory_bytes", sa.BigInteger(), nullable=True))
        batch.create_index("ix_workspaces_created_by_token_id", ["created_by_token_id"], unique=False)
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("own_workspaces_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "quotas",
        sa.Column("subject_type", sa.String(length=8), nullable=False),
        sa.Column("subject_id", sa.String(length=36), nullable=False),
        sa.Column("max_workspaces", sa.Integer(), nullable=True),
        sa.Column("max_cpu_millis", sa.Integer(), nullable=True),
        sa.Column("max_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("creates_per_minute", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("subject_type", "subject_id", name=op.f("pk_quotas")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotency_keys_user_id")),
    )
    op.create_index(op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("quotas")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("own_workspaces_only")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_index("ix_workspaces_created_by_token_id")
        batch.drop_column("memory_bytes")
        batch.drop_column("cpu_millis")
        batch.drop_column("created_by_token_id")
        batch.drop_column("autostart_next_at")
        batch.drop_column("autostart_timezone")
        batch.drop_column("stop_warned_for")
        batch.drop_column("last_activity_reason")

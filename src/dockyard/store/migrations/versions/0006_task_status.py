"""task status

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dockyard.store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("task_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("task_summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("task_links", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("task_source", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column("task_updated_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("task_updated_at")
        batch.drop_column("task_source")
        batch.drop_column("task_links")
        batch.drop_column("task_summary")
        batch.drop_column("task_state")

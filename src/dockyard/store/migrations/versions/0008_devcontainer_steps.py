"""devcontainer lifecycle steps

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dockyard.store.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devcontainer_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("build_id", sa.String(length=36), nullable=False),
        sa.Column("hook", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("started_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_devcontainer_steps_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devcontainer_steps")),
    )
    op.create_index(
        op.f("ix_devcontainer_steps_workspace_id"), "devcontainer_steps", ["workspace_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_devcontainer_steps_workspace_id"), table_name="devcontainer_steps")
    op.drop_table("devcontainer_steps")

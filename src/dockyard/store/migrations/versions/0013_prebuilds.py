"""prebuilds: warm pool members and how each create became ready

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 15:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("prebuild_preset", sa.String(length=64), nullable=True))
        batch.create_index("ix_workspaces_prebuild_preset", ["prebuild_preset"], unique=False)
    with op.batch_alter_table("workspace_builds") as batch:
        batch.add_column(sa.Column("ready_path", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspace_builds") as batch:
        batch.drop_column("ready_path")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_index("ix_workspaces_prebuild_preset")
        batch.drop_column("prebuild_preset")

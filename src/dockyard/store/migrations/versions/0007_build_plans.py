"""build plans

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 11:50:00.000000

Each start build keeps the plan its template rendered to (runtimes/plan.py). Builds made before this have none:
a retried one renders its plan when it runs, and the agent of a workspace started before the upgrade is
welcomed without scripts (it ran them already).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workspace_builds") as batch:
        batch.add_column(sa.Column("plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspace_builds") as batch:
        batch.drop_column("plan")

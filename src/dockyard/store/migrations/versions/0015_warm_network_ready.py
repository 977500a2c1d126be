"""warm networks are claimable only once made

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows from before are not known to be made: the pool's lost-network pass replaces them.
    with op.batch_alter_table("warm_networks") as batch:
        batch.add_column(sa.Column("ready", sa.Boolean(), nullable=False, server_default=sa.text("false")))


def downgrade() -> None:
    with op.batch_alter_table("warm_networks") as batch:
        batch.drop_column("ready")

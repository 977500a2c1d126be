"""warm networks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dockyard.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "warm_networks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("network_class", sa.String(length=16), nullable=False),
        sa.Column("created_at", dockyard.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warm_networks")),
    )
    op.create_index(op.f("ix_warm_networks_network_class"), "warm_networks", ["network_class"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_warm_networks_network_class"), table_name="warm_networks")
    op.drop_table("warm_networks")

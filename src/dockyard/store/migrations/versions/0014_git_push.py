"""git push limits on tokens and workspaces, per-token webhooks

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("git_push", sa.String(length=16), nullable=False, server_default="any"))
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("git_push", sa.String(length=16), nullable=False, server_default="any"))
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("token_id", sa.String(length=16), nullable=True))
        batch.create_index("ix_webhooks_token_id", ["token_id"], unique=False)
        batch.create_foreign_key(
            "fk_webhooks_token_id_api_tokens", "api_tokens", ["token_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_constraint("fk_webhooks_token_id_api_tokens", type_="foreignkey")
        batch.drop_index("ix_webhooks_token_id")
        batch.drop_column("token_id")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("git_push")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("git_push")

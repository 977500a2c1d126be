"""typed allow-lists: every api_tokens.allow_list entry names its kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 08:00:00.000000

Entries were bare names or ids matched against templates and workspaces alike, so a token limited to the
template `sandbox` also covered any workspace named `sandbox`. Each entry becomes `template:<entry>`, except
an entry that is the id of an existing workspace (an id cannot be mistaken for anything else), which becomes
`workspace:<id>`. Downgrading strips the kinds again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("template:", "workspace:")
_tokens = sa.table("api_tokens", sa.column("id", sa.String), sa.column("allow_list", sa.JSON))
_workspaces = sa.table("workspaces", sa.column("id", sa.String))


def _typed(entry: str, workspace_ids: set[str]) -> str:
    if entry.startswith(KINDS):
        return entry
    return f"workspace:{entry}" if entry in workspace_ids else f"template:{entry}"


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_tokens.c.id, _tokens.c.allow_list)).all()
    listed = [(token_id, entries) for token_id, entries in rows if entries]
    if not listed:
        return
    workspace_ids = {row[0] for row in conn.execute(sa.select(_workspaces.c.id))}
    for token_id, entries in listed:
        typed = sorted({_typed(str(e), workspace_ids) for e in entries})
        conn.execute(sa.update(_tokens).where(_tokens.c.id == token_id).values(allow_list=typed))


def downgrade() -> None:
    conn = op.get_bind()
    for token_id, entries in conn.execute(sa.select(_tokens.c.id, _tokens.c.allow_list)).all():
        if entries:
            bare = sorted({str(e).partition(":")[2] or str(e) for e in entries})
            conn.execute(sa.update(_tokens).where(_tokens.c.id == token_id).values(allow_list=bare))

"""One page of a query, newest first, and how many rows the whole query has: the shape of every log the API
lists (audit, egress)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def newest_first(db: Session, query: Select[T], key: Any, *, limit: int, offset: int) -> tuple[list[T], int]:
    """`limit` rows from `offset`, largest `key` first, and the total count."""
    rows = list(db.scalars(query.order_by(key.desc()).limit(limit).offset(offset)))
    if offset == 0 and len(rows) < limit:
        # The whole result is on the first page: no second statement to count it.
        return rows, len(rows)
    count = db.scalar(select(func.count()).select_from(query.subquery()))
    return rows, int(count or 0)

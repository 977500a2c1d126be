"""The `limit` and `offset` query parameters of every listing that pages (`store/paging.py` runs them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

Limit = Annotated[int, Query(ge=1, le=1000, description="Entries per page.")]
Offset = Annotated[int, Query(ge=0, le=2**31, description="Entries to skip (newest first).")]

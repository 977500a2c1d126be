"""Server-sent events for the workspaces list: one stream per page, not one per workspace row (browsers allow
only six HTTP/1.1 connections to an origin)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from dockyard.accounts.actor import Actor
from dockyard.provisioner import events
from dockyard.web.session import page_actor
from dockyard.workspaces import service as workspaces
from dockyard.workspaces.status import derive
from dockyard_sdk.models import Scope

router = APIRouter(include_in_schema=False)

# Changes made in this process wake the stream at once; this is the fallback for other processes' builds.
POLL_SECONDS = 2.0
# The list page's page size: rendering 200 rows cost ~65 ms of CPU here, 50 about a quarter of it.
PAGE_SIZE = 50

Row = dict[str, str]


def snapshot(
    sessions: sessionmaker[Session],
    actor: Actor,
    template: str | None,
    *,
    owner: str | None = None,
    page: int = 1,
) -> dict[str, Row]:
    """The rows of one page of the list, as the page shows them (its filters but status, which rows leave)."""
    with sessions() as db:
        rows, _ = workspaces.search(
            db, actor, template=template, owner=owner, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
        found = {}
        for loaded in rows:
            status, reason = derive(loaded.workspace, loaded.build)
            found[loaded.workspace.id] = {
                "id": loaded.workspace.id,
                "name": loaded.workspace.name,
                "status": str(status),
                "status_reason": reason,
                "build": f"#{loaded.build.number} {loaded.build.transition} {loaded.build.status}",
            }
        return found


async def _any_change(sessions: sessionmaker[Session], ids: list[str], timeout: float) -> None:
    if not ids:
        await asyncio.sleep(timeout)
        return
    waits = [asyncio.ensure_future(events.wait_for_change(sessions, i, timeout)) for i in ids]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


@router.get("/workspaces/events")
async def workspace_events(
    request: Request,
    actor: Annotated[Actor, Depends(page_actor)],
    template: Annotated[str, Query(max_length=64)] = "",
    owner: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> EventSourceResponse:
    """`event: workspace` with a row's id, status, reason and latest build whenever one changes; a row that
    disappears is sent once as `deleted`. The first events describe every row."""
    actor.require(Scope.WORKSPACE_READ)
    sessions = request.app.state.read_sessions

    async def stream() -> AsyncIterator[bytes]:
        last: dict[str, Row] = {}
        while not await request.is_disconnected():
            current = await run_in_threadpool(
                lambda: snapshot(sessions, actor, template or None, owner=owner or None, page=page)
            )
            for key, row in current.items():
                if last.get(key) != row:
                    yield format_sse_event(data_str=json.dumps(row), event="workspace")
            for key in last.keys() - current.keys():
                gone = {**last[key], "status": "deleted", "status_reason": ""}
                yield format_sse_event(data_str=json.dumps(gone), event="workspace")
            last = current
            await _any_change(sessions, list(current), POLL_SECONDS)

    return EventSourceResponse(stream())

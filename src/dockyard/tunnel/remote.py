"""Agent streams for a process that does not hold the agents' connections (`dockyard gateway`).

Agents dial the server's unix socket, so their connections live in the server's AgentHub. `RemoteHub` offers the
same `open` and `connected` as AgentHub, but asks the server for each stream over a WebSocket
(`api/routes/agentstreams.py`) and learns which agents are connected from the `workspace_agents` table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import select as sql_select
from sqlalchemy.orm import Session, sessionmaker

from dockyard import __version__, logs
from dockyard.errors import (
    BadRequest,
    DockyardError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Validation,
    ValidationFailed,
)
from dockyard.store.models import WorkspaceAgent
from dockyard.store.types import utcnow
from dockyard.tunnel import relay, state
from dockyard.tunnel.frames import FrameStream
from dockyard.tunnel.hub import AgentUnavailable
from dockyard_sdk import models as wire
from dockyard_sdk.streams import denied, websocket_url

log = logs.get(__name__)

# How stale `connected` may be: waiting for an agent polls it about this often anyway.
REFRESH_INTERVAL = 0.5
_ERRORS: dict[int, type[DockyardError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: AgentUnavailable,
}


class RemoteHub:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        url: str,
        token: str,
        *,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.sessions = sessions
        self.url = url.rstrip("/")
        self.token = token
        self.refresh_interval = refresh_interval
        self._connected: frozenset[str] = frozenset()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._connected = await asyncio.to_thread(self._load_connected)
        self._spawn(self._refresh_loop())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- which agents are connected -------------------------------------------------------------------------

    def connected(self, workspace_id: str) -> bool:
        # Synchronous like AgentHub's. On the event loop (the wait loops of tunnel/connect.py, which poll anyway)
        # the refreshed set answers without blocking. In a thread (the gateway resolves a login's target in one)
        # the database answers now: a stale "connected" would skip starting the workspace, a stale "not yet"
        # would make the client wait with a progress line.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return bool(self._load_connected(workspace_id))
        return workspace_id in self._connected

    def _load_connected(self, workspace_id: str | None = None) -> frozenset[str]:
        # A row the server stopped refreshing belongs to a server that died (as state.to_wire judges it).
        query = sql_select(WorkspaceAgent.workspace_id).where(
            WorkspaceAgent.connection == wire.AgentConnection.CONNECTED,
            WorkspaceAgent.last_seen_at >= utcnow() - state.STALE_AFTER,
        )
        if workspace_id is not None:
            query = query.where(WorkspaceAgent.workspace_id == workspace_id)
        with self.sessions() as db:
            return frozenset(db.scalars(query))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                self._connected = await asyncio.to_thread(self._load_connected)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop the refreshes
                log.warning("cannot read agent connections", error=str(exc))

    # --- streams ----------------------------------------------------------------------------------------------

    async def open(self, workspace_id: str, kind: str, **params: Any) -> FrameStream:
        """Ask the server for an agent stream of `kind`; raises the server's refusal as a DockyardError."""
        url = websocket_url(
            self.url,
            f"/api/v2/workspaces/{workspace_id}/agent/stream",
            {"kind": kind, "params": json.dumps(params, separators=(",", ":"))},
        )
        try:
            return await relay.open_stream(
                url, token=self.token, user_agent=f"dockyard-gateway/{__version__}", spawn=self._spawn
            )
        except relay.StreamRefused as exc:
            raise _refusal(exc.status, exc.body, url) from None
        except ConnectionError as exc:
            raise AgentUnavailable(
                "The Dockyard server cannot be reached.", detail=f"{self.url}: {exc}"
            ) from None


def _refusal(status: int, body: bytes, url: str) -> DockyardError:
    error = denied(status, body, url)
    if status == 422:
        return ValidationFailed(
            error.message,
            [Validation(v.field, v.detail) for v in error.validations],
            detail=error.detail,
        )
    return _ERRORS.get(status, ServiceUnavailable)(error.message, detail=error.detail)

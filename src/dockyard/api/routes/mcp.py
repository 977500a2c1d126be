"""`/api/v2/mcp`: the MCP server over streamable HTTP, for a bearer token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from dockyard.accounts.actor import Actor
from dockyard.api.deps import AUTHENTICATED, bearer_key
from dockyard.errors import Unauthorized
from dockyard.mcp.server import CALLER, Caller, build
from dockyard.store import audit

router = APIRouter(tags=["mcp"])


class _Transport(Response):
    """Hands the raw request to the MCP transport, which writes its own (possibly streamed) reply."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        super().__init__()
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)


def own_url(listen: tuple[str, int]) -> str:
    """Where this process answers on loopback, for the tools' API calls made as the caller."""
    host, port = listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@router.api_route(
    "/api/v2/mcp",
    methods=["GET", "POST", "DELETE"],
    summary="MCP server (streamable HTTP)",
    description="Model Context Protocol over streamable HTTP. Needs `Authorization: Bearer`; the tools offered "
    "follow the token's scopes. See docs/MCP.md.",
    response_model=None,
    # A protocol endpoint (JSON-RPC over HTTP), described in docs/MCP.md rather than as REST operations.
    include_in_schema=False,
)
async def mcp_endpoint(request: Request, actor: Annotated[Actor, AUTHENTICATED]) -> Any:
    key = request.headers.get("authorization", "")
    if not key.lower().startswith("bearer "):
        # A session cookie is not enough: a page from another origin could make the browser send it.
        raise Unauthorized("The MCP endpoint needs `Authorization: Bearer <token>`.")
    token = bearer_key(request)
    assert token is not None
    request.scope[CALLER] = Caller(actor, token, own_url(request.app.state.settings.host_port))
    return _Transport(request.app.state.mcp)


def session_manager(sessions: sessionmaker[Session]) -> StreamableHTTPSessionManager:
    """The transport for `/api/v2/mcp`; the app's lifespan runs it (`async with manager.run()`)."""

    def record(actor: Actor, tool: str, arguments: dict[str, Any], outcome: str) -> None:
        with sessions() as db:
            audit.record(
                db,
                actor,
                "mcp.tool_call",
                resource_type="mcp_tool",
                resource_name=tool,
                status_code=200 if outcome == "ok" else 400,
                detail={"arguments": arguments, "outcome": outcome},
            )
            db.commit()

    # Stateless: each POST stands alone, so any replica can answer any call; replies are plain JSON.
    return StreamableHTTPSessionManager(app=build(record), json_response=True, stateless=True)

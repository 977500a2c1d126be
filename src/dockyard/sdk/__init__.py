"""The Dockyard SDK: a Python client for the REST API, and the wire models it shares with the server and the CLI.

    from dockyard.sdk import Client

    client = Client()          # DOCKYARD_URL / DOCKYARD_TOKEN, else the CLI's `dockyard login`
    with client.create("ai-agent-sandbox", ttl="1h") as ws:
        print(ws.exec("uname -a").stdout)

See docs/SDK.md for the whole surface.
"""

from typing import TYPE_CHECKING, Any

from dockyard.sdk.client import Client, pack_template
from dockyard.sdk.errors import (
    ApiError,
    BadRequest,
    BuildFailed,
    Conflict,
    ConnectionFailed,
    DockyardSdkError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Timeout,
    Unauthorized,
    ValidationError,
)
from dockyard.sdk.models import ExecResult
from dockyard.sdk.workspace import Files, Process, Workspace

if TYPE_CHECKING:
    from dockyard.sdk.aio import AsyncClient, AsyncProcess, AsyncWorkspace


def __getattr__(name: str) -> Any:
    # The async client pulls in asyncio; the CLI, which never uses it, starts faster without it.
    if name in ("AsyncClient", "AsyncProcess", "AsyncWorkspace"):
        from dockyard.sdk import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncProcess",
    "AsyncWorkspace",
    "BadRequest",
    "BuildFailed",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DockyardSdkError",
    "ExecResult",
    "Files",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Process",
    "RateLimited",
    "ServerError",
    "Timeout",
    "Unauthorized",
    "ValidationError",
    "Workspace",
    "pack_template",
]

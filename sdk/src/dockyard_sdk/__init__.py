"""The Dockyard SDK: a Python client for the REST API, and the wire models it shares with the server and the CLI.

    from dockyard_sdk import Client

    client = Client()          # DOCKYARD_URL / DOCKYARD_TOKEN, else the CLI's `dockyard login`
    with client.create("ai-agent-sandbox", ttl="1h") as ws:
        print(ws.exec("uname -a").stdout)

See docs/SDK.md for the whole surface. Names load on first use: a program that only reads credentials
(`dockyard_sdk.credentials`, the ProxyCommand) never pays for httpx and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dockyard_sdk.aio import AsyncClient, AsyncProcess, AsyncWorkspace
    from dockyard_sdk.client import Client, pack_template
    from dockyard_sdk.errors import (
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
    from dockyard_sdk.models import ExecResult
    from dockyard_sdk.workspace import Files, Process, Workspace

from dockyard_sdk.version import __version__

_WHERE = {
    "AsyncClient": "aio",
    "AsyncProcess": "aio",
    "AsyncWorkspace": "aio",
    "Client": "client",
    "pack_template": "client",
    "ExecResult": "models",
    "Files": "workspace",
    "Process": "workspace",
    "Workspace": "workspace",
    **{
        name: "errors"
        for name in (
            "ApiError",
            "BadRequest",
            "BuildFailed",
            "Conflict",
            "ConnectionFailed",
            "DockyardSdkError",
            "Forbidden",
            "NotFound",
            "PayloadTooLarge",
            "RateLimited",
            "ServerError",
            "Timeout",
            "Unauthorized",
            "ValidationError",
        )
    },
}

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
    "__version__",
    "pack_template",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dockyard_sdk.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

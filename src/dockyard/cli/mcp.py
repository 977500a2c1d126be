"""`dockyard mcp`: the server's MCP endpoint on stdin/stdout, for MCP hosts that start a local command.

It carries messages between stdio and `/api/v2/mcp` with the CLI's credentials, so the tools, their scopes and
the audit trail are the server's, exactly as for a host that speaks streamable HTTP to the server itself.
"""

from __future__ import annotations

import sys
from typing import Any

from dockyard.cli import config


def mcp() -> None:
    """Serve Dockyard's MCP tools on stdin/stdout (for Claude Code, Cursor and other MCP hosts)."""
    import anyio

    current = config.credentials()
    anyio.run(_bridge, f"{current.url}/api/v2/mcp", current.token)


async def _bridge(url: str, token: str) -> None:
    import anyio
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def pump(source: Any, sink: Any, *, where: str) -> None:
        async with sink:
            async for message in source:
                if isinstance(message, Exception):
                    # A line that is not JSON-RPC, or a transport hiccup: say so on stderr and carry on.
                    print(f"dockyard mcp: {where}: {message}", file=sys.stderr)
                    continue
                await sink.send(message)

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with (
        http,
        stdio_server() as (from_host, to_host),
        streamable_http_client(url, http_client=http) as (from_server, to_server),
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(lambda: pump(from_server, to_host, where="from the server"))
        await pump(from_host, to_server, where="from the host")
        # The host closed stdin: nothing more will be asked, so stop waiting for the server.
        tasks.cancel_scope.cancel()

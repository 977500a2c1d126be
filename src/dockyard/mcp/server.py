"""The MCP server behind `/api/v2/mcp`: tools filtered by the caller's scopes, run as the caller, audited.

The HTTP route authenticates the request as any API request is, then leaves the caller on the ASGI scope
(`CALLER`), where the handlers here find it again through the request the transport attaches to each message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mcp.types as types
import pydantic
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.requests import Request

from dockyard import __version__
from dockyard.accounts.actor import Actor
from dockyard.mcp.tools import BY_NAME, TOOLS, Tool
from dockyard_sdk import ApiError, Client, ConnectionFailed, DockyardSdkError

# The ASGI scope key under which the route leaves the authenticated caller.
CALLER = "dockyard.mcp.caller"


@dataclass(frozen=True)
class Caller:
    actor: Actor
    # The caller's own bearer token and the URL of this server: the tools call the API as the caller.
    token: str
    base_url: str


# Records one tool call: (actor, tool name, arguments summary, outcome).
AuditSink = Callable[[Actor, str, dict[str, Any], str], None]


def _caller(context: ServerRequestContext[Any]) -> Caller:
    request = context.request
    caller = request.scope.get(CALLER) if isinstance(request, Request) else None
    if not isinstance(caller, Caller):
        # Only reachable if the server is mounted without the authenticating route in front of it.
        raise PermissionError("this MCP endpoint needs an authenticated request")
    return caller


def offered(actor: Actor) -> list[Tool]:
    """The tools this actor's token may use: a read-only token sees only the read tools."""
    return [tool for tool in TOOLS if actor.can(tool.scope)]


def _describe(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        description=tool.description,
        input_schema=tool.arguments.model_json_schema(),
        annotations=types.ToolAnnotations(read_only_hint=tool.read_only),
    )


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _argument_problems(exc: pydantic.ValidationError) -> str:
    lines = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        lines.append(f"{where}: {problem['msg']}")
    return "Invalid arguments: " + "; ".join(lines)


def _redacted(arguments: dict[str, Any]) -> dict[str, Any]:
    # File contents and environments can hold secrets and be large; the audit row keeps their size only.
    summary: dict[str, Any] = {}
    for key, value in arguments.items():
        if key in ("content", "env") and value:
            summary[key] = f"<{len(json.dumps(value))} bytes>"
        else:
            summary[key] = value
    return summary


def build(audit: AuditSink) -> Server[Any]:
    async def list_tools(
        context: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_describe(tool) for tool in offered(_caller(context).actor)])

    async def call_tool(
        context: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = _caller(context)
        tool = BY_NAME.get(params.name)
        arguments = dict(params.arguments or {})
        if tool is None or not caller.actor.can(tool.scope):
            # A tool the token may not use looks like one that does not exist, as in list_tools.
            await asyncio.to_thread(audit, caller.actor, params.name, _redacted(arguments), "unknown tool")
            return _error(f"Unknown tool {params.name!r}.")
        try:
            parsed = tool.arguments.model_validate(arguments)
        except pydantic.ValidationError as exc:
            message = _argument_problems(exc)
            await asyncio.to_thread(audit, caller.actor, tool.name, _redacted(arguments), message)
            return _error(message)
        result, outcome = await asyncio.to_thread(_run, tool, caller, parsed)
        await asyncio.to_thread(audit, caller.actor, tool.name, _redacted(arguments), outcome)
        return result

    return Server(
        "dockyard",
        version=__version__,
        instructions="Create and use Dockyard workspaces: isolated development environments for coding agents.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _run(tool: Tool, caller: Caller, arguments: pydantic.BaseModel) -> tuple[types.CallToolResult, str]:
    """Run a tool with the caller's token; API errors become tool errors with the API's own message."""
    with Client(caller.base_url, caller.token, timeout=60) as client:
        try:
            value = tool.run(client, arguments)
        except ApiError as exc:
            return _error(str(exc)), f"error {exc.status_code}"
        except (ConnectionFailed, DockyardSdkError) as exc:
            return _error(str(exc)), "error"
        except (TypeError, ValueError) as exc:
            return _error(f"Invalid arguments: {exc}"), "invalid arguments"
    text = json.dumps(value, indent=1, default=str)
    structured = value if isinstance(value, dict) else {"result": value}
    return (
        types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=json.loads(json.dumps(structured, default=str)),
        ),
        "ok",
    )

"""The MCP server through the official `mcp` client, over streamable HTTP and over `dockyard mcp` (stdio),
against a real server on the real Docker engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from dockyard_sdk import models as m
from mcp import ClientSession, StdioServerParameters, stdio_client
from tests.live import DOCKYARD, LiveServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ALL_TOOLS = {
    "list_templates",
    "list_workspaces",
    "get_workspace",
    "create_workspace",
    "run_command",
    "read_file",
    "write_file",
    "list_files",
    "report_task_status",
    "get_task_status",
    "stop_workspace",
    "delete_workspace",
}


@asynccontextmanager
async def http_session(live: LiveServer, token: str) -> AsyncIterator[ClientSession]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with (
        http,
        streamable_http_client(f"{live.url}/api/v2/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def stdio_session(live: LiveServer, token: str) -> AsyncIterator[ClientSession]:
    env = {**live.env, "DOCKYARD_URL": live.url, "DOCKYARD_TOKEN": token}
    params = StdioServerParameters(command=DOCKYARD, args=["mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def run(flow: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(flow)


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    return json.loads(text)


async def tool_names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_an_agent_runs_a_whole_task_through_mcp(live: LiveServer, transport: str) -> None:
    opener = http_session if transport == "http" else stdio_session
    name = f"mcp-{transport}"
    made: list[str] = []

    async def flow() -> None:
        async with opener(live, live.token) as session:
            assert await tool_names(session) == ALL_TOOLS
            templates = await call(session, "list_templates")
            sandbox = next(t for t in templates if t["name"] == "ai-agent-sandbox")
            assert "task" in [p["name"] for p in sandbox["parameters"]]
            created = await call(
                session, "create_workspace", template="ai-agent-sandbox", name=name, ttl="1h"
            )
            assert (created["name"], created["status"], created["agent"]) == (name, "running", "ready")
            made.append(created["id"])
            await call(session, "write_file", workspace=name, path="app/main.py", content="print(6 * 7)\n")
            ran = await call(session, "run_command", workspace=name, command="python3 main.py", cwd="app")
            assert (ran["exit_code"], ran["stdout"], ran["timed_out"]) == (0, "42\n", False)
            listed = await call(session, "list_files", workspace=name, path="app")
            assert [entry["name"] for entry in listed] == ["main.py"]
            read = await call(session, "read_file", workspace=name, path="app/main.py")
            assert read == {"path": "app/main.py", "content": "print(6 * 7)\n", "base64": False}
            reported = await call(
                session,
                "run_command",
                workspace=name,
                command="dockyard-agent report done 'prints 42' --link pr=https://git.example/app/pull/1",
            )
            assert reported["exit_code"] == 0, reported["stderr"]
            task = await call(session, "get_task_status", workspace=name)
            assert (task["state"], task["summary"], task["source"]) == ("done", "prints 42", "agent")
            assert task["links"] == {"pr": "https://git.example/app/pull/1"}
            await call(session, "report_task_status", workspace=name, state="idle", summary="parked")
            assert (await call(session, "get_task_status", workspace=name))["state"] == "idle"
            stopped = await call(session, "stop_workspace", workspace=name)
            assert stopped["status"] == "stopped"
            deleted = await call(session, "delete_workspace", workspace=name)
            assert deleted["deleting"] is True

    run(flow)
    final = live.client.get_workspace(made[0], wait="done", timeout=60)
    assert final.status == m.WorkspaceStatus.DELETED
    audited = live.client.audit(action="mcp.tool_call", limit=200).audit_logs
    assert {"create_workspace", "run_command", "write_file", "delete_workspace"} <= {
        row.resource_name for row in audited
    }
    write = next(row for row in audited if row.resource_name == "write_file")
    # File contents are not copied into the audit log.
    assert write.detail["arguments"]["content"].endswith("bytes>")


def test_tools_follow_the_token_scopes(live: LiveServer) -> None:
    reader = live.client.create_token(
        m.CreateTokenRequest(name="mcp-reader", scopes=[m.Scope.WORKSPACE_READ, m.Scope.TEMPLATE_READ])
    )

    async def flow() -> None:
        async with http_session(live, reader.key) as session:
            assert await tool_names(session) == {
                "list_templates",
                "list_workspaces",
                "get_workspace",
                "get_task_status",
            }
            refused = await session.call_tool("run_command", {"workspace": "x", "command": "id"})
            assert refused.is_error
            assert refused.content[0].text == "Unknown tool 'run_command'."  # type: ignore[union-attr]

    run(flow)
    denied = live.client.audit(action="mcp.tool_call", user="admin").audit_logs
    assert any(row.detail["outcome"] == "unknown tool" for row in denied)


def test_bad_arguments_and_api_errors_are_tool_errors(live: LiveServer) -> None:
    async def flow() -> None:
        async with http_session(live, live.token) as session:
            missing = await session.call_tool("run_command", {"workspace": "nope"})
            assert missing.is_error
            assert "command: Field required" in missing.content[0].text  # type: ignore[union-attr]
            wrong = await session.call_tool("run_command", {"workspace": "nope", "command": "id", "cwd": 5})
            assert "cwd: Input should be a valid string" in wrong.content[0].text  # type: ignore[union-attr]
            unknown = await session.call_tool(
                "create_workspace", {"template": "base", "ttl": "1h", "colour": "red"}
            )
            assert "colour: Extra inputs are not permitted" in unknown.content[0].text  # type: ignore[union-attr]
            absent = await session.call_tool("get_workspace", {"workspace": "no-such-workspace"})
            assert absent.is_error
            assert "not found" in absent.content[0].text  # type: ignore[union-attr]
            invalid = await session.call_tool(
                "create_workspace", {"template": "ai-agent-sandbox", "parameters": {"ttl_hours": 99}}
            )
            assert "ttl_hours" in invalid.content[0].text  # type: ignore[union-attr]

    run(flow)


def test_the_endpoint_needs_a_bearer_token(live: LiveServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    anonymous = httpx.post(f"{live.url}/api/v2/mcp", json=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == "You are not logged in."
    # A session cookie alone is refused: first by the cross-site check, and by the endpoint if it got through.
    cookie = httpx.post(f"{live.url}/api/v2/mcp", json=body, cookies={"dockyard_session": live.token})
    assert cookie.status_code == 403
    assert cookie.json()["message"] == "Missing or invalid CSRF token."

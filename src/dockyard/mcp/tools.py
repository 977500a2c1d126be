"""The MCP tools: each is one scope, a pydantic model of its arguments, and a call through the SDK.

The tools run as the caller: every call goes through the REST API with the caller's own token, so the API's
authorization, validation and audit apply to MCP exactly as to any other client.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dockyard_sdk import Client
from dockyard_sdk import models as m

WorkspaceRef = Field(max_length=80, description="Workspace id, your workspace's name, or owner/name.")


class Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArguments(Arguments):
    pass


class ListWorkspaces(Arguments):
    status: m.WorkspaceStatus | None = Field(None, description="Only workspaces in this status.")
    template: str | None = Field(None, max_length=64, description="Only workspaces of this template.")


class WorkspaceArgument(Arguments):
    workspace: str = WorkspaceRef


class CreateWorkspace(Arguments):
    template: str = Field(max_length=64, description="Template id or name (see list_templates).")
    name: str | None = Field(None, max_length=32, description="Workspace name; generated when missing.")
    ttl: str | None = Field(None, max_length=16, description="Lifetime such as 1h or 90m.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Template parameter values.")
    wait: bool = Field(True, description="Return once the workspace is ready to run commands.")


class RunCommand(Arguments):
    workspace: str = WorkspaceRef
    command: str = Field(min_length=1, max_length=100_000, description="A shell command, run with sh -c.")
    cwd: str | None = Field(None, max_length=4096, description="Working folder, relative to home.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    timeout: float = Field(120, gt=0, le=3600, description="Seconds before the command is killed.")


class ReadFile(Arguments):
    workspace: str = WorkspaceRef
    path: str = Field(min_length=1, max_length=4096, description="File path, relative to home.")


class WriteFile(Arguments):
    workspace: str = WorkspaceRef
    path: str = Field(min_length=1, max_length=4096, description="File path, relative to home.")
    content: str = Field(max_length=16 * 2**20, description="The whole new content.")
    base64: bool = Field(False, description="`content` is base64 (for binary files).")


class ReportTask(Arguments):
    workspace: str = WorkspaceRef
    state: m.TaskState = Field(description="working, idle, waiting_input, done or failed.")
    summary: str = Field("", max_length=2000, description="What happened, in a line or a few.")
    links: dict[str, str] = Field(
        default_factory=dict, description="Named links such as {'pr': 'https://…/pull/7'}."
    )


class ListFiles(Arguments):
    workspace: str = WorkspaceRef
    path: str = Field(".", max_length=4096, description="Folder, relative to home.")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    scope: m.Scope
    arguments: type[Arguments]
    run: Callable[[Client, Any], Any]
    read_only: bool = False


def _summary(ws: m.Workspace) -> dict[str, Any]:
    return {
        "id": ws.id,
        "name": ws.name,
        "owner": ws.owner_name,
        "template": ws.template_name,
        "status": ws.status.value,
        "status_reason": ws.status_reason,
        "agent": ws.agent.lifecycle.value if ws.agent else None,
        "deadline": ws.deadline.isoformat() if ws.deadline else None,
        "parameters": ws.parameters,
    }


def _templates(client: Client, _: NoArguments) -> list[dict[str, Any]]:
    return [
        {
            "id": t.id,
            "name": t.name,
            "description": t.description,
            "parameters": [
                {
                    "name": p.name,
                    "type": p.type.value,
                    "default": p.default,
                    "options": [option.value for option in p.options],
                    "description": p.description,
                }
                for p in (t.active_version.manifest.parameters if t.active_version else [])
            ],
        }
        for t in client.list_templates()
    ]


def _list(client: Client, args: ListWorkspaces) -> list[dict[str, Any]]:
    found = client.list_workspaces(status=args.status, template=args.template)
    return [_summary(ws) for ws in found.workspaces]


def _get(client: Client, args: WorkspaceArgument) -> dict[str, Any]:
    return _summary(client.get_workspace(args.workspace))


def _create(client: Client, args: CreateWorkspace) -> dict[str, Any]:
    ws = client.create(
        args.template,
        name=args.name,
        ttl=args.ttl,
        parameters=args.parameters,
        wait="ready" if args.wait else None,
        keep=True,
    )
    return _summary(ws.info)


def _run(client: Client, args: RunCommand) -> dict[str, Any]:
    result = client.get(args.workspace).exec(args.command, cwd=args.cwd, env=args.env, timeout=args.timeout)
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "timed_out": result.timed_out,
        "truncated": result.truncated,
    }


def _read(client: Client, args: ReadFile) -> dict[str, Any]:
    data = client.read_file(args.workspace, args.path)
    try:
        return {"path": args.path, "content": data.decode(), "base64": False}
    except UnicodeDecodeError:
        return {"path": args.path, "content": base64.b64encode(data).decode(), "base64": True}


def _write(client: Client, args: WriteFile) -> dict[str, Any]:
    data = base64.b64decode(args.content, validate=True) if args.base64 else args.content.encode()
    written = client.write_file(args.workspace, args.path, data)
    return {"path": args.path, "size": written.size}


def _files(client: Client, args: ListFiles) -> list[dict[str, Any]]:
    listing = client.list_files(args.workspace, args.path)
    return [{"name": e.name, "type": e.type, "size": e.size} for e in listing.entries]


def _task_summary(ws: m.Workspace) -> dict[str, Any]:
    task = ws.task
    if task is None:
        return {"workspace": ws.name, "state": None}
    return {
        "workspace": ws.name,
        "state": task.state.value,
        "summary": task.summary,
        "links": {link.name: link.url for link in task.links},
        "source": task.source,
        "updated_at": task.updated_at.isoformat(),
    }


def _report_task(client: Client, args: ReportTask) -> dict[str, Any]:
    links = [m.TaskLink(name=name, url=url) for name, url in args.links.items()]
    report = m.TaskReport(state=args.state, summary=args.summary, links=links)
    return _task_summary(client.report_task(args.workspace, report))


def _get_task(client: Client, args: WorkspaceArgument) -> dict[str, Any]:
    return _task_summary(client.get_workspace(args.workspace))


def _stop(client: Client, args: WorkspaceArgument) -> dict[str, Any]:
    client.stop_workspace(args.workspace)
    return _summary(client.get_workspace(args.workspace, wait="done", timeout=120))


def _delete(client: Client, args: WorkspaceArgument) -> dict[str, Any]:
    build = client.delete_workspace(args.workspace)
    return {"workspace": build.workspace_name, "deleting": True, "build": build.id}


TOOLS: tuple[Tool, ...] = (
    Tool(
        "list_templates",
        "List the templates you can create workspaces from, with their parameters.",
        m.Scope.TEMPLATE_READ,
        NoArguments,
        _templates,
        read_only=True,
    ),
    Tool(
        "list_workspaces",
        "List your workspaces with their status.",
        m.Scope.WORKSPACE_READ,
        ListWorkspaces,
        _list,
        read_only=True,
    ),
    Tool(
        "get_workspace",
        "Show one workspace: status, agent, deadline, parameters.",
        m.Scope.WORKSPACE_READ,
        WorkspaceArgument,
        _get,
        read_only=True,
    ),
    Tool(
        "create_workspace",
        "Create a workspace from a template and wait until it is ready to run commands.",
        m.Scope.WORKSPACE_CREATE,
        CreateWorkspace,
        _create,
    ),
    Tool(
        "run_command",
        "Run a shell command in a workspace and return its exit code and output.",
        m.Scope.WORKSPACE_CONNECT,
        RunCommand,
        _run,
    ),
    Tool(
        "read_file",
        "Read a file from a workspace (text, or base64 for binary content).",
        m.Scope.WORKSPACE_CONNECT,
        ReadFile,
        _read,
    ),
    Tool(
        "write_file",
        "Write a whole file in a workspace, creating its folders.",
        m.Scope.WORKSPACE_CONNECT,
        WriteFile,
        _write,
    ),
    Tool(
        "list_files",
        "List a folder in a workspace.",
        m.Scope.WORKSPACE_CONNECT,
        ListFiles,
        _files,
    ),
    Tool(
        "report_task_status",
        "Report the coding task's state in a workspace (working, idle, waiting_input, done, failed).",
        m.Scope.WORKSPACE_OPERATE,
        ReportTask,
        _report_task,
    ),
    Tool(
        "get_task_status",
        "Read the coding task's last reported state in a workspace, with its summary and links.",
        m.Scope.WORKSPACE_READ,
        WorkspaceArgument,
        _get_task,
        read_only=True,
    ),
    Tool(
        "stop_workspace",
        "Stop a workspace; its home folder is kept for the next start.",
        m.Scope.WORKSPACE_OPERATE,
        WorkspaceArgument,
        _stop,
    ),
    Tool(
        "delete_workspace",
        "Delete a workspace and everything in it.",
        m.Scope.WORKSPACE_DELETE,
        WorkspaceArgument,
        _delete,
    ),
)

BY_NAME = {tool.name: tool for tool in TOOLS}

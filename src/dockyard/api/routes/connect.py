"""Ways into a running workspace through its agent: exec, files, terminals and port dials."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, WebSocket, WebSocketDisconnect, status
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, HubDep, WorkspaceParam, scoped
from dockyard.errors import BadRequest, PayloadTooLarge, Validation, ValidationFailed
from dockyard.tunnel import bridge, connect, state, streams
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["connect"])

# Uploads stream through to the agent, so this bounds disk use in the workspace, not server memory.
MAX_UPLOAD_BYTES = 512 * 2**20
Connect = Annotated[Actor, scoped(Scope.WORKSPACE_CONNECT)]
PathQuery = Annotated[
    str, Query(min_length=1, max_length=4096, description="Absolute, or relative to the home folder.")
]


async def _ready(
    request: Request | WebSocket, db: DbSession, workspace_id: str, hub: HubDep, *, touch: str | None = None
) -> None:
    """Refuse unless the workspace runs with its agent connected; `touch` records a one-shot use of it (its
    reason, e.g. `files`)."""
    # A session can last hours; it must not hold a pooled database connection all that time.
    db.close()
    sessions = request.app.state.sessions
    await connect.require_running(sessions, hub, workspace_id)
    if touch:
        await asyncio.to_thread(state.touch, sessions, workspace_id, touch)


async def _audit(
    request: Request | WebSocket, actor: Actor, workspace_id: str, action: str, **detail: Any
) -> None:
    await asyncio.to_thread(state.record_use, request.app.state.sessions, actor, workspace_id, action, detail)


def _command(command: list[str] | str) -> str:
    return (command if isinstance(command, str) else " ".join(command))[:500]


@router.post("/api/v2/workspaces/{workspace}/exec")
async def exec_command(
    request: Request,
    body: wire.ExecRequest,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Connect,
    hub: HubDep,
) -> wire.ExecResult:
    """Run a command in the running workspace and return its exit code and output when it ends."""
    await _ready(request, db, workspace.id, hub)
    await _audit(request, actor, workspace.id, "workspace.exec", command=_command(body.command))
    activity = asyncio.ensure_future(bridge.keep_active(request.app.state.sessions, workspace.id, "exec"))
    try:
        return await streams.exec_collect(hub, workspace.id, body)
    finally:
        activity.cancel()


@router.websocket("/api/v2/workspaces/{workspace}/exec/stream")
async def exec_stream(
    websocket: WebSocket, db: DbSession, workspace: WorkspaceParam, actor: Connect, hub: HubDep
) -> None:
    """First client message: ExecStreamRequest as JSON text. Then binary = stdin, text JSON = eof, resize or
    signal. Server: binary tagged 1 (stdout) or 2 (stderr), then text JSON `{"type": "exit", ...}`."""
    await _ready(websocket, db, workspace.id, hub)
    await websocket.accept()
    try:
        first = await websocket.receive_text()
    except WebSocketDisconnect:
        return  # the client left before asking for anything: nothing to do, nothing went wrong
    try:
        start = wire.ExecStreamRequest.model_validate_json(first)
    except (ValidationError, ValueError) as exc:
        raise ValidationFailed(
            "Invalid exec request.",
            [Validation(".".join(str(p) for p in e["loc"]), e["msg"]) for e in getattr(exc, "errors", list)()]
            or [Validation("body", str(exc))],
        ) from exc
    await _audit(
        websocket, actor, workspace.id, "workspace.exec", command=_command(start.command), stream=True
    )
    params = streams.exec_params(start.command, start.cwd, start.env)
    if start.pty is not None:
        params["pty"] = start.pty.model_dump()
    stream = await hub.open(workspace.id, "exec", **params)
    exit_message: dict[str, Any] = {}
    try:
        await asyncio.wait_for(
            bridge.run_until_first(
                bridge.client_to_agent(websocket, stream, control={"eof", "resize", "signal"}),
                bridge.agent_to_client(
                    websocket, stream, tagged=start.pty is None, on_exit=exit_message.update
                ),
                bridge.keep_active(websocket.app.state.sessions, workspace.id, "exec"),
            ),
            start.timeout,
        )
    except TimeoutError:
        await stream.send_json({"type": "kill"})
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.send_text(
                json.dumps({"type": "exit", "exit_code": None, "signal": "KILL", "timed_out": True})
            )
    finally:
        await stream.close()
    await _close(websocket)


async def _close(websocket: WebSocket, code: int = 1000) -> None:
    # The client may have closed first, or gone away without a close: a disconnect is how sessions end.
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code)


@router.websocket("/api/v2/workspaces/{workspace}/pty")
async def terminal(
    websocket: WebSocket,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Connect,
    hub: HubDep,
    reconnect: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="Terminal id; the same id reattaches to the same shell and replays its recent output.",
        ),
    ] = None,
    width: Annotated[int, Query(ge=1, le=1000)] = 80,
    height: Annotated[int, Query(ge=1, le=1000)] = 24,
    command: Annotated[str | None, Query(max_length=4096, description="Instead of a login shell.")] = None,
) -> None:
    """A terminal that outlives its client. Binary messages both ways; client text JSON `{"type": "resize",
    "width", "height"}`; server text JSON `{"type": "exit", "exit_code"}` when the shell ends."""
    await _ready(websocket, db, workspace.id, hub)
    # Scoped per user, so one user's terminal id never reattaches to another user's terminal.
    session_id = f"{actor.user_id[:8]}-{reconnect or secrets.token_hex(8)}"
    params: dict[str, Any] = {"reconnect": session_id, "width": width, "height": height}
    if command:
        params["command"] = command
    await _audit(websocket, actor, workspace.id, "workspace.terminal", command=(command or "")[:500])
    stream = await hub.open(workspace.id, "pty", **params)
    await websocket.accept()
    try:
        await bridge.run_until_first(
            bridge.client_to_agent(websocket, stream, control={"resize", "signal"}),
            bridge.agent_to_client(websocket, stream, tagged=False, on_exit=lambda _: None),
            bridge.keep_active(websocket.app.state.sessions, workspace.id, "terminal"),
        )
    finally:
        await stream.close()
    await _close(websocket)


@router.websocket("/api/v2/workspaces/{workspace}/dial")
async def dial(
    websocket: WebSocket,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Connect,
    hub: HubDep,
    port: Annotated[int, Query(ge=1, le=65535)],
    host: Annotated[str, Query(max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")] = "127.0.0.1",
) -> None:
    """A TCP connection made inside the workspace (port forwarding); raw bytes as binary messages both ways.
    The client's text message `{"type": "eof"}` half-closes the connection (the client sends no more)."""
    await _ready(websocket, db, workspace.id, hub)
    await _audit(websocket, actor, workspace.id, "workspace.port_forward", host=host, port=port)
    stream = await hub.open(workspace.id, "dial", host=host, port=port)
    try:
        answer = await stream.read_json()
        if answer.get("type") != "ok":
            raise BadRequest(f"Cannot connect to {host}:{port} in the workspace: {answer.get('error', '')}")
        await websocket.accept()
        await bridge.run_until_first(
            bridge.raw_client_to_agent(websocket, stream.writer, half_close=True),
            bridge.raw_agent_to_client(websocket, stream.reader),
            bridge.keep_active(websocket.app.state.sessions, workspace.id, "port_forward"),
        )
    finally:
        await stream.close()
    await _close(websocket)


# --- files ------------------------------------------------------------------------------------------------


@router.get(
    "/api/v2/workspaces/{workspace}/files",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def read_file(
    request: Request, db: DbSession, workspace: WorkspaceParam, actor: Connect, hub: HubDep, path: PathQuery
) -> StreamingResponse:
    """A file's content from the workspace, streamed as bytes."""
    await _ready(request, db, workspace.id, hub, touch="files")
    await _audit(request, actor, workspace.id, "workspace.file.read", path=path)
    meta, content = await streams.read_file(hub, workspace.id, path)
    # No Content-Length: the size stat() gave is not a promise (/proc files say 0, a log grows while it is
    # read), and a body that differs from a declared length is a broken response. X-File-Size is that size.
    return StreamingResponse(
        content,
        media_type="application/octet-stream",
        headers={"X-File-Size": str(int(meta.get("size", 0))), "X-File-Mode": oct(int(meta.get("mode", 0)))},
    )


# The body is read as a raw stream (never parsed), so FastAPI cannot infer it: declared here for generated clients.
FILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's whole new content, streamed as is (at most 512 MB).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put("/api/v2/workspaces/{workspace}/files", openapi_extra=FILE_BODY)
async def write_file(
    request: Request,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Connect,
    hub: HubDep,
    path: PathQuery,
    mode: Annotated[str | None, Query(pattern=r"^0?[0-7]{3,4}$", description="Octal, e.g. 0644.")] = None,
) -> wire.FileWritten:
    """Write the request body to a file in the workspace, creating parent folders."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"The upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
    await _ready(request, db, workspace.id, hub, touch="files")
    await _audit(request, actor, workspace.id, "workspace.file.write", path=path)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    return await streams.write_file(
        hub, workspace.id, path, body(), limit=MAX_UPLOAD_BYTES, mode=int(mode, 8) if mode else None
    )


@router.delete("/api/v2/workspaces/{workspace}/files", status_code=status.HTTP_204_NO_CONTENT)
async def delete_file(
    request: Request,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Connect,
    hub: HubDep,
    path: PathQuery,
    recursive: bool = False,
) -> Response:
    """Remove a file, or a folder with `recursive=true`."""
    await _ready(request, db, workspace.id, hub, touch="files")
    await _audit(request, actor, workspace.id, "workspace.file.delete", path=path, recursive=recursive)
    await streams.simple(hub, workspace.id, "file_delete", path=path, recursive=recursive)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/v2/workspaces/{workspace}/files/list")
async def list_files(
    request: Request, db: DbSession, workspace: WorkspaceParam, actor: Connect, hub: HubDep, path: PathQuery
) -> wire.FileList:
    """The entries of a folder in the workspace."""
    await _ready(request, db, workspace.id, hub, touch="files")
    await _audit(request, actor, workspace.id, "workspace.file.list", path=path)
    return await streams.list_files(hub, workspace.id, path)

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.sse import EventSourceResponse, format_sse_event
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from dockyard.accounts.actor import Actor
from dockyard.api.deps import BuildParam, DbSession, HubDep, RuntimeDep, UserParam, WorkspaceParam, scoped
from dockyard.errors import Validation, ValidationFailed
from dockyard.provisioner import builds, deadlines, events, idempotency_keys, logs, schedules, tasks
from dockyard.runtimes.base import HostCapacity, Runtime, RuntimeFailure
from dockyard.tunnel import claims
from dockyard.workspaces import service as workspaces
from dockyard.workspaces.status import ACTIVE_BUILD_STATUSES
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(tags=["workspaces"])

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}, "application/json": {}}}
}


def _capacity(runtime: Runtime) -> HostCapacity | None:
    try:
        return runtime.capacity()
    except RuntimeFailure:
        # With the engine down the build will fail and say so; creation itself need not be refused.
        return None


@router.post("/api/v2/workspaces", status_code=status.HTTP_201_CREATED)
def create_workspace(
    body: wire.CreateWorkspaceRequest,
    db: DbSession,
    runtime: RuntimeDep,
    hub: HubDep,
    response: Response,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_CREATE)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="A retry with the same key and body returns the same workspace, never a second one.",
        ),
    ] = None,
) -> wire.Workspace:
    """Create a workspace from a template and queue its first start build."""
    claim = None
    if idempotency_key is not None:
        claim = idempotency_keys.claim(actor, idempotency_key, body)
        earlier = idempotency_keys.replay(db, claim)
        if earlier is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return workspaces.to_wire(db, workspaces.load(db, earlier))
    loaded = claims.create_workspace(db, actor, body, hub=hub, capacity=_capacity(runtime), idempotency=claim)
    return workspaces.to_wire(db, loaded)


@router.get("/api/v2/workspaces", response_model=wire.WorkspaceList)
def list_workspaces(
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    owner: Annotated[
        str | None, Query(max_length=64, description="Owner name or id; `me` for yours.")
    ] = None,
    template: Annotated[str | None, Query(max_length=64, description="Template name or id.")] = None,
    status: wire.WorkspaceStatus | None = None,
    name: Annotated[str | None, Query(max_length=32, description="Substring of the workspace name.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Response:
    """Workspaces you may see, newest first, filtered by owner, template, status or name."""
    rows, count = workspaces.search(
        db, actor, owner=owner, template=template, status=status, name=name, limit=limit, offset=offset
    )
    page = wire.WorkspaceList(workspaces=workspaces.to_wire_many(db, rows), count=count)
    # Serialized here in one pass: FastAPI's route serializer would walk the page a second time.
    return Response(page.model_dump_json(), media_type="application/json")


@router.get("/api/v2/workspaces/{workspace}")
async def get_workspace(
    request: Request,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    wait: Annotated[
        str | None,
        Query(
            pattern="^(running|done|ready)$",
            description="`running`: block until the workspace runs (or its build fails); `done`: until no "
            "build is in progress; `ready`: until it runs and its agent finished the startup script.",
        ),
    ] = None,
    timeout: Annotated[float, Query(gt=0, le=600, description="Seconds to wait at most.")] = 120,
) -> wire.Workspace:
    """A workspace; with `wait`, the reply waits (up to `timeout`) until it is running, settled or ready."""
    # Long polls must not hold a pooled connection while they wait: 50 waiting clients would starve the
    # provisioner workers. Each poll takes a connection for one read and gives it back.
    db.close()
    sessions = request.app.state.read_sessions
    if wait is None:
        return await run_in_threadpool(_load_wire, sessions, workspace.id)
    deadline = asyncio.get_running_loop().time() + timeout
    # Watching starts before the first read, so a change landing between a read and the wait still wakes it.
    async with events.watching(sessions, workspace_id=workspace.id) as waiter:
        while True:
            settled = await run_in_threadpool(_settled, sessions, workspace.id, wait == "ready")
            remaining = deadline - asyncio.get_running_loop().time()
            if settled or remaining <= 0:
                return await run_in_threadpool(_load_wire, sessions, workspace.id)
            await waiter.wait(min(waiter.recheck, remaining))


def _settled(sessions: sessionmaker[Session], workspace_id: str, ready: bool) -> bool:
    with sessions() as db:
        return workspaces.settled(db, workspace_id, ready=ready)


def _load_wire(sessions: sessionmaker[Session], workspace_id: str) -> wire.Workspace:
    with sessions() as db:
        return workspaces.to_wire(db, workspaces.load_id(db, workspace_id))


@router.get("/api/v2/users/{user}/workspace/{name}")
def get_workspace_by_owner(
    user: UserParam, name: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)]
) -> wire.Workspace:
    """A workspace by its owner and name."""
    workspace = workspaces.get_by_owner(db, actor, user, name)
    return workspaces.to_wire(db, workspaces.load(db, workspace))


@router.patch("/api/v2/workspaces/{workspace}")
def update_workspace(
    body: wire.UpdateWorkspaceRequest,
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_OPERATE)],
) -> wire.Workspace:
    """Change parameters, template version or TTL; they take effect on the next start."""
    return workspaces.to_wire(db, workspaces.update(db, actor, workspace, body))


@router.post("/api/v2/workspaces/{workspace}/task")
def report_task(
    body: wire.TaskReport,
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_OPERATE)],
) -> wire.Workspace:
    """Report the workspace's coding task state from outside it (inside, `dockyard-agent report` does this)."""
    tasks.report(db, workspace, body, actor=actor, source="api")
    events.changed(db, workspace.id)
    return workspaces.to_wire(db, workspaces.load(db, workspace))


@router.put("/api/v2/workspaces/{workspace}/ttl")
def set_workspace_ttl(
    body: wire.TtlRequest,
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_OPERATE)],
) -> wire.Workspace:
    """Set the TTL: a running workspace's deadline moves to that long from now, without a restart."""
    return workspaces.to_wire(db, deadlines.set_ttl(db, actor, workspace, body.seconds()))


@router.put("/api/v2/workspaces/{workspace}/autostart")
def set_workspace_autostart(
    body: wire.ScheduleRequest,
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_OPERATE)],
) -> wire.Workspace:
    """Set the cron schedule (in a time zone) on which the stopped workspace starts; null turns it off."""
    schedules.set_schedule(db, actor, workspace, body)
    return workspaces.to_wire(db, workspaces.load(db, workspace))


@router.post("/api/v2/workspaces/{workspace}/builds", status_code=status.HTTP_201_CREATED)
def create_build(
    body: wire.CreateBuildRequest,
    workspace: WorkspaceParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_OPERATE)],
) -> wire.WorkspaceBuild:
    """Queue a start, stop or delete of the workspace (delete needs `workspace:delete`)."""
    if body.transition == wire.Transition.DELETE:
        actor.require(Scope.WORKSPACE_DELETE)
    version_id = None
    if body.template_version_id is not None:
        if body.transition != wire.Transition.START:
            raise ValidationFailed(
                "Invalid build.", [Validation("template_version_id", "only a start can change it")]
            )
        update = wire.UpdateWorkspaceRequest(template_version_id=body.template_version_id)
        workspaces.update(db, actor, workspace, update)
        version_id = workspace.template_version_id
    build = builds.create_build(db, workspace, body.transition, actor=actor, template_version_id=version_id)
    return workspaces.build_to_wire(db, workspace, build)


@router.delete("/api/v2/workspaces/{workspace}", status_code=status.HTTP_202_ACCEPTED)
def delete_workspace(
    workspace: WorkspaceParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.WORKSPACE_DELETE)]
) -> wire.WorkspaceBuild:
    """Queue a `delete` build; the workspace is gone once it succeeds."""
    build = builds.create_build(db, workspace, wire.Transition.DELETE, actor=actor)
    return workspaces.build_to_wire(db, workspace, build)


@router.get("/api/v2/workspaces/{workspace}/builds")
def list_builds(
    workspace: WorkspaceParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)]
) -> list[wire.WorkspaceBuild]:
    """The workspace's builds, newest first."""
    return workspaces.builds_to_wire(db, workspace, workspaces.build_history(db, workspace))


@router.get("/api/v2/workspaces/{workspace}/watch", responses=SSE_RESPONSES, response_model=None)
async def watch_workspace(
    request: Request,
    db: DbSession,
    workspace: WorkspaceParam,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
) -> EventSourceResponse:
    """Server-sent events: the workspace as JSON (`event: workspace`) each time its status or build changes,
    and `event: warning` (a `LifetimeWarning`) shortly before an automatic idle or TTL stop."""
    db.close()  # the stream reads with short-lived sessions of its own
    sessions = request.app.state.read_sessions

    async def stream() -> AsyncIterator[bytes]:
        last = None
        async with events.watching(sessions, workspace_id=workspace.id) as waiter:
            while not await request.is_disconnected():
                current = await run_in_threadpool(_load_wire, sessions, workspace.id)
                key = (
                    current.status,
                    current.latest_build.id,
                    current.latest_build.status,
                    current.status_reason,
                    current.task.updated_at if current.task else None,
                    current.lifetime.warned if current.lifetime else None,
                )
                if key != last:
                    if (
                        current.lifetime is not None
                        and current.lifetime.warned
                        and (last is None or not last[-1])
                    ):
                        warning = _warning(current, current.lifetime)
                        yield format_sse_event(data_str=warning.model_dump_json(), event="warning")
                    last = key
                    yield format_sse_event(data_str=current.model_dump_json(), event="workspace")
                if current.status == wire.WorkspaceStatus.DELETED:
                    return
                await waiter.wait(waiter.recheck)

    return EventSourceResponse(stream())


def _warning(workspace: wire.Workspace, lifetime: wire.WorkspaceLifetime) -> wire.LifetimeWarning:
    assert lifetime.stops_at is not None
    if lifetime.stop_reason == "idle":
        why, keep = "nothing has used it", "use it (SSH, a terminal, exec, files) to keep it running"
    else:
        why, keep = "its TTL runs out", f"run `dockyard extend {workspace.name} 2h` to keep it"
    return wire.LifetimeWarning(
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        stop_reason=lifetime.stop_reason or "ttl",
        stops_at=lifetime.stops_at,
        message=f"Workspace {workspace.name!r} stops at {lifetime.stops_at.isoformat(timespec='seconds')}: "
        f"{why}; {keep}.",
    )


@router.get("/api/v2/workspacebuilds/{build}")
def get_build(
    build: BuildParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)]
) -> wire.WorkspaceBuild:
    """One build by id."""
    return workspaces.build_to_wire(db, *build)


@router.post("/api/v2/workspacebuilds/{build}/cancel")
def cancel_build(
    build: BuildParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.WORKSPACE_OPERATE)]
) -> wire.WorkspaceBuild:
    """Cancel a pending build at once, or ask a running one to stop at its next step."""
    workspace, row = build
    return workspaces.build_to_wire(db, workspace, builds.cancel(db, actor, row, workspace))


@router.get("/api/v2/workspacebuilds/{build}/logs", responses=SSE_RESPONSES, response_model=None)
async def build_logs(
    request: Request,
    db: DbSession,
    build: BuildParam,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    follow: Annotated[
        bool, Query(description="Stream new lines as server-sent events until the build ends.")
    ] = False,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only lines with a larger id.")] = 0,
) -> Response:
    """The build's log lines as JSON, or with `follow=true` as server-sent events (`event: log`, then `end`).

    `end` carries the build's final status as JSON (`"succeeded"`); it is sent as soon as the build has ended and
    every line written before that has been sent, so a client can stop there.
    """
    db.close()  # each read below takes a connection briefly; a follow can last as long as a build
    sessions = request.app.state.read_sessions
    workspace_id, build_id = build[0].id, build[1].id

    def read(after_id: int) -> tuple[list[wire.BuildLogLine], str]:
        with sessions() as db:
            # The status before the lines: a build seen ended has written all its lines by then, so the lines
            # read next are its last ones (read the other way round, a line could slip in between).
            state = workspaces.build_status(db, build_id)
            lines = [
                wire.BuildLogLine(id=r.id, time=r.time, stage=r.stage, output=r.output)
                for r in logs.read(db, build_id, after=after_id)
            ]
            return lines, state

    if not follow:
        lines, _ = await run_in_threadpool(read, after)
        return Response(
            b"[" + b",".join(line.model_dump_json().encode() for line in lines) + b"]",
            media_type="application/json",
        )

    async def stream() -> AsyncIterator[bytes]:
        cursor = after
        # Woken by new lines of this build and by its end (a workspace event), from whichever process.
        async with events.watching(sessions, workspace_id=workspace_id, build_id=build_id) as waiter:
            while not await request.is_disconnected():
                lines, state = await run_in_threadpool(read, cursor)
                for line in lines:
                    cursor = line.id
                    yield format_sse_event(data_str=line.model_dump_json(), event="log", id=str(line.id))
                if state not in ACTIVE_BUILD_STATUSES and not lines:
                    yield format_sse_event(data_str=json.dumps(str(state)), event="end")
                    return
                if not lines:
                    await waiter.wait(waiter.recheck)

    return EventSourceResponse(stream())

"""Workspaces and builds in their wire form. Whatever a page holds, what the rows do not carry (version numbers,
agents, initiators' names) is loaded for the whole page at once: one statement each, never one per row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.provisioner import agents as agent_state
from dockyard.provisioner import lifetimes, schedules, tasks
from dockyard.store.models import TemplateVersion, User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.workspaces.queries import Loaded, Names
from dockyard.workspaces.status import derive
from dockyard_sdk import models as wire


def _version_numbers(db: Session, ids: Iterable[str]) -> dict[str, int]:
    # Only the number: a version row also holds its manifest and file list, which a list never shows.
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = db.execute(
        select(TemplateVersion.id, TemplateVersion.number).where(TemplateVersion.id.in_(wanted))
    )
    return {version_id: number for version_id, number in rows}


def _usernames(db: Session, ids: Iterable[str | None]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    return {
        user_id: name
        for user_id, name in db.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    }


def _agents(db: Session, workspace_ids: Sequence[str]) -> dict[str, WorkspaceAgent]:
    if not workspace_ids:
        return {}
    rows = db.scalars(select(WorkspaceAgent).where(WorkspaceAgent.workspace_id.in_(sorted(workspace_ids))))
    return {row.workspace_id: row for row in rows}


def _version_name(numbers: dict[str, int], version_id: str) -> str:
    number = numbers.get(version_id)
    return f"v{number}" if number is not None else ""


def _build(
    workspace: Workspace, build: WorkspaceBuild, *, numbers: dict[str, int], names: dict[str, str]
) -> wire.WorkspaceBuild:
    return wire.WorkspaceBuild(
        id=build.id,
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        number=build.number,
        transition=wire.Transition(build.transition),
        status=wire.BuildStatus(build.status),
        reason=wire.BuildReason(build.reason),
        initiator=names.get(build.initiator_id) if build.initiator_id else None,
        template_version_id=build.template_version_id,
        template_version_name=_version_name(numbers, build.template_version_id),
        error=build.error,
        timings=build.timings,
        created_at=build.created_at,
        started_at=build.started_at,
        completed_at=build.completed_at,
    )


def builds_to_wire(
    db: Session, workspace: Workspace, rows: Sequence[WorkspaceBuild]
) -> list[wire.WorkspaceBuild]:
    numbers = _version_numbers(db, (b.template_version_id for b in rows))
    names = _usernames(db, (b.initiator_id for b in rows))
    return [_build(workspace, b, numbers=numbers, names=names) for b in rows]


def build_to_wire(db: Session, workspace: Workspace, build: WorkspaceBuild) -> wire.WorkspaceBuild:
    return builds_to_wire(db, workspace, [build])[0]


def to_wire_many(db: Session, rows: Sequence[Loaded]) -> list[wire.Workspace]:
    """The wire form of a page of workspaces in three statements (versions, initiators, agents); owners and
    templates come joined with the rows themselves."""
    numbers = _version_numbers(
        db, [r.workspace.template_version_id for r in rows] + [r.build.template_version_id for r in rows]
    )
    names = _usernames(db, (r.build.initiator_id for r in rows))
    agents = _agents(db, [r.workspace.id for r in rows])
    listed = []
    now = utcnow()
    for row in rows:
        workspace, build = row.workspace, row.build
        shown = row.names or Names.of(workspace)
        status, reason = derive(workspace, build)
        agent = agent_state.to_wire(agents.get(workspace.id))
        if status == wire.WorkspaceStatus.RUNNING and not reason and agent is not None:
            reason = agent_state.limits_reason(agent.stats)
        listed.append(
            wire.Workspace(
                id=workspace.id,
                name=workspace.name,
                owner_id=workspace.owner_id,
                owner_name=shown.owner_name,
                template_id=workspace.template_id,
                template_name=shown.template_name,
                template_version_id=workspace.template_version_id,
                template_version_name=_version_name(numbers, workspace.template_version_id),
                outdated=shown.template_active_version_id not in (None, workspace.template_version_id),
                parameters=workspace.parameters,
                status=status,
                status_reason=reason,
                latest_build=_build(workspace, build, numbers=numbers, names=names),
                ttl_ms=workspace.ttl_seconds * 1000 if workspace.ttl_seconds else None,
                deadline=workspace.deadline,
                created_at=workspace.created_at,
                updated_at=workspace.updated_at,
                last_used_at=workspace.last_used_at,
                agent=agent,
                task=tasks.to_wire(workspace),
                idle_timeout_ms=workspace.idle_timeout_seconds * 1000
                if workspace.idle_timeout_seconds
                else None,
                lifetime=lifetimes.to_wire(workspace, build, now),
                autostart=schedules.to_wire(workspace),
            )
        )
    return listed


def to_wire(db: Session, loaded: Loaded) -> wire.Workspace:
    return to_wire_many(db, [loaded])[0]

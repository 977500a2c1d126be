"""Creating, finding, listing and changing workspaces."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, NotFound, Validation, ValidationFailed
from dockyard.provisioner import builds, events, idempotency_keys, lifetimes, queue, quotas, schedules, tasks
from dockyard.provisioner.status import derive
from dockyard.runtimes.base import HostCapacity, network_class
from dockyard.store import audit, warmnetworks
from dockyard.store.models import Template, TemplateVersion, User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.templates import parameters as parameter_rules
from dockyard.templates import render
from dockyard.templates import service as templates
from dockyard.tunnel import state as agent_state
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import TemplateManifest
from dockyard_sdk.units import parse_duration


@dataclass(frozen=True)
class Loaded:
    """A workspace with its latest build, which together give its status."""

    workspace: Workspace
    build: WorkspaceBuild


def _visible(actor: Actor, workspace: Workspace) -> bool:
    if not (actor.is_owner or workspace.owner_id == actor.user_id):
        return False
    if actor.own_workspaces_only and workspace.created_by_token_id != actor.token_id:
        return False
    return actor.allows_workspace(
        workspace.id, workspace.name, template_id=workspace.template_id, template_name=workspace.template.name
    )


def get(db: Session, actor: Actor, ref: str) -> Workspace:
    """Resolve `{workspace}`: an id or the name of one of the actor's own. Unseen means 404.

    Another user's workspace is reached by id, or by name through `/users/{user}/workspace/{name}`.
    """
    query = select(Workspace).where(Workspace.deleted.is_(False))
    found = db.scalar(query.where(Workspace.id == ref))
    if found is None:
        found = db.scalar(query.where(Workspace.owner_id == actor.user_id, Workspace.name == ref))
    if found is None and len(ref) == 36:
        # A deleted workspace stays readable by id, so clients can see the final state of what they made.
        found = db.scalar(select(Workspace).where(Workspace.id == ref))
    if found is None or not _visible(actor, found):
        raise NotFound(f"Workspace {ref!r} not found.")
    return found


def get_by_owner(db: Session, actor: Actor, owner: User, name: str) -> Workspace:
    found = db.scalar(
        select(Workspace).where(
            Workspace.owner_id == owner.id, Workspace.name == name, Workspace.deleted.is_(False)
        )
    )
    if found is None or not _visible(actor, found):
        raise NotFound(f"Workspace {owner.username}/{name} not found.")
    return found


def load(db: Session, workspace: Workspace) -> Loaded:
    return Loaded(workspace, builds.latest(db, workspace))


def search(
    db: Session,
    actor: Actor,
    *,
    owner: str | None = None,
    template: str | None = None,
    status: wire.WorkspaceStatus | None = None,
    name: str | None = None,
    include_deleted: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Loaded], int]:
    newest = (
        select(WorkspaceBuild.workspace_id, func.max(WorkspaceBuild.number).label("number"))
        .group_by(WorkspaceBuild.workspace_id)
        .subquery()
    )
    build = aliased(WorkspaceBuild)
    query = (
        select(Workspace, build)
        .join(newest, newest.c.workspace_id == Workspace.id)
        .join(build, (build.workspace_id == Workspace.id) & (build.number == newest.c.number))
    )
    if not include_deleted:
        query = query.where(Workspace.deleted.is_(False))
    if not actor.is_owner:
        query = query.where(Workspace.owner_id == actor.user_id)
    if actor.own_workspaces_only:
        query = query.where(Workspace.created_by_token_id == actor.token_id)
    if owner:
        owner_id = actor.user_id if owner == "me" else owner
        query = query.join(User, User.id == Workspace.owner_id).where(
            or_(User.username == owner, User.id == owner_id)
        )
    if template:
        query = query.join(Template, Template.id == Workspace.template_id).where(
            or_(Template.name == template, Template.id == template)
        )
    if name:
        query = query.where(Workspace.name.contains(name))
    rows = [Loaded(w, b) for w, b in db.execute(query.order_by(Workspace.created_at.desc()))]
    rows = [r for r in rows if _visible(actor, r.workspace)]
    if status is not None:
        rows = [r for r in rows if derive(r.workspace, r.build)[0] == status]
    return rows[offset : offset + limit], len(rows)


def build_to_wire(db: Session, workspace: Workspace, build: WorkspaceBuild) -> wire.WorkspaceBuild:
    initiator = db.get(User, build.initiator_id) if build.initiator_id else None
    version = db.get(TemplateVersion, build.template_version_id)
    return wire.WorkspaceBuild(
        id=build.id,
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        number=build.number,
        transition=wire.Transition(build.transition),
        status=wire.BuildStatus(build.status),
        reason=wire.BuildReason(build.reason),
        initiator=initiator.username if initiator else None,
        template_version_id=build.template_version_id,
        template_version_name=f"v{version.number}" if version else "",
        error=build.error,
        timings=build.timings,
        created_at=build.created_at,
        started_at=build.started_at,
        completed_at=build.completed_at,
    )


def to_wire(db: Session, loaded: Loaded) -> wire.Workspace:
    workspace, build = loaded.workspace, loaded.build
    status, reason = derive(workspace, build)
    version = db.get(TemplateVersion, workspace.template_version_id)
    agent = agent_state.to_wire(db.get(WorkspaceAgent, workspace.id))
    if status == wire.WorkspaceStatus.RUNNING and not reason and agent is not None:
        reason = agent_state.limits_reason(agent.stats)
    return wire.Workspace(
        id=workspace.id,
        name=workspace.name,
        owner_id=workspace.owner_id,
        owner_name=workspace.owner.username,
        template_id=workspace.template_id,
        template_name=workspace.template.name,
        template_version_id=workspace.template_version_id,
        template_version_name=f"v{version.number}" if version else "",
        outdated=workspace.template.active_version_id not in (None, workspace.template_version_id),
        parameters=workspace.parameters,
        status=status,
        status_reason=reason,
        latest_build=build_to_wire(db, workspace, build),
        ttl_ms=workspace.ttl_seconds * 1000 if workspace.ttl_seconds else None,
        deadline=workspace.deadline,
        created_at=workspace.created_at,
        updated_at=workspace.updated_at,
        last_used_at=workspace.last_used_at,
        agent=agent,
        task=tasks.to_wire(workspace),
        idle_timeout_ms=workspace.idle_timeout_seconds * 1000 if workspace.idle_timeout_seconds else None,
        lifetime=lifetimes.to_wire(workspace, build, utcnow()),
        autostart=schedules.to_wire(workspace),
    )


def _generated_name(template: Template) -> str:
    return f"{template.name[:24].rstrip('-')}-{secrets.token_hex(3)}"


def _check_resources(rendered: TemplateManifest, capacity: HostCapacity | None) -> list[Validation]:
    if capacity is None:
        return []
    problems = []
    cpu = float(rendered.resources.cpu)
    if cpu > capacity.cpus:
        problems.append(
            Validation("resources.cpu", f"{cpu:g} CPUs is more than the host has ({capacity.cpus:g})")
        )
    memory = rendered.resources.memory_bytes
    if memory > capacity.memory_bytes:
        problems.append(
            Validation(
                "resources.memory",
                f"{memory / 2**30:.1f} GiB is more than the host has ({capacity.memory_bytes / 2**30:.1f} GiB)",
            )
        )
    return problems


def render_for(
    manifest: TemplateManifest, values: dict[str, Any], *, workspace: Workspace, owner: User
) -> TemplateManifest:
    return render.render(
        manifest,
        values,
        workspace={"name": workspace.name, "id": workspace.id or "", "owner": owner.username},
        owner={"username": owner.username, "email": owner.email},
    )


def _resolve_template(
    db: Session, actor: Actor, request: wire.CreateWorkspaceRequest
) -> tuple[Template, TemplateVersion]:
    if request.template is not None:
        template = templates.get(db, actor, request.template)
        if request.template_version_id in (None, "active"):
            if template.active_version is None:
                raise Conflict(f"Template {template.name!r} has no active version.")
            return template, template.active_version
        return template, templates.get_version(db, template, request.template_version_id)
    assert request.template_version_id is not None
    version = db.get(TemplateVersion, request.template_version_id)
    if version is None:
        raise NotFound(f"Template version {request.template_version_id!r} not found.")
    owning = db.get(Template, version.template_id)
    if owning is None or owning.organization_id != actor.organization_id:
        raise NotFound(f"Template version {request.template_version_id!r} not found.")
    template = owning
    actor.require_allowed("template", template.id, template.name)
    return template, version


def create(
    db: Session,
    actor: Actor,
    request: wire.CreateWorkspaceRequest,
    *,
    capacity: HostCapacity | None,
    idempotency: idempotency_keys.Claim | None = None,
) -> Loaded:
    """Validate, then write the workspace and its first `start` build in one transaction.

    With an idempotency claim, the key is inserted in that same transaction: of two concurrent retries only
    one commits, and the other returns what it made (`idempotency_keys.replay`)."""
    actor.require(wire.Scope.TEMPLATE_USE)
    quotas.check_create_rate(db, actor)
    template, version = _resolve_template(db, actor, request)
    owner = db.get(User, actor.user_id)
    assert owner is not None
    name = request.name or _generated_name(template)
    if request.name is not None and db.scalar(
        select(Workspace.id).where(
            Workspace.owner_id == owner.id, Workspace.name == name, Workspace.deleted.is_(False)
        )
    ):
        raise Conflict(
            f"You already have a workspace named {name!r}.",
            validations=[Validation("name", f"{name!r} is taken")],
        )
    manifest = templates.version_to_wire(version).manifest
    values, problems = parameter_rules.validate(
        manifest.parameters, request.all_parameters(), template_name=template.name
    )
    if problems:
        raise ValidationFailed("Invalid parameters.", problems)
    workspace = Workspace(
        organization_id=actor.organization_id,
        owner_id=owner.id,
        template_id=template.id,
        template_version_id=version.id,
        name=name,
        parameters=values,
        created_by_token_id=actor.token_id,
    )
    rendered = render_for(manifest, values, workspace=workspace, owner=owner)
    workspace.cpu_millis = round(float(rendered.resources.cpu) * 1000)
    workspace.memory_bytes = rendered.resources.memory_bytes
    problems = _check_resources(rendered, capacity)
    if problems:
        raise ValidationFailed("The template asks for more than this host can give.", problems)
    ttl = request.ttl_seconds()
    if ttl is None and rendered.lifetime.ttl:
        ttl = int(parse_duration(rendered.lifetime.ttl).total_seconds())
    problems = lifetimes.check_max_ttl(rendered, ttl, field="ttl")
    if problems:
        raise ValidationFailed("The TTL is longer than the template allows.", problems)
    workspace.ttl_seconds = ttl
    if rendered.lifetime.idle_timeout:
        workspace.idle_timeout_seconds = int(parse_duration(rendered.lifetime.idle_timeout).total_seconds())
    # A warm network made for a future workspace id: taking the id takes the network (rolled back with us).
    warm_id = warmnetworks.claim(db, network_class(rendered.network.egress.value))
    if warm_id is not None:
        workspace.id = warm_id
    db.add(workspace)
    try:
        db.flush()
        build = builds.create_build(
            db,
            workspace,
            wire.Transition.START,
            actor=actor,
            template_version_id=version.id,
            parameters=values,
            commit=False,
            record_audit=False,
        )
        audit.record(
            db,
            actor,
            "workspace.create",
            resource_type="workspace",
            resource_id=workspace.id,
            resource_name=workspace.name,
            status_code=201,
            detail={"template": template.name, "version": version.number},
        )
        if idempotency is not None:
            idempotency_keys.record(db, idempotency, workspace_id=workspace.id)
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        if idempotency is not None:
            # A concurrent retry with the same key committed first: its workspace is the answer.
            replayed = idempotency_keys.replay(db, idempotency)
            if replayed is not None:
                return load(db, replayed)
        raise Conflict(f"You already have a workspace named {name!r}.") from exc
    queue.wakeup.notify()
    events.job_queued(db, build.id)
    return Loaded(workspace, build)


def update(db: Session, actor: Actor, workspace: Workspace, request: wire.UpdateWorkspaceRequest) -> Loaded:
    """Change mutable parameters, the template version or the TTL; applied by the next start."""
    current = builds.latest(db, workspace)
    builds.check_transition(workspace, None, wire.Transition.START)
    template = workspace.template
    changes: dict[str, Any] = {}
    version_id = workspace.template_version_id
    if request.template_version_id is not None:
        ref = request.template_version_id
        if ref == "active":
            if template.active_version_id is None:
                raise Conflict(f"Template {template.name!r} has no active version.")
            version_id = template.active_version_id
        else:
            try:
                version_id = templates.get_version(db, template, ref).id
            except NotFound as exc:
                raise ValidationFailed(exc.message, [Validation("template_version_id", exc.message)]) from exc
    version = db.get(TemplateVersion, version_id)
    assert version is not None
    manifest = templates.version_to_wire(version).manifest
    given = request.parameters or {}
    values, problems = parameter_rules.validate(
        manifest.parameters, given, previous=workspace.parameters, template_name=template.name
    )
    if problems:
        raise ValidationFailed("Invalid parameters.", problems)
    if values != workspace.parameters:
        changes["parameters"] = {k: v for k, v in values.items() if workspace.parameters.get(k) != v}
    if version_id != workspace.template_version_id:
        changes["template_version"] = version.number
    if request.ttl is not None:
        workspace.ttl_seconds = (
            None if request.ttl == "0" else int(parse_duration(request.ttl).total_seconds())
        )
        changes["ttl"] = request.ttl
    if changes:
        # Parameters and version live on the workspace until a start build snapshots them.
        workspace.parameters = values
        workspace.template_version_id = version_id
        audit.record(
            db,
            actor,
            "workspace.update",
            resource_type="workspace",
            resource_id=workspace.id,
            resource_name=workspace.name,
            detail=changes,
        )
        db.commit()
    return Loaded(workspace, current)

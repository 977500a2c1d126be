"""Creating and changing workspaces; finding and listing them (`queries`) and their wire form (`convert`) are
re-exported here, so callers import the one service module."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, NotFound, Validation, ValidationFailed
from dockyard.provisioner import builds, events, idempotency_keys, lifetimes, metrics, plans, queue, quotas
from dockyard.provisioner.plans import render_for
from dockyard.runtimes.base import HostCapacity, network_class
from dockyard.runtimes.plan import WorkspacePlan
from dockyard.store import audit
from dockyard.store.models import Template, TemplateVersion, User, WorkspaceAgent, new_id
from dockyard.store.models import Workspace as Workspace
from dockyard.store.models import WorkspaceBuild as WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.templates import parameters as parameter_rules
from dockyard.templates import service as templates
from dockyard.warmpool import prebuild_pool, prebuilds
from dockyard.warmpool import store as warmnetworks
from dockyard.workspaces.convert import build_to_wire as build_to_wire
from dockyard.workspaces.convert import builds_to_wire as builds_to_wire
from dockyard.workspaces.convert import to_wire as to_wire
from dockyard.workspaces.convert import to_wire_many as to_wire_many
from dockyard.workspaces.queries import Loaded as Loaded
from dockyard.workspaces.queries import build_history as build_history
from dockyard.workspaces.queries import build_status as build_status
from dockyard.workspaces.queries import get as get
from dockyard.workspaces.queries import get_build as get_build
from dockyard.workspaces.queries import get_by_owner as get_by_owner
from dockyard.workspaces.queries import load as load
from dockyard.workspaces.queries import load_id as load_id
from dockyard.workspaces.queries import readable as readable
from dockyard.workspaces.queries import search as search
from dockyard.workspaces.queries import settled as settled
from dockyard.workspaces.queries import visible as visible
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import TemplateManifest
from dockyard_sdk.units import parse_duration


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
    requested_at = utcnow()
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
        if idempotency is not None:
            # A retry with the same key whose first attempt committed meanwhile: that workspace is the answer.
            replayed = idempotency_keys.replay(db, idempotency)
            if replayed is not None:
                return load(db, replayed)
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
        git_push=actor.git_push,
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
    preset = prebuilds.matching(template, version, values) if manifest.prebuilds else None
    if manifest.prebuilds and preset is None:
        metrics.MISSES.labels(template.name, "no_preset").inc()
    if preset is not None:
        member = prebuilds.claim(db, preset)
        if member is not None:
            return _claimed(
                db,
                actor,
                member,
                request_name=request.name,
                blueprint=workspace,
                manifest=manifest,
                owner=owner,
                requested_at=requested_at,
                idempotency=idempotency,
                template=template,
                version=version,
            )
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
        build.ready_path = metrics.WARM_NETWORK if warm_id is not None else metrics.COLD
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


def _claimed(
    db: Session,
    actor: Actor,
    member: Workspace,
    *,
    request_name: str | None,
    blueprint: Workspace,
    manifest: TemplateManifest,
    owner: User,
    requested_at: datetime,
    idempotency: idempotency_keys.Claim | None,
    template: Template,
    version: TemplateVersion,
) -> Loaded:
    """Hand a claimed pool member to its new owner in the create's transaction: ownership, name, lifetime and
    the plan move; the container keeps running and its agent stays connected (tunnel/claims.py then tells it
    the owner's environment and runs what is the user's: the clone with their credentials, dev container
    postCreate/postStart). The container's labels and hostname keep the pool's values, since Docker cannot
    change them on a running container: ownership lives in the database, and every listing filters by it."""
    current = builds.latest(db, member)
    # Both: the relationship for the answer's owner name, the column for the quota check before the flush.
    member.owner = owner
    member.owner_id = owner.id
    member.organization_id = actor.organization_id
    if request_name is not None:
        member.name = request_name
    member.ttl_seconds = blueprint.ttl_seconds
    member.idle_timeout_seconds = blueprint.idle_timeout_seconds
    member.created_by_token_id = actor.token_id
    member.git_push = actor.git_push
    member.created_at = requested_at
    member.last_used_at = None
    rendered = render_for(manifest, member.parameters, workspace=member, owner=owner)
    pooled = WorkspacePlan.from_stored(current.plan or {})
    git = plans.git_plan(rendered.git, workspace=member)
    agent = pooled.agent.model_copy(update={"git": git}) if pooled.agent is not None else None
    build_id = new_id()
    plan = pooled.model_copy(
        update={
            "name": member.name,
            "owner": owner.username,
            "owner_id": owner.id,
            "build_id": build_id,
            "env": {
                **pooled.env,
                **rendered.env,
                "DOCKYARD_WORKSPACE_NAME": member.name,
                "DOCKYARD_WORKSPACE_OWNER": owner.username,
            },
            "agent": agent,
        }
    )
    build = builds.claim_build(db, member, actor=actor, plan=plan.stored(), requested_at=requested_at)
    build.id = build_id
    # The user's part runs after the claim: the workspace counts as ready when it has (the agent says so).
    waits = git is not None or manifest.devcontainer is not None
    agent_row = db.get(WorkspaceAgent, member.id)
    if agent_row is not None:
        agent_row.build_id = build_id
        if waits:
            agent_row.lifecycle = wire.AgentLifecycle.STARTING.value
            agent_row.ready_at = None
    audit.record(
        db,
        actor,
        "workspace.create",
        resource_type="workspace",
        resource_id=member.id,
        resource_name=member.name,
        status_code=201,
        detail={"template": template.name, "version": version.number, "claimed": True},
    )
    if idempotency is not None:
        idempotency_keys.record(db, idempotency, workspace_id=member.id)
    seconds = round((utcnow() - requested_at).total_seconds(), 4)
    build.timings = {"claim": seconds, **({} if waits else {"ready": seconds})}
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise Conflict(
            f"You already have a workspace named {member.name!r}.",
            validations=[Validation("name", f"{member.name!r} is taken")],
        ) from exc
    metrics.CLAIMS.labels(template.name).inc()
    metrics.CLAIM_SECONDS.labels(template.name).observe(seconds)
    if not waits:
        metrics.READY.labels(template.name, metrics.POOL_CLAIM).observe(seconds)
    events.changed(db, member.id)
    prebuild_pool.wake()
    message = {
        "type": "claim",
        "env": plan.env,
        "git": git.welcome() if git is not None else None,
        "startup_timeout": agent.startup_timeout_seconds if agent is not None else 0,
        "hooks": manifest.devcontainer is not None,
    }
    return Loaded(member, build, claim=message)


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

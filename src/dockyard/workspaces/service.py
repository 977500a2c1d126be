"""Creating and changing workspaces; finding and listing them (`queries`) and their wire form (`convert`) are
re-exported here, so callers import the one service module."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, NotFound, Validation, ValidationFailed
from dockyard.provisioner import builds, events, idempotency_keys, lifetimes, queue, quotas
from dockyard.provisioner.plans import render_for
from dockyard.runtimes.base import HostCapacity, network_class
from dockyard.store import audit
from dockyard.store.models import Template, TemplateVersion, User
from dockyard.store.models import Workspace as Workspace
from dockyard.store.models import WorkspaceBuild as WorkspaceBuild
from dockyard.templates import parameters as parameter_rules
from dockyard.templates import service as templates
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

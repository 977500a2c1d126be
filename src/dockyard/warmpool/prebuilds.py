"""Warm workspace pools (prebuilds): the presets templates ask for, their members, and the claim a create makes.

A template's active version may declare `prebuilds: [{parameters, instances}]`. Each preset keeps `instances`
workspaces started (container running, agent ready, the startup script done) and owned by the system user
`prebuilds`, marked with the preset's key (`workspaces.prebuild_preset`). A create from the active version whose
parameter values (defaults filled) equal a preset's claims a ready member instead of starting a container: one
conditional UPDATE clears the mark, so two creates never take the same member, on SQLite (whose writers queue)
and PostgreSQL (where `SKIP LOCKED` lets concurrent creates pick different members without waiting). The loop that
keeps the pools full is `warmpool/prebuild_pool.py`; what runs in the workspace after a claim, `tunnel/claims.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.provisioner import metrics
from dockyard.runtimes.plan import WorkspacePlan
from dockyard.store.models import (
    Organization,
    Template,
    TemplateVersion,
    User,
    Workspace,
    WorkspaceAgent,
    WorkspaceBuild,
)
from dockyard.templates import parameters as parameter_rules
from dockyard.templates import service as templates
from dockyard.workspaces.status import ACTIVE_BUILD_STATUSES
from dockyard_sdk import models as wire

SYSTEM_USER = "prebuilds"
CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class Preset:
    template_id: str
    template_name: str
    organization_id: str
    version_id: str
    version_number: int
    values: dict[str, Any]
    key: str
    instances: int


def preset_key(version_id: str, values: dict[str, Any]) -> str:
    """The same version and values give the same key, in whatever order the values were written."""
    text = json.dumps([version_id, values], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def presets_of(template: Template, version: TemplateVersion) -> list[Preset]:
    manifest = templates.version_to_wire(version).manifest
    found = []
    for prebuild in manifest.prebuilds:
        values, problems = parameter_rules.validate(manifest.parameters, prebuild.parameters)
        if problems:  # pragma: no cover - refused at push; a later rule change must not break the loop
            continue
        found.append(
            Preset(
                template_id=template.id,
                template_name=template.name,
                organization_id=template.organization_id,
                version_id=version.id,
                version_number=version.number,
                values=values,
                key=preset_key(version.id, values),
                instances=prebuild.instances,
            )
        )
    return found


def desired(db: Session, *, template_id: str | None = None) -> list[Preset]:
    """The presets of every template's active version (only those versions keep members)."""
    query = select(Template, TemplateVersion).join(
        TemplateVersion, TemplateVersion.id == Template.active_version_id
    )
    if template_id is not None:
        query = query.where(Template.id == template_id)
    presets: list[Preset] = []
    for template, version in db.execute(query).all():
        presets += presets_of(template, version)
    return presets


def matching(template: Template, version: TemplateVersion, values: dict[str, Any]) -> Preset | None:
    """The preset a create from `version` with these (validated) values may claim from, if any."""
    if template.active_version_id != version.id:
        return None
    key = preset_key(version.id, values)
    return next((p for p in presets_of(template, version) if p.key == key), None)


def system_user(db: Session) -> User:
    """The user that owns pool members: it has no password and no tokens, so nobody signs in as it."""
    user = db.scalar(select(User).where(User.username == SYSTEM_USER))
    if user is not None:
        return user
    organization = db.scalar(select(Organization).order_by(Organization.created_at).limit(1))
    assert organization is not None
    user = User(
        organization_id=organization.id,
        username=SYSTEM_USER,
        email=f"{SYSTEM_USER}@dockyard.invalid",
        password_hash=None,
        role=wire.Role.MEMBER,
        status=wire.UserStatus.SUSPENDED,
    )
    db.add(user)
    db.flush()
    return user


def _ready_members(key: str) -> Any:
    # Ready means: the member's latest build is the start that succeeded, and its agent (reset by that build)
    # reported `ready`, so the startup script's user-independent part is done.
    return (
        select(Workspace.id)
        .join(WorkspaceAgent, WorkspaceAgent.workspace_id == Workspace.id)
        .join(
            WorkspaceBuild,
            and_(
                WorkspaceBuild.id == WorkspaceAgent.build_id,
                WorkspaceBuild.status == wire.BuildStatus.SUCCEEDED,
                WorkspaceBuild.transition == wire.Transition.START.value,
            ),
        )
        .where(
            Workspace.prebuild_preset == key,
            Workspace.deleted.is_(False),
            WorkspaceAgent.lifecycle == wire.AgentLifecycle.READY.value,
            WorkspaceAgent.connection == wire.AgentConnection.CONNECTED.value,
        )
        .order_by(Workspace.created_at, Workspace.id)
        .limit(1)
    )


def claim(db: Session, preset: Preset) -> Workspace | None:
    """Take a ready member of `preset` in the caller's transaction (a rollback puts it back); None when the
    pool has none ready, which the caller counts as a miss and answers with a cold start."""
    query = _ready_members(preset.key)
    if db.get_bind().dialect.name == "postgresql":
        # SKIP LOCKED: concurrent creates take different members instead of queueing on the oldest one.
        query = query.with_for_update(skip_locked=True, of=Workspace)
    for _ in range(CLAIM_ATTEMPTS):
        member_id = db.scalar(query)
        if member_id is None:
            break
        # The condition is the claim: of two creates that saw the same member, only one UPDATE still finds
        # its mark (SQLite runs writers one at a time; the second sees the first's commit and tries the next).
        taken = db.execute(  # type: ignore[attr-defined]
            update(Workspace)
            .where(Workspace.id == member_id, Workspace.prebuild_preset == preset.key)
            .values(prebuild_preset=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken == 1:
            member = db.get(Workspace, member_id, populate_existing=True)
            assert member is not None
            return member
    metrics.MISSES.labels(preset.template_name, "empty").inc()
    return None


@dataclass
class Member:
    workspace: Workspace
    build: WorkspaceBuild
    agent_lifecycle: str | None

    @property
    def state(self) -> str:
        if self.build.transition != wire.Transition.START.value:
            return "removing"
        if self.build.status in ACTIVE_BUILD_STATUSES:
            return "building"
        if self.build.status != wire.BuildStatus.SUCCEEDED:
            return "failed"
        if self.agent_lifecycle == wire.AgentLifecycle.READY.value:
            return "ready"
        if self.agent_lifecycle in (None, "created", "starting"):
            return "building"
        return "failed"

    @property
    def image(self) -> str:
        return WorkspacePlan.from_stored(self.build.plan).image if self.build.plan else ""


def members(db: Session) -> list[Member]:
    """Every unclaimed, undeleted pool member with its latest build and its agent's lifecycle."""
    rows = db.execute(
        select(Workspace, WorkspaceBuild, WorkspaceAgent.lifecycle)
        .join(WorkspaceBuild, WorkspaceBuild.workspace_id == Workspace.id)
        .outerjoin(WorkspaceAgent, WorkspaceAgent.workspace_id == Workspace.id)
        .where(Workspace.prebuild_preset.is_not(None), Workspace.deleted.is_(False))
        .order_by(Workspace.id, WorkspaceBuild.number.desc())
    ).all()
    found: dict[str, Member] = {}
    for workspace, build, lifecycle in rows:
        if workspace.id not in found:
            found[workspace.id] = Member(workspace, build, lifecycle)
    return list(found.values())


def status(db: Session, presets: Iterable[Preset], *, template_id: str | None = None) -> wire.PrebuildList:
    """The pool as the API and `dockyard prebuilds` show it (and the pool-size gauge); with `template_id`,
    only that template's outdated members are counted."""
    by_key: dict[str, list[Member]] = defaultdict(list)
    for member in members(db):
        by_key[member.workspace.prebuild_preset or ""].append(member)
    presets = list(presets)
    wanted = {p.key for p in presets}
    rows = []
    for preset in presets:
        states: dict[str, int] = defaultdict(int)
        images: set[str] = set()
        for member in by_key.get(preset.key, []):
            states[member.state] += 1
            if member.state == "ready" and member.image:
                images.add(member.image)
        for state, count in (
            ("desired", preset.instances),
            ("ready", states["ready"]),
            ("building", states["building"]),
            ("failed", states["failed"]),
        ):
            metrics.POOL_SIZE.labels(preset.template_name, preset.key[:12], state).set(count)
        rows.append(
            wire.PrebuildPreset(
                template=preset.template_name,
                template_version_id=preset.version_id,
                version=preset.version_number,
                preset=preset.key,
                parameters=preset.values,
                desired=preset.instances,
                ready=states["ready"],
                building=states["building"],
                failed=states["failed"],
                images=sorted(images),
            )
        )
    outdated = sum(
        1
        for key, found in by_key.items()
        if key not in wanted
        for member in found
        if template_id is None or member.workspace.template_id == template_id
    )
    return wire.PrebuildList(presets=rows, outdated=outdated)


def for_actor(db: Session, actor: Actor, *, template: Template | None = None) -> wire.PrebuildList:
    """The pool of one template, or of every template the actor may see in its organization."""
    if template is not None:
        return status(db, desired(db, template_id=template.id), template_id=template.id)
    allowed = {
        t.id
        for t in db.scalars(select(Template).where(Template.organization_id == actor.organization_id))
        if actor.allows_template(t.id, t.name)
    }
    presets = [p for p in desired(db) if p.template_id in allowed]
    return status(db, presets)

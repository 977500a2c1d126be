"""Every query that finds workspaces for an actor: authorization is a WHERE clause (`readable`), filters and
paging run in SQL, and a page costs the same few statements however many workspaces exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, true
from sqlalchemy.orm import Session, defer, lazyload

from dockyard.accounts.actor import Actor
from dockyard.errors import NotFound
from dockyard.provisioner import agents, builds
from dockyard.store.models import Template, User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.workspaces.status import ACTIVE_BUILD_STATUSES, LATEST, ON_LATEST, status_is
from dockyard_sdk import models as wire

Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class Names:
    """What a workspace's wire form shows of its owner and template."""

    owner_name: str
    template_name: str
    template_active_version_id: str | None

    @classmethod
    def of(cls, workspace: Workspace) -> Names:
        template = workspace.template
        return cls(workspace.owner.username, template.name, template.active_version_id)


@dataclass(frozen=True)
class Loaded:
    """A workspace with its latest build, which together give its status. A list carries its owner's and
    template's names (`names`) as columns of its own row; otherwise they come from the relationships."""

    workspace: Workspace
    build: WorkspaceBuild
    # Set when a create claimed a warm pool member: what the agent is to be told (tunnel/claims.py).
    claim: dict[str, Any] | None = None
    names: Names | None = None


def readable(actor: Actor) -> ColumnElement[bool]:
    """The workspaces `actor` may read, as a WHERE clause over `Workspace`.

    The owner role reads every workspace, other roles their own. A token's allow-list narrows that to the
    workspaces it names and those made from the templates it names, by id or name; entries are typed, so
    `template:dev` never covers a workspace named `dev` (the same rule as `Actor.allows_workspace`). A token
    limited to its own workspaces reads only those it created.
    """
    clauses: list[ColumnElement[bool]] = []
    if not actor.is_owner:
        clauses.append(Workspace.owner_id == actor.user_id)
    if actor.own_workspaces_only:
        clauses.append(Workspace.created_by_token_id == actor.token_id)
    if actor.allow_list:
        allowed: list[ColumnElement[bool]] = []
        named = actor.listed("workspace")
        if named:
            allowed += [Workspace.id.in_(named), Workspace.name.in_(named)]
        templates = actor.listed("template")
        if templates:
            listed = select(Template.id).where(or_(Template.id.in_(templates), Template.name.in_(templates)))
            allowed.append(Workspace.template_id.in_(listed))
        clauses.append(or_(*allowed) if allowed else false())
    return and_(true(), *clauses)


def visible(db: Session, actor: Actor, workspace_id: str) -> bool:
    """Whether `actor` may read the workspace: `readable` for one row."""
    return db.scalar(select(Workspace.id).where(Workspace.id == workspace_id, readable(actor))) is not None


def get(db: Session, actor: Actor, ref: str) -> Workspace:
    """Resolve `{workspace}`: an id or the name of one of the actor's own. Unseen means 404.

    Another user's workspace is reached by id, or by name through `/users/{user}/workspace/{name}`. A deleted
    workspace stays readable by id, so clients can see the final state of what they made.
    """
    own_name = and_(Workspace.owner_id == actor.user_id, Workspace.name == ref, Workspace.deleted.is_(False))
    # Names are at most 32 characters and ids 36, so at most one row matches either way.
    found = db.scalar(select(Workspace).where(readable(actor), or_(Workspace.id == ref, own_name)))
    if found is None:
        raise NotFound(f"Workspace {ref!r} not found.")
    return found


def get_by_owner(db: Session, actor: Actor, owner: User, name: str) -> Workspace:
    found = db.scalar(
        select(Workspace).where(
            readable(actor),
            Workspace.owner_id == owner.id,
            Workspace.name == name,
            Workspace.deleted.is_(False),
        )
    )
    if found is None:
        raise NotFound(f"Workspace {owner.username}/{name} not found.")
    return found


def load(db: Session, workspace: Workspace) -> Loaded:
    return Loaded(workspace, builds.latest(db, workspace))


@dataclass(frozen=True)
class Filters:
    """What a list asks for besides the actor: an owner (name, id or `me`), a template (name or id), a
    status, a substring of the name, and whether deleted workspaces count."""

    owner: str | None = None
    template: str | None = None
    status: wire.WorkspaceStatus | None = None
    name: str | None = None
    include_deleted: bool = False


def _filtered(query: Q, actor: Actor, build: type[WorkspaceBuild], filters: Filters) -> Q:
    # Unclaimed warm pool members are the pool's, shown by `/prebuilds`, not anyone's workspaces yet.
    query = query.where(readable(actor), Workspace.prebuild_preset.is_(None))
    if not filters.include_deleted:
        query = query.where(Workspace.deleted.is_(False))
    if filters.owner:
        owner_id = actor.user_id if filters.owner == "me" else filters.owner
        owners = select(User.id).where(or_(User.username == filters.owner, User.id == owner_id))
        query = query.where(Workspace.owner_id.in_(owners))
    if filters.template:
        named = select(Template.id).where(
            or_(Template.name == filters.template, Template.id == filters.template)
        )
        query = query.where(Workspace.template_id.in_(named))
    if filters.name:
        query = query.where(Workspace.name.contains(filters.name, autoescape=True))
    if filters.status is not None:
        query = query.where(status_is(filters.status, build))
    return query


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
    """One page of the workspaces the actor may read, newest first, and how many match in all pages: at most
    two statements, whatever the page size (`convert.to_wire_many` adds a constant few for the wire form)."""
    filters = Filters(
        owner=owner, template=template, status=status, name=name, include_deleted=include_deleted
    )
    build, on_latest = LATEST, ON_LATEST

    def matching(*columns: Any) -> Select[Any]:
        query = select(*columns).select_from(Workspace)
        if filters.status is not None:
            query = query.join(build, on_latest)
        return _filtered(query, actor, build, filters)

    newest_first = (Workspace.created_at.desc(), Workspace.id.desc())
    # The page's ids first, from narrow rows; only those are then joined with their latest build, owner and
    # template. Joining every match before sorting cost more than the whole rest of the request.
    page_ids = matching(Workspace.id).order_by(*newest_first).limit(limit).offset(offset)
    # Owner and template names come as plain columns, not as the joined User and Template entities: making
    # those objects was half the cost of the page. A list never shows a build's plan or parameters.
    page = (
        select(Workspace, build, User.username, Template.name, Template.active_version_id)
        .select_from(Workspace)
        .join(build, on_latest)
        .join(User, User.id == Workspace.owner_id)
        .join(Template, Template.id == Workspace.template_id)
        .where(Workspace.id.in_(page_ids))
        .options(
            lazyload(Workspace.owner),
            lazyload(Workspace.template),
            defer(build.plan, raiseload=True),
            defer(build.parameters, raiseload=True),
        )
    )
    rows = [
        Loaded(w, b, names=Names(owner, template, active))
        for w, b, owner, template, active in db.execute(page.order_by(*newest_first))
    ]
    if offset == 0 and len(rows) < limit:
        # A first page that is not full is everything: no need to count.
        return rows, len(rows)
    return rows, int(db.scalar(matching(func.count())) or 0)


def load_id(db: Session, workspace_id: str) -> Loaded:
    """A workspace already authorized (a long poll re-reading it) by id, with its latest build."""
    workspace = db.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"Workspace {workspace_id!r} not found.")
    return load(db, workspace)


def get_build(db: Session, actor: Actor, ref: str) -> tuple[Workspace, WorkspaceBuild]:
    """Resolve `{build}` by id, with its workspace; a build of a workspace the actor cannot read is 404."""
    found = db.execute(
        select(Workspace, WorkspaceBuild)
        .join(WorkspaceBuild, WorkspaceBuild.workspace_id == Workspace.id)
        .where(WorkspaceBuild.id == ref, readable(actor))
    ).first()
    if found is None:
        raise NotFound(f"Build {ref!r} not found.")
    return found[0], found[1]


def build_history(db: Session, workspace: Workspace) -> list[WorkspaceBuild]:
    """The workspace's builds, newest first."""
    return list(
        db.scalars(
            select(WorkspaceBuild)
            .where(WorkspaceBuild.workspace_id == workspace.id)
            .order_by(WorkspaceBuild.number.desc())
        )
    )


def settled(db: Session, workspace_id: str, *, ready: bool) -> bool:
    """Whether a long poll waiting on the workspace is done: no build in progress and, with `ready`, a running
    workspace's agent through its startup script (or failed at it). A poll wakes at each of a dozen changes on
    the way to ready; this is what it asks each time, in one statement (the status rule in SQL, `status_is`),
    and the workspace's wire form (five statements and a large model) is made once, for the answer."""
    build = LATEST
    found = db.execute(
        select(build.status, status_is(wire.WorkspaceStatus.RUNNING, build), WorkspaceAgent.lifecycle)
        .select_from(Workspace)
        .join(build, ON_LATEST)
        .outerjoin(WorkspaceAgent, WorkspaceAgent.workspace_id == Workspace.id)
        .where(Workspace.id == workspace_id)
    ).first()
    if found is None:
        raise NotFound(f"Workspace {workspace_id!r} not found.")
    status, running, lifecycle = found
    if status in ACTIVE_BUILD_STATUSES:
        return False
    if not ready or not running:
        return True
    return lifecycle is not None and wire.AgentLifecycle(lifecycle) in agents.SETTLED


def build_status(db: Session, build_id: str) -> str:
    status = db.scalar(select(WorkspaceBuild.status).where(WorkspaceBuild.id == build_id))
    if status is None:
        raise NotFound(f"Build {build_id!r} not found.")
    return status

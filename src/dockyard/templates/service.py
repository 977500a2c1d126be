"""The template service: push, version, activate, read and delete templates."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, NotFound, Validation, ValidationFailed
from dockyard.events import bus_of, channels
from dockyard.outbound import DEFAULT_POLICY, OutboundPolicy
from dockyard.store import audit
from dockyard.store.models import Template as Template
from dockyard.store.models import TemplateArchive, TemplateVersion, Workspace
from dockyard.templates import archive, devcontainer_repo, manifest
from dockyard.templates.archive import TemplateFiles
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import DevcontainerRepo, TemplateManifest

# Versions never change once written, so their wire form can be kept for the life of the process.
_version_cache: dict[str, wire.TemplateVersion] = {}
_version_cache_lock = threading.Lock()


def version_to_wire(version: TemplateVersion) -> wire.TemplateVersion:
    cached = _version_cache.get(version.id)
    if cached is not None:
        return cached
    result = wire.TemplateVersion(
        id=version.id,
        template_id=version.template_id,
        number=version.number,
        name=f"v{version.number}",
        content_hash=version.content_hash,
        message=version.message,
        created_at=version.created_at,
        created_by=version.created_by,
        manifest=TemplateManifest.model_validate(version.manifest),
        files=[wire.TemplateFile.model_validate(f) for f in version.files],
    )
    with _version_cache_lock:
        if len(_version_cache) > 10_000:
            _version_cache.clear()
        _version_cache[version.id] = result
    return result


def active_version_wire(db: Session, template: Template) -> wire.TemplateVersion | None:
    """The active version's wire form, from the cache when possible: it skips loading the version's JSON."""
    if template.active_version_id is None:
        return None
    cached = _version_cache.get(template.active_version_id)
    if cached is not None:
        return cached
    version = db.get(TemplateVersion, template.active_version_id)
    return version_to_wire(version) if version is not None else None


def to_wire(db: Session, template: Template) -> wire.Template:
    return wire.Template(
        id=template.id,
        name=template.name,
        display_name=template.display_name,
        description=template.description,
        icon=template.icon,
        active_version_id=template.active_version_id,
        active_version=active_version_wire(db, template),
        created_at=template.created_at,
        updated_at=template.updated_at,
        created_by=template.created_by,
    )


def get(db: Session, actor: Actor, ref: str) -> Template:
    """Resolve `{template}` by id or name; 404 names it, 403 if the token's allow-list excludes it."""
    template = db.scalar(
        select(Template).where(
            Template.organization_id == actor.organization_id, or_(Template.id == ref, Template.name == ref)
        )
    )
    if template is None:
        raise NotFound(f"Template {ref!r} not found.")
    actor.require_allowed("template", template.id, template.name)
    return template


class Catalog:
    """Each organization's template list in wire form, the hottest read of dashboards and orchestrators.

    Writes clear it at once in this process and, through the pubsub, in every other one; `ttl` bounds how
    stale a list can be in a replica that missed the message. Single templates (`GET /templates/{t}`) are always read from the database.
    """

    def __init__(self, ttl: float = 2.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, int, list[wire.Template]]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, organization_id: str) -> list[wire.Template] | None:
        found = self.peek(organization_id)
        return found[0] if found is not None and not found[1] else None

    def peek(self, organization_id: str) -> tuple[list[wire.Template], bool] | None:
        """(list, stale) unless a write in this process cleared it; stale lists are at most `ttl` old twice
        over and are served while one refresh runs, so a busy dashboard never waits on the database."""
        entry = self._entries.get(organization_id)
        if entry is None or entry[1] != self._generation or entry[0] + self.ttl < time.monotonic():
            return None
        return entry[2], entry[0] < time.monotonic()

    def load(self, db: Session, actor: Actor) -> list[wire.Template]:
        generation = self._generation
        rows = db.scalars(
            select(Template).where(Template.organization_id == actor.organization_id).order_by(Template.name)
        ).all()
        listed = [to_wire(db, t) for t in rows]
        with self._lock:
            # A write that landed while this was loading makes the result stale: keep it out of the cache.
            if generation == self._generation:
                self._entries[actor.organization_id] = (time.monotonic() + self.ttl, generation, listed)
        return listed

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


catalog = Catalog()


def _changed(db: Session, organization_id: str) -> None:
    """Clear this process's template lists now, and every other process's through the pubsub."""
    catalog.invalidate()
    bus = bus_of(db)
    if bus is not None:
        bus.publish(channels.TEMPLATES, organization_id)


def visible(actor: Actor, listed: list[wire.Template]) -> list[wire.Template]:
    return [t for t in listed if actor.allows_template(t.id, t.name)]


def versions(db: Session, template: Template) -> list[TemplateVersion]:
    return list(
        db.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id == template.id)
            .order_by(TemplateVersion.number.desc())
        )
    )


def get_version(db: Session, template: Template, ref: str) -> TemplateVersion:
    """A version by id, name (`v3`), number (`3`) or content-hash prefix (8+ characters)."""
    query = select(TemplateVersion).where(TemplateVersion.template_id == template.id)
    clauses: list[Any] = [TemplateVersion.id == ref]
    number = ref[1:] if ref.startswith("v") else ref
    if number.isdigit() and len(number) < 10:
        clauses.append(TemplateVersion.number == int(number))
    if len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
        clauses.append(TemplateVersion.content_hash.startswith(ref))
    matches = db.scalars(query.where(or_(*clauses)).limit(2)).all()
    if not matches:
        raise NotFound(f"Version {ref!r} of template {template.name!r} not found.")
    if len(matches) > 1:
        raise Conflict(f"Version {ref!r} is ambiguous; give more of the hash.")
    return matches[0]


def _store_files(db: Session, files: TemplateFiles) -> str:
    content_hash = files.content_hash
    if db.get(TemplateArchive, content_hash) is None:
        data = files.to_tar_gz()
        db.add(TemplateArchive(content_hash=content_hash, data=data, size=len(data)))
    return content_hash


def _new_version(
    db: Session,
    actor: Actor,
    template: Template,
    files: TemplateFiles,
    parsed: TemplateManifest,
    message: str,
) -> TemplateVersion:
    content_hash = _store_files(db, files)
    number = (
        db.scalar(select(func.max(TemplateVersion.number)).where(TemplateVersion.template_id == template.id))
        or 0
    ) + 1
    version = TemplateVersion(
        template_id=template.id,
        number=number,
        content_hash=content_hash,
        manifest=parsed.model_dump(mode="json"),
        files=files.listing(),
        message=message,
        created_by=actor.user_id or None,
    )
    db.add(version)
    db.flush()
    return version


def _load(
    db: Session,
    actor: Actor,
    files: TemplateFiles,
    *,
    allow_privileged: bool,
    host_binds: Sequence[str],
    outbound: OutboundPolicy,
) -> tuple[TemplateFiles, TemplateManifest]:
    """The files and manifest a version stores: as pushed, plus, for a configuration in a repository, the
    configuration's files fetched now with the pusher's git credential (before anything is written), plus the
    lockfile that pins the configuration's OCI features to what they resolved to at this push."""
    files, parsed = manifest.load_pinned(files, allow_privileged=allow_privileged, host_binds=host_binds)
    if isinstance(parsed.devcontainer, DevcontainerRepo):
        return devcontainer_repo.fetch(db, actor, files, parsed, host_binds=host_binds, outbound=outbound)
    return files, parsed


def _source(parsed: TemplateManifest) -> dict[str, Any]:
    """For the audit row: where a configuration fetched from a repository came from."""
    source = parsed.devcontainer
    if not isinstance(source, DevcontainerRepo):
        return {}
    return {"devcontainer": {"repo": source.repo, "ref": source.ref, "commit": source.commit}}


def create(
    db: Session,
    actor: Actor,
    files: TemplateFiles,
    *,
    name: str | None = None,
    message: str = "",
    allow_privileged: bool = False,
    host_binds: Sequence[str] = (),
    outbound: OutboundPolicy = DEFAULT_POLICY,
) -> Template:
    files, parsed = _load(
        db, actor, files, allow_privileged=allow_privileged, host_binds=host_binds, outbound=outbound
    )
    name = name or parsed.name
    if db.scalar(
        select(Template.id).where(Template.organization_id == actor.organization_id, Template.name == name)
    ):
        raise Conflict(
            f"A template named {name!r} already exists.",
            detail=f"Push a new version with `dockyard templates push` or POST /templates/{name}/versions.",
            validations=[Validation("name", f"{name!r} is taken")],
        )
    template = Template(
        organization_id=actor.organization_id,
        name=name,
        display_name=parsed.display_name,
        description=parsed.description,
        icon=parsed.icon,
        created_by=actor.user_id or None,
    )
    db.add(template)
    try:
        db.flush()
        version = _new_version(db, actor, template, files, parsed, message)
        template.active_version = version
        audit.record(
            db,
            actor,
            "template.create",
            resource_type="template",
            resource_id=template.id,
            resource_name=template.name,
            status_code=201,
            detail={"version": version.number, "content_hash": version.content_hash, **_source(parsed)},
        )
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise Conflict(f"A template named {name!r} already exists.") from exc
    _changed(db, actor.organization_id)
    return template


def create_version(
    db: Session,
    actor: Actor,
    template: Template,
    files: TemplateFiles,
    *,
    message: str = "",
    activate: bool = True,
    allow_privileged: bool = False,
    host_binds: Sequence[str] = (),
    outbound: OutboundPolicy = DEFAULT_POLICY,
) -> tuple[TemplateVersion, bool]:
    """Push files as a new version. Identical content returns the existing version (created=False).

    `allow_privileged`: the admin lets Kubernetes pod overlays loosen isolation (`--kubernetes-allow-privileged`);
    `host_binds`: the host folders dev container bind mounts may use (`--devcontainer-allow-host-bind`);
    `outbound`: the ranges a repository's fetch keeps out of (`--outbound-deny`).
    """
    files, parsed = _load(
        db, actor, files, allow_privileged=allow_privileged, host_binds=host_binds, outbound=outbound
    )
    content_hash = files.content_hash
    version = db.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template.id, TemplateVersion.content_hash == content_hash
        )
    )
    created = version is None
    if version is None:
        try:
            version = _new_version(db, actor, template, files, parsed, message)
        except IntegrityError as exc:
            db.rollback()
            raise Conflict("Another version was pushed at the same time; push again.") from exc
    if activate and template.active_version_id != version.id:
        template.active_version = version
        if not created:
            audit.record(
                db,
                actor,
                "template.activate",
                resource_type="template",
                resource_id=template.id,
                resource_name=template.name,
                detail={"version": version.number},
            )
    if created:
        audit.record(
            db,
            actor,
            "template.version.create",
            resource_type="template",
            resource_id=template.id,
            resource_name=template.name,
            status_code=201,
            detail={
                "version": version.number,
                "content_hash": version.content_hash,
                "activated": activate,
                **_source(parsed),
            },
        )
    db.commit()
    _changed(db, actor.organization_id)
    return version, created


def update(db: Session, actor: Actor, template: Template, request: wire.UpdateTemplateRequest) -> Template:
    changes: dict[str, Any] = {}
    for field in ("display_name", "description", "icon"):
        value = getattr(request, field)
        if value is not None and value != getattr(template, field):
            setattr(template, field, value)
            changes[field] = value
    if request.active_version_id is not None:
        try:
            version = get_version(db, template, request.active_version_id)
        except NotFound as exc:
            raise ValidationFailed(exc.message, [Validation("active_version_id", exc.message)]) from exc
        if version.id != template.active_version_id:
            template.active_version = version
            changes["active_version"] = version.number
    if changes:
        audit.record(
            db,
            actor,
            "template.update",
            resource_type="template",
            resource_id=template.id,
            resource_name=template.name,
            detail=changes,
        )
        db.commit()
        _changed(db, actor.organization_id)
    return template


def delete(db: Session, actor: Actor, template: Template) -> None:
    in_use = (
        db.scalar(
            select(func.count()).where(Workspace.template_id == template.id, Workspace.deleted.is_(False))
        )
        or 0
    )
    if in_use:
        raise Conflict(
            f"Template {template.name!r} is used by {in_use} workspace{'s' if in_use != 1 else ''}.",
            detail="Delete those workspaces first.",
        )
    used_by_deleted = db.scalar(select(func.count()).where(Workspace.template_id == template.id)) or 0
    if used_by_deleted:
        raise Conflict(
            f"Template {template.name!r} still has deleted workspaces on record.",
            detail="Their history keeps the template; it cannot be removed.",
        )
    audit.record(
        db,
        actor,
        "template.delete",
        resource_type="template",
        resource_id=template.id,
        resource_name=template.name,
    )
    template.active_version_id = None
    db.flush()
    db.delete(template)
    db.commit()
    _changed(db, actor.organization_id)


def files_of(db: Session, version: TemplateVersion) -> TemplateFiles:
    stored = db.get(TemplateArchive, version.content_hash)
    if stored is None:  # pragma: no cover - guarded by the foreign key
        raise NotFound(f"The files of version v{version.number} are missing.")
    return archive.read_tar(stored.data)


def archive_bytes(db: Session, version: TemplateVersion) -> bytes:
    stored = db.get(TemplateArchive, version.content_hash)
    if stored is None:  # pragma: no cover - guarded by the foreign key
        raise NotFound(f"The files of version v{version.number} are missing.")
    return stored.data

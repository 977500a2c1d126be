"""Fleet guardrails: how many workspaces, CPUs and bytes of memory a user or a token may have running, and how
fast a token may create workspaces.

A workspace counts while its latest build is a start that has not failed or been canceled (pending, running or
succeeded). Limits live in `quotas` rows (`user` or `token`); a missing row or a null column means no limit. A
quota set below current use is accepted: nothing is stopped, and new creates and starts are refused with the
reason until use drops below it. Refusals are 429 with `Retry-After` and a validation naming the limit.

Counting and inserting race between two creates of the same user; on PostgreSQL the check locks the owner's
user row first (`FOR UPDATE`), so creates of one user are counted one at a time. SQLite has one writer anyway.
Warm networks (the only pool) are not workspaces, so they never count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Forbidden, TooManyRequests, Validation
from dockyard.store import audit
from dockyard.store.models import ApiToken, Quota, User, Workspace
from dockyard.store.types import utcnow
from dockyard.workspaces.status import LATEST, ON_LATEST
from dockyard_sdk import models as wire
from dockyard_sdk.units import parse_size

USER = "user"
TOKEN = "token"  # noqa: S105 - a subject type, not a secret
RATE_WINDOW = timedelta(seconds=60)
# A capacity limit frees up when a workspace stops, which nobody can predict: clients retry after this.
CAPACITY_RETRY = 30.0
_COUNTING = (wire.BuildStatus.PENDING.value, wire.BuildStatus.RUNNING.value, wire.BuildStatus.SUCCEEDED.value)


@dataclass(frozen=True)
class Usage:
    workspaces: int
    cpu_millis: int
    memory_bytes: int


def _usage(db: Session, condition: ColumnElement[bool], *, excluding: str | None = None) -> Usage:
    build = LATEST
    query = (
        select(
            func.count(Workspace.id),
            func.coalesce(func.sum(Workspace.cpu_millis), 0),
            func.coalesce(func.sum(Workspace.memory_bytes), 0),
        )
        .join(build, ON_LATEST)
        .where(
            condition,
            Workspace.deleted.is_(False),
            build.transition == wire.Transition.START.value,
            build.status.in_(_COUNTING),
        )
    )
    if excluding is not None:
        query = query.where(Workspace.id != excluding)
    count, cpu, memory = db.execute(query).one()
    return Usage(int(count or 0), int(cpu or 0), int(memory or 0))


def _creates_last_minute(db: Session, token_id: str) -> list[Workspace]:
    since = utcnow() - RATE_WINDOW
    return list(
        db.scalars(
            select(Workspace)
            .where(Workspace.created_by_token_id == token_id, Workspace.created_at > since)
            .order_by(Workspace.created_at)
        )
    )


def _refuse(subject: str, field: str, detail: str, *, retry_after: float) -> TooManyRequests:
    return TooManyRequests(
        f"Quota exceeded: {subject} {detail}.",
        retry_after=retry_after,
        detail=f"{field}: {detail}",
        validations=[Validation(field, detail)],
    )


def _check_capacity(
    quota: Quota | None, used: Usage, *, subject: str, cpu_millis: int, memory_bytes: int
) -> None:
    if quota is None:
        return
    if quota.max_workspaces is not None and used.workspaces + 1 > quota.max_workspaces:
        raise _refuse(
            subject,
            "max_workspaces",
            f"may run at most {quota.max_workspaces} workspaces ({used.workspaces} running or starting)",
            retry_after=CAPACITY_RETRY,
        )
    if quota.max_cpu_millis is not None and used.cpu_millis + cpu_millis > quota.max_cpu_millis:
        raise _refuse(
            subject,
            "max_cpu",
            f"may use at most {quota.max_cpu_millis / 1000:g} CPUs ({used.cpu_millis / 1000:g} in use, "
            f"{cpu_millis / 1000:g} more asked)",
            retry_after=CAPACITY_RETRY,
        )
    if quota.max_memory_bytes is not None and used.memory_bytes + memory_bytes > quota.max_memory_bytes:
        raise _refuse(
            subject,
            "max_memory",
            f"may use at most {_gib(quota.max_memory_bytes)} of memory ({_gib(used.memory_bytes)} in use, "
            f"{_gib(memory_bytes)} more asked)",
            retry_after=CAPACITY_RETRY,
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:.3g} GiB"


def check_start(db: Session, actor: Actor, workspace: Workspace) -> None:
    """Before a create or start: refuse (429) when the owner or the acting token would pass a limit."""
    # Serialises one user's creates and starts on PostgreSQL, so two cannot both take the last slot. FOR NO KEY
    # UPDATE: the new workspace row's foreign key already holds KEY SHARE on the user, and a plain FOR UPDATE
    # after it deadlocks two creates that each hold one.
    db.execute(select(User.id).where(User.id == workspace.owner_id).with_for_update(key_share=True))
    cpu, memory = workspace.cpu_millis or 0, workspace.memory_bytes or 0
    owner = db.get(User, workspace.owner_id)
    user_quota = db.get(Quota, (USER, workspace.owner_id))
    if user_quota is not None:
        used = _usage(db, Workspace.owner_id == workspace.owner_id, excluding=workspace.id)
        name = owner.username if owner else workspace.owner_id
        _check_capacity(user_quota, used, subject=f"user {name}", cpu_millis=cpu, memory_bytes=memory)
    if actor.token_id is not None:
        token_quota = db.get(Quota, (TOKEN, actor.token_id))
        if token_quota is not None:
            used = _usage(db, Workspace.created_by_token_id == actor.token_id, excluding=workspace.id)
            _check_capacity(
                token_quota, used, subject=f"token {actor.token_id}", cpu_millis=cpu, memory_bytes=memory
            )


def check_create_rate(db: Session, actor: Actor) -> None:
    """Before a create: a token's creates in the last minute, against its `creates_per_minute`."""
    if actor.token_id is None:
        return
    quota = db.get(Quota, (TOKEN, actor.token_id))
    if quota is None or quota.creates_per_minute is None:
        return
    recent = _creates_last_minute(db, actor.token_id)
    if len(recent) < quota.creates_per_minute:
        return
    # The window frees a slot when the oldest create in it leaves it.
    oldest = recent[-quota.creates_per_minute] if quota.creates_per_minute else None
    wait = (
        (oldest.created_at + RATE_WINDOW - utcnow()).total_seconds()
        if oldest
        else RATE_WINDOW.total_seconds()
    )
    raise _refuse(
        f"token {actor.token_id}",
        "creates_per_minute",
        f"may create at most {quota.creates_per_minute} workspaces a minute ({len(recent)} in the last 60 s)",
        retry_after=max(1.0, wait),
    )


# --- reading and setting ------------------------------------------------------------------------------------


def to_wire(db: Session, subject_type: str, subject_id: str) -> wire.Quota:
    quota = db.get(Quota, (subject_type, subject_id))
    if subject_type == USER:
        used = _usage(db, Workspace.owner_id == subject_id)
        creates = 0
    else:
        used = _usage(db, Workspace.created_by_token_id == subject_id)
        creates = len(_creates_last_minute(db, subject_id))
    return wire.Quota(
        subject_type=subject_type,
        subject_id=subject_id,
        max_workspaces=quota.max_workspaces if quota else None,
        max_cpu=quota.max_cpu_millis / 1000 if quota and quota.max_cpu_millis is not None else None,
        max_memory_bytes=quota.max_memory_bytes if quota else None,
        creates_per_minute=quota.creates_per_minute if quota else None,
        usage=wire.QuotaUsage(
            workspaces=used.workspaces,
            cpu=used.cpu_millis / 1000,
            memory_bytes=used.memory_bytes,
            creates_last_minute=creates,
        ),
    )


def set_limits(
    db: Session, actor: Actor, subject_type: str, subject_id: str, limits: wire.QuotaLimits, *, name: str
) -> wire.Quota:
    """Replace the subject's limits (all null removes the row). Below current use is fine: see the module."""
    quota = db.get(Quota, (subject_type, subject_id))
    values = {
        "max_workspaces": limits.max_workspaces,
        "max_cpu_millis": round(limits.max_cpu * 1000) if limits.max_cpu is not None else None,
        "max_memory_bytes": parse_size(limits.max_memory) if limits.max_memory is not None else None,
        "creates_per_minute": limits.creates_per_minute,
    }
    if all(v is None for v in values.values()):
        if quota is not None:
            db.delete(quota)
    else:
        if quota is None:
            quota = Quota(subject_type=subject_type, subject_id=subject_id)
            db.add(quota)
        for key, value in values.items():
            setattr(quota, key, value)
    audit.record(
        db,
        actor,
        f"{subject_type}.quota",
        resource_type=subject_type,
        resource_id=subject_id,
        resource_name=name,
        detail={k: v for k, v in values.items() if v is not None},
    )
    db.commit()
    return to_wire(db, subject_type, subject_id)


def require_token_quota_writer(actor: Actor, token: ApiToken) -> None:
    """A token's own user (with another credential) or an owner sets its limits; never the token itself."""
    if actor.token_id == token.id:
        raise Forbidden("A token cannot change its own quota.", detail="Use another token or an owner's.")
    if token.user_id != actor.user_id and not actor.can(wire.Scope.USER_ADMIN):
        raise Forbidden("Only an owner can set another user's token quotas.")

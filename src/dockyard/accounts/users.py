"""Creating, finding, changing and logging in users."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts import tokens
from dockyard.accounts.actor import Actor
from dockyard.accounts.passwords import hash_password, needs_rehash, verify_password
from dockyard.errors import Conflict, Forbidden, NotFound, Unauthorized, Validation
from dockyard.store import audit
from dockyard.store.models import ApiToken, Organization
from dockyard.store.models import User as User
from dockyard_sdk import models as wire

SESSION_LIFETIME = timedelta(hours=24)


def to_wire(user: User) -> wire.User:
    return wire.User(
        id=user.id,
        username=user.username,
        email=user.email,
        role=wire.Role(user.role),
        status=wire.UserStatus(user.status),
        created_at=user.created_at,
        last_seen_at=user.last_seen_at,
    )


def default_organization(db: Session) -> Organization:
    org = db.scalar(select(Organization).where(Organization.name == "default"))
    if org is None:
        org = Organization(name="default")
        db.add(org)
        db.flush()
    return org


def get(db: Session, actor: Actor, ref: str) -> User:
    """Resolve `{user}` (a name, an id or `me`). Users the actor may not see look missing."""
    if ref == "me":
        ref = actor.user_id
    user = db.scalar(select(User).where(or_(User.id == ref, User.username == ref)))
    if user is None or not (actor.is_owner or user.id == actor.user_id):
        raise NotFound(f"User {ref!r} not found.")
    return user


def list_users(
    db: Session, actor: Actor, *, search: str | None, limit: int, offset: int
) -> tuple[list[User], int]:
    query = select(User)
    if not actor.is_owner:
        query = query.where(User.id == actor.user_id)
    if search:
        like = f"%{search.lower()}%"
        query = query.where(or_(User.username.like(like), func.lower(User.email).like(like)))
    count = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.scalars(query.order_by(User.username).limit(limit).offset(offset)).all()
    return list(rows), count


def create(db: Session, actor: Actor | None, request: wire.CreateUserRequest) -> User:
    """Create a user. `actor` is None only for the first owner, made at first start."""
    taken = db.scalar(
        select(User).where(
            or_(User.username == request.username, func.lower(User.email) == request.email.lower())
        )
    )
    if taken is not None:
        field = "username" if taken.username == request.username else "email"
        raise Conflict(
            f"A user with this {field} already exists.",
            validations=[Validation(field, f"{getattr(request, field)!r} is taken")],
        )
    user = User(
        organization_id=default_organization(db).id,
        username=request.username,
        email=request.email,
        password_hash=hash_password(request.password) if request.password else None,
        role=request.role.value,
    )
    db.add(user)
    try:
        db.flush()
    except IntegrityError as exc:
        # Two creates racing past the check above: the unique index decides.
        db.rollback()
        raise Conflict(f"User {request.username!r} already exists.") from exc
    if actor is not None:
        audit.record(
            db,
            actor,
            "user.create",
            resource_type="user",
            resource_id=user.id,
            resource_name=user.username,
            status_code=201,
            detail={"role": user.role},
        )
    db.commit()
    return user


def update(db: Session, actor: Actor, user: User, request: wire.UpdateUserRequest) -> User:
    changes: dict[str, str] = {}
    admin_fields = {"role", "status"} & request.model_fields_set
    if admin_fields and not actor.is_owner:
        raise Forbidden(f"Only an owner can change {', '.join(sorted(admin_fields))}.")
    if user.id == actor.user_id and (
        (request.role is not None and request.role != wire.Role.OWNER and user.role == wire.Role.OWNER)
        or request.status == wire.UserStatus.SUSPENDED
    ):
        raise Conflict("You cannot demote or suspend yourself.", detail="Ask another owner to do it.")
    if request.email is not None and request.email != user.email:
        other = db.scalar(
            select(User).where(func.lower(User.email) == request.email.lower(), User.id != user.id)
        )
        if other is not None:
            raise Conflict(
                "A user with this email already exists.",
                validations=[Validation("email", f"{request.email!r} is taken")],
            )
        user.email = request.email
        changes["email"] = request.email
    if request.role is not None and request.role.value != user.role:
        user.role = request.role.value
        changes["role"] = request.role.value
    if request.status is not None and request.status.value != user.status:
        user.status = request.status.value
        changes["status"] = request.status.value
    if request.password is not None:
        user.password_hash = hash_password(request.password)
        changes["password"] = "changed"  # noqa: S105 - an audit note, not a secret
    if changes:
        audit.record(
            db,
            actor,
            "user.update",
            resource_type="user",
            resource_id=user.id,
            resource_name=user.username,
            detail=changes,
        )
        db.commit()
        tokens.cache.forget_user(user.id)
        tokens.invalidate(db, user_id=user.id)
    return user


def record_refused_login(db: Session, username: str, *, ip: str, reason: str, retry_after: float) -> None:
    """Audit a login refused by the abuse limits (once per block, not per attempt: a flood of refused
    attempts must not become a flood of writes)."""
    user = db.scalar(select(User).where(User.username == username))
    actor = Actor(
        user_id=user.id if user else "",
        username=username[:32],
        role=wire.Role(user.role) if user else wire.Role.MEMBER,
        organization_id=user.organization_id if user else "",
        scopes=frozenset(),
        ip=ip,
    )
    audit.record(
        db,
        actor,
        "user.login",
        resource_type="user",
        resource_id=user.id if user else "",
        resource_name=username[:64],
        status_code=429,
        detail={"reason": reason, "retry_after": round(retry_after)},
    )
    db.commit()


def login(db: Session, request: wire.LoginRequest, *, ip: str) -> tuple[User, str, ApiToken]:
    """Password login; returns a session token that carries scope `all` for `SESSION_LIFETIME`."""
    user = db.scalar(select(User).where(User.username == request.username))
    ok = verify_password(user.password_hash if user else None, request.password)
    if user is None or not ok or user.status != wire.UserStatus.ACTIVE:
        if user is not None:
            fake = Actor(
                user_id=user.id,
                username=user.username,
                role=wire.Role(user.role),
                organization_id=user.organization_id,
                scopes=frozenset(),
                ip=ip,
            )
            audit.record(
                db,
                fake,
                "user.login",
                resource_type="user",
                resource_id=user.id,
                resource_name=user.username,
                status_code=401,
            )
            db.commit()
        raise Unauthorized("Incorrect username or password.")
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(request.password)
    actor = Actor(
        user_id=user.id,
        username=user.username,
        role=wire.Role(user.role),
        organization_id=user.organization_id,
        scopes=frozenset({wire.Scope.ALL}),
        ip=ip,
    )
    key, token = tokens.issue(
        db,
        user,
        name=f"session-{tokens.random_suffix()}",
        lifetime=SESSION_LIFETIME,
        scopes=[wire.Scope.ALL],
        allow_list=[],
        login_type="password",
    )
    audit.record(
        db, actor, "user.login", resource_type="user", resource_id=user.id, resource_name=user.username
    )
    db.commit()
    return user, key, token


def find_by_name(db: Session, username: str) -> User | None:
    """The user with this name, unauthorized (the gateway's login audit and `owner.name` SSH user names)."""
    return db.scalar(select(User).where(User.username == username))

"""API tokens: `dy_<id>_<secret>`.

The id is the row's primary key, so authentication is one indexed lookup; only the SHA-256 of the secret is
stored. (A slow hash such as argon2 protects low-entropy passwords; a 192-bit random secret needs none, and a
slow hash would cost every request.)
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import ROLE_SCOPES, Actor
from dockyard.errors import Conflict, Forbidden, NotFound, Unauthorized, Validation
from dockyard.events import bus_of, channels
from dockyard.store import audit
from dockyard.store.models import ApiToken as ApiToken
from dockyard.store.models import User
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire
from dockyard_sdk.units import parse_duration

PREFIX = "dy"
_ID_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is advisory; writing it on every request would turn every read into a write.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def random_suffix(length: int = 6) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if (
        len(parts) != 3
        or parts[0] != PREFIX
        or not parts[1].isascii()
        or not parts[1].isalnum()
        or not parts[2]
    ):
        return None
    return parts[1], parts[2]


def to_wire(token: ApiToken) -> wire.ApiToken:
    return wire.ApiToken(
        id=token.id,
        name=token.name,
        user_id=token.user_id,
        scopes=[wire.Scope(s) for s in token.scopes],
        allow_list=list(token.allow_list),
        login_type=token.login_type,
        own_workspaces_only=token.own_workspaces_only,
        git_push=wire.GitPush(token.git_push),
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
    )


def issue(
    db: Session,
    user: User,
    *,
    name: str,
    lifetime: timedelta,
    scopes: list[wire.Scope],
    allow_list: list[str],
    login_type: str = "token",
    own_workspaces_only: bool = False,
    git_push: str = "any",
) -> tuple[str, ApiToken]:
    """Insert a token row and return (secret key, row). The caller commits."""
    token_id = random_suffix(10)
    secret = secrets.token_urlsafe(24)
    token = ApiToken(
        id=token_id,
        hashed_secret=_hash(secret),
        user_id=user.id,
        name=name,
        scopes=sorted({s.value for s in scopes}),
        allow_list=sorted(set(allow_list)),
        login_type=login_type,
        own_workspaces_only=own_workspaces_only,
        git_push=git_push,
        expires_at=utcnow() + lifetime,
    )
    db.add(token)
    return f"{PREFIX}_{token_id}_{secret}", token


def create(db: Session, actor: Actor, user: User, request: wire.CreateTokenRequest) -> tuple[str, ApiToken]:
    # A token can never grant more than the one that made it: no escalation by minting.
    # Scopes the creator's role never has are harmless (authentication intersects with the role), so only
    # those the role allows but this token lacks count as escalation.
    wanted = set(wire.Scope) if wire.Scope.ALL in request.scopes else set(request.scopes)
    possible = ROLE_SCOPES[actor.role] - {wire.Scope.ALL}
    missing = sorted(s.value for s in wanted & possible if not actor.can(s))
    if user.id != actor.user_id and not actor.can(wire.Scope.USER_ADMIN):
        raise Forbidden("Only an owner can create tokens for another user.")
    if missing and user.id == actor.user_id:
        raise Forbidden(
            "A token cannot have scopes its creator lacks.",
            validations=[Validation("scopes", f"not granted to you: {', '.join(missing)}")],
        )
    if actor.allow_list and (not request.allow_list or not set(request.allow_list) <= actor.allow_list):
        raise Forbidden(
            "A token cannot reach more than the token that creates it.",
            validations=[Validation("allow_list", "must be a subset of your token's allow_list")],
        )
    if actor.own_workspaces_only and not request.own_workspaces_only:
        raise Forbidden(
            "A token cannot reach more than the token that creates it.",
            validations=[Validation("own_workspaces_only", "must be true: your token sees only its own")],
        )
    if actor.git_push == "task-branch" and request.git_push != wire.GitPush.TASK_BRANCH:
        raise Forbidden(
            "A token cannot reach more than the token that creates it.",
            validations=[Validation("git_push", "must be task-branch: your token pushes only task branches")],
        )
    if db.scalar(select(ApiToken.id).where(ApiToken.user_id == user.id, ApiToken.name == request.name)):
        raise Conflict(
            f"A token named {request.name!r} already exists.",
            validations=[Validation("name", f"{request.name!r} is taken")],
        )
    key, token = issue(
        db,
        user,
        name=request.name,
        lifetime=parse_duration(request.lifetime),
        scopes=list(request.scopes),
        allow_list=request.allow_list,
        own_workspaces_only=request.own_workspaces_only,
        git_push=request.git_push.value,
    )
    audit.record(
        db,
        actor,
        "token.create",
        resource_type="token",
        resource_id=token.id,
        resource_name=token.name,
        status_code=201,
        detail={
            "user": user.username,
            "scopes": token.scopes,
            "allow_list": token.allow_list,
            "own_workspaces_only": token.own_workspaces_only,
            "git_push": token.git_push,
            "expires_at": token.expires_at.isoformat(),
        },
    )
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise Conflict(f"A token named {request.name!r} already exists.") from exc
    return key, token


def list_tokens(db: Session, user: User) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)))


def get(db: Session, user: User, ref: str) -> ApiToken:
    token = db.scalar(
        select(ApiToken).where(ApiToken.user_id == user.id, (ApiToken.id == ref) | (ApiToken.name == ref))
    )
    if token is None:
        raise NotFound(f"Token {ref!r} not found.")
    return token


def revoke(db: Session, actor: Actor, token: ApiToken) -> None:
    audit.record(
        db, actor, "token.revoke", resource_type="token", resource_id=token.id, resource_name=token.name
    )
    db.delete(token)
    db.commit()
    cache.forget(token.id)
    invalidate(db, token_id=token.id)


def invalidate(db: Session, *, token_id: str | None = None, user_id: str | None = None) -> None:
    """Tell every process (this one included) to drop its cached authentication of a token or a user's tokens."""
    bus = bus_of(db)
    if bus is None:
        return
    if token_id is not None:
        bus.publish(channels.TOKENS, f"token:{token_id}")
    if user_id is not None:
        bus.publish(channels.TOKENS, f"user:{user_id}")


@dataclass(frozen=True)
class _Entry:
    hashed_secret: bytes
    actor: Actor
    expires_at: datetime
    fresh_until: float


class TokenCache:
    """Recently authenticated tokens, so that a hot token costs no database round trip.

    An entry is fresh for about `ttl` seconds; after that it may still answer for up to `grace` seconds while
    one refresh from the database runs in the background (the caller asks for it: see `stale`), so a busy
    token never makes requests wait on the database. Revocation and user changes made through this process
    evict at once and reach the other replicas through the pubsub (`forget_event`); `ttl + grace` bounds
    how long a replica that missed the message (its listener connection dropped) can serve an entry.
    """

    def __init__(self, ttl: float = 10.0, grace: float = 20.0, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.grace = grace
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        # Bumped by every eviction: a lookup that read the database before an eviction must not put back
        # what the eviction removed (a revocation racing a refresh).
        self.generation = 0

    def get(self, token_id: str, secret: str) -> Actor | None:
        """The actor of a fresh entry, or None."""
        found = self.lookup(token_id, secret)
        return found[0] if found is not None and not found[1] else None

    def lookup(self, token_id: str, secret: str) -> tuple[Actor, bool] | None:
        """(actor, stale) for an entry within its grace period, or None."""
        entry = self._entries.get(token_id)
        now = time.monotonic()
        if entry is None or entry.fresh_until + self.grace < now:
            return None
        if entry.expires_at <= utcnow() or not hmac.compare_digest(entry.hashed_secret, _hash(secret)):
            return None
        return entry.actor, entry.fresh_until < now

    def put(
        self,
        token_id: str,
        hashed_secret: bytes,
        actor: Actor,
        expires_at: datetime,
        *,
        generation: int | None = None,
    ) -> None:
        """`generation`: the cache's generation before the database was read; the entry is dropped if an
        eviction happened since."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            # Jitter spreads the refreshes: tokens cached together (say after a restart) would otherwise all
            # go back to the database in the same instant.
            fresh = self.ttl * (0.5 + random.random() / 2)
            self._entries[token_id] = _Entry(hashed_secret, actor, expires_at, time.monotonic() + fresh)

    def forget(self, token_id: str) -> None:
        with self._lock:
            self.generation += 1
            self._entries.pop(token_id, None)

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            self.generation += 1
            for key in [k for k, e in self._entries.items() if e.actor.user_id == user_id]:
                del self._entries[key]

    def forget_event(self, payload: bytes) -> None:
        """A message of the tokens channel: `token:<id>` or `user:<id>` (see `invalidate`)."""
        kind, _, ident = payload.decode().partition(":")
        if kind == "token":
            self.forget(ident)
        elif kind == "user":
            self.forget_user(ident)
        else:
            self.clear()  # an unknown message: dropping everything is always safe

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


cache = TokenCache()


def lookup(key: str) -> tuple[str, str]:
    parts = split(key)
    if parts is None:
        raise Unauthorized("Invalid API token.", detail="Tokens look like dy_<id>_<secret>.")
    return parts


def authenticate(db: Session, key: str) -> Actor:
    """Resolve a bearer key to an actor (without IP); raises Unauthorized for any bad, expired or revoked key."""
    token_id, secret = lookup(key)
    cached = cache.get(token_id, secret)
    if cached is not None:
        return cached
    generation = cache.generation
    token = db.get(ApiToken, token_id)
    now = utcnow()
    if token is None or not hmac.compare_digest(token.hashed_secret, _hash(secret)):
        raise Unauthorized("Invalid API token.", detail="It may have been revoked; run `dockyard login`.")
    if token.expires_at <= now:
        raise Unauthorized("API token expired.", detail="Run `dockyard login` or create a new token.")
    user = token.user
    if user.status != wire.UserStatus.ACTIVE:
        raise Unauthorized("User is suspended.")
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        token.last_used_at = now
        user.last_seen_at = now
        db.commit()
    actor = Actor(
        user_id=user.id,
        username=user.username,
        role=wire.Role(user.role),
        organization_id=user.organization_id,
        scopes=frozenset(wire.Scope(s) for s in token.scopes),
        allow_list=frozenset(token.allow_list),
        token_id=token.id,
        own_workspaces_only=token.own_workspaces_only,
        git_push=token.git_push,
    )
    cache.put(token_id, token.hashed_secret, actor, token.expires_at, generation=generation)
    return actor


def find(db: Session, token_id: str) -> ApiToken | None:
    """The token row by id, whatever its state (callers check expiry): the gateway ties certificates to it."""
    return db.get(ApiToken, token_id)


def actor_for(db: Session, token_id: str) -> Actor:
    """The actor of a live token named by id alone: for credentials derived from a session (an app host's
    cookie), which must die with it. Raises Unauthorized for a revoked or expired token or a suspended user."""
    token = db.get(ApiToken, token_id)
    if token is None or token.expires_at <= utcnow():
        raise Unauthorized("Your session has ended.", detail="Log in again.")
    user = token.user
    if user.status != wire.UserStatus.ACTIVE:
        raise Unauthorized("User is suspended.")
    return Actor(
        user_id=user.id,
        username=user.username,
        role=wire.Role(user.role),
        organization_id=user.organization_id,
        scopes=frozenset(wire.Scope(s) for s in token.scopes),
        allow_list=frozenset(token.allow_list),
        token_id=token.id,
    )

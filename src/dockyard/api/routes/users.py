from __future__ import annotations

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from dockyard.accounts import tokens, users
from dockyard.accounts.actor import Actor
from dockyard.accounts.limits import AuthLimiter
from dockyard.api.deps import AUTHENTICATED, PUBLIC, SESSION_COOKIE, DbSession, UserParam, client_ip, scoped
from dockyard.api.origins import CSRF_COOKIE, csrf_token_for
from dockyard.errors import Forbidden, TooManyRequests, Unauthorized
from dockyard.provisioner import quotas
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(prefix="/api/v2/users", tags=["users"])


def _secure_cookies(request: Request) -> bool:
    # Behind a proxy that ends TLS the request looks like http; --access-url says what users see.
    access_url: str = request.app.state.settings.access_url
    return request.url.scheme == "https" or access_url.startswith("https://")


@router.post("/login", dependencies=[PUBLIC])
async def login(
    body: wire.LoginRequest, db: DbSession, request: Request, response: Response
) -> wire.LoginResponse:
    """Password login. Repeated failures are slowed, then refused with 429 (accounts/limits.py)."""
    ip = client_ip(request)
    limiter: AuthLimiter = request.app.state.auth_limiter
    # Keyed by the name as typed, whether or not such a user exists: unknown names behave the same.
    account = body.username.lower()
    verdict = limiter.check(source=ip, account=account)
    if verdict.refused:
        if verdict.announce:
            await run_in_threadpool(
                users.record_refused_login,
                db,
                body.username,
                ip=ip,
                reason=verdict.reason,
                retry_after=verdict.retry_after,
            )
        seconds = max(1, math.ceil(verdict.retry_after))
        raise TooManyRequests(
            "Too many failed logins; try again later.",
            retry_after=seconds,
            detail=f"Wait {seconds} s (see Retry-After) before the next attempt.",
        )
    if verdict.delay:
        await asyncio.sleep(verdict.delay)
    try:
        user, key, token = await run_in_threadpool(users.login, db, body, ip=ip)
    except Unauthorized:
        limiter.failed(source=ip, account=account)
        raise
    limiter.succeeded(source=ip, account=account)
    max_age = int(users.SESSION_LIFETIME.total_seconds())
    secure = _secure_cookies(request)
    # HttpOnly: page scripts (an injected one included) never read the session; Lax: other sites' forms and
    # subresources go without it (the Origin and CSRF checks in api/origins.py cover same-site pages).
    response.set_cookie(SESSION_COOKIE, key, httponly=True, samesite="lax", secure=secure, max_age=max_age)
    # Readable by the dashboard's scripts, which echo it as X-CSRF-Token; useless without the session.
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token_for(key, request.app.state.csrf_key),
        httponly=False,
        samesite="strict",
        secure=secure,
        max_age=max_age,
    )
    return wire.LoginResponse(token=key, expires_at=token.expires_at, user=users.to_wire(user))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(
    db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)], request: Request, response: Response
) -> None:
    """Ends the current session: revokes the token this request used if it came from a password login."""
    if actor.token_id:
        user = users.get(db, actor, "me")
        token = tokens.get(db, user, actor.token_id)
        if token.login_type == "password":
            tokens.revoke(db, actor, token)
    secure = _secure_cookies(request)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax", secure=secure)
    response.delete_cookie(CSRF_COOKIE, samesite="strict", secure=secure)


@router.get("")
def list_users(
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.USER_READ)],
    q: Annotated[str | None, Query(max_length=64, description="Substring of name or email.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> wire.UserList:
    """Users, sorted by name, optionally filtered by a substring of name or email."""
    rows, count = users.list_users(db, actor, search=q, limit=limit, offset=offset)
    return wire.UserList(users=[users.to_wire(u) for u in rows], count=count)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(
    body: wire.CreateUserRequest, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_ADMIN)]
) -> wire.User:
    """Create a user account (owners only)."""
    return users.to_wire(users.create(db, actor, body))


@router.get("/me")
def get_me(db: DbSession, actor: Annotated[Actor, AUTHENTICATED]) -> wire.User:
    """The user the token belongs to; any valid token may ask, whatever its scopes."""
    return users.to_wire(users.get(db, actor, "me"))


@router.get("/{user}")
def get_user(user: UserParam, actor: Annotated[Actor, scoped(Scope.USER_READ)]) -> wire.User:
    """A user by name or id (`me` for yourself)."""
    return users.to_wire(user)


@router.patch("/{user}")
def update_user(
    body: wire.UpdateUserRequest,
    user: UserParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.USER_WRITE)],
) -> wire.User:
    """Change a user's email or password; role and status are for owners only."""
    if user.id != actor.user_id:
        actor.require(Scope.USER_ADMIN)
    return users.to_wire(users.update(db, actor, user, body))


@router.get("/{user}/tokens")
def list_tokens(
    user: UserParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> list[wire.ApiToken]:
    """A user's API tokens, oldest first, without their secrets."""
    return [tokens.to_wire(t) for t in tokens.list_tokens(db, user)]


@router.post("/{user}/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    body: wire.CreateTokenRequest,
    user: UserParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TOKEN_WRITE)],
) -> wire.CreatedToken:
    """Create an API token; its secret (`key`) is shown only in this response."""
    key, token = tokens.create(db, actor, user, body)
    return wire.CreatedToken(**tokens.to_wire(token).model_dump(), key=key)


@router.get("/{user}/tokens/{token}")
def get_token(
    user: UserParam, token: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> wire.ApiToken:
    """One of a user's API tokens, by id or name."""
    return tokens.to_wire(tokens.get(db, user, token))


@router.delete("/{user}/tokens/{token}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(
    user: UserParam, token: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.TOKEN_WRITE)]
) -> None:
    """Revoke an API token at once; only owners may revoke other users' tokens."""
    if user.id != actor.user_id and not actor.can(Scope.USER_ADMIN):
        raise Forbidden("Only an owner can revoke another user's tokens.")
    tokens.revoke(db, actor, tokens.get(db, user, token))


@router.get("/{user}/quota")
def get_user_quota(
    user: UserParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> wire.Quota:
    """A user's limits (concurrent workspaces, CPU, memory) and what uses them now."""
    if user.id != actor.user_id:
        actor.require(Scope.USER_ADMIN)
    return quotas.to_wire(db, quotas.USER, user.id)


@router.put("/{user}/quota")
def set_user_quota(
    body: wire.QuotaLimits, user: UserParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_ADMIN)]
) -> wire.Quota:
    """Replace a user's limits (owners only). A limit below current use is accepted: running workspaces are
    left alone, and new creates and starts are refused (429) until use drops below it."""
    return quotas.set_limits(db, actor, quotas.USER, user.id, body, name=user.username)


@router.get("/{user}/tokens/{token}/quota")
def get_token_quota(
    user: UserParam, token: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.USER_READ)]
) -> wire.Quota:
    """A token's limits (including `creates_per_minute`) and what uses them now."""
    if user.id != actor.user_id:
        actor.require(Scope.USER_ADMIN)
    return quotas.to_wire(db, quotas.TOKEN, tokens.get(db, user, token).id)


@router.put("/{user}/tokens/{token}/quota")
def set_token_quota(
    body: wire.QuotaLimits,
    user: UserParam,
    token: str,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TOKEN_WRITE)],
) -> wire.Quota:
    """Replace a token's limits: its user (with another credential) or an owner; never the token itself."""
    row = tokens.get(db, user, token)
    quotas.require_token_quota_writer(actor, row)
    return quotas.set_limits(db, actor, quotas.TOKEN, row.id, body, name=row.name)

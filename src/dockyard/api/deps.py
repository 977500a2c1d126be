"""Request dependencies: the database session, the actor, scopes, and path objects loaded once.

Every route declares exactly one of `scoped(Scope.X)` or `PUBLIC`; `tests/api/test_route_scopes.py` walks
the route table and fails on a route with neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import Annotated, Any

from fastapi import Depends, Path
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from dockyard.accounts import tokens, users
from dockyard.accounts.actor import Actor
from dockyard.accounts.users import User
from dockyard.api.origins import SESSION_COOKIE as SESSION_COOKIE
from dockyard.errors import Unauthorized
from dockyard.runtimes.base import Runtime
from dockyard.templates import service as templates
from dockyard.templates.service import Template
from dockyard.tunnel.hub import AgentHub
from dockyard.workspaces import service as workspaces
from dockyard.workspaces.service import Workspace, WorkspaceBuild
from dockyard_sdk.models import Scope


async def get_db(request: HTTPConnection) -> AsyncIterator[Session]:
    # Reads run without a transaction: on PostgreSQL that saves the BEGIN and ROLLBACK round trips around
    # every GET, and a single SELECT is consistent on its own. Writes get a real transaction. WebSocket
    # handshakes are GETs too.
    method = request.scope.get("method", "GET")
    factory = request.app.state.read_sessions if method in ("GET", "HEAD") else request.app.state.sessions
    session: Session = factory()
    try:
        yield session
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_db)]


def client_ip(request: HTTPConnection) -> str:
    trusted: int = request.app.state.settings.trusted_proxies
    if trusted:
        forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        if len(forwarded) >= trusted:
            return forwarded[-trusted]
    return request.client.host if request.client else ""


def bearer_key(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized(
                "Malformed Authorization header.", detail="Use `Authorization: Bearer <token>`."
            )
        return value.strip()
    return request.headers.get("dockyard-session-token") or request.cookies.get(SESSION_COOKIE)


def _authenticate(request: HTTPConnection, key: str) -> Actor:
    # One primary-key read, and at most once a minute an advisory last-used write: no transaction needed.
    with request.app.state.read_sessions() as db:
        return tokens.authenticate(db, key)


async def _authenticate_once(request: HTTPConnection, key: str) -> Actor:
    """Look a key up off the event loop, once: when a busy token's cache entry lapses, every request in flight
    with it would otherwise hit the database together; they share the one lookup instead."""
    inflight: dict[str, asyncio.Future[Actor]] = request.app.state.auth_inflight
    lookup = inflight.get(key)
    if lookup is None:
        lookup = asyncio.ensure_future(run_in_threadpool(_authenticate, request, key))
        inflight[key] = lookup
        lookup.add_done_callback(lambda _: inflight.pop(key, None))
    # shield: one caller going away must not cancel the lookup the others wait for.
    return await asyncio.shield(lookup)


def _refresh_in_background(request: HTTPConnection, key: str, token_id: str) -> None:
    if key in request.app.state.auth_inflight:
        return
    refresh = asyncio.ensure_future(_authenticate_once(request, key))
    # The event loop keeps only weak references to tasks: without this one the refresh could be collected
    # before it finishes, and a revoked token would keep being served from the cache.
    pending: set[asyncio.Future[Actor]] = request.app.state.background_tasks
    pending.add(refresh)

    def done(task: asyncio.Future[Actor]) -> None:
        pending.discard(task)
        # A token revoked or expired elsewhere: drop it so the next request is refused.
        if not task.cancelled() and task.exception() is not None:
            tokens.cache.forget(token_id)

    refresh.add_done_callback(done)


async def current_actor(request: HTTPConnection) -> Actor:
    key = bearer_key(request)
    if not key:
        raise Unauthorized(
            "You are not logged in.", detail="Send `Authorization: Bearer <token>`, or run `dockyard login`."
        )
    token_id, secret = tokens.lookup(key)
    cached = tokens.cache.lookup(token_id, secret)
    if cached is None:
        actor = await _authenticate_once(request, key)
    else:
        actor, stale = cached
        if stale:
            _refresh_in_background(request, key, token_id)
    request.state.actor = actor
    return actor.with_ip(client_ip(request))


CurrentActor = Annotated[Actor, Depends(current_actor)]


@cache
def _require(scope: Scope) -> Callable[..., Any]:
    async def dependency(actor: CurrentActor) -> Actor:
        actor.require(scope)
        return actor

    dependency.dockyard_scope = scope  # type: ignore[attr-defined]
    return dependency


def scoped(scope: Scope) -> Any:
    """`actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]`: authenticated and holding that scope."""
    return Depends(_require(scope))


async def _authenticated(actor: CurrentActor) -> Actor:
    """Any valid token, whatever its scopes (for `GET /users/me`, which clients use to check a token)."""
    return actor


_authenticated.dockyard_authenticated = True  # type: ignore[attr-defined]
AUTHENTICATED = Depends(_authenticated)


def _public() -> None:
    """Marks a route that needs no authentication (health, metrics, login)."""


_public.dockyard_public = True  # type: ignore[attr-defined]
PUBLIC = Depends(_public)


def _load_template(
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)],
    template: Annotated[str, Path(description="Template id or name.", max_length=64)],
) -> Template:
    return templates.get(db, actor, template)


def _load_user(
    db: DbSession,
    actor: CurrentActor,
    user: Annotated[str, Path(description="User name, id, or `me`.", max_length=64)],
) -> User:
    return users.get(db, actor, user)


def _load_workspace(
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    workspace: Annotated[
        str, Path(description="Workspace id, your workspace's name, or owner/name.", max_length=80)
    ],
) -> Workspace:
    return workspaces.get(db, actor, workspace)


def _load_build(
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.WORKSPACE_READ)],
    build: Annotated[str, Path(description="Build id.", max_length=64)],
) -> tuple[Workspace, WorkspaceBuild]:
    return workspaces.get_build(db, actor, build)


def hub(request: HTTPConnection) -> AgentHub:
    return request.app.state.hub  # type: ignore[no-any-return]


def runtime(request: HTTPConnection) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


TemplateParam = Annotated[Template, Depends(_load_template)]
WorkspaceParam = Annotated[Workspace, Depends(_load_workspace)]
BuildParam = Annotated[tuple[Workspace, WorkspaceBuild], Depends(_load_build)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
HubDep = Annotated[AgentHub, Depends(hub)]
UserParam = Annotated[User, Depends(_load_user)]

"""The application factory: `create_app(settings)` gives a complete, migrated Dockyard server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from dockyard import __version__, datadir, logs
from dockyard.accounts import bootstrap, tokens
from dockyard.accounts.limits import AuthLimiter
from dockyard.api import errors, openapi
from dockyard.api.bodies import JsonBodyMiddleware
from dockyard.api.middleware import BodyLimitMiddleware, ObserveMiddleware, RejectNulMiddleware
from dockyard.api.origins import CSRF_KEY_NAME, CrossSiteMiddleware, Policy, generate_key
from dockyard.api.routes import (
    agentlink,
    agentstreams,
    apps,
    audit,
    connect,
    docs,
    doctor,
    egress,
    gitauth,
    health,
    mcp,
    prebuilds,
    ssh,
    templates,
    users,
    webhooks,
    workspaces,
)
from dockyard.apps import tickets
from dockyard.apps.health import HealthChecker
from dockyard.apps.proxy import AppsMiddleware
from dockyard.apps.routing import Wildcard
from dockyard.config import Settings
from dockyard.egress import service as egress_service
from dockyard.events import Bus, Subscription, channels, make_pubsub
from dockyard.gateway.server import Gateway
from dockyard.gitauth import mirrors
from dockyard.lifecycle.leader import make_lease
from dockyard.lifecycle.runner import Background
from dockyard.provisioner.sizing import worker_count
from dockyard.runtimes.base import Runtime, RuntimeFailure
from dockyard.runtimes.factory import runtime_for
from dockyard.store import keys
from dockyard.store.db import libpq_url, make_engine, make_sessionmaker
from dockyard.store.migrate import migrate
from dockyard.templates import service as templates_service
from dockyard.templates.archive import MAX_ARCHIVE_BYTES
from dockyard.templates.devcontainer import oci as oci_features
from dockyard.tunnel.devcontainer import LifecycleHooks
from dockyard.tunnel.hub import AgentHub
from dockyard.tunnel.install import install_agent
from dockyard.tunnel.links import AgentLinks
from dockyard.web import pages as web
from dockyard.webhooks.sender import WebhookSender
from dockyard_sdk.models import ErrorResponse

log = logs.get(__name__)

# Every route may answer with the error model; declaring it keeps the OpenAPI document truthful for clients.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in (
        (400, "Malformed request"),
        (401, "Not authenticated"),
        (403, "Not allowed"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "Request body too large"),
        (422, "Validation failed"),
        (429, "Too many failed attempts; see Retry-After"),
    )
}

ROUTERS = (
    health.router,
    users.router,
    templates.router,
    prebuilds.router,
    workspaces.router,
    egress.router,
    connect.router,
    apps.router,
    ssh.router,
    gitauth.router,
    webhooks.router,
    agentstreams.router,
    agentlink.router,
    audit.router,
    doctor.router,
    mcp.router,
    docs.router,
)

# Multipart framing adds a little to a 10 MB archive; the archive reader enforces the exact limit.
BODY_LIMIT = MAX_ARCHIVE_BYTES + 1024 * 1024


def prepare_database(settings: Settings, engine: Engine) -> None:
    """Migrate, then run first-start setup. Runs before the server accepts requests."""
    before, after = migrate(engine)
    if before != after:
        log.info("database migrated", before=before, after=after)
    with make_sessionmaker(engine)() as db:
        bootstrap.first_start(db, settings.data_dir, builtin_templates=settings.builtin_templates)


def subscribe_caches(bus: Bus) -> list[Subscription]:
    """Drop what this process cached when any process revokes a token, changes a user or a template.

    The caches stay per process; what any replica invalidates reaches them all through the pubsub. After lost
    messages (a dropped listener connection) everything cached is dropped, since anything may have changed.
    """
    return [
        bus.pubsub.subscribe(channels.TOKENS, tokens.cache.forget_event, on_lost=tokens.cache.clear),
        bus.pubsub.subscribe(
            channels.TEMPLATES,
            lambda _organization: templates_service.catalog.invalidate(),
            on_lost=templates_service.catalog.invalidate,
        ),
    ]


def check_runtime(runtime: Runtime) -> None:
    """Say at start what keeps the runtime from working (an API that does not answer, a missing namespace, RBAC).

    The server starts anyway, so that `dockyard doctor` shows the same reason and builds fail with it.
    """
    try:
        runtime.ping()
    except RuntimeFailure as exc:
        log.error(f"the {runtime.name} runtime cannot be used: {exc.message}", detail=exc.detail)
    else:
        log.info(f"the {runtime.name} runtime answers")


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    runtime: Runtime | None = None,
    bus: Bus | None = None,
) -> FastAPI:
    # Before the database is first opened: SQLite gives its WAL and shared-memory files the database's mode.
    datadir.protect(settings.data_dir, database_url=settings.resolved_database_url)
    # Dev container features fetched from registries (templates/devcontainer/oci.py) are kept per digest.
    oci_features.set_cache_dir(Path(settings.data_dir) / "devcontainer-features")
    oci_features.set_outbound(settings.outbound)
    # Every worker may hold a connection for a moment beside the request threads' 40.
    engine = engine or make_engine(
        settings.resolved_database_url, pool_size=40 + worker_count(settings.provisioner_workers)
    )
    runtime = runtime or runtime_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.runtime == "kubernetes":
            await asyncio.to_thread(check_runtime, runtime)
        install_agent(settings.agent_dir)
        links = AgentLinks(settings.agent_links_dir)
        hub = AgentHub(
            app.state.sessions,
            links,
            heartbeat=settings.agent_heartbeat,
            locate=runtime.agent_addresses,
            relay_url=settings.resolved_relay_url if settings.replicas else "",
            outbound=settings.outbound,
        )
        hub.on_ready = LifecycleHooks(hub, app.state.sessions).agent_ready
        await hub.start()
        app.state.hub = hub
        gateway = Gateway(app.state.sessions, hub, settings, limiter=app.state.auth_limiter)
        try:
            await gateway.start()
        except BaseException:
            # The SSH port may be taken: leave no agent socket behind for a server that never ran.
            await hub.close()
            raise
        app.state.gateway = gateway
        app.state.apps_health = HealthChecker(app.state.sessions, hub)
        app.state.apps_health.start()
        background = Background(
            app.state.sessions,
            runtime,
            lease=make_lease(settings.resolved_database_url),
            workers=worker_count(settings.provisioner_workers),
            reconcile_interval=settings.reconcile_interval,
            agent_dir=settings.agent_dir,
            agent_links=links,
            data_dir=settings.data_dir,
            warm_networks=settings.warm_networks,
            agent_url=settings.agent_url,
            egress=egress_service.start(app.state.sessions, settings),
            mirrors=mirrors.of(settings),
        )
        background.start()
        app.state.background = background
        sender = WebhookSender(app.state.sessions, events_bus, outbound=settings.outbound)
        sender.start()
        app.state.webhooks = sender
        app.state.mcp = mcp.session_manager(app.state.sessions)
        try:
            async with app.state.mcp.run():
                yield
        finally:
            await app.state.apps_health.close()
            await gateway.close()
            await hub.close()
            background.stop()
            sender.stop()
            for subscription in cache_subscriptions:
                subscription.cancel()
            events_bus.close()
            engine.dispose()

    app = FastAPI(
        title="Dockyard",
        version=__version__,
        description="Self-hosted cloud development environments.",
        openapi_url="/api/v2/openapi.json",
        docs_url=None,  # served from vendored files by routes/docs.py
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.settings = settings
    app.state.engine = engine
    prepare_database(settings, engine)
    # One pubsub per application (PostgreSQL's when the database is), reaching services through the sessions.
    events_bus = bus or Bus(make_pubsub(libpq_url(settings.resolved_database_url)))
    app.state.bus = events_bus
    app.state.sessions = make_sessionmaker(engine, bus=events_bus)
    app.state.read_sessions = make_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), bus=events_bus
    )
    cache_subscriptions = subscribe_caches(events_bus)
    app.state.runtime = runtime
    app.state.auth_inflight = {}
    app.state.auth_limiter = AuthLimiter()
    app.state.background_tasks = set()
    with app.state.sessions() as db:
        # Everything the runtime makes carries this id, and it lists and removes nothing else.
        runtime.bind_deployment(keys.deployment_id(db, configured=settings.deployment_id))
        app.state.csrf_key = keys.get_or_create(db, CSRF_KEY_NAME, generate_key).encode()
        app.state.apps_key = keys.get_or_create(db, tickets.KEY_NAME, generate_key).encode()
    app.state.apps_wildcard = (
        Wildcard.parse(settings.wildcard_access_url) if settings.wildcard_access_url else None
    )
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
    openapi.install(app, ROUTERS)
    web.install(app)
    # Innermost: bodies are already within the size limit when a JSON body's content type is fixed (bearer
    # requests only) and when the cross-site check reads a form body for its CSRF token (cookie requests only).
    app.add_middleware(JsonBodyMiddleware, streamed=("/files",))
    app.add_middleware(
        CrossSiteMiddleware,
        policy=Policy(access_url=settings.access_url, allowed=settings.allowed_origins),
        csrf_key=app.state.csrf_key,
    )
    app.add_middleware(BodyLimitMiddleware, limit=BODY_LIMIT, streamed=("/files",))
    # Outside the body limit and the cross-site checks: app traffic is the app's own (apps/proxy.py).
    app.add_middleware(AppsMiddleware, wildcard=settings.wildcard_access_url, access_url=settings.access_url)
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(ObserveMiddleware, access_log=settings.access_log)
    return app

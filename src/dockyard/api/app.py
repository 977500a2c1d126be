"""The application factory: `create_app(settings)` gives a complete, migrated Dockyard server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from dockyard import __version__, logs
from dockyard.accounts import bootstrap
from dockyard.api import errors, openapi
from dockyard.api.bodies import JsonBodyMiddleware
from dockyard.api.middleware import BodyLimitMiddleware, ObserveMiddleware, RejectNulMiddleware
from dockyard.api.routes import (
    agentstreams,
    audit,
    connect,
    docs,
    doctor,
    health,
    mcp,
    ssh,
    templates,
    users,
    workspaces,
)
from dockyard.config import Settings
from dockyard.gateway.server import Gateway
from dockyard.lifecycle.runner import Background
from dockyard.runtimes.base import Runtime
from dockyard.runtimes.factory import make_runtime
from dockyard.sdk.models import ErrorResponse
from dockyard.store.db import make_engine, make_sessionmaker
from dockyard.store.migrate import migrate
from dockyard.templates.archive import MAX_ARCHIVE_BYTES
from dockyard.tunnel.hub import AgentHub
from dockyard.tunnel.install import install_agent
from dockyard.tunnel.links import AgentLinks
from dockyard.web import pages as web

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
    )
}

ROUTERS = (
    health.router,
    users.router,
    templates.router,
    workspaces.router,
    connect.router,
    ssh.router,
    agentstreams.router,
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


def create_app(
    settings: Settings, *, engine: Engine | None = None, runtime: Runtime | None = None
) -> FastAPI:
    engine = engine or make_engine(settings.resolved_database_url)
    runtime = runtime or make_runtime(settings.runtime, workspace_subnets=settings.workspace_subnets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_agent(settings.agent_dir)
        links = AgentLinks(settings.agent_links_dir)
        hub = AgentHub(app.state.sessions, links, heartbeat=settings.agent_heartbeat)
        await hub.start()
        app.state.hub = hub
        gateway = Gateway(app.state.sessions, hub, settings)
        try:
            await gateway.start()
        except BaseException:
            # The SSH port may be taken: leave no agent socket behind for a server that never ran.
            await hub.close()
            raise
        app.state.gateway = gateway
        background = Background(
            app.state.sessions,
            runtime,
            workers=settings.provisioner_workers,
            reconcile_interval=settings.reconcile_interval,
            agent_dir=settings.agent_dir,
            agent_links=links,
            data_dir=settings.data_dir,
            warm_networks=settings.warm_networks,
        )
        background.start()
        app.state.background = background
        app.state.mcp = mcp.session_manager(app.state.sessions)
        try:
            async with app.state.mcp.run():
                yield
        finally:
            await gateway.close()
            await hub.close()
            background.stop()
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
    app.state.sessions = make_sessionmaker(engine)
    app.state.read_sessions = make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    app.state.runtime = runtime
    app.state.auth_inflight = {}
    app.state.background_tasks = set()
    prepare_database(settings, engine)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
    openapi.install(app, ROUTERS)
    web.install(app)
    # Innermost: bodies are already within the size limit when a JSON body's content type is fixed.
    app.add_middleware(JsonBodyMiddleware, streamed=("/files",))
    app.add_middleware(BodyLimitMiddleware, limit=BODY_LIMIT, streamed=("/files",))
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(ObserveMiddleware, access_log=settings.access_log)
    return app

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dockyard import __version__
from dockyard.api.deps import PUBLIC, DbSession
from dockyard.errors import Unauthorized
from dockyard_sdk.models import BuildInfo, Health

router = APIRouter()


@router.get("/healthz", dependencies=[PUBLIC], tags=["health"])
def healthz(db: DbSession, response: Response) -> Health:
    """Whether the server and its database answer; 503 with `degraded` when the database does not."""
    try:
        db.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError:
        database = "unreachable"
        response.status_code = 503
    return Health(status="ok" if database == "ok" else "degraded", version=__version__, database=database)


@router.get("/metrics", dependencies=[PUBLIC], tags=["health"], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics; with `--metrics-token`, only for `Authorization: Bearer <that token>` (a scraper's
    secret, not an API token: a scraper needs no user)."""
    wanted: str = request.app.state.settings.metrics_token
    if wanted:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), wanted.encode()):
            raise Unauthorized(
                "The metrics endpoint needs the metrics token.",
                detail="Send `Authorization: Bearer <token>` with the server's --metrics-token.",
            )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v2/buildinfo", dependencies=[PUBLIC], tags=["health"])
def buildinfo(request: Request) -> BuildInfo:
    """The server's version; needs no token."""
    return BuildInfo(version=__version__)

"""Swagger UI at `/api/v2/docs`, from the copy vendored in the package: FastAPI's default loads it from a CDN,
which an air-gapped install cannot reach."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from dockyard.api.deps import PUBLIC
from dockyard.web.assets import static_url

router = APIRouter(include_in_schema=False)


@router.get("/api/v2/docs", dependencies=[PUBLIC])
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/api/v2/openapi.json",
        title="Dockyard API",
        swagger_js_url=static_url("vendor/swagger-ui/swagger-ui-bundle.js"),
        swagger_css_url=static_url("vendor/swagger-ui/swagger-ui.css"),
        swagger_favicon_url=static_url("vendor/swagger-ui/favicon-32x32.png"),
    )

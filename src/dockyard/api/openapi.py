"""The OpenAPI document's conventions: readable operation ids, the bearer scheme, documented raw bodies.

Generated clients name their methods after the operation ids (`createWorkspace`), so they are part of the API's
contract: tests/api/test_openapi.py pins them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

# Route functions whose names are ambiguous across resources (both templates and workspaces have files).
_QUALIFIED = {
    "dockyard.api.routes.templates.list_files": "list_template_files",
    "dockyard.api.routes.templates.get_file": "get_template_file",
    "dockyard.api.routes.templates.get_archive": "get_template_archive",
    "dockyard.api.routes.templates.list_versions": "list_template_versions",
    "dockyard.api.routes.templates.create_version": "create_template_version",
    "dockyard.api.routes.templates.get_version": "get_template_version",
    "dockyard.api.routes.templates.check_parameters": "check_template_parameters",
    "dockyard.api.routes.doctor.doctor": "get_doctor_report",
    "dockyard.api.routes.doctor.prune": "prune_orphans",
    "dockyard.api.routes.health.healthz": "get_health",
    "dockyard.api.routes.health.metrics": "get_metrics",
    "dockyard.api.routes.health.buildinfo": "get_build_info",
    "dockyard.api.routes.audit.search_audit": "list_audit_logs",
}

BEARER = "bearer"


def operation_id(route: APIRoute) -> str:
    """`create_workspace` -> `createWorkspace`."""
    qualified = f"{route.endpoint.__module__}.{route.endpoint.__name__}"
    first, *rest = _QUALIFIED.get(qualified, route.name).split("_")
    return first + "".join(part.capitalize() for part in rest)


def _public(dependant: Any) -> bool:
    return any(getattr(dep.call, "dockyard_public", False) or _public(dep) for dep in dependant.dependencies)


def install(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Build the document once, with the bearer scheme on every operation but the public ones."""
    public_paths = {
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and _public(route.dependant)
    }

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`dy_…`) from `dockyard tokens create` or `POST /users/login`.",
            }
        }
        schema["security"] = [{BEARER: []}]
        for path, operations in schema.get("paths", {}).items():
            if path in public_paths:
                for operation in operations.values():
                    operation["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = document  # type: ignore[method-assign]

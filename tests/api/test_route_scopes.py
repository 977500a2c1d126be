"""Every route declares its scope or says it is public; a new route without either fails here."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from dockyard.api.app import ROUTERS
from tests.harness import Harness


def _routes() -> list[APIRoute]:
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def _markers(dependant: Any) -> set[str]:
    found: set[str] = set()
    for dep in dependant.dependencies:
        call = dep.call
        if getattr(call, "dockyard_scope", None) is not None:
            found.add(str(call.dockyard_scope))
        if getattr(call, "dockyard_public", False):
            found.add("public")
        if getattr(call, "dockyard_authenticated", False):
            found.add("authenticated")
        found |= _markers(dep)
    return found


def test_every_route_declares_scope_or_public() -> None:
    unguarded = []
    public = []
    for route in _routes():
        markers = _markers(route.dependant)
        if not markers:
            unguarded.append(f"{sorted(route.methods)} {route.path}")
        if "public" in markers:
            public.append(route.path)
            assert len(markers) == 1, f"{route.path} is both public and scoped"
    assert unguarded == []
    assert sorted(public) == [
        "/api/v2/buildinfo",
        "/api/v2/docs",
        "/api/v2/users/login",
        "/healthz",
        "/metrics",
    ]


def test_protected_routes_refuse_anonymous(h: Harness) -> None:
    anonymous = h.client()
    for route in _routes():
        if "public" in _markers(route.dependant):
            continue
        path = route.path.replace("{path:path}", "x").replace("{", "").replace("}", "")
        for method in route.methods:
            response = anonymous.http.request(method, path)
            assert response.status_code == 401, f"{method} {route.path}: {response.status_code}"
            assert response.json()["message"] == "You are not logged in."

"""The dashboard over HTTP: assets, the offline API docs, login, CSRF, redirects, and who sees what."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from dockyard_sdk import models as m
from tests.harness import Harness
from tests.web.conftest import PASSWORD


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _logged_in(h: Harness, username: str = "alice", *, https: bool = False) -> TestClient:
    h.user(username)
    http = h.http()
    if https:
        http.base_url = http.base_url.copy_with(scheme="https")
    page = http.get("/login")
    response = http.post(
        "/login",
        data={
            "username": username,
            "password": PASSWORD,
            "csrf_token": _csrf(page.text),
            "next": "/templates",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/templates"
    return http


def test_vendored_assets_are_served_with_caching_headers(wh: Harness) -> None:
    http = wh.http()
    for path, kind in (
        ("/static/vendor/htmx/htmx.min.js", "javascript"),
        ("/static/vendor/xterm/xterm.js", "javascript"),
        ("/static/vendor/xterm/xterm.css", "text/css"),
        ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "javascript"),
        ("/static/app.css", "text/css"),
    ):
        response = http.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"]
        assert response.headers["cache-control"] == "public, max-age=604800, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert http.get("/static/../pyproject.toml").status_code == 404
    assert http.get("/static/vendor/nope.js").status_code == 404


def test_api_docs_use_the_vendored_swagger_ui(wh: Harness) -> None:
    response = wh.http().get("/api/v2/docs")
    assert response.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in response.text
    assert "/static/vendor/swagger-ui/swagger-ui.css" in response.text
    assert "cdn.jsdelivr.net" not in response.text
    assert "unpkg.com" not in response.text


def test_wrong_password_keeps_the_username_and_sets_no_session(wh: Harness) -> None:
    wh.user("alice")
    http = wh.http()
    token = _csrf(http.get("/login").text)
    response = http.post("/login", data={"username": "alice", "password": "nope", "csrf_token": token})
    assert response.status_code == 401
    assert "Incorrect username or password." in response.text
    assert 'value="alice"' in response.text
    assert "dockyard_session" not in http.cookies


def test_login_without_its_csrf_token_is_refused(wh: Harness) -> None:
    wh.user("alice")
    http = wh.http()
    response = http.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"})
    assert response.status_code == 400
    assert "The login form expired; please try again." in response.text
    assert "dockyard_session" not in http.cookies


def test_the_session_cookie_is_hardened(wh: Harness) -> None:
    wh.user("alice")
    http = wh.http()
    http.base_url = http.base_url.copy_with(scheme="https")
    token = _csrf(http.get("/login").text)
    response = http.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "dockyard_session=" in v
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" in cookie
    assert "Path=/" in cookie


def test_next_never_leaves_the_origin(wh: Harness) -> None:
    wh.user("alice")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        http = wh.http()
        token = _csrf(http.get("/login").text)
        response = http.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": target},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/workspaces", target


def test_pages_redirect_anonymous_visitors_to_login_and_back(wh: Harness) -> None:
    http = wh.http()
    for path, back in (("/workspaces", "/workspaces"), ("/templates", "/templates"), ("/", None)):
        response = http.get(path, follow_redirects=False)
        assert response.status_code == 303
        if back:
            assert response.headers["location"] == f"/login?next={back}"
    http.cookies.set("dockyard_session", "dy_expired.nonsense")
    response = http.get("/workspaces/abc?x=1", follow_redirects=False)
    assert response.headers["location"] == "/login?next=/workspaces/abc%3Fx%3D1"


def test_pages_carry_a_content_security_policy(wh: Harness) -> None:
    http = _logged_in(wh)
    response = http.get("/templates")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"


def test_actions_need_the_session_csrf_token_and_change_nothing_without_it(wh: Harness) -> None:
    http = _logged_in(wh)
    alice = wh.user("alice")
    wh.template(name="py")
    created = wh.await_build(alice.create_workspace(m.CreateWorkspaceRequest(template="py")).id, client=alice)
    response = http.post(
        f"/workspaces/{created.id}/stop", data={"csrf_token": "forged"}, follow_redirects=False
    )
    # The cross-site middleware checks the same token before the page does.
    assert response.status_code == 403
    assert response.json()["message"] == "Missing or invalid CSRF token."
    assert alice.get_workspace(created.id).latest_build.number == 1

    token = _csrf(http.get(f"/workspaces/{created.id}").text)
    response = http.post(f"/workspaces/{created.id}/stop", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/workspaces/{created.id}"
    assert alice.get_workspace(created.id).latest_build.transition == m.Transition.STOP

    # Logout is a form too: without the token the session stays.
    assert http.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert http.get("/templates", follow_redirects=False).status_code == 200


def test_another_users_workspace_is_not_found_and_untouched(wh: Harness) -> None:
    http = _logged_in(wh)
    bob = wh.user("bob")
    wh.template(name="py")
    hidden = wh.await_build(bob.create_workspace(m.CreateWorkspaceRequest(template="py")).id, client=bob)
    page = http.get(f"/workspaces/{hidden.id}")
    assert page.status_code == 404
    assert f"Workspace &#39;{hidden.id}&#39; not found." in page.text
    token = _csrf(http.get("/templates").text)
    response = http.post(f"/workspaces/{hidden.id}/delete", data={"csrf_token": token})
    assert response.status_code == 404
    assert bob.get_workspace(hidden.id).latest_build.number == 1
    listing = http.get("/workspaces")
    assert hidden.id not in listing.text


def test_unknown_action_and_bad_filter(wh: Harness) -> None:
    http = _logged_in(wh)
    alice = wh.user("alice")
    wh.template(name="py")
    created = wh.await_build(alice.create_workspace(m.CreateWorkspaceRequest(template="py")).id, client=alice)
    token = _csrf(http.get("/templates").text)
    response = http.post(f"/workspaces/{created.id}/explode", data={"csrf_token": token})
    assert response.status_code == 404
    assert "No action &#39;explode&#39;." in response.text
    assert alice.get_workspace(created.id).latest_build.number == 1
    # An unknown status filter shows everything rather than failing.
    listing = http.get("/workspaces?status=bogus")
    assert listing.status_code == 200
    assert created.id in listing.text


def test_every_page_but_login_needs_a_session(wh: Harness) -> None:
    from fastapi.routing import APIRoute

    from dockyard.web import create, live, pages
    from dockyard.web.session import page_actor

    def uses_session(dependant: Any) -> bool:
        return any(d.call is page_actor or uses_session(d) for d in dependant.dependencies)

    open_pages = []
    for router in (live.router, create.router, pages.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            if not uses_session(route.dependant):
                open_pages.append(f"{sorted(route.methods)} {route.path}")
    assert sorted(open_pages) == ["['GET'] /", "['GET'] /login", "['POST'] /login"]
    # And each protected one sends an anonymous visitor to log in, whatever the method.
    http = wh.http()
    for router in (live.router, create.router, pages.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            if route.path in ("/", "/login"):
                continue
            path = route.path.replace("{ref}", "x").replace("{action}", "stop")
            for method in route.methods:
                response = http.request(method, path, follow_redirects=False)
                assert response.status_code == 303, f"{method} {path}"
                back = (
                    path if method == "GET" and not path.endswith(("/events", "/detail")) else "/workspaces"
                )
                assert response.headers["location"] == f"/login?next={back}"


def test_terminal_page_and_apps_on_the_workspace_page(wh: Harness) -> None:
    http = _logged_in(wh)
    alice = wh.client(http.cookies["dockyard_session"])
    bob = wh.user("bob")
    apps = [
        {"slug": "web", "display_name": "Site", "port": 8000, "share": "public"},
        {"slug": "ide", "port": 13337, "healthcheck": {"path": "/healthz", "interval": "5s", "threshold": 3}},
    ]
    wh.template(name="py", apps=apps)
    mine = wh.await_build(
        alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="dev")).id, client=alice
    )
    hidden = wh.await_build(bob.create_workspace(m.CreateWorkspaceRequest(template="py")).id, client=bob)

    page = http.get(f"/workspaces/{mine.id}/terminal?session=t0123")
    assert page.status_code == 200
    assert f'data-url="/api/v2/workspaces/{mine.id}/pty"' in page.text
    assert 'data-initial="t0123"' in page.text
    # xterm.js needs inline styles; scripts stay same-origin only.
    csp = page.headers["content-security-policy"]
    assert "style-src 'self' 'unsafe-inline'" in csp
    assert "script-src 'self';" in csp
    odd = http.get(f"/workspaces/{mine.id}/terminal?session=../../x")
    assert odd.status_code == 200
    assert 'data-initial=""' in odd.text
    assert http.get(f"/workspaces/{hidden.id}/terminal").status_code == 404

    workspace_page = http.get(f"/workspaces/{mine.id}").text
    assert 'href="http://testserver/@alice/dev/apps/web/"' in workspace_page
    assert "Open Site" in workspace_page
    assert "Open ide" in workspace_page
    listed = {a.slug: a for a in alice.list_apps(mine.id).apps}
    assert (listed["web"].share, listed["web"].health, listed["web"].subdomain_url) == (
        "public",
        "disabled",
        None,
    )
    # The fake runtime's workspace has no agent connected here: nothing checked its health.
    assert listed["ide"].health == "unknown"

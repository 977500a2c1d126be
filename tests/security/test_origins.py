"""The rules of api/origins.py: which origins count as the server's own, and CSRF tokens bound to a session.
(tests/security/test_browser_sessions.py runs the same defences against a live server.)"""

from __future__ import annotations

import pytest
from starlette.requests import Request

from dockyard.api.origins import Origin, Policy, csrf_token, csrf_token_for, parse_origin
from tests.harness import Harness


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("http://localhost:3000", Origin("http", "localhost", 3000)),
        ("https://Dockyard.Example.com", Origin("https", "dockyard.example.com", 443)),
        ("http://[::1]:8080", Origin("http", "::1", 8080)),
        ("null", None),
        ("file:///etc/passwd", None),
        ("http://host:99999", None),
        ("", None),
    ],
)
def test_parse_origin(value: str, parsed: Origin | None) -> None:
    assert parse_origin(value) == parsed


def test_the_request_host_and_configured_origins_are_allowed() -> None:
    policy = Policy(access_url="https://dockyard.example.com", allowed=["http://localhost:5173"])
    allowed = [
        ("http://localhost:3000", "localhost:3000"),
        ("http://127.0.0.1:3000", "127.0.0.1:3000"),
        # A Host without a port means the origin scheme's default port (a proxy ending TLS).
        ("https://dockyard.internal", "dockyard.internal"),
        ("https://dockyard.example.com", "10.0.0.5:3000"),
        ("http://localhost:5173", "localhost:3000"),
    ]
    refused = [
        # A workspace's web app forwarded to another port of the same host.
        ("http://localhost:8080", "localhost:3000"),
        ("http://127.0.0.1:3000", "localhost:3000"),
        ("https://dockyard.internal:8443", "dockyard.internal"),
        ("http://evil.example", "localhost:3000"),
        ("http://localhost:3000", ""),
    ]
    for origin, host in allowed:
        parsed = parse_origin(origin)
        assert parsed is not None
        assert policy.allows(parsed, host), (origin, host)
    for origin, host in refused:
        parsed = parse_origin(origin)
        assert parsed is not None
        assert not policy.allows(parsed, host), (origin, host)
    assert str(parse_origin("https://example.com:443")) == "https://example.com"
    assert str(parse_origin("http://[::1]:8080")) == "http://[::1]:8080"


def test_tokens_are_bound_to_their_session() -> None:
    key = b"k" * 32
    first, second = csrf_token_for("dy_a_one", key), csrf_token_for("dy_a_two", key)
    assert first != second
    assert first == csrf_token_for("dy_a_one", key)
    assert first != csrf_token_for("dy_a_one", b"other key")


def test_session_cookie_gives_the_page_its_token(h: Harness) -> None:
    password = (h.data_dir / "admin-password").read_text().strip()
    browser = h.http()
    assert (
        browser.post("/api/v2/users/login", json={"username": "admin", "password": password}).status_code
        == 200
    )
    session = browser.cookies["dockyard_session"]
    request = Request(
        {"type": "http", "app": h.app, "headers": [(b"cookie", f"dockyard_session={session}".encode())]}
    )
    assert csrf_token(request) == browser.cookies["dockyard_csrf"]
    assert csrf_token(Request({"type": "http", "app": h.app, "headers": []})) is None
    # A large form is not read whole to look for the field: it must send the header.
    big = browser.post(
        "/api/v2/users/me/tokens",
        content=b"csrf_token=" + browser.cookies["dockyard_csrf"].encode() + b"&pad=" + b"x" * (2 * 2**20),
        headers={"Origin": "http://testserver", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 403
    assert big.json()["validations"] == [{"field": "csrf_token", "detail": "missing"}]
    with_header = browser.post(
        "/api/v2/users/me/tokens",
        json={"name": "by-header"},
        headers={"X-CSRF-Token": browser.cookies["dockyard_csrf"]},
    )
    assert with_header.status_code == 201, with_header.text


def test_the_session_cookie_is_refused_from_workspace_app_pages(h: Harness) -> None:
    password = (h.data_dir / "admin-password").read_text().strip()
    browser = h.http()
    session = browser.post("/api/v2/users/login", json={"username": "admin", "password": password}).json()[
        "token"
    ]
    cookie = {"cookie": f"dockyard_session={session}"}
    before = len(h.admin.list_tokens("me"))
    assert browser.get("/api/v2/users/me", headers=cookie).status_code == 200
    assert (
        browser.get(
            "/api/v2/users/me", headers={**cookie, "referer": "http://testserver/workspaces"}
        ).status_code
        == 200
    )
    for extra, field in (
        ({"referer": "http://testserver/@admin/dev/apps/web/page"}, "Referer"),
        ({"origin": "null"}, "Origin"),
    ):
        for method in ("GET", "POST"):
            response = browser.request(
                method,
                "/api/v2/users/me/tokens",
                headers={**cookie, **extra, "content-type": "application/json"},
                content="{}" if method == "POST" else None,
            )
            assert response.status_code == 403, (extra, method)
            body = response.json()
            assert body["message"] == "Requests from workspace apps cannot use the dashboard session."
            assert body["validations"] == [{"field": field, "detail": "a workspace app's page"}]
    # A bearer token is the API client's own credential: not refused, wherever the page came from.
    assert h.admin.list_tokens("me")
    assert len(h.admin.list_tokens("me")) == before

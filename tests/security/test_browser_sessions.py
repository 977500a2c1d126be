"""Browser sessions against a real `dockyard server`: a page from another origin (here a workspace's own web app
on another localhost port) cannot use the session cookie to open a terminal or call the API, while the
server's own pages and bearer-token clients can. Real HTTP (httpx) and real WebSockets (`websockets`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from dockyard_sdk import models as m
from tests.live import LiveServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def session(live: LiveServer) -> Iterator[httpx.Client]:
    """A browser-like client logged in with the admin's password: it holds only the cookies."""
    password = (live.data_dir / "admin-password").read_text().strip()
    with httpx.Client(base_url=live.url) as browser:
        response = browser.post("/api/v2/users/login", json={"username": "admin", "password": password})
        assert response.status_code == 200, response.text
        yield browser


def _foreign(live: LiveServer) -> str:
    # A web app served from a workspace and forwarded to the developer's machine on another port.
    return f"http://127.0.0.1:{free_port()}"


def _ws_url(live: LiveServer, path: str) -> str:
    return live.url.replace("http://", "ws://") + path


def _cookie_header(browser: httpx.Client) -> str:
    return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


def _token_names(live: LiveServer) -> list[str]:
    return sorted(t.name for t in live.client.list_tokens())


def test_login_sets_hardened_cookies(live: LiveServer) -> None:
    password = (live.data_dir / "admin-password").read_text().strip()
    response = httpx.post(f"{live.url}/api/v2/users/login", json={"username": "admin", "password": password})
    assert response.status_code == 200
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie(header)
        [(name, morsel)] = parsed.items()
        cookies[name] = header.lower()
        assert morsel["max-age"] == str(24 * 3600)
    assert set(cookies) == {"dockyard_session", "dockyard_csrf"}
    assert "httponly" in cookies["dockyard_session"]
    assert "samesite=lax" in cookies["dockyard_session"]
    # Plain http here: Secure would make the browser drop the cookie.
    assert "secure" not in cookies["dockyard_session"]
    assert "httponly" not in cookies["dockyard_csrf"]
    assert "samesite=strict" in cookies["dockyard_csrf"]


def test_foreign_origin_cannot_change_state_with_the_cookie(live: LiveServer, session: httpx.Client) -> None:
    before = _token_names(live)
    foreign = _foreign(live)
    response = session.post("/api/v2/users/me/tokens", json={"name": "stolen"}, headers={"Origin": foreign})
    assert response.status_code == 403
    body = response.json()
    assert body["message"] == f"Cross-origin request refused: {foreign} is not this server's origin."
    assert body["validations"] == [{"field": "Origin", "detail": f"{foreign} is not allowed"}]
    # A Referer from the other page, without Origin, is refused the same way.
    referred = session.delete(
        "/api/v2/users/me/tokens/admin", headers={"Referer": f"{foreign}/some/page?x=1"}
    )
    assert referred.status_code == 403
    assert referred.json()["validations"] == [{"field": "Referer", "detail": f"{foreign} is not allowed"}]
    # `Origin: null` (sandboxed frames, file:// pages) is no origin of ours either.
    assert session.post("/api/v2/users/logout", headers={"Origin": "null"}).status_code == 403
    assert _token_names(live) == before
    # The session still works: nothing was revoked by the refused logout.
    assert session.get("/api/v2/users/me").json()["username"] == "admin"


def test_same_origin_and_bearer_clients_are_unaffected(live: LiveServer, session: httpx.Client) -> None:
    created = session.post(
        "/api/v2/users/me/tokens",
        json={"name": "from-dashboard", "lifetime": "1h"},
        headers={"Origin": live.url},
    )
    assert created.status_code == 201, created.text
    # A bearer client is not a browser: whatever Origin it claims, the token is its own proof.
    bearer = httpx.post(
        f"{live.url}/api/v2/users/me/tokens",
        json={"name": "from-script", "lifetime": "1h"},
        headers={"Authorization": f"Bearer {live.token}", "Origin": _foreign(live)},
    )
    assert bearer.status_code == 201, bearer.text
    assert {"from-dashboard", "from-script"} <= set(_token_names(live))
    for name in ("from-dashboard", "from-script"):
        live.client.revoke_token(name)


def test_cookie_request_without_origin_needs_the_csrf_token(live: LiveServer, session: httpx.Client) -> None:
    before = _token_names(live)
    # No Origin and no Referer: nothing says where it came from, so it must carry the session's token.
    missing = session.post("/api/v2/users/me/tokens", json={"name": "no-origin"})
    assert missing.status_code == 403
    assert missing.json()["message"] == "Missing or invalid CSRF token."
    assert missing.json()["validations"] == [{"field": "csrf_token", "detail": "missing"}]
    assert _token_names(live) == before
    token = session.cookies["dockyard_csrf"]
    ok = session.post("/api/v2/users/me/tokens", json={"name": "no-origin"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    live.client.revoke_token("no-origin")


def test_forms_carry_a_token_bound_to_the_session(live: LiveServer, session: httpx.Client) -> None:
    before = _token_names(live)
    same = {"Origin": live.url}
    # A form posted even from our own origin needs the token.
    plain = session.post("/api/v2/users/me/tokens", data={"name": "form"}, headers=same)
    assert plain.status_code == 403
    assert plain.json()["validations"] == [{"field": "csrf_token", "detail": "missing"}]
    # A page on another port can set cookies for this host (cookies ignore ports): a token of its own
    # choosing in both the cookie and the form is still not this session's token.
    forged = httpx.post(
        f"{live.url}/api/v2/users/me/tokens",
        data={"name": "form", "csrf_token": "chosen-by-attacker"},
        headers={**same, "Cookie": f"{_cookie_header(session)}; dockyard_csrf=chosen-by-attacker"},
    )
    assert forged.status_code == 403
    assert forged.json()["validations"] == [{"field": "csrf_token", "detail": "does not match this session"}]
    multipart = session.post("/api/v2/users/me/tokens", files={"csrf_token": (None, "wrong")}, headers=same)
    assert multipart.status_code == 403
    assert _token_names(live) == before
    # The right token passes the check; the route then reads its JSON body as usual (a form is not one).
    passed = session.post(
        "/api/v2/users/me/tokens",
        data={"name": "form", "csrf_token": session.cookies["dockyard_csrf"]},
        headers=same,
    )
    assert passed.status_code in (400, 422), passed.text
    assert passed.json()["message"] != "Missing or invalid CSRF token."
    assert _token_names(live) == before


def test_login_from_a_foreign_page_is_refused(live: LiveServer) -> None:
    password = (live.data_dir / "admin-password").read_text().strip()
    response = httpx.post(
        f"{live.url}/api/v2/users/login",
        json={"username": "admin", "password": password},
        headers={"Origin": _foreign(live)},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def _read_until(ws: ClientConnection, marker: bytes, limit: int = 200) -> bytes:
    seen = b""
    for _ in range(limit):
        message = ws.recv(timeout=30)
        if isinstance(message, bytes):
            seen += message
        if marker in seen:
            return seen
    raise AssertionError(f"no {marker!r} in {seen!r}")


def test_terminal_websocket_checks_the_origin(live: LiveServer, session: httpx.Client) -> None:
    live.workspace("dev")
    url = _ws_url(live, "/api/v2/workspaces/dev/pty")
    cookie = _cookie_header(session)
    foreign = _foreign(live)
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"Cookie": cookie}, origin=foreign, open_timeout=30)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    body = json.loads(refused.value.response.body or b"{}")
    assert body["message"] == f"Cross-origin WebSocket refused: {foreign} is not this server's origin."
    # Without the cookie too: a foreign page gets nothing from this server's WebSockets.
    with pytest.raises(InvalidStatus) as anonymous:
        connect(url, origin=foreign, open_timeout=30)  # type: ignore[arg-type]
    assert anonymous.value.response.status_code == 403
    # The server's own page opens the terminal with the cookie alone.
    with connect(url, additional_headers={"Cookie": cookie}, origin=live.url, open_timeout=30) as ws:  # type: ignore[arg-type]
        ws.send(b"echo cookie-$((6*7))\n")
        assert b"cookie-42" in _read_until(ws, b"cookie-42")
    # A bearer client (the CLI) sends no Origin and no cookie.
    with connect(url, additional_headers={"Authorization": f"Bearer {live.token}"}, open_timeout=30) as ws:
        ws.send(b"echo bearer-$((6*7))\n")
        assert b"bearer-42" in _read_until(ws, b"bearer-42")


def test_client_leaving_a_websocket_is_not_an_error(live: LiveServer) -> None:
    ws_info = live.workspace("dev")
    headers = {"Authorization": f"Bearer {live.token}"}
    log_before = len(live.log())
    # Gone before the exec request, gone mid-command, gone from a terminal and a dial: all normal endings.
    with connect(_ws_url(live, f"/api/v2/workspaces/{ws_info.id}/exec/stream"), additional_headers=headers):
        pass
    with connect(
        _ws_url(live, f"/api/v2/workspaces/{ws_info.id}/exec/stream"), additional_headers=headers
    ) as ws:
        ws.send(m.ExecStreamRequest(command=["sh", "-c", "echo started; sleep 30"]).model_dump_json())
        _read_until(ws, b"started")
    with connect(_ws_url(live, f"/api/v2/workspaces/{ws_info.id}/pty"), additional_headers=headers) as ws:
        ws.send(b"echo here\n")
        _read_until(ws, b"here")
    # A refused upgrade is answered with its JSON error; that is not a server error either.
    with pytest.raises(InvalidStatus) as missing:
        connect(_ws_url(live, "/api/v2/workspaces/no-such/pty"), additional_headers=headers)
    assert missing.value.response.status_code == 404
    # The server still answers, and logged nothing at error level and no traceback for any of it.
    assert live.client.exec(ws_info.id, m.ExecRequest(command=["true"])).exit_code == 0
    logged = live.log()[log_before:]
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    assert [line for line in lines if line.get("level") in ("error", "critical")] == []
    assert "Traceback" not in logged

"""Apps and ports through the proxy, on a real Docker workspace: by path and by host, share levels, cookies,
WebSockets, health, and what an unreachable app shows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from dockyard_sdk import models as m
from tests.apps.conftest import AppsServer
from tests.live import DOCKYARD

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def _path(s: AppsServer, kind: str, key: str, rest: str = "") -> str:
    return f"{s.url}/@{s.owner}/{s.workspace.name}/{kind}/{key}/{rest}"


def _wait_ok(url: str, **kwargs: object) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(url, **kwargs)  # type: ignore[arg-type]
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_app_by_path_with_a_token_and_its_command_started_by_the_agent(apps_server: AppsServer) -> None:
    s = apps_server
    headers = {"Authorization": f"Bearer {s.owner_session}"}
    response = _wait_ok(_path(s, "apps", "web"), headers=headers)
    assert response.status_code == 200, response.text
    assert "hello from the app" in response.text
    # A path app runs in an opaque origin: it cannot read the dashboard or use its session.
    assert "sandbox" in response.headers["content-security-policy"]
    assert "allow-same-origin" not in response.headers["content-security-policy"]
    blob = httpx.get(_path(s, "apps", "web", "blob.bin"), headers=headers)
    assert blob.status_code == 200
    assert len(blob.content) == 1048576
    # Without the trailing slash, a redirect to it (relative links in the app need it).
    bare = httpx.get(_path(s, "apps", "web").rstrip("/"), headers=headers)
    assert bare.status_code == 308
    assert bare.headers["location"].endswith("/apps/web/")
    # Any listening port, by number.
    port = httpx.get(_path(s, "ports", "8000"), headers=headers)
    assert port.status_code == 200
    assert "hello from the app" in port.text


def test_the_app_never_sees_dockyard_credentials(apps_server: AppsServer) -> None:
    s = apps_server
    _wait_ok(_path(s, "apps", "echo", "headers"), headers={"Authorization": f"Bearer {s.owner_session}"})
    cookies = f"dockyard_session={s.owner_session}; theme=dark; dockyard_app_session=x"
    response = httpx.get(_path(s, "apps", "echo", "headers?q=1"), headers={"Cookie": cookies})
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["path"] == "/headers?q=1"
    assert seen["headers"].get("cookie") == "theme=dark"
    assert "authorization" not in seen["headers"]
    assert s.owner_session not in json.dumps(seen)
    assert seen["headers"]["x-forwarded-prefix"] == f"/@{s.owner}/{s.workspace.name}/apps/echo"
    # The app tried to plant a dockyard_session cookie on the dashboard's origin: dropped; its own is kept.
    planted = response.headers.get_list("set-cookie")
    assert planted == ["app_cookie=kept; Path=/"]


def test_share_levels_by_path(apps_server: AppsServer) -> None:
    s = apps_server
    _wait_ok(_path(s, "apps", "web"), headers={"Authorization": f"Bearer {s.owner_session}"})
    anonymous_api = httpx.get(_path(s, "apps", "web"))
    assert anonymous_api.status_code == 401
    assert anonymous_api.json()["message"] == "Log in to open this app."
    anonymous_browser = httpx.get(_path(s, "apps", "web"), headers={"Accept": "text/html"})
    assert anonymous_browser.status_code == 303
    assert anonymous_browser.headers["location"] == f"/login?next=/@{s.owner}/{s.workspace.name}/apps/web/"
    other = {"Authorization": f"Bearer {s.other_token}"}
    # Another user: an owner-only app and raw ports look missing; an authenticated app opens.
    for kind, key in (("apps", "web"), ("ports", "8000")):
        refused = httpx.get(_path(s, kind, key), headers=other)
        assert refused.status_code == 404, (kind, refused.text)
        assert refused.json()["message"] == f"Workspace {s.owner}/{s.workspace.name} not found."
    team = httpx.get(_path(s, "apps", "team"), headers=other)
    assert team.status_code == 200
    assert "hello from the app" in team.text
    assert httpx.get(_path(s, "apps", "team")).status_code == 401
    public = httpx.get(_path(s, "apps", "open"))
    assert public.status_code == 200
    assert "hello from the app" in public.text
    unknown = httpx.get(_path(s, "apps", "nope"), headers=other)
    assert unknown.status_code == 404
    assert unknown.json()["message"] == f"Workspace {s.owner}/{s.workspace.name} has no app 'nope'."


def test_app_by_subdomain_with_the_host_header(apps_server: AppsServer) -> None:
    s = apps_server
    with httpx.Client(base_url=s.url) as http:
        own = http.get("/", headers={"Host": s.host("open")})
        assert own.status_code == 200
        assert "hello from the app" in own.text
        # An app on its own origin needs no sandbox: the dashboard's cookie never reaches that host.
        assert "content-security-policy" not in own.headers
        owner = http.get("/", headers={"Host": s.host("web"), "Authorization": f"Bearer {s.owner_session}"})
        assert owner.status_code == 200
        assert "hello from the app" in owner.text
        refused = http.get("/", headers={"Host": s.host("web"), "Authorization": f"Bearer {s.other_token}"})
        assert refused.status_code == 404
        browser = http.get("/x?y=1", headers={"Host": s.host("web"), "Accept": "text/html"})
        assert browser.status_code == 303
        assert browser.headers["location"].startswith(f"{s.url}/apps/auth?redirect=http")
        port = http.get("/", headers={"Host": s.host("8000"), "Authorization": f"Bearer {s.owner_session}"})
        assert port.status_code == 200
        # A forged or replayed ticket does not log anyone in.
        forged = http.get("/__dockyard/auth?ticket=abc.def&redirect=/", headers={"Host": s.host("web")})
        assert forged.status_code == 401
        assert "set-cookie" not in forged.headers


def test_websocket_through_the_proxy(apps_server: AppsServer) -> None:
    s = apps_server
    _wait_ok(_path(s, "apps", "echo", "headers"), headers={"Authorization": f"Bearer {s.owner_session}"})
    url = _path(s, "apps", "echo", "ws").replace("http://", "ws://")
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {s.owner_session}"}) as ws:
        ws.send("hi")
        assert ws.recv(10) == "echo:hi"
        payload = bytes(range(256)) * 1000
        ws.send(payload)
        assert ws.recv(10) == payload
    # By host too: the app's host name, on a socket to the server's loopback address.
    with ws_connect(
        f"ws://{s.host('echo')}/ws",
        sock=socket.create_connection(("127.0.0.1", s.port)),
        additional_headers={"Authorization": f"Bearer {s.owner_session}"},
    ) as ws:
        ws.send("there")
        assert ws.recv(10) == "echo:there"


def test_a_port_nothing_listens_on_is_a_502_with_the_reason(apps_server: AppsServer) -> None:
    s = apps_server
    headers = {"Authorization": f"Bearer {s.owner_session}"}
    api = httpx.get(_path(s, "apps", "down"), headers=headers)
    assert api.status_code == 502
    body = api.json()
    assert body["message"] == "App not reachable yet."
    assert "port 8009" in body["detail"]
    assert "refused" in body["detail"]
    page = httpx.get(_path(s, "apps", "down"), headers={**headers, "Accept": "text/html"})
    assert page.status_code == 502
    assert "text/html" in page.headers["content-type"]
    assert "App not reachable yet" in page.text
    assert "refused" in page.text
    bad = httpx.get(_path(s, "ports", "70000"), headers=headers)
    assert bad.status_code == 400
    assert bad.json()["message"] == "Port '70000' is not a port number."


def test_apps_listed_with_health(apps_server: AppsServer) -> None:
    s = apps_server
    deadline = time.monotonic() + 60
    while True:
        listed = {a.slug: a for a in s.live.client.list_apps(s.workspace.id).apps}
        if (listed["web"].health, listed["down"].health) == ("healthy", "unhealthy"):
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    web = listed["web"]
    assert web.url == f"http://web--{s.workspace.name}--{s.owner}.apps.test:{s.port}/"
    assert web.path_url == f"{s.url}/@{s.owner}/{s.workspace.name}/apps/web/"
    assert listed["team"].url == listed["team"].path_url
    assert listed["team"].health == "disabled"
    assert "refused" in listed["down"].health_detail
    assert isinstance(listed["echo"], m.WorkspaceApp)


def test_the_api_refuses_the_cookie_from_an_app_page(apps_server: AppsServer) -> None:
    s = apps_server
    cookie = {"Cookie": f"dockyard_session={s.owner_session}"}
    own = httpx.get(f"{s.url}/api/v2/users/me", headers=cookie)
    assert own.status_code == 200
    for extra in (
        {"Referer": f"{s.url}/@{s.owner}/{s.workspace.name}/apps/web/"},
        {"Origin": "null"},
    ):
        refused = httpx.get(f"{s.url}/api/v2/users/me", headers={**cookie, **extra})
        assert refused.status_code == 403, extra
        assert refused.json()["message"] == "Requests from workspace apps cannot use the dashboard session."
        posted = httpx.post(
            f"{s.url}/api/v2/users/me/tokens",
            headers={**cookie, **extra, "Content-Type": "application/json"},
            content="{}",
        )
        assert posted.status_code == 403
    assert len(s.live.client.list_tokens("me")) == len(s.live.client.list_tokens("me"))


def test_dockyard_open_prints_the_app_url(apps_server: AppsServer, tmp_path: Path) -> None:
    s = apps_server
    env = {
        **os.environ,
        "DOCKYARD_URL": s.url,
        "DOCKYARD_TOKEN": s.owner_session,
        "XDG_CONFIG_HOME": str(tmp_path),
        "DISPLAY": "",
        "WAYLAND_DISPLAY": "",
    }
    done = subprocess.run(
        [DOCKYARD, "open", s.workspace.name, "web"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"http://web--{s.workspace.name}--{s.owner}.apps.test:{s.port}/\n"
    team = subprocess.run(
        [DOCKYARD, "open", s.workspace.name, "team"], env=env, capture_output=True, text=True
    )
    assert team.stdout == f"{s.url}/@{s.owner}/{s.workspace.name}/apps/team/\n"
    page = subprocess.run([DOCKYARD, "open", s.workspace.name], env=env, capture_output=True, text=True)
    assert page.stdout == f"{s.url}/workspaces/{s.workspace.id}\n"
    missing = subprocess.run(
        [DOCKYARD, "open", s.workspace.name, "nope"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: {s.workspace.name} has no app 'nope'")
    assert "web, team, open, echo, down" in missing.stderr

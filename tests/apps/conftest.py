"""A real `dockyard server` with a wildcard access URL, and a workspace whose template has apps."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.harness import manifest_yaml, tar_gz
from tests.live import LiveServer, start_live_server, stop_live_server

WILDCARD_SUFFIX = ".apps.test"
PASSWORD = "correct-horse-battery"
ECHO = (Path(__file__).parent / "echo_app.py").read_text()

APPS = [
    {
        "slug": "web",
        "display_name": "Static site",
        "port": 8000,
        "command": 'python3 -m http.server 8000 --bind 127.0.0.1 --directory "$HOME/site"',
        "share": "owner",
        "subdomain": True,
        "healthcheck": {"path": "/", "interval": "1s", "threshold": 2},
    },
    {"slug": "team", "port": 8000, "share": "authenticated"},
    {"slug": "open", "port": 8000, "share": "public", "subdomain": True},
    {"slug": "echo", "port": 8001, "command": 'python3 "$HOME/echo_app.py" 8001', "share": "owner"},
    {
        "slug": "down",
        "port": 8009,
        "share": "owner",
        "healthcheck": {"path": "/", "interval": "1s", "threshold": 1},
    },
]
STARTUP = (
    "mkdir -p \"$HOME/site\" && echo '<!doctype html><title>site</title><h1>hello from the app</h1>' "
    '> "$HOME/site/index.html"\n'
    'printf \'<!doctype html><title>waiting</title><script src="s.js"></script>\' > "$HOME/site/script.html"\n'
    'echo \'document.title = "script loaded";\' > "$HOME/site/s.js"\n'
    'head -c 1048576 /dev/urandom > "$HOME/site/blob.bin"\n'
    "cat > \"$HOME/echo_app.py\" <<'PY'\n" + ECHO + "PY\n"
)


@dataclass
class AppsServer:
    live: LiveServer
    owner: str
    workspace: m.Workspace
    other: Client
    other_token: str
    owner_session: str

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def port(self) -> int:
        return int(self.live.url.rsplit(":", 1)[1])

    def host(self, label: str) -> str:
        return f"{label}--{self.workspace.name}--{self.owner}{WILDCARD_SUFFIX}:{self.port}"


@pytest.fixture(scope="module")
def apps_server(base_image: str) -> Iterator[AppsServer]:
    live = start_live_server(
        subnets="10.241.0.0/16",
        args=lambda url: [
            "--access-url",
            url,
            "--wildcard-access-url",
            f"http://*{WILDCARD_SUFFIX}:{url.rsplit(':', 1)[1]}",
        ],
    )
    try:
        live.client.create_template(
            tar_gz({"dockyard.yaml": manifest_yaml(name="webapps", apps=APPS, startup_script=STARTUP)})
        )
        me = live.client.me()
        live.client.update_user(me.username, m.UpdateUserRequest(password=PASSWORD))
        live.client.create_user(
            m.CreateUserRequest(username="visitor", email="visitor@example.com", password=PASSWORD)
        )
        other = Client(live.url, Client(live.url).login("visitor", PASSWORD).token)
        workspace = live.workspace("appws", template="webapps")
        yield AppsServer(live, me.username, workspace, other, other.token or "", live.token)
        other.close()
    finally:
        stop_live_server(live)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium resolving every `*.apps.test` host to loopback, as a wildcard DNS record would."""
    from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

    if shutil.which(CHROMIUM) is None:
        if os.environ.get("DOCKYARD_REQUIRE_DOCKER"):
            pytest.fail("Debian's chromium is missing, but scripts/test.sh should have installed it")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP *{WILDCARD_SUFFIX} 127.0.0.1"],
        )
        yield launched
        launched.close()

"""The browser IDE and the desktop in a real browser (Debian's Chromium), on real Docker workspaces from the
built-in `code-server` and `desktop` templates, through Dockyard's app proxy on app hosts; and a dev container's
`customizations.vscode.extensions` installed into code-server (a local .vsix, and a marketplace id that cannot
be fetched here).

The images come from `dockyard images build` (recipes.build_image): scripts/test.sh starts those builds in the
background at its beginning; the build lock makes these tests wait for them, and finding the image done costs
nothing. Run alone on a machine without the images, the first run builds them (minutes).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from dockyard.runtimes import recipes
from dockyard_sdk import models as m
from tests.harness import manifest_yaml, tar_gz
from tests.live import LiveServer, start_live_server, stop_live_server
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD

# Building the images, when nothing built them before, is part of the first test's time.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]
SUFFIX = ".apps.test"


@pytest.fixture(scope="module")
def ide_images(base_image: str) -> dict[str, str]:
    def log(line: str) -> None:
        print("images:", line)

    started = time.monotonic()
    tags = {name: recipes.build_image(name, log=log) for name in ("code-server", "desktop")}
    print(f"images ready after {time.monotonic() - started:.1f} s")
    return tags


@pytest.fixture(scope="module")
def ide(ide_images: dict[str, str]) -> Iterator[LiveServer]:
    live = start_live_server(
        subnets="10.243.0.0/16",
        args=lambda url: [
            "--access-url",
            url,
            "--wildcard-access-url",
            f"http://*{SUFFIX}:{url.rsplit(':', 1)[1]}",
        ],
    )
    try:
        me = live.client.me()
        live.client.update_user(me.username, m.UpdateUserRequest(password=PASSWORD))
        yield live
    finally:
        stop_live_server(live)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium resolving `*.apps.test` to loopback and no other name at all: VS Code's workbench may look for
    its marketplace, and nothing may leave the machine."""
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("DOCKYARD_REQUIRE_DOCKER"):
            pytest.fail("Debian's chromium is missing, but scripts/test.sh should have installed it")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    rules = f"MAP *{SUFFIX} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        yield launched
        launched.close()


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"))


def _logged_in(browser: Browser, live: LiveServer) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.on("pageerror", lambda error: print("pageerror:", error))
    page.goto(f"{live.url}/login")
    page.get_by_label("Username").fill(live.client.me().username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live.url}/workspaces")
    return page


def _open_app(page: Page, live: LiveServer, ws: m.Workspace, slug: str, tmp_path: Path) -> str:
    """Open the app from the workspace page once its health check passes; the app host's URL."""
    page.goto(f"{live.url}/workspaces/{ws.id}")
    app = page.locator(f'[data-app="{slug}"]')
    expect(app.locator(".health")).to_have_text("healthy", timeout=180_000)
    _shot(page, tmp_path, f"{slug}-workspace")
    url = app.locator("a.button").get_attribute("href")
    port = live.url.rsplit(":", 1)[1]
    assert url == f"http://{slug}--{ws.name}--{live.client.me().username}{SUFFIX}:{port}/"
    page.goto(url)
    return url


def _listening(live: LiveServer, ws: m.Workspace) -> list[str]:
    result = live.client.exec(ws.id, m.ExecRequest(command="ss -Hltn | awk '{print $4}'"))
    assert result.exit_code == 0, result
    return [str(address) for address in result.stdout.split()]


def test_code_server_workbench_opens_through_the_app_proxy_for_the_owner_only(
    ide: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    ws = ide.workspace("vscode", template="code-server", timeout=300)
    page = _logged_in(browser, ide)
    url = _open_app(page, ide, ws, "code", tmp_path)
    expect(page.locator(".monaco-workbench")).to_be_visible(timeout=120_000)
    # The folder the template opens, in the explorer's title.
    expect(page.locator(".monaco-workbench")).to_contain_text("PROJECT", timeout=60_000)
    _shot(page, tmp_path, "code-server-workbench")
    page.context.close()

    # code-server checks nobody itself: it must listen on the workspace's loopback only.
    assert "127.0.0.1:13337" in _listening(ide, ws)
    assert not any(a.endswith(":13337") and not a.startswith("127.0.0.1:") for a in _listening(ide, ws))
    # An anonymous browser is sent to log in on the dashboard, never shown the IDE.
    anonymous = browser.new_context().new_page()
    anonymous.goto(url)
    expect(anonymous).to_have_url(re.compile("^" + re.escape(f"{ide.url}/login?next=")))
    assert anonymous.locator(".monaco-workbench").count() == 0
    anonymous.context.close()


def test_novnc_desktop_canvas_appears_through_the_app_proxy(
    ide: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    ws = ide.workspace("desk", template="desktop", timeout=300)
    page = _logged_in(browser, ide)
    _open_app(page, ide, ws, "desktop", tmp_path)
    # index.html hands over to noVNC, which connects its WebSocket through the proxy and draws the screen.
    expect(page).to_have_url(re.compile(r"/vnc\.html\?autoconnect=true"), timeout=30_000)
    canvas = page.locator("#noVNC_container canvas")
    expect(canvas).to_be_visible(timeout=60_000)
    deadline = time.monotonic() + 60
    while page.evaluate("document.querySelector('#noVNC_container canvas').width") != 1280:
        assert time.monotonic() < deadline, "noVNC did not get the 1280x800 screen"
        time.sleep(0.5)
    time.sleep(1)  # let the first frame paint before the artifact is taken
    _shot(page, tmp_path, "desktop-novnc")
    page.context.close()
    listening = _listening(ide, ws)
    assert {"127.0.0.1:6080", "127.0.0.1:5901"} <= set(listening), listening


def _vsix() -> bytes:
    """A tiny VS Code extension package: a manifest, content types and the extension's package.json."""
    package = {
        "name": "hello",
        "publisher": "dockyard-test",
        "version": "0.0.1",
        "engines": {"vscode": "^1.50.0"},
        "contributes": {"commands": [{"command": "hello.say", "title": "Dockyard hello"}]},
    }
    manifest = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">'
        '<Metadata><Identity Language="en-US" Id="hello" Version="0.0.1" Publisher="dockyard-test"/>'
        "<DisplayName>Hello</DisplayName><Description>Dockyard test</Description></Metadata>"
        '<Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation><Dependencies/>'
        '<Assets><Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" '
        'Addressable="true"/></Assets></PackageManifest>'
    )
    types = (
        '<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
        'content-types"><Default Extension=".json" ContentType="application/json"/><Default Extension='
        '".vsixmanifest" ContentType="text/xml"/></Types>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("extension.vsixmanifest", manifest)
        archive.writestr("[Content_Types].xml", types)
        archive.writestr("extension/package.json", json.dumps(package))
    return buffer.getvalue()


def test_devcontainer_extensions_are_installed_into_code_server(ide: LiveServer) -> None:
    config = {
        "image": "dockyard/code-server:bookworm",
        # The marketplace on loopback, where nothing listens: the id's install fails here without any traffic
        # leaving the workspace (as it would on this machine, where Open VSX is not reachable).
        "containerEnv": {"EXTENSIONS_GALLERY": json.dumps({"serviceUrl": "http://127.0.0.1:9/gallery"})},
        "customizations": {
            "vscode": {"extensions": ["./tools/hello-0.0.1.vsix", "dockyard-test.no-such-one"]}
        },
    }
    ide.client.create_template(
        tar_gz(
            {
                "dockyard.yaml": manifest_yaml(
                    name="dc-ide", image=None, devcontainer=".devcontainer/devcontainer.json"
                ),
                ".devcontainer/devcontainer.json": json.dumps(config),
                "tools/hello-0.0.1.vsix": _vsix(),
            }
        )
    )
    ws = ide.workspace("dcide", template="dc-ide", timeout=300)
    deadline = time.monotonic() + 240
    while True:
        lines = [
            line.output
            for line in ide.client.build_logs(ws.latest_build.id)
            if line.stage == "devcontainer" and line.output.startswith("extension ")
        ]
        if len(lines) == 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert lines[0] == "extension ./tools/hello-0.0.1.vsix: installed"
    assert lines[1].startswith(
        "extension dockyard-test.no-such-one: not installed: the extension marketplace (Open VSX) is not "
        "reachable from the workspace or does not have it ("
    ), lines
    listed = ide.client.exec(ws.id, m.ExecRequest(command="code-server --list-extensions"))
    assert listed.stdout.split() == ["dockyard-test.hello"], listed
    assert "devcontainer.extensions" in ide.client.get_workspace(ws.id).latest_build.timings


def test_a_second_build_finds_the_images_and_their_cached_saves(ide_images: dict[str, str]) -> None:
    import docker

    lines: list[str] = []
    started = time.monotonic()
    for name, tag in ide_images.items():
        assert recipes.build_image(name, log=lines.append) == tag
    assert time.monotonic() - started < 60
    assert "Image dockyard/code-server:bookworm already exists" in lines
    assert "Image dockyard/desktop:bookworm already exists" in lines
    client = docker.from_env()
    try:
        for name, tag in ide_images.items():
            key = client.images.get(tag).labels[recipes.RECIPE_LABEL]
            assert (recipes.default_cache_dir() / f"{name}-{key}.tar").stat().st_size > 100_000_000
    finally:
        client.close()

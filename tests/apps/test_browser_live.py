"""The web terminal and workspace apps in a real browser (Debian's Chromium), on a real Docker workspace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.apps.conftest import PASSWORD, AppsServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _logged_in(browser: Browser, s: AppsServer, username: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("console", lambda message: print("console:", message.type, message.text))
    page.on("pageerror", lambda error: print("pageerror:", error))
    page.goto(f"{s.url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{s.url}/workspaces")
    return page


def _screen(page: Page) -> Any:
    return page.locator(".term-pane:not([hidden]) .xterm-rows")


def test_terminal_survives_a_reload_and_tabs_keep_their_sessions(
    apps_server: AppsServer, browser: Browser, tmp_path: Path
) -> None:
    s = apps_server
    page = _logged_in(browser, s, s.owner)
    page.goto(f"{s.url}/workspaces/{s.workspace.id}")
    page.get_by_role("link", name="Open terminal").click()
    expect(page).to_have_url(re.compile(r"/terminal"))
    expect(page.locator("#term-state")).to_have_text(re.compile(r"^connected: t[0-9a-f]+$"), timeout=30_000)
    first = page.locator("#term-state").inner_text().removeprefix("connected: ")
    page.locator(".term-pane:not([hidden]) .xterm-helper-textarea").focus()
    page.keyboard.type("echo hi-$((40+2))\n")
    expect(_screen(page)).to_contain_text("hi-42", timeout=20_000)
    _shot(page, tmp_path, "terminal")

    # Reload: the same terminal id reattaches and the agent replays the recent output.
    page.reload()
    expect(page.locator("#term-state")).to_have_text(f"connected: {first}", timeout=30_000)
    expect(_screen(page)).to_contain_text("hi-42", timeout=20_000)

    # A second tab is a second shell; resizing the window resizes the terminal (the shell sees it).
    page.get_by_role("button", name="New tab").click()
    expect(page.locator("#term-state")).to_have_text(re.compile(r"^connected: t[0-9a-f]+$"), timeout=30_000)
    second = page.locator("#term-state").inner_text().removeprefix("connected: ")
    assert second != first
    page.set_viewport_size({"width": 900, "height": 700})
    page.locator(".term-pane:not([hidden]) .xterm-helper-textarea").focus()
    page.keyboard.type("echo size=$(stty size | tr ' ' x)\n")
    expect(_screen(page)).to_contain_text(re.compile(r"size=\d+x\d+"), timeout=20_000)
    cols = page.evaluate(f"window.dockyardTerminals.get({second!r}).term.cols")
    expect(_screen(page)).to_contain_text(f"x{cols}")
    expect(_screen(page)).not_to_contain_text("hi-42")

    # Closing a tab detaches it; reopening it within the window brings the same shell and its output back.
    page.locator(f'.tab[data-session="{first}"] .tab-close').click()
    expect(page.locator(f'#term-detached button[data-session="{first}"]')).to_be_visible()
    page.locator(f'#term-detached button[data-session="{first}"]').click()
    expect(page.locator("#term-state")).to_have_text(f"connected: {first}", timeout=30_000)
    expect(_screen(page)).to_contain_text("hi-42", timeout=20_000)

    # Copy: a selection goes to the clipboard through the Copy button.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=s.url)
    page.evaluate(f"window.dockyardTerminals.get({first!r}).term.selectAll()")
    page.get_by_role("button", name="Copy selection").click()
    assert "hi-42" in page.evaluate("navigator.clipboard.readText()")
    page.context.close()


def test_apps_open_by_path_and_by_host_with_share_levels(
    apps_server: AppsServer, browser: Browser, tmp_path: Path
) -> None:
    s = apps_server
    page = _logged_in(browser, s, s.owner)
    page.goto(f"{s.url}/workspaces/{s.workspace.id}")
    web = page.locator('[data-app="web"]')
    expect(web.locator(".health")).to_have_text("healthy", timeout=60_000)
    expect(page.locator('[data-app="down"] .health')).to_have_text("unhealthy", timeout=60_000)
    _shot(page, tmp_path, "workspace-apps")

    # By path, on the dashboard's origin but sandboxed into an opaque origin: the page opens...
    path_url = f"{s.url}/@{s.owner}/{s.workspace.name}/apps/team/"
    page.goto(path_url)
    expect(page.get_by_role("heading", name="hello from the app")).to_be_visible()
    # ...and cannot use the visitor's session against the API (the browser sends no cookie from it, and the
    # answer would be unreadable anyway).
    status = page.evaluate(
        "fetch('/api/v2/users/me', {credentials: 'include'}).then(r => r.status, e => 'blocked')"
    )
    assert status == "blocked"
    # A public path app's own scripts load; a non-public one's subresources would need the login the sandbox
    # withholds (docs/SECURITY.md), which is why apps that need them set `subdomain: true`.
    page.goto(f"{s.url}/@{s.owner}/{s.workspace.name}/apps/open/script.html")
    expect(page).to_have_title("script loaded")

    # By host: the dashboard hands the app host a ticket; the app host sets its own cookie.
    page.goto(f"{s.url}/workspaces/{s.workspace.id}")
    link = page.locator('[data-app="web"] a.button')
    app_url = link.get_attribute("href")
    assert app_url == f"http://web--{s.workspace.name}--{s.owner}.apps.test:{s.port}/"
    page.goto(app_url)
    expect(page.get_by_role("heading", name="hello from the app")).to_be_visible()
    expect(page).to_have_url(app_url)
    cookies = {(c["name"], c["domain"]) for c in page.context.cookies()}
    assert ("dockyard_app_session", f"web--{s.workspace.name}--{s.owner}.apps.test") in cookies
    assert ("dockyard_session", f"web--{s.workspace.name}--{s.owner}.apps.test") not in cookies
    # On its own origin the app is whole: its scripts load with its host's cookie.
    page.goto(app_url + "script.html")
    expect(page).to_have_title("script loaded")
    _shot(page, tmp_path, "app-by-host")
    # An unreachable app: the 502 page says why.
    page.goto(f"{s.url}/@{s.owner}/{s.workspace.name}/apps/down/")
    expect(page.get_by_role("heading", name="App not reachable yet")).to_be_visible()
    expect(page.locator("body")).to_contain_text("refused")
    page.context.close()

    # Another user: the owner-only app looks missing; the authenticated one opens.
    visitor = _logged_in(browser, s, "visitor")
    response = visitor.goto(f"{s.url}/@{s.owner}/{s.workspace.name}/apps/web/")
    assert response is not None
    assert response.status == 404
    visitor.goto(f"{s.url}/@{s.owner}/{s.workspace.name}/apps/team/")
    expect(visitor.get_by_role("heading", name="hello from the app")).to_be_visible()
    response = visitor.goto(f"http://web--{s.workspace.name}--{s.owner}.apps.test:{s.port}/")
    assert response is not None
    assert response.status == 404
    visitor.context.close()

    # Anonymous: the public app opens by host and path; the others ask to log in.
    anonymous = browser.new_context().new_page()
    anonymous.goto(f"http://open--{s.workspace.name}--{s.owner}.apps.test:{s.port}/")
    expect(anonymous.get_by_role("heading", name="hello from the app")).to_be_visible()
    anonymous.goto(f"{s.url}/@{s.owner}/{s.workspace.name}/apps/team/")
    expect(anonymous).to_have_url(re.compile(r"/login\?next="))
    anonymous.goto(f"http://web--{s.workspace.name}--{s.owner}.apps.test:{s.port}/")
    expect(anonymous).to_have_url(re.compile(r"/login\?next=/apps/auth"))
    anonymous.context.close()

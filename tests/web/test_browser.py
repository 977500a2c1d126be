"""The dashboard in a real browser (Debian's Chromium through Playwright), against a server on a real port."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from dockyard.web import pages
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness
from tests.web.conftest import PASSWORD

PARAMETERS = [
    {"name": "branch", "type": "string", "default": "main", "description": "Branch to check out"},
    {"name": "size", "type": "string", "default": "small", "options": ["small", "large"]},
    {
        "name": "ttl_hours",
        "type": "number",
        "default": 4,
        "mutable": True,
        "validation": {"min": 1, "max": 24},
    },
]


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _login(page: Page, base: str, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_the_dashboard_journey(wh: Harness, served: str, chromium: Any, tmp_path: Path) -> None:
    browser: Browser = chromium
    alice = wh.user("alice")
    wh.template(name="py", description="Python 3 with uv", parameters=PARAMETERS)
    created = alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="demo"))
    wh.await_build(created.id, client=alice)
    # Bob's workspace must not show up for Alice, on the list or by URL.
    bob = wh.user("bob")
    hidden = bob.create_workspace(m.CreateWorkspaceRequest(template="py", name="secret"))

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{served}/workspaces?status=running")
    # Not logged in: sent to log in, with the way back kept.
    expect(page).to_have_url(re.compile(r"/login\?next=/workspaces%3Fstatus%3Drunning$"))

    _login(page, served, "alice", "wrong-password")
    expect(page.get_by_role("alert")).to_have_text("Incorrect username or password.")
    expect(page.get_by_label("Username")).to_have_value("alice")
    _shot(page, tmp_path, "login-failed")

    _login(page, served, "alice", PASSWORD)
    expect(page).to_have_url(f"{served}/workspaces?status=running")
    cookie = next(c for c in context.cookies() if c["name"] == "dockyard_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    page.get_by_role("link", name="Templates", exact=True).click()
    card = page.locator("#template-py")
    expect(card.get_by_role("heading")).to_have_text("py")
    expect(card).to_contain_text("Python 3 with uv")
    expect(card.locator("table.params tbody tr")).to_have_count(3)
    expect(card).to_contain_text("Branch to check out")
    expect(card).to_contain_text("string: small, large")
    _shot(page, tmp_path, "templates")

    page.get_by_role("link", name="Workspaces", exact=True).click()
    row = page.locator(f"#ws-{created.id}")
    expect(row.locator('[data-field="status"]')).to_have_text("running")
    expect(page.locator(f"#ws-{hidden.id}")).to_have_count(0)
    expect(page.locator("#live-state")).to_have_attribute("data-live", "true")
    _shot(page, tmp_path, "workspaces")

    # A stop through the SDK shows on the open list without a reload.
    alice.stop_workspace(created.id)
    expect(row.locator('[data-field="status"]')).to_have_text("stopped", timeout=20_000)
    # So does a workspace created elsewhere, and its deletion.
    later = alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="later"))
    expect(page.locator(f"#ws-{later.id}")).to_be_visible(timeout=20_000)
    alice.delete_workspace(later.id)
    expect(page.locator(f"#ws-{later.id} [data-field=status]")).to_have_text("deleted", timeout=20_000)

    # The workspace page follows its status too; its Start button starts it again.
    row.get_by_role("link", name="demo").click()
    expect(page.locator("#ws-status")).to_have_text("stopped")
    expect(page.locator("#ssh-command")).to_have_value("ssh dockyard.demo")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#ws-status")).to_have_text("running", timeout=20_000)
    expect(page.locator("#ws-build")).to_contain_text("start: succeeded")
    # The log follows the new build, line by line as the API stores them.
    build = alice.get_workspace(created.id).latest_build
    log = page.locator("#build-log")
    expect(log).to_have_attribute("data-build", build.id)
    expect(log).to_have_attribute("data-state", "ended", timeout=20_000)
    stored = wh.admin.http.get(f"/api/v2/workspacebuilds/{build.id}/logs").json()
    assert stored, "the fake runtime's build wrote no log lines"
    expect(log).to_contain_text(f"[{stored[-1]['stage']}] {stored[-1]['output'].rstrip()}")
    _shot(page, tmp_path, "workspace")

    # The mutable parameter's form: the API's message at the field, then "Restart now" applies a valid value.
    expect(page.locator("#ws-parameters")).not_to_contain_text("size")
    page.get_by_label("ttl_hours").fill("30")
    page.get_by_role("button", name="Save parameters").click()
    expect(page.locator("#p-ttl_hours-error")).to_have_text("30 is above the maximum 24")
    expect(page.get_by_label("ttl_hours")).to_have_value("30")
    assert alice.get_workspace(created.id).parameters["ttl_hours"] == 4
    page.get_by_label("ttl_hours").fill("6")
    page.get_by_label("Restart now to apply them").check()
    page.get_by_role("button", name="Save parameters").click()
    expect(page.locator("#ws-build")).to_contain_text(f"#{build.number + 2} start: succeeded", timeout=30_000)
    expect(page.locator("#ws-status")).to_have_text("running")
    expect(page.locator("#ws-params")).to_contain_text("6")
    # Restart from the page: a stop and a start, followed live.
    page.get_by_role("button", name="Restart", exact=True).click()
    expect(page.locator("#ws-build")).to_contain_text(f"#{build.number + 4} start: succeeded", timeout=30_000)
    alice.stop_workspace(created.id)
    expect(page.locator("#ws-status")).to_have_text("stopped", timeout=20_000)

    # Another user's workspace is not found, not forbidden.
    response = page.goto(f"{served}/workspaces/{hidden.id}")
    assert response is not None
    assert response.status == 404

    # Phone width stays readable: nothing wider than the viewport but the table's own scroller.
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (
        (f"/workspaces/{created.id}", "workspace-phone"),
        ("/workspaces", "workspaces-phone"),
        ("/templates", "templates-phone"),
        ("/workspaces/new?template=py", "create-phone"),
    ):
        page.goto(f"{served}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width}px wide"
        _shot(page, tmp_path, name)
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{served}/login")
    assert not [c for c in context.cookies() if c["name"] == "dockyard_session"]
    page.goto(f"{served}/templates")
    expect(page).to_have_url(re.compile(r"/login\?next=/templates$"))
    context.close()


def test_delete_asks_for_confirmation(wh: Harness, served: str, chromium: Any) -> None:
    browser: Browser = chromium
    alice = wh.user("alice")
    wh.template(name="py")
    created = wh.await_build(
        alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="gone")).id, client=alice
    )
    page = browser.new_page()
    page.goto(f"{served}/workspaces/{created.id}")
    _login(page, served, "alice", PASSWORD)

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete…").click()
    expect(page.locator("#ws-status")).to_have_text("running")
    assert alice.get_workspace(created.id).latest_build.transition == m.Transition.START

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete…").click()
    expect(page).to_have_url(f"{served}/workspaces")
    assert alice.get_workspace(created.id).latest_build.transition == m.Transition.DELETE
    page.close()


def test_no_page_loads_anything_from_another_host(wh: Harness, served: str, chromium: Any) -> None:
    browser: Browser = chromium
    alice = wh.user("alice")
    wh.template(name="py")
    created = alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="demo"))
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{served}/login")
    _login(page, served, "alice", PASSWORD)
    for path in ("/login", "/templates", "/workspaces", f"/workspaces/{created.id}", "/api/v2/docs"):
        page.goto(f"{served}{path}")
        page.wait_for_load_state("networkidle") if path != "/workspaces" else None
        urls = page.eval_on_selector_all(
            "script[src], link[href], img[src], iframe[src]",
            "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))",
        )
        foreign = [
            u
            for u in urls
            if re.match(r"(?i)^(https?:)?//", u) and urlsplit(u).netloc != urlsplit(served).netloc
        ]
        assert foreign == [], f"{path} refers to {foreign}"
    # Swagger UI rendered from the vendored bundle, with no network beyond this server.
    page.goto(f"{served}/api/v2/docs")
    expect(page.locator(".swagger-ui .information-container")).to_contain_text("Dockyard", timeout=20_000)
    host = urlsplit(served).netloc
    assert [u for u in requested if urlsplit(u).netloc not in (host, "")] == []
    page.close()


def test_the_create_form_shows_the_api_s_messages_at_the_fields(
    wh: Harness, served: str, chromium: Any, tmp_path: Path
) -> None:
    browser: Browser = chromium
    alice = wh.user("alice")
    parameters = [
        *PARAMETERS,
        {"name": "gpu", "type": "bool", "default": False},
        {"name": "ticket", "type": "string", "default": "T-1", "validation": {"regex": "^T-[0-9]+$"}},
    ]
    wh.template(name="py", parameters=parameters)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{served}/templates")
    _login(page, served, "alice", PASSWORD)
    page.get_by_role("link", name="Create workspace from py").click()
    expect(page.get_by_label("size")).to_have_value("small")
    expect(page.get_by_label("ticket")).to_have_value("T-1")
    expect(page.locator("#p-ticket-hint")).to_contain_text("Must match ^T-[0-9]+$")
    expect(page.locator("#p-ttl_hours-hint")).to_contain_text("Between 1 and 24.")
    expect(page.get_by_label("ttl_hours")).to_have_attribute("max", "24.0")

    page.get_by_label("Workspace name").fill("mine")
    page.get_by_label("size").select_option("large")
    page.get_by_label("gpu").check()
    page.get_by_label("ttl_hours").fill("30")
    page.get_by_label("ticket").fill("nope")
    page.get_by_role("button", name="Create workspace").click()

    expect(page.get_by_role("alert")).to_contain_text("Invalid parameters.")
    expect(page.locator("#p-ttl_hours-error")).to_have_text("30 is above the maximum 24")
    expect(page.locator("#p-ticket-error")).to_have_text("'nope' does not match ^T-[0-9]+$")
    expect(page.get_by_label("ttl_hours")).to_have_attribute("aria-invalid", "true")
    # What was typed is kept.
    expect(page.get_by_label("Workspace name")).to_have_value("mine")
    expect(page.get_by_label("size")).to_have_value("large")
    expect(page.get_by_label("gpu")).to_be_checked()
    expect(page.get_by_label("ticket")).to_have_value("nope")
    _shot(page, tmp_path, "create-invalid")
    assert alice.list_workspaces().workspaces == []

    page.get_by_label("ttl_hours").fill("8")
    page.get_by_label("ticket").fill("T-42")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.locator("h1")).to_have_text("alice/mine")
    expect(page.locator("#ws-status")).to_have_text("running", timeout=20_000)
    created = alice.get_workspace("mine")
    assert created.parameters == {
        "branch": "main",
        "size": "large",
        "ttl_hours": 8,
        "gpu": True,
        "ticket": "T-42",
    }

    # The name is the API's to judge as well: a taken one is marked at the field.
    page.goto(f"{served}/workspaces/new?template=py")
    page.get_by_label("Workspace name").fill("mine")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.locator("#f-name-error")).to_have_text("'mine' is taken")
    page.get_by_label("Workspace name").fill("Bad Name!")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.locator("#f-name-error")).to_be_visible()
    expect(page.get_by_label("Workspace name")).to_have_value("Bad Name!")
    assert [w.name for w in alice.list_workspaces().workspaces] == ["mine"]
    page.close()


def test_keyboard_only_login_and_dark_mode(wh: Harness, served: str, chromium: Any, tmp_path: Path) -> None:
    browser: Browser = chromium
    wh.user("alice")
    wh.template(name="py")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    page = context.new_page()
    page.goto(f"{served}/templates")
    # The username field has focus; Tab moves to the password; Enter submits. Chromium applies `autofocus` at a
    # rendering update that may come after the load event: typed before it, the first key was lost ("lice").
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{served}/templates")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 22)"
    _shot(page, tmp_path, "templates-dark")
    # The first Tab reaches the skip link, which is shown while focused.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    context.close()


def test_the_workspace_page_never_keeps_a_status_rendered_before_the_latest_change(
    wh: Harness, served: str, chromium: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop's two changes (stopping, then stopped) ask for the page's detail twice. htmx drops a request
    while another is in flight; when the one in flight was rendered at `stopping`, the page kept it."""
    browser: Browser = chromium
    alice = wh.user("alice")
    wh.template(name="py", parameters=PARAMETERS)
    created = alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="demo"))
    wh.await_build(created.id, client=alice)
    runtime = wh.runtime
    assert isinstance(runtime, FakeRuntime)
    load = pages._load
    held: list[str] = []

    def slow_at_stopping(*args: Any, **kwargs: Any) -> m.Workspace:
        found = load(*args, **kwargs)
        if found.status == m.WorkspaceStatus.STOPPING and not held:
            # Rendered at `stopping`: the stop now finishes (a second change) while this answer is on its way.
            held.append(found.id)
            runtime.gate.set()
            wh.await_build(created.id, client=alice)
            time.sleep(1)
        return found

    monkeypatch.setattr(pages, "_load", slow_at_stopping)
    page = browser.new_context().new_page()
    page.goto(f"{served}/workspaces/{created.id}")
    _login(page, served, "alice", PASSWORD)
    expect(page.locator("#ws-status")).to_have_text("running")

    runtime.gate.clear()  # the stop holds at the runtime until the page has asked at `stopping`
    alice.stop_workspace(created.id)

    expect(page.locator("#ws-status")).to_have_text("stopped", timeout=15_000)
    assert held == [created.id]

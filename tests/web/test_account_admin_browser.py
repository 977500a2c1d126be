"""The account and admin pages in Debian's Chromium: a token shown once and revoked, an SSH key refused at its
field then added, an admin rolling a template back and filtering the audit log, a member refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncssh
from playwright.sync_api import Browser, Dialog, Page, expect

from dockyard_sdk import models as m
from tests.harness import Harness, manifest_yaml, tar_gz
from tests.web.conftest import PASSWORD


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _login(page: Page, base: str, username: str, next_path: str) -> None:
    page.goto(f"{base}/login?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{next_path}")


def _accept(dialogs: list[str]) -> Any:
    def handle(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    return handle


def _fits_phone(page: Page, tmp_path: Path, base: str, path: str, name: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}{path}")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{path} is {width}px wide"
    _shot(page, tmp_path, name)
    page.set_viewport_size({"width": 1280, "height": 800})


def test_tokens_and_ssh_keys_on_the_account_page(
    wh: Harness, served: str, chromium: Any, tmp_path: Path
) -> None:
    browser: Browser = chromium
    alice = wh.user("alice")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", _accept(dialogs))
    _login(page, served, "alice", "/workspaces")
    page.get_by_role("link", name="Account", exact=True).click()
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    # An untyped allow-list entry is refused at its field, and what was typed stays.
    page.get_by_label("Name", exact=True).fill("ci")
    page.get_by_label("Expires after").fill("7d")
    page.get_by_role("checkbox", name="workspace:read").check()
    page.get_by_label("Allow-list").fill("py")
    page.get_by_role("button", name="Create token").click()
    allow = page.get_by_label("Allow-list")
    expect(allow).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#t-allow-error")).to_have_text(
        "'py' must name its kind: template:NAME or workspace:NAME (or an id)"
    )
    expect(allow).to_have_value("py")
    expect(page.get_by_label("Name", exact=True)).to_have_value("ci")
    expect(page.get_by_role("checkbox", name="workspace:read")).to_be_checked()
    _shot(page, tmp_path, "account-token-invalid")

    allow.fill("template:py")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-key")
    expect(secret).to_have_value(re.compile(r"^dy_"))
    key = secret.input_value()
    expect(page.locator("#created-token")).to_contain_text("the only time it is shown")
    assert wh.client(key).request("GET", "/api/v2/workspaces").status_code == 200
    _shot(page, tmp_path, "account-token-created")
    # Shown once: a reload (a GET, never a re-POST) does not show it again.
    page.goto(f"{served}/account")
    expect(page.locator("#token-key")).to_have_count(0)
    assert key not in page.content()
    created = next(t for t in alice.list_tokens() if t.name == "ci")
    row = page.locator(f"#token-{created.id}")
    expect(row).to_contain_text("workspace:read")
    expect(row).to_contain_text("template:py")
    row.get_by_role("button", name="Revoke ci").click()
    expect(page.locator(f"#token-{created.id}")).to_have_count(0)
    assert dialogs == ["Revoke the token ci? Anything using it stops working at once."]
    assert "ci" not in [t.name for t in alice.list_tokens()]

    # An SSH key: a broken one first, its message at the field (the gateway's own), then a real one.
    page.get_by_label("Key name").fill("laptop")
    page.get_by_label("Public key").fill("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA")
    page.get_by_role("button", name="Add key").click()
    field = page.get_by_label("Public key")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#k-key-error")).to_contain_text("not a valid OpenSSH public key")
    expect(field).to_have_attribute("aria-describedby", "k-key-hint k-key-error")
    expect(page.get_by_label("Key name")).to_have_value("laptop")
    _shot(page, tmp_path, "account-key-invalid")
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    field.fill(public)
    page.get_by_role("button", name="Add key").click()
    (stored,) = alice.list_ssh_keys()
    key_row = page.locator(f"#key-{stored.id}")
    expect(key_row).to_contain_text(stored.fingerprint)
    _shot(page, tmp_path, "account")
    _fits_phone(page, tmp_path, served, "/account", "account-phone")
    page.locator(f"#key-{stored.id}").get_by_role("button", name="Remove laptop").click()
    expect(page.locator(f"#key-{stored.id}")).to_have_count(0)
    assert alice.list_ssh_keys() == []

    # Keyboard: the create form is reachable and submittable without a mouse.
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.type("kb")
    page.keyboard.press("Tab")
    page.keyboard.type("1d")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the first scope: all
    page.get_by_label("Allow-list").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#token-key")).to_have_value(re.compile(r"^dy_"))
    context.close()


def test_admin_rolls_a_template_back_and_filters_the_audit_log(
    wh: Harness, served: str, chromium: Any, tmp_path: Path
) -> None:
    browser: Browser = chromium
    wh.user("olive", role=m.Role.OWNER)
    wh.user("bob")
    wh.template(name="py", description="Python")
    wh.admin.create_template_version(
        "py", tar_gz({"dockyard.yaml": manifest_yaml(name="py", description="v2")}), message="second"
    )
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", _accept(dialogs))
    _login(page, served, "olive", "/workspaces")
    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(f"{served}/admin/users")
    expect(page.locator("#user-bob")).to_contain_text("member")
    page.get_by_label("Role of bob").select_option("template-admin")
    page.get_by_role("button", name="Change role of bob").click()
    expect(page.get_by_label("Role of bob")).to_have_value("template-admin")
    assert wh.admin.get_user("bob").role == m.Role.TEMPLATE_ADMIN
    _shot(page, tmp_path, "admin-users")

    page.get_by_role("link", name="Template versions").click()
    card = page.locator("#template-py")
    expect(card.locator('[data-field="active"]')).to_have_text("v2")
    card.get_by_role("button", name="Roll back to v1").click()
    expect(card.locator('[data-field="active"]')).to_have_text("v1")
    assert dialogs == ["Roll py back to v1? New workspaces and updates use it."]
    assert wh.admin.get_template("py").active_version.number == 1  # type: ignore[union-attr]
    # And forward again, without a confirmation: activating a newer version is no roll back.
    card.get_by_role("button", name="Activate v2").click()
    expect(card.locator('[data-field="active"]')).to_have_text("v2")
    _shot(page, tmp_path, "admin-templates")

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").fill("template.update")
    page.get_by_label("Actor").fill("olive")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#audit-list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text('"active_version": 2')
    expect(rows.nth(1)).to_contain_text('"active_version": 1')
    expect(page.get_by_label("Action")).to_have_value("template.update")
    _shot(page, tmp_path, "admin-audit")
    page.get_by_label("Actor").fill("bob")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit-list")).to_contain_text("No entries match these filters.")
    for path, name in (("/admin/users", "admin-users-phone"), ("/admin/audit", "admin-audit-phone")):
        _fits_phone(page, tmp_path, served, path, name)
    context.close()


def test_a_member_gets_the_403_page(wh: Harness, served: str, chromium: Any, tmp_path: Path) -> None:
    browser: Browser = chromium
    wh.user("mallory")
    page = browser.new_page()
    _login(page, served, "mallory", "/account")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    response = page.goto(f"{served}/admin")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading")).to_have_text("Your role (member) has no admin pages.")
    _shot(page, tmp_path, "admin-forbidden")
    response = page.goto(f"{served}/admin/audit")
    assert response is not None
    assert response.status == 403
    page.close()

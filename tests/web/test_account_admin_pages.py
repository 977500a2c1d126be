"""The account and admin pages over HTTP: refusals (no CSRF token, not an admin, wider scopes than the
session's) answer with the status and the message, and change nothing."""

from __future__ import annotations

import re
from typing import Any

import asyncssh
from starlette.testclient import TestClient

from dockyard_sdk import models as m
from tests.harness import Harness, manifest_yaml, tar_gz
from tests.web.conftest import PASSWORD


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _logged_in(h: Harness, username: str, *, role: m.Role = m.Role.MEMBER) -> TestClient:
    h.user(username, role=role)
    http = h.http()
    token = _csrf(http.get("/login").text)
    response = http.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token, "next": "/account"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return http


def _public_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key().decode().strip()


def _field_error(html: str, fid: str) -> str:
    found = re.search(rf'<small id="{fid}-error" class="error field-error">([^<]*)</small>', html)
    assert found is not None, f"no error at {fid}"
    return found.group(1)


def test_account_forms_refuse_without_the_csrf_token(wh: Harness) -> None:
    http = _logged_in(wh, "alice")
    alice = wh.user("alice")
    before = {t.id for t in alice.list_tokens()}
    response = http.post("/account/tokens", data={"name": "ci", "scopes": "all", "lifetime": "1d"})
    assert response.status_code == 403
    assert response.json()["message"] == "Missing or invalid CSRF token."
    response = http.post("/account/sshkeys", data={"name": "laptop", "public_key": _public_key()})
    assert response.status_code == 403
    victim = alice.list_tokens()[0]
    response = http.post(f"/account/tokens/{victim.id}/revoke", data={"csrf_token": "forged"})
    assert response.status_code == 403
    assert {t.id for t in alice.list_tokens()} == before
    assert alice.list_ssh_keys() == []


def test_a_token_is_shown_once_and_revoked(wh: Harness) -> None:
    http = _logged_in(wh, "alice")
    alice = wh.user("alice")
    token = _csrf(http.get("/account").text)
    form: Any = {
        "csrf_token": token,
        "name": "ci",
        "lifetime": "7d",
        "scopes": ["workspace:read", "template:read"],
        "allow_list": "template:py\nworkspace:demo",
    }
    response = http.post("/account/tokens", data=form)
    assert response.status_code == 201
    key = re.search(r'id="token-key" value="(dy_[^"]+)"', response.text)
    assert key is not None
    created = next(t for t in alice.list_tokens() if t.name == "ci")
    assert created.scopes == [m.Scope.TEMPLATE_READ, m.Scope.WORKSPACE_READ]
    assert created.allow_list == ["template:py", "workspace:demo"]
    # The secret works, and no later page shows it again.
    assert wh.client(key.group(1)).list_templates() == []
    assert key.group(1) not in http.get("/account").text

    response = http.post(
        f"/account/tokens/{created.id}/revoke", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert "ci" not in [t.name for t in alice.list_tokens()]


def test_bad_token_input_is_kept_and_marked_at_its_field(wh: Harness) -> None:
    http = _logged_in(wh, "alice")
    alice = wh.user("alice")
    before = [t.id for t in alice.list_tokens()]
    token = _csrf(http.get("/account").text)
    form: Any = {"csrf_token": token, "name": "ci", "lifetime": "1d", "scopes": ["all"], "allow_list": "py"}
    response = http.post("/account/tokens", data=form)
    assert response.status_code == 422
    assert _field_error(response.text, "t-allow") == (
        "&#39;py&#39; must name its kind: template:NAME or workspace:NAME (or an id)"
    )
    assert ">py</textarea>" in response.text
    form = {"csrf_token": token, "name": "ci", "lifetime": "2s", "allow_list": ""}
    response = http.post("/account/tokens", data=form)
    assert response.status_code == 422
    assert _field_error(response.text, "t-lifetime") == "must be at least 1m"
    assert (
        _field_error(response.text, "t-scopes") == "List should have at least 1 item after validation, not 0"
    )
    assert [t.id for t in alice.list_tokens()] == before


def test_a_narrow_session_cannot_mint_a_wider_token(wh: Harness) -> None:
    """The same rule as the API: the page calls tokens.create with the session's actor."""
    wh.user("alice")
    narrow = wh.user("alice", scopes=[m.Scope.TOKEN_WRITE, m.Scope.USER_READ])
    http = wh.http()
    # A page session from a narrow token: the cookie is the token itself.
    http.cookies.set("dockyard_session", narrow.token or "")
    token = _csrf(http.get("/account").text)
    form: Any = {"csrf_token": token, "name": "wide", "lifetime": "1d", "scopes": ["workspace:delete"]}
    response = http.post("/account/tokens", data=form)
    assert response.status_code == 403
    assert "A token cannot have scopes its creator lacks." in response.text
    assert _field_error(response.text, "t-scopes") == "not granted to you: workspace:delete"
    assert "wide" not in [t.name for t in wh.admin.list_tokens("alice")]


def test_ssh_keys_are_added_with_messages_at_the_field_and_removed(wh: Harness) -> None:
    http = _logged_in(wh, "alice")
    alice = wh.user("alice")
    token = _csrf(http.get("/account").text)
    response = http.post(
        "/account/sshkeys",
        data={"csrf_token": token, "name": "laptop", "public_key": "ssh-ed25519 AAAAnotbase64"},
    )
    assert response.status_code == 422
    assert _field_error(response.text, "k-key").startswith("not a valid OpenSSH public key")
    assert 'value="laptop"' in response.text
    assert alice.list_ssh_keys() == []
    public = _public_key()
    response = http.post(
        "/account/sshkeys",
        data={"csrf_token": token, "name": "laptop", "public_key": public},
        follow_redirects=False,
    )
    assert response.status_code == 303
    (key,) = alice.list_ssh_keys()
    assert key.name == "laptop"
    response = http.post(
        f"/account/sshkeys/{key.id}/remove", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert alice.list_ssh_keys() == []


def test_members_get_403_on_every_admin_page_and_form(wh: Harness) -> None:
    http = _logged_in(wh, "mallory")
    bob = wh.user("bob")
    wh.template(name="py")
    wh.admin.create_template_version(
        "py", tar_gz({"dockyard.yaml": manifest_yaml(name="py", description="v2")})
    )
    token = _csrf(http.get("/account").text)
    for path in ("/admin", "/admin/users", "/admin/templates", "/admin/audit"):
        response = http.get(path)
        assert response.status_code == 403, path
    assert "Your role (member) has no admin pages." in http.get("/admin").text
    assert "Your role (member) does not allow user:admin." in http.get("/admin/users").text
    bob_id = wh.admin.get_user("bob").id
    response = http.post(f"/admin/users/{bob_id}", data={"csrf_token": token, "role": "owner"})
    assert response.status_code == 403
    response = http.post(f"/admin/users/{bob_id}", data={"csrf_token": token, "status": "suspended"})
    assert response.status_code == 403
    form = {"csrf_token": token, "username": "eve", "email": "eve@example.com", "password": "x" * 12}
    assert http.post("/admin/users", data=form).status_code == 403
    response = http.post("/admin/templates/py/activate", data={"csrf_token": token, "version": "v1"})
    assert response.status_code == 403
    assert wh.admin.get_user("bob").role == m.Role.MEMBER
    assert wh.admin.get_user("bob").status == m.UserStatus.ACTIVE
    assert bob.get_user("me").status == m.UserStatus.ACTIVE
    assert [u.username for u in wh.admin.list_users().users if u.username == "eve"] == []
    assert wh.admin.get_template("py").active_version is not None
    assert wh.admin.get_template("py").active_version.number == 2  # type: ignore[union-attr]


def test_admin_forms_refuse_without_the_csrf_token(wh: Harness) -> None:
    http = _logged_in(wh, "olive", role=m.Role.OWNER)
    wh.user("bob")
    wh.template(name="py")
    wh.admin.create_template_version(
        "py", tar_gz({"dockyard.yaml": manifest_yaml(name="py", description="v2")})
    )
    bob_id = wh.admin.get_user("bob").id
    response = http.post(f"/admin/users/{bob_id}", data={"role": "owner"})
    assert response.status_code == 403
    assert response.json()["message"] == "Missing or invalid CSRF token."
    response = http.post("/admin/templates/py/activate", data={"version": "v1", "csrf_token": "forged"})
    assert response.status_code == 403
    assert wh.admin.get_user("bob").role == m.Role.MEMBER
    assert wh.admin.get_template("py").active_version.number == 2  # type: ignore[union-attr]


def test_owner_manages_users_with_messages_at_the_fields(wh: Harness) -> None:
    http = _logged_in(wh, "olive", role=m.Role.OWNER)
    wh.user("bob")
    token = _csrf(http.get("/admin/users").text)
    form = {"csrf_token": token, "username": "Eve!", "email": "nope", "password": "short", "role": "member"}
    response = http.post("/admin/users", data=form)
    assert response.status_code == 422
    assert (
        _field_error(response.text, "u-email") == "String should match pattern &#39;^[^@\\s]+@[^@\\s]+$&#39;"
    )
    assert _field_error(response.text, "u-password") == "String should have at least 8 characters"
    assert 'value="Eve!"' in response.text
    assert "short" not in response.text  # a password is never echoed back
    form = {
        "csrf_token": token,
        "username": "bob",
        "email": "b2@example.com",
        "password": "x" * 12,
        "role": "member",
    }
    response = http.post("/admin/users", data=form)
    assert response.status_code == 409
    assert _field_error(response.text, "u-username") == "&#39;bob&#39; is taken"

    bob_id = wh.admin.get_user("bob").id
    response = http.post(
        f"/admin/users/{bob_id}", data={"csrf_token": token, "role": "template-admin"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert wh.admin.get_user("bob").role == m.Role.TEMPLATE_ADMIN
    response = http.post(
        f"/admin/users/{bob_id}", data={"csrf_token": token, "status": "suspended"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert wh.admin.get_user("bob").status == m.UserStatus.SUSPENDED
    # Suspending yourself is refused with the service's message, and changes nothing.
    olive_id = wh.admin.get_user("olive").id
    response = http.post(f"/admin/users/{olive_id}", data={"csrf_token": token, "status": "suspended"})
    assert response.status_code == 409
    assert "You cannot demote or suspend yourself." in response.text
    assert wh.admin.get_user("olive").status == m.UserStatus.ACTIVE


def test_template_admins_see_template_versions_only(wh: Harness) -> None:
    http = _logged_in(wh, "tina", role=m.Role.TEMPLATE_ADMIN)
    wh.template(name="py")
    wh.admin.create_template_version(
        "py", tar_gz({"dockyard.yaml": manifest_yaml(name="py", description="v2")})
    )
    response = http.get("/admin", follow_redirects=False)
    assert response.headers["location"] == "/admin/templates"
    assert http.get("/admin/audit").status_code == 403
    assert http.get("/admin/users").status_code == 403
    token = _csrf(http.get("/admin/templates").text)
    response = http.post("/admin/templates/py/activate", data={"csrf_token": token, "version": "v9"})
    assert response.status_code == 422
    assert "Version &#39;v9&#39; of template &#39;py&#39; not found." in response.text
    response = http.post(
        "/admin/templates/py/activate", data={"csrf_token": token, "version": "v1"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert wh.admin.get_template("py").active_version.number == 1  # type: ignore[union-attr]


def test_audit_filters_and_pages(wh: Harness) -> None:
    http = _logged_in(wh, "olive", role=m.Role.OWNER)
    for n in range(60):
        wh.admin.create_user(m.CreateUserRequest(username=f"u{n:02d}", email=f"u{n:02d}@example.com"))
    page = http.get("/admin/audit", params={"action": "user.create"})
    assert page.status_code == 200
    assert "page 1 of 2" in page.text
    assert page.text.count('data-field="action">user.create<') == 50
    second = http.get("/admin/audit", params={"action": "user.create", "page": 2})
    # 60 here plus the users the harness and the login made.
    assert (
        second.text.count('data-field="action">user.create<')
        == wh.admin.audit(action="user.create").count - 50
    )
    assert 'rel="prev"' in second.text
    assert "page 1 of 2" in http.get("/admin/audit", params={"action": "user.create", "page": "x"}).text
    bad = http.get("/admin/audit", params={"since": "yesterday", "action": "user."})
    assert bad.status_code == 422
    assert _field_error(bad.text, "a-since") == "&#39;yesterday&#39; is not a time like 2026-01-31T09:30"
    assert 'value="user."' in bad.text
    future = http.get("/admin/audit", params={"since": "2999-01-01T00:00"})
    assert "No entries match these filters." in future.text


def test_every_account_and_admin_route_needs_a_session(wh: Harness) -> None:
    from fastapi.routing import APIRoute

    from dockyard.web import account, admin

    http = wh.http()
    for router in (account.router, admin.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            path = route.path.replace("{ref}", "x").replace("{template}", "py")
            for method in route.methods:
                response = http.request(method, path, follow_redirects=False)
                assert response.status_code == 303, f"{method} {path}"
                back = path if method == "GET" else "/workspaces"
                assert response.headers["location"] == f"/login?next={back}"


def test_audit_time_range_and_workspace_filter(wh: Harness) -> None:
    http = _logged_in(wh, "olive", role=m.Role.OWNER)
    wh.template(name="py")
    alice = wh.user("alice")
    created = wh.await_build(
        alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="demo")).id, client=alice
    )
    alice.stop_workspace(created.id)
    past = http.get("/admin/audit", params={"until": "2000-01-01T00:00"})
    assert "No entries match these filters." in past.text
    window = {"since": "2000-01-01T00:00", "until": "2999-01-01T00:00", "workspace": "demo"}
    page = http.get("/admin/audit", params=window)
    expected = wh.admin.audit(resource_type="workspace", resource="demo")
    assert expected.count >= 2
    assert f">{expected.count} entries<" in page.text
    for entry in expected.audit_logs:
        assert f'id="audit-{entry.id}"' in page.text

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness


def _error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_create_and_list_users(h: Harness) -> None:
    user = h.admin.create_user(
        m.CreateUserRequest(
            username="alice", email="alice@example.com", password="long-enough", role=m.Role.TEMPLATE_ADMIN
        )
    )
    assert (user.username, user.role, user.status) == ("alice", m.Role.TEMPLATE_ADMIN, m.UserStatus.ACTIVE)
    listed = h.admin.list_users()
    assert (listed.count, [u.username for u in listed.users]) == (2, ["admin", "alice"])
    assert [u.username for u in h.admin.list_users(q="ali").users] == ["alice"]
    for ref in ("alice", user.id):
        assert h.admin.get_user(ref).id == user.id
    [entry] = h.admin.audit(action="user.create").audit_logs
    assert (entry.resource_name, entry.detail) == ("alice", {"role": "template-admin"})


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (
            {"username": "Bad Name", "email": "a@b.c"},
            "username",
            "'Bad Name' is not a valid name: use 1-32 characters from a-z, 0-9 and '-', not starting or ending with '-'",
        ),
        ({"username": "ok", "email": "nope"}, "email", "String should match pattern '^[^@\\s]+@[^@\\s]+$'"),
        (
            {"username": "ok", "email": "a@b.c", "password": "short"},
            "password",
            "String should have at least 8 characters",
        ),
        (
            {"username": "ok", "email": "a@b.c", "role": "god"},
            "role",
            "Input should be 'owner', 'template-admin' or 'member'",
        ),
        ({"username": "ok", "email": "a@b.c", "admin": True}, "admin", "unknown field"),
        ({"email": "a@b.c"}, "username", "is required"),
        ({"username": 5, "email": "a@b.c"}, "username", "Input should be a valid string"),
    ],
)
def test_user_validation(h: Harness, body: dict[str, Any], field: str, detail: str) -> None:
    response = h.admin.http.post("/api/v2/users", json=body)
    assert response.status_code == 422
    assert response.json()["validations"] == [{"field": field, "detail": detail}]
    assert h.admin.list_users().count == 1


def test_duplicate_user_is_409(h: Harness) -> None:
    h.admin.create_user(m.CreateUserRequest(username="alice", email="alice@example.com"))
    error = _error(
        lambda: h.admin.create_user(m.CreateUserRequest(username="alice", email="other@example.com"))
    )
    assert (error.status_code, error.message) == (409, "A user with this username already exists.")
    error = _error(
        lambda: h.admin.create_user(m.CreateUserRequest(username="al2", email="ALICE@example.com"))
    )
    assert (error.status_code, error.validations[0].field) == (409, "email")
    assert h.admin.list_users().count == 2


def test_members_see_only_themselves(h: Harness) -> None:
    alice = h.user("alice")
    h.user("bob")
    assert [u.username for u in alice.list_users().users] == ["alice"]
    assert alice.me().username == "alice"
    error = _error(lambda: alice.get_user("bob"))
    assert (error.status_code, error.message) == (404, "User 'bob' not found.")
    error = _error(lambda: alice.create_user(m.CreateUserRequest(username="eve", email="eve@example.com")))
    assert (error.status_code, error.message) == (403, "Your role (member) does not allow user:admin.")


def test_user_updates(h: Harness) -> None:
    alice = h.user("alice")
    alice.update_user("me", m.UpdateUserRequest(password="new-password-1"))
    assert h.client().login("alice", "new-password-1").user.username == "alice"
    error = _error(lambda: alice.update_user("me", m.UpdateUserRequest(role=m.Role.OWNER)))
    assert (error.status_code, error.message) == (403, "Only an owner can change role.")
    error = _error(lambda: alice.update_user("admin", m.UpdateUserRequest(email="x@y.z")))
    assert error.status_code == 404
    promoted = h.admin.update_user("alice", m.UpdateUserRequest(role=m.Role.TEMPLATE_ADMIN))
    assert promoted.role == m.Role.TEMPLATE_ADMIN
    # The role change applies to alice's existing token at once.
    h.template(name="py")
    alice.update_template("py", m.UpdateTemplateRequest(description="by alice"))
    error = _error(lambda: h.admin.update_user("admin", m.UpdateUserRequest(role=m.Role.MEMBER)))
    assert (error.status_code, error.message) == (409, "You cannot demote or suspend yourself.")


def test_token_lifecycle(h: Harness) -> None:
    before = datetime.now(UTC)
    created = h.admin.create_token(
        m.CreateTokenRequest(
            name="agent",
            lifetime="4h",
            scopes=[m.Scope.WORKSPACE_CREATE, m.Scope.TEMPLATE_USE],
            allow_list=["template:py"],
        )
    )
    assert created.key.startswith(f"dy_{created.id}_")
    assert created.scopes == [m.Scope.TEMPLATE_USE, m.Scope.WORKSPACE_CREATE]
    assert created.allow_list == ["template:py"]
    assert before + timedelta(hours=4) <= created.expires_at <= datetime.now(UTC) + timedelta(hours=4)
    listed = {t.name: t for t in h.admin.list_tokens()}
    assert set(listed) == {"admin", "agent"}
    assert "key" not in listed["agent"].model_dump()
    assert h.admin.get_token("agent").id == created.id
    h.admin.revoke_token(created.id)
    assert [t.name for t in h.admin.list_tokens()] == ["admin"]
    error = _error(lambda: h.admin.revoke_token(created.id))
    assert (error.status_code, error.message) == (404, f"Token {created.id!r} not found.")
    actions = [a.action for a in h.admin.audit(resource_type="token").audit_logs]
    assert actions == ["token.revoke", "token.create"]


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (
            {"name": "x", "lifetime": "forever"},
            "lifetime",
            "'forever' is not a duration (use e.g. 90s, 30m, 4h, 1h30m, 2d)",
        ),
        ({"name": "x", "lifetime": "10s"}, "lifetime", "must be at least 1m"),
        ({"name": "x", "lifetime": "400d"}, "lifetime", "must be at most 366d"),
        (
            {"name": "x", "scopes": ["root"]},
            "scopes.0",
            "Input should be 'all', 'user:read', 'user:write', "
            "'user:admin', 'template:read', 'template:use', 'template:write', 'workspace:read', 'workspace:create', "
            "'workspace:operate', 'workspace:delete', 'workspace:connect', 'audit:read', 'token:write' or "
            "'deployment:admin'",
        ),
        ({"name": "x", "scopes": []}, "scopes", "List should have at least 1 item after validation, not 0"),
        (
            {"name": "x", "allow_list": ["sandbox"]},
            "allow_list",
            "'sandbox' must name its kind: template:NAME or workspace:NAME (or an id)",
        ),
        (
            {"name": "x", "allow_list": ["template:py", "host:sandbox"]},
            "allow_list",
            "'host:sandbox' must name its kind: template:NAME or workspace:NAME (or an id)",
        ),
        (
            {"name": "x", "allow_list": ["workspace:"]},
            "allow_list",
            "'workspace:': the workspace name or id must be 1 to 64 characters",
        ),
        (
            {"name": "NO"},
            "name",
            "'NO' is not a valid name: use 1-32 characters from a-z, 0-9 and '-', not starting or ending with '-'",
        ),
    ],
)
def test_token_validation(h: Harness, body: dict[str, Any], field: str, detail: str) -> None:
    response = h.admin.http.post("/api/v2/users/me/tokens", json=body)
    assert response.status_code == 422
    assert response.json()["validations"] == [{"field": field, "detail": detail}]
    assert [t.name for t in h.admin.list_tokens()] == ["admin"]


def test_duplicate_token_name_is_409(h: Harness) -> None:
    h.admin.create_token(m.CreateTokenRequest(name="ci"))
    error = _error(lambda: h.admin.create_token(m.CreateTokenRequest(name="ci")))
    assert (error.status_code, error.message) == (409, "A token named 'ci' already exists.")


def test_tokens_of_other_users(h: Harness) -> None:
    alice = h.user("alice")
    h.user("bob")
    error = _error(lambda: alice.list_tokens("bob"))
    assert (error.status_code, error.message) == (404, "User 'bob' not found.")
    error = _error(lambda: alice.revoke_token("t1", user="bob"))
    assert error.status_code == 404
    # An owner can mint and revoke tokens for others (e.g. for a CI system).
    minted = h.admin.create_token(m.CreateTokenRequest(name="ci-bot", lifetime="1h"), user="bob")
    assert h.client(minted.key).me().username == "bob"
    h.admin.revoke_token("ci-bot", user="bob")
    assert _error(h.client(minted.key).me).status_code == 401


def test_audit_is_owner_only_and_filterable(h: Harness) -> None:
    h.template(name="py")
    h.admin.update_template("py", m.UpdateTemplateRequest(description="x"))
    member = h.user("alice")
    error = _error(member.audit)
    assert (error.status_code, error.message) == (403, "Your role (member) does not allow audit:read.")
    admin_as_tadmin = h.user("tadmin", role=m.Role.TEMPLATE_ADMIN)
    assert _error(admin_as_tadmin.audit).status_code == 403
    everything = h.admin.audit()
    assert everything.count == len(everything.audit_logs)
    template_actions = [a.action for a in h.admin.audit(action="template.").audit_logs]
    assert template_actions == ["template.update", "template.create"]
    entry = h.admin.audit(action="template.update").audit_logs[0]
    assert (entry.username, entry.resource_type, entry.resource_name, entry.detail) == (
        "admin",
        "template",
        "py",
        {"description": "x"},
    )
    assert entry.ip == "testclient"
    assert h.admin.audit(since=datetime.now(UTC) + timedelta(hours=1)).count == 0
    assert h.admin.audit(user="alice").count == 0
    page = h.admin.audit(limit=1, offset=1)
    assert (len(page.audit_logs), page.count) == (1, everything.count)
    response = h.admin.http.get("/api/v2/audit", params={"since": "0001-01-01T00:00:00+14:00"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v2/users/login", {"username": "a\u0000b", "password": "x"}, "username"),
        ("PATCH", "/api/v2/users/me", {"email": "a\u0000@b.c"}, "email"),
        (
            "POST",
            "/api/v2/users/me/tokens",
            {"name": "ok", "allow_list": ["template:a\u0000"]},
            "allow_list.0",
        ),
    ],
)
def test_nul_characters_in_bodies_are_refused(
    h: Harness, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = h.admin.http.request(method, path, json=body)
    assert response.status_code == 422
    assert response.json()["validations"] == [{"field": field, "detail": "NUL characters are not allowed"}]


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/api/v2/users/a%00b", "path"),
        ("/api/v2/audit?action=x%00", "query"),
        ("/api/v2/templates/%00", "path"),
    ],
)
def test_nul_characters_in_urls_are_refused(h: Harness, path: str, where: str) -> None:
    response = h.admin.http.get(path)
    assert response.status_code == 400
    assert response.json()["message"] == f"NUL characters are not allowed in the request {where}."

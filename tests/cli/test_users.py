from __future__ import annotations

import json

import pytest

from dockyard.cli import users
from dockyard_sdk import models as m
from tests.cli.conftest import Cli, Golden
from tests.harness import Harness


def _can_log_in(h: Harness, username: str, password: str) -> bool:
    return h.client().login(username, password).user.username == username


def test_create_with_password(logged_in: Cli, h: Harness) -> None:
    result = logged_in.ok("users", "create", "bob", "--email", "bob@example.com", "--password", "s3cret-pass")

    assert (result.stdout, result.stderr) == ("", "Created user bob (member)\n")
    bob = h.admin.get_user("bob")
    assert (bob.email, bob.role, bob.status) == ("bob@example.com", m.Role.MEMBER, m.UserStatus.ACTIVE)
    assert _can_log_in(h, "bob", "s3cret-pass")


def test_create_prompts_for_the_password_twice(logged_in: Cli, h: Harness) -> None:
    result = logged_in.ok(
        "users", "create", "carol", "--email", "carol@example.com", "--role", "template-admin",
        input="long-password\nlong-password\n",
    )  # fmt: skip

    assert result.stderr == "Password:Repeat for confirmation:Created user carol (template-admin)\n"
    assert h.admin.get_user("carol").role == m.Role.TEMPLATE_ADMIN
    assert _can_log_in(h, "carol", "long-password")


def test_create_json_is_the_user_model(logged_in: Cli, h: Harness) -> None:
    result = logged_in.ok(
        "users", "create", "dave", "--email", "dave@example.com", "--password", "password1",
        "--role", "owner", "-o", "json",
    )  # fmt: skip
    assert m.User.model_validate_json(result.stdout) == h.admin.get_user("dave")
    assert result.stderr == ""


def test_create_checks_options_before_prompting(logged_in: Cli, h: Harness) -> None:
    result = logged_in("users", "create", "Eve", "--email", "not-an-email")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: Invalid request.\n"
        "  USERNAME: 'Eve' is not a valid name: use 1-32 characters from a-z, 0-9 and '-', "
        "not starting or ending with '-'\n"
        "  --email: String should match pattern '^[^@\\s]+@[^@\\s]+$'\n"
    )
    assert [u.username for u in h.admin.list_users().users] == ["admin"]


def test_create_rejects_a_short_password(logged_in: Cli) -> None:
    result = logged_in("users", "create", "eve", "--email", "eve@example.com", "--password", "short")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: Invalid request.\n  --password: String should have at least 8 characters\n",
    )


def test_create_duplicate_is_an_error(logged_in: Cli, h: Harness) -> None:
    h.user("alice")
    result = logged_in("users", "create", "alice", "--email", "other@example.com", "--password", "password1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert h.admin.get_user("alice").email == "alice@example.com"


def test_member_cannot_create_users(cli: Cli, h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    cli.login(alice.token)

    result = cli("users", "create", "mallory", "--email", "m@example.com", "--password", "password1")

    assert result.exit_code == 1
    assert result.stderr.endswith("\nhint: Your role or your token's scopes do not allow this.\n")
    assert [u.username for u in h.admin.list_users().users] == ["admin", "alice"]


def test_list_table(logged_in: Cli, h: Harness, golden: Golden) -> None:
    h.user("alice")
    h.user("bob", role=m.Role.TEMPLATE_ADMIN)
    golden("users_list", logged_in, "users", "list")


def test_list_json_and_search(logged_in: Cli, h: Harness, golden: Golden) -> None:
    h.user("alice")
    h.user("bob")

    result = golden("users_list_search_json", logged_in, "users", "list", "--search", "ali", "-o", "json")

    assert json.loads(result.stdout) == h.admin.list_users(q="ali").model_dump(mode="json")


def test_list_follows_pages(logged_in: Cli, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("u1", "u2", "u3"):
        h.user(name)
    monkeypatch.setattr(users, "_PAGE", 2)

    shown = m.UserList.model_validate_json(logged_in.ok("users", "list", "-o", "json").stdout)

    assert [u.username for u in shown.users] == ["admin", "u1", "u2", "u3"]
    assert shown.count == 4

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dockyard_sdk import models as m
from tests.cli.conftest import Cli, Golden
from tests.harness import Harness


def test_create_prints_only_the_key_on_stdout(logged_in: Cli, h: Harness) -> None:
    result = logged_in.ok("tokens", "create", "ci", "--lifetime", "4h", "--scope", "template:read")

    key = result.stdout.removesuffix("\n")
    assert "\n" not in key
    token = h.admin.get_token("ci")
    assert key.startswith(f"dy_{token.id}_")
    assert result.stderr == (
        f"Created token ci ({token.id}), expires {token.expires_at:%Y-%m-%dT%H:%M}Z\n"
        "warning: store the token now: it will not be shown again\n"
    )
    assert token.scopes == [m.Scope.TEMPLATE_READ]
    assert abs(token.expires_at - datetime.now(UTC) - timedelta(hours=4)) < timedelta(minutes=1)
    assert [t.name for t in h.client(key).list_templates()] == []


def test_create_json_holds_the_key(logged_in: Cli, h: Harness) -> None:
    h.template(name="py")
    h.template(name="go")
    result = logged_in.ok(
        "tokens", "create", "agent", "--scope", "workspace:create", "--scope", "template:read",
        "--allow", "py", "-o", "json",
    )  # fmt: skip

    created = m.CreatedToken.model_validate_json(result.stdout)
    assert result.stderr == ""
    assert (created.name, created.scopes, created.allow_list) == (
        "agent",
        [m.Scope.TEMPLATE_READ, m.Scope.WORKSPACE_CREATE],
        ["template:py"],
    )
    assert h.admin.get_token("agent") == m.ApiToken.model_validate(created.model_dump(exclude={"key"}))
    assert [t.name for t in h.client(created.key).list_templates()] == ["py"]


def test_create_checks_options_before_sending(logged_in: Cli, h: Harness) -> None:
    result = logged_in("tokens", "create", "Bad Name", "--lifetime", "10s")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Invalid request.\n"
        "  NAME: 'Bad Name' is not a valid name: use 1-32 characters from a-z, 0-9 and '-', "
        "not starting or ending with '-'\n"
        "  --lifetime: must be at least 1m\n"
    )
    assert len(logged_in.connections) == 1  # the login's
    assert [t.name for t in h.admin.list_tokens()] == ["admin"]


def test_allow_entries_name_their_kind(logged_in: Cli, h: Harness) -> None:
    result = logged_in.ok(
        "tokens", "create", "typed", "--allow", "py", "--allow", "workspace:dev", "-o", "json"
    )  # fmt: skip
    # A bare NAME keeps meaning the template NAME; typed entries go as they are.
    assert m.CreatedToken.model_validate_json(result.stdout).allow_list == ["template:py", "workspace:dev"]
    refused = logged_in("tokens", "create", "odd", "--allow", "host:dev")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: Invalid request.\n"
        "  --allow: 'host:dev' must name its kind: template:NAME or workspace:NAME (or an id)\n"
    )
    assert "odd" not in [t.name for t in h.admin.list_tokens()]


def test_create_rejects_an_unknown_scope(logged_in: Cli) -> None:
    result = logged_in("tokens", "create", "ci", "--scope", "everything")
    assert result.exit_code == 2
    assert "everything" in result.stderr


def test_create_duplicate_name_is_a_conflict(logged_in: Cli, golden: Golden) -> None:
    logged_in.ok("tokens", "create", "ci")
    golden("tokens_create_conflict", logged_in, "tokens", "create", "ci")


def test_create_for_another_user(logged_in: Cli, h: Harness) -> None:
    h.user("alice")
    key = logged_in.ok("tokens", "create", "laptop", "--user", "alice").stdout.strip()
    assert h.client(key).me().username == "alice"
    assert "laptop" in [t.name for t in h.admin.list_tokens("alice")]


def test_member_cannot_create_tokens_for_others(cli: Cli, h: Harness) -> None:
    alice = h.user("alice")
    h.user("bob")
    assert alice.token is not None
    cli.login(alice.token)

    result = cli("tokens", "create", "sneaky", "--user", "bob")

    assert result.exit_code == 1
    assert result.stderr == "error: User 'bob' not found.\n"
    assert "sneaky" not in [t.name for t in h.admin.list_tokens("bob")]


def test_list_table(logged_in: Cli, h: Harness, golden: Golden) -> None:
    logged_in.ok("tokens", "create", "ci", "--scope", "template:read", "--scope", "workspace:read")
    logged_in.ok("tokens", "create", "agent", "--scope", "workspace:create", "--allow", "py", "--allow", "go")
    ids = {t.id: f"<{t.name.upper()}_ID>" for t in h.admin.list_tokens()}

    golden("tokens_list", logged_in, "tokens", "list", replace=ids)


def test_list_json_is_the_api_json(logged_in: Cli, h: Harness) -> None:
    logged_in.ok("tokens", "create", "ci")
    shown = json.loads(logged_in.ok("tokens", "list", "-o", "json").stdout)
    assert shown == [t.model_dump(mode="json") for t in h.admin.list_tokens()]
    assert "key" not in shown[0]


def test_list_for_another_user(logged_in: Cli, h: Harness) -> None:
    h.user("alice")
    shown = json.loads(logged_in.ok("tokens", "list", "--user", "alice", "-o", "json").stdout)
    assert [t["name"] for t in shown] == [t.name for t in h.admin.list_tokens("alice")]


def test_revoke_by_name_and_by_id(logged_in: Cli, h: Harness) -> None:
    first = logged_in.ok("tokens", "create", "one").stdout.strip()
    logged_in.ok("tokens", "create", "two")
    two = h.admin.get_token("two")

    by_name = logged_in.ok("tokens", "revoke", "one")
    by_id = logged_in.ok("tokens", "revoke", two.id)

    assert (by_name.stdout, by_name.stderr) == ("", "Revoked token one\n")
    assert by_id.stderr == f"Revoked token {two.id}\n"
    assert [t.name for t in h.admin.list_tokens()] == ["admin"]
    assert logged_in("tokens", "list").exit_code == 0
    result = h.client(first).http.get("/api/v2/users/me")
    assert result.status_code == 401


def test_revoke_unknown_token(logged_in: Cli) -> None:
    result = logged_in("tokens", "revoke", "nope")
    assert (result.exit_code, result.stderr) == (1, "error: Token 'nope' not found.\n")


def test_revoke_another_users_token(logged_in: Cli, h: Harness) -> None:
    h.user("alice")
    name = h.admin.list_tokens("alice")[0].name
    logged_in.ok("tokens", "revoke", name, "--user", "alice")
    assert h.admin.list_tokens("alice") == []

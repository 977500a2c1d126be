"""`dockyard git-auth add | list | remove` and `dockyard webhooks add | list | remove`."""

from __future__ import annotations

import json

from tests.cli.conftest import Cli
from tests.harness import Harness


def test_git_auth_add_reads_the_token_from_stdin_and_never_shows_it(logged_in: Cli, h: Harness) -> None:
    added = logged_in.ok("git-auth", "add", "GitHub.com", "--username", "bot", input="ghp_secret123\n")

    assert added.stdout == ""
    assert added.stderr == "Registered a git credential for github.com (user bot)\n"
    listed = logged_in.ok("git-auth", "list", "-o", "json")
    assert [(c["host"], c["username"]) for c in json.loads(listed.stdout)] == [("github.com", "bot")]
    assert "ghp_secret123" not in listed.stdout
    table = logged_in.ok("git-auth", "list").stdout
    assert table.split("\n")[0].split() == ["HOST", "USERNAME", "CREATED", "LAST", "USED"]
    logged_in.ok("git-auth", "remove", "github.com")
    assert h.admin.list_git_auth() == []


def test_git_auth_refusals_name_the_problem(logged_in: Cli, h: Harness) -> None:
    empty = logged_in("git-auth", "add", "github.com", input="\n")
    assert empty.exit_code == 1
    assert empty.stderr.startswith("error: no token or password given")
    bad = logged_in("git-auth", "add", "-oProxyCommand=x", input="t\n")
    assert bad.exit_code != 0
    assert "HOST" in bad.stderr
    missing = logged_in("git-auth", "remove", "nowhere.example")
    assert missing.exit_code == 1
    assert "error: No git credential for 'nowhere.example'." in missing.stderr
    assert h.admin.list_git_auth() == []


def test_webhooks_add_prints_only_the_secret(logged_in: Cli, h: Harness) -> None:
    added = logged_in.ok("webhooks", "add", "http://127.0.0.1:9/hook")

    secret = added.stdout.removesuffix("\n")
    assert secret.startswith("whsec_")
    hook = h.admin.list_webhooks()[0]
    assert added.stderr == (
        f"Added webhook {hook.id} for http://127.0.0.1:9/hook\n"
        "warning: store the secret now: it will not be shown again\n"
    )
    assert secret not in logged_in.ok("webhooks", "list", "-o", "json").stdout
    bad = logged_in("webhooks", "add", "ftp://x.example/")
    assert bad.exit_code != 0
    assert "URL" in bad.stderr
    logged_in.ok("webhooks", "remove", hook.id)
    assert h.admin.list_webhooks() == []

"""`dockyard git-auth add | list | remove` and `dockyard webhooks add | list | remove`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.conftest import Cli
from tests.gitauth.test_git_credentials import GIT_MANIFEST, PASSWORD, USER, git
from tests.gitserver import serve
from tests.harness import Harness
from tests.live import free_port


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


def test_create_says_which_credential_is_missing(logged_in: Cli, h: Harness, tmp_path: Path) -> None:
    # A real git server on loopback that wants a credential nobody registered.
    root = tmp_path / "git"
    root.mkdir()
    git("init", "--bare", "--initial-branch=main", str(root / "app.git"))
    port = free_port()
    server, _app = serve(str(root), host="127.0.0.1", port=port, user=USER, password=PASSWORD)
    try:
        h.template({"dockyard.yaml": yaml.safe_dump(GIT_MANIFEST, sort_keys=False)})
        result = logged_in(
            "create", "nocred", "--template", "gitws", "--param", f"repo=http://127.0.0.1:{port}/app.git"
        )  # fmt: skip
    finally:
        server.shutdown()

    assert result.exit_code == 1
    assert (
        f"error: nocred did not start: cloning http://127.0.0.1:{port}/app.git failed: dockyard-agent: admin has "
        f"no git credential for 127.0.0.1:{port}; run `dockyard git-auth add 127.0.0.1:{port}` to register a "
        "credential for it" in " ".join(result.stderr.split())
    )
    assert "Last lines of the clone's output:" in result.stderr

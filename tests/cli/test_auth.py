from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest

from dockyard.cli import config
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.cli.conftest import URL, Cli
from tests.harness import Harness

NOT_LOGGED_IN = "error: not logged in\nhint: run `dockyard login URL`\n"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token_id(key: str) -> str:
    return key.split("_")[1]


def test_login_with_token_stores_credentials_0600(cli: Cli) -> None:
    result = cli.ok("login", URL + "/", "--token", cli.admin_token)

    assert (result.stdout, result.stderr) == ("", f"Logged in to {URL} as admin\n")
    assert json.loads(cli.config_file.read_text()) == {"url": URL, "token": cli.admin_token}
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    # Login also fetched an SSH certificate (and made the key pair it certifies).
    assert sorted(p.name for p in cli.config_file.parent.iterdir()) == ["config.json", "ssh"]


def test_login_tightens_an_existing_config_folder(cli: Cli) -> None:
    cli.config_file.parent.mkdir(parents=True, mode=0o755)
    cli.config_file.parent.chmod(0o755)
    cli.login()
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700


def test_login_with_password_prompt_stores_a_session_token(cli: Cli, h: Harness) -> None:
    password = (h.data_dir / "admin-password").read_text().strip()

    result = cli.ok("login", URL, input=f"admin\n{password}\n")

    # CliRunner echoes what is typed to stdout; a terminal echoes the username and getpass writes to the tty.
    assert result.stdout == " admin\n \n"
    assert result.stderr == f"Username:Password:Logged in to {URL} as admin\n"
    stored = json.loads(cli.config_file.read_text())
    assert stored["url"] == URL
    assert stored["token"] != cli.admin_token
    sessions = [t for t in h.admin.list_tokens() if t.login_type == "password"]
    assert len(sessions) == 1
    assert stored["token"].startswith(f"dy_{sessions[0].id}_")
    assert m.User.model_validate_json(cli.ok("whoami", "-o", "json").stdout).username == "admin"


def test_login_with_wrong_password_stores_nothing(cli: Cli) -> None:
    result = cli("login", URL, input="admin\nwrong-password\n")

    assert result.exit_code == 1
    assert result.stderr == "Username:Password:error: Incorrect username or password.\n"
    assert not cli.config_file.exists()


def test_login_with_bad_token_stores_nothing(cli: Cli) -> None:
    result = cli("login", URL, "--token", "dy_nope_nope")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Invalid API token.\n"
        "  It may have been revoked; run `dockyard login`.\n"
        "hint: Run `dockyard login` (or set DOCKYARD_TOKEN) with a valid token.\n"
    )
    assert not cli.config_file.exists()


def test_login_reads_token_from_stdin(cli: Cli) -> None:
    cli.ok("login", URL, "--token", "-", input=cli.admin_token + "\n")
    assert json.loads(cli.config_file.read_text())["token"] == cli.admin_token


def test_login_needs_a_scheme(cli: Cli) -> None:
    result = cli("login", "testserver", "--token", cli.admin_token)
    assert result.exit_code == 2
    assert "must start with http:// or https://" in result.stderr
    assert not cli.config_file.exists()


def test_whoami_table(logged_in: Cli) -> None:
    result = logged_in.ok("whoami")
    assert result.stdout == (
        "USERNAME  EMAIL                 ROLE   URL\n"
        "admin     admin@dockyard.local  owner  http://testserver\n"
    )
    assert result.stderr == ""


def test_whoami_json_is_the_user_model(logged_in: Cli, h: Harness) -> None:
    shown = m.User.model_validate_json(logged_in.ok("whoami", "--output", "json").stdout)
    assert shown.model_dump(exclude={"last_seen_at"}) == h.admin.me().model_dump(exclude={"last_seen_at"})


def test_not_logged_in(cli: Cli) -> None:
    for args in (["whoami"], ["templates", "list"], ["tokens", "list"], ["users", "list", "-o", "json"]):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", NOT_LOGGED_IN), args
    assert cli.connections == []


def test_environment_overrides_stored_credentials(
    logged_in: Cli, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    monkeypatch.setenv("DOCKYARD_TOKEN", alice.token)

    assert m.User.model_validate_json(logged_in.ok("whoami", "-o", "json").stdout).username == "alice"
    assert logged_in.connections[-1] == (URL, alice.token)

    monkeypatch.setenv("DOCKYARD_URL", "http://elsewhere:3000/")
    logged_in.ok("whoami")
    assert logged_in.connections[-1] == ("http://elsewhere:3000", alice.token)


def test_environment_alone_is_enough(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_URL", URL)
    monkeypatch.setenv("DOCKYARD_TOKEN", cli.admin_token)
    assert "admin" in cli.ok("whoami").stdout
    assert not cli.config_file.exists()


def test_stored_token_is_not_sent_to_another_url(logged_in: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_URL", "http://elsewhere:3000")
    result = logged_in("whoami")
    assert (result.exit_code, result.stderr) == (1, NOT_LOGGED_IN)
    assert logged_in.connections == [(URL, logged_in.admin_token)]


def test_login_warns_when_the_environment_overrides(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_TOKEN", "dy_x_y")
    result = cli.ok("login", URL, "--token", cli.admin_token)
    assert result.stderr == (
        f"Logged in to {URL} as admin\n"
        f"warning: DOCKYARD_URL/DOCKYARD_TOKEN in the environment override {cli.config_file}\n"
    )


def test_logout_revokes_the_session_and_forgets_it(cli: Cli, h: Harness) -> None:
    password = (h.data_dir / "admin-password").read_text().strip()
    cli.ok("login", URL, input=f"admin\n{password}\n")
    session = json.loads(cli.config_file.read_text())["token"]

    result = cli.ok("logout")

    assert (result.stdout, result.stderr) == ("", f"Logged out of {URL}\n")
    assert not cli.config_file.exists()
    assert [t.login_type for t in h.admin.list_tokens()] == ["token"]
    with pytest.raises(ApiError) as info:
        h.client(session).me()
    assert info.value.status_code == 401
    assert (cli("whoami").exit_code, cli("whoami").stderr) == (1, NOT_LOGGED_IN)


def test_logout_keeps_api_tokens_working(logged_in: Cli, h: Harness) -> None:
    logged_in.ok("logout")
    assert h.admin.me().username == "admin"


def test_logout_when_server_is_unreachable_still_forgets(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    config.save(config.Credentials(url=url, token="dy_a_b"))
    monkeypatch.setattr(config, "client_factory", config._default_client)

    result = cli.ok("logout")

    assert result.stderr == (
        f"warning: cannot reach {url}; the session was only forgotten locally\nLogged out of {url}\n"
    )
    assert not cli.config_file.exists()


def test_logout_with_a_revoked_token_still_forgets(cli: Cli, h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    cli.login(alice.token)
    h.admin.revoke_token(_token_id(alice.token), user="alice")

    assert cli.ok("logout").stderr == f"Logged out of {URL}\n"
    assert not cli.config_file.exists()


def test_login_again_ends_the_previous_session(cli: Cli, h: Harness) -> None:
    password = (h.data_dir / "admin-password").read_text().strip()
    cli.ok("login", URL, input=f"admin\n{password}\n")
    first = json.loads(cli.config_file.read_text())["token"]

    cli.ok("login", URL, input=f"admin\n{password}\n")

    second = json.loads(cli.config_file.read_text())["token"]
    sessions = [t.id for t in h.admin.list_tokens() if t.login_type == "password"]
    assert sessions == [_token_id(second)]
    assert _token_id(first) != _token_id(second)


def test_logout_removes_an_unreadable_config(cli: Cli) -> None:
    cli.config_file.parent.mkdir(parents=True)
    cli.config_file.write_text("{not json")

    result = cli.ok("logout")

    assert result.stderr == f"Removed the unreadable {cli.config_file}\n"
    assert not cli.config_file.exists()


def test_logout_warns_about_a_token_in_the_environment(
    logged_in: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_TOKEN", logged_in.admin_token)
    assert logged_in.ok("logout").stderr == (
        f"Logged out of {URL}\nwarning: DOCKYARD_TOKEN is still set in the environment\n"
    )


def test_logout_when_not_logged_in(cli: Cli) -> None:
    result = cli.ok("logout")
    assert (result.stdout, result.stderr) == ("", "Not logged in.\n")


def test_unreachable_server(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(config, "client_factory", config._default_client)
    monkeypatch.setenv("DOCKYARD_URL", url)
    monkeypatch.setenv("DOCKYARD_TOKEN", "dy_a_b")

    result = cli("templates", "list")

    assert result.exit_code == 1
    assert result.stdout == ""
    first, reason, last = result.stderr.splitlines()
    assert first == f"error: cannot reach Dockyard at {url}"
    assert reason.startswith("  ")
    assert "refused" in reason.lower()
    assert last == "hint: check the URL and that the server is running"


def test_revoked_token_gets_the_login_hint(cli: Cli, h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    cli.login(alice.token)
    h.admin.revoke_token(_token_id(alice.token), user="alice")

    result = cli("whoami")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Invalid API token.\n"
        "  It may have been revoked; run `dockyard login`.\n"
        "hint: Run `dockyard login` (or set DOCKYARD_TOKEN) with a valid token.\n"
    )


def test_unreadable_config_is_reported(cli: Cli) -> None:
    cli.config_file.parent.mkdir(parents=True)
    cli.config_file.write_text("{not json")

    result = cli("whoami")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot read {cli.config_file}: ")
    assert result.stderr.endswith("\nhint: run `dockyard login URL` to write it again\n")


def test_relative_xdg_config_home_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.config_path() == tmp_path / ".config" / "dockyard" / "config.json"


def test_login_with_a_narrow_token(cli: Cli, h: Harness) -> None:
    ci = h.user("ci", scopes=[m.Scope.TEMPLATE_READ])
    assert ci.token is not None

    result = cli.ok("login", URL, "--token", ci.token)

    assert result.stderr == f"Logged in to {URL} as ci\n"
    assert json.loads(cli.config_file.read_text())["token"] == ci.token
    assert cli.ok("templates", "list").stderr.startswith("No templates yet")

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest
import typer

from dockyard.cli import auth, config
from dockyard.cli.main import app
from dockyard_sdk import Client
from tests.cli.conftest import URL, Cli, Golden


def test_help(cli: Cli, golden: Golden) -> None:
    golden("help", cli, "--help")


def test_templates_push_help(cli: Cli, golden: Golden) -> None:
    golden("templates_push_help", cli, "templates", "push", "--help")


def test_no_arguments_shows_help(cli: Cli) -> None:
    result = cli()
    assert result.exit_code == 2
    assert "Usage: dockyard [OPTIONS] COMMAND [ARGS]..." in result.output


def test_tracebacks_never_show_locals() -> None:
    # Locals would print tokens and passwords into bug reports.
    assert app.pretty_exceptions_show_locals is False


def _broken(url: str, token: str | None) -> Client:
    raise RuntimeError("boom")


def test_unexpected_error_is_one_line_without_debug(logged_in: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "client_factory", _broken)

    result = logged_in("templates", "list")

    assert (result.exit_code, result.stdout) == (1, "")
    assert (
        result.stderr
        == "error: unexpected RuntimeError: boom\nhint: run again with --debug for a traceback\n"
    )


def test_debug_lets_unexpected_errors_through(logged_in: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "client_factory", _broken)

    result = logged_in("--debug", "templates", "list")

    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert result.stderr == ""


def test_debug_names_the_failing_request(logged_in: Cli) -> None:
    result = logged_in("--debug", "templates", "show", "nope")
    assert result.exit_code == 1
    assert result.stderr == (
        f"debug: GET {URL}/api/v2/templates/nope -> 404\nerror: Template 'nope' not found.\n"
    )


def test_ctrl_c_exits_130(logged_in: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(url: str, token: str | None) -> Client:
        raise KeyboardInterrupt

    monkeypatch.setattr(config, "client_factory", interrupted)
    assert logged_in("templates", "list").exit_code == 130


def test_ctrl_c_at_a_prompt_exits_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def prompt(*args: object, **kwargs: object) -> NoReturn:
        # What a prompt does on Ctrl-C: Abort, with the KeyboardInterrupt as its context.
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise typer.Abort() from None

    monkeypatch.setattr(auth.typer, "prompt", prompt)
    result = cli("login", URL)
    assert result.exit_code == 130
    assert not cli.config_file.exists()


def test_end_of_input_at_a_prompt_aborts(cli: Cli) -> None:
    result = cli("login", URL, input="")
    assert result.exit_code == 1
    assert not cli.config_file.exists()


def test_server_commands_keep_their_tracebacks(cli: Cli, tmp_path: Path) -> None:
    result = cli("db", "migrate", "--data-dir", str(tmp_path / "data"), "--database-url", "nosuchdb://x")

    assert result.exit_code == 1
    assert result.exception is not None
    assert not isinstance(result.exception, SystemExit)
    assert "error: unexpected" not in result.stderr


def test_a_bad_warm_network_size_stops_the_server_naming_the_option(cli: Cli, tmp_path: Path) -> None:
    result = cli("server", "--data-dir", str(tmp_path), "--warm-networks", "egress=2")

    assert result.exit_code == 2
    assert "--warm-networks" in result.stderr
    assert "unknown network class 'egress'" in " ".join(result.stderr.split())


@pytest.mark.parametrize("command", ["server", "provisioner"])
def test_a_bad_outbound_range_stops_the_server_naming_the_option(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    # The provisioner reads dev container plans again at start, OCI features included.
    result = cli(command, "--data-dir", str(tmp_path), "--outbound-deny", "127.0.0.0/8,intranet")

    assert result.exit_code == 2
    assert "--outbound-deny" in result.stderr
    assert "'intranet' is not an address range such as 127.0.0.0/8" in " ".join(result.stderr.split())

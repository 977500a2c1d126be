"""What the hot commands import, as a regression guard for start-up time (not a timing test).

`dockyard --help`, `dockyard list` and the ProxyCommand `dockyard ssh --stdio` run in a fresh interpreter with
`-X importtime`, which names every module imported; none of the server's libraries may appear, and the
ProxyCommand loads none of the CLI's own heavy ones either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_group

from dockyard.cli.main import COMMANDS, app, load
from tests.live import free_port

SERVER_LIBRARIES = {
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "docker",
    "asyncssh",
    "uvicorn",
    "argon2",
}
# click comes only with httpx's own command line tool (Typer has its own copy); websockets only with a stream,
# cryptography with an SSH key, yaml with a template push.
NEEDLESS = {"click", "websockets", "cryptography", "yaml"}
CLI_LIBRARIES = {"typer", "pydantic", "httpx", "rich"}
ENTRY = "import sys; from dockyard.cli.entry import main; sys.argv[0] = 'dockyard'; main()"


def imported(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[set[str], int]:
    """The modules (and their top-level packages) a fresh `dockyard ARGS` imports, and its exit code."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", ENTRY, *args],
        capture_output=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            **(env or {}),
        },
        stdin=subprocess.DEVNULL,
    )
    names = set()
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name)
            names.add(name.split(".")[0])
    return names, result.returncode


@pytest.mark.parametrize("args", [("--help",), ("list",), ("create", "--help")])
def test_client_commands_import_nothing_of_the_server(args: tuple[str, ...], tmp_path: Path) -> None:
    # An unreachable server: `list` gets as far as its request, which imports what a request needs.
    env = {"DOCKYARD_URL": f"http://127.0.0.1:{free_port()}", "DOCKYARD_TOKEN": "dy_x_y"}
    names, code = imported(*args, tmp_path=tmp_path, env=env)
    assert code == (1 if args == ("list",) else 0)
    assert "typer" in names  # the import trace was read at all
    assert names & SERVER_LIBRARIES == set()
    assert names & NEEDLESS == set()


def test_waiting_commands_load_rich_only_for_a_terminal(tmp_path: Path) -> None:
    env = {"DOCKYARD_URL": f"http://127.0.0.1:{free_port()}", "DOCKYARD_TOKEN": "dy_x_y"}
    names, code = imported("stop", "dev", tmp_path=tmp_path, env=env)
    assert code == 1
    assert "pydantic" in names
    assert names & ({"rich"} | SERVER_LIBRARIES | NEEDLESS) == set()


def test_the_proxy_command_imports_only_the_standard_library(tmp_path: Path) -> None:
    env = {"DOCKYARD_URL": f"http://127.0.0.1:{free_port()}", "DOCKYARD_TOKEN": "dy_x_y"}
    names, code = imported(
        "ssh", "--stdio", "--host-prefix", "dockyard.", "dockyard.dev", tmp_path=tmp_path, env=env
    )
    assert code == 1
    assert "dockyard.cli.proxy" in names
    assert names & (SERVER_LIBRARIES | NEEDLESS | CLI_LIBRARIES) == set()


def test_the_proxy_command_reports_an_unreachable_server_like_the_cli(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, "ssh", "--stdio", "dev"],
        capture_output=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DOCKYARD_URL": url,
            "DOCKYARD_TOKEN": "dy_x_y",
        },
        stdin=subprocess.DEVNULL,
    )
    lines = result.stderr.decode().splitlines()
    assert (result.returncode, result.stdout) == (1, b"")
    assert lines[0] == f"error: cannot reach Dockyard at {url}"
    assert lines[-1] == "hint: check the URL and that the server is running"


def test_the_proxy_command_without_credentials(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, "ssh", "--stdio", "dev"],
        capture_output=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        b"error: not logged in\nhint: run `dockyard login URL`\n",
    )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_help_table_matches_each_command(name: str) -> None:
    # The table lets `--help` list commands without importing them; it must say what the command itself says.
    command = load(name, COMMANDS[name])
    own = " ".join((command.short_help or command.help or "").strip().split("\n\n")[0].split())
    assert (command.name, COMMANDS[name].summary) == (name, own)


def test_help_loads_no_command_module(tmp_path: Path) -> None:
    names, code = imported("--help", tmp_path=tmp_path)
    assert code == 0
    loaded = {f"dockyard.cli.{entry.module}" for entry in COMMANDS.values()} & names
    assert loaded == set()
    assert names & {"pydantic", "httpx", "dockyard_sdk"} == set()


def test_every_registered_command_is_in_the_table() -> None:
    # A command added with `app.command` instead of the table would load its module for every `--help`.
    assert get_group(app).commands == {}

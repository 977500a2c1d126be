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
from typer.main import get_command, get_group

from dockyard.cli import creation, helptext, listing, transitions
from dockyard.cli.main import COMMANDS, app, load
from dockyard_sdk import models as m
from tests.cli.conftest import Cli
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
    assert "dockyard.cli.entry" in names  # the import trace was read at all
    assert names & SERVER_LIBRARIES == set()
    assert names & NEEDLESS == set()


@pytest.mark.parametrize(
    "args",
    [
        ("stop", "dev"),
        ("start", "owner/dev", "--no-wait"),
        ("restart", "dev", "--wait", "--timeout", "5m"),
        ("start", "--timeout=90s", "dev"),
    ],
)
def test_start_stop_restart_run_on_the_standard_library(args: tuple[str, ...], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    names, code = imported(*args, tmp_path=tmp_path, env={"DOCKYARD_URL": url, "DOCKYARD_TOKEN": "dy_x_y"})
    assert code == 1  # the server is unreachable
    assert "dockyard.cli.transitions" in names
    assert names & (SERVER_LIBRARIES | NEEDLESS | CLI_LIBRARIES) == set()


@pytest.mark.parametrize(
    ("args", "taken"),
    [
        (["stop", "dev"], transitions.TransitionArgs("stop", "dev")),
        (["restart", "a/b", "--no-wait"], transitions.TransitionArgs("restart", "a/b", wait=False)),
        (["start", "dev", "--timeout", "2m"], transitions.TransitionArgs("start", "dev", timeout=120.0)),
        (["start", "dev", "-o", "json"], None),
        (["start", "dev", "--help"], None),
        (["start"], None),
        (["start", "a", "b"], None),
        (["start", "dev", "--timeout", "0s"], None),
        (["start", "dev", "--timeout", "soon"], None),
        (["stop", "dev", "--timeout"], None),
        (["delete", "dev"], None),
    ],
)
def test_transition_arguments_the_fast_path_takes(args: list[str], taken: object) -> None:
    # Anything not taken goes to the Typer command, which parses it (and explains a bad value) itself.
    assert transitions.parse_args(args) == taken


@pytest.mark.parametrize(
    "args",
    [
        ("create", "dev", "--template", "base"),
        ("create", "-t", "base", "-p", "branch=main", "--param=size=2", "--no-wait", "-o", "json"),
        ("create", "--template=base", "--ttl", "4h", "--version", "v2", "--wait", "--timeout=5m", "dev"),
    ],
)
def test_create_runs_on_the_standard_library(args: tuple[str, ...], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    names, code = imported(*args, tmp_path=tmp_path, env={"DOCKYARD_URL": url, "DOCKYARD_TOKEN": "dy_x_y"})
    assert code == 1  # the server is unreachable
    assert "dockyard.cli.creation" in names
    assert names & (SERVER_LIBRARIES | NEEDLESS | CLI_LIBRARIES) == set()


@pytest.mark.parametrize(
    ("args", "taken"),
    [
        (["create", "-t", "base"], creation.CreateArgs("base")),
        (
            ["create", "dev", "--template=base", "-p", "a=1", "--param", "b= x=y", "--no-wait", "-o", "JSON"],
            creation.CreateArgs("base", "dev", params=("a=1", "b= x=y"), wait=False, output="json"),
        ),
        (
            [
                "create",
                "--ttl=4h",
                "--version",
                "v3",
                "--timeout",
                "90s",
                "--param-file",
                "p.yaml",
                "-t",
                "x",
            ],
            creation.CreateArgs("x", ttl="4h", version="v3", timeout=90.0, param_file="p.yaml"),
        ),
        (["create", "dev"], None),  # no --template: Typer says it is missing
        (["create", "-tbase"], None),
        (["create", "-t", "base", "--help"], None),
        (["create", "-t", "base", "a", "b"], None),
        (["create", "-t", "base", "-p", "novalue"], None),
        (["create", "-t", "base", "-p", "=1"], None),
        (["create", "-t", "base", "--timeout", "0s"], None),
        (["create", "-t", "base", "-o", "yaml"], None),
        (["create", "-t"], None),
        (["create", "-t", "base", "--param-file", "."], None),  # a folder
        (["start", "dev"], None),
    ],
)
def test_create_arguments_the_fast_path_takes(args: list[str], taken: object) -> None:
    assert creation.parse_args(args) == taken


def test_create_reports_a_bad_parameter_file_like_the_typer_command(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("- a list\n")
    url = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKYARD_URL": url, "DOCKYARD_TOKEN": "dy_x_y"}
    fast, typer = (
        subprocess.run(
            [sys.executable, "-c", ENTRY, "create", *template, "--param-file", str(bad)],
            capture_output=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for template in (["-t", "base"], ["-tbase"])  # the second goes to Typer
    )
    assert (fast.returncode, typer.returncode) == (1, 1)
    assert (
        fast.stderr.decode()
        == typer.stderr.decode()
        == (f"error: {bad} must map parameter names to values\nhint: e.g. `branch: main`\n")
    )


def test_the_fast_path_reports_an_unreachable_server_like_the_typer_command(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKYARD_URL": url, "DOCKYARD_TOKEN": "dy_x_y"}
    results = [
        subprocess.run(
            [sys.executable, "-c", ENTRY, "stop", "dev", *extra],
            capture_output=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for extra in ([], ["-o", "table"])  # the second goes to Typer
    ]
    fast, typer = ((r.returncode, r.stdout, r.stderr.decode().splitlines()) for r in results)
    assert fast[:2] == typer[:2] == (1, b"")
    assert fast[2][0] == typer[2][0] == f"error: cannot reach Dockyard at {url}"
    assert fast[2][-1] == typer[2][-1] == "hint: check the URL and that the server is running"


def test_waiting_commands_load_rich_only_for_a_terminal(tmp_path: Path) -> None:
    # `-o table` is a form the standard-library path leaves to the Typer command.
    env = {"DOCKYARD_URL": f"http://127.0.0.1:{free_port()}", "DOCKYARD_TOKEN": "dy_x_y"}
    names, code = imported("stop", "dev", "-o", "table", tmp_path=tmp_path, env=env)
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
    assert "dockyard.cli.helptext" in names
    assert names & (CLI_LIBRARIES | {"dockyard_sdk", "dataclasses", "inspect"}) == set()


@pytest.mark.parametrize(
    "args", [("list",), ("list", "--all", "--status", "Running", "-t", "base", "--output=json")]
)
def test_list_imports_only_the_standard_library(args: tuple[str, ...], tmp_path: Path) -> None:
    # The common forms of `list` never reach Typer: the SDK's standard-library client asks the server.
    env = {"DOCKYARD_URL": f"http://127.0.0.1:{free_port()}", "DOCKYARD_TOKEN": "dy_x_y"}
    names, code = imported(*args, tmp_path=tmp_path, env=env)
    assert code == 1
    assert {"dockyard.cli.listing", "dockyard_sdk.plain"} <= names
    assert names & (SERVER_LIBRARIES | NEEDLESS | CLI_LIBRARIES | {"dockyard_sdk.models"}) == set()


def test_list_with_a_url_that_is_not_http(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, "list"],
        capture_output=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DOCKYARD_URL": "ftp://x",
            "DOCKYARD_TOKEN": "y",
        },
        stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, result.stdout, result.stderr.decode().splitlines()) == (
        1,
        b"",
        [
            "error: url must start with http:// or https://, not 'ftp://x'",
            "hint: run `dockyard login URL` with an http:// or https:// URL",
        ],
    )


def test_list_with_arguments_it_does_not_take_goes_to_typer(tmp_path: Path) -> None:
    env = {"DOCKYARD_URL": f"http://127.0.0.1:{free_port()}", "DOCKYARD_TOKEN": "dy_x_y"}
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, "list", "--status", "bogus"],
        capture_output=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "COLUMNS": "200", **env},
        stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, result.stdout) == (2, b"")
    assert b"Invalid value for '--status'" in result.stderr


def test_the_fast_help_is_the_typer_apps_help(cli: Cli, tmp_path: Path) -> None:
    # `dockyard --help` alone prints without Typer; `dockyard` with no command prints through Typer.
    fast = subprocess.run(
        [sys.executable, "-c", ENTRY, "--help"],
        capture_output=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "COLUMNS": "100", "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
    )
    typer_help, no_command = cli("--help"), cli()
    assert (fast.returncode, fast.stderr) == (0, b"")
    assert (typer_help.exit_code, no_command.exit_code) == (0, 2)
    assert fast.stdout.decode() == typer_help.output == no_command.output + "\n"


def test_the_help_options_are_the_apps_own() -> None:
    root = get_command(app)
    own = [(param.opts[0], getattr(param, "help", None)) for param in root.params]
    assert own == list(helptext.ROOT_OPTIONS[:-1])
    assert helptext.ROOT_OPTIONS[-1] == ("--help", "Show this message and exit.")


def test_the_list_statuses_are_the_sdks() -> None:
    assert {status.value for status in m.WorkspaceStatus} == listing.STATUSES


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list"], listing.ListArgs()),
        (["list", "-a", "--status=Stopped", "--template", "base"], listing.ListArgs(True, "stopped", "base")),
        (["list", "-t", "x", "-o", "JSON", "-t", "y"], listing.ListArgs(template="y", output="json")),
        (["list", "--help"], None),
        (["list", "--status", "bogus"], None),
        (["list", "-o", "yaml"], None),
        (["list", "--template"], None),
        (["list", "--template", "--all"], None),
        (["list", "extra"], None),
        (["show", "x"], None),
    ],
)
def test_list_arguments(argv: list[str], expected: listing.ListArgs | None) -> None:
    assert listing.parse_args(argv) == expected


def test_every_registered_command_is_in_the_table() -> None:
    # A command added with `app.command` instead of the table would load its module for every `--help`.
    assert get_group(app).commands == {}

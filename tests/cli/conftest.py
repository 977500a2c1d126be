"""Drive the `dockyard` CLI with CliRunner against the in-process server of the `h` fixture."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
from typer import rich_utils
from typer.testing import CliRunner, Result

from dockyard.cli import config
from dockyard.cli.main import app
from dockyard_sdk import Client
from tests.harness import Harness

URL = "http://testserver"
TESTDATA = Path(__file__).parent / "testdata"


@dataclass
class Cli:
    h: Harness
    config_home: Path
    runner: CliRunner = field(default_factory=CliRunner)
    # Every (url, token) the CLI built a client for, so tests can see which credentials it used.
    connections: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, list(args), input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
        return result

    def login(self, token: str | None = None) -> None:
        self.ok("login", URL, "--token", token or self.admin_token)

    @property
    def admin_token(self) -> str:
        assert self.h.admin.token is not None
        return self.h.admin.token

    @property
    def config_file(self) -> Path:
        return self.config_home / "dockyard" / "config.json"

    def client(self, url: str, token: str | None) -> Client:
        self.connections.append((url, token))
        return self.h.client(token)


@pytest.fixture(autouse=True)
def _server_log_off_the_cli_output() -> Iterator[None]:
    # The in-process server logs (e.g. "build finished") from its workers while a command runs; unconfigured,
    # structlog prints to whatever sys.stdout is then, which is the CliRunner's capture of the CLI's stdout.
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))
    yield
    structlog.configure(**saved)


@pytest.fixture
def h(ah: Harness) -> Harness:
    """The CLI's server runs real agents: `create` and `ssh` wait for them, and commands reach a shell."""
    return ah


@pytest.fixture
def cli(h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    home = tmp_path / "config"
    # A fixed width, no colour and no inherited settings, so that output is the same on every machine.
    fixed = {"XDG_CONFIG_HOME": str(home), "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    for name, value in fixed.items():
        monkeypatch.setenv(name, value)
    inherited = (
        "DOCKYARD_URL",
        "DOCKYARD_TOKEN",
        "FORCE_COLOR",
        "PY_COLORS",
        "TTY_COMPATIBLE",
        "TERMINAL_WIDTH",
    )
    for name in inherited:
        monkeypatch.delenv(name, raising=False)
    # Typer reads these from the environment at import time, before the settings above.
    monkeypatch.setattr(rich_utils, "FORCE_TERMINAL", False)
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", None)
    runner = Cli(h=h, config_home=home)
    monkeypatch.setattr(config, "client_factory", runner.client)
    return runner


@pytest.fixture
def logged_in(cli: Cli) -> Cli:
    cli.login()
    return cli


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?")
_HASH = re.compile(r"\b[0-9a-f]{64}\b")
_KEY = re.compile(r"\bdy_[a-z0-9]+_[A-Za-z0-9_-]+")


def normalize(text: str, replacements: dict[str, str] | None = None) -> str:
    """Replace what changes from run to run (ids, times, hashes, secrets) with stable placeholders."""
    # Trailing spaces (Rich pads panels) are dropped: editors strip them from golden files.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    for value, placeholder in (replacements or {}).items():
        text = text.replace(value, placeholder)
    text = _KEY.sub("<TOKEN_KEY>", text)
    text = _HASH.sub("<HASH>", text)
    text = _TIME.sub("<TIME>", text)
    ids: dict[str, str] = {}
    # Numbered in order of appearance, so the golden still shows which ids are the same object.
    return _UUID.sub(lambda match: ids.setdefault(match.group(), f"<ID{len(ids) + 1}>"), text)


@dataclass
class Golden:
    """Compare a command's whole output with `testdata/NAME.golden`; `--update-golden` rewrites the file."""

    update: bool

    def __call__(
        self, name: str, cli: Cli, *args: str, input: str | None = None, replace: dict[str, str] | None = None
    ) -> Result:
        result = cli(*args, input=input)
        actual = normalize(
            f"$ dockyard {' '.join(args)}\n--- exit {result.exit_code}\n--- stdout\n{result.stdout}"
            f"--- stderr\n{result.stderr}",
            {str(cli.config_home.parent): "<TMP>", **(replace or {})},
        )
        path = TESTDATA / f"{name}.golden"
        if self.update:
            path.parent.mkdir(exist_ok=True)
            path.write_text(actual)
        assert path.exists(), f"{path.name} is missing; run pytest with --update-golden"
        assert actual == path.read_text(), f"{path.name} differs; if that is intended, run --update-golden"
        return result


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(update=bool(request.config.getoption("--update-golden")))

"""Fuzz the HTTP API from its own OpenAPI document with schemathesis, against a real `dockyard server` process.

A real process (not the in-process harness) keeps the whole production stack in the loop: uvicorn, the ASGI
middleware, the thread pool and the database driver. The server runs on a free loopback port with a fresh data dir
and whichever database the session uses (`--db sqlite|postgres`).

Two passes: one with whatever path parameters the generator invents (mostly 404s, but every validator and error
path), and one with `{template}`, `{user}` and `{version}` pinned to things that exist, so that generated bodies
reach the services behind the lookups.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MAX_EXAMPLES = 25
FUZZ_TOKEN_NAME = "schemathesis"
TOKEN_PATH = "/api/v2/users/{user}/tokens/{token}"


@dataclass
class Server:
    url: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    token: str
    token_id: str

    def log_errors(self) -> list[str]:
        """The server's own record of every request that ended in an unhandled exception (a 500)."""
        errors = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                errors.append(
                    f"{entry.get('method', '?')} {entry.get('path', '?')}: {entry.get('event')}\n"
                    f"{entry.get('exception', '')}"
                )
        return errors

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dockyard_command() -> list[str]:
    script = Path(sys.executable).parent / "dockyard"
    if script.exists():
        return [str(script)]
    found = shutil.which("dockyard")
    if found:
        return [found]
    return [sys.executable, "-c", "from dockyard.cli.main import main; main()"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    data_dir = tmp_path / "server"
    log = tmp_path / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    command = [
        *_dockyard_command(), "server", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
        "--database-url", database_url, "--no-access-log", "--log-format", "json",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"dockyard server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dockyard server did not answer /healthz within 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        admin_token = (data_dir / "admin-token").read_text().strip()
        # A token of its own, so the admin token stays untouched whatever the fuzzer does to tokens.
        created = httpx.post(
            f"{url}/api/v2/users/me/tokens",
            json={"name": FUZZ_TOKEN_NAME, "lifetime": "1d", "scopes": ["all"]},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        srv = Server(url=url, data_dir=data_dir, log=log, process=process, token=body["key"], token_id=body["id"])
        yield srv
    finally:
        _stop(process)
    errors = srv.log_errors()
    assert not errors, "the server logged unhandled errors:\n\n" + "\n\n".join(errors)


def _load(server: Server, *, parameters: dict[str, Any] | None = None) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v2/openapi.json", timeout=10)
    schema.config.update(base_url=server.url, request_timeout=30)
    if parameters:
        schema.config.update(parameters=parameters)
    # database="none": no .hypothesis/ folder in the work tree, and every run starts from the same seed rules.
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    return schema


@pytest.fixture
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return _load(server)


@pytest.fixture
def known_schema(server: Server) -> schemathesis.BaseSchema:
    # Built-in templates exist from first start; "me" is the fuzzer's own user (the owner "admin").
    return _load(server, parameters={"template": "base", "user": "me", "version": "1"})


def _revokes_own_token(case: Case, server: Server) -> bool:
    if case.method.upper() != "DELETE" or case.path != TOKEN_PATH:
        return False
    target = str((case.path_parameters or {}).get("token", ""))
    return target in (server.token_id, FUZZ_TOKEN_NAME)


def _run(case: Case, server: Server, session: requests.Session) -> None:
    if _revokes_own_token(case, server):
        return
    case.call_and_validate(
        session=session,
        headers={"Authorization": f"Bearer {server.token}"},
        checks=[not_a_server_error],
        timeout=30,
    )


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


fuzz = schemathesis.pytest.from_fixture("api_schema")
fuzz_known = schemathesis.pytest.from_fixture("known_schema").exclude(
    # Deleting the pinned template would turn the rest of this pass into 404s.
    method="DELETE",
    path_regex=re.escape("/api/v2/templates/{template}") + "$",
)


@fuzz.parametrize()
def test_api_fuzz(case: Case, server: Server, session: requests.Session) -> None:
    _run(case, server, session)


@fuzz_known.parametrize()
def test_api_fuzz_known_resources(case: Case, server: Server, session: requests.Session) -> None:
    _run(case, server, session)

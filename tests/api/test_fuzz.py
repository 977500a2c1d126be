"""Fuzz the HTTP API from its own OpenAPI document with schemathesis, against a real `dockyard server`.

A real process (not the in-process harness) keeps the whole production stack in the loop: uvicorn, the ASGI
middleware, the thread pool and the database driver. The server gets a free loopback port, a fresh data dir
and the session's database (`--db sqlite|postgres`).

Two passes: one with whatever path parameters the generator invents (mostly 404s, but every validator and
error path), and one with `{template}`, `{user}` and `{version}` pinned to things that exist, so that the
generated bodies reach the services behind the lookups.

The server sees no Docker engine (DOCKER_HOST names a socket that does not exist), so workspace builds fail
fast instead of starting containers.

Checks: no 5xx, and every documented response matches its schema. The server's log is read afterwards as well,
so an unhandled exception fails the test with the server-side traceback next to schemathesis's `curl`.
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
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Per operation and pass; with the coverage phase's boundary cases this is about 1,500 requests a pass.
# DOCKYARD_FUZZ_EXAMPLES=500 digs deeper locally.
MAX_EXAMPLES = int(os.environ.get("DOCKYARD_FUZZ_EXAMPLES", "25"))
FUZZ_TOKEN_NAME = "schemathesis"
TOKEN_PATH = "/api/v2/users/{user}/tokens/{token}"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception)\b")


@dataclass
class Server:
    url: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    token: str
    token_id: str

    def log_errors(self) -> list[str]:
        """The server's record of each request that ended in an unhandled exception (a 500), shortened."""
        errors = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
                continue
            # uvicorn logs the same exception again after Dockyard's handler has rendered the 500.
            if entry.get("logger") == "uvicorn.error":
                continue
            errors.append(
                f"{entry.get('method')} {entry.get('path')}: {entry.get('event')}\n"
                + _short_traceback(str(entry.get("exception", "")))
            )
        return errors


def _short_traceback(text: str) -> str:
    """Dockyard's own frames and the exception itself: enough to find the bug, short enough to read."""
    lines = text.splitlines()
    # The last `SomeError: message` line; SQLAlchemy appends its statement and a link after it.
    last = max((i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)), default=0)
    keep = []
    for i, line in enumerate(lines[:last]):
        if "/dockyard/" in line and "site-packages" not in line:
            keep.extend(lines[i : i + 2])
    exception = [line[:300] for line in lines[last : last + 2]]
    return "\n".join(["  ...", *keep, *exception])


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


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"dockyard server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"dockyard server did not answer /healthz within {timeout:.0f} s:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    data_dir = tmp_path / "server"
    log = tmp_path / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    # No Docker engine on purpose: workspaces the fuzzer creates fail their builds ("runtime unavailable")
    # instead of starting real containers on this machine.
    env["DOCKER_HOST"] = f"unix://{tmp_path / 'no-docker.sock'}"
    command = [
        *_dockyard_command(), "server", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
        "--database-url", database_url, "--access-log", "--log-format", "json", "--ssh-listen", "", "--warm-networks", "0",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    try:
        _wait_healthy(url, process, log)
        admin_token = (data_dir / "admin-token").read_text().strip()
        # A token of its own: whatever the fuzzer does to tokens, it can be kept away from this one.
        created = httpx.post(
            f"{url}/api/v2/users/me/tokens",
            json={"name": FUZZ_TOKEN_NAME, "lifetime": "1d", "scopes": ["all"]},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        yield Server(
            url=url, data_dir=data_dir, log=log, process=process, token=body["key"], token_id=body["id"]
        )
    finally:
        _stop(process)
    errors = Server(url, data_dir, log, process, "", "").log_errors()
    if errors:
        pytest.fail(
            f"the server logged {len(errors)} unhandled error(s) (full log: {log}):\n\n"
            + "\n\n".join(errors),
            pytrace=False,
        )


def _load(server: Server, *, parameters: dict[str, Any] | None = None) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v2/openapi.json", timeout=10)
    schema.config.update(base_url=server.url, request_timeout=30)
    if parameters:
        schema.config.update(parameters=parameters)
    # No example database: nothing written into the work tree (.hypothesis/), and no replay of old failures
    # against a server that has since changed.
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    return schema


@pytest.fixture
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return _load(server)


@pytest.fixture
def known_schema(server: Server) -> schemathesis.BaseSchema:
    # The built-in templates exist from first start; "me" is the fuzzer's own user, the owner "admin".
    return _load(server, parameters={"template": "base", "user": "me", "version": "1"})


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def _revokes_own_token(case: Case, server: Server) -> bool:
    if case.method.upper() != "DELETE" or case.path != TOKEN_PATH:
        return False
    return str((case.path_parameters or {}).get("token", "")) in (server.token_id, FUZZ_TOKEN_NAME)


def _call(case: Case, server: Server, session: requests.Session) -> None:
    if _revokes_own_token(case, server):
        return
    headers = {"Authorization": f"Bearer {server.token}"}
    response = case.call(session=session, headers=headers, timeout=30)
    checks = [schemathesis.checks.response_schema_conformance]
    # 503 is the server's deliberate answer while the workspace runtime is unreachable, which it is here by
    # design; an unhandled exception is a 500, and the server log check above catches those too.
    if response.status_code != 503:
        checks.insert(0, not_a_server_error)
    case.validate_response(response, checks=checks, headers=headers)


fuzz = schemathesis.pytest.from_fixture("api_schema")
fuzz_known = schemathesis.pytest.from_fixture("known_schema").exclude(
    # Deleting the pinned template would turn the rest of this pass into 404s.
    method="DELETE",
    path_regex=re.escape("/api/v2/templates/{template}") + "$",
)


# Upload endpoints take binary bodies the generator often has to discard; that is expected, not a problem to fail on.
RELAXED = settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


@fuzz.parametrize()
@RELAXED
def test_api_fuzz(case: Case, server: Server, session: requests.Session) -> None:
    _call(case, server, session)


@fuzz_known.parametrize()
@RELAXED
def test_api_fuzz_known_resources(case: Case, server: Server, session: requests.Session) -> None:
    _call(case, server, session)

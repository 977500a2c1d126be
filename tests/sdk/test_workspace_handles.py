"""The orchestrator-facing SDK surface: `client.create/get/list`, `Workspace` handles, typed errors.

These run against a full in-process server whose workspaces run the real agent as local processes; the
documented examples run against a real server and Docker in tests/sdk/test_examples.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard_sdk import (
    AsyncClient,
    BuildFailed,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Timeout,
    Unauthorized,
    ValidationError,
    Workspace,
)
from dockyard_sdk import models as m
from dockyard_sdk.errors import error_for
from tests.harness import Harness
from tests.sdk.inprocess import in_process

pytestmark = pytest.mark.timeout(90)


def _client(h: Harness) -> Client:
    h.template(name="tmpl", startup_script="echo ready")
    return in_process(h.client(h.admin.token), h.lifespan)


def test_create_returns_a_ready_handle_and_the_with_block_deletes_it(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl", name="job-1", ttl="1h", parameters={"branch": "dev"}) as ws:
        assert isinstance(ws, Workspace)
        assert (ws.name, ws.status, ws.parameters["branch"]) == ("job-1", m.WorkspaceStatus.RUNNING, "dev")
        assert ws.agent is not None
        assert ws.agent.lifecycle == m.AgentLifecycle.READY
        assert ws.info.deadline is not None
        workspace_id = ws.id
    gone = ah.admin.get_workspace(workspace_id)
    assert gone.status == m.WorkspaceStatus.DELETED


def test_keep_true_keeps_the_workspace_and_get_and_list_return_handles(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl", name="kept", keep=True) as ws:
        pass
    again = client.get("kept")
    assert (again.id, again.status) == (ws.id, m.WorkspaceStatus.RUNNING)
    listed = client.list(template="tmpl")
    assert [w.id for w in listed] == [ws.id]
    assert all(isinstance(w, Workspace) for w in listed)
    assert client.get(ws.id).name == "kept"


def test_exec_collects_output_and_streams_lines_to_callbacks(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl") as ws:
        plain = ws.exec("echo out; echo err >&2; exit 3")
        assert (plain.exit_code, plain.stdout, plain.stderr, plain.truncated) == (3, "out\n", "err\n", False)
        lines: list[str] = []
        errors: list[str] = []
        streamed = ws.exec(
            ["sh", "-c", 'printf "a\\nb\\n"; printf "partial"; echo oops >&2'],
            env={"X": "1"},
            on_stdout=lines.append,
            on_stderr=errors.append,
        )
        assert lines == ["a", "b", "partial"]
        assert errors == ["oops"]
        assert (streamed.exit_code, streamed.stdout) == (0, "a\nb\npartial")
        chunks: list[bytes] = []
        ws.exec("printf '\\001\\002'", on_stdout=chunks.append, text=False)
        assert b"".join(chunks) == b"\x01\x02"
        cut = ws.exec("head -c 5000 /dev/zero | tr '\\0' x", max_output_bytes=100)
        assert (len(cut.stdout), cut.truncated) == (100, True)
        ws.files.write("sub/dir/f", "x")
        assert ws.exec("ls", cwd="sub/dir").stdout == "f\n"


def test_exec_timeout_kills_the_command_in_both_modes(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl") as ws:
        started = time.monotonic()
        result = ws.exec("sleep 30", timeout=1)
        assert result.timed_out
        assert result.exit_code is None
        streamed = ws.exec("echo begun; sleep 30", timeout=1, on_stdout=lambda _line: None)
        assert streamed.timed_out
        assert streamed.stdout == "begun\n"
        assert time.monotonic() - started < 20


def test_background_process_takes_stdin_and_can_be_killed(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl") as ws:
        seen: list[str] = []
        cat = ws.exec("cat", background=True, on_stdout=seen.append)
        cat.write_stdin("hello\n")
        cat.write_stdin(b"bytes too\n")
        cat.close_stdin()
        done = cat.wait(timeout=20)
        assert (done.exit_code, done.stdout, seen) == (0, "hello\nbytes too\n", ["hello", "bytes too"])
        sleeper = ws.exec("sleep 60", background=True, timeout=120)
        assert sleeper.running
        with pytest.raises(Timeout):
            sleeper.wait(timeout=0.5)
        sleeper.kill()
        killed = sleeper.wait(timeout=20)
        assert killed.signal == "KILL", killed
        assert not sleeper.running


def test_files_are_relative_to_home_and_parents_are_made(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl") as ws:
        ws.files.write("deep/er/notes.txt", "hello ✓")
        ws.files.write("deep/blob.bin", b"\x00\xff")
        assert ws.files.read_text("deep/er/notes.txt") == "hello ✓"
        assert ws.files.read("deep/blob.bin") == b"\x00\xff"
        assert sorted(e.name for e in ws.files.list("deep")) == ["blob.bin", "er"]
        assert ws.files.exists("deep/blob.bin")
        assert not ws.files.exists("deep/nothing")
        home = ws.exec("echo $HOME").stdout.strip()
        assert ws.files.read_text(f"{home}/deep/er/notes.txt") == "hello ✓"
        ws.files.remove("deep", recursive=True)
        assert not ws.files.exists("deep")
        with pytest.raises(NotFound):
            ws.files.read("deep/blob.bin")


def test_stop_start_and_extend_without_a_restart(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl", ttl="1h") as ws:
        ws.files.write("kept.txt", "still here")
        first_deadline = ws.info.deadline
        assert first_deadline is not None
        build = ws.info.latest_build.id
        ws.extend("5h")
        assert ws.info.deadline is not None
        assert ws.info.deadline > first_deadline
        assert ws.info.latest_build.id == build, "extending must not start a build"
        assert ws.info.ttl_ms == 5 * 3600 * 1000
        ws.stop()
        assert ws.status == m.WorkspaceStatus.STOPPED
        with pytest.raises(Conflict):
            ws.exec("true")
        ws.start()
        assert ws.status == m.WorkspaceStatus.RUNNING
        assert ws.files.read_text("kept.txt") == "still here"
        audit = ah.admin.audit(action="workspace.ttl").audit_logs
        assert [entry.resource_name for entry in audit] == [ws.name]


def test_ttl_endpoint_accepts_both_forms_and_names_bad_fields(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl") as ws:
        http = client.http
        ok = http.put(f"/api/v2/workspaces/{ws.id}/ttl", json={"ttl_ms": 7200000})
        assert ok.status_code == 200
        assert ok.json()["ttl_ms"] == 7200000
        bad = http.put(f"/api/v2/workspaces/{ws.id}/ttl", json={"ttl": "soon"})
        assert bad.status_code == 422
        assert [v["field"] for v in bad.json()["validations"]] == ["ttl"]
        both = http.put(f"/api/v2/workspaces/{ws.id}/ttl", json={"ttl": "1h", "ttl_ms": 5})
        assert both.status_code == 422
        assert ws.refresh().info.ttl_ms == 7200000


def test_a_failed_build_raises_build_failed_and_leaves_nothing(ah: Harness) -> None:
    client = _client(ah)
    ah.template(name="broken", image="missing/image:none", startup_script="true")
    with pytest.raises(BuildFailed) as info:
        client.create("broken", name="doomed")
    assert info.value.workspace.status == m.WorkspaceStatus.FAILED
    after = ah.admin.get_workspace(info.value.workspace.id, wait="done", timeout=30)
    assert after.status in (m.WorkspaceStatus.DELETED, m.WorkspaceStatus.DELETING)


def test_typed_errors(ah: Harness) -> None:
    client = _client(ah)
    with pytest.raises(NotFound):
        client.get("no-such-workspace")
    with pytest.raises(ValidationError) as invalid:
        client.create("tmpl", parameters={"ttl_hours": 99})
    assert [v.field for v in invalid.value.validations] == ["ttl_hours"]
    with pytest.raises(Unauthorized):
        in_process(ah.client("dy_bogus_token"), ah.lifespan).list()
    reader = ah.admin.create_token(m.CreateTokenRequest(name="reader", scopes=[m.Scope.WORKSPACE_READ]))
    with pytest.raises(Forbidden):
        in_process(ah.client(reader.key), ah.lifespan).create("tmpl")
    limited = error_for(429, "slow down", retry_after="7")
    assert isinstance(limited, RateLimited)
    assert limited.retry_after == 7.0


def test_wrong_types_fail_before_any_request(ah: Harness) -> None:
    client = _client(ah)
    sent: list[httpx.Request] = []
    client.http.event_hooks["request"].append(sent.append)
    bad_calls: list[tuple[Any, type[Exception]]] = [
        (lambda: client.create(42), TypeError),  # type: ignore[arg-type]
        (lambda: client.create("tmpl", parameters=["a"]), TypeError),  # type: ignore[arg-type]
        (lambda: client.create("tmpl", ttl=1.5), TypeError),  # type: ignore[arg-type]
        (lambda: client.create("tmpl", wait="soon"), ValueError),  # type: ignore[arg-type]
        (lambda: client.create("tmpl", timeout=-1), ValueError),
        (lambda: client.create("tmpl", ttl="forever"), ValueError),
        (lambda: client.get(None), TypeError),  # type: ignore[arg-type]
        (lambda: Client(url="ftp://x", token="t"), ValueError),
    ]
    for call, error in bad_calls:
        with pytest.raises(error):
            call()
    assert sent == []
    with client.create("tmpl") as ws:
        sent.clear()
        for call, error in [
            (lambda: ws.exec(["ls", 3]), TypeError),
            (lambda: ws.exec(""), ValueError),
            (lambda: ws.exec("true", timeout="1"), TypeError),
            (lambda: ws.files.write("x", 3), TypeError),
            (lambda: ws.files.read(b"x"), TypeError),
            (lambda: ws.extend(None), TypeError),
        ]:
            with pytest.raises(error):
                call()
        assert sent == []


def test_client_reads_the_environment_then_the_cli_login(
    ah: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DOCKYARD_URL", raising=False)
    monkeypatch.delenv("DOCKYARD_TOKEN", raising=False)
    with pytest.raises(ValueError, match="DOCKYARD_URL"):
        Client()
    (tmp_path / "dockyard").mkdir()
    (tmp_path / "dockyard" / "config.json").write_text('{"url": "http://stored:1", "token": "dy_stored"}')
    stored = Client()
    assert (stored.url, stored.token) == ("http://stored:1", "dy_stored")
    monkeypatch.setenv("DOCKYARD_URL", "http://env:2")
    # A stored token is never sent to another server.
    assert (Client().url, Client().token) == ("http://env:2", None)
    monkeypatch.setenv("DOCKYARD_TOKEN", "dy_env")
    assert (Client().url, Client().token) == ("http://env:2", "dy_env")
    assert Client("http://given:3", "dy_given").token == "dy_given"
    os.environ.pop("DOCKYARD_TOKEN")


def test_async_client_has_the_same_surface(ah: Harness) -> None:
    client = _client(ah)

    async def main() -> tuple[str, list[str], list[str]]:
        aclient = AsyncClient.__new__(AsyncClient)
        aclient.sync = client
        seen: list[str] = []
        names: list[str] = []

        async def show(line: str) -> None:
            await asyncio.sleep(0)
            seen.append(line)

        async def one(n: int) -> str:
            async with aclient.create("tmpl", name=f"async-{n}") as ws:
                names.append(ws.name)
                await ws.files.write("n.txt", str(n))
                result = await ws.exec("cat n.txt; echo", on_stdout=show)
                proc = await ws.exec("sleep 60", background=True)
                await proc.kill()
                await proc.wait(timeout=20)
                return result.stdout.strip()

        results = await asyncio.gather(one(1), one(2))
        ws = await aclient.create("tmpl", name="awaited", wait="running")
        await ws.delete()
        return ",".join(results), sorted(seen), sorted(names)

    assert asyncio.run(main()) == ("1,2", ["1", "2"], ["async-1", "async-2"])
    assert {w.status for w in client.list()} <= {m.WorkspaceStatus.DELETED}
    assert threading.active_count() < 50

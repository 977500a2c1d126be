"""File streams and `dial`."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.agent.fakeplane import EOF, STDIN, STDOUT, AgentEnv, Control, FrameConn

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
async def control(agent: AgentEnv) -> Control:
    control = await agent.connect()
    await control.wait_state("ready")
    return control


async def write(control: Control, path: str, data: bytes, **fields: Any) -> dict[str, Any]:
    stream = await control.open("file_write", path=path, **fields)
    for start in range(0, len(data), 1 << 20):
        stream.send(STDIN, data[start : start + (1 << 20)])
    stream.send(EOF)
    return await stream.recv_json()


async def read(control: Control, path: str) -> tuple[dict[str, Any], bytes]:
    stream = await control.open("file_read", path=path)
    header = await stream.recv_json()
    if header["type"] != "ok":
        return header, b""
    data = b""
    while True:
        frame = await stream.recv()
        assert frame is not None, "closed before EOF"
        if frame[0] == EOF:
            return header, data
        assert frame[0] == STDOUT
        data += frame[1]


async def request(control: Control, kind: str, **fields: Any) -> dict[str, Any]:
    return await (await control.open(kind, **fields)).recv_json()


async def test_write_then_read_back_stat_list_and_delete(control: Control, agent: AgentEnv) -> None:
    assert await write(control, "notes/todo.txt", b"buy milk\n", mode=0o600, mkdir=True) == {
        "type": "ok",
        "size": 9,
    }
    written = agent.home / "notes" / "todo.txt"
    assert written.read_bytes() == b"buy milk\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert os.listdir(written.parent) == ["todo.txt"]  # no temporary file left behind

    header, data = await read(control, str(written))
    assert data == b"buy milk\n"
    assert header == {"type": "ok", "size": 9, "mode": 0o600, "mtime": written.stat().st_mtime}

    assert await request(control, "file_stat", path="notes") == {
        "type": "ok",
        "kind": "dir",
        "size": (agent.home / "notes").stat().st_size,
        "mode": stat.S_IMODE((agent.home / "notes").stat().st_mode),
        "mtime": (agent.home / "notes").stat().st_mtime,
    }

    (agent.home / "notes" / "sub").mkdir()
    (agent.home / "notes" / "link").symlink_to("todo.txt")
    listing = await request(control, "file_list", path="notes")
    assert listing["type"] == "ok"
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [
        ("link", "symlink"),
        ("sub", "dir"),
        ("todo.txt", "file"),
    ]
    assert listing["entries"][2] == {
        "name": "todo.txt",
        "type": "file",
        "size": 9,
        "mode": 0o600,
        "mtime": written.stat().st_mtime,
    }

    assert await request(control, "file_delete", path="notes/todo.txt") == {"type": "ok"}
    assert not written.exists()


async def test_overwrite_keeps_the_existing_mode(control: Control, agent: AgentEnv) -> None:
    target = agent.home / "run.sh"
    target.write_text("old")
    target.chmod(0o751)

    assert await write(control, "run.sh", b"new") == {"type": "ok", "size": 3}

    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o751


async def test_new_file_gets_the_default_mode(control: Control, agent: AgentEnv) -> None:
    assert await write(control, "plain.txt", b"") == {"type": "ok", "size": 0}

    assert (agent.home / "plain.txt").read_bytes() == b""
    assert stat.S_IMODE((agent.home / "plain.txt").stat().st_mode) == 0o644


async def test_large_file_round_trip(control: Control, agent: AgentEnv) -> None:
    data = os.urandom(8 << 20)

    assert await write(control, "big.bin", data) == {"type": "ok", "size": len(data)}
    header, back = await read(control, "big.bin")

    assert header["size"] == len(data)
    assert back == data


async def test_a_write_abandoned_before_eof_changes_nothing(control: Control, agent: AgentEnv) -> None:
    (agent.home / "keep.txt").write_text("original")
    stream = await control.open("file_write", path="keep.txt")
    stream.send(STDIN, b"partial")
    await stream.close()
    await asyncio.sleep(0.2)

    assert (agent.home / "keep.txt").read_text() == "original"
    assert os.listdir(agent.home) == ["keep.txt"]


async def test_file_errors_carry_the_errno_name(control: Control, agent: AgentEnv) -> None:
    home = agent.home
    (home / "file").write_text("x")
    (home / "full").mkdir()
    (home / "full" / "inner").write_text("x")
    (home / "empty").mkdir()

    assert await read(control, "missing") == (
        {"type": "error", "error": f"No such file or directory: {home / 'missing'}", "code": "ENOENT"},
        b"",
    )
    assert await read(control, "full") == (
        {"type": "error", "error": f"Is a directory: {home / 'full'}", "code": "EISDIR"},
        b"",
    )
    assert await request(control, "file_stat", path="file/child") == {
        "type": "error",
        "error": f"Not a directory: {home / 'file/child'}",
        "code": "ENOTDIR",
    }
    assert await request(control, "file_list", path="file") == {
        "type": "error",
        "error": f"Not a directory: {home / 'file'}",
        "code": "ENOTDIR",
    }
    assert await write(control, "file/child", b"x") == {
        "type": "error",
        "error": f"Not a directory: {home / 'file/child'}",
        "code": "ENOTDIR",
    }
    assert await write(control, "full", b"x") == {
        "type": "error",
        "error": f"Is a directory: {home / 'full'}",
        "code": "EISDIR",
    }
    assert await write(control, "no/such/dir/f", b"x") == {
        "type": "error",
        "error": f"No such file or directory: {home / 'no/such/dir/f'}",
        "code": "ENOENT",
    }
    assert await request(control, "file_delete", path="full") == {
        "type": "error",
        "error": f"Is a directory: {home / 'full'}",
        "code": "EISDIR",
    }
    assert (home / "full" / "inner").exists()
    assert await request(control, "file_delete", path="missing") == {
        "type": "error",
        "error": f"No such file or directory: {home / 'missing'}",
        "code": "ENOENT",
    }


async def test_delete_of_directories(control: Control, agent: AgentEnv) -> None:
    (agent.home / "empty").mkdir()
    (agent.home / "tree" / "a" / "b").mkdir(parents=True)
    (agent.home / "tree" / "a" / "b" / "f").write_text("x")

    assert await request(control, "file_delete", path="empty") == {"type": "ok"}
    assert await request(control, "file_delete", path="tree", recursive=True) == {"type": "ok"}

    assert os.listdir(agent.home) == []


async def test_a_fifo_is_not_read(control: Control, agent: AgentEnv) -> None:
    os.mkfifo(agent.home / "pipe")

    header, _ = await read(control, "pipe")

    assert header == {"type": "error", "error": f"Invalid argument: {agent.home / 'pipe'}", "code": "EINVAL"}


async def test_unknown_kind_is_an_error(control: Control) -> None:
    assert await request(control, "teleport") == {
        "type": "error",
        "error": "unknown stream kind 'teleport'",
        "code": "EINVAL",
    }


async def test_dial_pipes_bytes_and_half_closes(control: Control) -> None:
    received = bytearray()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Echo everything, and only answer "bye" once the agent passed the client's half-close on.
        while data := await reader.read(65536):
            received.extend(data)
            writer.write(data)
        writer.write(b"bye")
        writer.write_eof()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = await control.open("dial", host="127.0.0.1", port=port)
        assert await stream.recv_json() == {"type": "ok"}
        payload = os.urandom(3 << 20)
        stream.writer.write(payload)
        echoed = await stream.reader.readexactly(len(payload))
        stream.writer.write_eof()
        tail = await asyncio.wait_for(stream.reader.read(), 10)
    finally:
        server.close()

    assert echoed == payload
    assert tail == b"bye"
    assert bytes(received) == payload


async def test_dial_to_a_closed_port_is_connection_refused(control: Control) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    stream = await control.open("dial", host="127.0.0.1", port=port)

    assert await stream.recv_json() == {"type": "error", "error": "connection refused"}
    assert await stream.recv() is None


async def test_streams_run_side_by_side(control: Control) -> None:
    slow = await control.sh("sleep 0.5; echo slow")
    quick: FrameConn = await control.open("exec", argv=["echo", "quick"])

    assert (await quick.collect()).stdout == b"quick\n"
    assert (await slow.collect()).stdout == b"slow\n"


async def test_file_ops_in_a_missing_home_relative_folder(control: Control, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "deep" / "f.txt"

    assert await write(control, str(target), b"abs", mkdir=True) == {"type": "ok", "size": 3}
    assert target.read_bytes() == b"abs"


# Loads the real agent file as a module and breaks one handler, as a bug would.
BROKEN_FILE_STAT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("agent", sys.argv[1])
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)

async def broken(self, conn, message):
    raise RuntimeError("boom")

agent.Agent._file_stat = broken
sys.exit(agent.main(sys.argv[2:]))
"""


async def test_a_failing_stream_is_logged_and_the_agent_keeps_serving(agent: AgentEnv) -> None:
    agent.expect_errors = True
    plane = await agent.start(wrapper=BROKEN_FILE_STAT)
    control = await plane.control()
    await control.wait_state("ready")

    stream = await control.open("file_stat", path=".")
    assert await stream.recv() is None

    report = await control.wait_for(lambda m: m["type"] == "log" and m["source"] == "agent")
    assert report["lines"][0].endswith("(file_stat) failed:")
    assert report["lines"][-1] == "RuntimeError: boom"
    assert "dockyard-agent: RuntimeError: boom" in agent.stderr()
    output = await (await control.open("exec", argv=["echo", "still here"])).collect()
    assert output.stdout == b"still here\n"


async def test_nul_bytes_and_odd_sizes_are_refused_cleanly(control: Control) -> None:
    assert await request(control, "file_stat", path="a\0b") == {
        "type": "error",
        "error": "file_stat needs a path: a non-empty string without NUL bytes",
        "code": "EINVAL",
    }
    output = await (await control.open("exec", argv=["echo", "a\0b"])).collect()
    assert output.exit == {"type": "exit", "exit_code": 126, "signal": None}
    assert output.stderr == b"echo: embedded null byte\n"

    terminal = await control.open("exec", argv=["stty", "size"], pty={"width": 10**9, "height": -5})
    assert (await terminal.collect()).stdout == b"1 65535\r\n"

    dial = await control.open("dial", host="x" * 300, port=80)
    assert (await dial.recv_json())["type"] == "error"

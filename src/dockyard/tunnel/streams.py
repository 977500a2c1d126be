"""Client-side operations on agent streams: exec, and the file operations of the files API."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from dockyard.errors import BadRequest, Conflict, DockyardError, Forbidden, NotFound, PayloadTooLarge
from dockyard.tunnel import frames
from dockyard.tunnel.frames import FrameStream, ProtocolError
from dockyard.tunnel.hub import AgentHub
from dockyard_sdk import models as wire

# errno names the agent relays, and what they mean to an API client.
_ERRNO_ERRORS: dict[str, type[DockyardError]] = {
    "ENOENT": NotFound,
    "EACCES": Forbidden,
    "EPERM": Forbidden,
    "EROFS": Forbidden,
    "EEXIST": Conflict,
    "ENOTEMPTY": Conflict,
    "EBUSY": Conflict,
    "ENOSPC": PayloadTooLarge,
    "EDQUOT": PayloadTooLarge,
}
KILL_GRACE = 2.0


class AgentError(DockyardError):
    """The agent refused an operation; the message is the agent's own (e.g. `Permission denied: /etc/x`)."""

    status_code = 400


def agent_error(message: dict[str, Any]) -> DockyardError:
    code = str(message.get("code", ""))
    text = str(message.get("error", "the agent refused the operation"))
    error_class = _ERRNO_ERRORS.get(code, AgentError)
    return error_class(text, detail=f"errno {code}" if code else "")


async def _expect_ok(stream: FrameStream) -> dict[str, Any]:
    try:
        message = await stream.read_json()
    except (EOFError, ProtocolError) as exc:
        raise AgentError("The agent closed the stream without an answer.") from exc
    if message.get("type") != "ok":
        raise agent_error(message)
    return message


def exec_params(command: list[str] | str, cwd: str | None, env: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {"argv": command} if isinstance(command, list) else {"shell": command}
    if cwd:
        params["cwd"] = cwd
    if env:
        params["env"] = env
    return params


async def exec_collect(hub: AgentHub, workspace_id: str, request: wire.ExecRequest) -> wire.ExecResult:
    """Run a command to completion; output past the limit is dropped, output before a timeout is kept."""
    started = time.perf_counter()
    stream = await hub.open(workspace_id, "exec", **exec_params(request.command, request.cwd, request.env))
    limit = request.max_output_bytes
    output = {frames.STDOUT: bytearray(), frames.STDERR: bytearray()}
    truncated = {frames.STDOUT: False, frames.STDERR: False}
    exit_message: dict[str, Any] = {}
    timed_out = False

    async def collect() -> None:
        while True:
            kind, payload = await stream.read()
            if kind in output:
                room = limit - len(output[kind])
                if len(payload) > room:
                    truncated[kind] = True
                output[kind] += payload[: max(room, 0)]
            elif kind == frames.JSON:
                message = json.loads(payload)
                if message.get("type") == "exit":
                    exit_message.update(message)
                    return

    try:
        if request.stdin:
            await stream.write(frames.STDIN, request.stdin.encode())
        await stream.write(frames.EOF)
        try:
            await asyncio.wait_for(collect(), request.timeout)
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(ConnectionError, OSError):
                await stream.send_json({"type": "kill"})
            with contextlib.suppress(TimeoutError, EOFError, ProtocolError):
                await asyncio.wait_for(collect(), KILL_GRACE)
        except EOFError as exc:
            raise AgentError("The agent closed the stream before the command exited.") from exc
    finally:
        await stream.close()
    texts = {
        kind: encode_output(data, base64=request.encoding == "base64", truncated=truncated[kind])
        for kind, data in output.items()
    }
    hit = exit_message.get("limits_hit")
    return wire.ExecResult(
        exit_code=None if timed_out else exit_message.get("exit_code"),
        signal=exit_message.get("signal") or ("KILL" if timed_out else None),
        stdout=texts[frames.STDOUT][0],
        stderr=texts[frames.STDERR][0],
        encoding=request.encoding,
        lossy=texts[frames.STDOUT][1] or texts[frames.STDERR][1],
        stdout_truncated=truncated[frames.STDOUT],
        stderr_truncated=truncated[frames.STDERR],
        timed_out=timed_out,
        limits_hit=[name for name in ("memory", "pids") if isinstance(hit, list) and name in hit],
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def encode_output(data: bytes | bytearray, *, base64: bool, truncated: bool) -> tuple[str, bool]:
    """Output as the request asked, and whether UTF-8 decoding had to replace anything."""
    if base64:
        return binascii.b2a_base64(data, newline=False).decode("ascii"), False
    if truncated:
        # The cut at the limit may fall inside a character; that half character is not a decoding loss.
        for back in range(1, min(4, len(data)) + 1):
            lead = data[-back]
            if lead & 0xC0 != 0x80:
                need = (
                    2
                    if lead & 0xE0 == 0xC0
                    else 3
                    if lead & 0xF0 == 0xE0
                    else 4
                    if lead & 0xF8 == 0xF0
                    else 1
                )
                if need > back:
                    data = data[:-back]
                break
    try:
        return bytes(data).decode("utf-8"), False
    except UnicodeDecodeError:
        return bytes(data).decode("utf-8", errors="replace"), True


async def read_file(
    hub: AgentHub, workspace_id: str, path: str
) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
    """The file's metadata, then its content in chunks (the stream closes when the iterator ends)."""
    stream = await hub.open(workspace_id, "file_read", path=path)
    try:
        meta = await _expect_ok(stream)
    except BaseException:
        await stream.close()
        raise

    async def next_chunk() -> bytes | None:
        while True:
            try:
                kind, payload = await stream.read()
            except (EOFError, ProtocolError) as exc:
                raise AgentError("The agent closed the stream before the end of the file.") from exc
            if kind == frames.EOF:
                return None
            if kind == frames.STDOUT:
                return payload
            if kind == frames.JSON:
                raise agent_error(json.loads(payload))

    # The size the agent reports is what stat() said, and files such as /proc/cpuinfo say 0 whatever they
    # hold; the first read also fails for some (EIO from /proc/self/mem). Reading the first chunk before
    # answering turns such a failure into an error reply rather than a response cut short.
    try:
        first = await next_chunk()
    except BaseException:
        await stream.close()
        raise

    async def content() -> AsyncIterator[bytes]:
        try:
            chunk = first
            while chunk is not None:
                yield chunk
                chunk = await next_chunk()
        finally:
            await stream.close()

    return meta, content()


async def write_file(
    hub: AgentHub,
    workspace_id: str,
    path: str,
    chunks: AsyncIterator[bytes],
    *,
    limit: int,
    mode: int | None = None,
) -> wire.FileWritten:
    """Stream `chunks` into the file; the agent renames it into place only once every byte arrived."""
    stream = await hub.open(workspace_id, "file_write", path=path, mode=mode, mkdir=True)
    written = 0
    try:
        async for chunk in chunks:
            written += len(chunk)
            if written > limit:
                # Closing before EOF makes the agent drop its temporary file: nothing half-written remains.
                raise PayloadTooLarge(f"The upload is larger than {limit // 2**20} MB.")
            if chunk:
                await stream.write(frames.STDIN, chunk)
        await stream.write(frames.EOF)
        answer = await _expect_ok(stream)
    finally:
        await stream.close()
    return wire.FileWritten(path=path, size=int(answer.get("size", written)))


async def simple(hub: AgentHub, workspace_id: str, kind: str, **params: Any) -> dict[str, Any]:
    """One request, one answer: file_delete, file_list, file_stat."""
    stream = await hub.open(workspace_id, kind, **params)
    try:
        return await _expect_ok(stream)
    finally:
        await stream.close()


async def list_files(hub: AgentHub, workspace_id: str, path: str) -> wire.FileList:
    answer = await simple(hub, workspace_id, "file_list", path=path)
    entries = answer.get("entries")
    if not isinstance(entries, list):
        raise BadRequest("The agent sent a malformed listing.")
    return wire.FileList(path=path, entries=[wire.FileEntry(**entry) for entry in entries])

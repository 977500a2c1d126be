"""The frame format of docs/AGENT_PROTOCOL.md: `type u8 | length u32 | payload`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from typing import Any

JSON = 1
STDIN = 2
STDOUT = 3
STDERR = 4
EOF = 5
MAX_PAYLOAD = 1 << 20
_HEADER = struct.Struct(">BI")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of the protocol."""


class FrameStream:
    """One connection from an agent, read and written as frames (or as raw bytes after a `dial`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> tuple[int, bytes]:
        """The next frame; raises EOFError when the connection ends."""
        try:
            header = await self.reader.readexactly(_HEADER.size)
            kind, length = _HEADER.unpack(header)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame of {length} bytes is over the limit")
            payload = await self.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as exc:
            raise EOFError from exc
        except ConnectionError as exc:
            raise EOFError from exc
        return kind, payload

    async def read_json(self) -> dict[str, Any]:
        kind, payload = await self.read()
        if kind != JSON:
            raise ProtocolError(f"expected a JSON frame, got type {kind}")
        message = json.loads(payload)
        if not isinstance(message, dict):
            raise ProtocolError("a JSON frame must hold an object")
        return message

    def write_nowait(self, kind: int, payload: bytes = b"") -> None:
        if self.writer.is_closing():
            # uvloop raises RuntimeError on a closed transport (asyncio's own loop drops the bytes): either
            # way the peer is gone, which callers handle as a ConnectionError.
            raise ConnectionResetError("the connection is closed")
        # Large payloads are split, so a caller may hand over any chunk it read.
        if len(payload) <= MAX_PAYLOAD:
            self.writer.write(_HEADER.pack(kind, len(payload)) + payload)
            return
        view = memoryview(payload)
        for start in range(0, len(payload), MAX_PAYLOAD):
            chunk = view[start : start + MAX_PAYLOAD]
            self.writer.write(_HEADER.pack(kind, len(chunk)) + bytes(chunk))

    async def write(self, kind: int, payload: bytes = b"") -> None:
        self.write_nowait(kind, payload)
        await self.writer.drain()

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.write(JSON, json.dumps(message, separators=(",", ":")).encode())

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

"""The server name a TLS client asks for (RFC 8446 4.1.2, RFC 6066 3), read from its ClientHello before anything
is dialled: what the intercepting proxy checks a port-443 connection against. Nothing is decrypted; the bytes
read are sent on to the upstream unchanged."""

from __future__ import annotations

import asyncio
import struct

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
# A ClientHello with post-quantum key shares is a few KB; one of more than this is not one a client sends.
MAX_HELLO = 64 * 1024


class NotTls(ValueError):
    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw  # what was read before it was clear, to be sent on as it came


async def read_hello(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    """(the bytes read, the SNI or "" when the hello names none); NotTls when the client does not start with a
    ClientHello. A hello may span records: they are read until the handshake message is complete."""
    raw = b""
    message = b""
    while True:
        try:
            header = await reader.readexactly(5)
        except asyncio.IncompleteReadError as exc:
            raise NotTls("the client ended before a TLS record", raw + exc.partial) from exc
        raw += header
        kind, _version, length = struct.unpack("!BHH", header)
        if kind != _HANDSHAKE:
            raise NotTls("the first record is not a TLS handshake", raw)
        try:
            payload = await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise NotTls("the client ended inside a TLS record", raw + exc.partial) from exc
        raw += payload
        message += payload
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                raise NotTls("the first handshake message is not a ClientHello", raw)
            needed = 4 + int.from_bytes(message[1:4], "big")
            if len(message) >= needed:
                try:
                    return raw, server_name(message[4:needed])
                except NotTls as exc:
                    raise NotTls(str(exc), raw) from exc
        if len(raw) > MAX_HELLO:
            raise NotTls("the ClientHello is too long", raw)


def server_name(hello: bytes) -> str:
    """The host_name of a ClientHello's body (after the handshake header), lower case; "" when there is none."""
    try:
        offset = 2 + 32  # client_version, random
        offset += 1 + hello[offset]  # session id
        offset += 2 + int.from_bytes(hello[offset : offset + 2], "big")  # cipher suites
        offset += 1 + hello[offset]  # compression methods
        if offset + 2 > len(hello):
            return ""  # no extensions at all
        end = min(len(hello), offset + 2 + int.from_bytes(hello[offset : offset + 2], "big"))
        offset += 2
        while offset + 4 <= end:
            kind, length = struct.unpack("!HH", hello[offset : offset + 4])
            body = hello[offset + 4 : offset + 4 + length]
            offset += 4 + length
            if kind != _SERVER_NAME:
                continue
            position = 2  # the list's length
            while position + 3 <= len(body):
                name_type, name_length = (
                    body[position],
                    int.from_bytes(body[position + 1 : position + 3], "big"),
                )
                name = body[position + 3 : position + 3 + name_length]
                position += 3 + name_length
                if name_type == 0:  # host_name
                    return name.decode("ascii", "replace").lower().rstrip(".")
            return ""
    except IndexError as exc:
        raise NotTls("the ClientHello is cut short") from exc
    return ""

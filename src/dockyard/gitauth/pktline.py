"""Git's pkt-line format, as much of it as the git proxy reads and writes: the ref-update commands at the
start of a `git-receive-pack` request, and the report git prints when a push is refused
(git's Documentation/gitprotocol-pack.txt, "Reference Update Request" and "Report Status")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

FLUSH = b"0000"
ZERO_OIDS = {"0" * 40, "0" * 64}
# All the commands of one push, read before anything is forwarded; far beyond any real push.
MAX_COMMANDS_BYTES = 4 << 20


class PktError(ValueError):
    """The request does not hold the ref-update commands git sends."""


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def delete(self) -> bool:
        return self.new in ZERO_OIDS


@dataclass(frozen=True)
class Commands:
    updates: tuple[RefUpdate, ...]
    capabilities: frozenset[str]
    # The raw bytes read so far (the commands and whatever followed them in the same chunks), to forward as is.
    head: bytes


def pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


async def read_commands(body: AsyncIterator[bytes]) -> Commands:
    """Read `body` up to the flush-pkt that ends the command list and parse the commands.

    Shallow lines may come first; a signed push (`push-cert`) is refused, since its certificate could not be
    checked against the updates it carries.
    """
    buffer = b""
    offset = 0
    lines: list[bytes] = []
    while True:
        while len(buffer) - offset >= 4:
            size_text = buffer[offset : offset + 4]
            try:
                size = int(size_text, 16)
            except ValueError:
                raise PktError(f"not a pkt-line length: {size_text!r}") from None
            if size == 0:
                return _parse(lines, buffer)
            if size < 4:
                raise PktError(f"unexpected special packet {size_text!r} in the command list")
            if len(buffer) - offset < size:
                break
            lines.append(buffer[offset + 4 : offset + size])
            offset += size
        if len(buffer) > MAX_COMMANDS_BYTES:
            raise PktError("the command list is too long")
        chunk = await anext(body, b"")
        if not chunk:
            raise PktError("the request ended before its command list did")
        buffer += chunk


def _parse(lines: list[bytes], head: bytes) -> Commands:
    updates: list[RefUpdate] = []
    capabilities: frozenset[str] = frozenset()
    for index, raw in enumerate(lines):
        line, _, caps = raw.rstrip(b"\n").partition(b"\0")
        if line.startswith(b"shallow ") and not updates:
            continue
        if line.startswith(b"push-cert"):
            raise PktError("signed pushes (push-cert) are not supported through the Dockyard git proxy")
        if not updates and index == _first_command(lines):
            capabilities = frozenset(caps.decode("utf-8", "replace").split())
        parts = line.decode("utf-8", "replace").split(" ")
        if len(parts) != 3 or not all(_is_oid(p) for p in parts[:2]) or not parts[2]:
            raise PktError(f"not a ref update command: {line[:200]!r}")
        updates.append(RefUpdate(old=parts[0], new=parts[1], ref=parts[2]))
    if not updates:
        raise PktError("the request updates no ref")
    return Commands(updates=tuple(updates), capabilities=capabilities, head=head)


def _first_command(lines: list[bytes]) -> int:
    for index, line in enumerate(lines):
        if not line.startswith(b"shallow "):
            return index
    return len(lines)


def _is_oid(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def refusal_report(
    updates: tuple[RefUpdate, ...], reasons: dict[str, str], capabilities: frozenset[str]
) -> bytes:
    """The receive-pack result refusing every update (`ng <ref> <reason>`): git prints each as
    `! [remote rejected] … (reason)`. With a side-band the report goes in band 1 and the first reason also in
    band 2, which git prints as `remote: …`."""
    report = pkt(b"unpack ok\n")
    for update in updates:
        reason = reasons.get(update.ref, "not pushed: another ref in this push was refused")
        report += pkt(f"ng {update.ref} {reason}\n".encode())
    report += FLUSH
    if not capabilities & {"side-band-64k", "side-band"}:
        return report
    limit = 65515 if "side-band-64k" in capabilities else 995
    out = b""
    first = next(iter(reasons.values()), "")
    # Sent even to a `quiet` client: quiet silences progress, not errors (receive-pack's own rp_error does too).
    if first:
        out += pkt(b"\x02" + f"{first}\n".encode())
    for start in range(0, len(report), limit):
        out += pkt(b"\x01" + report[start : start + limit])
    return out + FLUSH


def error_advertisement(message: str) -> bytes:
    """An `info/refs` answer git turns into `fatal: remote error: <message>`."""
    return pkt(f"ERR {message}\n".encode())

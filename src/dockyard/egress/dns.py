"""Just enough of the DNS wire format (RFC 1035) to answer a workspace's resolver: one question in, A records or
NXDOMAIN out. Nothing is forwarded as it came in; the proxy resolves allowed names itself and answers."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A = 1
TYPE_AAAA = 28
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
TTL = 30


class Malformed(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    raw: bytes  # the question section as sent, echoed in the answer


def parse(message: bytes) -> Question:
    if len(message) < 12:
        raise Malformed("shorter than a header")
    ident, flags, qdcount = struct.unpack("!HHH", message[:6])
    if flags & 0x8000 or qdcount != 1:
        raise Malformed("not a query with one question")
    labels: list[str] = []
    offset = 12
    while True:
        if offset >= len(message):
            raise Malformed("name runs past the end")
        length = message[offset]
        offset += 1
        if length == 0:
            break
        if length > 63:  # compression pointers have no place in a question's name
            raise Malformed("bad label")
        label = message[offset : offset + length]
        if len(label) != length:
            raise Malformed("label runs past the end")
        labels.append(label.decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(message):
        raise Malformed("no type and class")
    qtype, qclass = struct.unpack("!HH", message[offset : offset + 4])
    return Question(ident, flags, ".".join(labels), qtype, qclass, message[12 : offset + 4])


def answer(question: Question, rcode: int, addresses: tuple[str, ...] = ()) -> bytes:
    """The response: the question echoed, then one A record per address."""
    # QR, the query's opcode and RD, RA; authoritative for nothing.
    flags = 0x8000 | (question.flags & 0x7900) | 0x0080 | rcode
    records = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, 1, TTL, 4) + ipaddress.IPv4Address(address).packed
        for address in addresses
    )
    header = struct.pack("!HHHHHH", question.id, flags, 1, len(addresses), 0, 0)
    return header + question.raw + records


def error(message: bytes, rcode: int) -> bytes | None:
    """FORMERR-style answer to a message that could not be parsed, when it at least has an id."""
    if len(message) < 2:
        return None
    return message[:2] + struct.pack("!HHHHH", 0x8000 | rcode, 0, 0, 0, 0)

"""Egress allow-list entries (`network.allow` in `dockyard.yaml`): what one entry may be, and what it allows.

An entry is one of

- a host name, `github.com`: that host only (not its subdomains);
- a wildcard, `*.pypi.org`: any name below `pypi.org` (`files.pypi.org`, `a.b.pypi.org`), not `pypi.org` itself;
- an IPv4 address, `10.1.2.3`, or a CIDR, `10.1.0.0/16`: those addresses, through the proxy and directly;

each optionally with `:port` (`github.com:22`), which limits it to that port. Anything else (a URL, a path,
spaces, an IPv6 address, a bare `*`) is refused with the reason, at push.

Shared by the manifest check (the CLI checks before uploading, the server at push) and the server's egress proxy,
so that what is accepted is exactly what is enforced. Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class EntryKind(StrEnum):
    HOST = "host"
    WILDCARD = "wildcard"
    ADDRESS = "address"  # one IPv4 address, or a CIDR


@dataclass(frozen=True)
class AllowEntry:
    kind: EntryKind
    # HOST: the name; WILDCARD: the domain below which names match (without `*.`); ADDRESS: the network.
    value: str
    port: int | None = None

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.value)

    def matches_name(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        name = host.lower().rstrip(".")
        if self.kind == EntryKind.HOST:
            return name == self.value
        if self.kind == EntryKind.WILDCARD:
            return name.endswith("." + self.value)
        return False

    def matches_address(self, address: ipaddress.IPv4Address, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        return self.kind == EntryKind.ADDRESS and address in self.network


def _hostname_problem(name: str) -> str:
    if len(name) > 253:
        return "is longer than 253 characters"
    labels = name.split(".")
    if any(not _LABEL.match(label) for label in labels):
        return "is not a host name (letters, digits and '-' in dot-separated labels)"
    if labels[-1].isdigit():
        return "is neither a host name nor a complete IPv4 address"
    return ""


def _split_port(text: str) -> tuple[str, int | None, str]:
    """(rest, port, problem) for `rest:port`."""
    if text.count(":") != 1:
        return text, None, ""
    rest, _, port_text = text.partition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return rest, None, f"has port {port_text!r}; a port is a number from 1 to 65535"
    return rest, int(port_text), ""


def parse_entry(text: str) -> tuple[AllowEntry | None, str]:
    """The entry, or None and why `text` is not one (a message that names the value and what to write)."""
    shown = repr(text)
    if not text.strip():
        return None, "is empty; write a host name, a *.domain wildcard, an IPv4 address or a CIDR"
    if text != text.strip() or any(c.isspace() for c in text):
        return None, f"{shown} contains spaces; write one host, wildcard, address or CIDR per entry"
    if "://" in text:
        host = text.split("://", 1)[1].split("/", 1)[0]
        return None, f"{shown} is a URL; write the host name alone, e.g. {host or 'github.com'}"
    if text.count(":") > 1 or text.startswith("["):
        return None, f"{shown} looks like an IPv6 address; workspace networks are IPv4 only"
    rest, port, problem = _split_port(text.lower())
    if problem:
        return None, f"{shown} {problem}"
    if "/" in rest:
        prefix, _, bits = rest.partition("/")
        if not bits.isdigit():
            return None, f"{shown} is a path; write the host name alone, e.g. {prefix or 'github.com'}"
        if port is not None:
            return None, f"{shown}: a CIDR cannot have a port; write the range alone"
        try:
            network = ipaddress.IPv4Network(rest, strict=True)
        except ValueError as exc:
            return None, f"{shown} is not an IPv4 CIDR ({exc})"
        return AllowEntry(EntryKind.ADDRESS, str(network)), ""
    try:
        address = ipaddress.IPv4Address(rest)
    except ValueError:
        pass
    else:
        return AllowEntry(EntryKind.ADDRESS, f"{address}/32", port), ""
    if rest.startswith("*."):
        domain = rest[2:]
        problem = _hostname_problem(domain)
        if problem or "*" in domain:
            return (
                None,
                f"{shown}: after '*.' comes a domain, e.g. *.pypi.org; {domain!r} {problem or 'is not'}",
            )
        return AllowEntry(EntryKind.WILDCARD, domain, port), ""
    if "*" in rest:
        return (
            None,
            f"{shown}: a wildcard is written *.domain (e.g. *.pypi.org) and matches the names below it",
        )
    problem = _hostname_problem(rest.rstrip("."))
    if problem:
        return None, f"{shown} {problem}"
    return AllowEntry(EntryKind.HOST, rest.rstrip("."), port), ""


def parse_entries(entries: list[str] | tuple[str, ...]) -> list[AllowEntry]:
    """Entries already checked at push; raises ValueError naming the first that is not one."""
    parsed = []
    for index, text in enumerate(entries):
        entry, problem = parse_entry(text)
        if entry is None:
            raise ValueError(f"network.allow.{index}: {problem}")
        parsed.append(entry)
    return parsed

"""What one workspace's allow-list lets through: names (with their port) for the proxy and DNS, addresses for
IP literals."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dockyard_sdk.egress import AllowEntry, EntryKind, parse_entries


@dataclass(frozen=True)
class Policy:
    entries: tuple[AllowEntry, ...]

    @classmethod
    def of(cls, allow: tuple[str, ...] | list[str]) -> Policy:
        return cls(tuple(parse_entries(list(allow))))

    def allows(self, host: str, port: int) -> bool:
        """Whether a connection to `host` (a name or an IPv4 literal) on `port` may be made."""
        address = _ipv4(host)
        if address is not None:
            return any(entry.matches_address(address, port) for entry in self.entries)
        return any(entry.matches_name(host, port) for entry in self.entries)

    def resolves(self, name: str) -> bool:
        """Whether DNS answers for `name`: it is allowed on some port."""
        return any(
            entry.kind != EntryKind.ADDRESS and entry.matches_name(name, entry.port or 0)
            for entry in self.entries
        )

    @property
    def networks(self) -> tuple[str, ...]:
        """The CIDRs (and single addresses) the workspace may also reach directly, without the proxy."""
        return tuple(
            entry.value for entry in self.entries if entry.kind == EntryKind.ADDRESS and not entry.port
        )


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None

"""How the server runs git itself against a user's repository (a dev container's repository at push, the git
mirrors of agent fleets): the repository's own protocol only, the credential in a header, and libcurl pinned to
the addresses the outbound policy checked."""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from dockyard.outbound import OutboundPolicy, resolve_checked


@dataclass(frozen=True)
class Destination:
    """A repository's host, port and the addresses it resolved to, each checked against the outbound policy."""

    host: str
    port: int
    addresses: tuple[str, ...]

    def curl_resolve(self) -> str:
        """libcurl's `HOST:PORT:ADDRESS,…`, for git's `http.curloptResolve` ("" for an address, which has
        nothing to pin: libcurl takes no IPv6 address as a HOST)."""
        if self.host in self.addresses:
            return ""
        return f"{self.host}:{self.port}:" + ",".join(f"[{a}]" if ":" in a else a for a in self.addresses)

    def reachable(self, timeout: float) -> bool:
        """Whether one of the addresses accepts a connection within `timeout`: git itself would wait for the
        kernel's own connect timeout (minutes) on a host that drops packets."""
        for address in self.addresses:
            try:
                socket.create_connection((address, self.port), timeout=timeout).close()
            except OSError:
                continue
            return True
        return False


def destination(repo: str, outbound: OutboundPolicy) -> Destination:
    """Where an http(s) repository is. Raises OutboundDenied, or OSError when the name does not resolve."""
    url = urlsplit(repo)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    return Destination(host, port, tuple(resolve_checked(outbound, host, port)))


def git_env(
    *, home: str, pinned: str, credential: tuple[str, str] | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of a git the server runs: no system or user configuration, no prompt, and the
    settings that keep it to the repository (`extra` adds more)."""
    config = {
        # Only the repository's own protocol: no file://, ssh or ext:: through a crafted ref or submodule.
        "protocol.allow": "never",
        "protocol.http.allow": "always",
        "protocol.https.allow": "always",
        "credential.helper": "",
        "http.followRedirects": "false",
        # To the addresses checked now only: a name re-pointed afterwards (DNS rebinding) is not looked up again.
        "http.curloptResolve": pinned,
        **(extra or {}),
    }
    if credential is not None:
        # A header rather than the URL or a helper: the secret is in no argument list and no file.
        token = base64.b64encode(f"{credential[0]}:{credential[1]}".encode()).decode()
        config["http.extraHeader"] = f"Authorization: Basic {token}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": str(len(config)),
        **{f"GIT_CONFIG_KEY_{i}": key for i, key in enumerate(config)},
        **{f"GIT_CONFIG_VALUE_{i}": value for i, value in enumerate(config.values())},
    }

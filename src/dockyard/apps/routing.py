"""Where an app request goes: `/@<owner>/<workspace>/apps/<slug>/…`, `/@<owner>/<workspace>/ports/<port>/…`,
or, under `--wildcard-access-url '*.apps.example'`, the host `<slug or port>--<workspace>--<owner>.apps.example`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from dockyard.errors import BadRequest

PATH_PREFIX = "/@"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_PATH = re.compile(
    rf"^/@(?P<owner>{_NAME})/(?P<workspace>{_NAME})/(?P<kind>apps|ports)/(?P<key>[^/]+)(?P<rest>/.*)?$"
)
_LABEL = re.compile(
    r"^(?P<key>[a-z0-9][a-z0-9-]*?)--(?P<workspace>[a-z0-9][a-z0-9-]*?)--(?P<owner>[a-z0-9][a-z0-9-]*)$"
)
# A path on every app host that the proxy answers itself (the login ticket), never the app.
AUTH_PATH = "/__dockyard/auth"


@dataclass(frozen=True)
class Target:
    owner: str
    workspace: str
    slug: str | None
    port: int | None
    # The part of the URL that is Dockyard's (empty on an app's own host), and the rest, which the app sees.
    prefix: str
    rest: str
    subdomain: bool = False

    @property
    def label(self) -> str:
        return self.slug if self.slug is not None else str(self.port)


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise BadRequest(f"Port {value[:16]!r} is not a port number.", detail="Ports are 1 to 65535.")
    return int(value)


def parse_path(path: str) -> Target | None:
    """The target of a path-style app URL; None when the path is not one (a malformed port is a 400)."""
    match = _PATH.match(path)
    if match is None:
        return None
    kind, key = match["kind"], unquote(match["key"])
    prefix = f"/@{match['owner']}/{match['workspace']}/{kind}/{match['key']}"
    rest = match["rest"] or ""
    if kind == "ports":
        return Target(match["owner"], match["workspace"], None, _port(key), prefix, rest)
    return Target(match["owner"], match["workspace"], key, None, prefix, rest)


@dataclass(frozen=True)
class Wildcard:
    """`*.apps.example` (optionally with `:port` and a scheme): the suffix app hosts end with."""

    suffix: str
    port: int | None
    scheme: str

    @classmethod
    def parse(cls, value: str) -> Wildcard:
        scheme = "http"
        text = value.strip()
        if "://" in text:
            scheme, _, text = text.partition("://")
        text = text.rstrip("/")
        host, _, port = text.partition(":")
        if not host.startswith("*.") or len(host) < 4 or "*" in host[1:] or (port and not port.isdigit()):
            raise ValueError(
                f"{value!r} is not a wildcard host such as '*.apps.example' or '*.apps.example:8080'"
            )
        if scheme not in ("http", "https"):
            raise ValueError(f"{value!r}: the scheme must be http or https")
        return cls(host[1:].lower(), int(port) if port else None, scheme)

    def match(self, host_header: str) -> Target | None:
        host = host_header.lower()
        if host.startswith("["):
            return None
        host = host.rsplit(":", 1)[0] if ":" in host else host
        if not host.endswith(self.suffix):
            return None
        label = host[: -len(self.suffix)]
        parsed = _LABEL.match(label)
        if parsed is None:
            return None
        key = parsed["key"]
        slug, port = (None, _port(key)) if key.isdigit() else (key, None)
        return Target(parsed["owner"], parsed["workspace"], slug, port, "", "", subdomain=True)

    def origin(self, target_label: str, workspace: str, owner: str) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{target_label}--{workspace}--{owner}{self.suffix}{port}".lower()


def path_url(
    base: str, owner: str, workspace: str, *, slug: str | None = None, port: int | None = None
) -> str:
    kind, key = ("apps", quote(slug, safe="")) if slug is not None else ("ports", str(port))
    return f"{base.rstrip('/')}/@{owner}/{workspace}/{kind}/{key}/"

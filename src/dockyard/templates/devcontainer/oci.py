"""Dev container features published as OCI artifacts (containers.dev/implementors/features-distribution):
`registry/namespace/name:tag` resolves through the registry's HTTP API v2 to a manifest whose one layer
(`application/vnd.devcontainers.layer.v1+tar`) holds devcontainer-feature.json and install.sh.

The fetch is an outbound request from wherever the plan is read (the server at push and at start, the CLI for
`dockyard up --dry-run`), bounded by timeouts and a size limit. Blobs are checked against their sha256 digest and
unpacked into a cache folder per digest, so that a version's features are fetched once. A tag is resolved
to its manifest's digest, which a lockfile (lockfile.py) then pins: a pinned fetch asks the registry for that
manifest only when the cache does not hold it and its layer, so a pinned feature needs no registry to start a
workspace and never changes under it. Every request, redirects and the token service included, keeps out of the
ranges the server does not connect to for its users (dockyard/outbound.py): a template's author chooses the
registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from dockyard.outbound import DEFAULT_POLICY, GuardedTransport, OutboundDenied, OutboundPolicy

LAYER_TYPE = "application/vnd.devcontainers.layer.v1+tar"
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
)
TIMEOUT = httpx.Timeout(20.0, connect=5.0)
MAX_MANIFEST_BYTES = 1 << 20
MAX_BLOB_BYTES = 32 << 20
_REF = re.compile(
    r"^(?P<registry>[A-Za-z0-9.-]+(?::\d+)?)/(?P<name>[a-z0-9._/-]+?)(?::(?P<tag>[A-Za-z0-9_.-]{1,128})|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')

_cache_dir: Path | None = None
_outbound = DEFAULT_POLICY


class FetchFailed(Exception):
    """Why a feature could not be fetched, worded for the template's author."""


@dataclass(frozen=True)
class Reference:
    registry: str
    name: str
    tag: str
    """A tag or a sha256 digest."""


def set_cache_dir(path: Path) -> None:
    """Where fetched features are kept (the server: under its data dir). Unset: the user's cache folder."""
    global _cache_dir
    _cache_dir = path


def set_outbound(policy: OutboundPolicy) -> None:
    """The ranges fetches keep out of (the server: its `--outbound-deny`). Unset: the link-local ones."""
    global _outbound
    _outbound = policy


def cache_dir() -> Path:
    if _cache_dir is not None:
        return _cache_dir
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dockyard" / "features"


def parse(key: str) -> Reference | None:
    """An OCI feature reference (`ghcr.io/devcontainers/features/node:1`), or None when `key` is not one."""
    match = _REF.match(key)
    if match is None or (
        "." not in match["registry"] and ":" not in match["registry"] and match["registry"] != "localhost"
    ):
        return None
    return Reference(match["registry"], match["name"], match["digest"] or match["tag"] or "latest")


def registry_of(key: str) -> str:
    """The registry a feature reference names, for messages (a bare `a/b` is ghcr.io's, as the CLI takes it)."""
    if key.startswith(("http://", "https://")):
        return key.split("/")[2]
    ref = parse(key)
    return ref.registry if ref is not None else "ghcr.io"


@dataclass(frozen=True)
class Fetched:
    folder: Path
    """Where the feature's layer is unpacked."""
    manifest_digest: str
    """`sha256:…` of the manifest the tag named (or the pin asked for): what a lockfile pins."""


def fetch(
    ref: Reference, *, pinned: str | None = None, transport: httpx.BaseTransport | None = None
) -> Fetched:
    """The feature's layer, unpacked; FetchFailed says why not. `pinned`: the manifest digest a lockfile holds
    for this reference, fetched in place of the tag. `transport`: for tests."""
    if pinned is not None:
        cached = _cached(pinned)
        if cached is not None:
            return cached
    scheme = "http" if _loopback(ref.registry) else "https"
    base = f"{scheme}://{ref.registry}/v2/{ref.name}"
    wanted = pinned or ref.tag
    try:
        with httpx.Client(
            timeout=TIMEOUT,
            follow_redirects=True,
            max_redirects=5,
            transport=transport or GuardedTransport(_outbound),
        ) as client:
            token = None
            response = _get(client, f"{base}/manifests/{wanted}", _MANIFEST_TYPES, None, MAX_MANIFEST_BYTES)
            if response[0] == 401:
                token = _token(client, response[1])
                response = _get(
                    client, f"{base}/manifests/{wanted}", _MANIFEST_TYPES, token, MAX_MANIFEST_BYTES
                )
            status, _headers, body = response
            shown = f"{ref.name}@{pinned}" if pinned else f"{ref.name}:{ref.tag}"
            if status == 404:
                raise FetchFailed(f"{shown} is not in the registry")
            if status != 200:
                raise FetchFailed(f"the registry answered {status} for the manifest of {shown}")
            manifest_digest = _sha256(body)
            if pinned is not None and manifest_digest != pinned:
                raise FetchFailed(f"the registry's manifest does not match the pinned digest {pinned}")
            digest = _layer_digest(body)
            folder = cache_dir() / digest.replace(":", "-")
            if (folder / "install.sh").is_file():
                _keep_manifest(manifest_digest, body)
                return Fetched(folder, manifest_digest)
            status, _headers, blob = _get(client, f"{base}/blobs/{digest}", "*/*", token, MAX_BLOB_BYTES)
            if status != 200:
                raise FetchFailed(f"the registry answered {status} for the layer {digest}")
    except OutboundDenied as exc:
        raise FetchFailed(str(exc)) from None
    except httpx.ConnectError:
        raise FetchFailed("the registry is not reachable") from None
    except httpx.TimeoutException:
        raise FetchFailed("the registry did not answer in time") from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"the request to the registry failed: {exc}") from None
    check_digest(blob, digest)
    _unpack(blob, folder)
    _keep_manifest(manifest_digest, body)
    return Fetched(folder, manifest_digest)


def check_digest(blob: bytes, digest: str) -> None:
    if _sha256(blob) != digest:
        raise FetchFailed(f"the layer does not match its digest {digest}")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest_file(digest: str) -> Path:
    return cache_dir() / "manifests" / digest.replace(":", "-")


def _cached(pinned: str) -> Fetched | None:
    """A pinned feature from the cache alone: its manifest (checked against the pin again, as the cache is a
    folder on disk) and its unpacked layer."""
    if not _DIGEST.match(pinned):
        return None
    try:
        body = _manifest_file(pinned).read_bytes()
    except OSError:
        return None
    if _sha256(body) != pinned:
        return None
    try:
        folder = cache_dir() / _layer_digest(body).replace(":", "-")
    except FetchFailed:
        return None
    return Fetched(folder, pinned) if (folder / "install.sh").is_file() else None


def _keep_manifest(digest: str, body: bytes) -> None:
    """Written whole or not at all: a reader checks what it finds against the digest anyway."""
    target = _manifest_file(digest)
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    with os.fdopen(handle, "wb") as out:
        out.write(body)
    os.replace(staging, target)


def _loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")


def _get(
    client: httpx.Client, url: str, accept: str, token: str | None, limit: int
) -> tuple[int, httpx.Headers, bytes]:
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with client.stream("GET", url, headers=headers) as response:
        body = bytearray()
        if response.status_code == 200:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise FetchFailed(f"{url} is larger than {limit} bytes")
        return response.status_code, response.headers, bytes(body)


def _token(client: httpx.Client, headers: httpx.Headers) -> str:
    """The anonymous bearer token the registry's challenge (`WWW-Authenticate: Bearer realm=...`) points to."""
    challenge = headers.get("www-authenticate", "")
    if not challenge.lower().startswith("bearer "):
        raise FetchFailed("the registry asks for credentials; only public features can be fetched")
    fields = dict(_CHALLENGE.findall(challenge))
    realm = fields.pop("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise FetchFailed("the registry's token challenge names no realm")
    response = client.get(realm, params=fields)
    if response.status_code != 200:
        raise FetchFailed(f"the registry refused an anonymous token ({response.status_code})")
    try:
        data = response.json()
    except ValueError:
        raise FetchFailed("the registry's token answer is not JSON") from None
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str):
        raise FetchFailed("the registry's token answer holds no token")
    return token


def _layer_digest(body: bytes) -> str:
    try:
        manifest = json.loads(body)
    except ValueError:
        raise FetchFailed("the manifest is not JSON") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    found = [
        layer.get("digest")
        for layer in layers or []
        if isinstance(layer, dict) and layer.get("mediaType") == LAYER_TYPE
    ]
    if len(found) != 1 or not isinstance(found[0], str) or not _DIGEST.match(found[0]):
        raise FetchFailed(f"the manifest has no single {LAYER_TYPE} layer with a sha256 digest")
    return found[0]


def _unpack(blob: bytes, folder: Path) -> None:
    """Regular files only, no paths outside the folder; written to a temporary folder, then renamed, so that
    a half-written folder is never taken for a feature."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                name = member.name.lstrip("./") if member.name.startswith("./") else member.name
                if not member.isfile() or not name:
                    continue
                parts = name.split("/")
                if name.startswith("/") or ".." in parts:
                    raise FetchFailed(f"the layer holds a path outside the feature: {member.name}")
                handle = tar.extractfile(member)
                if handle is not None:
                    files[name] = handle.read()
    except tarfile.TarError as exc:
        raise FetchFailed(f"the layer is not a tar archive: {exc}") from None
    if "devcontainer-feature.json" not in files or "install.sh" not in files:
        raise FetchFailed("the layer needs devcontainer-feature.json and install.sh")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".partial-"))
    for name, data in files.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    try:
        staging.rename(folder)
    except OSError:  # another fetch of the same digest won
        for path in sorted(staging.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        staging.rmdir()


def read_folder(folder: Path) -> dict[str, bytes]:
    """The unpacked feature's files, relative to its folder."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

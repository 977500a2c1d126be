"""The dev container lockfile (containers.dev, `devcontainer-lock.json` next to the configuration): each OCI
feature's reference, as written in `features`, pinned to the digest of the manifest it resolved to.

A lockfile among a template's files pins its features: they are fetched by digest, so a moved tag changes
nothing and a registry that is down stops no workspace whose features are cached. When a version is pushed
the server writes the lockfile it resolved into the version's files (as the devcontainer CLI writes it into the
repository): a version then starts with the features it was pushed with, on any replica, for as long as it
lives. The same format as the devcontainer CLI's, so a repository's own lockfile works here and the one
`dockyard templates pull` returns works there.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.errors import Validation
from dockyard.templates.devcontainer import oci

_RESOLVED = re.compile(r"^(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class Pin:
    """One feature's entry, in the specification's field names."""

    version: str
    resolved: str
    """`registry/name@sha256:…`: the reference by digest."""
    integrity: str
    """`sha256:…`: the manifest's digest, as the devcontainer CLI records it for OCI features."""

    @classmethod
    def of(cls, ref: oci.Reference, manifest_digest: str, *, version: str) -> Pin:
        return cls(version, f"{ref.registry}/{ref.name}@{manifest_digest}", manifest_digest)

    def to_json(self) -> dict[str, str]:
        return {"version": self.version, "resolved": self.resolved, "integrity": self.integrity}


def path_for(config_file: str) -> str:
    """The specification's place: next to the configuration, dotted when the configuration's name is."""
    folder, name = posixpath.split(config_file)
    return posixpath.join(
        folder, ".devcontainer-lock.json" if name.startswith(".") else "devcontainer-lock.json"
    )


def read(files: Mapping[str, bytes], config_file: str) -> tuple[dict[str, str], list[Validation]]:
    """The manifest digest each feature key is pinned to by the lockfile among `files` (none: no pins), and
    what is wrong with it. An entry that names another feature than its key is refused, not ignored: a
    lockfile edited by hand must not swap one feature for another."""
    path = path_for(config_file)
    data = files.get(path)
    if data is None:
        return {}, []
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return {}, [Validation("(file)", f"not valid JSON: {exc}", file=path)]
    entries = document.get("features") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        return {}, [Validation("features", "the lockfile needs an object of features", file=path)]
    pins: dict[str, str] = {}
    problems: list[Validation] = []
    for key, entry in entries.items():
        ref = oci.parse(key)
        if ref is None:
            continue  # local features are never locked; a tarball feature is refused where it is named
        field = f'features["{key}"]'
        resolved = entry.get("resolved") if isinstance(entry, dict) else None
        match = _RESOLVED.match(resolved) if isinstance(resolved, str) else None
        if match is None:
            problems.append(
                Validation(field, "needs `resolved`: the feature by digest (name@sha256:…)", file=path)
            )
            continue
        if match["name"] != f"{ref.registry}/{ref.name}":
            problems.append(Validation(field, f"`resolved` names another feature: {resolved}", file=path))
            continue
        integrity = entry.get("integrity")
        if integrity is not None and integrity != match["digest"]:
            problems.append(
                Validation(field, f"`integrity` {integrity} is not the digest `resolved` names", file=path)
            )
            continue
        pins[key] = match["digest"]
    return pins, problems


def render(pins: Mapping[str, Pin]) -> bytes:
    """As the devcontainer CLI writes it: features sorted by key, two-space indent, a final newline."""
    document: dict[str, Any] = {"features": {key: pins[key].to_json() for key in sorted(pins)}}
    return (json.dumps(document, indent=2) + "\n").encode()


def current(files: Mapping[str, bytes], config_file: str, pins: Mapping[str, Pin]) -> bytes | None:
    """The lockfile the configuration's files should hold, or None when they hold it already (or need none).
    Pins are compared, not bytes: a repository's own lockfile is kept as written while it pins the same."""
    if path_for(config_file) not in files:
        return render(pins) if pins else None
    held, problems = read(files, config_file)
    wanted = {key: pin.integrity for key, pin in pins.items()}
    return None if not problems and held == wanted else render(pins)

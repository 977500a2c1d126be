"""Dev container features, local (from the template's files) and OCI (fetched: oci.py): their options as environment variables, and
their install order (`installsAfter`, `overrideFeatureInstallOrder`)."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.templates.devcontainer import model, oci
from dockyard.templates.devcontainer.lockfile import Pin

FEATURE_FILE = "devcontainer-feature.json"
FEATURE_SCRIPT = "install.sh"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Refuse = Callable[[tuple[str | int, ...], str], None]


@dataclass(frozen=True)
class Feature:
    """A feature, in install order."""

    id: str
    """As written in `features` (e.g. `./my-feature`)."""
    folder: str
    """Its folder among the template's files; for an OCI feature, the absolute folder it is unpacked in."""
    env: dict[str, str]
    """Options as environment variables (names upper-cased as the specification says)."""
    container_env: dict[str, str]
    pin: Pin | None = None
    """An OCI feature's lockfile entry: what it resolved to."""


def inside(base: str, relative: str) -> str | None:
    """A path relative to the configuration's folder, as a path among the template's files (None outside)."""
    joined = posixpath.normpath(posixpath.join(base, relative))
    return None if joined.startswith("../") or joined == ".." or joined.startswith("/") else joined


def option_env_name(option: str) -> str:
    """The specification's variable name for a feature option: non-word characters become `_`, upper case."""
    name = re.sub(r"[^\w_]", "_", option)
    name = re.sub(r"^[\d_]+", "_", name)
    return name.upper()


def read_features(
    files: Mapping[str, bytes],
    base: str,
    config: model.DevContainer,
    refuse: Refuse,
    *,
    user: str,
    pins: Mapping[str, str],
) -> tuple[Feature, ...]:
    """`pins`: the lockfile's manifest digest per feature key (lockfile.read)."""
    found: dict[str, tuple[Feature, tuple[str, ...], str]] = {}
    for key, value in config.features.items():
        path = ("features", key)
        lookup: Mapping[str, bytes] = files
        resolved: tuple[oci.Reference, str] | None = None
        if not key.startswith(("./", "../")):
            ref = oci.parse(key)
            if ref is None:
                refuse(
                    path,
                    f"feature {key} cannot be fetched: its registry {oci.registry_of(key)} is not reachable from "
                    "this server; copy the feature into the repository and name it as a local feature (./name)",
                )
                continue
            try:
                fetched = oci.fetch(ref, pinned=pins.get(key))
            except oci.FetchFailed as exc:
                refuse(path, f"feature {key} cannot be fetched from its registry {ref.registry}: {exc}")
                continue
            folder = str(fetched.folder)
            lookup = {f"{folder}/{name}": data for name, data in oci.read_folder(fetched.folder).items()}
            resolved = (ref, fetched.manifest_digest)
        else:
            relative = inside(base, key.rstrip("/"))
            if relative is None:
                refuse(path, f"{key} leaves the template's files")
                continue
            folder = relative
        meta_file = f"{folder}/{FEATURE_FILE}"
        if meta_file not in lookup or f"{folder}/{FEATURE_SCRIPT}" not in lookup:
            refuse(path, f"{folder} needs {FEATURE_FILE} and {FEATURE_SCRIPT}")
            continue
        try:
            meta = json.loads(lookup[meta_file].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            refuse(path, f"{meta_file} is not valid JSON: {exc}")
            continue
        if not isinstance(meta, dict):
            refuse(path, f"{meta_file} must hold an object")
            continue
        for unsafe in ("privileged", "capAdd", "securityOpt", "mounts", "entrypoint", "init"):
            if meta.get(unsafe):
                refuse(path, f"the feature asks for {unsafe}, which Dockyard does not grant features")
        options: dict[str, Any] = meta["options"] if isinstance(meta.get("options"), dict) else {}
        chosen: dict[str, Any] = {}
        if isinstance(value, str):
            chosen = {"version": value}
        elif isinstance(value, dict):
            chosen = dict(value)
        env: dict[str, str] = {}
        for name, spec in options.items():
            default = spec.get("default") if isinstance(spec, dict) else None
            picked = chosen.get(name, default)
            if picked is not None:
                env[option_env_name(name)] = _option_text(picked)
        for name in chosen:
            if name not in options and name != "version":
                refuse((*path, name), f"{name!r} is not an option of the feature")
        env.update(
            {
                "_REMOTE_USER": user or "dev",
                "_CONTAINER_USER": user or "dev",
                "_REMOTE_USER_HOME": f"/home/{user or 'dev'}",
                "_CONTAINER_USER_HOME": f"/home/{user or 'dev'}",
            }
        )
        container_env: dict[str, Any] = (
            meta["containerEnv"] if isinstance(meta.get("containerEnv"), dict) else {}
        )
        for name in container_env:
            if not _ENV_NAME.match(str(name)):
                refuse(path, f"the feature's containerEnv name {name!r} is not a variable name")
        after: list[Any] = meta["installsAfter"] if isinstance(meta.get("installsAfter"), list) else []
        pin = None if resolved is None else Pin.of(*resolved, version=str(meta.get("version", "")))
        found[key] = (
            Feature(key, folder, env, {str(k): str(v) for k, v in container_env.items()}, pin),
            tuple(str(a) for a in after),
            str(meta.get("id", "")),
        )
    return _install_order(found, config.override_feature_install_order)


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _install_order(
    found: dict[str, tuple[Feature, tuple[str, ...], str]], override: tuple[str, ...]
) -> tuple[Feature, ...]:
    """overrideFeatureInstallOrder first, in its order; then each feature after those it `installsAfter`
    (soft: ids that are not present are ignored), otherwise in the order written."""

    def key_of(ref: str) -> str | None:
        for key, (_feature, _after, feature_id) in found.items():
            if ref in (key, key.rstrip("/")) or (feature_id and ref.rstrip("/").endswith("/" + feature_id)):
                return key
            if feature_id and ref == feature_id:
                return key
        return None

    ordered: list[str] = [k for k in (key_of(r) for r in override) if k is not None]
    ordered = list(dict.fromkeys(ordered))
    remaining = [k for k in found if k not in ordered]
    while remaining:
        for key in remaining:
            waits = [key_of(a) for a in found[key][1]]
            if all(w is None or w in ordered or w == key for w in waits):
                ordered.append(key)
                remaining.remove(key)
                break
        else:  # a cycle: the rest in written order
            ordered.extend(remaining)
            break
    return tuple(found[k][0] for k in ordered)

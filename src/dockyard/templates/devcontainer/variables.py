"""`${...}` variables in devcontainer.json, resolved as the reference CLI resolves them.

Three moments, as in the reference:
- reading (`substitute`): `${localEnv:VAR}` / `${env:VAR}` (with an optional `:default`), `${localWorkspaceFolder}`,
  `${localWorkspaceFolderBasename}`, `${containerWorkspaceFolder}` and `${containerWorkspaceFolderBasename}`;
- before the container exists (`substitute_devcontainer_id`): `${devcontainerId}`, from the container's id labels;
- inside the container (`substitute_container_env`): `${containerEnv:VAR}`, from the container's environment.

A variable none of these knows is left as written, as the reference leaves it; `substitute` reports each one so
that a strict reader can refuse them, except where another interpreter owns the text: `customizations` (VS Code's
`${workspaceFolder}`) and lifecycle commands that run in a shell (`${HOME}` is the shell's). `$${name}` is the
shell-style spelling of a literal and is not reported either.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.templates.devcontainer.jsonc import Path, PathPart

# JavaScript's `.` stops at these line terminators; the reference's pattern is /\$\{(.*?)\}/g.
_VARIABLE = re.compile("\\$\\{([^\n\r\u2028\u2029]*?)\\}")

LOCAL_VARIABLES = frozenset(
    {
        "env",
        "localEnv",
        "localWorkspaceFolder",
        "localWorkspaceFolderBasename",
        "containerWorkspaceFolder",
        "containerWorkspaceFolderBasename",
    }
)
CONTAINER_VARIABLES = frozenset({"containerEnv", "devcontainerId"})
# Properties whose values other tools interpret; their `${...}` are theirs, not ours.
_FOREIGN_ROOTS = frozenset({"customizations"})
# Lifecycle hooks: their string forms run in a shell, for which `${NAME}` is a parameter expansion.
_SHELL_HOOKS = frozenset(
    {
        "initializeCommand",
        "onCreateCommand",
        "updateContentCommand",
        "postCreateCommand",
        "postStartCommand",
        "postAttachCommand",
    }
)


@dataclass(frozen=True)
class Unknown:
    """A `${...}` that no moment resolves, where it was found."""

    path: Path
    text: str


class VariableError(ValueError):
    """A variable that cannot be resolved at all (the reference refuses these too)."""

    def __init__(self, path: Path, text: str, detail: str) -> None:
        super().__init__(f"{text}: {detail}")
        self.path = path
        self.text = text
        self.detail = detail


@dataclass(frozen=True)
class SubstitutionContext:
    env: Mapping[str, str]
    local_workspace_folder: str | None = None
    container_workspace_folder: str | None = None


Replace = Callable[[str, str, list[str], Path], str]


def substitute(context: SubstitutionContext, value: Any) -> tuple[Any, list[Unknown]]:
    """Resolve the reading-time variables in `value`; returns the new value and the unknown variables."""
    unknown: list[Unknown] = []

    def local(match: str, name: str, args: list[str], path: Path, *, cwf: str | None) -> str:
        if name in ("env", "localEnv"):
            return _lookup(context.env, args, match, path)
        if name == "localWorkspaceFolder":
            return context.local_workspace_folder if context.local_workspace_folder is not None else match
        if name == "localWorkspaceFolderBasename":
            folder = context.local_workspace_folder
            return _basename(folder) if folder is not None else match
        if name == "containerWorkspaceFolder":
            return cwf if cwf is not None else match
        if name == "containerWorkspaceFolderBasename":
            return _basename(cwf) if cwf is not None else match
        if name not in CONTAINER_VARIABLES:
            if not _foreign(path):
                unknown.append(Unknown(path, match))
        elif name == "containerEnv" and not args:
            raise VariableError(path, match, "no environment variable name is given")
        return match

    # The container folder may itself use variables; inside it, `${containerWorkspaceFolder}` means the
    # unresolved value, as in the reference.
    cwf = context.container_workspace_folder
    if cwf is not None:
        cwf = _resolve_string(lambda m, n, a, p: local(m, n, a, p, cwf=cwf), cwf, ("workspaceFolder",))
    resolved = _walk(lambda m, n, a, p: local(m, n, a, p, cwf=cwf), value, ())
    # The container folder comes from `workspaceFolder`, so its unknown variables were seen twice.
    return resolved, list(dict.fromkeys(unknown))


def substitute_container_env(container_env: Mapping[str, str], value: Any) -> Any:
    """Resolve `${containerEnv:VAR[:default]}` with the environment of the running container."""

    def replace(match: str, name: str, args: list[str], path: Path) -> str:
        return _lookup(container_env, args, match, path) if name == "containerEnv" else match

    return _walk(replace, value, ())


def substitute_devcontainer_id(id_labels: Mapping[str, str], value: Any) -> Any:
    """Resolve `${devcontainerId}` for the container identified by `id_labels`."""
    identifier = devcontainer_id(id_labels)

    def replace(match: str, name: str, args: list[str], path: Path) -> str:
        return identifier if name == "devcontainerId" else match

    return _walk(replace, value, ())


def devcontainer_id(id_labels: Mapping[str, str]) -> str:
    """The reference's id: SHA-256 of the labels as sorted compact JSON, in base 32, padded to 52 digits."""
    data = json.dumps(dict(sorted(id_labels.items())), separators=(",", ":"), ensure_ascii=False)
    number = int.from_bytes(hashlib.sha256(data.encode("utf-8", "surrogatepass")).digest(), "big")
    digits = []
    while number:
        number, digit = divmod(number, 32)
        digits.append("0123456789abcdefghijklmnopqrstuv"[digit])
    return "".join(reversed(digits)).rjust(52, "0")


def default_id_labels(workspace_folder: str, config_file: str) -> dict[str, str]:
    """The labels the reference gives a container when no `--id-label` is given."""
    return {"devcontainer.local_folder": workspace_folder, "devcontainer.config_file": config_file}


def _lookup(env: Mapping[str, str], args: list[str], match: str, path: Path) -> str:
    if not args:
        raise VariableError(path, match, "no environment variable name is given")
    value = env.get(args[0])
    if value is not None:
        return value
    # A missing variable is empty, as in a shell, unless a default follows (only the first one counts).
    return args[1] if len(args) > 1 else ""


def _basename(folder: str) -> str:
    return posixpath.basename(folder.rstrip("/")) if folder.strip("/") else ""


def _resolve_string(replace: Replace, text: str, path: Path) -> str:
    def one(match: re.Match[str]) -> str:
        name, *args = match.group(1).split(":")
        before = match.start()
        if before and text[before - 1] == "$" and name not in LOCAL_VARIABLES | CONTAINER_VARIABLES:
            return match.group(0)
        return replace(match.group(0), name, args, path)

    return _VARIABLE.sub(one, text)


def _walk(replace: Replace, value: Any, path: Path) -> Any:
    if isinstance(value, str):
        return _resolve_string(replace, value, path) if "${" in value else value
    if isinstance(value, list):
        return [_walk(replace, item, (*path, index)) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _walk(replace, item, _child(path, key)) for key, item in value.items()}
    return value


def _foreign(path: Path) -> bool:
    """Whether a string at `path` belongs to another interpreter: a tool's customizations, or a shell command
    (a hook's string form, or a string in its object form; the list form runs without a shell)."""
    if not path:
        return False
    if path[0] in _FOREIGN_ROOTS:
        return True
    return path[0] in _SHELL_HOOKS and (len(path) == 1 or (len(path) == 2 and isinstance(path[1], str)))


def _child(path: Path, key: PathPart) -> Path:
    return (*path, key)

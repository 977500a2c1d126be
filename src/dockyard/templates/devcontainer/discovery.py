"""Where a workspace's devcontainer.json is, in the specification's order.

1. `.devcontainer/devcontainer.json`, 2. `.devcontainer.json` (the two the reference CLI looks for), then
3. `.devcontainer/<name>/devcontainer.json`, one level down, for repositories with several configurations: chosen
by name, or used when it is the only one (the specification asks tools to let the user pick; a command line
picks with `--name`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dockyard.errors import NotFound, Validation, ValidationFailed

CONFIG_NAME = "devcontainer.json"
FOLDER = ".devcontainer"


@dataclass(frozen=True)
class ConfigLocation:
    path: str
    """Absolute and normalised (`..` removed, symbolic links kept), as the reference writes it."""
    discovered: bool
    """Found in the workspace rather than named with `--config`; the reference marks the two differently."""


def absolute(path: str, *, cwd: str | None = None) -> str:
    """Node's `path.resolve`: absolute and normalised without following symbolic links."""
    return os.path.normpath(os.path.join(cwd or os.getcwd(), path))


def well_known(workspace_folder: str) -> list[str]:
    return [
        os.path.join(workspace_folder, FOLDER, CONFIG_NAME),
        os.path.join(workspace_folder, f".{CONFIG_NAME}"),
    ]


def named_configurations(workspace_folder: str) -> list[str]:
    """The names of the `.devcontainer/<name>/devcontainer.json` configurations, sorted."""
    folder = os.path.join(workspace_folder, FOLDER)
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        entry.name
        for entry in entries
        if entry.is_dir() and os.path.isfile(os.path.join(entry.path, CONFIG_NAME))
    ]


def find(workspace_folder: str, *, name: str | None = None) -> ConfigLocation:
    """Find the configuration of `workspace_folder` (absolute); `name` picks `.devcontainer/<name>/`."""
    if not os.path.isdir(workspace_folder):
        raise NotFound(f"Workspace folder {workspace_folder} not found.")
    if name is not None:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ValidationFailed(
                "Invalid configuration name.",
                [Validation("name", f"{name!r} is not a folder name under {FOLDER}/")],
            )
        path = os.path.join(workspace_folder, FOLDER, name, CONFIG_NAME)
        if not os.path.isfile(path):
            raise _not_found(path, named_configurations(workspace_folder))
        return ConfigLocation(path, discovered=True)
    for path in well_known(workspace_folder):
        if os.path.isfile(path):
            return ConfigLocation(path, discovered=True)
    names = named_configurations(workspace_folder)
    if len(names) == 1:
        return ConfigLocation(os.path.join(workspace_folder, FOLDER, names[0], CONFIG_NAME), discovered=True)
    if names:
        raise ValidationFailed(
            f"Workspace folder {workspace_folder} has several dev container configurations.",
            [Validation("name", f"choose one of: {', '.join(names)}")],
        )
    raise _not_found(well_known(workspace_folder)[0], [])


def _not_found(path: str, names: list[str]) -> NotFound:
    detail = f"configurations here: {', '.join(names)}" if names else ""
    return NotFound(f"Dev container config ({path}) not found.", detail=detail)

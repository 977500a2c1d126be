"""Where the workspace goes in the container: the reference's `workspaceFolder` and `workspaceMount` defaults."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any

from dockyard.templates.devcontainer.jsonc import truthy


def git_root(folder: str) -> str | None:
    """The closest folder at or above `folder` holding `.git` (a folder, or a file for worktrees).

    The reference asks `git rev-parse --show-cdup`, which also keeps symbolic links in the path; walking up
    finds the same folder without starting a process per read.
    """
    current = folder
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def configuration(
    config: Mapping[str, Any], workspace_folder: str | None, *, mount_git_root: bool
) -> dict[str, Any]:
    """The `workspace` part of the reference's output, from the configuration before variables are resolved.

    With Compose the folder is the configuration's own (or `/`) and there is no mount. Otherwise the workspace
    (or, by default, the git repository around it, so that the whole repository is in the container) is bound at
    `/workspaces/<its folder name>`, and the workspace folder is the same place inside it.
    """
    if "dockerComposeFile" in config:
        folder = config.get("workspaceFolder")
        return {"workspaceFolder": folder if truthy(folder) else "/"}
    folder = config.get("workspaceFolder")
    mount = config.get("workspaceMount")
    if workspace_folder is not None and (not truthy(folder) or "workspaceMount" not in config):
        host = (git_root(workspace_folder) if mount_git_root else None) or workspace_folder
        container = posixpath.normpath(posixpath.join("/workspaces", os.path.basename(host)))
        if not truthy(folder):
            relative = os.path.relpath(workspace_folder, host)
            folder = posixpath.normpath(posixpath.join(container, relative))
        if "workspaceMount" not in config:
            mount = f"type=bind,{_quoted('source', host)},{_quoted('target', container)}"
    result: dict[str, Any] = {}
    if folder is not None:
        result["workspaceFolder"] = folder
    if mount is not None or "workspaceMount" in config:
        result["workspaceMount"] = mount
    return result


def _quoted(key: str, value: str) -> str:
    # Docker's --mount syntax is comma-separated, so a path with a comma is quoted, as the reference does.
    return f'"{key}={value}"' if "," in value else f"{key}={value}"

"""Legacy top-level properties, moved where the specification has them now, as the reference CLI moves them.

`extensions`, `settings` and `devPort` were VS Code's and now live under `customizations.vscode`
(https://github.com/microsoft/dev-container-spec/issues/1). The reference CLI keeps `dockerFile` and
`context` in its output and reads them as `build.dockerfile` and `build.context`; the typed model does the same
(`model.build_source`), so the printed configuration still matches the reference's.
"""

from __future__ import annotations

from typing import Any

from dockyard.templates.devcontainer.jsonc import Path, truthy

LEGACY_VSCODE = ("extensions", "settings", "devPort")


def migrate(config: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """Return the configuration with legacy properties moved, and any that cannot be moved.

    The input is not changed. Property order follows the reference: `customizations` keeps its place when the
    file has one, or is added last.
    """
    if not (truthy(config.get("extensions")) or truthy(config.get("settings")) or "devPort" in config):
        return config, []
    customizations = config.get("customizations", {})
    vscode = customizations.get("vscode", {}) if isinstance(customizations, dict) else None
    if not isinstance(customizations, dict) or not isinstance(vscode, dict):
        where: Path = (
            ("customizations",) if not isinstance(customizations, dict) else ("customizations", "vscode")
        )
        return config, [(where, "must be an object to take the legacy extensions/settings/devPort")]
    copy = dict(config)
    vscode = dict(vscode)
    problems: list[tuple[Path, str]] = []
    if truthy(copy.get("extensions")):
        existing = vscode.get("extensions", [])
        if not isinstance(existing, list) or not isinstance(copy["extensions"], list):
            problems.append((("extensions",), "must be a list of extension ids"))
        else:
            vscode["extensions"] = [*existing, *copy["extensions"]]
            del copy["extensions"]
    if truthy(copy.get("settings")):
        existing = vscode.get("settings", {})
        if not isinstance(existing, dict) or not isinstance(copy["settings"], dict):
            problems.append((("settings",), "must be an object of VS Code settings"))
        else:
            # Settings already under customizations win, as in the reference.
            vscode["settings"] = {**copy["settings"], **existing}
            del copy["settings"]
    if "devPort" in copy and "devPort" not in vscode:
        vscode["devPort"] = copy.pop("devPort")
    copy["customizations"] = {**customizations, "vscode": vscode}
    return copy, problems

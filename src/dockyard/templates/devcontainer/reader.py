"""Reading a devcontainer.json as the reference CLI's `read-configuration` does, with errors that point at lines.

The steps are the reference's: find the file, parse JSONC, move legacy properties, work out the workspace
folder and mount, then resolve the reading-time variables. On top of that every property the specification
defines is type-checked, and a strict read (what creating a workspace uses) also refuses unknown variables and
a configuration that names no image, Dockerfile or Compose file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.errors import NotFound, Validation, ValidationFailed
from dockyard.templates.devcontainer import discovery, jsonc, legacy, model, schema, variables, workspace
from dockyard.templates.devcontainer.discovery import ConfigLocation
from dockyard.templates.devcontainer.jsonc import Path

# Far above any real configuration (the corpus's largest is a few kilobytes); keeps a hostile file cheap.
MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReadResult:
    location: ConfigLocation
    configuration: dict[str, Any]
    """The resolved configuration in the reference's shape (without its `configFilePath`)."""
    workspace: dict[str, Any]
    """`workspaceFolder` and (unless Compose) `workspaceMount`."""
    model: model.DevContainer
    workspace_folder: str | None
    warnings: list[Validation] = field(default_factory=list)
    """Variables left as written because nothing resolves them (a strict read refuses these)."""

    def devcontainer_id(self, id_labels: Mapping[str, str] | None = None) -> str:
        """`${devcontainerId}` of this configuration's container; by default its labels are the reference's
        (the workspace folder and the configuration file)."""
        if id_labels is None:
            id_labels = variables.default_id_labels(self.workspace_folder or "", self.location.path)
        return variables.devcontainer_id(id_labels)

    def reference_output(self) -> dict[str, Any]:
        """What `devcontainer read-configuration` prints (its OCI auth diagnostics aside)."""
        configuration = dict(self.configuration)
        path = self.location.path
        configuration["configFilePath"] = {
            "$mid": 1,
            "fsPath": path,
            "path": path,
            "scheme": "vscode-fileHost" if self.location.discovered else "file",
        }
        return {"configuration": configuration, "workspace": dict(self.workspace)}

    def reference_json(self) -> str:
        """`reference_output` as the reference writes it: compact, and with JavaScript's property order."""
        return json.dumps(_js_order(self.reference_output()), separators=(",", ":"), ensure_ascii=False)


def read_configuration(
    workspace_folder: str,
    *,
    config_file: str | None = None,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    mount_workspace_git_root: bool = True,
    id_labels: Mapping[str, str] | None = None,
    strict: bool = False,
) -> ReadResult:
    """Find and read the configuration of `workspace_folder` (`config_file` names one explicitly).

    `env` is the local environment for `${localEnv:…}` (default: this process's). With `id_labels`,
    `${devcontainerId}` is resolved for the container those labels identify; without, it is left for the
    container side, as the reference leaves it when no container exists yet.
    """
    folder = discovery.absolute(workspace_folder)
    if config_file is not None:
        location = ConfigLocation(discovery.absolute(config_file), discovered=False)
    else:
        location = discovery.find(folder, name=name)
    shown = _shown_name(location.path, folder)
    text = _read(location.path, shown=shown)
    return resolve(
        text,
        location=location,
        workspace_folder=folder,
        shown_name=shown,
        env=os.environ if env is None else env,
        mount_workspace_git_root=mount_workspace_git_root,
        id_labels=id_labels,
        strict=strict,
    )


def resolve(
    text: str,
    *,
    location: ConfigLocation,
    workspace_folder: str | None,
    shown_name: str,
    env: Mapping[str, str],
    mount_workspace_git_root: bool = True,
    id_labels: Mapping[str, str] | None = None,
    strict: bool = False,
) -> ReadResult:
    """Resolve a configuration's text; `shown_name` is the file name errors give (relative when possible)."""
    try:
        document = jsonc.parse(text)
    except jsonc.JsoncError as exc:
        raise ValidationFailed(
            f"{shown_name} is not valid JSON with comments.",
            [Validation("(syntax)", f"{exc.message} (column {exc.column})", file=shown_name, line=exc.line)],
        ) from exc
    raw = document.value
    if not isinstance(raw, dict):
        raise ValidationFailed(
            f"Dev container config ({shown_name}) must contain a JSON object.",
            [Validation("(root)", 'expected an object such as {"image": "…"}', file=shown_name, line=1)],
        )
    migrated, problems = legacy.migrate(raw)

    def located(path: Path, detail: str) -> Validation:
        return Validation(_field(path), detail, file=shown_name, line=_line(document, raw, path))

    found = [located(path, detail) for path, detail in problems]
    found += [located(path, detail) for path, detail in schema.check(migrated)]
    if strict:
        found += [located(path, detail) for path, detail in model.source_problems(migrated)]
    if found:
        raise ValidationFailed(f"Invalid dev container config {shown_name}.", found)

    workspace_config = workspace.configuration(
        migrated, workspace_folder, mount_git_root=mount_workspace_git_root
    )
    context = variables.SubstitutionContext(
        env=env,
        local_workspace_folder=workspace_folder,
        container_workspace_folder=workspace_config.get("workspaceFolder"),
    )
    try:
        config, unknown = variables.substitute(context, migrated)
    except variables.VariableError as exc:
        raise ValidationFailed(
            f"Invalid dev container config {shown_name}.",
            [located(exc.path, f"{exc.text} cannot be resolved: {exc.detail}")],
        ) from exc
    if id_labels is not None:
        config = variables.substitute_devcontainer_id(id_labels, config)
    warnings = [located(u.path, f"unknown variable {u.text}") for u in unknown]
    if strict and warnings:
        raise ValidationFailed(f"Invalid dev container config {shown_name}.", warnings)

    if isinstance(config.get("workspaceFolder"), str):
        workspace_config["workspaceFolder"] = config["workspaceFolder"]
    if "workspaceMount" in config:
        workspace_config["workspaceMount"] = config["workspaceMount"]
    typed = model.build(config, config_file=location.path, workspace=workspace_config)
    return ReadResult(
        location=location,
        configuration=config,
        workspace=workspace_config,
        model=typed,
        workspace_folder=workspace_folder,
        warnings=warnings,
    )


def _read(path: str, *, shown: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(f"Dev container config ({path}) not found.") from None
    except OSError as exc:
        raise ValidationFailed(
            f"Cannot read {shown}.", [Validation("(file)", exc.strerror or str(exc), file=shown)]
        ) from exc
    if len(data) > MAX_BYTES:
        raise ValidationFailed(
            f"{shown} is too large.", [Validation("(file)", f"larger than {MAX_BYTES} bytes", file=shown)]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationFailed(
            f"{shown} is not UTF-8 text.", [Validation("(file)", "not valid UTF-8", file=shown, line=line)]
        ) from exc


def _shown_name(path: str, folder: str) -> str:
    relative = os.path.relpath(path, folder)
    return path if relative.startswith("..") else relative


def _field(path: Path) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not part or any(c in part for c in '.[]" '):
            # Feature ids and port keys hold dots and slashes; brackets keep the path readable.
            parts.append(f"[{json.dumps(part, ensure_ascii=False)}]")
        else:
            parts.append(part if not parts else f".{part}")
    return "".join(parts) or "(root)"


def _line(document: jsonc.Document, raw: dict[str, Any], path: Path) -> int | None:
    # A legacy property moved under customizations.vscode is still where the file wrote it.
    legacy_key = path[2] if path[:2] == ("customizations", "vscode") and len(path) > 2 else None
    if legacy_key in legacy.LEGACY_VSCODE and legacy_key in raw:
        return document.line_of(path[2:])
    return document.line_of(path) or (1 if not path else None)


_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def _js_order(value: Any) -> Any:
    """JavaScript objects list integer-like keys first, ascending (`{"9229": …, "3000": …}` prints 3000 first)."""
    if isinstance(value, dict):
        indices = sorted((k for k in value if _ARRAY_INDEX.fullmatch(k) and int(k) < 2**32 - 1), key=int)
        rest = [k for k in value if not (_ARRAY_INDEX.fullmatch(k) and int(k) < 2**32 - 1)]
        return {key: _js_order(value[key]) for key in [*indices, *rest]}
    if isinstance(value, list):
        return [_js_order(item) for item in value]
    return value

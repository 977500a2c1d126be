"""Checking a template folder's `dockyard.yaml` before it is uploaded.

Only the schema is checked here (with the SDK's `TemplateManifest`); rendering and the files a manifest names
are the server's to check, so the two cannot disagree about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from dockyard.cli.errors import CliError, validations_of
from dockyard.sdk.manifest import TemplateManifest
from dockyard.sdk.models import ValidationDetail

MANIFEST = "dockyard.yaml"


def check(folder: Path) -> TemplateManifest:
    path = folder / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(
            f"{folder} has no {MANIFEST}", hint=f"a template folder needs a {MANIFEST} at its top"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise CliError(
            f"{MANIFEST} is not valid YAML.",
            validations=[
                ValidationDetail(
                    field="(yaml)",
                    detail=problem or str(exc),
                    file=MANIFEST,
                    line=mark.line + 1 if mark else None,
                )
            ],
        ) from exc
    if not isinstance(data, dict):
        raise CliError(
            f"{MANIFEST} must be a mapping of fields.",
            validations=[
                ValidationDetail(
                    field="(root)",
                    detail="expected a mapping such as `name: my-template`",
                    file=MANIFEST,
                    line=1,
                )
            ],
        )
    try:
        return TemplateManifest.model_validate(data)
    except ValidationError as exc:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        located = [
            problem.model_copy(update={"file": MANIFEST, "line": _line_of(root, _path(problem.field))})
            for problem in validations_of(exc)
        ]
        raise CliError(f"{MANIFEST} is invalid.", validations=located) from exc


def _path(field: str) -> list[str | int]:
    if field == "(root)":
        return []
    return [int(part) if part.isdigit() else part for part in field.split(".")]


def _line_of(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest node along `path` that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line

"""Checking a template folder's `dockyard.yaml` before it is uploaded.

Only the schema is checked here (with the SDK's `TemplateManifest`); rendering and the files a manifest names
are the server's to check, so the two cannot disagree about them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from dockyard import yamlload
from dockyard.cli.errors import CliError, validations_of
from dockyard.errors import ValidationFailed
from dockyard_sdk.manifest import TemplateManifest, unsupported
from dockyard_sdk.models import ValidationDetail

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
        # The SDK's loader refuses YAML aliases, so a hostile manifest cannot blow up memory here either.
        data, root = yamlload.load(text, filename=MANIFEST)
    except ValidationFailed as exc:
        raise CliError(
            exc.message,
            validations=[
                ValidationDetail(field=v.field, detail=v.detail, file=v.file, line=v.line)
                for v in exc.validations
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
        parsed = TemplateManifest.model_validate(data)
    except ValidationError as exc:
        located = [
            problem.model_copy(
                update={"file": MANIFEST, "line": yamlload.line_of(root, _path(problem.field))}
            )
            for problem in validations_of(exc)
        ]
        raise CliError(f"{MANIFEST} is invalid.", validations=located) from exc
    refused = [
        ValidationDetail(field=field, detail=detail, file=MANIFEST, line=yamlload.line_of(root, _path(field)))
        for field, detail in unsupported(parsed)
    ]
    if refused:
        raise CliError(f"{MANIFEST} uses what Dockyard does not support yet.", validations=refused)
    return parsed


def _path(field: str) -> list[str | int]:
    if field == "(root)":
        return []
    return [int(part) if part.isdigit() else part for part in field.split(".")]

"""Reading `dockyard.yaml` from a template's files into a checked `TemplateManifest`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from dockyard import yamlload
from dockyard.errors import Validation, ValidationFailed
from dockyard.runtimes.kubernetes import overlay
from dockyard.templates import parameters, render
from dockyard.templates.archive import MANIFEST, TemplateFile, TemplateFiles
from dockyard.templates.devcontainer import lockfile
from dockyard.templates.devcontainer import plan as devcontainer_plan
from dockyard.templates.errors import pydantic_validations
from dockyard_sdk.manifest import TemplateManifest, unsupported


def _locate(problems: list[Validation], node: Any) -> list[Validation]:
    located = []
    for problem in problems:
        path: list[str | int] = [int(p) if p.isdigit() else p for p in problem.field.split(".")]
        located.append(
            Validation(problem.field, problem.detail, file=MANIFEST, line=yamlload.line_of(node, path))
        )
    return located


def parse(text: str, *, allow_privileged: bool = False) -> TemplateManifest:
    """Parse and check a manifest as written (template expressions allowed), with file and line in errors.

    `allow_privileged` is the deployment admin's consent to pod overlays that loosen isolation.
    """
    data, node = yamlload.load(text, filename=MANIFEST)
    if not isinstance(data, dict):
        raise ValidationFailed(
            f"{MANIFEST} must be a mapping of fields.",
            [Validation("(root)", "expected a mapping such as `name: my-template`", file=MANIFEST, line=1)],
        )
    try:
        manifest = TemplateManifest.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(f"{MANIFEST} is invalid.", _locate(pydantic_validations(exc), node)) from exc
    problems = parameters.defaults_problems(manifest.parameters)
    if problems:
        raise ValidationFailed(f"{MANIFEST} is invalid.", _locate(problems, node))
    problems = _prebuild_problems(manifest)
    if problems:
        raise ValidationFailed(f"{MANIFEST} has prebuilds the template cannot make.", _locate(problems, node))
    # Rendering with the defaults catches Jinja syntax errors and misspelt parameter names at push time.
    defaults = {p.name: p.default for p in manifest.parameters if p.default is not None}
    missing = {p.name: _placeholder(p.type) for p in manifest.parameters if p.default is None}
    try:
        render.render(manifest, {**missing, **defaults})
    except ValidationFailed as exc:
        raise ValidationFailed(f"{MANIFEST} is invalid.", _locate(exc.validations, node)) from exc
    problems = [Validation(field, detail) for field, detail in unsupported(manifest)]
    if problems:
        raise ValidationFailed(
            f"{MANIFEST} uses what Dockyard does not support yet.", _locate(problems, node)
        )
    if manifest.kubernetes is not None:
        problems = [
            Validation(field, detail)
            for field, detail in overlay.validate(manifest.kubernetes.pod, allow_privileged=allow_privileged)
        ]
        if problems:
            raise ValidationFailed(
                f"{MANIFEST} has a Kubernetes pod overlay Dockyard refuses.", _locate(problems, node)
            )
    problems = [
        Validation(field, problem)
        for field, script in _scripts(manifest)
        for problem in render.unquoted(script)
    ]
    if problems:
        raise ValidationFailed(
            f"{MANIFEST} puts parameter values into a script unquoted.", _locate(problems, node)
        )
    return manifest


def _prebuild_problems(manifest: TemplateManifest) -> list[Validation]:
    """Each preset's values must be valid for the template (a create with them would be refused otherwise),
    and no two presets may be equal (a create could not tell which pool to claim from)."""
    problems: list[Validation] = []
    seen: dict[str, int] = {}
    for index, prebuild in enumerate(manifest.prebuilds):
        values, found = parameters.validate(
            manifest.parameters, prebuild.parameters, template_name=manifest.name
        )
        problems += [Validation(f"prebuilds.{index}.parameters.{p.field}", p.detail) for p in found]
        if found:
            continue
        key = json.dumps(values, sort_keys=True, default=str)
        if key in seen:
            problems.append(
                Validation(
                    f"prebuilds.{index}.parameters",
                    f"the same values as prebuilds[{seen[key]}]; merge them and add up their instances",
                )
            )
        seen.setdefault(key, index)
    return problems


def _scripts(manifest: TemplateManifest) -> list[tuple[str, str]]:
    """The fields that a shell runs, by field path."""
    return [
        ("startup_script", manifest.startup_script),
        ("shutdown_script", manifest.shutdown_script),
        *((f"apps.{i}.command", app.command) for i, app in enumerate(manifest.apps) if app.command),
    ]


def _placeholder(kind: str) -> Any:
    return {"number": 1, "bool": False, "list(string)": []}.get(kind, "x")


def load(
    files: TemplateFiles, *, allow_privileged: bool = False, host_binds: Sequence[str] = ()
) -> TemplateManifest:
    """The manifest of a template's files, checked against the files it names."""
    return _checked(files, allow_privileged=allow_privileged, host_binds=host_binds)[0]


def load_pinned(
    files: TemplateFiles, *, allow_privileged: bool = False, host_binds: Sequence[str] = ()
) -> tuple[TemplateFiles, TemplateManifest]:
    """As `load`, and the files a version stores: with a dev container configuration's OCI features pinned by
    its lockfile (written, or brought up to date, with what they resolved to now)."""
    parsed, plan = _checked(files, allow_privileged=allow_privileged, host_binds=host_binds)
    return (files if plan is None else pinned(files, plan)), parsed


def pinned(files: TemplateFiles, plan: devcontainer_plan.Plan) -> TemplateFiles:
    """`files` with the lockfile `plan`'s features resolved to, unless they hold it already."""
    data = {path: f.data for path, f in files.files.items() if f.link is None}
    written = lockfile.current(data, plan.config_file, plan.pins)
    if written is None:
        return files
    path = lockfile.path_for(plan.config_file)
    return TemplateFiles({**files.files, path: TemplateFile(path, 0o644, written)})


def _checked(
    files: TemplateFiles, *, allow_privileged: bool, host_binds: Sequence[str]
) -> tuple[TemplateManifest, devcontainer_plan.Plan | None]:
    try:
        text = files.text(MANIFEST)
    except KeyError:
        raise ValidationFailed(
            f"The template has no {MANIFEST}.",
            [Validation("archive", f"{MANIFEST} is missing at the top of the template", file=MANIFEST)],
        ) from None
    except UnicodeDecodeError:
        raise ValidationFailed(
            f"{MANIFEST} is not UTF-8 text.", [Validation("(root)", "not UTF-8", file=MANIFEST)]
        ) from None
    manifest = parse(text, allow_privileged=allow_privileged)
    named: list[tuple[str, str]] = []
    if manifest.build is not None:
        prefix = "" if manifest.build.context in (".", "") else manifest.build.context.rstrip("/") + "/"
        named.append(("build.dockerfile", prefix + manifest.build.dockerfile))
    if isinstance(manifest.devcontainer, str):
        # A repository's configuration is fetched, and checked, by `devcontainer_repo` once the push is read.
        named.append(("devcontainer", manifest.devcontainer))
    missing = [(field, path) for field, path in named if path not in files.files]
    if missing:
        _data, node = yamlload.load(text, filename=MANIFEST)
        raise ValidationFailed(
            f"{MANIFEST} names files the template does not contain.",
            _locate(
                [Validation(field, f"file {path!r} is not in the template") for field, path in missing], node
            ),
        )
    if not isinstance(manifest.devcontainer, str):
        return manifest, None
    # Everything the configuration asks for is checked now, so that no workspace fails on it later.
    data = {path: f.data for path, f in files.files.items() if f.link is None}
    plan = devcontainer_plan.read(
        data, manifest.devcontainer, workspace_name=manifest.name, env={}, host_binds=host_binds
    )
    return manifest, plan

"""Rendering `{{ parameters.x }}` in a manifest with a sandboxed Jinja2 environment.

Template authors are trusted less than the server: the sandbox blocks attribute access to Python internals,
and StrictUndefined turns a typo such as `{{ parameters.brnach }}` into an error instead of an empty string.
"""

from __future__ import annotations

import functools
import shlex
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from dockyard.errors import Validation, ValidationFailed
from dockyard.templates import scriptlint
from dockyard.templates.errors import pydantic_validations
from dockyard_sdk.manifest import TemplateManifest

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# `{{ parameters.repo | quote }}` puts a value into a shell script as one word, whatever it contains.
_env.filters["quote"] = lambda value: shlex.quote(str(value))
_env.filters["shquote"] = _env.filters["quote"]


# Every create and every agent connection renders its template again; compiling the same strings each time was
# a tenth of the server's CPU when many workspaces start at once. Compiled templates render thread-safely.
@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    return _env.from_string(source)


# Parameter declarations are data, not templates: their descriptions may legitimately contain braces.
_NOT_RENDERED = {"parameters"}


def _render_value(value: Any, context: dict[str, Any], path: str, problems: list[Validation]) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return _compiled(value).render(context)
        except TemplateError as exc:
            problems.append(Validation(path, f"template error: {exc.message or exc}"))
            return value
    if isinstance(value, dict):
        return {
            k: _render_value(v, context, f"{path}.{k}" if path else str(k), problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_render_value(v, context, f"{path}.{i}", problems) for i, v in enumerate(value)]
    return value


def render(
    manifest: TemplateManifest,
    parameters: dict[str, Any],
    *,
    workspace: dict[str, Any] | None = None,
    owner: dict[str, Any] | None = None,
) -> TemplateManifest:
    """Render every string in the manifest (except parameter declarations) and validate the result strictly."""
    raw = manifest.model_dump(mode="json", exclude_unset=False)
    context = {
        "parameters": parameters,
        "workspace": workspace or {"name": "workspace", "id": "", "owner": "owner"},
        "owner": owner or {"username": "owner", "email": ""},
    }
    problems: list[Validation] = []
    rendered = {
        key: (value if key in _NOT_RENDERED else _render_value(value, context, key, problems))
        for key, value in raw.items()
    }
    if problems:
        raise ValidationFailed("The template could not be rendered.", problems)
    try:
        return TemplateManifest.model_validate(rendered, context={"rendered": True})
    except ValidationError as exc:
        raise ValidationFailed(
            "The rendered template is invalid.",
            [Validation(v.field, f"after rendering: {v.detail}") for v in pydantic_validations(exc)],
        ) from exc


def unquoted(source: str) -> list[str]:
    """Problems with `{{ … }}` in a shell script that could let a parameter's text become code."""
    return scriptlint.problems(_env, source)

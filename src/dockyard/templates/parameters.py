"""Typed parameter values: the one check that the API, the dashboard form and `dockyard create` all use."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from dockyard.errors import Validation
from dockyard.templates import formats
from dockyard_sdk.manifest import ParameterSpec, ParameterType

ParameterValue = str | int | float | bool | list[str]


def _number_text(value: float) -> str:
    return f"{value:g}"


def _coerce(spec: ParameterSpec, raw: Any) -> ParameterValue:
    """Turn what a client sent (JSON value or string from a form/CLI) into the parameter's type."""
    match spec.type:
        case ParameterType.STRING:
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            return raw if isinstance(raw, str) else _number_text(raw)
        case ParameterType.NUMBER:
            if isinstance(raw, bool):
                raise ValueError("expected a number, got a boolean")
            if isinstance(raw, str):
                try:
                    raw = float(raw.strip())
                except ValueError:
                    raise ValueError(f"{raw!r} is not a number") from None
            if not isinstance(raw, int | float) or not math.isfinite(raw):
                raise ValueError(f"{raw!r} is not a number")
            return int(raw) if float(raw).is_integer() else float(raw)
        case ParameterType.BOOL:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                return raw.strip().lower() == "true"
            raise ValueError(f"{raw!r} is not true or false")
        case ParameterType.LIST_STRING:
            if isinstance(raw, str):
                try:
                    raw = json.loads(raw) if raw.strip().startswith("[") else [s for s in raw.split(",") if s]
                except json.JSONDecodeError:
                    raise ValueError("expected a JSON list of strings") from None
            if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
                raise ValueError("expected a list of strings")
            return list(raw)
    raise ValueError(f"unsupported parameter type {spec.type}")  # pragma: no cover


def _custom(spec: ParameterSpec, value: ParameterValue, default: str) -> str:
    if spec.validation is None or not spec.validation.error:
        return default
    low = spec.validation.min
    high = spec.validation.max
    return (
        spec.validation.error.replace("{value}", str(value))
        .replace("{min}", "" if low is None else _number_text(low))
        .replace("{max}", "" if high is None else _number_text(high))
    )


def check_value(spec: ParameterSpec, raw: Any) -> tuple[ParameterValue | None, str | None]:
    """Return (typed value, None) or (None, problem)."""
    try:
        value = _coerce(spec, raw)
    except ValueError as exc:
        return None, str(exc)
    if spec.format is not None and isinstance(value, str):
        try:
            value = formats.check(spec.format, value)
        except ValueError as exc:
            return None, _custom(spec, value, str(exc))
    rule = spec.validation
    if spec.options and value not in [option.value for option in spec.options]:
        choices = ", ".join(repr(o.value) for o in spec.options)
        return None, _custom(spec, value, f"{value!r} is not one of the options ({choices})")
    if rule is not None and isinstance(value, int | float) and not isinstance(value, bool):
        if rule.min is not None and value < rule.min:
            return None, _custom(
                spec, value, f"{_number_text(value)} is below the minimum {_number_text(rule.min)}"
            )
        if rule.max is not None and value > rule.max:
            return None, _custom(
                spec, value, f"{_number_text(value)} is above the maximum {_number_text(rule.max)}"
            )
    if (
        rule is not None
        and rule.regex is not None
        and isinstance(value, str)
        and not re.search(rule.regex, value)
    ):
        return None, _custom(spec, value, f"{value!r} does not match {rule.regex}")
    return value, None


def validate(
    schema: list[ParameterSpec],
    values: Mapping[str, Any],
    *,
    previous: Mapping[str, ParameterValue] | None = None,
    template_name: str = "",
) -> tuple[dict[str, ParameterValue], list[Validation]]:
    """Check values against a version's parameters, filling defaults (or previous values on an update).

    Returns every problem at once, each naming its parameter, e.g. `ttl_hours: 30 is above the maximum 24`.
    """
    problems: list[Validation] = []
    resolved: dict[str, ParameterValue] = {}
    known = {spec.name for spec in schema}
    for name in values:
        if name not in known:
            where = f" of template {template_name!r}" if template_name else ""
            hint = f" (known: {', '.join(sorted(known))})" if known else ""
            problems.append(Validation(name, f"is not a parameter{where}{hint}"))
    for spec in schema:
        if spec.name in values and values[spec.name] is not None:
            changed = previous is not None and spec.name in previous and not spec.mutable
            if changed and check_value(spec, values[spec.name])[0] != (previous or {})[spec.name]:
                problems.append(Validation(spec.name, "is immutable and cannot be changed"))
                continue
            value, problem = check_value(spec, values[spec.name])
            if problem is not None:
                problems.append(Validation(spec.name, problem))
            elif value is not None:
                resolved[spec.name] = value
        elif previous is not None and spec.name in previous:
            resolved[spec.name] = previous[spec.name]
        elif spec.default is not None and not spec.required:
            value, problem = check_value(spec, spec.default)
            if problem is not None or value is None:
                problems.append(Validation(spec.name, f"the default is invalid: {problem}"))
            else:
                resolved[spec.name] = value
        elif spec.is_required:
            problems.append(Validation(spec.name, "is required"))
    return resolved, problems


def defaults_problems(schema: list[ParameterSpec]) -> list[Validation]:
    """Problems with the defaults a template declares (checked when a version is pushed)."""
    problems = []
    for index, spec in enumerate(schema):
        if spec.default is None:
            continue
        _, problem = check_value(spec, spec.default)
        if problem is not None:
            problems.append(Validation(f"parameters.{index}.default", f"{spec.name}: {problem}"))
    return problems

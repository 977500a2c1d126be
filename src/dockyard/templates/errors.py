"""Turning pydantic errors into field-named validations."""

from __future__ import annotations

from pydantic import ValidationError

from dockyard.errors import Validation


def field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def pydantic_validations(exc: ValidationError) -> list[Validation]:
    problems = []
    for error in exc.errors(include_url=False):
        # Union members add their type name to the location; it means nothing to a template author.
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Validation(field_path(loc), message))
    # A union reports once per member; keep the first message per field.
    seen: set[str] = set()
    unique = []
    for problem in problems:
        if problem.field not in seen:
            seen.add(problem.field)
            unique.append(problem)
    return unique


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before"}

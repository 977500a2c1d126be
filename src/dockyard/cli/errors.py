"""Errors the CLI finds itself (no credentials, a bad manifest, a bad option) and how they mirror `ApiError`.

A local problem is printed exactly like a server error (message, one line per field, hint), so a user cannot
tell, and need not care, whether the CLI or the server rejected the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    # pydantic and the wire models load with the first request; `ssh --stdio` raises CliError without them.
    from pydantic import BaseModel, ValidationError

    from dockyard_sdk.models import ValidationDetail

M = TypeVar("M", bound="BaseModel")

# Union members add their type to an error's location ("default.str"); it means nothing to a user.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before"}


class CliError(Exception):
    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        validations: list[ValidationDetail] | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.validations = validations or []
        self.hint = hint


def error_lines(
    message: str, *, detail: str = "", validations: Sequence[ValidationDetail] = (), hint: str = ""
) -> list[str]:
    """How an error prints on stderr: `error: …`, its detail, one line per field, and a hint."""
    problems = [_problem(v) for v in validations]
    lines = [f"error: {message}"]
    # A 422's detail is its validations joined on one line; printing it would say everything twice.
    if detail and detail != "; ".join(problems):
        lines.append(f"  {detail}")
    lines += [f"  {problem}" for problem in problems]
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def _problem(v: ValidationDetail) -> str:
    where = f"{v.file}:{v.line}: " if v.file and v.line else f"{v.file}: " if v.file else ""
    return f"{where}{v.field}: {v.detail}"


def unreachable(url: str, exc: BaseException) -> CliError:
    """An unreachable server, named by its URL (the SDK's ConnectionFailed, or the OSError behind it)."""
    return CliError(
        f"cannot reach Dockyard at {url}",
        detail=str(exc.__cause__ or exc),
        hint="check the URL and that the server is running",
    )


def not_logged_in() -> CliError:
    return CliError("not logged in", hint="run `dockyard login URL`")


def validations_of(exc: ValidationError, *, names: Mapping[str, str] | None = None) -> list[ValidationDetail]:
    """One `ValidationDetail` per field, named like the server names it (or by `names`, e.g. an option)."""
    from dockyard_sdk.models import ValidationDetail  # see the TYPE_CHECKING import

    seen: set[str] = set()
    problems = []
    for error in exc.errors(include_url=False):
        loc = [p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]
        field = ".".join(str(p) for p in loc) or "(root)"
        if names and loc and str(loc[0]) in names:
            field = ".".join([names[str(loc[0])], *(str(p) for p in loc[1:])])
        if field in seen:
            continue
        seen.add(field)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(ValidationDetail(field=field, detail=message))
    return problems


def build_request(model: type[M], *, names: Mapping[str, str], **fields: Any) -> M:
    """Build a request body before any request is sent, naming a bad value after the option that gave it.

    None means "not given", so the model's default (the same one the server applies) is used.
    """
    from pydantic import ValidationError  # see the TYPE_CHECKING import

    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise CliError("Invalid request.", validations=validations_of(exc, names=names)) from exc

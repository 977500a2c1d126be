"""Errors the CLI finds itself (no credentials, a bad manifest, a bad option) and how they mirror `ApiError`.

A local problem is printed exactly like a server error (message, one line per field, hint), so a user cannot
tell, and need not care, whether the CLI or the server rejected the input.
"""

from __future__ import annotations

from collections.abc import Mapping
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

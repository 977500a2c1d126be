"""Turning a refused form into messages at its fields, worded as the API words them (api/errors.py)."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request

from dockyard.errors import Validation
from dockyard.web import session
from dockyard.web.session import CSRF_FIELD

MAX_FIELDS = 120


def problems(exc: ValidationError) -> list[Validation]:
    """The request model's complaints, with the same messages `422 Invalid request.` carries."""
    found = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field"
        found.append(Validation(".".join(str(p) for p in error.get("loc", ())) or "body", message))
    return found


def at_fields(found: list[Validation], fields: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """(first message per form field, the rest): `scopes.0` belongs to the field `scopes`."""
    errors: dict[str, str] = {}
    general: list[str] = []
    for problem in found:
        field = problem.field.split(".", 1)[0]
        if field in fields:
            errors.setdefault(field, problem.detail)
        else:
            general.append(str(problem))
    return errors, general


async def read(request: Request) -> dict[str, list[str]]:
    """The posted form as lists of strings, after checking its CSRF token (raises BadRequest)."""
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    session.check_session_csrf(request, form.get(CSRF_FIELD))
    return {key: [str(v) for v in form.getlist(key)] for key in form}


def one(form: dict[str, list[str]], key: str, *, limit: int = 4096) -> str:
    values = form.get(key) or [""]
    return values[-1][:limit]

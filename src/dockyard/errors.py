"""Domain errors. Services raise these; `api/errors.py` renders them as the JSON error model.

Each carries the HTTP status it means so that one handler can render every one of them, and so that the
services never import FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Validation:
    """One problem with one input field, e.g. ``Validation("ttl_hours", "30 is above the maximum 24")``."""

    field: str
    detail: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = (
            f"{self.file}:{self.line}: " if self.file and self.line else f"{self.file}: " if self.file else ""
        )
        return f"{where}{self.field}: {self.detail}"


class DockyardError(Exception):
    status_code = 500

    def __init__(
        self, message: str, *, detail: str = "", validations: list[Validation] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.validations = list(validations or [])


class BadRequest(DockyardError):
    status_code = 400


class Unauthorized(DockyardError):
    status_code = 401


class Forbidden(DockyardError):
    status_code = 403


class NotFound(DockyardError):
    status_code = 404


class Conflict(DockyardError):
    status_code = 409


class PayloadTooLarge(DockyardError):
    status_code = 413


class ValidationFailed(DockyardError):
    status_code = 422

    def __init__(self, message: str, validations: list[Validation], *, detail: str = "") -> None:
        if not detail:
            detail = "; ".join(str(v) for v in validations)
        super().__init__(message, detail=detail, validations=validations)


class TooManyRequests(DockyardError):
    """Refused for now; `retry_after` seconds from now it may succeed (rendered as the Retry-After header)."""

    status_code = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        detail: str = "",
        validations: list[Validation] | None = None,
    ) -> None:
        super().__init__(message, detail=detail, validations=validations)
        self.retry_after = retry_after


class ServiceUnavailable(DockyardError):
    status_code = 503

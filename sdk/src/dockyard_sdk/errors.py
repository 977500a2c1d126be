"""The errors the SDK raises.

    Exception
     └── DockyardSdkError              anything the SDK raises on purpose
          ├── ConnectionFailed         the server could not be reached at all
          ├── Timeout                  a call ran past its time limit (the remote command is killed first)
          ├── BuildFailed              a workspace waited for ended failed, stopped or deleted instead
          └── ApiError                 a non-2xx reply: status_code, message, detail, validations
               ├── BadRequest          400
               ├── Unauthorized        401 (no, expired or revoked token)
               ├── Forbidden           403 (role or token scopes)
               ├── NotFound            404 (also what another user's workspace looks like)
               ├── Conflict            409 (e.g. the workspace is not running)
               ├── PayloadTooLarge     413
               ├── ValidationError     422 (`validations` names each bad field)
               ├── RateLimited         429 (`retry_after` in seconds, when the server says)
               └── ServerError         5xx

`error_for(status, ...)` picks the class; both the HTTP client and the WebSocket handshake use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Names in signatures only: the standard-library client (dockyard_sdk.plain) raises these errors without
    # importing pydantic.
    from dockyard_sdk.models import ValidationDetail, Workspace


class DockyardSdkError(Exception):
    """Base of every error the SDK raises on purpose."""


class ConnectionFailed(DockyardSdkError):
    """The server could not be reached at all."""


class Timeout(DockyardSdkError):
    """A call did not finish within its timeout; a command it started has been killed."""


class BuildFailed(DockyardSdkError):
    """A workspace could not reach the state waited for (its build failed or it was stopped meanwhile)."""

    def __init__(self, message: str, *, workspace: Workspace) -> None:
        super().__init__(message)
        self.workspace = workspace


class ApiError(DockyardSdkError):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        detail: str = "",
        validations: list[ValidationDetail] | None = None,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.detail = detail
        self.validations = validations or []
        self.method = method
        self.url = url
        self.retry_after = retry_after

    @property
    def hint(self) -> str:
        if self.status_code == 401:
            return "Run `dockyard login` (or set DOCKYARD_TOKEN) with a valid token."
        if self.status_code == 403:
            return "Your role or your token's scopes do not allow this."
        if self.status_code == 429 and self.retry_after is not None:
            return f"Try again in {self.retry_after:g} s."
        return ""

    def __str__(self) -> str:
        lines = [self.message]
        if self.detail and not self.validations:
            lines.append(self.detail)
        lines.extend(
            f"  {v.file + ':' + str(v.line) + ': ' if v.file and v.line else ''}{v.field}: {v.detail}"
            for v in self.validations
        )
        return "\n".join(lines)


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class ValidationError(ApiError):
    """The request was refused field by field: see `validations` (each has `field` and `detail`)."""


class RateLimited(ApiError):
    """Too many requests or over a quota; `retry_after` says when to try again, when the server knows."""


class ServerError(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
}


def error_for(
    status_code: int,
    message: str,
    *,
    detail: str = "",
    validations: list[ValidationDetail] | None = None,
    method: str = "",
    url: str = "",
    retry_after: str | None = None,
) -> ApiError:
    """The most specific `ApiError` subclass for an HTTP status."""
    cls = _BY_STATUS.get(status_code) or (ServerError if status_code >= 500 else ApiError)
    seconds: float | None = None
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            # An HTTP date instead of seconds: the caller still learns that it was rate limited.
            seconds = None
    return cls(
        status_code,
        message,
        detail=detail,
        validations=validations,
        method=method,
        url=url,
        retry_after=seconds,
    )

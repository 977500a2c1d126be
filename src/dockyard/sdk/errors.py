"""The one error type the SDK raises for a non-2xx reply."""

from __future__ import annotations

from dockyard.sdk.models import ValidationDetail


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        detail: str = "",
        validations: list[ValidationDetail] | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.detail = detail
        self.validations = validations or []
        self.method = method
        self.url = url

    @property
    def hint(self) -> str:
        if self.status_code == 401:
            return "Run `dockyard login` (or set DOCKYARD_TOKEN) with a valid token."
        if self.status_code == 403:
            return "Your role or your token's scopes do not allow this."
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


class ConnectionFailed(Exception):
    """The server could not be reached at all."""

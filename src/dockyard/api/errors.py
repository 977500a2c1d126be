"""One place that renders every error as `{"message", "detail", "validations"}`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from dockyard import logs
from dockyard.errors import DockyardError, TooManyRequests, Validation
from dockyard_sdk.models import ErrorResponse, ValidationDetail

log = logs.get(__name__)

_HTTP_MESSAGES = {
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
}


def error_response(
    status: int,
    message: str,
    detail: str = "",
    validations: list[Validation] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        message=message,
        detail=detail,
        validations=[
            ValidationDetail(field=v.field, detail=v.detail, file=v.file, line=v.line)
            for v in validations or []
        ],
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or str(loc[0] if loc else "body")


async def _dockyard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DockyardError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(exc.status_code, exc.message, exc.detail, exc.validations, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | WebSocketRequestValidationError)
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            context = error.get("ctx", {}).get("error", "")
            return error_response(400, "Malformed JSON in the request body.", str(context))
    validations = []
    for error in errors:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        elif error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "nul_character":
            loc = (*loc, *str(error.get("ctx", {}).get("field", "")).split("."))
        validations.append(Validation(_field(loc), message))
    return error_response(422, "Invalid request.", "; ".join(str(v) for v in validations), validations)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = (
        exc.detail if isinstance(exc.detail, str) and exc.detail else _HTTP_MESSAGES.get(exc.status_code, "")
    )
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route for {request.method} {request.url.path}."
    return error_response(exc.status_code, message or "Request failed.", headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", path=request.url.path, method=request.method, exc_info=exc)
    return error_response(500, "Internal server error.", "The server logged the details.")


# WebSocket close codes for errors after the handshake: 4000 + the HTTP status the error would have had.
WS_CLOSE_BASE = 4000


def _for_websockets(
    handler: Callable[[Any, Exception], Awaitable[JSONResponse]],
) -> Any:
    """Errors in a WebSocket route answer the handshake with the same JSON error as HTTP routes (a denial
    response), or, once the socket is accepted, close it with 4000 + status and the message as reason."""

    async def handle(connection: Any, exc: Exception) -> JSONResponse | None:
        if not isinstance(connection, WebSocket):
            return await handler(connection, exc)
        response = await handler(connection, exc)
        if connection.application_state == WebSocketState.CONNECTING:
            await connection.send_denial_response(response)
        elif connection.application_state == WebSocketState.CONNECTED:
            message = json.loads(bytes(response.body)).get("message", "")
            # The client may be gone already: then there is nobody to tell.
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await connection.close(WS_CLOSE_BASE + response.status_code, message[:120])
        return None

    return handle


async def _client_left(connection: Any, exc: Exception) -> None:
    """A WebSocket client that closed (or vanished) while its route still read or wrote: the normal end of a
    session, not a server error. Without this handler it would reach uvicorn as "Exception in ASGI
    application" with a traceback."""
    assert isinstance(exc, WebSocketDisconnect)
    log.debug("websocket client left", path=connection.url.path, code=exc.code)


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's WebSocket protocol logs "ASGI callable returned without completing handshake" at ERROR after
    every denial response (the JSON 401/403/404 that answers a refused upgrade), although the handshake was
    answered. That line is expected here, so it is kept at INFO."""

    MESSAGE = "ASGI callable returned without completing handshake."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage() == self.MESSAGE:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "websocket upgrade answered with an HTTP error response", ()
        return True


def _quiet_denials() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialIsNotAnError) for f in logger.filters):
        logger.addFilter(_DenialIsNotAnError())


def install(app: FastAPI) -> None:
    _quiet_denials()
    app.add_exception_handler(WebSocketDisconnect, _client_left)
    app.add_exception_handler(DockyardError, _for_websockets(_dockyard_error))
    app.add_exception_handler(RequestValidationError, _for_websockets(_validation_error))
    app.add_exception_handler(WebSocketRequestValidationError, _for_websockets(_validation_error))
    app.add_exception_handler(StarletteHTTPException, _for_websockets(_http_error))
    app.add_exception_handler(Exception, _for_websockets(_unexpected))

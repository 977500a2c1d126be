"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs every request a task and breaks streaming)."""

from __future__ import annotations

import itertools
import os
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard import logs
from dockyard.api.errors import error_response
from dockyard.errors import Validation

log = logs.get("dockyard.access")

# Unique across processes (random prefix) and cheap per request (a counter, not a uuid from os.urandom).
_REQUEST_PREFIX = os.urandom(4).hex()
_request_numbers = itertools.count(1)

REQUESTS = Counter("dockyard_http_requests_total", "HTTP requests served", ["method", "route", "status"])
LATENCY = Histogram(
    "dockyard_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class ObserveMiddleware:
    """Request id, Prometheus metrics labelled by route template, and one structured access-log line."""

    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = f"{_REQUEST_PREFIX}-{next(_request_numbers)}"
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The route template keeps label cardinality bounded; raw paths would not.
            template = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(elapsed)
            if self.access_log:
                state = scope.get("state") or {}
                actor = state.get("actor")
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round(elapsed * 1000, 2),
                    user=getattr(actor, "username", None),
                    request_id=request_id,
                )


class RejectNulMiddleware:
    """400 for a NUL byte in the path or query string, before it can reach a query (PostgreSQL refuses them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            if b"%00" in raw or b"\x00" in raw or b"%00" in query or b"\x00" in query:
                where = "path" if b"%00" in raw or b"\x00" in raw else "query"
                response = error_response(
                    400,
                    f"NUL characters are not allowed in the request {where}.",
                    validations=[Validation(where, "contains %00")],
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses request bodies over `limit` bytes before they are read into memory (413).

    Starlette's RequestBodyLimitMiddleware (FastAPI's `max_body_size`) answers in plain text, outside the
    JSON error model every client of this API relies on, so Dockyard keeps this small one.
    """

    def __init__(self, app: ASGIApp, *, limit: int, streamed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        # Path suffixes whose routes stream the body onward and enforce their own limit (file uploads).
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.streamed and scope["path"].endswith(self.streamed)):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit or declared < 0:
                    response = error_response(
                        413 if declared > self.limit else 400,
                        f"Request body is larger than {self.limit // 2**20} MB."
                        if declared > self.limit
                        else "Invalid Content-Length header.",
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            response = error_response(413, f"Request body is larger than {self.limit // 2**20} MB.")
            await response(scope, receive, send)


class BodyTooLarge(Exception):
    pass

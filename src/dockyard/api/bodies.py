"""JSON bodies sent without a JSON content type, as `curl -d '{…}'` sends them.

curl's `-d` labels a body `application/x-www-form-urlencoded` unless told otherwise, and the product brief's own
create request is written that way; FastAPI would then refuse it as "not an object". This middleware relabels
such a body `application/json` when it is a JSON document, so the route's own model validates it as usual.

Only requests that carry an `Authorization` header qualify. A browser page on another origin can send a
form-encoded (or unlabelled) body with the user's cookie and no preflight, but it cannot set `Authorization`;
cookie-authenticated requests therefore keep needing a real JSON content type, which a cross-origin page
cannot send without CORS allowing it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Bodies relabelled are API requests (a create, an exec), never uploads; bigger ones pass untouched.
MAX_RELABELLED = 256 * 1024
_RELABELLED_TYPES = {b"", b"application/x-www-form-urlencoded"}


class JsonBodyMiddleware:
    def __init__(self, app: ASGIApp, *, streamed: tuple[str, ...] = ()) -> None:
        self.app = app
        # Routes that stream their body (file uploads) take bytes as they are and must not be buffered.
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._eligible(scope):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        size = 0
        complete = False
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                complete = True
                break
            if size > MAX_RELABELLED:
                break
        if complete and _is_json(b"".join(m.get("body", b"") for m in received)):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}

        async def replay() -> Message:
            if received:
                return received.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _eligible(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return False
        path: str = scope["path"]
        if not path.startswith("/api/") or path.endswith(self.streamed):
            return False
        content_type = b""
        authorized = False
        length = 0
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower()
            elif key == b"authorization":
                authorized = True
            elif key == b"content-length":
                length = int(value) if value.isdigit() else MAX_RELABELLED + 1
        return authorized and content_type in _RELABELLED_TYPES and length <= MAX_RELABELLED


def _is_json(body: bytes) -> bool:
    # Only documents that are objects or arrays: a form body such as `a=1` or a bare word is left alone.
    if body.lstrip()[:1] not in (b"{", b"["):
        return False
    try:
        json.loads(body)
    except ValueError:
        return False
    return True

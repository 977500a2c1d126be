"""The SDK's WebSocket streams against the in-process server of the harness.

The harness's clients speak HTTP through Starlette's TestClient, which websockets cannot dial; `in_process`
gives a client an `open_websocket` built on the TestClient's WebSocket sessions instead, so that the stream
classes, the CLI and the server's WebSocket routes are exercised together without a listening socket.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.testclient import TestClient, WebSocketDenialResponse, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk.streams import CLOSE_STATUS_BASE, StreamClosed, denied

_CLOSED = object()


def _close_error(code: int, reason: str, url: str) -> Exception | None:
    if code >= CLOSE_STATUS_BASE:
        return ApiError(code - CLOSE_STATUS_BASE, reason, method="GET", url=url)
    if code in (1000, 1001):
        return None
    return ConnectionFailed(f"the connection to Dockyard was lost ({code} {reason})")


class InProcessSocket:
    """`streams.Socket` over a TestClient WebSocket session; a reader thread makes `recv(timeout)` possible."""

    def __init__(self, http: TestClient, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.messages: queue.Queue[Any] = queue.Queue()
        self.closed: tuple[int, str] | None = None
        session = http.websocket_connect(url, headers=dict(headers))
        try:
            self.session: WebSocketTestSession = session.__enter__()
        except WebSocketDenialResponse as exc:
            raise denied(exc.status_code, exc.content, url) from None
        except WebSocketDisconnect as exc:
            raise _close_error(exc.code, exc.reason or "", url) or ConnectionFailed(
                "closed at once"
            ) from None
        self.reader = threading.Thread(target=self._read, name="in-process-ws", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self.session.receive()
            except Exception:  # noqa: BLE001 - the session was torn down under the reader
                self.messages.put((_CLOSED, 1006, "torn down"))
                return
            if message["type"] == "websocket.close":
                self.messages.put((_CLOSED, message.get("code", 1000), message.get("reason") or ""))
                return
            self.messages.put(message)

    def _raise_if_closed(self) -> None:
        if self.closed is not None:
            error = _close_error(*self.closed, self.url)
            raise error or StreamClosed("the stream has ended")

    def send_bytes(self, data: bytes) -> None:
        self._raise_if_closed()
        self.session.send_bytes(data)

    def send_json(self, message: Mapping[str, Any]) -> None:
        self._raise_if_closed()
        self.session.send_text(json.dumps(message))

    def recv(self, timeout: float | None = None) -> bytes | dict[str, Any] | None:
        if self.closed is not None:
            return None
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if isinstance(message, tuple) and message[0] is _CLOSED:
            if self.closed is not None:
                return None  # closed from this side while waiting
            self.closed = (message[1], message[2])
            error = _close_error(message[1], message[2], self.url)
            if error is not None:
                raise error
            return None
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        decoded: dict[str, Any] = json.loads(message["text"])
        return decoded

    def close(self) -> None:
        if self.closed is None:
            self.closed = (1000, "")
            # The app may have ended the session already.
            with contextlib.suppress(Exception):
                self.session.__exit__(None, None, None)


def in_process(client: Client, server: TestClient) -> Client:
    """Make `client` open its WebSockets in process, through `server`: the harness's `lifespan` client.

    That one is entered, so its sessions run on the event loop of the app's lifespan, where the agent hub
    lives; a fresh TestClient would run each session on a loop of its own, and the hub's streams, made on the
    lifespan's loop, would then be used across loops.
    """

    def open_websocket(path: str, params: Mapping[str, Any] | None = None) -> InProcessSocket:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = path + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
        return InProcessSocket(server, url, headers)

    client.open_websocket = open_websocket  # type: ignore[method-assign]
    return client

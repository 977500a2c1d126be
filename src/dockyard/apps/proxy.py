"""The app proxy: an ASGI middleware in front of the API and dashboard that answers app URLs itself.

Path apps (`/@owner/workspace/apps/slug/…`, `/ports/N/…`) share the dashboard's origin, so (docs/SECURITY.md):
Dockyard's cookies and tokens are removed from what the app receives; Set-Cookie headers that would plant a
`dockyard_*` cookie are dropped; and each response carries `Content-Security-Policy: sandbox …` without
`allow-same-origin`, so the app's pages run in an opaque origin: they cannot read the dashboard or the API, and
their requests carry `Origin: null`, which the cross-site middleware refuses for cookie-authenticated calls.
Subdomain apps live on their own origin, where the dashboard cookie is never sent at all (apps/tickets.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpcore
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard import logs
from dockyard.accounts import tokens
from dockyard.accounts.actor import Actor
from dockyard.apps import access, tickets, upstream
from dockyard.apps.messages import response_headers, unreachable_page, upstream_headers, wants_html
from dockyard.apps.routing import AUTH_PATH, PATH_PREFIX, Target, Wildcard, parse_path
from dockyard.errors import DockyardError, Unauthorized
from dockyard.tunnel import bridge, connect, state

log = logs.get(__name__)


class AppsMiddleware:
    def __init__(self, app: ASGIApp, *, wildcard: str = "", access_url: str = "") -> None:
        self.app = app
        self.wildcard = Wildcard.parse(wildcard) if wildcard else None
        self.access_url = access_url.rstrip("/")
        self.used = tickets.UsedTickets()
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        target: Target | None = None
        try:
            if self.wildcard is not None:
                target = self.wildcard.match(headers.get("host", ""))
                if target is not None:
                    target = Target(
                        target.owner,
                        target.workspace,
                        target.slug,
                        target.port,
                        "",
                        scope["path"],
                        subdomain=True,
                    )
            if target is None and scope["path"].startswith(PATH_PREFIX):
                target = parse_path(scope["path"])
        except DockyardError as exc:
            await self._refuse(scope, receive, send, exc, headers)
            return
        if target is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._serve(scope, receive, send, target, headers)
        except DockyardError as exc:
            await self._refuse(scope, receive, send, exc, headers, target=target)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exc: DockyardError,
        headers: Headers,
        *,
        target: Target | None = None,
    ) -> None:
        if (
            isinstance(exc, Unauthorized)
            and target is not None
            and scope["type"] == "http"
            and wants_html(headers)
        ):
            response: Response = self._login_redirect(scope, headers, target)
        else:
            response = unreachable_page(exc, html_page=scope["type"] == "http" and wants_html(headers))
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive, send)
            if "websocket.http.response" in scope.get("extensions", {}):
                await websocket.send_denial_response(response)
            else:
                await websocket.close(4000 + exc.status_code, exc.message[:120])
            return
        await response(scope, receive, send)

    def _login_redirect(self, scope: Scope, headers: Headers, target: Target) -> Response:
        query = scope.get("query_string", b"").decode("latin-1")
        here = scope["path"] + (f"?{query}" if query else "")
        if not target.subdomain:
            return RedirectResponse(f"/login?next={quote(here, safe='/@')}", status_code=303)
        host = headers.get("host", "")
        back = f"{scope.get('scheme', 'http')}://{host}{here}"
        base = self.access_url
        if not base:
            return unreachable_page(
                Unauthorized(
                    "Log in to open this app.", detail="The server has no --access-url to send you to."
                ),
                html_page=True,
            )
        return RedirectResponse(f"{base}/apps/auth?{urlencode({'redirect': back})}", status_code=303)

    async def _actor(self, connection: HTTPConnection, target: Target) -> Actor | None:
        from dockyard.api.deps import bearer_key, current_actor

        if (
            target.subdomain
            and not connection.headers.get("authorization")
            and not connection.headers.get("dockyard-session-token")
        ):
            value = connection.cookies.get(tickets.APP_COOKIE)
            if not value:
                return None
            payload = tickets.verify(
                connection.app.state.apps_key,
                value,
                purpose="cookie",
                host=connection.headers.get("host", ""),
            )
            if payload is None:
                return None

            def load() -> Actor:
                with connection.app.state.read_sessions() as db:
                    return tokens.actor_for(db, payload["t"])

            try:
                return await asyncio.to_thread(load)
            except Unauthorized:
                return None
        if not bearer_key(connection):
            return None
        try:
            return await current_actor(connection)
        except Unauthorized:
            return None

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, target: Target, headers: Headers
    ) -> None:
        connection = HTTPConnection(scope, receive)
        app_state = connection.app.state
        if target.subdomain and scope["path"] == AUTH_PATH and scope["type"] == "http":
            await self._exchange_ticket(connection, target).__call__(scope, receive, send)
            return
        if not target.subdomain and not target.rest:
            query = scope.get("query_string", b"").decode("latin-1")
            await RedirectResponse(target.prefix + "/" + (f"?{query}" if query else ""), status_code=308)(
                scope, receive, send
            )
            return
        actor = await self._actor(connection, target)

        def check() -> access.Resolved:
            with app_state.read_sessions() as db:
                resolved = access.resolve(db, target)
                access.authorize(db, actor, resolved)
                return resolved

        resolved = await asyncio.to_thread(check)
        hub = app_state.hub
        await connect.require_running(app_state.sessions, hub, resolved.workspace_id)
        path = (target.rest or "/") if not target.subdomain else scope["path"]
        raw_path = scope.get("raw_path")
        if raw_path and not target.subdomain:
            # Keep the app's part of the path as the browser encoded it.
            path = raw_path.decode("latin-1")[len(target.prefix) :] or "/"
        elif raw_path:
            path = raw_path.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        url_path = path + (f"?{query}" if query else "")
        if scope["type"] == "websocket":
            activity = asyncio.ensure_future(
                bridge.keep_active(app_state.sessions, resolved.workspace_id, "app")
            )
            try:
                await self._websocket(scope, receive, send, target, headers, resolved, url_path)
            finally:
                activity.cancel()
            return
        self._touch(app_state.sessions, resolved.workspace_id)
        await self._http(scope, receive, send, target, headers, resolved, url_path)

    def _touch(self, sessions: Any, workspace_id: str) -> None:
        """App traffic keeps the workspace from idling; a page's many asset requests make one write at most
        every state.ACTIVITY_HEARTBEAT seconds (the database write is throttled too, but each would still be a
        round trip)."""
        now = time.monotonic()
        if now - self._touched.get(workspace_id, -state.ACTIVITY_HEARTBEAT) < state.ACTIVITY_HEARTBEAT:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[workspace_id] = now
        task = asyncio.ensure_future(asyncio.to_thread(state.touch, sessions, workspace_id, "app"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _exchange_ticket(self, connection: HTTPConnection, target: Target) -> Response:
        host = connection.headers.get("host", "")
        ticket = connection.query_params.get("ticket", "")
        payload = tickets.verify(connection.app.state.apps_key, ticket, purpose="ticket", host=host)
        if payload is None or not self.used.first_use(str(payload.get("n")), float(payload["e"])):
            raise Unauthorized(
                "This sign-in link is invalid or expired.", detail="Open the app from the dashboard again."
            )
        redirect = connection.query_params.get("redirect", "/")
        if not redirect.startswith("/") or redirect.startswith("//"):
            redirect = "/"
        cookie = tickets.sign(
            connection.app.state.apps_key,
            purpose="cookie",
            host=host,
            token_id=payload["t"],
            seconds=tickets.COOKIE_SECONDS,
        )
        response = RedirectResponse(redirect, status_code=303)
        response.set_cookie(
            tickets.APP_COOKIE,
            cookie,
            httponly=True,
            samesite="lax",
            secure=connection.url.scheme == "https",
            max_age=tickets.COOKIE_SECONDS,
            path="/",
        )
        return response

    async def _http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        headers: Headers,
        resolved: access.Resolved,
        url_path: str,
    ) -> None:
        has_body = (
            scope["method"] not in ("GET", "HEAD")
            or "content-length" in headers
            or ("transfer-encoding" in headers)
        )

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        pool = upstream.pool(app_state_hub(scope), resolved.workspace_id, resolved.port)
        request = httpcore.Request(
            scope["method"],
            httpcore.URL(
                scheme=b"http", host=b"127.0.0.1", port=resolved.port, target=url_path.encode("latin-1")
            ),
            headers=upstream_headers(headers, scope, target),
            content=body() if has_body else None,
            extensions={"timeout": {"connect": 15.0, "read": None, "write": 60.0, "pool": 15.0}},
        )
        try:
            try:
                response = await pool.handle_async_request(request)
            except (
                httpcore.ConnectError,
                httpcore.RemoteProtocolError,
                httpcore.ReadError,
                httpcore.WriteError,
            ) as exc:
                raise upstream.AppUnreachable(
                    "App not reachable yet.",
                    detail=f"port {resolved.port} in the workspace: {exc or type(exc).__name__}",
                ) from exc
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": response_headers(list(response.headers), target),
                    }
                )
                try:
                    async for chunk in response.aiter_stream():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except (httpcore.ReadError, httpcore.RemoteProtocolError) as exc:
                    log.info("app response ended early", workspace=resolved.workspace_id, error=str(exc))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await response.aclose()
        finally:
            await pool.aclose()

    async def _websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        headers: Headers,
        resolved: access.Resolved,
        url_path: str,
    ) -> None:
        from websockets.asyncio.client import connect as ws_connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        client = WebSocket(scope, receive, send)
        stream = await upstream.dial(app_state_hub(scope), resolved.workspace_id, resolved.port)
        sock, pump = await upstream.socket_through(stream)
        forwarded = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in upstream_headers(headers, scope, target)
            if k.lower() not in (b"host",)
        ]
        protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        try:
            try:
                app_ws = await ws_connect(
                    f"ws://127.0.0.1:{resolved.port}{url_path}",
                    sock=sock,
                    additional_headers=forwarded,
                    subprotocols=protocols or None,  # type: ignore[arg-type]
                    open_timeout=15,
                    max_size=None,
                    compression=None,
                )
            except (InvalidHandshake, OSError, TimeoutError) as exc:
                raise upstream.AppUnreachable(
                    "App not reachable yet.",
                    detail=f"port {resolved.port}: WebSocket handshake failed: {exc}",
                ) from exc
            await client.accept(subprotocol=app_ws.subprotocol)

            async def to_app() -> None:
                while True:
                    message = await client.receive()
                    if message["type"] == "websocket.disconnect":
                        await app_ws.close()
                        return
                    if message.get("bytes") is not None:
                        await app_ws.send(message["bytes"])
                    elif message.get("text") is not None:
                        await app_ws.send(message["text"])

            async def to_client() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for data in app_ws:
                        if isinstance(data, bytes):
                            await client.send_bytes(data)
                        else:
                            await client.send_text(data)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await client.close(app_ws.close_code or 1000)

            await bridge.run_until_first(to_app(), to_client())
            await app_ws.close()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            sock.close()


def app_state_hub(scope: Scope) -> Any:
    return scope["app"].state.hub

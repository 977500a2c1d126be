"""JSON requests and server-sent event streams, on the standard library alone.

For programs whose start-up is most of their run: the CLI's `dockyard list` prints the API's own JSON (or a
table of it) and has no use for httpx's connection pool or the wire models, whose import alone takes longer than
the request, and `dockyard start/stop/restart` follow a build's event stream with it. The errors are the SDK's own
(`dockyard_sdk.errors`), as `Client` raises them; `Client.get_json` answers the same GETs through httpx, so one
caller can take either client.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

from dockyard_sdk.errors import ApiError, ConnectionFailed, Timeout, error_for
from dockyard_sdk.version import __version__

if TYPE_CHECKING:
    import ssl

_MAX_ERROR_BODY = 64 * 1024


class JsonSource(Protocol):
    """What `PlainClient` and `Client` both offer: a GET whose JSON answer is returned decoded."""

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any: ...


def _tls_context() -> ssl.SSLContext:
    # Imported only for https; the trust store is httpx's (SSL_CERT_FILE/SSL_CERT_DIR, else certifi's).
    import os
    import ssl

    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not cafile and not capath:
        import certifi

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile or None, capath=capath or None)


class PlainClient:
    """One keep-alive connection to a Dockyard server, for JSON requests and event streams."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._prefix = parts.path.rstrip("/")
        self._host = parts.netloc.rpartition("@")[2]
        self._https = parts.scheme == "https"
        self._connection = self._connect(timeout)
        self._headers = {"User-Agent": f"dockyard-sdk/{__version__}", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, timeout=timeout, context=_tls_context())
        return http.client.HTTPConnection(self._host, timeout=timeout)

    def _target(self, path: str, params: Mapping[str, Any] | None) -> str:
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        return f"{self._prefix}{path}" + (f"?{query}" if query else "")

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params)

    def post_json(self, path: str, body: Any) -> Any:
        return self.request_json("POST", path, body=body)

    def request_json(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, *, body: Any = None
    ) -> Any:
        headers = self._headers
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            self._connection.request(method, self._target(path, params), body=payload, headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except TimeoutError as exc:
            self.close()
            raise Timeout(f"Dockyard at {self.url} did not answer {method} {path} in time: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionFailed(f"Cannot reach Dockyard at {self.url}: {exc}") from exc
        if response.status >= 400:
            raise self._error(response, data[:_MAX_ERROR_BODY], method=method, url=f"{self.url}{path}")
        return json.loads(data)

    def events(
        self, path: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Iterator[tuple[str, str]]:
        """A server-sent event stream's `(event, data)` pairs, as each arrives, until the server ends it.

        On a connection of its own (the stream holds its connection until it ends), whose reads wait `timeout`
        seconds at most (None: as long as the stream lasts); a read past it raises `Timeout`.
        """
        connection = self._connect(timeout)
        try:
            try:
                connection.request("GET", self._target(path, params), headers=self._headers)
                response = connection.getresponse()
                if response.status >= 400:
                    raise self._error(
                        response, response.read()[:_MAX_ERROR_BODY], method="GET", url=f"{self.url}{path}"
                    )
                event, data = "message", list[str]()
                for raw in response:
                    line = raw.decode().rstrip("\r\n")
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
                        continue
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)
            except TimeoutError as exc:
                raise Timeout(f"Dockyard at {self.url} sent nothing on GET {path} in time: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise ConnectionFailed(f"Cannot reach Dockyard at {self.url}: {exc}") from exc
        finally:
            connection.close()

    @staticmethod
    def _error(response: http.client.HTTPResponse, body: bytes, *, method: str, url: str) -> ApiError:
        try:
            decoded = json.loads(body)
            message, detail = str(decoded["message"]), str(decoded.get("detail") or "")
            raw_validations = decoded.get("validations") or []
        except (ValueError, KeyError, TypeError):
            message, detail, raw_validations = (
                f"HTTP {response.status}",
                body.decode(errors="replace")[:500],
                [],
            )
        validations = None
        if raw_validations:
            # Rare (the CLI checks what it sends first): the wire model is worth its import here.
            from dockyard_sdk.models import ValidationDetail

            validations = [ValidationDetail.model_validate(v) for v in raw_validations]
        return error_for(
            response.status,
            message,
            detail=detail,
            validations=validations,
            method=method,
            url=url,
            retry_after=response.getheader("Retry-After"),
        )

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PlainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ApiError", "JsonSource", "PlainClient"]

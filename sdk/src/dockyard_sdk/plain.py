"""GET requests answered with the decoded JSON, on the standard library alone.

For programs whose start-up is most of their run: the CLI's `dockyard list` prints the API's own JSON (or a
table of it) and has no use for httpx's connection pool or the wire models, whose import alone takes longer than
the request. The errors are the SDK's own (`dockyard_sdk.errors`), as `Client` raises them; `Client.get_json`
answers the same calls through httpx, so one caller can take either client.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
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
    """One keep-alive connection to a Dockyard server, for GET requests only."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        host = parts.netloc.rpartition("@")[2]
        self._connection = (
            http.client.HTTPSConnection(host, timeout=timeout, context=_tls_context())
            if parts.scheme == "https"
            else http.client.HTTPConnection(host, timeout=timeout)
        )
        self._headers = {"User-Agent": f"dockyard-sdk/{__version__}", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        target = f"{self._prefix}{path}" + (f"?{query}" if query else "")
        try:
            self._connection.request("GET", target, headers=self._headers)
            response = self._connection.getresponse()
            body = response.read()
        except TimeoutError as exc:
            self.close()
            raise Timeout(f"Dockyard at {self.url} did not answer GET {path} in time: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionFailed(f"Cannot reach Dockyard at {self.url}: {exc}") from exc
        if response.status >= 400:
            raise self._error(response, body[:_MAX_ERROR_BODY], f"{self.url}{path}")
        return json.loads(body)

    @staticmethod
    def _error(response: http.client.HTTPResponse, body: bytes, url: str) -> ApiError:
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
            # Rare (a GET's query is checked before it is sent): the wire model is worth its import here.
            from dockyard_sdk.models import ValidationDetail

            validations = [ValidationDetail.model_validate(v) for v in raw_validations]
        return error_for(
            response.status,
            message,
            detail=detail,
            validations=validations,
            method="GET",
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

"""Signed, short-lived credentials for app hosts (`<slug>--<workspace>--<owner>.<wildcard>`).

The dashboard's session cookie never goes to an app host: it is host-only on the dashboard's origin. To open
a non-public app there, the browser is sent to the dashboard (`/apps/auth`), which, for a logged-in user,
redirects back to the app host's `/__dockyard/auth` with a ticket: HMAC-signed, naming that host, the user's
session token id, and expiring in a minute. The app host turns it into its own host-only cookie, signed the
same way and bound to the host and to the session (logging out or revoking the session ends it too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

APP_COOKIE = "dockyard_app_session"
KEY_NAME = "apps"
TICKET_SECONDS = 60
COOKIE_SECONDS = 12 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, b"dockyard-app\0" + body.encode(), hashlib.sha256).digest())


def sign(key: bytes, *, purpose: str, host: str, token_id: str, seconds: int) -> str:
    payload = {
        "p": purpose,
        "h": host.lower(),
        "t": token_id,
        "e": int(time.time()) + seconds,
        "n": secrets.token_urlsafe(8),
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, value: str, *, purpose: str, host: str) -> dict[str, Any] | None:
    """The payload if the value is ours, for this purpose and host, and not expired; else None."""
    body, _, mac = value.partition(".")
    if not body or not mac or not hmac.compare_digest(mac, _mac(key, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("p") != purpose or payload.get("h") != host.lower():
        return None
    if (
        not isinstance(payload.get("e"), int)
        or payload["e"] < time.time()
        or not isinstance(payload.get("t"), str)
    ):
        return None
    return payload


class UsedTickets:
    """Tickets are good once (in this process): a ticket that leaks from a URL cannot be replayed."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def first_use(self, nonce: str, expires: float) -> bool:
        now = time.time()
        if len(self._seen) > 10_000:
            self._seen = {n: e for n, e in self._seen.items() if e > now}
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires
        return True

"""Agent tokens: `dya_<workspace id>_<secret>`, where the secret is an HMAC of the workspace id.

Nothing per token is stored: the server recomputes the HMAC with a deployment key, so a token stays the same
for the life of a workspace (its container keeps its environment across stop and start) and dies with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.orm import Session

from dockyard.store import keys

PREFIX = "dya_"
KEY_NAME = "agent-token-hmac"


def load_key(db: Session) -> bytes:
    value = keys.get_or_create(db, KEY_NAME, lambda: secrets.token_urlsafe(32))
    return value.encode()


def _secret(key: bytes, workspace_id: str) -> str:
    # Hex, so the secret never contains the "_" that separates it from the workspace id.
    return hmac.new(key, f"agent:{workspace_id}".encode(), hashlib.sha256).hexdigest()[:48]


def issue(key: bytes, workspace_id: str) -> str:
    return f"{PREFIX}{workspace_id}_{_secret(key, workspace_id)}"


def verify(key: bytes, token: str) -> str | None:
    """The workspace id the token belongs to, or None when it is not a valid agent token."""
    if not token.startswith(PREFIX):
        return None
    workspace_id, _, secret = token[len(PREFIX) :].rpartition("_")
    if not workspace_id or not hmac.compare_digest(secret, _secret(key, workspace_id)):
        return None
    return workspace_id

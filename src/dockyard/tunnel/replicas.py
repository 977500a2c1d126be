"""Which replica holds which agent, how replicas reach each other, and how they prove who they are.

Every server process registers itself in `replicas` (its id and relay URL) and refreshes a heartbeat; when it
admits an agent it writes `agent_sessions` (workspace → replica). A replica asked for a stream of an agent it
does not hold looks up the holder and relays the stream through it (`/api/v2/replicas/relay/...`).

Replicas authenticate each other with short-lived relay tokens: `dyr_<replica id>.<expiry>.<HMAC>`, the HMAC
(SHA-256) keyed by a deployment key (`replica-relay-hmac` in `deployment_keys`, which only processes with the
database can read) over the sending replica, the workspace and the expiry. A token is good for one workspace for
RELAY_TOKEN_TTL seconds; it is never stored and never leaves the control plane's network.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.store import keys
from dockyard.store.models import AgentSession, Replica
from dockyard.store.types import utcnow

HEARTBEAT_INTERVAL = 3.0
# A replica whose heartbeat is older than this is dead: its agents are not relayed to (they are re-dialing).
STALE_AFTER = timedelta(seconds=15)
RELAY_TOKEN_TTL = 60
RELAY_PREFIX = "dyr_"
KEY_NAME = "replica-relay-hmac"


@dataclass(frozen=True)
class Holder:
    replica_id: str
    relay_url: str


def new_replica_id() -> str:
    return secrets.token_hex(8)


def load_key(db: Session) -> bytes:
    return keys.get_or_create(db, KEY_NAME, lambda: secrets.token_urlsafe(32)).encode()


# --- relay tokens --------------------------------------------------------------------------------------------


def _signature(key: bytes, replica_id: str, workspace_id: str, expires: int) -> str:
    message = f"relay:{replica_id}:{workspace_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def relay_token(key: bytes, replica_id: str, workspace_id: str, *, now: float | None = None) -> str:
    expires = int(now if now is not None else time.time()) + RELAY_TOKEN_TTL
    return f"{RELAY_PREFIX}{replica_id}.{expires}.{_signature(key, replica_id, workspace_id, expires)}"


def verify_relay_token(key: bytes, token: str, workspace_id: str, *, now: float | None = None) -> str | None:
    """The replica that signed `token` for `workspace_id`, or None (forged, expired, or for another one)."""
    if not token.startswith(RELAY_PREFIX):
        return None
    replica_id, _, rest = token[len(RELAY_PREFIX) :].partition(".")
    expiry, _, signature = rest.partition(".")
    if not replica_id or not expiry.isdigit():
        return None
    expires = int(expiry)
    if expires < (now if now is not None else time.time()):
        return None
    if not hmac.compare_digest(signature, _signature(key, replica_id, workspace_id, expires)):
        return None
    return replica_id


# --- the registry --------------------------------------------------------------------------------------------


def register(sessions: sessionmaker[Session], replica_id: str, relay_url: str) -> None:
    with sessions() as db:
        db.add(Replica(id=replica_id, relay_url=relay_url))
        db.commit()


def heartbeat(sessions: sessionmaker[Session], replica_id: str, relay_url: str) -> None:
    with sessions() as db:
        updated = db.execute(  # type: ignore[attr-defined]
            update(Replica).where(Replica.id == replica_id).values(heartbeat_at=utcnow())
        ).rowcount
        if not updated:
            # Someone removed our row (a cleanup that thought us dead): we are alive, so say so again.
            db.add(Replica(id=replica_id, relay_url=relay_url))
        # Rows of replicas dead for a long time; their agent sessions point nowhere.
        dead = select(Replica.id).where(Replica.heartbeat_at < utcnow() - 20 * STALE_AFTER)
        db.execute(delete(AgentSession).where(AgentSession.replica_id.in_(dead)))
        db.execute(delete(Replica).where(Replica.heartbeat_at < utcnow() - 20 * STALE_AFTER))
        db.commit()


def unregister(sessions: sessionmaker[Session], replica_id: str) -> None:
    with sessions() as db:
        db.execute(delete(AgentSession).where(AgentSession.replica_id == replica_id))
        db.execute(delete(Replica).where(Replica.id == replica_id))
        db.commit()


def hold(sessions: sessionmaker[Session], replica_id: str, workspace_id: str) -> None:
    """Record that `replica_id` now holds the workspace's agent (taking it over from any other replica)."""
    with sessions() as db:
        for _ in range(2):
            changed = db.execute(  # type: ignore[attr-defined]
                update(AgentSession)
                .where(AgentSession.workspace_id == workspace_id)
                .values(replica_id=replica_id, connected_at=utcnow())
            ).rowcount
            if not changed:
                db.add(AgentSession(workspace_id=workspace_id, replica_id=replica_id))
            try:
                db.commit()
                return
            except IntegrityError:
                # Another replica inserted first (or the workspace is gone); the update wins the second time.
                db.rollback()


def release(sessions: sessionmaker[Session], replica_id: str, workspace_id: str) -> bool:
    """Forget the session; False when another replica took the agent over meanwhile (it holds the row)."""
    with sessions() as db:
        gone = db.execute(  # type: ignore[attr-defined]
            delete(AgentSession).where(
                AgentSession.workspace_id == workspace_id, AgentSession.replica_id == replica_id
            )
        ).rowcount
        held_elsewhere = db.scalar(
            select(AgentSession.replica_id).where(AgentSession.workspace_id == workspace_id)
        )
        db.commit()
        return bool(gone) or held_elsewhere is None


def holders(sessions: sessionmaker[Session], workspace_id: str | None = None) -> dict[str, Holder]:
    """Workspace → the live replica holding its agent."""
    query = (
        select(AgentSession.workspace_id, Replica.id, Replica.relay_url)
        .join(Replica, Replica.id == AgentSession.replica_id)
        .where(Replica.heartbeat_at >= utcnow() - STALE_AFTER)
    )
    if workspace_id is not None:
        query = query.where(AgentSession.workspace_id == workspace_id)
    with sessions() as db:
        return {row[0]: Holder(row[1], row[2]) for row in db.execute(query)}

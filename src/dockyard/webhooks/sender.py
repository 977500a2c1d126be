"""Delivering webhooks, off every request and build path.

The sender listens on the workspace channel (`events/`), so it hears every change wherever it was made; a thread
of its own reads the workspace, decides which events happened since it last looked (a new workspace status, a
new task report), and hands each to the queue of every webhook of the workspace's owner. Each webhook has a
delivery thread of its own, so a slow or failing endpoint delays only its own events, in order, and nothing
else: builds, requests and the pubsub's threads never wait on a webhook.

A delivery is retried with exponential backoff; after the last attempt it counts as one failure, and a webhook
with `failing_after` failures in a row is marked `failing` (a later success clears it). Event ids are derived
from what happened, so the same event always has the same id: with several server replicas each one sends it,
and receivers drop duplicates by `X-Dockyard-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.events import Bus, Subscription, channels
from dockyard.outbound import GuardedTransport, OutboundPolicy
from dockyard.store.models import Webhook, Workspace
from dockyard.store.types import utcnow
from dockyard.workspaces import service as workspaces
from dockyard_sdk import models as wire

log = logging.get(__name__)

SIGNATURE_HEADER = "X-Dockyard-Signature"
# Workspaces examined in one read at most (the ids are bound parameters of one statement).
EXAMINE_BATCH = 500


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, as receivers check it (docs/AGENTS.md)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    body: bytes


@dataclass(frozen=True)
class _Seen:
    status: str
    task_at: datetime | None


class WebhookSender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        bus: Bus | None,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        failing_after: int = 3,
        timeout: float = 10.0,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.failing_after = failing_after
        self.timeout = timeout
        self.outbound = outbound or OutboundPolicy()
        self._changed: queue.Queue[str | None] = queue.Queue()
        self._seen: dict[str, _Seen] = {}
        self._outboxes: dict[str, queue.Queue[tuple[Event, str, str] | None]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None

    def start(self) -> None:
        if self.bus is not None:
            self._subscription = self.bus.pubsub.subscribe(channels.WORKSPACE, self._heard)
        self._thread(self._examine_loop, "webhooks")

    def stop(self) -> None:
        self._stopping.set()
        if self._subscription is not None:
            self._subscription.cancel()
        self._changed.put(None)
        with self._lock:
            for outbox in self._outboxes.values():
                outbox.put(None)
        for thread in self._threads:
            thread.join(5)

    def _thread(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _heard(self, payload: bytes) -> None:
        # On the pubsub's thread: only queue.
        self._changed.put(payload.decode())

    # --- deciding what happened ------------------------------------------------------------------------------

    def _examine_loop(self) -> None:
        while (first := self._changed.get()) is not None:
            # Every change already queued is examined with it: a burst of creates queues a dozen changes per
            # workspace, and one read for all of them (or one per workspace changed twice) costs less than a
            # session and two statements per change. The state read is the current one either way.
            pending = dict.fromkeys([first])
            stopping = False
            while len(pending) < EXAMINE_BATCH:
                try:
                    more = self._changed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                pending[more] = None
            try:
                self._examine(list(pending))
            except SQLAlchemyError:
                log.exception("webhooks: reading workspaces failed", workspaces=len(pending))
            if stopping:
                return

    def _examine(self, workspace_ids: list[str]) -> None:
        with self.sessions() as db:
            # Only the workspaces of users with a webhook: in a fleet nobody listens to, or that one user of
            # many listens to, the others' rows are not worth reading.
            listened = select(Webhook.user_id)
            rows = {
                row.id: row
                for row in db.scalars(
                    select(Workspace).where(Workspace.id.in_(workspace_ids), Workspace.owner_id.in_(listened))
                )
            }
            # Gone, or nobody listens: a hook registered later hears the status it finds at the next change.
            for unheard in set(workspace_ids) - rows.keys():
                self._seen.pop(unheard, None)
            if not rows:
                return
            hooks_of: dict[str, list[Webhook]] = {}
            for hook in db.scalars(
                select(Webhook).where(Webhook.user_id.in_({r.owner_id for r in rows.values()}))
            ):
                hooks_of.setdefault(hook.user_id, []).append(hook)
            for workspace_id in workspace_ids:
                row = rows.get(workspace_id)
                if row is None:
                    continue
                hooks = [
                    (hook.id, hook.url, hook.secret)
                    for hook in hooks_of.get(row.owner_id, [])
                    # A token's webhook hears only of the workspaces that token created.
                    if hook.token_id is None or hook.token_id == row.created_by_token_id
                ]
                if not hooks:
                    # Nobody listens: the workspace's wire form (five queries) is not worth making. A hook
                    # registered later hears the status it finds at the next change.
                    self._seen.pop(workspace_id, None)
                    continue
                current = workspaces.to_wire(db, workspaces.load(db, row))
                events = self._events(current)
                if current.status == wire.WorkspaceStatus.DELETED:
                    self._seen.pop(workspace_id, None)
                for hook_id, url, secret in hooks:
                    for event in events:
                        self._outbox(hook_id).put((event, url, secret))

    def _events(self, workspace: wire.Workspace) -> list[Event]:
        before = self._seen.get(workspace.id)
        task = workspace.task
        now = _Seen(workspace.status.value, task.updated_at if task is not None else None)
        self._seen[workspace.id] = now
        events = []
        if before is None or before.status != now.status:
            build = workspace.latest_build.id if workspace.latest_build is not None else ""
            events.append(_event("workspace.status", workspace, key=f"{build}:{now.status}"))
        if task is not None and (before is None or before.task_at != now.task_at):
            events.append(_event("task.state", workspace, key=f"{task.state}:{task.updated_at.isoformat()}"))
        return events

    # --- delivering ------------------------------------------------------------------------------------------

    def _outbox(self, hook_id: str) -> queue.Queue[tuple[Event, str, str] | None]:
        with self._lock:
            outbox = self._outboxes.get(hook_id)
            if outbox is None:
                outbox = self._outboxes[hook_id] = queue.Queue()
                self._thread(self._deliver_loop, f"webhook-{hook_id[:8]}", hook_id, outbox)
            return outbox

    def _deliver_loop(self, hook_id: str, outbox: queue.Queue[tuple[Event, str, str] | None]) -> None:
        with httpx.Client(
            timeout=self.timeout, follow_redirects=False, transport=GuardedTransport(self.outbound)
        ) as client:
            while (item := outbox.get()) is not None:
                event, url, secret = item
                error = self._deliver(client, event, url, secret)
                if self._stopping.is_set():
                    return
                try:
                    self._record(hook_id, error)
                except SQLAlchemyError:
                    log.exception("webhooks: recording a delivery failed", webhook=hook_id)

    def _deliver(self, client: httpx.Client, event: Event, url: str, secret: str) -> str | None:
        """None once delivered, else why the last attempt failed."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Dockyard-Webhooks",
            "X-Dockyard-Event": event.type,
            "X-Dockyard-Delivery": event.id,
            SIGNATURE_HEADER: sign(secret, event.body),
        }
        delay = self.backoff
        error = "not attempted"
        for attempt in range(self.attempts):
            if attempt:
                if self._stopping.wait(delay):
                    return error
                delay = min(delay * 2, self.max_backoff)
            try:
                response = client.post(url, content=event.body, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= response.status_code < 300:
                return None
            error = f"HTTP {response.status_code} from {url}"
        log.warning("webhook delivery failed", url=url, event_type=event.type, error=error)
        return error

    def _record(self, hook_id: str, error: str | None) -> None:
        with self.sessions() as db:
            hook = db.get(Webhook, hook_id)
            if hook is None:
                return
            if error is None:
                hook.consecutive_failures, hook.status, hook.last_delivery_at = 0, "active", utcnow()
            else:
                hook.consecutive_failures += 1
                hook.last_error = error[:1000]
                if hook.consecutive_failures >= self.failing_after:
                    hook.status = "failing"
            db.commit()


def _event(kind: str, workspace: wire.Workspace, *, key: str) -> Event:
    event_id = hashlib.sha256(f"{workspace.id}|{kind}|{key}".encode()).hexdigest()[:32]
    document = {
        "id": event_id,
        "type": kind,
        "time": datetime.now(UTC).isoformat(),
        "workspace": {
            "id": workspace.id,
            "name": workspace.name,
            "owner_name": workspace.owner_name,
            "template_name": workspace.template_name,
            "status": workspace.status.value,
            "status_reason": workspace.status_reason,
        },
        "task": workspace.task.model_dump(mode="json") if workspace.task is not None else None,
    }
    return Event(event_id, kind, json.dumps(document, separators=(",", ":")).encode())

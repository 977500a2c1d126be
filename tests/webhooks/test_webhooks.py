"""Outgoing webhooks, delivered to a real HTTP receiver on loopback: signed bodies, task and workspace status
events, retries with backoff, `failing` after repeated failures, and builds that never wait on a webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dockyard.webhooks.sender import WebhookSender
from dockyard_sdk import Forbidden, NotFound, ValidationError
from dockyard_sdk import models as m
from tests.harness import Harness, make_harness

pytestmark = pytest.mark.timeout(90)


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # Answer 500 to this many requests before answering 204; -1 fails them all.
    fail_first: int = 0
    seen: int = 0
    delay: float = 0.0

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            json.loads(body)
            for headers, body in list(self.received)
            if kind in (None, headers["x-dockyard-event"])
        ]


def _serve() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.delay:
                time.sleep(state.delay)
            state.seen += 1
            if state.fail_first < 0 or state.seen <= state.fail_first:
                self.send_response(500)
                self.end_headers()
                return
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


@pytest.fixture
def second_receiver() -> Iterator[Receiver]:
    yield from _serve()


def _fast(h: Harness, *, attempts: int = 3) -> WebhookSender:
    sender: WebhookSender = h.app.state.webhooks
    sender.backoff, sender.attempts = 0.05, attempts
    return sender


def _until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_task_and_status_changes_are_posted_signed(h: Harness, receiver: Receiver) -> None:
    _fast(h)
    hook = h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url))
    assert hook.secret.startswith("whsec_")
    assert hook.status == m.WebhookStatus.ACTIVE

    ws = h.workspace(name="hooked")
    h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.DONE, summary="PR opened"))

    _until(lambda: any(e["task"] and e["task"]["state"] == "done" for e in receiver.events("task.state")))
    _until(lambda: "running" in [e["workspace"]["status"] for e in receiver.events("workspace.status")])
    task = next(e for e in receiver.events("task.state") if e["task"]["state"] == "done")
    assert task["workspace"]["name"] == "hooked"
    assert (task["task"]["summary"], task["task"]["source"]) == ("PR opened", "api")
    statuses = [e["workspace"]["status"] for e in receiver.events("workspace.status")]
    assert statuses[-1] == "running"
    assert len(statuses) == len(set(statuses))
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-dockyard-signature"] == expected
        assert headers["x-dockyard-delivery"] == json.loads(body)["id"]
        assert headers["content-type"] == "application/json"
    _until(lambda: h.admin.list_webhooks()[0].last_delivery_at is not None)


def test_a_failed_delivery_is_retried_with_backoff(h: Harness, receiver: Receiver) -> None:
    _fast(h, attempts=4)
    receiver.fail_first = 2
    h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url))

    ws = h.workspace(name="retried")
    h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.WORKING))

    _until(lambda: receiver.events("task.state"))
    listed = h.admin.list_webhooks()[0]
    assert (listed.status, listed.consecutive_failures) == (m.WebhookStatus.ACTIVE, 0)
    assert receiver.seen >= 3


def test_an_endpoint_that_keeps_failing_is_marked_failing_and_never_blocks_builds(
    h: Harness, receiver: Receiver
) -> None:
    _fast(h, attempts=2)
    receiver.fail_first = -1
    receiver.delay = 0.5
    h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url))

    started = time.monotonic()
    ws = h.workspace(name="unhooked")
    for state in (m.TaskState.WORKING, m.TaskState.WAITING_INPUT, m.TaskState.DONE):
        h.admin.report_task(ws.id, m.TaskReport(state=state))
    # Each delivery takes at least 2 x 0.5 s: the build and the reports did not wait for any of them.
    assert ws.status == m.WorkspaceStatus.RUNNING
    assert time.monotonic() - started < 5

    _until(lambda: h.admin.list_webhooks()[0].status == m.WebhookStatus.FAILING, timeout=30)
    failing = h.admin.list_webhooks()[0]
    assert failing.consecutive_failures >= 3
    assert failing.last_error == f"HTTP 500 from {receiver.url}"
    assert failing.last_delivery_at is None
    # A success later clears it.
    receiver.fail_first = 0
    h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.FAILED))
    _until(lambda: h.admin.list_webhooks()[0].status == m.WebhookStatus.ACTIVE, timeout=30)


def test_a_webhook_to_a_link_local_address_is_refused_when_registered(h: Harness) -> None:
    # Nothing is sent anywhere: an address is checked before it is stored.
    for url, address, network in [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "169.254.0.0/16"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", "169.254.0.0/16"),
        ("http://[fe80::1]:8080/hook", "fe80::1", "fe80::/10"),
        ("http://0.0.0.0:3000/hook", "0.0.0.0", "0.0.0.0/8"),
    ]:
        with pytest.raises(ValidationError) as refused:
            h.admin.add_webhook(m.CreateWebhookRequest(url=url))
        assert refused.value.status_code == 422
        assert refused.value.validations[0].field == "url"
        assert refused.value.validations[0].detail == (
            f"{address} is in {network}, a range this server does not connect to for its users"
        )
    assert h.admin.list_webhooks() == []


def test_a_webhook_whose_name_resolves_into_a_denied_range_is_never_posted(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    # The operator denies loopback (`--outbound-deny 127.0.0.0/8`), where the receiver listens.
    h = make_harness(tmp_path, database_url, outbound_deny=["127.0.0.0/8"])
    try:
        _fast(h)
        with pytest.raises(ValidationError) as refused:
            h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url))
        assert refused.value.validations[0].field == "url"
        # A name is accepted (it may resolve elsewhere by the time of a delivery) and checked at each one.
        by_name = receiver.url.replace("127.0.0.1", "localhost")
        h.admin.add_webhook(m.CreateWebhookRequest(url=by_name))

        for n in range(3):
            ws = h.workspace(name=f"denied-{n}")
            h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.DONE))

        _until(lambda: h.admin.list_webhooks()[0].status == m.WebhookStatus.FAILING)
        hook = h.admin.list_webhooks()[0]
        assert hook.last_error == (
            "OutboundDenied: localhost: 127.0.0.1 is in 127.0.0.0/8, a range this server does not connect to "
            "for its users"
        )
        assert receiver.seen == 0
    finally:
        h.close()


def test_webhooks_belong_to_their_user(h: Harness, receiver: Receiver) -> None:
    alice = h.user("alice")
    bob = h.user("bob")
    reader = h.user("carol", scopes=[m.Scope.USER_READ])
    hook = alice.add_webhook(m.CreateWebhookRequest(url=receiver.url, secret="a-secret-of-16-chars"))
    assert hook.secret == "a-secret-of-16-chars"

    with pytest.raises(ValidationError) as bad:
        alice.add_webhook(m.CreateWebhookRequest.model_construct(url="ftp://x.example/", secret=None))
    assert [v.field for v in bad.value.validations] == ["url"]
    # Other users look missing to a member.
    with pytest.raises(NotFound):
        bob.list_webhooks("alice")
    with pytest.raises(Forbidden):
        reader.add_webhook(m.CreateWebhookRequest(url=receiver.url))
    assert h.http().get("/api/v2/users/me/webhooks").status_code == 401
    assert [w.id for w in alice.list_webhooks()] == [hook.id]
    assert (
        "a-secret-of-16-chars"
        not in h.http()
        .get("/api/v2/users/me/webhooks", headers={"Authorization": f"Bearer {alice.token}"})
        .text
    )
    # Bob's workspaces are not alice's business.
    _fast(h)
    h.admin.report_task(h.workspace(name="admins").id, m.TaskReport(state=m.TaskState.DONE))
    time.sleep(1)
    assert receiver.received == []
    alice.remove_webhook(hook.id)
    assert alice.list_webhooks() == []


def test_a_token_s_webhook_hears_only_of_the_workspaces_that_token_created(
    h: Harness, receiver: Receiver, second_receiver: Receiver
) -> None:
    _fast(h)
    ci = h.admin.create_token(m.CreateTokenRequest(name="ci"))
    with_ci = h.client(ci.key)
    hook = with_ci.add_webhook(m.CreateWebhookRequest(url=second_receiver.url, token="ci"))
    assert hook.token_id == ci.id
    h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url))
    by_admin = h.workspace(name="by-admin")
    created = with_ci.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="by-ci"))
    by_ci = h.await_build(created.id)
    for ws in (by_admin, by_ci):
        h.admin.report_task(ws.id, m.TaskReport(state=m.TaskState.DONE))

    def done(r: Receiver) -> set[str]:
        return {e["workspace"]["name"] for e in r.events("task.state")}

    _until(lambda: done(receiver) == {"by-admin", "by-ci"} and done(second_receiver) == {"by-ci"})
    names = {e["workspace"]["name"] for e in second_receiver.events()}
    assert names == {"by-ci"}

    with pytest.raises(ValidationError) as unknown:
        h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url, token="nope"))
    assert [(v.field, v.detail) for v in unknown.value.validations] == [
        ("token", "admin has no token 'nope'")
    ]
    # A token that sees only its own workspaces hears only of them, and sees only its own webhooks.
    own = h.admin.create_token(m.CreateTokenRequest(name="own", own_workspaces_only=True))
    with_own = h.client(own.key)
    with pytest.raises(Forbidden) as wider:
        with_own.add_webhook(m.CreateWebhookRequest(url=receiver.url, token="ci"))
    assert [(v.field, v.detail) for v in wider.value.validations] == [
        ("token", "must be this token (or left out)")
    ]
    mine = with_own.add_webhook(m.CreateWebhookRequest(url=receiver.url))
    assert mine.token_id == own.id
    assert [w.id for w in with_own.list_webhooks()] == [mine.id]
    with pytest.raises(NotFound):
        with_own.remove_webhook(hook.id)
    assert len(h.admin.list_webhooks()) == 3


def test_changes_queued_together_are_examined_together(
    h: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's own sender would hear these changes one by one; this one finds them all queued at its start.
    h.app.state.webhooks.stop()
    mine = [h.workspace(name=f"mine-{i}") for i in range(3)]
    bob = h.user("bob")
    theirs = h.await_build(bob.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="theirs")).id)
    h.admin.add_webhook(m.CreateWebhookRequest(url=receiver.url))
    sender = WebhookSender(h.app.state.sessions, None, backoff=0.05)
    for ws in [*mine, theirs, *mine]:
        sender._changed.put(ws.id)
    sender._changed.put("no-such-workspace")
    batches: list[list[str]] = []
    examine = sender._examine

    def recorded(workspace_ids: list[str]) -> None:
        batches.append(workspace_ids)
        examine(workspace_ids)

    monkeypatch.setattr(sender, "_examine", recorded)
    sender.start()
    try:
        _until(lambda: len(receiver.events("workspace.status")) >= 3)
        time.sleep(0.5)
    finally:
        sender.stop()
    # One event per workspace of the hook's owner, however often it was queued; none for bob's.
    statuses = sorted((e["workspace"]["name"], e["workspace"]["status"]) for e in receiver.events())
    assert statuses == [(f"mine-{i}", "running") for i in range(3)]
    assert batches == [[*(ws.id for ws in mine), theirs.id, "no-such-workspace"]]

"""Fleet guardrails: quotas per user and per token, a token's create rate, Idempotency-Key on create, tokens
limited to their own workspaces, and audit rows for what tokens do inside workspaces."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from dockyard.store.models import IdempotencyKey
from dockyard.store.types import utcnow
from dockyard_sdk import ApiError, Client
from dockyard_sdk import models as m
from tests.harness import Harness

pytestmark = pytest.mark.timeout(120)


def _error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def _create(client: Client, name: str, **kwargs: Any) -> m.Workspace:
    return client.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name=name), **kwargs)


def _names(h: Harness) -> list[str]:
    return sorted(w.name for w in h.admin.list_workspaces().workspaces)


def test_a_user_over_their_workspace_quota_gets_429_naming_it(h: Harness) -> None:
    h.template()
    alice = h.user("alice")
    quota = h.admin.set_user_quota("alice", m.QuotaLimits(max_workspaces=1))
    assert (quota.max_workspaces, quota.usage.workspaces) == (1, 0)
    first = _create(alice, "a1")

    error = _error(lambda: _create(alice, "a2"))

    assert (error.status_code, error.retry_after) == (429, 30.0)
    assert error.message == "Quota exceeded: user alice may run at most 1 workspaces (1 running or starting)."
    assert [(v.field, v.detail) for v in error.validations] == [
        ("max_workspaces", "may run at most 1 workspaces (1 running or starting)")
    ]
    assert _names(h) == ["a1"]
    # Stopping frees the slot: a stopped workspace does not count.
    h.await_build(first.id)
    alice.stop_workspace(first.id)
    h.await_build(first.id)
    assert h.admin.get_user_quota("alice").usage.workspaces == 0
    second = _create(alice, "a2")
    h.await_build(second.id)
    # ...and starting the first again is refused while the second runs.
    again = _error(lambda: alice.start_workspace(first.id))
    assert (again.status_code, [v.field for v in again.validations]) == (429, ["max_workspaces"])
    assert alice.get_workspace(first.id).status == m.WorkspaceStatus.STOPPED


def test_a_quota_below_current_use_is_accepted_and_refuses_new_creates(h: Harness) -> None:
    h.template()
    alice = h.user("alice")
    for name in ("a1", "a2"):
        h.await_build(_create(alice, name).id)
    quota = h.admin.set_user_quota("alice", m.QuotaLimits(max_workspaces=1, max_cpu=3, max_memory="6Gi"))
    assert (quota.usage.workspaces, quota.usage.cpu, quota.usage.memory_bytes) == (2, 4.0, 8 * 2**30)
    assert (quota.max_cpu, quota.max_memory_bytes) == (3.0, 6 * 2**30)
    # Nothing already running is touched.
    assert {w.status for w in alice.list_workspaces().workspaces} == {m.WorkspaceStatus.RUNNING}
    error = _error(lambda: _create(alice, "a3"))
    assert (error.status_code, error.validations[0].field) == (429, "max_workspaces")
    assert _names(h) == ["a1", "a2"]
    audit = h.admin.audit(action="user.quota").audit_logs
    assert [(a.username, a.resource_name, a.detail) for a in audit] == [
        ("admin", "alice", {"max_workspaces": 1, "max_cpu_millis": 3000, "max_memory_bytes": 6 * 2**30})
    ]


def test_cpu_and_memory_quotas_count_the_templates_resources(h: Harness) -> None:
    h.template()  # 2 CPUs, 4 GiB each
    alice = h.user("alice")
    h.admin.set_user_quota("alice", m.QuotaLimits(max_cpu=3))
    _create(alice, "a1")
    error = _error(lambda: _create(alice, "a2"))
    assert [(v.field, v.detail) for v in error.validations] == [
        ("max_cpu", "may use at most 3 CPUs (2 in use, 2 more asked)")
    ]
    h.admin.set_user_quota("alice", m.QuotaLimits(max_memory="5Gi"))
    error = _error(lambda: _create(alice, "a2"))
    assert [(v.field, v.detail) for v in error.validations] == [
        ("max_memory", "may use at most 5 GiB of memory (4 GiB in use, 4 GiB more asked)")
    ]
    h.admin.set_user_quota("alice", m.QuotaLimits())
    _create(alice, "a2")
    assert _names(h) == ["a1", "a2"]


def test_a_token_has_its_own_quota_and_create_rate(h: Harness) -> None:
    h.template()
    token = h.admin.create_token(m.CreateTokenRequest(name="ci"))
    ci = h.client(token.key)
    h.admin.set_token_quota("ci", m.QuotaLimits(creates_per_minute=2, max_workspaces=5))
    _create(ci, "c1")
    _create(ci, "c2")

    error = _error(lambda: _create(ci, "c3"))

    assert error.status_code == 429
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= 60
    assert [(v.field, v.detail) for v in error.validations] == [
        ("creates_per_minute", "may create at most 2 workspaces a minute (2 in the last 60 s)")
    ]
    assert (
        error.message
        == f"Quota exceeded: token {token.id} may create at most 2 workspaces a minute (2 in the last 60 s)."
    )
    # Another credential of the same user is not held back by the token's limits.
    _create(h.admin, "other")
    usage = h.admin.get_token_quota("ci")
    assert (usage.usage.workspaces, usage.usage.creates_last_minute) == (2, 2)
    # A token cannot lift its own limits.
    own = _error(lambda: ci.set_token_quota("ci", m.QuotaLimits()))
    assert (own.status_code, own.message) == (403, "A token cannot change its own quota.")
    assert h.admin.get_token_quota("ci").creates_per_minute == 2


def test_quota_routes_are_guarded(h: Harness) -> None:
    alice = h.user("alice")
    h.user("bob")
    assert _error(lambda: alice.set_user_quota("alice", m.QuotaLimits(max_workspaces=99))).status_code == 403
    # Another user is unseen (404), as everywhere for members.
    assert _error(lambda: alice.get_user_quota("bob")).status_code == 404
    assert alice.get_user_quota("alice").max_workspaces is None
    bad = _error(lambda: h.admin.set_user_quota("alice", m.QuotaLimits.model_construct(max_workspaces=-1)))
    assert (bad.status_code, [v.field for v in bad.validations]) == (422, ["max_workspaces"])
    anonymous = h.client(None)
    assert (
        _error(lambda: anonymous.set_user_quota("alice", m.QuotaLimits(max_workspaces=1))).status_code == 401
    )
    assert h.admin.get_user_quota("alice").max_workspaces is None


def test_an_idempotent_create_returns_the_same_workspace(h: Harness) -> None:
    h.template()
    first = _create(h.admin, "idem", idempotency_key="job-42")
    again = _create(h.admin, "idem", idempotency_key="job-42")
    assert again.id == first.id
    assert _names(h) == ["idem"]
    changed = _error(
        lambda: h.admin.create_workspace(
            m.CreateWorkspaceRequest(template="tmpl", name="idem2"), idempotency_key="job-42"
        )
    )
    assert (changed.status_code, changed.message) == (
        422,
        "This Idempotency-Key was used with a different request.",
    )
    assert [(v.field, v.detail) for v in changed.validations] == [
        ("Idempotency-Key", "'job-42' was first used with another body; use a new key")
    ]
    assert _names(h) == ["idem"]
    # The same body under a new key is a new create (here refused: the name is taken).
    assert _error(lambda: _create(h.admin, "idem", idempotency_key="job-43")).status_code == 409


def test_an_idempotency_key_is_kept_for_a_day(h: Harness) -> None:
    h.template()
    first = _create(h.admin, "day", idempotency_key="daily")
    with h.app.state.sessions() as db:
        db.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=23)))
        db.commit()
    h.app.state.background.tick()
    # Within the day: still a replay, even with a body that would now be refused.
    assert _create(h.admin, "day", idempotency_key="daily").id == first.id
    with h.app.state.sessions() as db:
        db.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
        db.commit()
    # Expired before the sweep ran: the key is free again, and the same key makes a new workspace.
    second = _create(h.admin, "day2", idempotency_key="daily")
    assert second.id != first.id
    with h.app.state.sessions() as db:
        db.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
        db.commit()
    h.app.state.background.tick()
    with h.app.state.sessions() as db:
        assert db.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    assert _names(h) == ["day", "day2"]


def test_concurrent_retries_with_one_key_make_one_workspace(h: Harness) -> None:
    h.template()
    results: list[str] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            results.append(_create(h.admin, "race", idempotency_key="same-key").id)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 6
    assert len(set(results)) == 1
    assert _names(h) == ["race"]


def test_a_token_limited_to_its_own_workspaces_sees_only_those(h: Harness) -> None:
    h.template()
    mine = h.admin.create_token(m.CreateTokenRequest(name="agent-7", own_workspaces_only=True))
    assert mine.own_workspaces_only
    limited = h.client(mine.key)
    other = _create(h.admin, "by-admin")
    own = _create(limited, "by-token")
    assert [w.name for w in limited.list_workspaces().workspaces] == ["by-token"]
    assert limited.get_workspace(own.id).id == own.id
    for call in (
        lambda: limited.get_workspace(other.id),
        lambda: limited.get_workspace("by-admin"),
        lambda: limited.stop_workspace(other.id),
        lambda: limited.set_ttl(other.id, "2h"),
    ):
        assert _error(call).status_code == 404
    assert h.admin.get_workspace(other.id).latest_build.number == 1
    # It cannot mint a token that sees more than it does.
    wider = _error(lambda: limited.create_token(m.CreateTokenRequest(name="wider")))
    assert (wider.status_code, [v.field for v in wider.validations]) == (403, ["own_workspaces_only"])


def test_what_a_token_does_inside_a_workspace_is_audited(ah: Harness) -> None:
    ah.template(name="tmpl")
    token = ah.admin.create_token(m.CreateTokenRequest(name="bot"))
    bot = ah.client(token.key)
    created = _create(bot, "audited")
    ws = bot.get_workspace(created.id, wait="ready", timeout=30)
    bot.exec(ws.id, m.ExecRequest(command=["true"]))
    # In the workspace's home: this harness's agents are processes on the test host, whose /tmp is not ours.
    bot.write_file(ws.id, "x.txt", b"hi")
    assert bot.read_file(ws.id, "x.txt") == b"hi"
    rows = ah.admin.audit(resource=ws.id).audit_logs
    seen = sorted(
        (r.action, r.username, r.detail.get("token")) for r in rows if r.action.startswith("workspace.")
    )
    assert seen == [
        ("workspace.create", "admin", None),
        ("workspace.exec", "admin", token.id),
        ("workspace.file.read", "admin", token.id),
        ("workspace.file.write", "admin", token.id),
    ]
    life = bot.get_workspace(ws.id).lifetime
    assert life is not None
    # Written at most every few seconds: the exec's mark may still stand when the file operations come.
    assert life.active
    assert life.last_activity_reason in ("exec", "files")
    assert life.active_reason == f"{life.last_activity_reason} within the last 15 s"

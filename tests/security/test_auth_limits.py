"""Abuse limits for authentication: password logins over HTTP and the OpenSSH client against the gateway.

Failures are slowed, then refused per source and per (account, source), audited, and the real user still gets
in from another address. The limiter's own rules are checked with a fake clock first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dockyard.accounts.limits import AuthLimiter
from dockyard.gateway import ca
from dockyard.gateway.server import Gateway
from dockyard_sdk import models as m
from tests.gateway.conftest import make_key, openssh_for, register_key, tcp_gateway, text_of
from tests.harness import Harness

PASSWORD = "correct-horse-battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the limiter's rules ---------------------------------------------------------------------------------------


def test_a_pair_is_slowed_then_refused_and_the_window_forgives() -> None:
    clock = Clock()
    limiter = AuthLimiter(
        pair_slow_after=3, pair_limit=6, window=600, base_delay=0.5, max_delay=2, clock=clock
    )
    delays = []
    for _ in range(6):
        verdict = limiter.check(source="10.0.0.1", account="alice")
        assert not verdict.refused
        delays.append(verdict.delay)
        limiter.failed(source="10.0.0.1", account="alice")
        clock.now += 10
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0]
    refused = limiter.check(source="10.0.0.1", account="alice")
    assert (refused.refused, refused.announce) == (True, True)
    # Until the oldest of the last six failures leaves the window: 600 s after it, 60 s ago.
    assert refused.retry_after == pytest.approx(540)
    assert refused.reason == "too many failed logins for alice from 10.0.0.1"
    again = limiter.check(source="10.0.0.1", account="alice")
    assert (again.refused, again.announce) == (True, False)
    # The same account from another address, and another account from this one, are not held back.
    assert limiter.check(source="10.0.0.2", account="alice").delay == 0
    assert not limiter.check(source="10.0.0.1", account="bob").refused
    clock.now += 541
    assert not limiter.check(source="10.0.0.1", account="alice").refused


def test_a_source_spraying_accounts_is_refused_for_every_account() -> None:
    limiter = AuthLimiter(source_limit=5, clock=Clock())
    for index in range(5):
        limiter.failed(source="10.0.0.9", account=f"user{index}")
    assert limiter.check(source="10.0.0.9", account="someone-else").refused
    assert limiter.check(source="10.0.0.9").refused
    assert not limiter.check(source="10.0.0.10", account="user0").refused


def test_an_account_under_attack_from_everywhere_is_slowed_never_locked() -> None:
    limiter = AuthLimiter(account_slow_after=20, base_delay=0.25, max_delay=2, clock=Clock())
    for index in range(200):
        limiter.failed(source=f"10.1.{index // 250}.{index % 250}", account="alice")
    verdict = limiter.check(source="192.0.2.1", account="alice")
    assert (verdict.refused, verdict.delay) == (False, 2.0)


def test_success_clears_only_that_pair() -> None:
    limiter = AuthLimiter(pair_limit=3, source_limit=5, clock=Clock())
    for _ in range(3):
        limiter.failed(source="10.0.0.1", account="alice")
    assert limiter.check(source="10.0.0.1", account="alice").refused
    limiter.succeeded(source="10.0.0.1", account="alice")
    assert not limiter.check(source="10.0.0.1", account="alice").refused
    # The source's own count stands: two more failures anywhere and it is refused.
    limiter.failed(source="10.0.0.1", account="x")
    limiter.failed(source="10.0.0.1", account="y")
    assert limiter.check(source="10.0.0.1", account="z").refused


def test_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = AuthLimiter(max_keys=100, clock=clock)
    for index in range(1000):
        limiter.failed(source=f"s{index}", account=f"a{index}")
    assert len(limiter._failures) <= 100


# --- password logins over HTTP -----------------------------------------------------------------------------


def _from(h: Harness, address: str) -> TestClient:
    """A client whose requests come from `address` (on the server's event loop, like h.http())."""
    client = TestClient(h.app, base_url="http://testserver", client=(address, 40000))
    client.portal = h.lifespan.portal
    return client


def _login(client: TestClient, username: str, password: str) -> tuple[int, dict[str, object], str | None]:
    response = client.post("/api/v2/users/login", json={"username": username, "password": password})
    return response.status_code, response.json(), response.headers.get("retry-after")


@pytest.fixture
def limited(h: Harness) -> AuthLimiter:
    limiter = AuthLimiter(pair_slow_after=2, pair_limit=5, source_limit=8, base_delay=0.2, max_delay=0.4)
    h.app.state.auth_limiter = limiter
    return limiter


def _sessions(h: Harness, user: str) -> int:
    return sum(1 for t in h.admin.list_tokens(user) if t.login_type == "password")


def test_password_guessing_is_slowed_then_refused(h: Harness, limited: AuthLimiter) -> None:
    h.user("alice")
    attacker = _from(h, "10.0.0.1")
    elapsed = []
    for _ in range(5):
        started = time.monotonic()
        status, body, _ = _login(attacker, "alice", "wrong-password")
        elapsed.append(time.monotonic() - started)
        assert (status, body["message"]) == (401, "Incorrect username or password.")
    # The third and later failures wait first (0.2 s, then 0.4 s).
    assert elapsed[2] >= 0.2
    assert elapsed[4] >= 0.4
    status, body, retry_after = _login(attacker, "alice", PASSWORD)
    assert status == 429
    assert body["message"] == "Too many failed logins; try again later."
    assert retry_after is not None
    assert 0 < int(retry_after) <= 15 * 60
    assert body["detail"] == f"Wait {retry_after} s (see Retry-After) before the next attempt."
    assert _login(attacker, "alice", PASSWORD)[0] == 429
    assert _sessions(h, "alice") == 0
    # The real alice, from her own address, is not locked out.
    status, body, _ = _login(_from(h, "10.0.0.2"), "alice", PASSWORD)
    assert status == 200, body
    assert _sessions(h, "alice") == 1
    # Audited: every failed attempt, and one row for the block however often it was hit.
    rows = [
        (a.action, a.status_code, a.ip) for a in h.admin.audit(user="alice", action="user.login").audit_logs
    ]
    assert rows == [
        ("user.login", 200, "10.0.0.2"),
        ("user.login", 429, "10.0.0.1"),
        *[("user.login", 401, "10.0.0.1")] * 5,
    ]
    [refusal] = [a for a in h.admin.audit(action="user.login").audit_logs if a.status_code == 429]
    assert refusal.detail["reason"] == "too many failed logins for alice from 10.0.0.1"


def test_unknown_users_are_limited_the_same_way(h: Harness, limited: AuthLimiter) -> None:
    attacker = _from(h, "10.0.0.3")
    statuses = [_login(attacker, "nobody", "guess")[0] for _ in range(6)]
    assert statuses == [401] * 5 + [429]


def test_a_source_spraying_accounts_is_refused(h: Harness, limited: AuthLimiter) -> None:
    h.user("carol")
    sprayer = _from(h, "10.0.0.4")
    for index in range(8):
        assert _login(sprayer, f"user{index}", "guess")[0] == 401
    status, body, _ = _login(sprayer, "carol", PASSWORD)
    assert (status, body["message"]) == (429, "Too many failed logins; try again later.")
    assert _login(_from(h, "10.0.0.5"), "carol", PASSWORD)[0] == 200


# --- the OpenSSH client against the gateway ----------------------------------------------------------------


@pytest.fixture
def gateway(ah: Harness) -> Iterator[Gateway]:
    with tcp_gateway(ah) as listening:
        listening.limiter = AuthLimiter(source_limit=3)
        yield listening


@pytest.mark.timeout(180)
def test_ssh_failures_are_refused_per_source(ah: Harness, gateway: Gateway, tmp_path: Path) -> None:
    alice = ah.user("alice")
    ah.template(name="tmpl")
    created = alice.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="dev"))
    assert alice.get_workspace(created.id, wait="ready", timeout=60).agent is not None
    alice_key = make_key(tmp_path / "alice")
    register_key(alice, alice_key)
    stranger = make_key(tmp_path / "stranger")
    ssh = openssh_for(ah.admin, tmp_path / "ssh", ca.parse_listen(gateway.settings.ssh_listen))
    ssh.log_level = "INFO"  # shows the server's disconnect message
    for _ in range(3):
        failed = ssh.run("dev", stranger, "true")
        assert failed.returncode == 255
        assert b"Permission denied (publickey)" in failed.stderr
    refused = ssh.run("dev", stranger, "true")
    assert refused.returncode == 255
    assert b"dockyard: too many failed authentications from your address; try again in" in refused.stderr
    # From this address even the right key waits: the address, not the key, is what is held back.
    assert b"too many failed authentications" in ssh.run("dev", alice_key, "true").stderr
    # Alice from another address gets in.
    elsewhere = ssh.run("dev", alice_key, "echo in", options=("-o", "BindAddress=127.0.0.2"))
    assert (elsewhere.returncode, elsewhere.stdout) == (0, b"in\n"), text_of(elsewhere)
    audit = ah.admin.audit(action="ssh.login").audit_logs
    assert [(a.status_code, a.ip) for a in audit] == [(429, "127.0.0.1")]
    assert audit[0].detail["reason"] == "too many failed logins from 127.0.0.1"

"""Cache invalidations arrive through the pubsub: whatever process publishes them, this one obeys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dockyard.accounts import tokens
from dockyard.accounts.actor import Actor
from dockyard.events import channels
from dockyard.store.models import ApiToken, Organization
from dockyard.templates import service
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.events.conftest import eventually
from tests.harness import Harness


def _actor(user_id: str) -> Actor:
    return Actor(
        user_id=user_id,
        username=user_id,
        role=m.Role.MEMBER,
        organization_id="org",
        scopes=frozenset({m.Scope.ALL}),
        token_id=f"t-{user_id}",
    )


def _cache(token_id: str, user_id: str) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    tokens.cache.put(token_id, tokens._hash("secret"), _actor(user_id), later)


def test_token_and_user_messages_evict_cached_tokens(h: Harness) -> None:
    bus = h.app.state.bus
    for token_id, user_id in (("t1", "u1"), ("t2", "u1"), ("t3", "u2"), ("t4", "u3")):
        _cache(token_id, user_id)
    bus.publish(channels.TOKENS, "token:t3")
    eventually(lambda: tokens.cache.get("t3", "secret") is None)
    bus.publish(channels.TOKENS, "user:u1")
    eventually(lambda: tokens.cache.get("t1", "secret") is None and tokens.cache.get("t2", "secret") is None)
    assert tokens.cache.get("t4", "secret") == _actor("u3")


def test_a_revocation_published_elsewhere_refuses_the_token_here(h: Harness) -> None:
    alice = h.user("alice")
    assert alice.me().username == "alice"  # now cached here
    assert alice.token is not None
    _, token_id, secret = alice.token.split("_", 2)
    assert tokens.cache.get(token_id, secret) is not None
    # Another replica revoked it: the row is gone (behind this process's back) and its message arrives here.
    with h.app.state.sessions() as db:
        db.delete(db.get(ApiToken, token_id))
        db.commit()
    assert alice.me().username == "alice"  # still served from this process's cache
    h.app.state.bus.publish(channels.TOKENS, f"token:{token_id}")
    # Over PostgreSQL the message makes a round trip through the database first.
    eventually(lambda: tokens.cache.get(token_id, secret) is None, timeout=1.0)
    with pytest.raises(ApiError) as error:
        alice.me()
    assert (error.value.status_code, error.value.message) == (401, "Invalid API token.")


def test_a_lookup_that_raced_an_eviction_is_not_cached() -> None:
    generation = tokens.cache.generation
    tokens.cache.forget("t9")  # a revocation lands while the lookup reads the database
    later = datetime.now(UTC) + timedelta(hours=1)
    tokens.cache.put("t9", tokens._hash("secret"), _actor("u9"), later, generation=generation)
    assert tokens.cache.get("t9", "secret") is None
    tokens.cache.put("t9", tokens._hash("secret"), _actor("u9"), later, generation=tokens.cache.generation)
    assert tokens.cache.get("t9", "secret") == _actor("u9")


def test_a_template_message_clears_the_template_lists(h: Harness) -> None:
    h.template(name="listed")
    with h.app.state.sessions() as db:
        organization = db.scalar(select(Organization.id))

    # The push's own message may still be on its way (PostgreSQL delivers it on another thread) and clear the
    # list the read below fills; read until the list stays cached.
    def cached() -> bool:
        assert [t.name for t in h.admin.list_templates()] == ["listed"]
        return service.catalog.get(organization) is not None

    eventually(cached)
    h.app.state.bus.publish(channels.TEMPLATES, organization)
    eventually(lambda: service.catalog.get(organization) is None)

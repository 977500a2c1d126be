from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dockyard.accounts import tokens
from dockyard.store.models import ApiToken
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness


def _error(call: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_first_start_writes_admin_token_0600(h: Harness) -> None:
    path = h.data_dir / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (h.data_dir / "admin-password").stat().st_mode & 0o777 == 0o600
    me = h.admin.me()
    assert (me.username, me.role) == ("admin", m.Role.OWNER)


def test_token_is_stored_only_as_hash(h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    token_id, secret = tokens.split(alice.token) or ("", "")
    with h.app.state.sessions() as db:
        row = db.get(ApiToken, token_id)
        assert row is not None
        assert row.hashed_secret == hashlib.sha256(secret.encode()).digest()
        columns = [getattr(row, c.key) for c in ApiToken.__table__.columns]
        assert all(secret not in str(value) for value in columns)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer nonsense", "Invalid API token."),
        ("Bearer dy_abc_def", "Invalid API token."),
        ("Basic dXNlcjpwYXNz", "Malformed Authorization header."),
        ("Bearer", "Malformed Authorization header."),
    ],
)
def test_bad_credentials_get_401(h: Harness, header: str, message: str) -> None:
    response = h.client().http.get("/api/v2/templates", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["message"] == message
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_secret_for_real_token_id_is_401(h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    forged = alice.token[:-4] + "AAAA"
    assert _error(h.client(forged).list_templates).status_code == 401


def test_expired_token_is_401(h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    token_id = alice.token.split("_")[1]
    with h.app.state.sessions() as db:
        row = db.get(ApiToken, token_id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db.commit()
    tokens.cache.clear()
    error = _error(alice.list_templates)
    assert (error.status_code, error.message) == (401, "API token expired.")


def test_revoked_token_stops_working_at_once(h: Harness) -> None:
    created = h.admin.create_token(m.CreateTokenRequest(name="ci", lifetime="1h"))
    ci = h.client(created.key)
    assert ci.me().username == "admin"  # now cached
    h.admin.revoke_token("ci")
    assert _error(ci.me).status_code == 401
    assert [t.name for t in h.admin.list_tokens()] == ["admin"]


def test_suspended_user_is_locked_out(h: Harness) -> None:
    bob = h.user("bob")
    assert bob.me().username == "bob"
    h.admin.update_user("bob", m.UpdateUserRequest(status=m.UserStatus.SUSPENDED))
    error = _error(bob.me)
    assert (error.status_code, error.message) == (401, "User is suspended.")


def test_scope_refusal_is_403_and_changes_nothing(h: Harness) -> None:
    reader = h.user("reader", role=m.Role.TEMPLATE_ADMIN, scopes=[m.Scope.TEMPLATE_READ])
    h.template(name="py")
    assert [t.name for t in reader.list_templates()] == ["py"]
    error = _error(lambda: reader.delete_template("py"))
    assert (error.status_code, error.message) == (403, "This token lacks the scope template:write.")
    assert [t.name for t in h.admin.list_templates()] == ["py"]


def test_role_refusal_is_403(h: Harness) -> None:
    member = h.user("member")
    error = _error(lambda: member.update_template("x", m.UpdateTemplateRequest(description="d")))
    # The template lookup runs first and the template does not exist, but the role check must win: a member
    # may never write templates, whatever exists.
    assert error.status_code in (403, 404)
    h.template(name="py")
    error = _error(lambda: member.update_template("py", m.UpdateTemplateRequest(description="d")))
    assert (error.status_code, error.message) == (403, "Your role (member) does not allow template:write.")
    assert h.admin.get_template("py").description == "a test template"


def test_allow_list_limits_templates(h: Harness) -> None:
    h.template(name="py")
    h.template(name="go")
    limited = h.user("agent", allow_list=["template:py"])
    assert [t.name for t in limited.list_templates()] == ["py"]
    assert limited.get_template("py").name == "py"
    error = _error(lambda: limited.get_template("go"))
    assert (error.status_code, error.message) == (403, "This token is not allowed to use template 'go'.")


def test_token_cannot_mint_broader_token(h: Harness) -> None:
    narrow = h.user("narrow", scopes=[m.Scope.TEMPLATE_READ, m.Scope.TOKEN_WRITE])
    error = _error(lambda: narrow.create_token(m.CreateTokenRequest(name="wide", scopes=[m.Scope.ALL])))
    assert error.status_code == 403
    assert error.validations[0].field == "scopes"
    assert "template:write" not in error.validations[0].detail  # member role lacks it anyway
    ok = narrow.create_token(m.CreateTokenRequest(name="read", scopes=[m.Scope.TEMPLATE_READ]))
    assert ok.scopes == [m.Scope.TEMPLATE_READ]
    limited = h.user("lim", allow_list=["template:py"])
    error = _error(lambda: limited.create_token(m.CreateTokenRequest(name="any")))
    assert (error.status_code, error.validations[0].field) == (403, "allow_list")


def test_token_lookup_uses_primary_key(h: Harness) -> None:
    """Authentication is a primary-key lookup: no scan over hashes however many tokens exist."""
    engine = h.app.state.engine
    statements: list[str] = []

    from sqlalchemy import event

    def capture(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    alice = h.user("alice")
    tokens.cache.clear()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        alice.me()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    token_queries = [s for s in statements if "FROM api_tokens" in s]
    assert token_queries, statements
    assert all("api_tokens.id =" in s for s in token_queries)


def test_last_used_at_recorded(h: Harness) -> None:
    alice = h.user("alice")
    alice.me()
    with h.app.state.sessions() as db:
        rows = db.scalars(select(ApiToken).where(ApiToken.name != "admin")).all()
        assert [r.last_used_at is not None for r in rows] == [True]


def test_login_with_password_and_logout(h: Harness) -> None:
    password = (h.data_dir / "admin-password").read_text().strip()
    client = h.client()
    session = client.login("admin", password)
    assert session.user.username == "admin"
    assert client.me().username == "admin"
    listed = {t.login_type for t in h.admin.list_tokens()}
    assert listed == {"token", "password"}
    client.logout()
    assert _error(client.me).status_code == 401
    assert {t.login_type for t in h.admin.list_tokens()} == {"token"}


def test_login_failure_is_401_and_audited(h: Harness) -> None:
    error = _error(lambda: h.client().login("admin", "wrong-password"))
    assert (error.status_code, error.message) == (401, "Incorrect username or password.")
    error = _error(lambda: h.client().login("nobody", "wrong-password"))
    assert (error.status_code, error.message) == (401, "Incorrect username or password.")
    logs = h.admin.audit(action="user.login").audit_logs
    assert [(a.username, a.status_code) for a in logs] == [("admin", 401)]


def test_revocation_by_another_replica_takes_effect_after_one_refresh(h: Harness) -> None:
    """A stale cache entry answers once while it is refreshed; the refresh finds the token gone."""
    import dataclasses
    import time

    created = h.admin.create_token(m.CreateTokenRequest(name="ci", lifetime="1h"))
    # Requests go through the lifespan client: its event loop outlives each request, as uvicorn's does, so
    # the background refresh gets to finish.
    headers = {"Authorization": f"Bearer {created.key}"}

    def me() -> int:
        return h.lifespan.get("/api/v2/users/me", headers=headers).status_code

    assert me() == 200
    with h.app.state.sessions() as db:
        # What another replica's revocation looks like from here: the row is gone, the cache still has it.
        row = db.get(ApiToken, created.id)
        db.delete(row)
        db.commit()
    entry = tokens.cache._entries[created.id]
    tokens.cache._entries[created.id] = dataclasses.replace(entry, fresh_until=time.monotonic() - 1)
    assert me() == 200  # served stale, refresh started
    deadline = time.monotonic() + 15
    while created.id in tokens.cache._entries and time.monotonic() < deadline:
        time.sleep(0.05)
    assert created.id not in tokens.cache._entries
    assert me() == 401

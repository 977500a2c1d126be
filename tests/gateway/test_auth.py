"""Identifying SSH credentials and resolving SSH user names to workspaces, below the SSH protocol."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import NotFound
from dockyard.gateway import auth, ca
from dockyard.gateway.server import Gateway
from dockyard.store.models import User
from dockyard_sdk import models as m
from tests.gateway.conftest import make_key, register_key
from tests.harness import Harness


def _blob(openssh_line: str) -> bytes:
    return base64.b64decode(openssh_line.split()[1])


@pytest.mark.parametrize(
    ("ssh_user", "parsed"),
    [
        ("dev", (None, "dev")),
        ("alice.dev", ("alice", "dev")),
        ("alice/dev", ("alice", "dev")),
        ("a.b.c", (None, "")),
        ("alice.", (None, "")),
        ("", (None, "")),
    ],
)
def test_parse_ssh_user(ssh_user: str, parsed: tuple[str | None, str]) -> None:
    assert auth.parse_ssh_user(ssh_user) == parsed


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_key_id_is_read_from_any_certificate(tmp_path: Path, kind: str) -> None:
    signer = make_key(tmp_path, "ca")
    user = make_key(tmp_path, f"user_{kind}", kind, 2048 if kind == "rsa" else None)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(signer.private), "-I", "dockyard:alice:tok9", "-n", "alice,x", "-z", "42",
         str(user.public)],
        check=True,
    )  # fmt: skip
    line = user.private.with_name(user.private.name + "-cert.pub").read_text()
    certificate, key_id = auth.decode_certificate(_blob(line))
    assert key_id == "dockyard:alice:tok9"
    assert list(certificate.principals) == ["alice", "x"]


def _actor(db: Session, username: str) -> Actor:
    user = db.query(User).filter_by(username=username).one()
    return Actor(user.id, user.username, m.Role(user.role), user.organization_id, frozenset({m.Scope.ALL}))


def test_identify_keys_and_certificates(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    alice = h.user("alice")
    registered, stranger = make_key(tmp_path, "registered"), make_key(tmp_path, "stranger")
    register_key(alice, registered)
    token = alice.http.get("/api/v2/users/me/tokens").json()[0]["id"]
    with h.app.state.sessions() as db:
        authority = ca.load(db)
        found = auth.identify(db, authority.ca, _blob(registered.public_text))
        assert (found.actor.username, found.method, found.token_id) == ("alice", "publickey", None)
        assert auth.still_valid(db, found)
        with pytest.raises(auth.Refused, match="unknown key"):
            auth.identify(db, authority.ca, _blob(stranger.public_text))
        signed = ca.sign_user_certificate(
            authority, public_key=stranger.public_text, username="alice", token_id=token, valid_for="1h"
        )
        by_cert = auth.identify(db, authority.ca, _blob(signed.certificate))
        assert (by_cert.actor.username, by_cert.method, by_cert.token_id) == ("alice", "certificate", token)
        # Signed by another CA, naming a token that does not exist, or a user it does not belong to: refused.
        other = ca.Authority(
            asyncssh.generate_private_key("ssh-ed25519"), authority.host_key, authority.host_certificate
        )
        forged = ca.sign_user_certificate(
            other, public_key=stranger.public_text, username="alice", token_id=token, valid_for="1h"
        )
        with pytest.raises(auth.Refused, match="another CA"):
            auth.identify(db, authority.ca, _blob(forged.certificate))
        gone = ca.sign_user_certificate(
            authority, public_key=stranger.public_text, username="alice", token_id="nope", valid_for="1h"
        )
        with pytest.raises(auth.Refused, match="revoked or expired"):
            auth.identify(db, authority.ca, _blob(gone.certificate))
        h.user("bob")
        stolen = ca.sign_user_certificate(
            authority, public_key=stranger.public_text, username="bob", token_id=token, valid_for="1h"
        )
        with pytest.raises(auth.Refused, match="belongs to someone else"):
            auth.identify(db, authority.ca, _blob(stolen.certificate))
    # A suspended user gets in with neither, and connections already open refuse new sessions.
    h.admin.update_user("alice", m.UpdateUserRequest(status=m.UserStatus.SUSPENDED))
    with h.app.state.sessions() as db:
        assert not auth.still_valid(db, found)
        assert not auth.still_valid(db, by_cert)
        with pytest.raises(auth.Refused, match="suspended"):
            auth.identify(db, authority.ca, _blob(registered.public_text))


def test_resolve_applies_visibility(h: Harness) -> None:
    alice, bob = h.user("alice"), h.user("bob")
    h.template(name="tmpl")
    ws = alice.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="dev"))
    with h.app.state.sessions() as db:
        as_alice, as_bob, as_admin = _actor(db, "alice"), _actor(db, "bob"), _actor(db, "admin")
        assert auth.resolve(db, as_alice, "dev") == auth.Target(ws.id, "dev")
        assert auth.resolve(db, as_alice, "alice.dev") == auth.Target(ws.id, "dev")
        assert auth.resolve(db, as_admin, "alice.dev") == auth.Target(ws.id, "alice.dev")
        assert auth.resolve(db, as_admin, "alice/dev") == auth.Target(ws.id, "alice.dev")
        assert auth.resolve(db, as_admin, "x", pinned=ws.id) == auth.Target(ws.id, "alice.dev")
        for who, ssh_user in [
            (as_bob, "alice.dev"),
            (as_bob, "dev"),
            (as_admin, "dev"),
            (as_alice, "nobody.dev"),
        ]:
            with pytest.raises(NotFound) as info:
                auth.resolve(db, who, ssh_user)
            assert (
                info.value.message
                == f'no workspace "{ssh_user}" for user {who.username} (try: dockyard list)'
            )
        with pytest.raises(NotFound):
            auth.resolve(db, as_bob, "x", pinned=ws.id)
    assert bob is not None

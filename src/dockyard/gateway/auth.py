"""Who an SSH client is (a registered key or a certificate from our CA) and which workspace it asked for.

Everything here is synchronous database work; the server runs it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate
from sqlalchemy.orm import Session

from dockyard.accounts import sshkeys, tokens, users
from dockyard.accounts.actor import Actor
from dockyard.accounts.tokens import ApiToken
from dockyard.accounts.users import User
from dockyard.errors import Forbidden, NotFound
from dockyard.gateway import ca, keys
from dockyard.store import audit
from dockyard.store.types import utcnow
from dockyard.workspaces import service as workspaces
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope
from dockyard_sdk.names import NAME_RE

CERT_SUFFIX = "-cert-v01@openssh.com"
# Separates owner and workspace in an SSH user name (`alice.dev`); names never contain it. `alice/dev`, as the
# API and the CLI write it, means the same.
OWNER_SEPARATOR = "."
_SSH_USER = re.compile(r"^(?:(?P<owner>[^./]+)[./])?(?P<name>[^./]+)$")


class Refused(Exception):
    """Authentication with this key or certificate is refused; the reason goes to the server log only."""


@dataclass(frozen=True)
class Identity:
    """An authenticated SSH client: the actor it acts as, and the credential to check again per session."""

    actor: Actor
    method: str  # "publickey" or "certificate"
    fingerprint: str
    ssh_key_id: str | None = None
    token_id: str | None = None


@dataclass(frozen=True)
class Target:
    workspace_id: str
    label: str


def _string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated")
    (length,) = struct.unpack_from(">I", blob, offset)
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated")
    return blob[offset + 4 : end], end


def algorithm_of(key_data: bytes) -> str:
    name, _ = _string(key_data, 0)
    return name.decode("ascii")


def decode_certificate(key_data: bytes) -> tuple[SSHOpenSSHCertificate, str]:
    """An OpenSSH certificate in wire format, and its key id (which asyncssh keeps private).

    The layout is PROTOCOL.certkeys: algorithm, nonce, the key's own public fields, serial (u64), type (u32),
    key id. The key's fields are its public blob without the leading algorithm name.
    """
    algorithm = algorithm_of(key_data)
    certificate = asyncssh.import_certificate(f"{algorithm} {base64.b64encode(key_data).decode()}")
    if not isinstance(certificate, SSHOpenSSHCertificate):
        raise ValueError("not an OpenSSH certificate")
    _, offset = _string(key_data, 0)
    _, offset = _string(key_data, offset)
    key_blob = certificate.key.public_data
    _, key_fields = _string(key_blob, 0)
    offset += len(key_blob) - key_fields + 8 + 4
    key_id, _ = _string(key_data, offset)
    return certificate, key_id.decode("utf-8")


def _actor(user: User, token: ApiToken | None) -> Actor:
    return Actor(
        user_id=user.id,
        username=user.username,
        role=wire.Role(user.role),
        organization_id=user.organization_id,
        # A registered key stands for the user, so it carries the role's scopes; a certificate carries no more
        # than the token that fetched it.
        scopes=frozenset(wire.Scope(s) for s in token.scopes) if token else frozenset({Scope.ALL}),
        allow_list=frozenset(token.allow_list) if token else frozenset(),
        token_id=token.id if token else None,
        own_workspaces_only=token.own_workspaces_only if token else False,
        git_push=token.git_push if token else "any",
    )


def _usable(user: User, actor: Actor) -> None:
    if user.status != wire.UserStatus.ACTIVE:
        raise Refused(f"user {user.username} is suspended")
    if not actor.can(Scope.WORKSPACE_CONNECT):
        raise Refused(f"{user.username}'s credential lacks {Scope.WORKSPACE_CONNECT.value}")


def identify_key(db: Session, key: asyncssh.SSHKey) -> Identity:
    key_print = keys.fingerprint(key)
    found = sshkeys.lookup_by_fingerprint(db, key_print)
    if found is None:
        raise Refused(f"unknown key {key_print}")
    row, user = found
    actor = _actor(user, None)
    _usable(user, actor)
    return Identity(actor=actor, method="publickey", fingerprint=key_print, ssh_key_id=row.id)


def identify_certificate(db: Session, authority_key: asyncssh.SSHKey, key_data: bytes) -> Identity:
    """Who a certificate speaks for. Its signature, type and validity period are asyncssh's to check; this
    checks that our CA signed it, that it names its user, and that the token behind it is still good."""
    try:
        certificate, key_id = decode_certificate(key_data)
    except (asyncssh.KeyImportError, ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise Refused(f"malformed certificate: {exc}") from exc
    if certificate.signing_key.public_data != authority_key.public_data:
        raise Refused("certificate from another CA")
    parsed = ca.parse_user_key_id(key_id)
    if parsed is None:
        raise Refused(f"certificate key id {key_id!r} is not Dockyard's")
    username, token_id = parsed
    if username not in certificate.principals:
        raise Refused(f"certificate for {username} does not name that user as a principal")
    token = tokens.find(db, token_id)
    if token is None or token.expires_at <= utcnow():
        raise Refused(f"certificate of {username}: token {token_id} is revoked or expired")
    user = token.user
    if user.username != username:
        raise Refused(f"certificate of {username}: token {token_id} belongs to someone else")
    actor = _actor(user, token)
    _usable(user, actor)
    return Identity(
        actor=actor, method="certificate", fingerprint=keys.fingerprint(certificate.key), token_id=token.id
    )


def identify(db: Session, authority_key: asyncssh.SSHKey, key_data: bytes) -> Identity:
    try:
        algorithm = algorithm_of(key_data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused("malformed key") from exc
    if algorithm.endswith(CERT_SUFFIX):
        return identify_certificate(db, authority_key, key_data)
    try:
        key = asyncssh.import_public_key(f"{algorithm} {base64.b64encode(key_data).decode()}")
    except asyncssh.KeyImportError as exc:
        raise Refused(f"malformed key: {exc}") from exc
    return identify_key(db, key)


def record_failure(
    db: Session, source: str, account: str, *, status_code: int, detail: dict[str, object]
) -> None:
    """Audit a failed or refused SSH authentication (`ssh.login`), under the user it claimed if any."""
    user = users.find_by_name(db, account) if account else None
    actor = Actor(
        user_id=user.id if user else "",
        username=(user.username if user else account)[:32],
        role=wire.Role(user.role) if user else wire.Role.MEMBER,
        organization_id=user.organization_id if user else "",
        scopes=frozenset(),
        ip=source[:64],
    )
    audit.record(
        db,
        actor,
        "ssh.login",
        resource_type="user",
        resource_id=user.id if user else "",
        resource_name=account[:128],
        status_code=status_code,
        detail=dict(detail),
    )
    db.commit()


def still_valid(db: Session, identity: Identity) -> bool:
    """Whether the credential a connection authenticated with still stands (checked for every new session, so
    that removing a key or revoking a token also stops new sessions on connections already open)."""
    if identity.ssh_key_id is not None:
        return sshkeys.owner_active(db, identity.ssh_key_id)
    token = tokens.find(db, identity.token_id) if identity.token_id else None
    return token is not None and token.expires_at > utcnow() and token.user.status == wire.UserStatus.ACTIVE


def parse_ssh_user(ssh_user: str) -> tuple[str | None, str]:
    """(owner or None, workspace) from an SSH user name: `dev`, `alice.dev`, or `alice/dev` (the API's form)."""
    match = _SSH_USER.match(ssh_user)
    if match is None:
        return None, ""
    return match.group("owner"), match.group("name")


def no_workspace(ssh_user: str, actor: Actor) -> str:
    return f'no workspace "{ssh_user}" for user {actor.username} (try: dockyard list)'


def _find(db: Session, actor: Actor, ssh_user: str, pinned: str | None) -> workspaces.Workspace | None:
    if pinned is not None:
        return workspaces.get(db, actor, pinned)
    owner_name, name = parse_ssh_user(ssh_user)
    if owner_name is None:
        return workspaces.get(db, actor, name) if name else None
    if not NAME_RE.match(owner_name) or not NAME_RE.match(name):
        return None
    owner = users.find_by_name(db, owner_name)
    return None if owner is None else workspaces.get_by_owner(db, actor, owner, name)


def resolve(db: Session, actor: Actor, ssh_user: str, *, pinned: str | None = None) -> Target:
    """The workspace a connection reaches: by the SSH user name, or `pinned` (a workspace id) when the
    transport already chose one. Unknown and not-allowed read the same, so a client cannot probe which
    workspaces exist. Raises NotFound (or Forbidden for a missing scope) carrying the client's message."""
    try:
        found = _find(db, actor, ssh_user, pinned)
    except NotFound:
        found = None
    if found is None or found.deleted:
        raise NotFound(no_workspace((pinned or ssh_user)[:80], actor))
    if not actor.can(Scope.WORKSPACE_CONNECT):
        raise Forbidden(f"your credential lacks the scope {Scope.WORKSPACE_CONNECT.value}")
    if found.owner_id == actor.user_id:
        return Target(found.id, found.name)
    return Target(found.id, f"{found.owner.username}{OWNER_SEPARATOR}{found.name}")

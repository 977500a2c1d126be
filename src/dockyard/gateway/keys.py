"""Users' registered SSH public keys: parsing, adding, listing, removing, and the gateway's lookup."""

from __future__ import annotations

import base64
import binascii

import asyncssh
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.errors import Conflict, Forbidden, NotFound, Validation, ValidationFailed
from dockyard.store import audit
from dockyard.store.models import SshKey, User
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

MIN_RSA_BITS = 2048
# OpenSSH 9 refuses DSA and so do we: 1024-bit keys with a fragile signature scheme.
_REFUSED_ALGORITHMS = {"ssh-dss": "DSA keys are not supported; use ed25519 (ssh-keygen -t ed25519)"}


def _invalid(field: str, detail: str) -> ValidationFailed:
    return ValidationFailed("Invalid SSH public key.", [Validation(field, detail)])


def parse_public_key(text: str, *, field: str = "public_key") -> asyncssh.SSHKey:
    """One OpenSSH public key line (`<algorithm> <base64> [comment]`), refusing anything else with a message
    that names `field`: private keys, certificates, several keys, weak keys."""
    if "PRIVATE KEY" in text.upper():
        raise _invalid(field, "this is a private key; paste the public key (the .pub file) instead")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        raise _invalid(
            field, "expected exactly one public key line, e.g. the content of ~/.ssh/id_ed25519.pub"
        )
    parts = lines[0].split()
    if len(parts) < 2:
        raise _invalid(field, "expected `<algorithm> <base64 key> [comment]`")
    algorithm, blob = parts[0], parts[1]
    if "-cert-v01@openssh.com" in algorithm:
        raise _invalid(field, "this is a certificate; register the plain public key instead")
    if algorithm in _REFUSED_ALGORITHMS:
        raise _invalid(field, _REFUSED_ALGORITHMS[algorithm])
    try:
        base64.b64decode(blob, validate=True)
        # asyncssh also checks that the algorithm named in the blob is the line's first word.
        key = asyncssh.import_public_key(f"{algorithm} {blob}")
    except (binascii.Error, asyncssh.KeyImportError, ValueError) as exc:
        raise _invalid(field, f"not a valid OpenSSH public key ({exc})") from exc
    pyca = key.pyca_key
    if isinstance(pyca, rsa.RSAPublicKey) and pyca.key_size < MIN_RSA_BITS:
        raise _invalid(field, f"RSA keys need at least {MIN_RSA_BITS} bits; this one has {pyca.key_size}")
    return key


def openssh_line(key: asyncssh.SSHKey) -> str:
    """`<algorithm> <base64>` without a comment: the stored and compared form."""
    return f"{key.get_algorithm()} {base64.b64encode(key.public_data).decode()}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """SHA256 fingerprint exactly as `ssh-keygen -l` prints it (`SHA256:` + unpadded base64)."""
    return key.get_fingerprint("sha256")


def to_wire(row: SshKey) -> wire.SshKey:
    return wire.SshKey(
        id=row.id,
        name=row.name,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def _require_manage(actor: Actor, user: User, scope: Scope) -> None:
    actor.require(scope)
    if user.id != actor.user_id and not actor.can(Scope.USER_ADMIN):
        raise Forbidden("Only an owner can manage another user's SSH keys.")


def add(db: Session, actor: Actor, user: User, request: wire.CreateSshKeyRequest) -> SshKey:
    _require_manage(actor, user, Scope.USER_WRITE)
    key = parse_public_key(request.public_key)
    key_print = fingerprint(key)
    if db.scalar(select(SshKey.id).where(SshKey.fingerprint == key_print)) is not None:
        # Not saying whose: a key names its one owner, and that is nobody else's business.
        raise Conflict(
            "This SSH key is already registered.",
            detail="A key can belong to one user only; generate a new one with ssh-keygen.",
            validations=[Validation("public_key", f"{key_print} is already registered")],
        )
    if db.scalar(select(SshKey.id).where(SshKey.user_id == user.id, SshKey.name == request.name)):
        raise Conflict(
            f"An SSH key named {request.name!r} already exists.",
            validations=[Validation("name", f"{request.name!r} is taken")],
        )
    row = SshKey(user_id=user.id, name=request.name, public_key=openssh_line(key), fingerprint=key_print)
    db.add(row)
    try:
        db.flush()
    except IntegrityError as exc:
        # Two requests racing past the checks above: the unique indexes decide.
        db.rollback()
        raise Conflict("This SSH key or key name is already registered.") from exc
    audit.record(
        db,
        actor,
        "sshkey.create",
        resource_type="ssh_key",
        resource_id=row.id,
        resource_name=row.name,
        status_code=201,
        detail={"user": user.username, "fingerprint": key_print, "algorithm": key.get_algorithm()},
    )
    db.commit()
    return row


def list_keys(db: Session, actor: Actor, user: User) -> list[SshKey]:
    _require_manage(actor, user, Scope.USER_READ)
    return list(db.scalars(select(SshKey).where(SshKey.user_id == user.id).order_by(SshKey.created_at)))


def get(db: Session, user: User, ref: str) -> SshKey:
    """A key of `user` by id or name. (Not by fingerprint: its base64 holds `/`, which no path segment can.)"""
    row = db.scalar(
        select(SshKey).where(SshKey.user_id == user.id, (SshKey.id == ref) | (SshKey.name == ref))
    )
    if row is None:
        raise NotFound(f"SSH key {ref!r} not found.")
    return row


def remove(db: Session, actor: Actor, user: User, ref: str) -> None:
    _require_manage(actor, user, Scope.USER_WRITE)
    row = get(db, user, ref)
    audit.record(
        db,
        actor,
        "sshkey.delete",
        resource_type="ssh_key",
        resource_id=row.id,
        resource_name=row.name,
        detail={"user": user.username, "fingerprint": row.fingerprint},
    )
    db.delete(row)
    db.commit()


def lookup_by_fingerprint(db: Session, fingerprint: str) -> tuple[SshKey, User] | None:
    """The registered key with this fingerprint and its user, or None."""
    found = db.execute(
        select(SshKey, User).join(User, User.id == SshKey.user_id).where(SshKey.fingerprint == fingerprint)
    ).first()
    return None if found is None else (found[0], found[1])


def mark_used(db: Session, key_id: str) -> None:
    row = db.get(SshKey, key_id)
    if row is not None:
        row.last_used_at = utcnow()
        db.commit()

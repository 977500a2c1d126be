"""SSH public keys as the gateway reads them: parsing, the OpenSSH line and the fingerprint, and registering a
key from its text (stored by `accounts/sshkeys.py`, which lists, finds and removes them)."""

from __future__ import annotations

import base64
import binascii

import asyncssh
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from dockyard.accounts import sshkeys
from dockyard.accounts.actor import Actor
from dockyard.accounts.users import User
from dockyard.errors import Validation, ValidationFailed
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


def add(db: Session, actor: Actor, user: User, request: wire.CreateSshKeyRequest) -> sshkeys.SshKey:
    """Register a key for `user` from its OpenSSH line, refused field by field when it does not parse."""
    sshkeys.require_manage(actor, user, Scope.USER_WRITE)
    key = parse_public_key(request.public_key)
    return sshkeys.add(
        db,
        actor,
        user,
        name=request.name,
        public_key=openssh_line(key),
        key_print=fingerprint(key),
        algorithm=key.get_algorithm(),
    )

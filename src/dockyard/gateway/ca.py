"""The SSH certificate authority and the gateway's host key.

Both are ed25519 keys generated once per deployment and kept in `deployment_keys`, so every replica presents the
same identity and honours the same certificates. The gateway's host key carries a host certificate for the
principal `dockyard`; clients pin the CA with the known_hosts line `@cert-authority dockyard <ca key>` and
`HostKeyAlias dockyard`, so they never see a trust-on-first-use prompt, whatever address or port they dial.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncssh
from sqlalchemy.orm import Session

from dockyard.accounts import tokens
from dockyard.accounts.actor import Actor
from dockyard.accounts.users import User
from dockyard.config import Settings
from dockyard.errors import Forbidden, Validation, ValidationFailed
from dockyard.gateway.keys import fingerprint, openssh_line, parse_public_key
from dockyard.store import audit
from dockyard.store import keys as deployment_keys
from dockyard.store.types import utcnow
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope
from dockyard_sdk.units import format_duration, parse_duration

CA_KEY_NAME = "ssh-ca"
HOST_KEY_NAME = "ssh-host-key"
HOST_KEY_ALIAS = "dockyard"
MIN_VALIDITY = timedelta(seconds=5)
MAX_VALIDITY = timedelta(days=7)
# Certificates start a minute in the past, so a client whose clock runs a little behind can use one at once.
BACKDATE = timedelta(seconds=60)
KEY_ID_PREFIX = "dockyard"
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}  # noqa: S104 - recognising wildcards, not binding to one


@dataclass(frozen=True)
class Authority:
    ca: asyncssh.SSHKey
    host_key: asyncssh.SSHKey
    host_certificate: asyncssh.SSHCertificate

    @property
    def ca_public_key(self) -> str:
        return openssh_line(self.ca)


def _generate() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


def load(db: Session) -> Authority:
    """The deployment's CA and host key (made on first use), with a fresh host certificate."""
    ca = asyncssh.import_private_key(deployment_keys.get_or_create(db, CA_KEY_NAME, _generate))
    host_key = asyncssh.import_private_key(deployment_keys.get_or_create(db, HOST_KEY_NAME, _generate))
    # Signed again at every start: it costs microseconds, and it never needs to be stored or renewed.
    certificate = ca.generate_host_certificate(
        host_key, key_id=f"{KEY_ID_PREFIX}-gateway", principals=[HOST_KEY_ALIAS], serial=new_serial()
    )
    return Authority(ca=ca, host_key=host_key, host_certificate=certificate)


def new_serial() -> int:
    """A certificate serial: random, never 0 (OpenSSH reads 0 as "no serial")."""
    return secrets.randbits(63) | 1


def known_hosts_line(ca_public_key: str) -> str:
    return f"@cert-authority {HOST_KEY_ALIAS} {ca_public_key}"


def user_key_id(username: str, token_id: str) -> str:
    return f"{KEY_ID_PREFIX}:{username}:{token_id}"


def parse_user_key_id(key_id: str) -> tuple[str, str] | None:
    """(username, token id) from a certificate's key id, or None when it is not one of ours."""
    parts = key_id.split(":")
    if len(parts) != 3 or parts[0] != KEY_ID_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def parse_validity(value: str) -> timedelta:
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise ValidationFailed("Invalid certificate request.", [Validation("valid_for", str(exc))]) from exc
    if not MIN_VALIDITY <= duration <= MAX_VALIDITY:
        raise ValidationFailed(
            "Invalid certificate request.",
            [
                Validation(
                    "valid_for",
                    f"{value} is outside {format_duration(MIN_VALIDITY)} to {format_duration(MAX_VALIDITY)}",
                )
            ],
        )
    return duration


def sign_user_certificate(
    authority: Authority,
    *,
    public_key: str,
    username: str,
    token_id: str,
    valid_for: str,
    not_after: datetime | None = None,
) -> wire.SshCertificate:
    """A user certificate for `public_key`, valid for `valid_for` but never past `not_after` (the expiry of
    the token that asked for it: the certificate must not outlive the credential behind it)."""
    key = parse_public_key(public_key)
    duration = parse_validity(valid_for)
    now = utcnow()
    valid_before = now + duration
    if not_after is not None:
        valid_before = min(valid_before, not_after)
    # A random 63-bit serial: unique among every certificate this CA signs (a collision becomes likely only after ~2e9 of them),
    # so an audit row, a log line or a future revocation list can name one certificate; no shared counter
    # between replicas is needed.
    serial = new_serial()
    certificate = authority.ca.generate_user_certificate(
        key,
        key_id=user_key_id(username, token_id),
        serial=serial,
        principals=[username],
        valid_after=int((now - BACKDATE).timestamp()),
        valid_before=int(valid_before.timestamp()),
        permit_x11_forwarding=False,
        # The gateway refuses agent forwarding (it would open a socket on the control plane's host), so the
        # certificate must not claim it is allowed.
        permit_agent_forwarding=False,
        permit_port_forwarding=True,
        permit_pty=True,
        permit_user_rc=True,
    )
    return wire.SshCertificate(
        certificate=certificate.export_certificate("openssh").decode().strip(),
        serial=serial,
        principals=[username],
        valid_before=datetime.fromtimestamp(int(valid_before.timestamp()), tz=now.tzinfo),
        ca_public_key=authority.ca_public_key,
    )


def issue_certificate(
    db: Session, actor: Actor, user: User, request: wire.SshCertificateRequest, authority: Authority
) -> wire.SshCertificate:
    """`dockyard login` and `dockyard ssh-cert`: a certificate for the caller's own key, tied to the token
    the request came with."""
    actor.require(Scope.WORKSPACE_CONNECT)
    if user.id != actor.user_id:
        raise Forbidden("You can only get an SSH certificate for yourself.")
    token = tokens.find(db, actor.token_id) if actor.token_id else None
    if token is None:
        raise Forbidden("An SSH certificate needs an API token to tie it to.")
    certificate = sign_user_certificate(
        authority,
        public_key=request.public_key,
        username=user.username,
        token_id=token.id,
        valid_for=request.valid_for,
        not_after=token.expires_at,
    )
    audit.record(
        db,
        actor,
        "sshcert.create",
        resource_type="ssh_certificate",
        resource_id=token.id,
        resource_name=user.username,
        status_code=201,
        detail={
            "fingerprint": fingerprint(parse_public_key(request.public_key)),
            "serial": certificate.serial,
            "valid_before": certificate.valid_before.isoformat(),
        },
    )
    db.commit()
    return certificate


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as given to --ssh-listen."""
    host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def gateway_info(settings: Settings, authority: Authority) -> wire.SshGateway:
    """How clients reach the gateway. `port` is 0 when there is no TCP listener (`--ssh-listen ''`): then only
    `dockyard ssh --stdio` reaches it."""
    host, port = parse_listen(settings.ssh_listen) if settings.ssh_listen else ("", 0)
    if settings.ssh_hostname:
        host = settings.ssh_hostname
    elif host in _WILDCARD_HOSTS:
        api_host = settings.host_port[0]
        host = socket.gethostname() if api_host in _WILDCARD_HOSTS else api_host
    return wire.SshGateway(
        host=host,
        port=port,
        host_key_alias=HOST_KEY_ALIAS,
        ca_public_key=authority.ca_public_key,
        known_hosts=known_hosts_line(authority.ca_public_key),
    )

"""The CA, the host certificate and user certificates, checked with OpenSSH's own ssh-keygen."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy.orm import Session, sessionmaker

from dockyard.config import Settings
from dockyard.errors import ValidationFailed
from dockyard.gateway import ca
from dockyard.store.models import DeploymentKey
from dockyard.store.types import utcnow
from tests.gateway.conftest import make_key
from tests.harness import Harness


@pytest.fixture
def sessions(h: Harness) -> sessionmaker[Session]:
    return h.app.state.sessions  # type: ignore[no-any-return]


def _describe(tmp_path: Path, certificate: str) -> str:
    path = tmp_path / "cert.pub"
    path.write_text(certificate + "\n")
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout


def test_keys_are_made_once_and_kept(sessions: sessionmaker[Session]) -> None:
    with sessions() as db:
        first = ca.load(db)
    with sessions() as db:
        second = ca.load(db)
        names = {row.name for row in db.query(DeploymentKey)}
    assert {ca.CA_KEY_NAME, ca.HOST_KEY_NAME} <= names
    assert first.ca_public_key == second.ca_public_key
    assert first.host_key.public_data == second.host_key.public_data
    assert first.ca_public_key.startswith("ssh-ed25519 ")
    assert first.ca.public_data != first.host_key.public_data


def test_host_certificate_is_for_the_alias_and_signed_by_the_ca(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as db:
        authority = ca.load(db)
    text = authority.host_certificate.export_certificate("openssh").decode().strip()
    described = _describe(tmp_path, text)
    assert "ssh-ed25519-cert-v01@openssh.com host certificate" in described
    assert "Principals: \n                dockyard\n" in described
    assert f"Signing CA: ED25519 {authority.ca.get_fingerprint()}" in described
    # A known_hosts file with only the CA line verifies it for the alias, and for nothing else.
    known = asyncssh.import_known_hosts(ca.known_hosts_line(authority.ca_public_key) + "\n")
    trusted_ca = known.match("dockyard", "", None)[1]
    assert [k.public_data for k in trusted_ca] == [authority.ca.public_data]
    assert known.match("other-host", "", None)[1] == []


def test_user_certificate_fields(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    key = make_key(tmp_path / "keys")
    with sessions() as db:
        authority = ca.load(db)
    before = utcnow()
    cert = ca.sign_user_certificate(
        authority, public_key=key.public_text, username="alice", token_id="tok123", valid_for="1h"
    )
    assert cert.principals == ["alice"]
    assert cert.ca_public_key == authority.ca_public_key
    assert before + timedelta(hours=1) - timedelta(seconds=2) <= cert.valid_before
    assert cert.valid_before <= utcnow() + timedelta(hours=1)
    described = _describe(tmp_path, cert.certificate)
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in described
    assert 'Key ID: "dockyard:alice:tok123"' in described
    assert "Principals: \n                alice\n" in described
    extensions = described.split("Extensions:")[1].split()
    # No permit-agent-forwarding: the gateway refuses agent forwarding, and the certificate says so too.
    assert extensions == [
        "permit-port-forwarding",
        "permit-pty",
        "permit-user-rc",
    ]
    assert "Critical Options: (none)" in described
    assert f"Serial: {cert.serial}\n" in described
    assert cert.serial > 0


def test_every_certificate_gets_its_own_serial(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    key = make_key(tmp_path / "keys")
    with sessions() as db:
        authority = ca.load(db)
        again = ca.load(db)
    certificates = [
        ca.sign_user_certificate(
            authority, public_key=key.public_text, username="alice", token_id="tok123", valid_for="1h"
        )
        for _ in range(50)
    ]
    serials = [c.serial for c in certificates]
    assert len(set(serials)) == 50
    # What OpenSSH reads from each certificate is the serial the API reported.
    shown = [
        int(_describe(tmp_path, c.certificate).split("Serial: ")[1].split()[0]) for c in certificates[:3]
    ]
    assert shown == serials[:3]
    # The host certificate, signed anew at every start, gets a fresh serial too.
    host_serials = {
        _describe(tmp_path, a.host_certificate.export_certificate("openssh").decode())
        .split("Serial: ")[1]
        .split()[0]
        for a in (authority, again)
    }
    assert len(host_serials) == 2
    assert "0" not in host_serials


def test_certificate_never_outlives_its_token(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    key = make_key(tmp_path / "keys")
    with sessions() as db:
        authority = ca.load(db)
    token_expiry = utcnow() + timedelta(minutes=10)
    cert = ca.sign_user_certificate(
        authority,
        public_key=key.public_text,
        username="alice",
        token_id="t",
        valid_for="7d",
        not_after=token_expiry,
    )
    assert cert.valid_before <= token_expiry
    assert cert.valid_before > token_expiry - timedelta(seconds=2)


@pytest.mark.parametrize(
    ("valid_for", "detail"),
    [
        ("4s", "4s is outside 5s to 7d"),
        ("8d", "8d is outside 5s to 7d"),
        ("soon", "'soon' is not a duration (use e.g. 90s, 30m, 4h, 1h30m, 2d)"),
    ],
)
def test_validity_bounds_name_the_field(
    sessions: sessionmaker[Session], tmp_path: Path, valid_for: str, detail: str
) -> None:
    key = make_key(tmp_path / "keys")
    with sessions() as db:
        authority = ca.load(db)
    with pytest.raises(ValidationFailed) as info:
        ca.sign_user_certificate(
            authority, public_key=key.public_text, username="a", token_id="t", valid_for=valid_for
        )
    assert [(v.field, v.detail) for v in info.value.validations] == [("valid_for", detail)]


def test_key_id_round_trip() -> None:
    assert ca.parse_user_key_id(ca.user_key_id("alice", "abc")) == ("alice", "abc")
    for bad in ("alice", "other:alice:abc", "dockyard::abc", "dockyard:alice:", "dockyard:a:b:c"):
        assert ca.parse_user_key_id(bad) is None


@pytest.mark.parametrize(
    ("ssh_listen", "ssh_hostname", "listen", "host", "port"),
    [
        ("127.0.0.1:2222", "", "127.0.0.1:3000", "127.0.0.1", 2222),
        ("0.0.0.0:22", "ssh.example.com", "127.0.0.1:3000", "ssh.example.com", 22),
        ("[::1]:2200", "", "127.0.0.1:3000", "::1", 2200),
        ("", "", "10.1.2.3:3000", "10.1.2.3", 0),
    ],
)
def test_gateway_info(
    sessions: sessionmaker[Session], ssh_listen: str, ssh_hostname: str, listen: str, host: str, port: int
) -> None:
    with sessions() as db:
        authority = ca.load(db)
    settings = Settings(ssh_listen=ssh_listen, ssh_hostname=ssh_hostname, listen=listen)
    info = ca.gateway_info(settings, authority)
    assert (info.host, info.port, info.host_key_alias) == (host, port, "dockyard")
    assert info.known_hosts == f"@cert-authority dockyard {authority.ca_public_key}"


def test_parse_listen_refuses_nonsense() -> None:
    for bad in ("2222", "host:", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            ca.parse_listen(bad)

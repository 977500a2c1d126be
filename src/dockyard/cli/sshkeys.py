"""SSH client setup: `dockyard ssh-keys add | list | remove`, `ssh-cert` and `config-ssh`, and the CLI's own SSH
key and certificate.

The CLI keeps one ed25519 key pair in `<config dir>/ssh/` and asks the server's certificate authority to sign it
for a few hours at a time (`id_ed25519-cert.pub`). The gateway trusts the certificate, so nothing has to be
registered, and `known_hosts` pins the CA that signs the gateway's host key, so no host key prompt ever appears.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import Client
from dockyard_sdk import models as m
from dockyard_sdk.units import parse_duration

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes as SSHPublicKeyTypes

if sys.platform != "win32":
    import fcntl

app = typer.Typer(help="Register SSH public keys for the SSH gateway.", no_args_is_help=True)

KEY_NAME = "id_ed25519"
# A certificate with less than this left is renewed before it is used.
RENEW_BEFORE = timedelta(hours=1)
_FROM_STDIN = "-"


# --- the CLI's key pair and certificate ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFiles:
    folder: Path

    @property
    def private_key(self) -> Path:
        return self.folder / KEY_NAME

    @property
    def public_key(self) -> Path:
        return self.folder / f"{KEY_NAME}.pub"

    @property
    def certificate(self) -> Path:
        return self.folder / f"{KEY_NAME}-cert.pub"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"


def key_files() -> KeyFiles:
    return KeyFiles(config.config_dir() / "ssh")


def _make_folder(folder: Path) -> None:
    for path in (folder.parent, folder):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by the umask and skipped for an existing folder; these hold a private key.
        path.chmod(0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write `path` whole and 0600: via a temporary file that is renamed, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Editors open several SSH sessions at once; one process at a time makes or renews the key."""
    if sys.platform == "win32":
        yield
        return
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _generate(files: KeyFiles) -> None:
    # cryptography is imported where a key or certificate is read: most commands never touch one.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = _openssh(key.public_key()) + b" dockyard\n"
    # The public half first: a private key without its .pub would be taken for a finished pair.
    write_private(files.public_key, public)
    write_private(files.private_key, private)
    files.certificate.unlink(missing_ok=True)


def ensure_key_pair(files: KeyFiles) -> None:
    if not (files.private_key.exists() and files.public_key.exists()):
        _generate(files)


def _openssh(key: SSHPublicKeyTypes) -> bytes:
    """`<algorithm> <base64>`, the form keys are compared in."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


@dataclass(frozen=True)
class CertificateInfo:
    public_key: bytes  # the certified key, as `<algorithm> <base64>`
    principals: list[str]
    valid_after: datetime
    valid_before: datetime
    ca_key: bytes  # the signing key, as `<algorithm> <base64>`


def parse_certificate(line: str) -> CertificateInfo:
    """The fields of an OpenSSH certificate line, to check it locally before using it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = serialization.load_ssh_public_identity(line.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not an OpenSSH certificate: {exc}") from exc
    if not isinstance(certificate, serialization.SSHCertificate):
        raise ValueError("not an OpenSSH certificate: a plain public key")
    # 2**64 - 1 means "forever"; datetime stops at year 9999.
    limit = datetime(9999, 1, 1, tzinfo=UTC)
    return CertificateInfo(
        public_key=_openssh(certificate.public_key()),
        principals=[p.decode() for p in certificate.valid_principals],
        valid_after=min(datetime.fromtimestamp(min(certificate.valid_after, 2**37), UTC), limit),
        valid_before=min(datetime.fromtimestamp(min(certificate.valid_before, 2**37), UTC), limit),
        ca_key=_openssh(certificate.signature_key()),
    )


def _public_key(line: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return _openssh(serialization.load_ssh_public_key(line.strip().encode()))


def certificate_usable(files: KeyFiles, *, ca_public_key: str | None, margin: timedelta) -> bool:
    """The certificate exists, certifies our key, is signed by `ca_public_key` (when given) and has at least
    `margin` left."""
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        info = parse_certificate(files.certificate.read_text())
        ours = _public_key(files.public_key.read_text())
        ca = _public_key(ca_public_key) if ca_public_key else info.ca_key
    except (OSError, ValueError, UnsupportedAlgorithm):
        return False
    now = datetime.now(UTC)
    return (
        info.public_key == ours and info.ca_key == ca and info.valid_after <= now < info.valid_before - margin
    )


@dataclass(frozen=True)
class SshSetup:
    """What an SSH client needs to reach the gateway: the files, and the gateway's address and host key alias."""

    files: KeyFiles
    gateway: m.SshGateway
    certificate: m.SshCertificate | None  # None when the existing one was still good


def _write_known_hosts(files: KeyFiles, gateway: m.SshGateway) -> None:
    content = gateway.known_hosts.strip() + "\n"
    try:
        if files.known_hosts.read_text() == content:
            return
    except OSError:
        pass
    write_private(files.known_hosts, content.encode())


def ensure_certificate(client: Client, *, valid_for: str = "16h", renew: bool = False) -> SshSetup:
    """Make the key pair if needed, write known_hosts, and get a new certificate unless the one on disk is
    good for another while (always, with `renew`)."""
    gateway = client.ssh_gateway()
    files = key_files()
    _make_folder(files.folder)
    with _locked(files.folder):
        _write_known_hosts(files, gateway)
        ensure_key_pair(files)
        margin = min(RENEW_BEFORE, parse_duration(valid_for) / 2)
        if not renew and certificate_usable(files, ca_public_key=gateway.ca_public_key, margin=margin):
            return SshSetup(files, gateway, None)
        request = build_request(
            m.SshCertificateRequest,
            names={"valid_for": "--valid-for"},
            public_key=files.public_key.read_text().strip(),
            valid_for=valid_for,
        )
        certificate = client.create_ssh_certificate("me", request)
        write_private(files.certificate, certificate.certificate.strip().encode() + b"\n")
    return SshSetup(files, gateway, certificate)


def renew_if_expiring(client: Client, *, within: timedelta) -> None:
    """Renew the certificate when it has less than `within` left, so that an editor's next connection finds a
    fresh one; the connection already under way has read the old one."""
    files = key_files()
    if certificate_usable(files, ca_public_key=None, margin=within):
        return
    ensure_certificate(client, renew=True)


# --- ssh-cert --------------------------------------------------------------------------------------------------


def ssh_cert(
    valid_for: Annotated[
        str, typer.Option("--valid-for", help="How long the certificate is valid, e.g. 16h (at most 7d).")
    ] = "16h",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Get a new SSH certificate for the CLI's key (made when missing) from the server's CA."""
    try:
        parse_duration(valid_for)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--valid-for") from None
    with config.session() as client:
        setup = ensure_certificate(client, valid_for=valid_for, renew=True)
    certificate = setup.certificate
    assert certificate is not None
    if output_format is OutputFormat.JSON:
        output.print_json(certificate)
        return
    output.message(
        f"SSH certificate for {', '.join(certificate.principals) or 'no principals'} valid until "
        f"{output.when(certificate.valid_before)}: {setup.files.certificate}"
    )


# --- ssh-keys --------------------------------------------------------------------------------------------------

# No ID column: a fingerprint is what identifies a key to a person, and `remove` takes the name too.
_KEY_COLUMNS: list[Column[m.SshKey]] = [
    Column("NAME", lambda k: k.name),
    Column("FINGERPRINT", lambda k: k.fingerprint),
    Column("CREATED", lambda k: output.when(k.created_at)),
    Column("LAST USED", lambda k: output.when(k.last_used_at)),
]


def _read_key(source: str) -> tuple[str, str]:
    """The key line and a name to suggest for it (its comment, else the file's name)."""
    if source == _FROM_STDIN:
        text, fallback = sys.stdin.read(), ""
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {path}: {exc}") from exc
        fallback = path.name.removesuffix(".pub")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise CliError(
            f"{'stdin' if source == _FROM_STDIN else source} must hold one public key line, not {len(lines)}",
            hint="give the .pub file, e.g. ~/.ssh/id_ed25519.pub",
        )
    if "PRIVATE KEY" in lines[0]:
        raise CliError("that is a private key; give the public one (the .pub file)")
    parts = lines[0].split(maxsplit=2)
    comment = parts[2] if len(parts) == 3 else ""
    return lines[0], comment or fallback


@app.command("add")
def add(
    source: Annotated[
        str,
        typer.Argument(metavar="FILE", help="A public key file (e.g. ~/.ssh/id_ed25519.pub); - reads stdin."),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="A name for the key; default: its comment or file name.")
    ] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register a public key: the SSH gateway then lets it in to your workspaces."""
    line, suggested = _read_key(source)
    if name is None and not suggested:
        raise CliError("the key has no comment to name it by", hint="give it a name with --name")
    request = build_request(
        m.CreateSshKeyRequest,
        names={"name": "--name", "public_key": "FILE"},
        name=name or suggested,
        public_key=line,
    )
    with config.session() as client:
        key = client.add_ssh_key("me", request)
    if output_format is OutputFormat.JSON:
        output.print_json(key)
        return
    output.message(f"Added SSH key {key.name} ({key.fingerprint})")


@app.command("list")
def list_keys(output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List your registered public keys."""
    with config.session() as client:
        keys = client.list_ssh_keys("me")
    output.emit(
        keys,
        output_format,
        columns=_KEY_COLUMNS,
        rows=keys,
        empty="No SSH keys; add one with `dockyard ssh-keys add ~/.ssh/id_ed25519.pub`.",
    )


@app.command("remove")
def remove(
    key: Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="The key's id or name.")],
) -> None:
    """Remove a registered public key."""
    with config.session() as client:
        keys = client.list_ssh_keys("me")
        found = next((k for k in keys if k.id == key), None) or next((k for k in keys if k.name == key), None)
        if found is None:
            raise CliError(f"you have no SSH key {key!r}", hint="list them with `dockyard ssh-keys list`")
        client.remove_ssh_key("me", found.id)
    output.message(f"Removed SSH key {found.name} ({found.fingerprint})")

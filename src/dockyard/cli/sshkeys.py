"""SSH client setup: `dockyard ssh-keys add | list | remove`, `ssh-cert` and `config-ssh`, and the CLI's own SSH
key and certificate.

The CLI keeps one ed25519 key pair in `<config dir>/ssh/` and asks the server's certificate authority to sign it
for a few hours at a time (`id_ed25519-cert.pub`). The gateway trusts the certificate, so nothing has to be
registered, and `known_hosts` pins the CA that signs the gateway's host key, so no host key prompt ever appears.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard.sdk import Client
from dockyard.sdk import models as m
from dockyard.units import parse_duration

if sys.platform != "win32":
    import fcntl

app = typer.Typer(help="Register SSH public keys for the SSH gateway.", no_args_is_help=True)

KEY_NAME = "id_ed25519"
# A certificate with less than this left is renewed before it is used.
RENEW_BEFORE = timedelta(hours=1)
_FROM_STDIN = "-"
_CERT_TYPE = b"ssh-ed25519-cert-v01@openssh.com"


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
    keygen = shutil.which("ssh-keygen")
    if keygen is not None:
        staging = files.folder / f".{KEY_NAME}.{os.getpid()}"
        for path in (staging, staging.with_name(staging.name + ".pub")):
            path.unlink(missing_ok=True)
        result = subprocess.run(
            [keygen, "-t", "ed25519", "-N", "", "-q", "-C", "dockyard", "-f", str(staging)],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise CliError("ssh-keygen failed", detail=result.stderr.decode(errors="replace").strip())
        private, public = staging.read_bytes(), staging.with_name(staging.name + ".pub").read_bytes()
        staging.unlink()
        staging.with_name(staging.name + ".pub").unlink()
    else:
        # Without OpenSSH's tools (a minimal container) the key is made in process; only ssh-keygen's
        # comment differs.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = (
            key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            + b" dockyard\n"
        )
    # The public half first: a private key without its .pub would be taken for a finished pair.
    write_private(files.public_key, public)
    write_private(files.private_key, private)
    files.certificate.unlink(missing_ok=True)


def ensure_key_pair(files: KeyFiles) -> None:
    if not (files.private_key.exists() and files.public_key.exists()):
        _generate(files)


def _strings(blob: bytes, offset: int, count: int) -> tuple[list[bytes], int]:
    values = []
    for _ in range(count):
        (length,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise ValueError("truncated")
        values.append(blob[offset : offset + length])
        offset += length
    return values, offset


@dataclass(frozen=True)
class CertificateInfo:
    public_key: bytes  # the certified ed25519 key, 32 bytes
    principals: list[str]
    valid_after: datetime
    valid_before: datetime
    ca_key: bytes  # the signing key's wire blob


def parse_certificate(line: str) -> CertificateInfo:
    """The fields of an `ssh-ed25519-cert-v01@openssh.com` line (PROTOCOL.certkeys), to check it locally."""
    try:
        blob = base64.b64decode(line.split()[1], validate=True)
        (kind, _nonce, key), offset = _strings(blob, 0, 3)
        if kind != _CERT_TYPE:
            raise ValueError(f"not an ed25519 certificate: {kind[:40]!r}")
        offset += 8 + 4  # serial, type
        (_key_id, principals_blob), offset = _strings(blob, offset, 2)
        after, before = struct.unpack_from(">QQ", blob, offset)
        offset += 16
        (_critical, _extensions, _reserved, ca_key), _ = _strings(blob, offset, 4)
        principals, position = [], 0
        while position < len(principals_blob):
            (name,), position = _strings(principals_blob, position, 1)
            principals.append(name.decode())
    except (IndexError, ValueError, struct.error) as exc:
        raise ValueError(f"not an OpenSSH certificate: {exc}") from exc
    # 2**64 - 1 means "forever"; datetime stops at year 9999.
    limit = datetime(9999, 1, 1, tzinfo=UTC)
    return CertificateInfo(
        public_key=key,
        principals=principals,
        valid_after=min(datetime.fromtimestamp(min(after, 2**37), UTC), limit),
        valid_before=min(datetime.fromtimestamp(min(before, 2**37), UTC), limit),
        ca_key=ca_key,
    )


def _key_blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


def _ed25519_key(public_line: str) -> bytes:
    """The 32 key bytes of an `ssh-ed25519 AAAA…` line."""
    (_kind, key), _ = _strings(_key_blob(public_line), 0, 2)
    return key


def certificate_usable(files: KeyFiles, *, ca_public_key: str | None, margin: timedelta) -> bool:
    """The certificate exists, certifies our key, is signed by `ca_public_key` (when given) and has at least
    `margin` left."""
    try:
        info = parse_certificate(files.certificate.read_text())
        ours = _ed25519_key(files.public_key.read_text())
        ca = _key_blob(ca_public_key) if ca_public_key else info.ca_key
    except (OSError, ValueError, IndexError, struct.error):
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


# --- ssh_config ------------------------------------------------------------------------------------------------


def dockyard_command() -> str:
    """This program as a shell command, for the ProxyCommand that SSH clients run."""
    argv0 = sys.argv[0]
    if Path(argv0).name.startswith("dockyard") and Path(argv0).is_file():
        return shlex.quote(os.path.abspath(argv0))
    found = shutil.which("dockyard")
    if found is not None:
        return shlex.quote(os.path.abspath(found))
    return f"{shlex.quote(sys.executable)} -c 'from dockyard.cli.main import main; main()'"


def ssh_path(path: Path) -> str:
    """A path as ssh_config and `ssh -o` read it: % is a token there, and a space splits a value."""
    text = str(path).replace("%", "%%")
    return f'"{text}"' if any(c.isspace() for c in text) else text


# --- config-ssh ------------------------------------------------------------------------------------------------

BLOCK_START = "# ------------START-DOCKYARD------------"
BLOCK_END = "# ------------END-DOCKYARD------------"


@dataclass(frozen=True)
class SshConfigSettings:
    server: str
    command: str  # this program as a shell command
    prefix: str
    host_key_alias: str
    known_hosts: Path
    certificate: Path
    identity: Path


def render_block(workspaces: Sequence[str], settings: SshConfigSettings) -> str:
    """The marked block of ssh_config: one Host per workspace, then the options they share."""
    lines = [
        BLOCK_START,
        f"# Written by `dockyard config-ssh` for {settings.server}; run it again to update this block.",
        "# Changes inside the markers are overwritten.",
    ]
    for name in sorted(workspaces):
        proxy = f"{settings.command} ssh --stdio {shlex.quote(name)}".replace("%", "%%")
        lines += [f"Host {settings.prefix}{name}", f"  User {name}", f"  ProxyCommand {proxy}", ""]
    lines += [
        f"Host {settings.prefix}*",
        f"  HostKeyAlias {settings.host_key_alias}",
        f"  UserKnownHostsFile {ssh_path(settings.known_hosts)}",
        "  StrictHostKeyChecking yes",
        f"  CertificateFile {ssh_path(settings.certificate)}",
        f"  IdentityFile {ssh_path(settings.identity)}",
        "  IdentitiesOnly yes",
        "  ServerAliveInterval 30",
        BLOCK_END,
    ]
    return "\n".join(lines) + "\n"


def apply_block(existing: str, block: str) -> str:
    """`existing` with its marked block replaced by `block` (or `block` appended); the rest byte for byte."""
    lines = existing.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BLOCK_START]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BLOCK_END]
    if not starts and not ends:
        if not existing:
            return block
        return existing + ("" if existing.endswith("\n") else "\n") + "\n" + block
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(
            f"its Dockyard markers are out of order: {len(starts)} START and {len(ends)} END line(s)"
        )
    return "".join(lines[: starts[0]]) + block + "".join(lines[ends[0] + 1 :])


def _prefix(value: str) -> str:
    if not value or re.search(r"[\s*?!,#\"]", value):
        raise typer.BadParameter(
            "must be non-empty, without spaces or ssh pattern characters", param_hint="--host-prefix"
        )
    return value


def _own_workspaces(client: Client) -> list[str]:
    names: list[str] = []
    while True:
        page = client.list_workspaces(owner="me", limit=500, offset=len(names))
        names += [w.name for w in page.workspaces if w.status is not m.WorkspaceStatus.DELETED]
        if not page.workspaces or len(names) >= page.count:
            return names


def _diff(before: str, after: str, path: Path) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), str(path), str(path)
        )
    )


def _write_config(path: Path, content: str) -> None:
    # A symlinked config (dotfile managers) is written where it points, not replaced by a plain file.
    target = path.resolve() if path.is_symlink() else path
    folder = target.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
    temporary = target.with_name(f".{target.name}.dockyard-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(content)
    os.replace(temporary, target)


def config_ssh(
    ssh_config: Annotated[
        Path | None,
        typer.Option("--ssh-config", dir_okay=False, help="The file to edit; default: ~/.ssh/config."),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--host-prefix", help="Host names are this + the workspace name.")
    ] = "dockyard.",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the change as a diff and write nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Write without asking.")] = False,
) -> None:
    """Add a Host entry per workspace to your SSH config, for `ssh dockyard.NAME`, VS Code and JetBrains."""
    prefix = _prefix(prefix)
    path = ssh_config if ssh_config is not None else Path.home() / ".ssh" / "config"
    try:
        # Bytes decoded as they are: text mode would turn CRLF into LF all through the user's file.
        before = path.read_bytes().decode("utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    if not dry_run and not yes and not sys.stdin.isatty():
        # A prompt nobody can answer would hang a script.
        raise CliError(
            f"not changing {path} without confirmation", hint="pass --yes, or --dry-run to see the change"
        )
    credentials = config.credentials()
    with config.connect(credentials.url, credentials.token) as client:
        names = _own_workspaces(client)
        if dry_run:
            gateway, files = client.ssh_gateway(), key_files()
        else:
            setup = ensure_certificate(client)
            gateway, files = setup.gateway, setup.files
    settings = SshConfigSettings(
        server=credentials.url,
        command=dockyard_command(),
        prefix=prefix,
        host_key_alias=gateway.host_key_alias,
        known_hosts=files.known_hosts,
        certificate=files.certificate,
        identity=files.private_key,
    )
    try:
        after = apply_block(before, render_block(names, settings))
    except ValueError as exc:
        raise CliError(
            f"cannot update {path}: {exc}", hint="fix the markers by hand, then run this again"
        ) from exc
    if after == before:
        output.message(f"No changes to {path}")
        return
    change = _diff(before, after, path)
    if dry_run:
        typer.echo(change, nl=False)
        return
    if not yes:
        output.message(change.rstrip("\n"))
        typer.confirm(f"Write these changes to {path}?", abort=True, err=True)
    _write_config(path, after)
    hosts = ", ".join(f"{prefix}{name}" for name in sorted(names)) or "no workspaces yet"
    output.message(f"Updated {path}: {hosts}")
    if names:
        output.message(f"Connect with `ssh {prefix}{sorted(names)[0]}`")
    if os.environ.get(config.ENV_TOKEN) or os.environ.get(config.ENV_URL):
        output.warning(
            f"{config.ENV_URL}/{config.ENV_TOKEN} are set here; SSH clients run the ProxyCommand with their own "
            "environment"
        )

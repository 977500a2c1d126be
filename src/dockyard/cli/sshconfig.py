"""`dockyard config-ssh`: a marked block in ~/.ssh/config so that plain `ssh dockyard.<workspace>`, scp,
rsync, VS Code Remote-SSH and JetBrains Gateway reach workspaces through `dockyard ssh --stdio`."""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli import config, output, sshkeys
from dockyard.cli.errors import CliError
from dockyard.sdk import Client
from dockyard.sdk import models as m


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
            gateway, files = client.ssh_gateway(), sshkeys.key_files()
        else:
            setup = sshkeys.ensure_certificate(client)
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

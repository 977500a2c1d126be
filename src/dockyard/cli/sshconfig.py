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
from dockyard_sdk import Client
from dockyard_sdk import models as m


def dockyard_command() -> str:
    """This program as a shell command, for the ProxyCommand that SSH clients run."""
    argv0 = sys.argv[0]
    if Path(argv0).name.startswith("dockyard") and Path(argv0).is_file():
        return shlex.quote(os.path.abspath(argv0))
    found = shutil.which("dockyard")
    if found is not None:
        return shlex.quote(os.path.abspath(found))
    return f"{shlex.quote(sys.executable)} -c 'from dockyard.cli.entry import main; main()'"


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
    options: tuple[str, ...] = ()  # "Key value" lines from --ssh-option


def render_block(settings: SshConfigSettings) -> str:
    """The marked block of ssh_config: one wildcard Host for every workspace, now and later.

    The ProxyCommand gets the host name (`%h`) and strips the prefix itself, so a workspace created after this
    block was written is reachable without writing it again, and a deleted one leaves nothing behind. The
    user's own options come first: ssh takes the first value it reads for an option.
    """
    proxy = f"{settings.command} ssh --stdio --host-prefix {shlex.quote(settings.prefix)}".replace("%", "%%")
    return (
        "\n".join(
            [
                BLOCK_START,
                f"# Written by `dockyard config-ssh` for {settings.server}; run it again to update this block.",
                "# Changes inside the markers are overwritten.",
                f"Host {settings.prefix}*",
                *(f"  {option}" for option in settings.options),
                f"  ProxyCommand {proxy} %h",
                f"  HostKeyAlias {settings.host_key_alias}",
                f"  UserKnownHostsFile {ssh_path(settings.known_hosts)}",
                "  StrictHostKeyChecking yes",
                f"  CertificateFile {ssh_path(settings.certificate)}",
                f"  IdentityFile {ssh_path(settings.identity)}",
                "  IdentitiesOnly yes",
                "  ServerAliveInterval 30",
                BLOCK_END,
            ]
        )
        + "\n"
    )


def parse_ssh_option(text: str) -> str:
    """`Key=value` or `Key value` (as `ssh -o` takes them) as an ssh_config line; ValueError names the problem."""
    key, value = _split_option(text.strip())
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key) or not value:
        raise ValueError(f"{text!r} is not KEY=VALUE or KEY VALUE (e.g. ForwardAgent=no)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        # A newline would start a line of its own: an option, or a Host, the user never asked for.
        raise ValueError(f"{text!r} holds a control character")
    if key.lower() == "host" or key.lower() == "match":
        raise ValueError(f"{text!r} would start a block of its own; only options go into the Dockyard block")
    return f"{key} {value}"


def _split_option(text: str) -> tuple[str, str]:
    match = re.match(r"([^=\s]*)\s*(?:=\s*|\s+)(.*)$", text, re.DOTALL)
    return (match.group(1), match.group(2).strip()) if match else (text, "")


def remove_block(existing: str) -> str:
    """`existing` without its marked block (and the blank line `apply_block` put before it)."""
    lines = existing.splitlines(keepends=True)
    starts, ends = _markers(lines)
    if not starts:
        return existing
    before = "".join(lines[: starts[0]])
    after = "".join(lines[ends[0] + 1 :])
    if not after and before.endswith("\n\n"):
        before = before[:-1]
    return before + after


def _markers(lines: list[str]) -> tuple[list[int], list[int]]:
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BLOCK_START]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BLOCK_END]
    if (starts or ends) and (len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]):
        raise ValueError(
            f"its Dockyard markers are out of order: {len(starts)} START and {len(ends)} END line(s)"
        )
    return starts, ends


def apply_block(existing: str, block: str) -> str:
    """`existing` with its marked block replaced by `block` (or `block` appended); the rest byte for byte."""
    lines = existing.splitlines(keepends=True)
    starts, ends = _markers(lines)
    if not starts:
        if not existing:
            return block
        return existing + ("" if existing.endswith("\n") else "\n") + "\n" + block
    return "".join(lines[: starts[0]]) + block + "".join(lines[ends[0] + 1 :])


def _prefix(value: str) -> str:
    if not value or re.search(r"[\s*?!,#\"'%\\]", value):
        raise typer.BadParameter(
            "must be non-empty, without spaces or special characters", param_hint="--host-prefix"
        )
    return value


def _ssh_options(values: Sequence[str] | None) -> tuple[str, ...]:
    options, problems = [], []
    for value in values or ():
        try:
            options.append(parse_ssh_option(value))
        except ValueError as exc:
            problems.append(m.ValidationDetail(field="--ssh-option", detail=str(exc)))
    if problems:
        raise CliError("Invalid request.", validations=problems)
    return tuple(options)


def _own_workspaces(client: Client) -> list[str]:
    """Your workspaces' names now, for the hint only: the block itself names none."""
    page = client.list_workspaces(owner="me", limit=20)
    return sorted(w.name for w in page.workspaces if w.status is not m.WorkspaceStatus.DELETED)


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
    ssh_options: Annotated[
        list[str] | None,
        typer.Option(
            "--ssh-option",
            "-o",
            metavar="KEY=VALUE",
            help="An extra ssh_config option for the Dockyard hosts (ahead of Dockyard's own); repeat for more.",
        ),
    ] = None,
    remove: Annotated[
        bool, typer.Option("--remove", help="Remove the Dockyard block from the file instead.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the change as a diff and write nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Write without asking.")] = False,
) -> None:
    """Add a `Host dockyard.*` entry to your SSH config, for `ssh dockyard.NAME`, VS Code and JetBrains."""
    prefix = _prefix(prefix)
    options = _ssh_options(ssh_options)
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
    names: list[str] = []
    block = ""
    if not remove:
        settings, names = _settings(prefix, options, dry_run=dry_run)
        block = render_block(settings)
    try:
        after = remove_block(before) if remove else apply_block(before, block)
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
    if remove:
        output.message(f"Removed the Dockyard block from {path}")
        return
    output.message(f"Updated {path}: `ssh {prefix}NAME` reaches each of your workspaces, new ones too")
    if names:
        output.message(f"Connect with `ssh {prefix}{names[0]}`")
    if os.environ.get(config.ENV_TOKEN) or os.environ.get(config.ENV_URL):
        output.warning(
            f"{config.ENV_URL}/{config.ENV_TOKEN} are set here; SSH clients run the ProxyCommand with their own "
            "environment"
        )


def _settings(prefix: str, options: tuple[str, ...], *, dry_run: bool) -> tuple[SshConfigSettings, list[str]]:
    """What the block needs from the server (the gateway's host key alias, a certificate), and your workspaces'
    names for the hint."""
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
        options=options,
    )
    return settings, names

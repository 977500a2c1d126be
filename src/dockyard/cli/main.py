"""Entry point: `dockyard …`.

Commands are loaded when they run, not when the program starts: each command's module imports the SDK's wire
models, and building those (pydantic) costs more than the rest of a short command. `dockyard --help` lists the
commands from the table below without importing any of them; a test holds each summary to its command's own help.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_from_info, get_group
from typer.models import CommandInfo

from dockyard.cli.errors import CliError

# Server-side commands keep Typer's own handling: an operator whose server fails to start needs the traceback.
_SERVER_COMMANDS = {"server", "db", "provisioner", "images", "gateway"}
_WORKSPACES = "Workspaces"
_CONNECT = "Connecting"


@dataclass(frozen=True)
class Entry:
    """Where a command lives: `attr` of `dockyard.cli.<module>` is a command function, or a Typer app of
    subcommands when `group` is set."""

    module: str
    attr: str
    summary: str
    panel: str | None = None
    group: bool = False


COMMANDS: dict[str, Entry] = {
    "login": Entry(
        "auth", "login", "Log in to a Dockyard server and store the session token in the config folder."
    ),
    "logout": Entry("auth", "logout", "End the session and forget the stored credentials."),
    "whoami": Entry("auth", "whoami", "Show the user the current credentials belong to."),
    "create": Entry(
        "workspaces",
        "create",
        "Create a workspace from a template and (by default) wait until it runs and its agent is ready.",
        _WORKSPACES,
    ),
    "up": Entry(
        "up",
        "up",
        "Create a workspace from a repository's devcontainer.json, with no template written by hand.",
        _WORKSPACES,
    ),
    "extend": Entry(
        "lifetimes",
        "extend",
        "Move a running workspace's deadline to DURATION from now, without a restart (within the template's"
        " maximum).",
        _WORKSPACES,
    ),
    "schedule": Entry(
        "lifetimes",
        "schedule",
        "Start a stopped workspace on a cron schedule in a time zone (`--off` turns it off).",
        _WORKSPACES,
    ),
    "list": Entry("workspaces", "list_workspaces", "List your workspaces (--all: everyone's).", _WORKSPACES),
    "show": Entry(
        "workspaces",
        "show",
        "Show a workspace: status, parameters and its latest build with the time each phase took.",
        _WORKSPACES,
    ),
    "start": Entry("workspaces", "start", "Start a stopped workspace.", _WORKSPACES),
    "stop": Entry(
        "workspaces", "stop", "Stop a workspace; its home volume is kept for the next start.", _WORKSPACES
    ),
    "restart": Entry(
        "workspaces",
        "restart",
        "Stop a workspace, wait, and start it again (a stopped one is just started).",
        _WORKSPACES,
    ),
    "update": Entry(
        "workspaces",
        "update",
        "Change parameters, template version or TTL; they apply at the workspace's next start.",
        _WORKSPACES,
    ),
    "delete": Entry(
        "workspaces", "delete", "Delete a workspace with its container, network and home volume.", _WORKSPACES
    ),
    "logs": Entry(
        "workspaces", "logs", "Print a build's log (the latest build's unless --build is given).", _WORKSPACES
    ),
    "builds": Entry("workspaces", "builds", "List a workspace's builds, newest first.", _WORKSPACES),
    "egress": Entry(
        "egress",
        "egress",
        "Show a workspace's egress log: connections its allow-list let through or refused, newest first.",
        _WORKSPACES,
    ),
    "cancel": Entry("workspaces", "cancel", "Cancel the workspace's build in progress.", _WORKSPACES),
    "exec": Entry(
        "connect",
        "exec_command",
        "Run a command in a workspace, streaming its output; exits with the command's exit code.",
        _CONNECT,
    ),
    "ssh": Entry(
        "connect",
        "ssh",
        "Open an SSH session to a workspace (starting it when stopped), with OpenSSH's own client.",
        _CONNECT,
    ),
    "port-forward": Entry(
        "forward", "port_forward", "Forward local TCP ports to ports in a workspace until Ctrl-C.", _CONNECT
    ),
    "open": Entry(
        "apps",
        "open_app",
        "Print the URL of a workspace app (or the workspace's dashboard page) and open it in a browser.",
        _CONNECT,
    ),
    "config-ssh": Entry(
        "sshconfig",
        "config_ssh",
        "Add a `Host dockyard.*` entry to your SSH config, for `ssh dockyard.NAME`, VS Code and JetBrains.",
        _CONNECT,
    ),
    "ssh-cert": Entry(
        "sshkeys",
        "ssh_cert",
        "Get a new SSH certificate for the CLI's key (made when missing) from the server's CA.",
        _CONNECT,
    ),
    "ssh-keys": Entry(
        "sshkeys", "app", "Register SSH public keys for the SSH gateway.", _CONNECT, group=True
    ),
    "git-auth": Entry(
        "gitauth",
        "app",
        "Register credentials for git hosts; workspaces' git receives them only when it needs them.",
        _CONNECT,
        group=True,
    ),
    "webhooks": Entry(
        "webhooks", "app", "Post task and workspace status changes to your own endpoints.", group=True
    ),
    "templates": Entry("templates", "app", "Push and inspect templates.", group=True),
    "prebuilds": Entry(
        "prebuilds",
        "prebuilds",
        "List warm workspace pools (prebuilds): each preset's desired, ready and building members.",
    ),
    "devcontainer": Entry(
        "devcontainer", "app", "Dev container configurations (devcontainer.json).", group=True
    ),
    "tokens": Entry("tokens", "app", "Create, list and revoke API tokens.", group=True),
    "users": Entry("users", "app", "Manage users (owners only).", group=True),
    "server": Entry("server", "server", "Run the Dockyard control plane (API server)."),
    "db": Entry("server", "db_app", "Database maintenance.", group=True),
    "provisioner": Entry(
        "server", "provisioner", "Run provisioner workers alone, against the same database as the server."
    ),
    "gateway": Entry(
        "server",
        "gateway",
        "Run the SSH gateway alone, against the same database as the server and reaching agents through it.",
    ),
    "doctor": Entry(
        "doctor", "doctor", "Check the runtime and host firewall; list drifted workspaces and orphans."
    ),
    "images": Entry("images", "app", "Workspace images in the local Docker engine.", group=True),
    "mcp": Entry(
        "mcp",
        "mcp",
        "Serve Dockyard's MCP tools on stdin/stdout (for Claude Code, Cursor and other MCP hosts).",
    ),
}


def load(name: str, entry: Entry) -> Any:
    """The real click command behind a table entry."""
    target = getattr(importlib.import_module(f"dockyard.cli.{entry.module}"), entry.attr)
    if entry.group:
        group = get_group(target)
        group.name = name
        group.rich_help_panel = entry.panel
        return group
    info = CommandInfo(name=name, callback=target, rich_help_panel=entry.panel)
    return get_command_from_info(
        info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
    )


def _api_error(exc: BaseException) -> Any:
    """`exc` as the SDK's ApiError, or None; without importing the SDK when no command has (then it can't be one)."""
    errors = sys.modules.get("dockyard_sdk.errors")
    return exc if errors is not None and isinstance(exc, errors.ApiError) else None


class DockyardGroup(TyperGroup):
    """Loads commands on first use, and turns the errors a user can act on into `error: …` lines and exit code 1;
    only bugs get tracebacks."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if self._listing:
            # Enough for the help page's command table; the command itself loads only when it runs.
            return TyperCommand(cmd_name, help=entry.summary, rich_help_panel=entry.panel)
        command = load(cmd_name, entry)
        self.commands[cmd_name] = command
        return command

    # `Any`: the base class takes Typer's private vendored click Context, which this module should not import.
    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx: Any) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except CliError as exc:
            _report(exc)
        except typer.Abort as exc:
            # A prompt turns Ctrl-C into Abort; it still means "interrupted", which exits 130.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise typer.Exit(130) from exc
            raise
        except (typer.TyperException, typer.Exit, BrokenPipeError):
            # Usage errors and exits are Typer's to render; a closed pipe (`| head`) is not an error at all.
            raise
        except Exception as exc:
            api_error = _api_error(exc)
            if api_error is not None:
                if debug:
                    _message(f"debug: {api_error.method} {api_error.url} -> {api_error.status_code}")
                _report(api_error)
            # The outermost boundary: anything else is a bug. --debug lets it through to Typer, whose
            # traceback shows no local variables, so a token in a local cannot leak into a bug report.
            elif debug or ctx.invoked_subcommand in _SERVER_COMMANDS:
                raise
            else:
                from dockyard.cli import output

                output.error(
                    f"unexpected {type(exc).__name__}: {exc}", hint="run again with --debug for a traceback"
                )
        raise typer.Exit(1)


def _report(exc: Any) -> None:
    from dockyard.cli import output

    output.error(exc.message, detail=exc.detail, validations=exc.validations, hint=exc.hint)


def _message(text: str) -> None:
    from dockyard.cli import output

    output.message(text)


app = typer.Typer(
    name="dockyard",
    cls=DockyardGroup,
    help="Dockyard: self-hosted cloud development environments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and the failing request.")] = False,
) -> None:
    """Dockyard: self-hosted cloud development environments."""


def main() -> None:
    # The CLI uses no pydantic plugin, and looking for them reads every installed distribution's metadata when the
    # first model is built: tens of milliseconds of a command's start-up.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    app()

"""The table of `dockyard` commands: where each one lives and the one-line summary `dockyard --help` shows.

Standard library only: `dockyard --help` is rendered from this table (cli/helptext.py) without importing Typer
or any command's module; a test holds each summary to its command's own help.
"""

from __future__ import annotations

from typing import NamedTuple

SUMMARY = "Dockyard: self-hosted cloud development environments."
DEBUG_HELP = "Show tracebacks and the failing request."
_WORKSPACES = "Workspaces"
_CONNECT = "Connecting"


# A NamedTuple rather than a dataclass: `dataclasses` imports `inspect`, a good part of `--help`'s start.
class Entry(NamedTuple):
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

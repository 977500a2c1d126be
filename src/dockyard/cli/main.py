"""Entry point: `dockyard …`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from dockyard.cli import (
    auth,
    connect,
    devcontainer,
    doctor,
    forward,
    gitauth,
    images,
    mcp,
    output,
    server,
    sshconfig,
    sshkeys,
    templates,
    tokens,
    users,
    webhooks,
    workspaces,
)
from dockyard.cli.errors import CliError
from dockyard_sdk import ApiError

# Server-side commands keep Typer's own handling: an operator whose server fails to start needs the traceback.
_SERVER_COMMANDS = {"server", "db", "provisioner", "images", "gateway"}


class DockyardGroup(TyperGroup):
    """Turns the errors a user can act on into `error: …` lines and exit code 1; only bugs get tracebacks."""

    # `Any`: the base class takes Typer's private vendored click Context, which this module should not import.
    def invoke(self, ctx: Any) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            if debug:
                output.message(f"debug: {exc.method} {exc.url} -> {exc.status_code}")
            output.error(exc.message, detail=exc.detail, validations=exc.validations, hint=exc.hint)
        except CliError as exc:
            output.error(exc.message, detail=exc.detail, validations=exc.validations, hint=exc.hint)
        except typer.Abort as exc:
            # A prompt turns Ctrl-C into Abort; it still means "interrupted", which exits 130.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise typer.Exit(130) from exc
            raise
        except (typer.TyperException, typer.Exit, BrokenPipeError):
            # Usage errors and exits are Typer's to render; a closed pipe (`| head`) is not an error at all.
            raise
        except Exception as exc:
            # The outermost boundary: anything else is a bug. --debug lets it through to Typer, whose
            # traceback shows no local variables, so a token in a local cannot leak into a bug report.
            if debug or ctx.invoked_subcommand in _SERVER_COMMANDS:
                raise
            output.error(
                f"unexpected {type(exc).__name__}: {exc}", hint="run again with --debug for a traceback"
            )
        raise typer.Exit(1)


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


app.command("login")(auth.login)
app.command("logout")(auth.logout)
app.command("whoami")(auth.whoami)
_WORKSPACES = "Workspaces"
app.command("create", rich_help_panel=_WORKSPACES)(workspaces.create)
app.command("list", rich_help_panel=_WORKSPACES)(workspaces.list_workspaces)
app.command("show", rich_help_panel=_WORKSPACES)(workspaces.show)
app.command("start", rich_help_panel=_WORKSPACES)(workspaces.start)
app.command("stop", rich_help_panel=_WORKSPACES)(workspaces.stop)
app.command("restart", rich_help_panel=_WORKSPACES)(workspaces.restart)
app.command("update", rich_help_panel=_WORKSPACES)(workspaces.update)
app.command("delete", rich_help_panel=_WORKSPACES)(workspaces.delete)
app.command("logs", rich_help_panel=_WORKSPACES)(workspaces.logs)
app.command("builds", rich_help_panel=_WORKSPACES)(workspaces.builds)
app.command("cancel", rich_help_panel=_WORKSPACES)(workspaces.cancel)
_CONNECT = "Connecting"
app.command("exec", rich_help_panel=_CONNECT)(connect.exec_command)
app.command("ssh", rich_help_panel=_CONNECT)(connect.ssh)
app.command("port-forward", rich_help_panel=_CONNECT)(forward.port_forward)
app.command("config-ssh", rich_help_panel=_CONNECT)(sshconfig.config_ssh)
app.command("ssh-cert", rich_help_panel=_CONNECT)(sshkeys.ssh_cert)
app.add_typer(sshkeys.app, name="ssh-keys", rich_help_panel=_CONNECT)
app.add_typer(gitauth.app, name="git-auth", rich_help_panel=_CONNECT)
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(templates.app, name="templates")
app.add_typer(devcontainer.app, name="devcontainer")
app.add_typer(tokens.app, name="tokens")
app.add_typer(users.app, name="users")
app.command("server")(server.server)
app.add_typer(server.db_app, name="db")
app.command("provisioner")(server.provisioner)
app.command("gateway")(server.gateway)
app.command("doctor")(doctor.doctor)
app.add_typer(images.app, name="images")
app.command("mcp")(mcp.mcp)


def main() -> None:
    app()

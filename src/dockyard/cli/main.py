"""Entry point: `dockyard …`.

Commands are loaded when they run, not when the program starts: each command's module imports the SDK's wire
models, and building those (pydantic) costs more than the rest of a short command. `dockyard --help` lists the
commands from their table (cli/commands.py) without importing any of them, and without Typer at all when it is
the only argument (cli/entry.py); a test holds each summary to its command's own help.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group
from typer.models import CommandInfo

from dockyard.cli import helptext
from dockyard.cli.commands import COMMANDS, DEBUG_HELP, SUMMARY, Entry
from dockyard.cli.errors import CliError

# Server-side commands keep Typer's own handling: an operator whose server fails to start needs the traceback.
_SERVER_COMMANDS = {"server", "db", "provisioner", "images", "gateway"}

__all__ = ["COMMANDS", "Entry", "app", "load", "main"]


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

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = load(cmd_name, entry)
        self.commands[cmd_name] = command
        return command

    # `Any`: the base class takes Typer's private vendored click Context, which this module should not import.
    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The page `dockyard --help` prints before Typer is imported (cli/entry.py), so both look the same.
        # Printed, not written to `formatter`, as Typer's Rich pages are: the no-command error shows nothing else.
        helptext.show(sys.stdout)

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
    help=SUMMARY,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Dockyard: self-hosted cloud development environments."""


def main() -> None:
    # The CLI uses no pydantic plugin, and looking for them reads every installed distribution's metadata when the
    # first model is built: tens of milliseconds of a command's start-up.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    app()

"""Entry point: `dockyard …`."""

from __future__ import annotations

import typer

from dockyard.cli import server

app = typer.Typer(
    name="dockyard",
    help="Dockyard: self-hosted cloud development environments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("server")(server.server)
app.add_typer(server.db_app, name="db")


def main() -> None:
    app()

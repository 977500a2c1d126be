"""`dockyard git-auth add | list | remove`: credentials for git hosts, brokered to workspaces' git."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError, build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import models as m

app = typer.Typer(
    help="Register credentials for git hosts; workspaces' git receives them only when it needs them.",
    no_args_is_help=True,
)


@app.command("add")
def add(
    host: Annotated[str, typer.Argument(metavar="HOST", help="The git host, e.g. github.com or host:8443.")],
    username: Annotated[
        str, typer.Option("--username", help="The user name git sends (hosts taking a token accept any).")
    ] = "x-access-token",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the token or password from stdin.")
    ] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register (or replace) the credential for HOST. The token is read from stdin or asked for; it never
    appears on the command line, where other local users could see it."""
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"Token or password for {host}", hide_input=True, err=True)
    if not password:
        raise CliError("no token or password given", hint="pipe it in: `dockyard git-auth add HOST < file`")
    request = build_request(
        m.CreateGitAuthRequest,
        names={"host": "HOST", "username": "--username", "password": "password"},
        host=host,
        username=username,
        password=password,
    )
    with config.session() as client:
        created = client.add_git_auth(request)
    if output_format is OutputFormat.JSON:
        output.print_json(created)
        return
    output.message(f"Registered a git credential for {created.host} (user {created.username})")


_COLUMNS: list[Column[m.GitAuth]] = [
    Column("HOST", lambda c: c.host),
    Column("USERNAME", lambda c: c.username),
    Column("CREATED", lambda c: output.when(c.created_at)),
    Column("LAST USED", lambda c: output.when(c.last_used_at)),
]


@app.command("list")
def list_git_auth(output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List your git credentials (never their secrets)."""
    with config.session() as client:
        rows = client.list_git_auth()
    output.emit(rows, output_format, columns=_COLUMNS, rows=rows, empty="No git credentials.")


@app.command("remove")
def remove(host: Annotated[str, typer.Argument(metavar="HOST", help="The git host.")]) -> None:
    """Forget the credential for HOST."""
    with config.session() as client:
        client.remove_git_auth(host)
    output.message(f"Removed the git credential for {host}")

"""`dockyard users create | list | quota`."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output, quotas
from dockyard.cli.errors import build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import models as m

app = typer.Typer(help="Manage users (owners only).", no_args_is_help=True)

# Server pages hold at most 1000 users; the CLI follows the pages so a listing is never silently cut short.
_PAGE = 500


@app.command("create")
def create(
    username: Annotated[str, typer.Argument(metavar="USERNAME", help="Login name: a-z, 0-9 and '-'.")],
    email: Annotated[str, typer.Option("--email", help="Email address.")],
    password: Annotated[
        str | None, typer.Option("--password", help="Password (8+ characters); prompted for when not given.")
    ] = None,
    role: Annotated[m.Role, typer.Option("--role", case_sensitive=False, help="What the user may do.")] = (
        m.Role.MEMBER
    ),
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a user."""
    names = {"username": "USERNAME", "email": "--email", "password": "--password", "role": "--role"}
    # Checked before prompting, so a bad name or email is reported before the password is typed twice.
    build_request(m.CreateUserRequest, names=names, username=username, email=email, role=role)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    request = build_request(
        m.CreateUserRequest, names=names, username=username, email=email, password=password, role=role
    )
    with config.session() as client:
        user = client.create_user(request)
    if output_format is OutputFormat.JSON:
        output.print_json(user)
    else:
        output.message(f"Created user {user.username} ({user.role.value})")


@app.command("list")
def list_users(
    search: Annotated[str | None, typer.Option("--search", "-s", help="Part of a username or email.")] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """List users (members see only themselves)."""
    found: list[m.User] = []
    with config.session() as client:
        while True:
            page = client.list_users(q=search, limit=_PAGE, offset=len(found))
            found += page.users
            if not page.users or len(found) >= page.count:
                break
    columns: list[Column[m.User]] = [
        Column("USERNAME", lambda u: u.username),
        Column("EMAIL", lambda u: u.email),
        Column("ROLE", lambda u: u.role.value),
        Column("STATUS", lambda u: u.status.value),
        Column("CREATED", lambda u: output.when(u.created_at)),
        Column("LAST SEEN", lambda u: output.when(u.last_seen_at)),
    ]
    output.emit(
        m.UserList(users=found, count=page.count),
        output_format,
        columns=columns,
        rows=found,
        empty="No users match.",
    )


app.command("quota")(quotas.user_quota)

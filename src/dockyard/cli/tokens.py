"""`dockyard tokens create | list | revoke`."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output, quotas
from dockyard.cli.errors import build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import models as m

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)

UserOption = Annotated[str, typer.Option("--user", help="Whose tokens (name or id); owners only for others.")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the token, unique per user.")],
    lifetime: Annotated[str, typer.Option("--lifetime", help="How long it is valid, e.g. 4h, 30d.")] = "30d",
    scopes: Annotated[
        list[m.Scope] | None,
        typer.Option("--scope", help="A permission to grant; repeat for more. Default: all of yours."),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="What the token may touch: template:NAME or workspace:NAME (or an id); repeat for more. "
            "A bare NAME means template:NAME.",
        ),
    ] = None,
    own_workspaces_only: Annotated[
        bool, typer.Option("--own-workspaces-only", help="See and act on only the workspaces it creates.")
    ] = False,
    git_push: Annotated[
        m.GitPush,
        typer.Option(
            "--git-push",
            help="task-branch: the workspaces it creates push only their task branch (through Dockyard's "
            "git proxy), whatever their template says.",
        ),
    ] = m.GitPush.ANY,
    user: UserOption = "me",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a token and print its secret, which is shown only this once."""
    allow_list = [_typed_entry(entry) for entry in allow or []]
    request = build_request(
        m.CreateTokenRequest,
        names={"name": "NAME", "lifetime": "--lifetime", "scopes": "--scope", "allow_list": "--allow"},
        name=name,
        lifetime=lifetime,
        scopes=scopes or None,
        allow_list=allow_list or None,
        own_workspaces_only=own_workspaces_only or None,
        git_push=git_push,
    )
    with config.session() as client:
        created = client.create_token(request, user=user)
    if output_format is OutputFormat.JSON:
        output.print_json(created)
        return
    # The key alone on stdout, so that `TOKEN=$(dockyard tokens create ci)` captures exactly the secret.
    typer.echo(created.key)
    output.message(f"Created token {created.name} ({created.id}), expires {output.when(created.expires_at)}")
    output.warning("store the token now: it will not be shown again")


def _typed_entry(entry: str) -> str:
    """`--allow NAME` keeps its meaning from before entries were typed: a template. Anything with a kind
    goes as it is (an unknown kind is refused with the field named)."""
    return entry if ":" in entry else f"template:{entry}"


def _listed(values: list[str]) -> str:
    return ", ".join(values) if values else "-"


_TOKEN_COLUMNS: list[Column[m.ApiToken]] = [
    Column("ID", lambda t: t.id),
    Column("NAME", lambda t: t.name),
    Column("SCOPES", lambda t: _listed([s.value for s in t.scopes])),
    Column("ALLOW", lambda t: _listed(t.allow_list)),
    Column("TYPE", lambda t: t.login_type),
    Column("EXPIRES", lambda t: output.when(t.expires_at)),
    Column("LAST USED", lambda t: output.when(t.last_used_at)),
]


@app.command("list")
def list_tokens(user: UserOption = "me", output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List a user's tokens (never their secrets)."""
    with config.session() as client:
        tokens = client.list_tokens(user)
    output.emit(tokens, output_format, columns=_TOKEN_COLUMNS, rows=tokens, empty="No tokens.")


@app.command("revoke")
def revoke(
    token: Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="The token's id or name.")],
    user: UserOption = "me",
) -> None:
    """Revoke a token."""
    with config.session() as client:
        client.revoke_token(token, user=user)
    output.message(f"Revoked token {token}")


app.command("quota")(quotas.token_quota)

"""`dockyard webhooks add | list | remove`: task and workspace status changes posted to your endpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import build_request
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import models as m

app = typer.Typer(help="Post task and workspace status changes to your own endpoints.", no_args_is_help=True)


@app.command("add")
def add(
    url: Annotated[str, typer.Argument(metavar="URL", help="An http:// or https:// URL that takes JSON.")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="One of your tokens (name or id): only events of workspaces created with it."
        ),
    ] = None,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a webhook and print its signing secret, which is shown only this once."""
    request = build_request(
        m.CreateWebhookRequest, names={"url": "URL", "token": "--token"}, url=url, token=token
    )
    with config.session() as client:
        created = client.add_webhook(request)
    if output_format is OutputFormat.JSON:
        output.print_json(created)
        return
    # The secret alone on stdout, so that `SECRET=$(dockyard webhooks add URL)` captures exactly it.
    typer.echo(created.secret)
    output.message(f"Added webhook {created.id} for {created.url}")
    output.warning("store the secret now: it will not be shown again")


_COLUMNS: list[Column[m.Webhook]] = [
    Column("ID", lambda w: w.id),
    Column("URL", lambda w: w.url),
    Column("TOKEN", lambda w: w.token_id or "-"),
    Column("STATUS", lambda w: w.status.value),
    Column("FAILURES", lambda w: str(w.consecutive_failures)),
    Column("LAST DELIVERY", lambda w: output.when(w.last_delivery_at)),
    Column("LAST ERROR", lambda w: w.last_error or "-"),
]


@app.command("list")
def list_webhooks(output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List your webhooks and how their deliveries go."""
    with config.session() as client:
        rows = client.list_webhooks()
    output.emit(rows, output_format, columns=_COLUMNS, rows=rows, empty="No webhooks.")


@app.command("remove")
def remove(webhook: Annotated[str, typer.Argument(metavar="ID", help="The webhook's id.")]) -> None:
    """Stop posting to a webhook."""
    with config.session() as client:
        client.remove_webhook(webhook)
    output.message(f"Removed webhook {webhook}")

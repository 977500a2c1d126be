"""`dockyard server` and `dockyard db migrate`: the only commands that import the server side."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import typer

from dockyard.config import Settings, default_data_dir

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="DOCKYARD_DATA_DIR", help="Where Dockyard keeps its state.")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DOCKYARD_DATABASE_URL",
        help="SQLAlchemy URL; default: SQLite in the data dir. Use postgresql://… in production.",
    ),
]

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


def server(
    listen: Annotated[
        str, typer.Option("--listen", envvar="DOCKYARD_LISTEN", help="HOST:PORT for the HTTP API.")
    ] = "127.0.0.1:3000",
    data_dir: DataDir = default_data_dir(),
    database_url: DatabaseUrl = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log", envvar="DOCKYARD_ACCESS_LOG", help="Log one line per request."
        ),
    ] = True,
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="DOCKYARD_LOG_FORMAT", help="auto, json or console.")
    ] = "auto",
    trusted_proxies: Annotated[
        int,
        typer.Option(
            "--trusted-proxies",
            envvar="DOCKYARD_TRUSTED_PROXIES",
            help="Number of reverse proxies whose X-Forwarded-For to trust.",
        ),
    ] = 0,
) -> None:
    """Run the Dockyard control plane (API server)."""
    import uvicorn

    from dockyard import logs
    from dockyard.api.app import create_app

    logs.configure(log_format)
    settings = Settings(
        listen=listen,
        data_dir=data_dir,
        database_url=database_url,
        access_log=access_log,
        log_format=log_format,
        trusted_proxies=trusted_proxies,
    )
    try:
        host, port = settings.host_port
    except ValueError:
        raise typer.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    # Everything allocated so far lives as long as the process; freezing it keeps the collector from
    # rescanning it, and a higher first threshold trades a little memory for fewer pauses under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    logs.get("dockyard.server").info(
        "listening", url=f"http://{host}:{port}", data_dir=str(settings.data_dir)
    )
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, server_header=False, proxy_headers=False
    )


@db_app.command("migrate")
def migrate_command(data_dir: DataDir = default_data_dir(), database_url: DatabaseUrl = None) -> None:
    """Apply database migrations and exit."""
    from dockyard.store.db import make_engine
    from dockyard.store.migrate import migrate

    settings = Settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    before, after = migrate(engine)
    engine.dispose()
    typer.echo(
        f"database at {after}" + (f" (was {before or 'empty'})" if before != after else " (up to date)"),
        err=True,
    )

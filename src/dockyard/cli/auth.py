"""`dockyard login`, `logout` and `whoami`."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from dockyard.cli import config, output, sshkeys
from dockyard.cli.errors import CliError
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m

# `--token -` keeps the token out of the shell history and the process list.
_FROM_STDIN = "-"


def login(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="The Dockyard server, e.g. https://dockyard.example.com.")
    ],
    token: Annotated[
        str | None,
        typer.Option("--token", help="An API token instead of a password; `-` reads it from stdin."),
    ] = None,
) -> None:
    """Log in to a Dockyard server and store the session token in the config folder."""
    url = config.normalize_url(url)
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("must start with http:// or https://", param_hint="URL")
    if token == _FROM_STDIN:
        token = sys.stdin.readline().strip()
    previous = _stored_quietly()
    with config.connect(url, token or None) as client:
        if not token:
            # Prompts go to stderr: stdout is for data only.
            username = typer.prompt("Username", err=True)
            password = typer.prompt("Password", hide_input=True, err=True)
            token = _password_login(client, username, password)
        user = _me(client)
        problem = _ssh_certificate(client)
    path = config.save(config.Credentials(url=url, token=token))
    if previous is not None and previous.url == url and previous.token != token:
        # Otherwise every login would leave the last session valid on the server until it expires. Only on
        # the same server: another one may be down, and login should not wait for it.
        _end_session(previous)
    output.message(f"Logged in to {url} as {user.username}")
    if problem:
        output.warning(problem)
    if os.environ.get(config.ENV_TOKEN) or os.environ.get(config.ENV_URL):
        output.warning(f"{config.ENV_URL}/{config.ENV_TOKEN} in the environment override {path}")


def _me(client: Client) -> m.User:
    # Any valid token may read its own user, whatever its scopes, so this also checks narrow CI tokens.
    return client.me()


def _password_login(client: Client, username: str, password: str) -> str:
    try:
        return client.login(username, password).token
    except ApiError as exc:
        # The SDK's 401 hint ("run `dockyard login`") would send the user back to where they are.
        if exc.status_code != 401:
            raise
        raise CliError(exc.message, detail=exc.detail) from exc


def _ssh_certificate(client: Client) -> str:
    """Get the CLI's SSH certificate, so that `ssh` and editors connect at once; a problem is only a warning."""
    try:
        sshkeys.ensure_certificate(client)
    except ApiError as exc:
        # 404: a server without SSH support; 403: a token scoped to other things. Neither needs SSH here.
        if exc.status_code in (403, 404):
            return ""
        return f"no SSH certificate: {exc.message}; `dockyard ssh-cert` tries again"
    except ConnectionFailed as exc:
        return f"no SSH certificate: {exc}; `dockyard ssh-cert` tries again"
    except (CliError, OSError, ValueError) as exc:
        return f"no SSH certificate: {getattr(exc, 'message', exc)}; `dockyard ssh-cert` tries again"
    return ""


def _stored_quietly() -> config.Credentials | None:
    try:
        return config.load()
    except CliError:
        return None


def _end_session(stored: config.Credentials) -> str:
    """Ask the server to end a session (it revokes password sessions only); a warning if it could not."""
    try:
        with config.connect(stored.url, stored.token) as client:
            client.logout()
    except ApiError as exc:
        # 401: the token is already invalid, which is what ending the session wants anyway.
        if exc.status_code != 401:
            return f"the server did not end the session: {exc.message}"
    except CliError:
        return f"cannot reach {stored.url}; the session was only forgotten locally"
    return ""


def logout() -> None:
    """End the session and forget the stored credentials."""
    stored = _stored_quietly()
    if stored is not None:
        problem = _end_session(stored)
        if problem:
            output.warning(problem)
    # Removed even when unreadable: logging out is how a user gets rid of a broken config file.
    removed = config.remove()
    if stored is not None:
        output.message(f"Logged out of {stored.url}")
    elif removed:
        output.message(f"Removed the unreadable {config.config_path()}")
    else:
        output.message("Not logged in.")
    if os.environ.get(config.ENV_TOKEN):
        output.warning(f"{config.ENV_TOKEN} is still set in the environment")


def whoami(output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Show the user the current credentials belong to."""
    current = config.credentials()
    with config.connect(current.url, current.token) as client:
        user = client.me()
    columns: list[Column[m.User]] = [
        Column("USERNAME", lambda u: u.username),
        Column("EMAIL", lambda u: u.email),
        Column("ROLE", lambda u: u.role.value),
        Column("URL", lambda u: current.url),
    ]
    output.emit(user, output_format, columns=columns, rows=[user])

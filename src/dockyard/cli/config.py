"""Where the CLI keeps its credentials, and how it builds the SDK client that uses them.

Credentials live in `$XDG_CONFIG_HOME/dockyard/config.json` (default `~/.config/dockyard/`). `DOCKYARD_URL`
and `DOCKYARD_TOKEN` override the stored values, so CI and agents need no file at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.cli.errors import CliError, not_logged_in, unreachable
from dockyard_sdk.credentials import (
    ENV_TOKEN,
    ENV_URL,
    Credentials,
    CredentialsUnreadable,
    config_dir,
    config_path,
    load_stored,
    normalize_url,
    resolve,
)

if TYPE_CHECKING:
    # The SDK's client (httpx, pydantic) is imported when a client is made: `ssh --stdio` reads credentials
    # without it. `dockyard_sdk.credentials` itself is standard library only.
    from dockyard_sdk import Client

__all__ = ["ENV_TOKEN", "ENV_URL", "Credentials", "config_dir", "config_path", "normalize_url"]


def _default_client(url: str, token: str | None) -> Client:
    from dockyard_sdk import Client  # see the TYPE_CHECKING import

    return Client(url, token)


# Tests replace this to reach an in-process server: every request the CLI makes goes through its client.
client_factory: Callable[[str, str | None], Client] = _default_client


def load() -> Credentials | None:
    """The stored credentials, or None when there are none."""
    try:
        return load_stored()
    except CredentialsUnreadable as exc:
        raise CliError(str(exc), hint="run `dockyard login URL` to write it again") from exc


def save(credentials: Credentials) -> Path:
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask and skipped for an existing folder; this one holds secrets.
    directory.chmod(0o700)
    path = config_path()
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    # Created 0600 from the start (a chmod after writing leaves a window); O_EXCL refuses a planted symlink.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": credentials.url, "token": credentials.token}, handle, indent=2)
        handle.write("\n")
    # Renamed into place so that a crash never leaves a half-written file behind.
    os.replace(temporary, path)
    return path


def remove() -> bool:
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def credentials() -> Credentials:
    """The credentials to use: the environment's, else the stored ones; `CliError` when there are none."""
    try:
        url, token = resolve()
    except CredentialsUnreadable as exc:
        raise CliError(str(exc), hint="run `dockyard login URL` to write it again") from exc
    if not url or not token:
        raise not_logged_in()
    return Credentials(url=url, token=token)


@contextmanager
def connect(url: str, token: str | None) -> Iterator[Client]:
    """A client for `url`; an unreachable server becomes a `CliError` naming the URL."""
    from dockyard_sdk import ConnectionFailed  # see the TYPE_CHECKING import

    client = client_factory(url, token)
    try:
        yield client
    except ConnectionFailed as exc:
        raise unreachable(url, exc) from exc
    finally:
        client.close()


@contextmanager
def session() -> Iterator[Client]:
    """A client logged in with the current credentials."""
    current = credentials()
    with connect(current.url, current.token) as client:
        yield client

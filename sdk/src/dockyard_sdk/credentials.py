"""Where a client finds its server and token: the environment, else what `dockyard login` stored.

The CLI keeps its credentials in `$XDG_CONFIG_HOME/dockyard/config.json` (default `~/.config/dockyard/`).
`DOCKYARD_URL` and `DOCKYARD_TOKEN` override the stored values, so CI and agents need no file at all. A stored
token is only ever sent to the server it was issued by, never to a URL taken from the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

ENV_URL = "DOCKYARD_URL"
ENV_TOKEN = "DOCKYARD_TOKEN"  # noqa: S105 - the name of a variable, not a secret


# A NamedTuple rather than a dataclass: `dataclasses` imports `inspect`, a good part of the ProxyCommand's start.
class Credentials(NamedTuple):
    url: str
    token: str


class CredentialsUnreadable(ValueError):
    """The stored credentials file exists but cannot be read or parsed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative value: it would depend on the current directory.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "dockyard"


def config_path() -> Path:
    return config_dir() / "config.json"


def normalize_url(url: str) -> str:
    return url.strip().rstrip("/")


def load_stored() -> Credentials | None:
    """The credentials `dockyard login` stored, or None when there are none."""
    path = config_path()
    try:
        data = json.loads(path.read_text())
        return Credentials(url=normalize_url(str(data["url"])), token=str(data["token"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsUnreadable(path, str(exc)) from exc


def resolve(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """The URL and token to use: the arguments, else the environment, else the stored login.

    Returns the URL ("" when none is known) and the token (None when none applies to that URL).
    """
    stored = load_stored() if not (url and token) else None
    chosen_url = normalize_url(url or os.environ.get(ENV_URL, "")) or (stored.url if stored else "")
    chosen_token = token or os.environ.get(ENV_TOKEN, "").strip() or None
    if chosen_token is None and stored is not None and stored.url == chosen_url:
        chosen_token = stored.token
    return chosen_url, chosen_token

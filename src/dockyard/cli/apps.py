"""`dockyard open WS [APP]`: print an app's URL, and open it in a browser where there is a display."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from dockyard.cli import config
from dockyard.cli.connect import WorkspaceArg
from dockyard.cli.errors import CliError


def has_display() -> bool:
    """A browser can show a page: a desktop session (X11, Wayland) or macOS/Windows, and not over SSH alone."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_app(
    workspace: WorkspaceArg,
    app: Annotated[
        str | None, typer.Argument(help="The app's slug; without it, the workspace's page.")
    ] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the URL.")] = False,
) -> None:
    """Print the URL of a workspace app (or the workspace's dashboard page) and open it in a browser."""
    with config.session() as client:
        found = client.get_workspace(workspace)
        if app is None:
            url = f"{client.url.rstrip('/')}/workspaces/{found.id}"
        else:
            apps = client.list_apps(found.id).apps
            match = next((a for a in apps if a.slug == app), None)
            if match is None:
                known = ", ".join(a.slug for a in apps) or "none"
                raise CliError(f"{workspace} has no app {app!r}", hint=f"its apps: {known}")
            url = match.url
    # Plain stdout (no Rich wrapping): scripts read the URL, and terminals make it clickable.
    sys.stdout.write(url + "\n")
    if not no_browser and has_display():
        import webbrowser

        webbrowser.open(url)

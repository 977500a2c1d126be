"""`dockyard images build-base` and `dockyard images build NAME`: run on the Docker host itself, talking to
its engine rather than to the API."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import output
from dockyard.cli.errors import CliError

app = typer.Typer(help="Workspace images in the local Docker engine.", no_args_is_help=True)


@app.command("build-base")
def build_base(
    force: Annotated[
        bool, typer.Option("--force", help="Import the image again even if the engine already has it.")
    ] = False,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Image tag; default: dockyard/base:bookworm.")
    ] = None,
) -> None:
    """Build the base workspace image from Debian packages, in the local Docker engine."""
    # Imported here: only this command needs the Docker SDK, and the rest of the CLI must start without it.
    from dockyard.runtimes import images
    from dockyard.runtimes.base import RuntimeFailure

    try:
        images.build_base_image(tag or images.BASE_IMAGE, log=output.message, force=force)
    except RuntimeFailure as exc:
        # An engine that is down or a failed bootstrap is the operator's to fix; it needs no traceback.
        raise CliError(exc.message, detail=exc.detail) from exc


@app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="The image recipe: code-server or desktop.")],
    force: Annotated[
        bool, typer.Option("--force", help="Build again even if the engine or the image cache has it.")
    ] = False,
) -> None:
    """Build a workspace image from a recipe (code-server, desktop) on the base image, cached outside the repository.

    The build reaches Debian's mirrors, PyPI and npm through the host's network and takes minutes the first
    time; the image is then kept in the engine and saved to /var/cache/dockyard/images (DOCKYARD_IMAGE_CACHE),
    so a later build is a no-op and a fresh engine loads it instead of building.
    """
    from dockyard.runtimes import recipes
    from dockyard.runtimes.base import RuntimeFailure

    if name not in recipes.RECIPES:
        raise CliError(
            f"unknown image recipe {name!r}",
            detail=f"the recipes are {', '.join(recipes.RECIPES)}",
        )
    try:
        recipes.build_image(name, log=output.message, force=force)
    except RuntimeFailure as exc:
        raise CliError(exc.message, detail=exc.detail) from exc

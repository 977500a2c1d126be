"""The image recipes' cache key and refusals (the builds themselves run in tests/web/test_ide_browser.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dockyard.runtimes import recipes
from dockyard.runtimes.base import ImageBuildFailed


def test_the_key_follows_the_recipe_files_its_versions_and_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(recipes.ROOT / "desktop", tmp_path / "desktop")
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    recipe = recipes.RECIPES["desktop"]
    first = recipes.recipe_key(recipe, base_key="base-1")
    assert first == recipes.recipe_key(recipe, base_key="base-1")
    assert len(first) == 16
    assert recipes.recipe_key(recipe, base_key="base-2") != first
    versioned = recipes.Recipe(recipe.name, recipe.tag, recipe.summary, build_args={"X": "2"})
    assert recipes.recipe_key(versioned, base_key="base-1") != first
    (tmp_path / "desktop" / "Dockerfile").write_text("FROM scratch\n")
    assert recipes.recipe_key(recipe, base_key="base-1") != first


def test_every_template_image_has_a_recipe_folder_with_a_dockerfile() -> None:
    for name, recipe in recipes.RECIPES.items():
        assert (recipe.folder / "Dockerfile").is_file(), name
        assert recipes.TAGS[recipe.tag] == name


def test_an_unknown_recipe_is_refused_by_name() -> None:
    with pytest.raises(ImageBuildFailed) as caught:
        recipes.build_image("vscode", log=lambda line: None)
    assert caught.value.message == "There is no image recipe 'vscode'; the recipes are code-server, desktop."


def test_the_cache_folder_can_be_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKYARD_IMAGE_CACHE", str(tmp_path / "images"))
    assert recipes.default_cache_dir() == tmp_path / "images"


def test_a_missing_recipe_image_names_the_command_that_builds_it_and_is_never_pulled() -> None:
    import docker.errors

    from dockyard.runtimes.base import ImageNotFound
    from dockyard.runtimes.docker import builds

    class Images:
        def get(self, name: str) -> None:
            raise docker.errors.ImageNotFound(name)

    class Api:
        def pull(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("no pull may be attempted for a recipe image")

    class Engine:
        images = Images()
        api = Api()

    with pytest.raises(ImageNotFound) as caught:
        builds.local_or_pull(Engine(), "dockyard/desktop:bookworm", lambda line: None, pull=True)  # type: ignore[arg-type]
    assert caught.value.message == (
        "Image dockyard/desktop:bookworm is not available: build it on the Docker host with "
        "`dockyard images build desktop`"
    )

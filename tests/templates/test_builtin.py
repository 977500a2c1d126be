from __future__ import annotations

import pytest

from dockyard.runtimes import recipes
from dockyard.templates import archive, builtin, manifest, parameters
from dockyard_sdk.manifest import AppShare

# The built-in templates whose image `dockyard images build NAME` makes (the others use the base image).
RECIPE_IMAGES = {"code-server": "dockyard/code-server:bookworm", "desktop": "dockyard/desktop:bookworm"}


@pytest.mark.parametrize("name", builtin.NAMES)
def test_builtin_templates_parse(name: str) -> None:
    parsed = manifest.load(archive.from_directory(builtin.ROOT / name))
    assert parsed.name == name
    assert parsed.image == RECIPE_IMAGES.get(name, "dockyard/base:bookworm")
    if name in RECIPE_IMAGES:
        assert recipes.RECIPES[name].tag == parsed.image
        assert recipes.TAGS[parsed.image] == name


@pytest.mark.parametrize(
    ("name", "slug", "port"), [("code-server", "code", 13337), ("desktop", "desktop", 6080)]
)
def test_ide_templates_serve_their_app_on_loopback_to_the_owner_only(name: str, slug: str, port: int) -> None:
    parsed = manifest.load(archive.from_directory(builtin.ROOT / name))
    (app,) = parsed.apps
    assert (app.slug, app.port, app.share, app.subdomain) == (slug, port, AppShare.OWNER, True)
    assert app.command is not None
    assert f"127.0.0.1:{port}" in app.command or app.command == f"exec dockyard-desktop {port}"
    if name == "code-server":
        # Dockyard authenticates; code-server must not ask for its own password on top.
        assert "--auth none" in app.command


def test_agent_sandbox_accepts_both_request_shapes_from_design() -> None:
    schema = manifest.load(archive.from_directory(builtin.ROOT / "ai-agent-sandbox")).parameters
    first, problems = parameters.validate(
        schema, {"repo": "https://git.example/r.git", "branch": "main", "ttl_hours": "4"}
    )
    assert problems == []
    assert first["ttl_hours"] == 4
    second, problems = parameters.validate(
        schema, {"repo": "r", "task": "Fix the flaky test", "agent": "claude-code"}
    )
    assert problems == []
    assert (second["agent"], second["branch"]) == ("claude-code", "main")

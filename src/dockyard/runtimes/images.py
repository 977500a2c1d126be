"""The base workspace image `dockyard/base:bookworm`, built offline from Debian's packages.

No container registry is needed: mmdebstrap assembles a Debian root filesystem from the package mirror into a
tarball, which the Docker engine imports as an image. The tarball is cached, so a rebuild (or a fresh engine)
costs an import of a few seconds instead of a bootstrap of half a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from dockyard.runtimes.base import ImageBuildFailed, LogSink
from dockyard.runtimes.docker.errors import translate
from dockyard.runtimes.docker.runtime import engine_url

BASE_IMAGE = "dockyard/base:bookworm"
SUITE = "bookworm"
PACKAGES = [
    "python3",
    "git",
    "ca-certificates",
    "curl",
    "sudo",
    "openssh-client",
    "openssh-sftp-server",
    "procps",
    "less",
    "passwd",
    "bash",
    "util-linux",
    "iproute2",
    # rsync over ssh runs `rsync --server` in the workspace.
    "rsync",
]
# The workspace user the templates default to (the plan's home.user / uid). Made in the image, not only at
# container start, so that its home skeleton (.bashrc, .profile) is copied into a fresh home volume.
CUSTOMIZE_HOOKS = ['chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash dev']
ROOTFS_LABEL = "dockyard.rootfs"
CHANGES = [
    'CMD ["/bin/bash"]',
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LABEL dockyard.managed=true",
]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dockyard"


def _rootfs_key(packages: list[str]) -> str:
    # The cached tarball is named after everything that shapes it, so a changed package list never reuses it.
    recipe = json.dumps({"suite": SUITE, "packages": packages, "hooks": CUSTOMIZE_HOOKS}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_rootfs(*, log: LogSink, cache_dir: Path | None = None, packages: list[str] | None = None) -> Path:
    """Return the cached root filesystem tarball, running mmdebstrap first if there is none."""
    packages = packages or PACKAGES
    folder = cache_dir or default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"rootfs-{SUITE}-{_rootfs_key(packages)}.tar"
    if target.exists():
        log(f"Using the cached root filesystem {target}")
        return target
    # Written under a temporary name and renamed, so an interrupted run never leaves a truncated cache entry.
    handle, partial_name = tempfile.mkstemp(dir=folder, prefix=".rootfs-", suffix=".tar")
    os.close(handle)
    partial = Path(partial_name)
    command = [
        "mmdebstrap",
        "--variant=apt",
        "--include=" + ",".join(packages),
        *(f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS),
        SUITE,
        str(partial),
    ]
    log("Running " + " ".join(command[:3]) + " …")
    try:
        # stdin is /dev/null: mmdebstrap reads a sources.list from a non-terminal stdin, and an empty one
        # leaves it on its default mirror.
        with subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as process:
            assert process.stdout is not None
            tail: list[str] = []
            for line in process.stdout:
                line = line.rstrip("\n")
                log(line)
                tail = [*tail[-19:], line]
            code = process.wait()
    except FileNotFoundError as exc:
        partial.unlink(missing_ok=True)
        raise ImageBuildFailed(
            "mmdebstrap is not installed; it builds the base image (apt-get install mmdebstrap)."
        ) from exc
    if code != 0:
        partial.unlink(missing_ok=True)
        raise ImageBuildFailed(f"mmdebstrap failed with exit code {code}.", detail="\n".join(tail))
    partial.chmod(0o644)
    partial.replace(target)
    return target


def build_base_image(
    tag: str = BASE_IMAGE,
    *,
    log: LogSink,
    force: bool = False,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    extra_packages: tuple[str, ...] = (),
) -> None:
    """Make sure the engine has `tag` built from this package list; import it from a (cached) mmdebstrap
    tarball if not, or if `force`. An image from another package list (an older Dockyard) is rebuilt.

    `force` re-imports the image but still reuses the cached tarball; delete that to fetch newer packages.
    """
    packages = [*PACKAGES, *extra_packages]
    key = _rootfs_key(packages)
    url = base_url or engine_url()
    with translate(url):
        client = docker.DockerClient(base_url=url, timeout=600)
    try:
        if not force:
            with translate(url):
                try:
                    existing = client.images.get(tag)
                except docker.errors.ImageNotFound:
                    pass
                else:
                    if (existing.labels or {}).get(ROOTFS_LABEL) == key:
                        log(f"Image {tag} already exists")
                        return
                    log(f"Image {tag} was built from another package list; rebuilding it")
        rootfs = build_rootfs(log=log, cache_dir=cache_dir, packages=packages)
        repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        log(f"Importing {rootfs.name} as {tag}")
        with translate(url):
            try:
                # The import answers with JSON progress lines once the upload is read; log them as they come.
                output = client.api.import_image_from_file(
                    str(rootfs),
                    repository=repository,
                    tag=version,
                    changes=[*CHANGES, f"LABEL {ROOTFS_LABEL}={key}"],
                )
            except requests.exceptions.ReadTimeout as exc:
                raise ImageBuildFailed(f"importing {tag} timed out") from exc
        for line in str(output).splitlines():
            _log_import_line(line, log)
        log(f"Image {tag} is ready")
    finally:
        client.close()


def _log_import_line(line: str, log: LogSink) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        if line.strip():
            log(line.strip())
        return
    if not isinstance(event, dict):
        return
    if "error" in event:
        raise ImageBuildFailed(f"importing the base image failed: {event['error']}")
    text = event.get("status") or event.get("stream") or ""
    if str(text).strip():
        log(str(text).strip())

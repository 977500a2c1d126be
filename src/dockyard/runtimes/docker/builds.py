"""Getting a template's image onto the engine: a local or pulled image, or a Dockerfile build."""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
from typing import Any

import docker
import docker.errors
import docker.utils
import requests.exceptions

from dockyard.runtimes.base import ImageBuildFailed, ImageNotFound, ImageSpec, LogSink
from dockyard.runtimes.docker import naming
from dockyard.runtimes.docker.errors import explanation

# Lines of build output kept for the error's detail when a build fails.
TAIL_LINES = 30


def missing(image: str, why: str) -> ImageNotFound:
    return ImageNotFound(f"Image {image} is not available: {why}")


def local_or_pull(client: docker.DockerClient, image: str, log: LogSink, *, pull: bool) -> str:
    """Return `image` if the engine has it, else pull it, streaming the pull's progress into `log`."""
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pass
    else:
        log(f"Using image {image}")
        return image
    # Imported here: the recipes module builds through this runtime's engine URL.
    from dockyard.runtimes.recipes import TAGS

    if image in TAGS:
        # Built on the host, never published: a pull would only ask a registry for a name it cannot have.
        raise missing(image, f"build it on the Docker host with `dockyard images build {TAGS[image]}`")
    if not pull:
        raise missing(image, "it is not on this engine and pulling is turned off")
    repository, tag = docker.utils.parse_repository_tag(image)
    log(f"Pulling image {image}")
    try:
        for event in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise ImageNotFound(
                    f"Image {image} is not available locally and could not be pulled: {event['error']}"
                )
            _log_status(event, log)
    except docker.errors.APIError as exc:
        if exc.is_server_error() or exc.status_code in (401, 403, 404):
            raise ImageNotFound(
                f"Image {image} is not available locally and could not be pulled: {explanation(exc)}"
            ) from exc
        raise
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise missing(image, "the pull finished but the engine does not list it") from exc
    return image


def build(
    client: docker.DockerClient,
    spec: ImageSpec,
    tag: str,
    log: LogSink,
    *,
    timeout: float,
    labels: dict[str, str] | None = None,
) -> str:
    """Build `spec.dockerfile` from the template archive as `tag`, unless the engine already has `tag`.

    The tag is a hash of what the image is built from, so a deployment may use an image another one built;
    `labels` (the deployment that built it) only inform, since Dockyard never removes images.
    """
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        pass
    else:
        log(f"Using image {tag}, built before from the same template files")
        return tag
    log(f"Building image {tag} from {spec.dockerfile}")
    context = build_context(spec.archive, spec.context)
    output = _BuildOutput(log)
    try:
        stream = client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            encoding="gzip",
            dockerfile=spec.dockerfile,
            tag=tag,
            buildargs=dict(spec.build_args),
            target=spec.target,
            cache_from=list(spec.cache_from) or None,
            labels={naming.LABEL_MANAGED: "true", naming.LABEL_TEMPLATE: spec.template, **(labels or {})},
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            timeout=timeout,
        )
        for event in stream:
            output.feed(event)
    except docker.errors.APIError as exc:
        # The engine refuses some builds before any step runs (a Dockerfile missing from the context).
        if exc.is_server_error() or exc.status_code in (400, 404):
            output.line(f"ERROR: {explanation(exc)}")
            raise output.failure(spec, explanation(exc)) from exc
        raise
    except requests.exceptions.ReadTimeout as exc:
        raise output.failure(spec, f"no output for {timeout:g} s") from exc
    output.flush()
    if output.errors:
        raise output.failure(spec, output.errors[-1])
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise output.failure(spec, "the build finished but the engine does not list the image") from exc
    log(f"Built image {tag}")
    return tag


def build_context(archive: bytes, context: str) -> bytes:
    """The tar.gz the engine builds from: the template archive, or its `context` folder as the root."""
    folder = posixpath.normpath(context.strip("/")) if context else "."
    if folder == ".":
        return archive
    prefix = folder + "/"
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as source,
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as target,
    ):
        for member in source:
            name = posixpath.normpath(member.name)
            if not name.startswith(prefix):
                continue
            member.name = name[len(prefix) :]
            data = source.extractfile(member) if member.isreg() else None
            target.addfile(member, data)
    return out.getvalue()


class _BuildOutput:
    """Build events as log lines: `stream` text split into lines, `status` lines, `error`s remembered."""

    def __init__(self, log: LogSink) -> None:
        self.log = log
        self.partial = ""
        self.tail: list[str] = []
        self.errors: list[str] = []

    def line(self, text: str) -> None:
        self.log(text)
        self.tail = [*self.tail[-(TAIL_LINES - 1) :], text]

    def feed(self, event: dict[str, Any]) -> None:
        if "stream" in event:
            self.partial += str(event["stream"])
            *complete, self.partial = self.partial.split("\n")
            for text in complete:
                if text.strip():
                    self.line(text.rstrip("\r"))
        if "status" in event:
            _log_status(event, self.line)
        if "error" in event:
            self.flush()
            message = str(event["error"]).strip()
            self.errors.append(message)
            self.line(f"ERROR: {message}")

    def flush(self) -> None:
        if self.partial.strip():
            self.line(self.partial.rstrip("\r"))
        self.partial = ""

    def failure(self, spec: ImageSpec, reason: str) -> ImageBuildFailed:
        self.flush()
        return ImageBuildFailed(
            f"Building the image of template {spec.template} failed: {reason}", detail="\n".join(self.tail)
        )


def _log_status(event: dict[str, Any], log: LogSink) -> None:
    # Byte-by-byte progress updates would flood the build log; the status changes are what matter.
    if (event.get("progressDetail") or {}).get("current") is not None:
        return
    status = str(event.get("status", "")).strip()
    if status:
        log(f"{event['id']}: {status}" if event.get("id") else status)

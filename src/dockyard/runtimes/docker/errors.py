"""Turning Docker SDK errors into Dockyard runtime errors, at the boundary.

    requests.ConnectionError, the SDK's failed version probe  -> RuntimeUnavailable (names the engine)
    requests.Timeout                                           -> RuntimeUnavailable
    docker.errors.ImageNotFound                                -> ImageNotFound
    docker.errors.BuildError                                   -> ImageBuildFailed
    docker.errors.APIError 409                                 -> ContainerConflict
    docker.errors.APIError 5xx                                 -> RuntimeFailure (the engine's own message)
    anything else (404s the runtime did not expect, 400s)      -> re-raised unchanged: a bug on our side

The runtime handles the 404s it expects (an idempotent delete of something already gone) itself, before they
reach `translate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from dockyard.runtimes.base import (
    ContainerConflict,
    ImageBuildFailed,
    ImageNotFound,
    RuntimeFailure,
    RuntimeUnavailable,
)


def explanation(exc: docker.errors.APIError) -> str:
    """The engine's own message ("No such image: x"), without the SDK's URL noise."""
    return str(exc.explanation or exc)


def reason(exc: BaseException) -> str:
    """The innermost OS-level reason of a connection failure ("No such file or directory"), else the text."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop(0)
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
        pending.extend(item.args)
        pending.extend(x for x in (item.__cause__, item.__context__) if x is not None)
    return str(exc)


def unreachable(engine: str, exc: BaseException) -> RuntimeUnavailable:
    return RuntimeUnavailable(f"Docker engine unreachable at {engine}: {reason(exc)}", detail=str(exc))


@contextmanager
def translate(engine: str) -> Iterator[None]:
    """Map the Docker SDK's and requests' exceptions raised inside the block to Dockyard's runtime errors."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"Image not found: {explanation(exc)}") from exc
    except docker.errors.BuildError as exc:
        raise ImageBuildFailed(f"Image build failed: {exc.msg}") from exc
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise ContainerConflict(f"Docker engine conflict: {explanation(exc)}") from exc
        if exc.is_server_error():
            raise RuntimeFailure(f"Docker engine error: {explanation(exc)}") from exc
        raise
    except requests.exceptions.Timeout as exc:
        raise RuntimeUnavailable(
            f"Docker engine at {engine} did not answer in time", detail=str(exc)
        ) from exc
    except requests.exceptions.ConnectionError as exc:
        raise unreachable(engine, exc) from exc
    except docker.errors.DockerException as exc:
        # The SDK probes the engine's API version when a client is made and wraps the connection failure in
        # a bare DockerException.
        if isinstance(exc.__cause__ or exc.__context__, requests.exceptions.RequestException) or (
            "Error while fetching server API version" in str(exc)
        ):
            raise unreachable(engine, exc) from exc
        raise

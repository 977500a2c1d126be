"""Turning the Kubernetes client's errors into Dockyard runtime errors, at the boundary.

    urllib3 connection errors, timeouts, a kubeconfig that cannot be read  -> RuntimeUnavailable (names the API)
    ApiException 401                                                     -> RuntimeUnavailable (credentials)
    ApiException 403                                                     -> RuntimeUnavailable (RBAC, the API's words)
    ApiException 404 naming a namespace (it does not exist)              -> RuntimeUnavailable (names it)
    ApiException 409                                                     -> ContainerConflict
    ApiException 422 (an object the API refuses)                         -> RuntimeFailure 422 (the API's message)
    ApiException 5xx                                                     -> RuntimeFailure
    anything else (404s the runtime did not expect, 400s)                -> re-raised: a bug on our side

The 404s it expects (an idempotent delete of something already gone) the runtime handles itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from dockyard.runtimes.base import ContainerConflict, RuntimeFailure, RuntimeUnavailable


def message(exc: ApiException) -> str:
    """The API's own message ("pods is forbidden: User ... cannot create resource ..."), else the reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        body = {}
    return str(body.get("message") or exc.reason or exc)


class Invalid(RuntimeFailure):
    status_code = 422


def _reason(exc: BaseException) -> str:
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop(0)
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
        reason = getattr(item, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        pending.extend(x for x in (item.__cause__, item.__context__) if x is not None)
    return str(exc)


def missing_namespace(namespace: str, api: str) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"Kubernetes namespace {namespace} does not exist at {api}.",
        detail="create it (kubectl create namespace) or pass --kubernetes-namespace",
    )


def _missing_namespace(exc: ApiException) -> str:
    """The namespace a 404 says is missing ("" when the 404 is about something else)."""
    try:
        details = json.loads(exc.body or "{}").get("details") or {}
    except (ValueError, TypeError, AttributeError):
        return ""
    return str(details.get("name") or "") if details.get("kind") == "namespaces" else ""


def unreachable(api: str, exc: BaseException) -> RuntimeUnavailable:
    return RuntimeUnavailable(f"Kubernetes API unreachable at {api}: {_reason(exc)}", detail=str(exc))


@contextmanager
def translate(api: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        if exc.status == 401:
            raise RuntimeUnavailable(
                f"The Kubernetes API at {api} refuses the kubeconfig's credentials.", detail=message(exc)
            ) from exc
        if exc.status == 403:
            raise RuntimeUnavailable(f"RBAC forbids it: {message(exc)}", detail=f"API {api}") from exc
        if exc.status == 404 and (namespace := _missing_namespace(exc)):
            # Checked at start too, but the namespace may go after that: the build says so rather than 404.
            raise missing_namespace(namespace, api) from exc
        if exc.status == 409:
            raise ContainerConflict(message(exc)) from exc
        if exc.status == 422:
            raise Invalid(f"The Kubernetes API refused the workspace's objects: {message(exc)}") from exc
        if exc.status is not None and exc.status >= 500:
            raise RuntimeFailure(f"The Kubernetes API failed: {message(exc)}", detail=f"API {api}") from exc
        if exc.status == 0 or exc.status is None:
            raise unreachable(api, exc) from exc
        raise
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise unreachable(api, exc) from exc
    except ConfigException as exc:
        raise RuntimeUnavailable(f"The kubeconfig cannot be used: {exc}") from exc

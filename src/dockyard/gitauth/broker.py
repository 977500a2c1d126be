"""Which credential an agent may have: its owner's, for the host of its workspace's repository, and nothing
else. Every release (and refusal) is audited."""

from __future__ import annotations

import urllib.parse
from typing import Any

from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.gitauth.credentials import hint, normalize_host, secret_for
from dockyard.gitauth.pktline import RefUpdate
from dockyard.gitauth.proxy import Upstream, basic
from dockyard.store import audit
from dockyard.store.models import User, Workspace
from dockyard_sdk.manifest import GitPush, GitSpec


def repo_origin(repo: str) -> tuple[str, str] | None:
    """(protocol, host) of an http(s) repository URL, as git names them to a credential helper; None for
    ssh URLs and local paths, which never use the helper."""
    parsed = urllib.parse.urlsplit(repo)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return None
    return parsed.scheme, normalize_host(parsed.netloc.rsplit("@", 1)[-1])


def release(
    db: Session,
    actor: Actor,
    *,
    workspace: Workspace,
    owner: User,
    spec: GitSpec | None,
    protocol: str,
    host: str,
) -> dict[str, Any]:
    """The answer to an agent's `git_credential` request: `username` and `password`, or `error`."""
    answer = _decide(db, owner=owner, spec=spec, protocol=protocol, host=host)
    audit.record(
        db,
        actor,
        "gitauth.release" if "password" in answer else "gitauth.refuse",
        resource_type="workspace",
        resource_id=workspace.id,
        resource_name=workspace.name,
        status_code=200 if "password" in answer else 403,
        detail={
            "protocol": protocol,
            "host": host,
            **({"error": answer["error"]} if "error" in answer else {}),
        },
    )
    db.commit()
    return answer


def _decide(db: Session, *, owner: User, spec: GitSpec | None, protocol: str, host: str) -> dict[str, Any]:
    if spec is None or not spec.repo:
        return {"error": f"no credential for {host}: this workspace has no git repository in its template"}
    if spec.push == GitPush.TASK_BRANCH:
        # Handing the credential out would undo the limit: with it, git could push anywhere, bypassing the proxy.
        return {
            "error": f"no credential for {host}: this workspace may push only its task branch, so its git "
            "reaches the repository through the Dockyard git proxy and the credential never enters it"
        }
    origin = repo_origin(spec.repo)
    if origin is None:
        return {
            "error": f"no credential for {host}: the workspace's repository {spec.repo} is not an http(s) URL"
        }
    if (protocol.lower(), normalize_host(host)) != origin:
        # Also refuses http when the repository is https: a downgrade would send the secret in clear text.
        return {
            "error": f"no credential for {protocol}://{host}: credentials are released only for "
            f"{origin[0]}://{origin[1]}, the workspace's repository"
        }
    found = secret_for(db, owner.id, origin[1])
    if found is None:
        return {"error": f"{owner.username} has no git credential for {origin[1]}; {hint(origin[1])}"}
    return {"username": found[0], "password": found[1]}


def upstream(
    db: Session, actor: Actor, *, workspace: Workspace, owner: User, spec: GitSpec | None
) -> Upstream:
    """Where the git proxy sends a workspace's git, with the owner's credential for its repository's host; or
    why not (git prints it). Audited like a release to the agent, with `via: proxy`."""
    origin = repo_origin(spec.repo) if spec is not None and spec.repo else None
    if spec is None or spec.push != GitPush.TASK_BRANCH or origin is None:
        # The agent only asks for the proxy when its welcome said to; anything else is a confused agent.
        return Upstream(error="dockyard: this workspace's git does not go through the Dockyard git proxy")
    found = secret_for(db, owner.id, origin[1])
    error = (
        ""
        if found is not None
        else f"dockyard: {owner.username} has no git credential for {origin[1]}; {hint(origin[1])}"
    )
    audit.record(
        db,
        actor,
        "gitauth.release" if not error else "gitauth.refuse",
        resource_type="workspace",
        resource_id=workspace.id,
        resource_name=workspace.name,
        status_code=200 if not error else 403,
        detail={
            "protocol": origin[0],
            "host": origin[1],
            "via": "proxy",
            **({"error": error} if error else {}),
        },
    )
    db.commit()
    if found is None:
        return Upstream(error=error)
    return Upstream(repo=spec.repo, branch=spec.branch, authorization=basic(*found))


def record_push(
    db: Session,
    actor: Actor,
    *,
    workspace: Workspace,
    updates: tuple[RefUpdate, ...],
    refused: dict[str, str],
) -> None:
    """Every push through the proxy is an audit row: its refs, and whether it was forwarded or refused."""
    audit.record(
        db,
        actor,
        "gitauth.push_refused" if refused else "gitauth.push",
        resource_type="workspace",
        resource_id=workspace.id,
        resource_name=workspace.name,
        status_code=403 if refused else 200,
        detail={
            "refs": [u.ref for u in updates][:50],
            **({"refused": sorted(refused)[:50]} if refused else {}),
        },
    )
    db.commit()

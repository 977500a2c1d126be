"""A template whose dev container configuration lives in a repository (`devcontainer: {repo, path, ref}`).

At push the server fetches the repository (shallow, at `ref`) with the pushing user's brokered git credential
for its host (`dockyard git-auth add HOST`; the credential is never stored in the template), finds the
configuration in the specification's order, and stores the files a build needs (the configuration's folder,
the Dockerfile's context, local features) in the version with the commit they came from. A refusal names
`devcontainer.repo`, `devcontainer.path` or `devcontainer.ref` and stores nothing. Pushing again fetches again:
a new commit makes a new version (the commit is among the stored files, in `dockyard.source.json`). The fetch
keeps out of the ranges the server does not connect to for its users: git is pinned to the addresses checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from dockyard import yamlload
from dockyard.accounts.actor import Actor
from dockyard.errors import DockyardError, Validation, ValidationFailed
from dockyard.gitauth import fetching
from dockyard.gitauth.broker import repo_origin
from dockyard.gitauth.credentials import hint, secret_for
from dockyard.outbound import OutboundDenied, OutboundPolicy
from dockyard.templates import archive
from dockyard.templates.archive import MANIFEST, TemplateFile, TemplateFiles
from dockyard.templates.devcontainer import discovery, lockfile
from dockyard.templates.devcontainer import plan as plans
from dockyard.templates.manifest import pinned
from dockyard_sdk.manifest import DevcontainerRepo, GitSpec, TemplateManifest

SOURCE_FILE = "dockyard.source.json"
"""Generated: where the configuration came from. Part of the version's content, so a new commit is a new
version even when the configuration files did not change."""
FETCH_TIMEOUT = 120.0
_AUTH_FAILED = re.compile(
    r"Authentication failed|could not read Username|terminal prompts disabled|\b40[13]\b", re.IGNORECASE
)
_NO_REF = re.compile(
    r"couldn't find remote ref|not our ref|unadvertised object|invalid refspec", re.IGNORECASE
)
_REF = re.compile(r"^[A-Za-z0-9._/@+-]+$")


def fetch(
    db: Session,
    actor: Actor,
    files: TemplateFiles,
    parsed: TemplateManifest,
    *,
    host_binds: Sequence[str],
    outbound: OutboundPolicy,
) -> tuple[TemplateFiles, TemplateManifest]:
    """The version's files (the template's own plus the repository's configuration files and `SOURCE_FILE`)
    and its manifest (with the commit, the configuration's path and, unless the template has one, a `git:`
    section for the repository); ValidationFailed naming the `devcontainer.*` field otherwise."""
    source = parsed.devcontainer
    assert isinstance(source, DevcontainerRepo)
    text = files.text(MANIFEST)
    _check(source, text)
    origin = repo_origin(source.repo)
    assert origin is not None  # the model only takes http(s) URLs
    host = origin[1]
    credential = secret_for(db, actor.user_id, host) if actor.user_id else None
    with tempfile.TemporaryDirectory(prefix="dockyard-devcontainer-") as scratch:
        checkout = os.path.join(scratch, "repo")
        commit = _fetch(source, checkout, host=host, credential=credential, text=text, outbound=outbound)
        config_file = _find(checkout, source.path, text=text)
        tree = _Checkout(checkout)
        plan = plans.read(tree, config_file, workspace_name=parsed.name, env={}, host_binds=host_binds)
        wanted = _needed(tree, plan)
        fetched = {path: TemplateFile(path, tree.mode(path), tree[path]) for path in wanted}
    clashes = sorted(set(fetched) & set(files.files))
    if clashes:
        raise _refused(
            text,
            "devcontainer.repo",
            f"the template's own {clashes[0]} is also among the repository's configuration files; remove it",
        )
    recorded = {"repo": source.repo, "ref": source.ref, "path": source.path, "commit": commit}
    stored: dict[str, TemplateFile] = {}
    total = [0]
    try:
        for item in [*files.files.values(), *fetched.values()]:
            if item.path != SOURCE_FILE:
                archive._add(stored, item, total)
        archive._add(stored, TemplateFile(SOURCE_FILE, 0o644, json.dumps(recorded, indent=2).encode()), total)
    except DockyardError as exc:
        raise _refused(
            text, "devcontainer.repo", f"its configuration files are too large: {exc.message}"
        ) from exc
    result = pinned(TemplateFiles(stored), plan)
    git = parsed.git
    if git is None:
        # The workspace works on the repository its configuration came from, cloned into the workspace folder;
        # a template's own `git:` (`{repo: ""}` for none) wins.
        git = GitSpec(repo=source.repo, path=plan.workspace_folder)
    manifest = parsed.model_copy(
        update={"devcontainer": source.model_copy(update={"commit": commit, "file": config_file}), "git": git}
    )
    return result, manifest


def _check(source: DevcontainerRepo, text: str) -> None:
    problems = [
        Validation(f"devcontainer.{key}", "set by the server when it fetches the repository; leave it out")
        for key in ("commit", "file")
        if key in source.model_fields_set
    ]
    if "@" in source.repo.split("/")[2]:
        problems.append(
            Validation(
                "devcontainer.repo", "a URL with a credential in it; register it with `dockyard git-auth add`"
            )
        )
    if source.ref and (not _REF.match(source.ref) or source.ref.startswith("-") or ".." in source.ref):
        problems.append(Validation("devcontainer.ref", f"{source.ref!r} is not a branch, tag or commit name"))
    if problems:
        raise ValidationFailed(f"{MANIFEST} has an invalid devcontainer source.", _located(text, problems))


def _fetch(
    source: DevcontainerRepo,
    checkout: str,
    *,
    host: str,
    credential: tuple[str, str] | None,
    text: str,
    outbound: OutboundPolicy,
) -> str:
    """Fetch `source.ref` (or the default branch) one commit deep into `checkout`; the commit's sha."""
    env = fetching.git_env(
        home=os.path.dirname(checkout),
        pinned=_pinned(source, text=text, outbound=outbound),
        credential=credential,
    )
    ref = source.ref or "HEAD"
    steps = [
        ["git", "init", "--quiet", checkout],
        ["git", "-C", checkout, "fetch", "--quiet", "--depth", "1", "--no-tags", "--", source.repo, ref],
        ["git", "-C", checkout, "-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"],
        ["git", "-C", checkout, "rev-parse", "FETCH_HEAD"],
    ]
    done = None
    for step in steps:
        try:
            done = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=FETCH_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise _refused(
                text, "devcontainer.repo", f"fetching {source.repo} took more than {FETCH_TIMEOUT:.0f} s"
            ) from exc
        if done.returncode != 0:
            raise _fetch_error(source, done.stderr, host=host, credential=credential, text=text)
    assert done is not None
    return done.stdout.strip()


def _pinned(source: DevcontainerRepo, *, text: str, outbound: OutboundPolicy) -> str:
    """The repository's checked addresses for libcurl; refused naming `devcontainer.repo` otherwise."""
    try:
        return fetching.destination(source.repo, outbound).curl_resolve()
    except OutboundDenied as exc:
        raise _refused(text, "devcontainer.repo", f"cannot fetch {source.repo}: {exc}") from None
    except OSError as exc:
        host = urlsplit(source.repo).hostname or ""
        raise _refused(text, "devcontainer.repo", f"cannot resolve {host}: {exc.strerror or exc}") from None


def _fetch_error(
    source: DevcontainerRepo, stderr: str, *, host: str, credential: tuple[str, str] | None, text: str
) -> ValidationFailed:
    said = " ".join(line.strip() for line in stderr.strip().splitlines()[-3:])[-500:]
    if _AUTH_FAILED.search(stderr):
        if credential is None:
            detail = (
                f"{source.repo} needs a credential and you have no git credential for {host}; {hint(host)}"
            )
        else:
            detail = f"{host} refused your git credential for {source.repo}; run `dockyard git-auth add {host}` to replace it"
        return _refused(text, "devcontainer.repo", detail)
    if _NO_REF.search(stderr):
        return _refused(
            text, "devcontainer.ref", f"{source.repo} has no branch, tag or commit {source.ref!r}"
        )
    return _refused(text, "devcontainer.repo", f"cannot fetch {source.repo}: {said}")


def _find(checkout: str, path: str, *, text: str) -> str:
    """The configuration's path in the repository: `path` as given (a file or a configuration name), or the
    first found in the specification's order."""
    given = path.strip("/")
    try:
        if given.endswith(".json"):
            if given not in _Checkout(checkout):
                raise ValidationFailed(
                    "No configuration there.", [Validation("path", f"the repository has no file {given}")]
                )
            return given
        found = discovery.find(checkout, name=given or None)
    except DockyardError as exc:
        details = [v.detail for v in exc.validations] or [exc.message.replace(checkout + "/", "")]
        return_detail = "; ".join(d.replace(checkout + "/", "") for d in details)
        raise _refused(text, "devcontainer.path", f"no dev container configuration: {return_detail}") from exc
    return os.path.relpath(found.path, checkout).replace(os.sep, "/")


def _needed(tree: _Checkout, plan: plans.Plan) -> list[str]:
    """The configuration's folder, the Dockerfile's context and the local features' folders."""
    folders = [os.path.dirname(plan.config_file) or None]
    if plan.dockerfile is not None:
        folders.append(plan.context)
    folders += [feature.folder for feature in plan.features]
    wanted = {plan.config_file}
    lock = lockfile.path_for(plan.config_file)
    if lock in tree:
        wanted.add(lock)
    for folder in folders:
        if folder is None:
            continue  # `.devcontainer.json` at the top: its folder is the whole repository
        prefix = "" if folder in (".", "") else folder.rstrip("/") + "/"
        wanted.update(path for path in tree if path.startswith(prefix) and path != MANIFEST)
    return sorted(wanted)


def _refused(text: str, field: str, detail: str) -> ValidationFailed:
    return ValidationFailed(
        f"The devcontainer repository cannot be used: {detail}", _located(text, [Validation(field, detail)])
    )


def _located(text: str, problems: list[Validation]) -> list[Validation]:
    _data, node = yamlload.load(text, filename=MANIFEST)
    return [
        Validation(p.field, p.detail, file=MANIFEST, line=yamlload.line_of(node, p.field.split(".")))
        for p in problems
    ]


class _Checkout(Mapping[str, bytes]):
    """The checkout's regular files as path -> bytes, read when asked for: the plan reads a few of a
    repository's files, not all. Links and submodules are left out, so nothing outside the checkout is read."""

    def __init__(self, root: str) -> None:
        self.root = root
        listed = subprocess.run(
            ["git", "-C", root, "ls-files", "--stage", "-z"], capture_output=True, check=True, timeout=60
        ).stdout.decode("utf-8", "replace")
        self._modes: dict[str, int] = {}
        for entry in listed.split("\0"):
            meta, _, path = entry.partition("\t")
            mode = meta.split(" ", 1)[0]
            if mode in ("100644", "100755"):
                self._modes[path] = 0o755 if mode == "100755" else 0o644

    def mode(self, path: str) -> int:
        return self._modes[path]

    def __getitem__(self, path: str) -> bytes:
        if path not in self._modes:
            raise KeyError(path)
        with open(os.path.join(self.root, path), "rb") as handle:
            return handle.read(archive.MAX_EXPANDED_BYTES + 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modes)

    def __len__(self) -> int:
        return len(self._modes)

    def __contains__(self, path: object) -> bool:
        return path in self._modes

"""A template whose devcontainer.json lives in a repository (`devcontainer: {repo, path, ref}`), through real
git: `git http-backend` behind basic auth on loopback (tests/gitserver.py), the server's fetch with the pushing
user's brokered credential, and the real agent (a local process) cloning the repository into the workspace
folder. The real engine builds such a workspace in tests/e2e/test_devcontainer_up.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.cli.templates import _source
from dockyard.templates.devcontainer import oci
from dockyard.templates.devcontainer.plan import read
from dockyard_sdk import NotFound, ValidationError
from dockyard_sdk import models as m
from dockyard_sdk.manifest import GitSpec
from tests.gitauth.test_git_credentials import PASSWORD, USER, git
from tests.gitserver import GitApp, serve
from tests.harness import Harness, make_harness, tar_gz
from tests.live import free_port
from tests.oci_registry import feature_tar, push

pytestmark = pytest.mark.timeout(120)

FEATURE = {"id": "hello", "options": {"greeting": {"type": "string", "default": "hi"}}}


@pytest.fixture
def private(tmp_path: Path) -> Iterator[tuple[str, Path, Path, GitApp]]:
    """A private repository `app.git` (branches main and `slim`) served with basic auth: its URL, the bare
    repository, a clone to commit more from, and the server's request log."""
    folder = tmp_path / "ws"
    root = tmp_path / "srv"
    root.mkdir()
    bare = root / "app.git"
    git("init", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git("clone", str(bare), str(seed))
    config = {
        "build": {"dockerfile": "Dockerfile", "context": ".."},
        "features": {"./hello": {"greeting": "hey"}},
        "workspaceFolder": str(folder),
        "postCreateCommand": "echo made > made.txt",
        "waitFor": "postCreateCommand",
    }
    files = {
        ".devcontainer/devcontainer.json": json.dumps(config),
        ".devcontainer/Dockerfile": "FROM dockyard/base:bookworm\nCOPY main.py /opt/main.py\n",
        ".devcontainer/hello/devcontainer-feature.json": json.dumps(FEATURE),
        ".devcontainer/hello/install.sh": "#!/bin/sh\necho $GREETING > /etc/hello\n",
        ".devcontainer/other/devcontainer.json": '{"image": "dockyard/base:bookworm"}',
        "main.py": "print('main')\n",
    }
    for path, text in files.items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_text(text)
    (seed / ".devcontainer/hello/install.sh").chmod(0o755)
    git("add", "-A", cwd=seed)
    git("commit", "-qm", "first", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    port = free_port()
    server, app = serve(str(root), host="127.0.0.1", port=port, user=USER, password=PASSWORD)
    yield f"http://127.0.0.1:{port}/app.git", bare, seed, app
    server.shutdown()


def _push(
    h: Harness, source: dict[str, str], *, name: str = "fromrepo", extra: str = ""
) -> m.TemplateVersion:
    manifest = f"name: {name}\ndevcontainer: {json.dumps(source)}\n{extra}"
    try:
        h.admin.get_template(name)
    except NotFound:
        created = h.admin.create_template(tar_gz({"dockyard.yaml": manifest}))
        return h.admin.get_template_version(name, created.active_version_id or "")
    return h.admin.create_template_version(name, tar_gz({"dockyard.yaml": manifest}))


def _refused(h: Harness, source: dict[str, str]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as refused:
        _push(h, source)
    return [(v.field, v.detail) for v in refused.value.validations]


def test_a_template_uses_a_private_repositorys_configuration_fetched_with_the_pushers_credential(
    ah: Harness, private: tuple[str, Path, Path, GitApp], tmp_path: Path
) -> None:
    url, bare, seed, app = private
    host = url.split("/")[2]
    ah.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    head = git("--git-dir", str(bare), "rev-parse", "main")

    first = _push(ah, {"repo": url})

    assert first.manifest.model_dump(mode="json")["devcontainer"] == {
        "repo": url,
        "path": "",
        "ref": "",
        "commit": head,
        "file": ".devcontainer/devcontainer.json",
    }
    # The configuration's folder (and in it its feature) and the Dockerfile's context (the repository's top),
    # with the install script's mode; the credential is nowhere in them.
    assert {f.path: f.mode for f in first.files} == {
        ".devcontainer/Dockerfile": 0o644,
        ".devcontainer/devcontainer.json": 0o644,
        ".devcontainer/hello/devcontainer-feature.json": 0o644,
        ".devcontainer/hello/install.sh": 0o755,
        ".devcontainer/other/devcontainer.json": 0o644,
        "dockyard.source.json": 0o644,
        "dockyard.yaml": 0o644,
        "main.py": 0o644,
    }
    recorded = json.loads(ah.admin.get_template_file("fromrepo", first.id, "dockyard.source.json"))
    assert recorded == {"repo": url, "ref": "", "path": "", "commit": head}
    for f in first.files:
        assert PASSWORD.encode() not in ah.admin.get_template_file("fromrepo", first.id, f.path)
    assert all(authorized for _method, _path, authorized in app.requests)
    [created] = ah.admin.audit(action="template.create").audit_logs
    assert created.detail["devcontainer"] == {"repo": url, "ref": "", "commit": head}
    # `dockyard templates show` says where it came from.
    assert (
        _source(first.manifest) == f"devcontainer .devcontainer/devcontainer.json from {url} at {head[:12]}"
    )
    # The workspace works on that repository: its git section defaults to it, cloned into the workspace folder.
    assert first.manifest.git == GitSpec(repo=url, path=str(tmp_path / "ws"))

    # Pushing again fetches again: the same commit is the same version, a new one a new version.
    assert [v.id for v in [_push(ah, {"repo": url})]] == [first.id]
    (seed / "main.py").write_text("print('second')\n")
    git("commit", "-qam", "second", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    second = _push(ah, {"repo": url})
    assert (second.number, second.manifest.model_dump()["devcontainer"]["commit"]) == (
        2,
        git("--git-dir", str(bare), "rev-parse", "main"),
    )
    # A named configuration at a given ref (here the first commit): only its folder is stored, and a template's
    # own git section wins.
    named = _push(ah, {"repo": url, "path": "other", "ref": head}, extra='git: {repo: ""}\n')
    assert named.manifest.model_dump()["devcontainer"]["file"] == ".devcontainer/other/devcontainer.json"
    assert named.manifest.model_dump()["devcontainer"]["commit"] == head
    assert sorted(f.path for f in named.files) == [
        ".devcontainer/other/devcontainer.json",
        "dockyard.source.json",
        "dockyard.yaml",
    ]
    assert named.manifest.git == GitSpec(repo="")

    ah.admin.update_template("fromrepo", m.UpdateTemplateRequest(active_version_id=second.id))
    created = ah.admin.create_workspace(m.CreateWorkspaceRequest(template="fromrepo", name="repo-ws"))
    ws = ah.admin.get_workspace(created.id, wait="ready", timeout=60)
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)
    folder = tmp_path / "ws"
    assert (folder / "main.py").read_text() == "print('second')\n"
    assert git("-C", str(folder), "log", "--format=%s") == "second\nfirst"
    assert (folder / "made.txt").read_text() == "made\n"


def test_a_repository_that_cannot_be_used_is_refused_at_push_naming_the_field(
    h: Harness, private: tuple[str, Path, Path, GitApp]
) -> None:
    url, _bare, _seed, app = private
    host = url.split("/")[2]
    closed = f"http://127.0.0.1:{free_port()}/app.git"

    # No credential for a private repository: the host and the command that registers one.
    assert _refused(h, {"repo": url}) == [
        (
            "devcontainer.repo",
            f"{url} needs a credential and you have no git credential for {host}; "
            f"run `dockyard git-auth add {host}` to register a credential for it",
        )
    ]
    assert app.requests
    assert not any(authorized for _method, _path, authorized in app.requests)
    [(field, detail)] = _refused(h, {"repo": closed})
    assert (field, detail.startswith(f"cannot fetch {closed}: ")) == ("devcontainer.repo", True)
    assert _refused(h, {"repo": f"http://robot:{PASSWORD}@{host}/app.git"}) == [
        ("devcontainer.repo", "a URL with a credential in it; register it with `dockyard git-auth add`")
    ]
    assert _refused(h, {"repo": url, "commit": "0" * 40}) == [
        ("devcontainer.commit", "set by the server when it fetches the repository; leave it out")
    ]

    h.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    assert _refused(h, {"repo": url, "ref": "nope"}) == [
        ("devcontainer.ref", f"{url} has no branch, tag or commit 'nope'")
    ]
    [(field, detail)] = _refused(h, {"repo": url, "path": "missing"})
    assert field == "devcontainer.path"
    assert detail.startswith("no dev container configuration: ")
    assert "missing" in detail
    assert _refused(h, {"repo": url, "path": ".devcontainer/none.json"}) == [
        (
            "devcontainer.path",
            "no dev container configuration: the repository has no file .devcontainer/none.json",
        )
    ]
    h.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password="wrong"))
    assert _refused(h, {"repo": url}) == [
        (
            "devcontainer.repo",
            f"{host} refused your git credential for {url}; run `dockyard git-auth add {host}` to replace it",
        )
    ]
    # Nothing was stored by any of them.
    with pytest.raises(NotFound):
        h.admin.get_template("fromrepo")
    assert [e.action for e in h.admin.audit(resource_type="template").audit_logs] == []


def test_the_fetch_goes_to_the_address_the_server_checked(
    h: Harness, private: tuple[str, Path, Path, GitApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `git.test` resolves only in the server's own check (.test never resolves anywhere else): git, a program of
    # its own with its own resolver, reaches the repository only through the address it was pinned to.
    url, bare, _seed, app = private
    port = url.split("/")[2].split(":")[1]
    resolve = socket.getaddrinfo

    def checked(host: str, *args: Any, **kwargs: Any) -> Any:
        return resolve("127.0.0.1" if host == "git.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", checked)
    by_name = f"http://git.test:{port}/app.git"
    h.admin.add_git_auth(m.CreateGitAuthRequest(host=f"git.test:{port}", username=USER, password=PASSWORD))

    version = _push(h, {"repo": by_name})

    assert version.manifest.devcontainer is not None
    assert version.manifest.model_dump(mode="json")["devcontainer"]["commit"] == git(
        "--git-dir", str(bare), "rev-parse", "main"
    )
    assert any(authorized for _method, _path, authorized in app.requests)


def test_a_repository_in_a_denied_range_is_refused_before_anything_is_sent(
    tmp_path: Path, database_url: str, private: tuple[str, Path, Path, GitApp]
) -> None:
    # The operator denies loopback (`--outbound-deny`), where the repository's host listens.
    url, _bare, _seed, app = private
    h = make_harness(tmp_path, database_url, outbound_deny=["127.0.0.0/8", "::1"])
    try:
        assert _refused(h, {"repo": url}) == [
            (
                "devcontainer.repo",
                f"cannot fetch {url}: 127.0.0.1 is in 127.0.0.0/8, a range this server does not connect to "
                "for its users",
            )
        ]
        by_name = url.replace("127.0.0.1", "localhost")
        [(field, detail)] = _refused(h, {"repo": by_name})
        assert (field, detail.startswith(f"cannot fetch {by_name}: localhost: ")) == (
            "devcontainer.repo",
            True,
        )
        assert app.requests == []
        with pytest.raises(NotFound):
            h.admin.get_template("fromrepo")
    finally:
        h.close()


def test_a_repositorys_lockfile_pins_its_oci_features(h: Harness, registry: str, tmp_path: Path) -> None:
    """The repository's own `.devcontainer-lock.json` (next to a top-level `.devcontainer.json`) is stored
    with the version as written and pins the feature: a tag pushed again since is not what the version gets.
    A repository without one gets the lockfile of what its tags resolved to now."""
    push(registry, "features/repo-pinned", "1", feature_tar())
    ref = f"{registry}/features/repo-pinned:1"
    digest = oci.fetch(oci.parse(ref)).manifest_digest  # type: ignore[arg-type]
    push(registry, "features/repo-pinned", "1", feature_tar().replace(b"$GREETING", b"moved"))
    root = tmp_path / "srv"
    bare = root / "pinned.git"
    git("init", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git("clone", str(bare), str(seed))
    lock = json.dumps(
        {"features": {ref: {"version": "1.0.0", "resolved": f"{registry}/features/repo-pinned@{digest}"}}}
    )
    (seed / ".devcontainer.json").write_text(
        json.dumps({"image": "dockyard/base:bookworm", "features": {ref: {}}})
    )
    (seed / ".devcontainer-lock.json").write_text(lock)
    git("add", "-A", cwd=seed)
    git("commit", "-qm", "first", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    port = free_port()
    server, _app = serve(str(root), host="127.0.0.1", port=port, user=USER, password=PASSWORD)
    try:
        url = f"http://127.0.0.1:{port}/pinned.git"
        h.admin.add_git_auth(
            m.CreateGitAuthRequest(host=f"127.0.0.1:{port}", username=USER, password=PASSWORD)
        )
        version = _push(h, {"repo": url}, name="pinned")
        assert h.admin.get_template_file("pinned", version.id, ".devcontainer-lock.json").decode() == lock
        plan = read(
            {f.path: h.admin.get_template_file("pinned", version.id, f.path) for f in version.files},
            ".devcontainer.json",
            workspace_name="pinned",
        )
        assert (Path(plan.features[0].folder) / "install.sh").read_bytes().count(b"$GREETING") == 1

        git("rm", "-q", ".devcontainer-lock.json", cwd=seed)
        git("commit", "-qm", "unpinned", cwd=seed)
        git("push", "-q", "origin", "HEAD:main", cwd=seed)
        unpinned = _push(h, {"repo": url}, name="pinned")
        written = json.loads(h.admin.get_template_file("pinned", unpinned.id, ".devcontainer-lock.json"))
        assert written["features"][ref]["integrity"] != digest
    finally:
        server.shutdown()

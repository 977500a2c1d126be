"""The git server the tests in this folder push to and clone from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitauth.test_git_credentials import PASSWORD, USER, git
from tests.gitserver import GitApp, serve
from tests.live import free_port


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[str, Path, GitApp]]:
    """A bare repository `app.git` (default branch main, plus a branch `existing`) served with basic auth."""
    root = tmp_path / "git"
    root.mkdir()
    bare = root / "app.git"
    git("init", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "seed"
    git("clone", str(bare), str(work))
    (work / "README").write_text("hello\n")
    git("add", "README", cwd=work)
    git("commit", "-m", "first", cwd=work)
    git("push", "origin", "HEAD:main", cwd=work)
    git("push", "origin", "HEAD:existing", cwd=work)
    port = free_port()
    server, app = serve(str(root), host="127.0.0.1", port=port, user=USER, password=PASSWORD)
    yield f"127.0.0.1:{port}", bare, app
    server.shutdown()

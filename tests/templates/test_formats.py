from __future__ import annotations

import re

import pytest

from dockyard.templates.formats import git_ref, git_url


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("github.com/org/backend", "https://github.com/org/backend"),
        ("git.example.com/team/app.git", "https://git.example.com/team/app.git"),
        ("localhost:8443/team/app.git", "localhost:8443/team/app.git"),  # scp-like, as git reads it
        ("localhost/org/repo", "https://localhost/org/repo"),
        ("https://github.com/org/backend.git", "https://github.com/org/backend.git"),
        ("http://127.0.0.1:9/$(touch${IFS}/tmp/pwned)", "http://127.0.0.1:9/$(touch${IFS}/tmp/pwned)"),
        ("ssh://git@github.com/org/backend.git", "ssh://git@github.com/org/backend.git"),
        ("https://user:token@git.example:8443/org/app", "https://user:token@git.example:8443/org/app"),
        ("ssh://git@[::1]:2222/org/app", "ssh://git@[::1]:2222/org/app"),
        ("git@github.com:org/backend.git", "git@github.com:org/backend.git"),
        ("file:///srv/git/app.git", "file:///srv/git/app.git"),
        ("/srv/git/app.git", "/srv/git/app.git"),
        ("./app", "./app"),
        ("~/src/app", "~/src/app"),
        ("app", "app"),
        ("", ""),
    ],
)
def test_git_urls_accepted(value: str, normalized: str) -> None:
    assert git_url(value) == normalized


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            "--upload-pack=touch${IFS}/tmp/pwned",
            "starts with '-' and would be read as an option, not a repository",
        ),
        ("-oProxyCommand=x", "starts with '-' and would be read as an option, not a repository"),
        ("ext::sh -c touch% /tmp/pwned", "cannot contain spaces or control characters"),
        ("ext::sh", "names a git remote helper"),
        ("fd::3", "names a git remote helper"),
        ("https://host/x\n--upload-pack=y", "cannot contain spaces or control characters"),
        ("ftp://host/x", "ftp:// is not a git transport Dockyard allows (use https, http, ssh, git, file)"),
        ("ssh://-oProxyCommand=x/repo", "'-oProxyCommand=x' is not a host name"),
        ("git@host:-x", "the path '-x' starts with '-'"),
        ("ssh://-oProxyCommand=x@host/repo", "'-oProxyCommand=x@host' is not a host name"),
        ("-user@host:repo", "starts with '-' and would be read as an option"),
    ],
)
def test_git_urls_refused(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        git_url(value)


@pytest.mark.parametrize("value", ["main", "feature/auth-refactor", "v1.2.3", "release-2024_01", ""])
def test_git_refs_accepted(value: str) -> None:
    assert git_ref(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "-b",
        "--orphan",
        "a b",
        "a..b",
        "a//b",
        "x.lock",
        "a/.hidden",
        "a@{1}",
        "a~1",
        "a:b",
        "end/",
        "end.",
        "a\nb",
    ],
)
def test_git_refs_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"is not a valid branch or tag name|would be read as an option"):
        git_ref(value)

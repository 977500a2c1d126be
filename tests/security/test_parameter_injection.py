"""Isolation matrix: no parameter value becomes code or an option in a built-in template's scripts.

Each built-in template is created with hostile values (command substitution, backticks, quotes that try to close
the quoting, newlines, `;`, leading dashes, git's `--upload-pack=`, Jinja syntax) and its startup script runs for
real: a Docker workspace on the real engine, its agent running the rendered script with bash. Every hostile value
tries to create a marker file; afterwards no marker exists anywhere in the workspace, and the values that reach a
file arrive there literally. Values that would be read as options are refused at create, naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.runtimes.docker import DockerRuntime
from dockyard.templates import builtin, manifest, render
from dockyard.templates.archive import from_directory
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness, docker_harness

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

MARKER = "/tmp/pwned"

# Each tries to run `touch /tmp/pwned-N` in the script's shell; N tells which one got through.
HOSTILE = [
    f"$(touch {MARKER}-1)",
    f"`touch {MARKER}-2`",
    f"'; touch {MARKER}-3; echo '",
    f'"; touch {MARKER}-4; echo "',
    f"line\ntouch {MARKER}-5\n",
    f"x; touch {MARKER}-6 #",
    f"--upload-pack=touch {MARKER}-7",
    f"-n $(touch {MARKER}-8)",
    f"\\$(touch {MARKER}-9)",
    f"' \"$(touch {MARKER}-10)\" '",
    "{{ 7 * 7 }} {% if true %}jinja{% endif %}",
]


@pytest.fixture
def sh(tmp_path: Path, database_url: str, engine: DockerRuntime, base_image: str) -> Iterator[Harness]:
    """A harness with the built-in templates whose workspaces run on the real Docker engine."""
    with docker_harness(
        tmp_path, database_url, subnet_pool="10.231.0.0/16", ready_timeout=30, builtin_templates=True
    ) as harness:
        yield harness


def _started(h: Harness, template: str, name: str, parameters: dict[str, Any]) -> m.Workspace:
    created = h.admin.create_workspace(
        m.CreateWorkspaceRequest(template=template, name=name, parameters=parameters)
    )
    ws = h.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert ws.status == m.WorkspaceStatus.RUNNING, ws.status_reason
    assert ws.agent is not None
    assert ws.agent.lifecycle in (m.AgentLifecycle.READY, m.AgentLifecycle.START_ERROR), ws.agent
    return ws


def _markers(h: Harness, ws: m.Workspace) -> str:
    found = h.admin.exec(
        ws.id,
        m.ExecRequest(command="find / -xdev -name 'pwned*' 2>/dev/null; ls ~ | grep -i pwned; true"),
    )
    assert found.exit_code == 0, found
    return found.stdout


def _log(h: Harness, ws: m.Workspace) -> str:
    return "\n".join(line.output for line in h.admin.build_logs(ws.latest_build.id))


def test_every_built_in_script_quotes_every_parameter() -> None:
    for name in builtin.NAMES:
        parsed = manifest.load(from_directory(builtin.ROOT / name))
        assert render.unquoted(parsed.startup_script) == [], name
        assert render.unquoted(parsed.shutdown_script) == [], name


def test_hostile_task_text_reaches_the_file_literally_and_runs_nothing(sh: Harness) -> None:
    task = "\n".join(HOSTILE)

    ws = _started(sh, "ai-agent-sandbox", "task", {"task": task})

    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY, _log(sh, ws)
    written = sh.admin.read_file(ws.id, "TASK.md")
    assert written.decode() == task + "\n"
    assert _markers(sh, ws) == ""


@pytest.mark.parametrize(
    ("template", "parameter", "value"),
    [
        (
            "ai-agent-sandbox",
            "repo",
            f"http://127.0.0.1:9/$(touch${{IFS}}{MARKER}-r1)`touch${{IFS}}{MARKER}-r2`",
        ),
        ("ai-agent-sandbox", "repo", f"/srv/x';touch${{IFS}}{MARKER}-r3;'\"$(touch${{IFS}}{MARKER}-r4)\""),
        ("base", "dotfiles_repo", f"file:///tmp/d$(touch${{IFS}}{MARKER}-d1);touch${{IFS}}{MARKER}-d2"),
    ],
    ids=["sandbox-url", "sandbox-path", "base-dotfiles"],
)
def test_a_hostile_repository_is_one_argument_to_git(
    sh: Harness, template: str, parameter: str, value: str
) -> None:
    ws = _started(sh, template, f"repo-{template[:4]}", {parameter: value})

    # The clone fails (nothing is there), and git's message quotes the text it was given, unexpanded.
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.START_ERROR, _log(sh, ws)
    assert _markers(sh, ws) == ""
    assert f"$(touch${{IFS}}{MARKER}-" in _log(sh, ws)


@pytest.mark.parametrize(
    ("template", "parameters", "expected"),
    [
        (
            "ai-agent-sandbox",
            {"repo": f"--upload-pack=touch {MARKER}"},
            [
                (
                    "repo",
                    f"'--upload-pack=touch {MARKER}' starts with '-' and would be read as an option, not a repository",
                )
            ],
        ),
        (
            "ai-agent-sandbox",
            {"repo": "-oProxyCommand=x", "branch": "--orphan"},
            [
                (
                    "repo",
                    "'-oProxyCommand=x' starts with '-' and would be read as an option, not a repository",
                ),
                ("branch", "--orphan is not a valid branch name"),
            ],
        ),
        (
            "ai-agent-sandbox",
            {"repo": f"ext::sh -c touch% {MARKER}"},
            [("repo", "a repository URL cannot contain spaces or control characters")],
        ),
        (
            "base",
            {"dotfiles_repo": f"ssh://-oProxyCommand=touch%20{MARKER}/x"},
            [("dotfiles_repo", "'-oProxyCommand=touch%20' is not a host name")],
        ),
    ],
)
def test_values_git_would_read_as_options_are_refused(
    sh: Harness, template: str, parameters: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(ApiError) as info:
        sh.admin.create_workspace(
            m.CreateWorkspaceRequest(template=template, name="evil", parameters=parameters)
        )

    assert info.value.status_code == 422
    assert [(v.field, v.detail) for v in info.value.validations] == expected
    assert sh.admin.list_workspaces().workspaces == []

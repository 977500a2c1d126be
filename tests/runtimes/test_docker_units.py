"""Pieces of the Docker runtime that need no engine: names, state mapping, error mapping, the setup script."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import docker.errors
import pytest
import requests

from dockyard.runtimes.base import (
    ContainerConflict,
    ContainerState,
    ImageNotFound,
    ImageSpec,
    Observation,
    RuntimeFailure,
    RuntimeUnavailable,
    network_class,
)
from dockyard.runtimes.docker import bootstrap, containers, naming
from dockyard.runtimes.docker.builds import build_context
from dockyard.runtimes.docker.errors import translate
from dockyard.runtimes.docker.spec import AgentFolders, BindMount, WorkspaceSpec, from_plan
from dockyard.runtimes.docker.states import from_state, timestamp
from dockyard.runtimes.plan import AgentLink, AgentPlan, LinkKind, WorkspacePlan, agent_command
from tests.plans import workspace_plan
from tests.runtimes.conftest import tar_gz

SPEC = WorkspaceSpec(
    workspace_id="w1", name="w", owner="o", owner_id="1", template="t", build_id="b", image="i"
)


def test_names_of_a_workspaces_objects() -> None:
    assert (naming.container_name("abc"), naming.network_name("abc"), naming.volume_name("abc")) == (
        "dockyard-ws-abc",
        "dockyard-ws-abc",
        "dockyard-home-abc",
    )
    with pytest.raises(ValueError, match="cannot be used in a Docker object name"):
        naming.container_name("../etc")


def test_template_image_tags_follow_content_and_build_args() -> None:
    spec = ImageSpec(template="My Template!", content_hash="a" * 64, dockerfile="Dockerfile")
    tag = naming.template_image_tag(spec)

    assert tag.startswith("dockyard/template-my-template:")
    assert len(tag.rsplit(":", 1)[1]) == 16
    assert naming.template_image_tag(ImageSpec(**{**spec.__dict__, "build_args": {"A": "1"}})) != tag
    assert naming.template_image_tag(ImageSpec(**{**spec.__dict__, "content_hash": "b" * 64})) != tag
    assert naming.template_image_tag(ImageSpec(**{**spec.__dict__, "template": "my template"})) == tag


@pytest.mark.parametrize(
    ("status", "exit_code", "oom", "expected"),
    [
        ("running", 0, False, Observation("w", ContainerState.RUNNING, None, "running", "10.0.0.2")),
        ("paused", 0, False, Observation("w", ContainerState.RUNNING, None, "paused", "10.0.0.2")),
        ("created", 0, False, Observation("w", ContainerState.STOPPED, None, "created, never started")),
        ("exited", 143, False, Observation("w", ContainerState.STOPPED, 143, "stopped")),
        ("exited", 137, False, Observation("w", ContainerState.STOPPED, 137, "stopped")),
        ("exited", 137, True, Observation("w", ContainerState.OOM_KILLED, 137, "killed: out of memory")),
        ("exited", 1, True, Observation("w", ContainerState.OOM_KILLED, 1, "killed: out of memory")),
        ("exited", 0, False, Observation("w", ContainerState.EXITED, 0, "exited with code 0")),
        ("dead", 2, False, Observation("w", ContainerState.EXITED, 2, "exited with code 2")),
        ("removing", 0, False, Observation("w", ContainerState.MISSING, None, "being removed")),
    ],
)
def test_docker_states_in_dockyards_words(
    status: str, exit_code: int, oom: bool, expected: Observation
) -> None:
    assert from_state("w", status, exit_code, oom, "", "10.0.0.2") == expected


def test_engine_timestamps() -> None:
    assert timestamp("0001-01-01T00:00:00Z") is None
    assert timestamp("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456789)
    assert timestamp("2024-05-01T12:00:00+02:00") == 1714557600.0


def _api_error(status: int, message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/x"
    try:
        docker.errors.create_api_error_from_http_exception(requests.HTTPError(response=response))
    except docker.errors.APIError as exc:
        exc.explanation = message
        return exc
    raise AssertionError("no error")


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (
            requests.exceptions.ConnectionError(OSError(111, "Connection refused")),
            RuntimeUnavailable,
            "Docker engine unreachable at unix:///x.sock: Connection refused",
        ),
        (
            requests.exceptions.ReadTimeout("slow"),
            RuntimeUnavailable,
            "Docker engine at unix:///x.sock did not answer in time",
        ),
        (
            docker.errors.ImageNotFound("gone", explanation="No such image: a:b"),
            ImageNotFound,
            "Image not found: No such image: a:b",
        ),
        (_api_error(409, "name in use"), ContainerConflict, "Docker engine conflict: name in use"),
        (_api_error(500, "driver failed"), RuntimeFailure, "Docker engine error: driver failed"),
    ],
)
def test_docker_errors_become_runtime_errors(
    raised: Exception, expected: type[Exception], message: str
) -> None:
    with pytest.raises(expected) as failure, translate("unix:///x.sock"):
        raise raised

    assert type(failure.value) is expected
    assert str(failure.value) == message
    assert failure.value.__cause__ is raised


@pytest.mark.parametrize(
    "raised", [_api_error(400, "bad parameter"), docker.errors.NotFound("x"), KeyError("y")]
)
def test_unrecognised_errors_pass_through(raised: Exception) -> None:
    with pytest.raises(type(raised)) as failure, translate("unix:///x.sock"):
        raise raised
    assert failure.value is raised


def test_the_setup_script_is_valid_sh_and_quotes_what_it_is_given() -> None:
    spec = WorkspaceSpec(
        **{
            **SPEC.__dict__,
            "command": ["echo", "it's $HOME; `rm -rf /`"],
            "files": {"/opt/a b/x'y": b"1", "notes/__COMMAND__.txt": b"#!/bin/sh\n"},
        }
    )
    text = bootstrap.script(spec)

    subprocess.run(["sh", "-n"], input=text.encode(), check=True)
    assert (
        'exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- echo \'it\'"\'"\'s $HOME; `rm -rf /`\''
        in text
    )
    assert "place_root /.dockyard/files/0 '/opt/a b/x'\"'\"'y' 0644" in text
    assert "place_user /.dockyard/files/1 /home/dev/notes/__COMMAND__.txt 0755" in text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"user": "Bad User"}, "not a valid Linux user name"),
        ({"files": {"../escape": b""}}, "not a plain path"),
        ({"command": []}, "command is empty"),
        ({"uid": 0}, "must not be root"),
    ],
)
def test_the_setup_script_refuses_bad_input(change: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        bootstrap.script(WorkspaceSpec(**{**SPEC.__dict__, **change}))


def test_the_files_archive_is_root_only() -> None:
    spec = WorkspaceSpec(**{**SPEC.__dict__, "files": {"a": b"secret"}})
    archive = bootstrap.archive(spec)
    assert archive is not None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        modes = {m.name: (m.mode, m.uid) for m in tar.getmembers()}

    assert modes == {
        ".dockyard": (0o700, 0),
        ".dockyard/files": (0o700, 0),
        ".dockyard/files/0": (0o600, 0),
    }


def test_without_files_nothing_is_copied_and_the_script_is_the_entrypoint() -> None:
    assert bootstrap.archive(SPEC) is None
    assert bootstrap.entrypoint(SPEC) == ["/bin/sh", "-c", bootstrap.script(SPEC), "dockyard-setup"]


def test_a_build_context_folder_becomes_the_root() -> None:
    archive = tar_gz({"dockyard.yaml": "x", "ctx/Dockerfile": "FROM scratch", "ctx/sub/.hidden": "h"})

    with tarfile.open(fileobj=io.BytesIO(build_context(archive, "ctx/")), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "sub/.hidden"]
    assert build_context(archive, ".") is archive


def test_a_plan_becomes_a_container_spec_with_the_agents_mounts() -> None:
    plan = workspace_plan(
        workspace_id="w1",
        name="w",
        owner="o",
        owner_id="1",
        template="t",
        build_id="b",
        image="i",
        cpu=1.5,
        memory_bytes=2**30,
        user="alice",
        egress="none",
        env={"A": "1"},
        agent=AgentPlan(link=AgentLink(kind=LinkKind.UNIX_SOCKET)),
    )

    spec = from_plan(plan, AgentFolders(Path("/data/agent"), Path("/data/agents")))

    assert spec == WorkspaceSpec(
        workspace_id="w1",
        name="w",
        owner="o",
        owner_id="1",
        template="t",
        build_id="b",
        image="i",
        user="alice",
        cpu=1.5,
        memory_bytes=2**30,
        egress="none",
        # The token stays in the link folder: only where to find it is in the environment.
        env={
            "A": "1",
            "DOCKYARD_AGENT_SOCKET": "/run/dockyard/link/hub.sock",
            "DOCKYARD_AGENT_TOKEN_FILE": "/run/dockyard/link/token",
        },
        command=list(agent_command()),
        mounts=(
            BindMount("/data/agent", "/run/dockyard"),
            BindMount("/data/agents/w1", "/run/dockyard/link"),
        ),
    )
    # Without an agent the workspace only stays up, and nothing of the host is mounted.
    bare = from_plan(plan.model_copy(update={"agent": None}), None)
    assert (bare.command, bare.mounts, bare.env) == (["sleep", "infinity"], (), {"A": "1"})


def test_an_agent_link_docker_cannot_give_is_refused() -> None:
    plan = workspace_plan(
        workspace_id="w1", name="w", owner="o", owner_id="1", template="t", build_id="b", image="i"
    )
    # A network link needs the URL the agent dials; the token still travels in the link folder.
    networked = plan.model_copy(
        update={"agent": AgentPlan(link=AgentLink(kind=LinkKind.NETWORK, url="https://x.invalid"))}
    )
    spec = from_plan(networked, AgentFolders(Path("/a"), Path("/b")))
    assert spec.env["DOCKYARD_URL"] == "https://x.invalid"
    assert "DOCKYARD_AGENT_SOCKET" not in spec.env
    assert spec.env["DOCKYARD_AGENT_TOKEN_FILE"].startswith("/run/dockyard/link")
    no_url = plan.model_copy(update={"agent": AgentPlan(link=AgentLink(kind=LinkKind.NETWORK))})
    with pytest.raises(RuntimeFailure, match="cannot give the agent a network link"):
        from_plan(no_url, AgentFolders(Path("/a"), Path("/b")))
    socketed = plan.model_copy(update={"agent": AgentPlan()})
    with pytest.raises(RuntimeFailure, match="cannot give the agent a unix_socket link"):
        from_plan(socketed, None)


def test_a_plan_survives_its_json_form() -> None:
    plan = workspace_plan(
        workspace_id="w1",
        name="w",
        owner="o",
        owner_id="1",
        template="t",
        build_id="b",
        image="i",
        gpu=1,
        disk_bytes=2**30,
        egress="none",
        files={"notes.txt": "hi"},
        agent=AgentPlan(link=AgentLink(kind=LinkKind.NETWORK, url="https://x.invalid")),
    )
    stored = json.loads(json.dumps(plan.stored()))
    assert WorkspacePlan.from_stored(stored) == plan


def test_egress_none_takes_no_network_and_its_own_configuration_hash() -> None:
    assert [network_class(egress) for egress in ("none", "all", "allowlist")] == [None, "open", "internal"]
    fields = {"workspace_id": "w1", "name": "n", "owner": "o", "owner_id": "1", "template": "t"}
    closed = from_plan(workspace_plan(**fields, build_id="b", image="i", egress="none"), None)
    opened = from_plan(workspace_plan(**fields, build_id="b", image="i", egress="all"), None)

    def args(spec: WorkspaceSpec, network: str | None) -> dict[str, object]:
        return containers.create_args(
            spec, network=network, volume="v", image_id="sha256:1", nano_cpus=10**9, config_hash="h"
        )

    assert (args(closed, None)["network_mode"], "network" in args(closed, None)) == ("none", False)
    assert (args(closed, None)["network_disabled"], "network_disabled" in args(opened, "net")) == (
        True,
        False,
    )
    # The engine writes no /etc/hosts for a container without a network: the setup step does.
    assert ("named localhost" in bootstrap.script(closed), "named localhost" in bootstrap.script(opened)) == (
        True,
        False,
    )
    assert (args(opened, "net")["network"], "network_mode" in args(opened, "net")) == ("net", False)
    # A container made on an internal bridge before egress "none" meant no network is made again once.
    hashes = {containers.config_hash(spec, "sha256:1", 10**9) for spec in (closed, opened)}
    assert len(hashes) == 2

"""The plan of a configuration: what the image, the user, the environment, the resources, the ports and the
lifecycle steps become, and the refusals that are about features and run arguments."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from typing import Any

import pytest

from dockyard.errors import ValidationFailed
from dockyard.templates.devcontainer import layer
from dockyard.templates.devcontainer.features import Feature, option_env_name
from dockyard.templates.devcontainer.plan import Mount, Port, Step, read

CONFIG = ".devcontainer/devcontainer.json"


def _feature(folder: str, meta: dict[str, Any]) -> dict[str, bytes]:
    return {
        f".devcontainer/{folder}/devcontainer-feature.json": json.dumps(meta).encode(),
        f".devcontainer/{folder}/install.sh": b"#!/bin/sh\n",
    }


def _plan(config: dict[str, Any], **files: bytes) -> Any:
    return read({CONFIG: json.dumps(config).encode(), **files}, CONFIG, workspace_name="repo")


def test_an_image_configuration_and_what_it_sets() -> None:
    plan = _plan(
        {
            "image": "dockyard/base:bookworm",
            "containerEnv": {"A": "1"},
            "runArgs": ["--init", "-e", "B=2", "--env=C=3"],
            "remoteEnv": {"PATH": "${containerEnv:PATH}:/x"},
            "containerUser": "builder",
            "hostRequirements": {"cpus": 4, "memory": "8gb", "storage": "32gb", "gpu": "optional"},
            "forwardPorts": [3000, "localhost:5432"],
            "appPort": 3000,
            "portsAttributes": {"3000": {"label": "web", "onAutoForward": "notify"}},
            "postStartCommand": ["make", "serve"],
            "overrideCommand": False,
        }
    )
    assert (plan.image, plan.dockerfile, plan.user) == ("dockyard/base:bookworm", None, "builder")
    assert plan.container_env == {"A": "1", "B": "2", "C": "3"}
    assert plan.remote_env == {"PATH": "${containerEnv:PATH}:/x"}
    assert plan.resources == {"cpu": 4, "memory": "8Gi", "disk": "32Gi"}
    assert plan.ports == (Port(3000, "web", "notify"), Port(5432))
    assert plan.steps == (Step("postStartCommand", ("make", "serve")),)
    assert plan.wait_for == "updateContentCommand"
    assert plan.workspace_folder == "/workspaces/repo"
    assert plan.notes == (
        "overrideCommand false: the Dockyard agent is the container's command all the same",
    )


def test_a_dockerfile_build_is_read_relative_to_the_configuration() -> None:
    plan = _plan(
        {
            "build": {
                "dockerfile": "Dockerfile",
                "context": "..",
                "args": {"V": "1"},
                "target": "dev",
                "cacheFrom": "dockyard/cache:1",
            }
        },
        **{".devcontainer/Dockerfile": b"FROM scratch\n"},
    )
    assert (plan.dockerfile, plan.context, plan.build_args, plan.target, plan.cache_from) == (
        ".devcontainer/Dockerfile",
        ".",
        {"V": "1"},
        "dev",
        ("dockyard/cache:1",),
    )


def test_features_install_in_the_order_the_specification_gives() -> None:
    files = {
        **_feature("c", {"id": "c", "installsAfter": ["a"]}),
        **_feature("a", {"id": "a", "installsAfter": ["b"]}),
        **_feature("b", {"id": "b", "options": {"my-option.x": {"type": "boolean", "default": True}}}),
    }
    config: dict[str, Any] = {"image": "x", "features": {"./c": {}, "./a": {}, "./b": {"my-option.x": False}}}
    assert [f.id for f in _plan(config, **files).features] == ["./b", "./a", "./c"]
    config["overrideFeatureInstallOrder"] = ["./c"]
    ordered = _plan(config, **files).features
    assert [f.id for f in ordered] == ["./c", "./b", "./a"]
    assert ordered[1] == Feature(
        "./b",
        ".devcontainer/b",
        {
            "MY_OPTION_X": "false",
            "_REMOTE_USER": "dev",
            "_CONTAINER_USER": "dev",
            "_REMOTE_USER_HOME": "/home/dev",
            "_CONTAINER_USER_HOME": "/home/dev",
        },
        {},
    )


def test_option_names_become_variables_as_the_specification_says() -> None:
    assert [option_env_name(n) for n in ("version", "install-tools", "9lives", "a.b")] == [
        "VERSION",
        "INSTALL_TOOLS",
        "_LIVES",
        "A_B",
    ]


def _problems(config: dict[str, Any], **files: bytes) -> list[tuple[str, str, int | None]]:
    with pytest.raises(ValidationFailed) as info:
        _plan(config, **files)
    return [(v.field, v.detail, v.line) for v in info.value.validations]


def test_features_and_run_arguments_dockyard_cannot_honour() -> None:
    problems = _problems(
        {
            "image": "x",
            "features": {
                "https://example.com/f.tgz": {},
                "../../x": {},
                "./priv": {},
                "./opt": {"nope": 1},
            },
            "runArgs": ["--network=host", "--cap-add", "SYS_ADMIN", "--shm-size=1g"],
            "mounts": [{"type": "bind", "source": "/etc", "target": "/cache"}],
            "remoteEnv": {"X": None},
        },
        **_feature("priv", {"id": "priv", "privileged": True}),
        **_feature("opt", {"id": "opt", "options": {}}),
    )
    assert [(field, detail) for field, detail, _ in problems] == [
        ("runArgs[0]", "'--network=host' chooses the container's network, which workspaces may not"),
        ("runArgs[1]", "'--cap-add' adds capabilities, which workspaces may not"),
        ("runArgs[3]", "'--shm-size=1g' is not one of the run arguments Dockyard accepts (--env, --init)"),
        (
            "mounts[0]",
            "binds from the host are refused: /etc is not in a folder an admin allows "
            "(dockyard server --devcontainer-allow-host-bind PATH)",
        ),
        (
            'features["https://example.com/f.tgz"]',
            "feature https://example.com/f.tgz cannot be fetched: its registry example.com is not reachable "
            "from this server; copy the feature into the repository and name it as a local feature (./name)",
        ),
        ('features["../../x"]', "../../x leaves the template's files"),
        ('features["./priv"]', "the feature asks for privileged, which Dockyard does not grant features"),
        ('features["./opt"].nope', "'nope' is not an option of the feature"),
        ("remoteEnv.X", "unsetting a variable is not supported"),
    ]


def test_the_layer_installs_features_then_copies_the_repository() -> None:
    files = {
        CONFIG: json.dumps({"image": "x", "features": {"./f": {"who": "me"}}}).encode(),
        **_feature("f", {"id": "f", "options": {"who": {"type": "string"}}, "containerEnv": {"F": "on"}}),
        "src/main.py": b"print()\n",
        "dockyard.yaml": b"name: repo\n",
    }
    plan = read(files, CONFIG, workspace_name="repo")
    archive = layer.context(plan, files, base_image="sha256:abc", modes={})
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = tar.getnames()
        dockerfile = tar.extractfile(layer.DOCKERFILE).read().decode()  # type: ignore[union-attr]
    assert "workspace/src/main.py" in names
    assert "workspace/dockyard.yaml" not in names
    assert "features/0/install.sh" in names
    assert dockerfile.splitlines() == [
        "FROM sha256:abc",
        "USER root",
        "COPY features/0/ /opt/dockyard-features/0/",
        "RUN cd /opt/dockyard-features/0 && chmod +x install.sh && env WHO=me _CONTAINER_USER=dev "
        "_CONTAINER_USER_HOME=/home/dev _REMOTE_USER=dev _REMOTE_USER_HOME=/home/dev ./install.sh "
        "&& rm -rf /opt/dockyard-features/0",
        'ENV F="on"',
        "RUN mkdir -p /workspaces/repo",
        "COPY --chown=1000:1000 workspace/ /workspaces/repo/",
        "RUN chown 1000:1000 /workspaces/repo",
    ]
    # Same files, same bytes: the layer's image is cached by this content.
    assert layer.context(plan, files, base_image="sha256:abc", modes={}) == archive


def test_the_plan_imports_no_server_code() -> None:
    code = (
        "import sys, dockyard.templates.devcontainer.plan, dockyard.templates.devcontainer.layer; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'docker')"
        " or m.startswith(('dockyard.api', 'dockyard.store', 'dockyard.runtimes'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_nothing_from_the_configuration_can_add_a_line_to_the_generated_dockerfile() -> None:
    problems = _problems(
        {"image": "x", "workspaceFolder": "/w\nRUN curl evil", "features": {"./f": {}}},
        **_feature("f", {"id": "f", "containerEnv": {"A\nRUN x": "1"}}),
    )
    assert [(field, detail) for field, detail, _ in problems] == [
        ('features["./f"]', "the feature's containerEnv name 'A\\nRUN x' is not a variable name"),
        ("workspaceFolder", "'/w\\nRUN curl evil' is not a plain absolute folder"),
    ]


def test_mounts_in_both_forms_become_volumes_or_allowed_binds() -> None:
    config = {
        "image": "x",
        "mounts": [
            "source=cache-${devcontainerId},target=/cache,type=volume",
            {"type": "volume", "target": "/var/lib/data"},
            "type=bind,src=/srv/shared/data,dst=/data,readonly",
            {"type": "bind", "source": "/srv/shared", "target": "/shared"},
        ],
    }
    data = {CONFIG: json.dumps(config).encode()}
    plan = read(data, CONFIG, workspace_name="repo", host_binds=["/srv/shared/"])
    assert plan.mounts == (
        Mount("volume", "/cache", "cache-dc"),
        Mount("volume", "/var/lib/data", "anon-var-lib-data"),
        Mount("bind", "/data", "/srv/shared/data", read_only=True),
        Mount("bind", "/shared", "/srv/shared"),
    )
    # Without the admin's folder the binds are refused, each naming its property; nothing else is.
    with pytest.raises(ValidationFailed) as info:
        read(data, CONFIG, workspace_name="repo", host_binds=["/srv/other", "/"])
    assert [(v.field, v.file, v.line) for v in info.value.validations] == [
        ("mounts[2]", CONFIG, 1),
        ("mounts[3]", CONFIG, 1),
    ]
    assert all("binds from the host are refused" in v.detail for v in info.value.validations)


def test_mounts_dockyard_refuses() -> None:
    problems = _problems(
        {
            "image": "x",
            "mounts": [
                "type=tmpfs,target=/tmp/x",
                {"type": "volume", "source": "v", "target": "/home/dev/x"},
                {"type": "volume", "source": "v", "target": "relative"},
                {"type": "volume", "source": "bad name!", "target": "/x"},
                "type=bind,source=/srv/../etc,target=/y",
            ],
        }
    )
    assert [(field, detail) for field, detail, _ in problems] == [
        ("mounts[0]", "tmpfs mounts are not supported (volume, and bind where an admin allows it)"),
        (
            "mounts[1]",
            "target /home/dev/x would hide the workspace's own files (/home, /run/dockyard, /proc, /sys, /dev)",
        ),
        ("mounts[2]", "target 'relative' is not a plain absolute folder"),
        ("mounts[3]", "volume name 'bad name!' is not a Docker volume name"),
        (
            "mounts[4]",
            "binds from the host are refused: /srv/../etc is not in a folder an admin allows "
            "(dockyard server --devcontainer-allow-host-bind PATH)",
        ),
    ]


def test_update_remote_user_uid_renumbers_the_remote_user_unless_turned_off() -> None:
    files = {CONFIG: json.dumps({"image": "x", "remoteUser": "vscode"}).encode()}
    plan = read(files, CONFIG, workspace_name="repo")
    assert plan.update_remote_user_uid is True
    dockerfile = _dockerfile(plan, files)
    assert f"RUN {layer.update_uid_script('vscode')}" in dockerfile
    assert "REMOTE_USER=vscode NEW_UID=1000 NEW_GID=1000;" in dockerfile

    files = {
        CONFIG: json.dumps({"image": "x", "remoteUser": "vscode", "updateRemoteUserUID": False}).encode()
    }
    plan = read(files, CONFIG, workspace_name="repo")
    assert plan.update_remote_user_uid is False
    assert "NEW_UID" not in _dockerfile(plan, files)
    assert plan.notes == (
        "updateRemoteUserUID false: the image's user keeps its uid, which must be the home volume's (1000)",
    )


def _dockerfile(plan: Any, files: dict[str, bytes]) -> str:
    archive = layer.context(plan, files, base_image="sha256:abc", modes={})
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.extractfile(layer.DOCKERFILE).read().decode()  # type: ignore[union-attr]

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.errors import NotFound, Validation, ValidationFailed
from dockyard.templates.devcontainer import read_configuration
from dockyard.templates.devcontainer.model import (
    ComposeSource,
    DockerfileSource,
    HostRequirements,
    ImageSource,
    MountSpec,
)
from dockyard.templates.devcontainer.reader import MAX_BYTES

ENV = {"HOME": "/home/me", "USER_NAME": "ann"}
CONFIG = ".devcontainer/devcontainer.json"


def workspace(tmp_path: Path, text: str, *, where: str = CONFIG) -> Path:
    folder = tmp_path / "project"
    path = folder / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return folder


def refused(folder: Path, **options: object) -> list[Validation]:
    with pytest.raises(ValidationFailed) as caught:
        read_configuration(str(folder), env=ENV, **options)  # type: ignore[arg-type]
    return caught.value.validations


def test_full_configuration_resolves_into_the_typed_model(tmp_path: Path) -> None:
    folder = workspace(
        tmp_path,
        """{
          // A Dockerfile build with everything a workspace needs.
          "name": "app",
          "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"U": "${localEnv:USER_NAME}"},
                    "target": "dev", "cacheFrom": "cache:latest"},
          "features": {"./local-feature": {"greeting": "hi"}, "ghcr.io/x/y:1": true},
          "overrideFeatureInstallOrder": ["ghcr.io/x/y"],
          "onCreateCommand": "make setup",
          "postCreateCommand": ["npm", "ci"],
          "postStartCommand": {"web": "npm start", "db": ["pg_ctl", "start"]},
          "waitFor": "postCreateCommand",
          "containerEnv": {"WS": "${containerWorkspaceFolder}"},
          "remoteEnv": {"PATH": "${containerEnv:PATH}:/x", "UNSET": null},
          "remoteUser": "dev",
          "updateRemoteUserUID": true,
          "mounts": ["type=volume,source=cache,target=/cache",
                     {"type": "bind", "source": "${localWorkspaceFolder}/data", "target": "/data"}],
          "forwardPorts": [3000, "db:5432"],
          "portsAttributes": {"3000": {"label": "web"}},
          "hostRequirements": {"cpus": 2, "memory": "4gb", "gpu": "optional"},
          "extensions": ["ms-python.python"],
        }""",
    )
    result = read_configuration(str(folder), env=ENV)
    model = result.model
    assert model.config_file == str(folder / CONFIG)
    assert (model.workspace_folder, model.workspace_mount) == (
        "/workspaces/project",
        f"type=bind,source={folder},target=/workspaces/project",
    )
    assert model.source == DockerfileSource(
        dockerfile="Dockerfile", context="..", args={"U": "ann"}, target="dev", cache_from=("cache:latest",)
    )
    assert model.features == {"./local-feature": {"greeting": "hi"}, "ghcr.io/x/y:1": True}
    assert model.override_feature_install_order == ("ghcr.io/x/y",)
    assert model.lifecycle == {
        "onCreateCommand": "make setup",
        "postCreateCommand": ("npm", "ci"),
        "postStartCommand": {"web": "npm start", "db": ("pg_ctl", "start")},
    }
    assert model.wait_for == "postCreateCommand"
    assert model.container_env == {"WS": "/workspaces/project"}
    assert model.remote_env == {"PATH": "${containerEnv:PATH}:/x", "UNSET": None}
    assert (model.remote_user, model.update_remote_user_uid) == ("dev", True)
    assert model.mounts == (
        "type=volume,source=cache,target=/cache",
        MountSpec(type="bind", source=f"{folder}/data", target="/data"),
    )
    assert model.forward_ports == (3000, "db:5432")
    assert model.ports_attributes == {"3000": {"label": "web"}}
    assert model.host_requirements == HostRequirements(cpus=2, memory="4gb", gpu="optional")
    assert model.vscode_extensions == ("ms-python.python",)
    assert result.warnings == []


def test_sources(tmp_path: Path) -> None:
    image = read_configuration(str(workspace(tmp_path / "a", '{"image": "debian"}')), env=ENV)
    assert image.model.source == ImageSource("debian")
    compose = read_configuration(
        str(
            workspace(
                tmp_path / "b",
                '{"dockerComposeFile": ["a.yml", "b.yml"], "service": "app", '
                '"runServices": ["app"], "workspaceFolder": "/src"}',
            )
        ),
        env=ENV,
    )
    assert compose.model.source == ComposeSource(
        files=("a.yml", "b.yml"), service="app", run_services=("app",)
    )
    assert compose.workspace == {"workspaceFolder": "/src"}
    legacy = read_configuration(
        str(workspace(tmp_path / "c", '{"dockerFile": "D", "context": "."}')), env=ENV
    )
    assert legacy.model.source == DockerfileSource(dockerfile="D", context=".")
    assert legacy.configuration == {"dockerFile": "D", "context": "."}


def test_compose_without_a_folder_works_in_the_root(tmp_path: Path) -> None:
    result = read_configuration(
        str(workspace(tmp_path, '{"dockerComposeFile": "c.yml", "service": "s"}')), env=ENV
    )
    assert result.workspace == {"workspaceFolder": "/"}


def test_workspace_inside_a_git_repository_mounts_the_repository(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    folder = workspace(repository / "services", '{"image": "x"}')
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    result = read_configuration(str(folder), env=ENV)
    assert result.workspace == {
        "workspaceFolder": "/workspaces/repo/services/project",
        "workspaceMount": f"type=bind,source={repository},target=/workspaces/repo",
    }
    alone = read_configuration(str(folder), env=ENV, mount_workspace_git_root=False)
    assert alone.workspace["workspaceMount"] == f"type=bind,source={folder},target=/workspaces/project"


def test_configured_folder_and_mount_are_resolved(tmp_path: Path) -> None:
    folder = workspace(
        tmp_path,
        '{"image": "x", "workspaceFolder": "/w/${localWorkspaceFolderBasename}", '
        '"workspaceMount": "source=${localWorkspaceFolder},target=/w/${localWorkspaceFolderBasename},type=bind", '
        '"containerEnv": {"B": "${containerWorkspaceFolderBasename}"}}',
    )
    result = read_configuration(str(folder), env=ENV)
    assert result.workspace == {
        "workspaceFolder": "/w/project",
        "workspaceMount": f"source={folder},target=/w/project,type=bind",
    }
    assert result.model.container_env == {"B": "project"}


def test_a_path_with_a_comma_is_quoted_in_the_mount(tmp_path: Path) -> None:
    folder = workspace(tmp_path / "a,b", '{"image": "x"}')
    assert read_configuration(str(folder), env=ENV).workspace["workspaceMount"] == (
        f'type=bind,"source={folder}",target=/workspaces/project'
    )


def test_devcontainer_id(tmp_path: Path) -> None:
    folder = workspace(
        tmp_path, '{"image": "x", "mounts": ["source=cache-${devcontainerId},target=/c,type=volume"]}'
    )
    plain = read_configuration(str(folder), env=ENV)
    assert plain.model.mounts == ("source=cache-${devcontainerId},target=/c,type=volume",)
    labels = {"devcontainer.local_folder": str(folder), "devcontainer.config_file": str(folder / CONFIG)}
    assert plain.devcontainer_id() == plain.devcontainer_id(labels)
    labelled = read_configuration(str(folder), env=ENV, id_labels=labels)
    assert labelled.model.mounts == (f"source=cache-{plain.devcontainer_id()},target=/c,type=volume",)


def test_reference_output_marks_an_explicit_config_as_a_file(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "x"}', where="elsewhere/devcontainer.json")
    result = read_configuration(
        str(folder), config_file=str(folder / "elsewhere" / "devcontainer.json"), env=ENV
    )
    assert result.reference_output()["configuration"]["configFilePath"] == {
        "$mid": 1,
        "fsPath": f"{folder}/elsewhere/devcontainer.json",
        "path": f"{folder}/elsewhere/devcontainer.json",
        "scheme": "file",
    }


def test_reference_json_uses_javascript_key_order(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "x", "portsAttributes": {"9229": {}, "b": {}, "3000": {}}}')
    text = read_configuration(str(folder), env=ENV).reference_json()
    assert '"portsAttributes":{"3000":{},"9229":{},"b":{}}' in text
    assert json.loads(text)["workspace"]["workspaceFolder"] == "/workspaces/project"


# -- bad input ------------------------------------------------------------------------------------------


def test_not_an_object(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '["image"]')
    assert refused(folder) == [
        Validation("(root)", 'expected an object such as {"image": "…"}', file=CONFIG, line=1)
    ]


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{\n  "image": "x"\n  "name": "y"\n}')
    assert refused(folder) == [
        Validation(
            "(syntax)",
            "expected ',' or '}' after property 'image', found '\"' (column 3)",
            file=CONFIG,
            line=3,
        )
    ]


def test_wrong_types_are_all_named_with_their_lines(tmp_path: Path) -> None:
    folder = workspace(
        tmp_path,
        '{\n "image": ["debian"],\n "forwardPorts": [3000, 70000, true],\n "postStartCommand": {"a": 1},\n'
        ' "mounts": [{"source": "x"}],\n "waitFor": "later",\n "build": {"args": {"A": 1}},\n'
        ' "features": {"ghcr.io/x/y:1": 3}\n}',
    )
    assert refused(folder) == [
        Validation("image", "must be a string, not a list", file=CONFIG, line=2),
        Validation("build.args.A", "must be a string, not the number 1", file=CONFIG, line=7),
        Validation(
            'features["ghcr.io/x/y:1"]',
            "feature options must be an object, a string or a boolean, not the number 3",
            file=CONFIG,
            line=8,
        ),
        Validation(
            "postStartCommand.a",
            "must be a string or a list of strings, not the number 1",
            file=CONFIG,
            line=4,
        ),
        Validation(
            "waitFor",
            "must be one of onCreateCommand, updateContentCommand, postCreateCommand, "
            "postStartCommand, postAttachCommand, not 'later'",
            file=CONFIG,
            line=6,
        ),
        Validation("mounts[0]", "a mount object needs a target", file=CONFIG, line=5),
        Validation("forwardPorts[1]", "70000 is not a port number (0-65535)", file=CONFIG, line=3),
        Validation(
            "forwardPorts[2]", "must be a port number or 'host:port', not a boolean", file=CONFIG, line=3
        ),
    ]


def test_legacy_property_errors_point_at_the_legacy_line(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{\n "image": "x",\n "extensions": "not-a-list"\n}')
    assert refused(folder) == [
        Validation("extensions", "must be a list of extension ids", file=CONFIG, line=3)
    ]


def test_unknown_variables_warn_and_a_strict_read_refuses_them(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{\n "image": "x",\n "containerEnv": {\n  "A": "${nope:x}"\n }\n}')
    warning = Validation("containerEnv.A", "unknown variable ${nope:x}", file=CONFIG, line=4)
    result = read_configuration(str(folder), env=ENV)
    assert result.warnings == [warning]
    assert result.model.container_env == {"A": "${nope:x}"}
    assert refused(folder, strict=True) == [warning]


def test_a_variable_without_a_name_is_refused_with_its_line(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{\n "image": "x",\n "remoteEnv": {"A": "${localEnv}"}\n}')
    assert refused(folder) == [
        Validation(
            "remoteEnv.A",
            "${localEnv} cannot be resolved: no environment variable name is given",
            file=CONFIG,
            line=3,
        )
    ]


def test_a_strict_read_needs_something_to_run(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"name": "nothing"}')
    assert read_configuration(str(folder), env=ENV).model.source is None
    assert refused(folder, strict=True) == [
        Validation(
            "(root)",
            'needs one of "image", "build.dockerfile" (or "dockerFile") or "dockerComposeFile"',
            file=CONFIG,
            line=1,
        )
    ]
    compose = workspace(tmp_path / "c", '{\n "dockerComposeFile": "c.yml"\n}')
    assert refused(compose, strict=True) == [
        Validation(
            "dockerComposeFile",
            'needs "service", the Compose service to use as the dev container',
            file=CONFIG,
            line=2,
        )
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    folder = workspace(tmp_path, "x" * (MAX_BYTES + 1))
    assert refused(folder) == [Validation("(file)", f"larger than {MAX_BYTES} bytes", file=CONFIG)]
    (folder / CONFIG).write_bytes(b'{\n"image": "\xff"}')
    assert refused(folder) == [Validation("(file)", "not valid UTF-8", file=CONFIG, line=2)]
    with pytest.raises(NotFound, match=r"Dev container config \(.*/missing.json\) not found"):
        read_configuration(str(folder), config_file=str(folder / "missing.json"), env=ENV)


def test_the_reader_imports_no_server_code() -> None:
    # The CLI imports this package; it must not drag in the web server, the database or Docker.
    code = (
        "import sys, dockyard.templates.devcontainer; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'docker', 'starlette')"
        " or m.startswith(('dockyard.api', 'dockyard.store', 'dockyard.runtimes', 'dockyard.templates.service'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"

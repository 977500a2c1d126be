from __future__ import annotations

from typing import Any

import pytest

from dockyard.templates.devcontainer.variables import (
    SubstitutionContext,
    Unknown,
    VariableError,
    default_id_labels,
    devcontainer_id,
    substitute,
    substitute_container_env,
    substitute_devcontainer_id,
)

CONTEXT = SubstitutionContext(
    env={"HOME": "/home/me", "EMPTY": "", "GREETING": "hello"},
    local_workspace_folder="/home/me/src/project",
    container_workspace_folder="/workspaces/project",
)


def resolve(value: Any, context: SubstitutionContext = CONTEXT) -> Any:
    resolved, unknown = substitute(context, value)
    assert unknown == []
    return resolved


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${localEnv:GREETING}", "hello"),
        ("${env:GREETING}", "hello"),
        ("${localEnv:MISSING}", ""),
        ("${localEnv:MISSING:fallback}", "fallback"),
        # Only the first default counts, as in the reference (the rest of a split on ':' is dropped).
        ("${localEnv:MISSING:a:b}", "a"),
        ("${localEnv:EMPTY:unused}", ""),
        ("${localEnv:GREETING:unused}", "hello"),
        ("${localWorkspaceFolder}", "/home/me/src/project"),
        ("${localWorkspaceFolderBasename}", "project"),
        ("${containerWorkspaceFolder}", "/workspaces/project"),
        ("${containerWorkspaceFolderBasename}", "project"),
        ("a-${localEnv:GREETING}-${localWorkspaceFolderBasename}-b", "a-hello-project-b"),
        ("no variables", "no variables"),
    ],
)
def test_reading_time_variables(text: str, expected: str) -> None:
    assert resolve(text) == expected


def test_variables_resolve_in_nested_values_and_keep_other_types() -> None:
    value = {"a": ["${localEnv:GREETING}", 1, True, None], "b": {"c": "${localWorkspaceFolderBasename}"}}
    assert resolve(value) == {"a": ["hello", 1, True, None], "b": {"c": "project"}}


def test_container_side_variables_are_left_for_the_container() -> None:
    value = {"remoteEnv": {"P": "${containerEnv:PATH}", "I": "${devcontainerId}"}}
    assert resolve(value) == value


def test_folders_unknown_without_a_workspace_stay_as_written() -> None:
    context = SubstitutionContext(env={})
    assert resolve("${localWorkspaceFolder} ${containerWorkspaceFolderBasename}", context) == (
        "${localWorkspaceFolder} ${containerWorkspaceFolderBasename}"
    )


def test_container_folder_may_use_local_variables() -> None:
    context = SubstitutionContext(
        env={},
        local_workspace_folder="/src/app",
        container_workspace_folder="/work/${localWorkspaceFolderBasename}",
    )
    assert (
        resolve("${containerWorkspaceFolder}|${containerWorkspaceFolderBasename}", context) == "/work/app|app"
    )


def test_unknown_variables_are_kept_and_reported_with_their_path() -> None:
    value = {"image": "img:${templateOption:variant}", "mounts": ["${nope}", "x"]}
    resolved, unknown = substitute(CONTEXT, value)
    assert resolved == value
    assert unknown == [
        Unknown(("image",), "${templateOption:variant}"),
        Unknown(("mounts", 0), "${nope}"),
    ]


def test_variables_of_other_tools_and_escaped_ones_are_not_reported() -> None:
    value = {
        "customizations": {"vscode": {"settings": {"path": "${workspaceFolder}/x"}}},
        "containerEnv": {"FORMAT": "[$${severity}] $${message}"},
    }
    resolved, unknown = substitute(CONTEXT, value)
    assert (resolved, unknown) == (value, [])


@pytest.mark.parametrize("text", ["${localEnv}", "${env}", "${containerEnv}"])
def test_a_variable_without_a_name_is_refused(text: str) -> None:
    with pytest.raises(VariableError) as caught:
        substitute(CONTEXT, {"remoteEnv": {"X": text}})
    assert (caught.value.path, caught.value.text) == (("remoteEnv", "X"), text)
    assert caught.value.detail == "no environment variable name is given"


def test_container_env_resolves_inside_the_container() -> None:
    value = {"P": "${containerEnv:PATH}", "M": "${containerEnv:MISSING:def}", "L": "${localEnv:X}"}
    assert substitute_container_env({"PATH": "/bin"}, value) == {
        "P": "/bin",
        "M": "def",
        "L": "${localEnv:X}",
    }


def test_devcontainer_id_is_the_reference_ones() -> None:
    # Values computed with the reference's own function (Node.js crypto, BigInt base 32).
    labels = default_id_labels("/home/me/project", "/home/me/project/.devcontainer/devcontainer.json")
    assert devcontainer_id(labels) == "0e2es6og3jdg1b2jsrd207bkmrel58lonuoltdmegr184l4o50mg"
    assert devcontainer_id({"b": 'é\n"x', "a": "1"}) == "0qrivqpsclmg01kg1gjgcieaj5odv6aohgcp3us007tqr19dkv2h"
    # Label order does not matter: the reference sorts them.
    assert devcontainer_id({"a": "1", "b": 'é\n"x'}) == devcontainer_id({"b": 'é\n"x', "a": "1"})


def test_devcontainer_id_substitution() -> None:
    labels = {"devcontainer.local_folder": "/p"}
    assert substitute_devcontainer_id(labels, {"m": "cache-${devcontainerId}"}) == {
        "m": f"cache-{devcontainer_id(labels)}"
    }


def test_shell_expansions_in_commands_are_the_shells() -> None:
    value = {
        "postCreateCommand": "echo ${HOME} ${PATH:-/bin}",
        "postStartCommand": {"a": "cd ${HOME}", "b": ["echo", "${HOME}"]},
        "onCreateCommand": ["ls", "${nope}"],
    }
    resolved, unknown = substitute(CONTEXT, value)
    assert resolved == value
    # Lists run without a shell, so a `${...}` there reaches the program as written: that is reported.
    assert unknown == [
        Unknown(("postStartCommand", "b", 1), "${HOME}"),
        Unknown(("onCreateCommand", 1), "${nope}"),
    ]

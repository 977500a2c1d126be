"""Type checks for every property the specification defines, each problem named by its path.

The reference CLI passes any value through, so a property of the wrong type would only fail later, in the
middle of a build; here it is refused on reading, together with every other problem in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dockyard.templates.devcontainer.jsonc import Path

LIFECYCLE_HOOKS = (
    "initializeCommand",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
)
WAIT_FOR = LIFECYCLE_HOOKS[1:]
USER_ENV_PROBES = ("none", "loginShell", "loginInteractiveShell", "interactiveShell")
SHUTDOWN_ACTIONS = ("none", "stopContainer", "stopCompose")

Problem = tuple[Path, str]
Check = Callable[[Any, Path], list[Problem]]


def _type(expected: type | tuple[type, ...], words: str) -> Check:
    def check(value: Any, path: Path) -> list[Problem]:
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in _tuple(expected))
        return [] if ok else [(path, f"must be {words}, not {_describe(value)}")]

    return check


def _tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


_STR = _type(str, "a string")
_BOOL = _type(bool, "true or false")
_OBJECT = _type(dict, "an object")


def _list_of(item: Check, words: str) -> Check:
    def check(value: Any, path: Path) -> list[Problem]:
        if not isinstance(value, list):
            return [(path, f"must be a list of {words}, not {_describe(value)}")]
        return [p for index, element in enumerate(value) for p in item(element, (*path, index))]

    return check


def _map_of(item: Check, words: str) -> Check:
    def check(value: Any, path: Path) -> list[Problem]:
        if not isinstance(value, dict):
            return [(path, f"must be an object of {words}, not {_describe(value)}")]
        return [p for key, element in value.items() for p in item(element, (*path, key))]

    return check


def _one_of(*checks: Check, words: str) -> Check:
    def check(value: Any, path: Path) -> list[Problem]:
        for candidate in checks:
            if not candidate(value, path):
                return []
        return [(path, f"must be {words}, not {_describe(value)}")]

    return check


def _enum(values: tuple[str, ...]) -> Check:
    def check(value: Any, path: Path) -> list[Problem]:
        if isinstance(value, str) and value in values:
            return []
        return [(path, f"must be one of {', '.join(values)}, not {value!r}")]

    return check


def _port(value: Any, path: Path) -> list[Problem]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [] if 0 <= value <= 65535 else [(path, f"{value} is not a port number (0-65535)")]
    return (
        []
        if isinstance(value, str)
        else [(path, f"must be a port number or 'host:port', not {_describe(value)}")]
    )


def _nullable_str(value: Any, path: Path) -> list[Problem]:
    return (
        []
        if value is None or isinstance(value, str)
        else [(path, f"must be a string or null, not {_describe(value)}")]
    )


_STR_LIST = _list_of(_STR, "strings")
_STR_MAP = _map_of(_STR, "strings")
_COMMAND_FORM = _one_of(_STR, _STR_LIST, words="a string or a list of strings")
_COMMAND = _one_of(
    _STR,
    _STR_LIST,
    _map_of(_COMMAND_FORM, "commands"),
    words="a string, a list of strings or an object of commands",
)


def _command(value: Any, path: Path) -> list[Problem]:
    # Name the broken command inside an object form rather than the whole hook.
    if isinstance(value, dict):
        return _map_of(_COMMAND_FORM, "commands")(value, path)
    return _COMMAND(value, path)


def _mount(value: Any, path: Path) -> list[Problem]:
    if isinstance(value, str):
        return []
    if not isinstance(value, dict):
        return [(path, f"must be a mount string or object, not {_describe(value)}")]
    problems: list[Problem] = []
    if "target" not in value:
        problems.append((path, "a mount object needs a target"))
    for key in ("target", "source"):
        if key in value:
            problems += _STR(value[key], (*path, key))
    if "type" in value:
        problems += _enum(("bind", "volume"))(value["type"], (*path, "type"))
    return problems


def _feature(value: Any, path: Path) -> list[Problem]:
    if isinstance(value, bool | str | dict):
        return []
    return [(path, f"feature options must be an object, a string or a boolean, not {_describe(value)}")]


def _object_with(fields: Mapping[str, Check]) -> Check:
    def check(value: Any, path: Path) -> list[Problem]:
        if not isinstance(value, dict):
            return [(path, f"must be an object, not {_describe(value)}")]
        return [p for key, item in fields.items() if key in value for p in item(value[key], (*path, key))]

    return check


_BUILD = _object_with(
    {
        "dockerfile": _STR,
        "context": _STR,
        "target": _STR,
        "args": _STR_MAP,
        "cacheFrom": _one_of(_STR, _STR_LIST, words="a string or a list of strings"),
        "options": _STR_LIST,
    }
)
_HOST_REQUIREMENTS = _object_with(
    {
        "cpus": _type(int, "a whole number of CPUs"),
        "memory": _STR,
        "storage": _STR,
        "gpu": _one_of(_BOOL, _enum(("optional",)), _OBJECT, words="true, false, 'optional' or an object"),
    }
)

CHECKS: dict[str, Check] = {
    "name": _STR,
    "image": _STR,
    "build": _BUILD,
    "dockerFile": _STR,
    "context": _STR,
    "dockerComposeFile": _one_of(_STR, _STR_LIST, words="a file name or a list of file names"),
    "service": _STR,
    "runServices": _STR_LIST,
    "workspaceFolder": _STR,
    # null is the reference's way to say "no workspace mount" (it passes it through as such).
    "workspaceMount": _nullable_str,
    "features": _map_of(_feature, "feature options"),
    "overrideFeatureInstallOrder": _STR_LIST,
    **{hook: _command for hook in LIFECYCLE_HOOKS},
    "waitFor": _enum(WAIT_FOR),
    "containerEnv": _STR_MAP,
    "remoteEnv": _map_of(_nullable_str, "strings or nulls"),
    "containerUser": _STR,
    "remoteUser": _STR,
    "updateRemoteUserUID": _BOOL,
    "userEnvProbe": _enum(USER_ENV_PROBES),
    "mounts": _list_of(_mount, "mounts"),
    "forwardPorts": _list_of(_port, "ports"),
    "portsAttributes": _map_of(_OBJECT, "port attributes"),
    "otherPortsAttributes": _OBJECT,
    "appPort": _one_of(_port, _list_of(_port, "ports"), words="a port or a list of ports"),
    "runArgs": _STR_LIST,
    "capAdd": _STR_LIST,
    "securityOpt": _STR_LIST,
    "init": _BOOL,
    "privileged": _BOOL,
    "overrideCommand": _BOOL,
    "shutdownAction": _enum(SHUTDOWN_ACTIONS),
    "hostRequirements": _HOST_REQUIREMENTS,
    # Only VS Code's part is Dockyard's business (it installs the extensions); other tools' parts are theirs.
    "customizations": _object_with({"vscode": _object_with({"extensions": _STR_LIST, "settings": _OBJECT})}),
}


def check(config: Mapping[str, Any]) -> list[Problem]:
    """Every property of the wrong type, with its path; an empty list when the configuration is well-typed."""
    return [p for key, checker in CHECKS.items() if key in config for p in checker(config[key], (key,))]

"""The typed form of a resolved devcontainer.json, and the checks that make it safe to build one.

The reference CLI passes any value through; a property of the wrong type would only fail later, in the middle of
a build. Here each property the specification defines is checked for its type once, on reading, and named with
its line when it is wrong. Properties the specification does not define are kept untouched (tools add their own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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

CommandForm = str | tuple[str, ...]
LifecycleCommand = CommandForm | dict[str, CommandForm]
FeatureOptions = bool | str | dict[str, Any]


@dataclass(frozen=True)
class ImageSource:
    image: str
    kind: Literal["image"] = "image"


@dataclass(frozen=True)
class DockerfileSource:
    dockerfile: str
    """Relative to the folder of devcontainer.json, as written."""
    context: str | None = None
    """Relative to the folder of devcontainer.json; None means the Dockerfile's folder."""
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    cache_from: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    kind: Literal["dockerfile"] = "dockerfile"


@dataclass(frozen=True)
class ComposeSource:
    files: tuple[str, ...]
    service: str
    run_services: tuple[str, ...] | None = None
    kind: Literal["compose"] = "compose"


Source = ImageSource | DockerfileSource | ComposeSource


@dataclass(frozen=True)
class MountSpec:
    """The object form of a mount; the string form is kept as written (Docker's `--mount` syntax)."""

    target: str
    type: str = "volume"
    source: str | None = None


@dataclass(frozen=True)
class HostRequirements:
    cpus: int | None = None
    memory: str | None = None
    storage: str | None = None
    gpu: bool | Literal["optional"] | dict[str, Any] | None = None


@dataclass(frozen=True)
class DevContainer:
    """A resolved configuration: reading-time variables substituted, legacy properties moved."""

    config_file: str
    workspace_folder: str | None
    workspace_mount: str | None
    source: Source | None
    name: str | None = None
    features: dict[str, FeatureOptions] = field(default_factory=dict)
    override_feature_install_order: tuple[str, ...] = ()
    lifecycle: dict[str, LifecycleCommand] = field(default_factory=dict)
    """Only the hooks the file has, in the order they run."""
    wait_for: str | None = None
    container_env: dict[str, str] = field(default_factory=dict)
    remote_env: dict[str, str | None] = field(default_factory=dict)
    container_user: str | None = None
    remote_user: str | None = None
    update_remote_user_uid: bool | None = None
    user_env_probe: str | None = None
    mounts: tuple[str | MountSpec, ...] = ()
    forward_ports: tuple[int | str, ...] = ()
    ports_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    other_ports_attributes: dict[str, Any] | None = None
    app_port: tuple[int | str, ...] = ()
    run_args: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    init: bool | None = None
    privileged: bool | None = None
    override_command: bool | None = None
    shutdown_action: str | None = None
    host_requirements: HostRequirements | None = None
    customizations: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The whole resolved configuration, including properties this model has no field for."""

    @property
    def vscode_extensions(self) -> tuple[str, ...]:
        vscode = self.customizations.get("vscode")
        extensions = vscode.get("extensions") if isinstance(vscode, dict) else None
        return tuple(e for e in extensions if isinstance(e, str)) if isinstance(extensions, list) else ()


# -- checks: each returns problems as (path, detail) -------------------------------------------------------

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
    "customizations": _OBJECT,
}


def check(config: Mapping[str, Any]) -> list[Problem]:
    """Every property of the wrong type, with its path; an empty list when the configuration is well-typed."""
    return [p for key, checker in CHECKS.items() if key in config for p in checker(config[key], (key,))]


def source_problems(config: Mapping[str, Any]) -> list[Problem]:
    """What stops the configuration from describing a container at all (checked before building one)."""
    source = build_source(config)
    if source is None:
        return [((), 'needs one of "image", "build.dockerfile" (or "dockerFile") or "dockerComposeFile"')]
    if isinstance(source, ComposeSource) and "service" not in config:
        return [(("dockerComposeFile",), 'needs "service", the Compose service to use as the dev container')]
    return []


# -- building the model from a checked configuration ---------------------------------------------------------


def build(config: Mapping[str, Any], *, config_file: str, workspace: Mapping[str, Any]) -> DevContainer:
    """The typed model of a configuration that `check` accepted."""
    get = config.get
    host = get("hostRequirements")
    return DevContainer(
        config_file=config_file,
        workspace_folder=workspace.get("workspaceFolder"),
        workspace_mount=workspace.get("workspaceMount"),
        source=build_source(config),
        name=get("name"),
        features=dict(get("features") or {}),
        override_feature_install_order=tuple(get("overrideFeatureInstallOrder") or ()),
        lifecycle={hook: _lifecycle(config[hook]) for hook in LIFECYCLE_HOOKS if hook in config},
        wait_for=get("waitFor"),
        container_env=dict(get("containerEnv") or {}),
        remote_env=dict(get("remoteEnv") or {}),
        container_user=get("containerUser"),
        remote_user=get("remoteUser"),
        update_remote_user_uid=get("updateRemoteUserUID"),
        user_env_probe=get("userEnvProbe"),
        mounts=tuple(_mount_spec(m) for m in get("mounts") or ()),
        forward_ports=tuple(get("forwardPorts") or ()),
        ports_attributes=dict(get("portsAttributes") or {}),
        other_ports_attributes=get("otherPortsAttributes"),
        app_port=_as_tuple(get("appPort")),
        run_args=tuple(get("runArgs") or ()),
        cap_add=tuple(get("capAdd") or ()),
        security_opt=tuple(get("securityOpt") or ()),
        init=get("init"),
        privileged=get("privileged"),
        override_command=get("overrideCommand"),
        shutdown_action=get("shutdownAction"),
        host_requirements=_host_requirements(host) if isinstance(host, dict) else None,
        customizations=dict(get("customizations") or {}),
        raw=dict(config),
    )


def build_source(config: Mapping[str, Any]) -> Source | None:
    """Which container the configuration describes, in the reference's order (a Dockerfile, an image, then
    Compose); the legacy `dockerFile` and `context` are read as `build.dockerfile` and `build.context`."""
    build_spec = config["build"] if isinstance(config.get("build"), dict) else {}
    dockerfile = config["dockerFile"] if "dockerFile" in config else build_spec.get("dockerfile")
    if dockerfile is not None:
        context = config.get("context") if "dockerFile" in config else build_spec.get("context")
        cache_from = build_spec.get("cacheFrom")
        return DockerfileSource(
            dockerfile=dockerfile,
            context=context,
            args=dict(build_spec.get("args") or {}),
            target=build_spec.get("target"),
            cache_from=(cache_from,) if isinstance(cache_from, str) else tuple(cache_from or ()),
            options=tuple(build_spec.get("options") or ()),
        )
    if "image" in config:
        return ImageSource(image=config["image"])
    if "dockerComposeFile" in config:
        files = config["dockerComposeFile"]
        services = config.get("runServices")
        return ComposeSource(
            files=(files,) if isinstance(files, str) else tuple(files),
            service=config.get("service", ""),
            run_services=tuple(services) if services is not None else None,
        )
    return None


def _lifecycle(value: Any) -> LifecycleCommand:
    if isinstance(value, dict):
        return {
            name: command if isinstance(command, str) else tuple(command) for name, command in value.items()
        }
    return value if isinstance(value, str) else tuple(value)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _mount_spec(value: str | dict[str, Any]) -> str | MountSpec:
    if isinstance(value, str):
        return value
    return MountSpec(target=value["target"], type=value.get("type", "volume"), source=value.get("source"))


def _host_requirements(value: dict[str, Any]) -> HostRequirements:
    return HostRequirements(
        cpus=value.get("cpus"), memory=value.get("memory"), storage=value.get("storage"), gpu=value.get("gpu")
    )

"""The typed form of a resolved devcontainer.json, which building and running the container consume.

Built only from a configuration `schema.check` accepted. Properties the specification does not define are kept
in `raw` untouched (tools add their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dockyard.templates.devcontainer.schema import LIFECYCLE_HOOKS, Problem

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

"""What Dockyard will do with a dev container configuration: the image recipe, the environment, the user, the
resources, the ports and the lifecycle steps, checked for what Dockyard cannot honour safely.

Pure, like the rest of this package: it works on a template's files held in memory (path -> bytes), so the
server (at push and at start) and `dockyard up --dry-run` compute the same plan.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dockyard.errors import Validation, ValidationFailed
from dockyard.templates.devcontainer import jsonc, lockfile, model
from dockyard.templates.devcontainer.discovery import ConfigLocation
from dockyard.templates.devcontainer.features import Feature, Refuse, inside, read_features
from dockyard.templates.devcontainer.reader import _field, resolve
from dockyard.templates.devcontainer.schema import LIFECYCLE_HOOKS

# The hooks the control plane runs, in the specification's order; initializeCommand is refused (see _refusals).
RUN_HOOKS = LIFECYCLE_HOOKS[1:]
# Run once per workspace; the others once per start.
CREATE_HOOKS = ("onCreateCommand", "updateContentCommand", "postCreateCommand")
DEFAULT_WAIT_FOR = "updateContentCommand"
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Written into the generated Dockerfile: nothing that could end a line or an instruction.
_FOLDER = re.compile(r"^/[A-Za-z0-9._@+/-]*$")
# runArgs that need no translation or are harmless here.
_SAFE_FLAGS = frozenset({"--init", "--rm", "-t", "--tty", "-i", "--interactive"})
# runArgs that would widen what the container may do on the host: refused, never "not supported".
_UNSAFE = {
    "--privileged": "runs the container privileged",
    "--cap-add": "adds capabilities",
    "--security-opt": "changes the security profile",
    "--device": "passes a host device in",
    "--pid": "shares a host namespace",
    "--ipc": "shares a host namespace",
    "--uts": "shares a host namespace",
    "--userns": "changes the user namespace",
    "--network": "chooses the container's network",
    "--net": "chooses the container's network",
    "-v": "mounts host paths",
    "--volume": "mounts host paths",
    "--mount": "mounts host paths",
    "-p": "publishes ports on the host",
    "--publish": "publishes ports on the host",
    "--cgroup-parent": "moves the container out of its cgroup",
    "--user": "sets the user (use remoteUser)",
    "-u": "sets the user (use remoteUser)",
}


@dataclass(frozen=True)
class Port:
    port: int
    label: str = ""
    on_auto_forward: str = ""


@dataclass(frozen=True)
class Mount:
    """One of `mounts`: a named volume of the workspace (kept across stops, removed with the workspace) or, where
    an admin allows the host folder, a bind."""

    kind: str
    """`volume` or `bind`."""
    target: str
    source: str
    """The volume's name (made unique to the workspace by the runtime), or the host folder of a bind."""
    read_only: bool = False


@dataclass(frozen=True)
class Step:
    hook: str
    command: Any
    """A string (run by a shell), a list (run without one) or an object of named commands (run in parallel)."""

    @property
    def once(self) -> bool:
        return self.hook in CREATE_HOOKS


@dataclass(frozen=True)
class Plan:
    config_file: str
    """Path of the devcontainer.json among the template's files."""
    image: str | None
    dockerfile: str | None
    """Among the template's files, when the image is built."""
    context: str
    build_args: dict[str, str]
    target: str | None
    cache_from: tuple[str, ...]
    features: tuple[Feature, ...]
    workspace_folder: str
    container_env: dict[str, str]
    remote_env: dict[str, str]
    user: str | None
    """The workspace user from remoteUser/containerUser; None keeps the template's."""
    resources: dict[str, Any]
    """From hostRequirements, in the manifest's `resources` shape."""
    ports: tuple[Port, ...]
    steps: tuple[Step, ...]
    wait_for: str
    extensions: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    """What was taken differently from the specification, for the dry run and the build log."""
    mounts: tuple[Mount, ...] = ()
    update_remote_user_uid: bool = True
    """Give the image's remoteUser the home volume's uid/gid (the specification's default on Linux)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def pins(self) -> dict[str, lockfile.Pin]:
        """The lockfile's entries: what each OCI feature resolved to."""
        return {feature.id: feature.pin for feature in self.features if feature.pin is not None}


def read(
    files: Mapping[str, bytes],
    config_file: str,
    *,
    workspace_name: str,
    env: Mapping[str, str] | None = None,
    host_binds: Sequence[str] | None = (),
) -> Plan:
    """The plan of the configuration at `config_file` among `files`; ValidationFailed names file, line and
    property for everything that cannot be honoured.

    `host_binds`: the host folders an admin lets bind mounts use (`dockyard server
    --devcontainer-allow-host-bind`); None skips that check, for a version that passed it when it was pushed.
    """
    data = files.get(config_file)
    if data is None:
        raise ValidationFailed(
            f"{config_file} is not among the template's files.",
            [Validation("devcontainer", f"file {config_file!r} is not in the template")],
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"{config_file} is not UTF-8 text.", [Validation("(file)", "not valid UTF-8", file=config_file)]
        ) from exc
    root = f"/src/{workspace_name}"
    result = resolve(
        text,
        location=ConfigLocation(posixpath.join(root, config_file), discovered=True),
        workspace_folder=root,
        shown_name=config_file,
        env=env or {},
        strict=True,
    )
    document = jsonc.parse(text)
    config = result.model
    problems: list[Validation] = []

    def refuse(path: tuple[str | int, ...], detail: str) -> None:
        problems.append(Validation(_field(path), detail, file=config_file, line=document.line_of(path)))

    base = posixpath.dirname(config_file)
    image: str | None = None
    dockerfile: str | None = None
    context: str | None = "."
    args: dict[str, str] = {}
    target: str | None = None
    cache_from: tuple[str, ...] = ()
    source = config.source
    if isinstance(source, model.ComposeSource):
        refuse(
            ("dockerComposeFile",),
            "Docker Compose is not available on this server (neither `docker compose` nor `docker-compose`); "
            "use an image or a Dockerfile",
        )
    elif isinstance(source, model.ImageSource):
        image = source.image
    elif isinstance(source, model.DockerfileSource):
        dockerfile = inside(base, source.dockerfile)
        context = inside(base, source.context) if source.context else posixpath.dirname(dockerfile or "")
        if dockerfile is None or dockerfile not in files:
            where: tuple[str, ...] = (
                ("dockerFile",) if "dockerFile" in config.raw else ("build", "dockerfile")
            )
            refuse(where, f"{source.dockerfile!r} is not among the files next to {config_file}")
        if context is None:
            refuse(("build", "context"), f"{source.context!r} leaves the template's files")
        args, target, cache_from = dict(source.args), source.target, source.cache_from
        if source.options:
            refuse(("build", "options"), "extra `docker build` options are not supported")

    if "initializeCommand" in config.raw:
        refuse(
            ("initializeCommand",),
            "runs on the machine that starts the container, here Dockyard's control plane, which runs no "
            "template's commands; move it to onCreateCommand",
        )
    if config.privileged:
        refuse(("privileged",), "workspaces never run privileged")
    if config.cap_add:
        refuse(("capAdd",), "workspaces get no extra capabilities")
    if config.security_opt:
        refuse(("securityOpt",), "workspaces keep Dockyard's security options")
    container_env = dict(config.container_env)
    _run_args(config.run_args, container_env, refuse)
    mounts = _mounts(config.mounts, host_binds, refuse)
    if "workspaceMount" in config.raw:
        refuse(("workspaceMount",), "the repository's files are copied into the image, not mounted")
    user = config.remote_user or config.container_user
    if user is not None:
        prop = "remoteUser" if config.remote_user else "containerUser"
        if user == "root" or user == "0":
            refuse((prop,), "workspaces run as an unprivileged user; name a non-root user or leave it out")
        elif not _USER.match(user):
            refuse((prop,), f"{user!r} is not a user name Dockyard can create")
    pins, lock_problems = lockfile.read(files, config_file)
    problems += lock_problems
    features = read_features(files, base, config, refuse, user=user or "", pins=pins)
    for name, value in config.remote_env.items():
        if value is None:
            refuse(("remoteEnv", name), "unsetting a variable is not supported")
    workspace_folder = result.workspace.get("workspaceFolder") or f"/workspaces/{workspace_name}"
    if not _FOLDER.match(workspace_folder) or "/../" in workspace_folder + "/":
        refuse(("workspaceFolder",), f"{workspace_folder!r} is not a plain absolute folder")
    resources = _resources(config.host_requirements)
    ports = _ports(config, refuse)
    steps = tuple(Step(hook, config.lifecycle[hook]) for hook in RUN_HOOKS if hook in config.lifecycle)
    if problems:
        raise ValidationFailed(f"{config_file} asks for what Dockyard cannot honour.", problems)
    notes = []
    if config.override_command is False:
        notes.append("overrideCommand false: the Dockyard agent is the container's command all the same")
    if config.update_remote_user_uid is False and user is not None:
        notes.append(
            "updateRemoteUserUID false: the image's user keeps its uid, which must be the home volume's (1000)"
        )
    return Plan(
        config_file=config_file,
        image=image,
        dockerfile=dockerfile,
        context=context or ".",
        build_args=args,
        target=target,
        cache_from=cache_from,
        features=features,
        workspace_folder=workspace_folder,
        container_env=container_env,
        remote_env={k: v for k, v in config.remote_env.items() if v is not None},
        user=user,
        resources=resources,
        ports=ports,
        steps=steps,
        wait_for=config.wait_for or DEFAULT_WAIT_FOR,
        extensions=config.vscode_extensions,
        notes=tuple(notes),
        mounts=mounts,
        update_remote_user_uid=config.update_remote_user_uid is not False,
    )


# Docker's volume names; the runtime prefixes the workspace's id.
_VOLUME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Where the workspace's own mounts are: a mount there would hide the home or the agent.
_RESERVED = ("/home", "/run/dockyard", "/proc", "/sys", "/dev")


def _mount_fields(text: str) -> dict[str, str]:
    """Docker's `--mount` syntax, as the specification's string form: `type=volume,source=x,target=/y`."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, has_value, value = part.partition("=")
        key = key.strip().lower()
        fields[
            {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}.get(key, key)
        ] = value.strip() if has_value else "true"
    return fields


def _mounts(
    entries: tuple[str | model.MountSpec, ...], host_binds: Sequence[str] | None, refuse: Refuse
) -> tuple[Mount, ...]:
    found: list[Mount] = []
    for index, entry in enumerate(entries):
        path = ("mounts", index)
        if isinstance(entry, model.MountSpec):
            kind, target, source, read_only = entry.type, entry.target, entry.source or "", False
        else:
            fields = _mount_fields(entry)
            kind, target, source = (
                fields.get("type", "volume"),
                fields.get("target", ""),
                fields.get("source", ""),
            )
            read_only = fields.get("readonly", "false").lower() in ("true", "1")
        target = posixpath.normpath(target) if target else ""
        if not target.startswith("/") or not _FOLDER.match(target):
            refuse(path, f"target {target!r} is not a plain absolute folder")
            continue
        if target == "/" or any(target == r or target.startswith(r + "/") for r in _RESERVED):
            refuse(path, f"target {target} would hide the workspace's own files ({', '.join(_RESERVED)})")
            continue
        if kind == "volume":
            # An anonymous volume gets a name from its target, so that a restart finds it again. The runtime
            # makes every name unique to the workspace, which is what `${devcontainerId}` is for in a name.
            name = source.replace("${devcontainerId}", "dc") or "anon" + target.replace("/", "-")
            if not _VOLUME.match(name):
                refuse(path, f"volume name {name!r} is not a Docker volume name")
                continue
            found.append(Mount("volume", target, name, read_only))
        elif kind == "bind":
            if host_binds is not None and not _bind_allowed(source, host_binds):
                refuse(
                    path,
                    f"binds from the host are refused: {source or '(no source)'} is not in a folder an admin "
                    "allows (dockyard server --devcontainer-allow-host-bind PATH)",
                )
                continue
            found.append(Mount("bind", target, posixpath.normpath(source), read_only))
        else:
            refuse(path, f"{kind} mounts are not supported (volume, and bind where an admin allows it)")
    return tuple(found)


def _bind_allowed(source: str, allowed: Sequence[str]) -> bool:
    if not source.startswith("/") or "/../" in source + "/":
        return False
    source = posixpath.normpath(source)
    for folder in allowed:
        folder = posixpath.normpath(folder)
        if folder != "/" and (source == folder or source.startswith(folder + "/")):
            return True
    return False


def _run_args(run_args: tuple[str, ...], env: dict[str, str], refuse: Refuse) -> None:
    index = 0
    while index < len(run_args):
        arg = run_args[index]
        flag, has_value, inline = arg.partition("=")
        path = ("runArgs", index)
        if flag in ("-e", "--env"):
            value = inline if has_value else (run_args[index + 1] if index + 1 < len(run_args) else "")
            index += 1 if has_value else 2
            name, _, val = value.partition("=")
            if not name:
                refuse(path, f"{arg!r} sets no variable")
            env[name] = val
            continue
        index += 1
        if flag in _SAFE_FLAGS:
            continue
        if flag in _UNSAFE:
            refuse(path, f"{arg!r} {_UNSAFE[flag]}, which workspaces may not")
        else:
            refuse(path, f"{arg!r} is not one of the run arguments Dockyard accepts (--env, --init)")
        if not has_value and index < len(run_args) and not run_args[index].startswith("-"):
            index += 1  # the flag's value


def _resources(host: model.HostRequirements | None) -> dict[str, Any]:
    if host is None:
        return {}
    resources: dict[str, Any] = {}
    if host.cpus:
        resources["cpu"] = host.cpus
    if host.memory:
        resources["memory"] = _size(host.memory)
    if host.storage:
        resources["disk"] = _size(host.storage)
    if host.gpu is True or isinstance(host.gpu, dict):
        resources["gpu"] = 1
    return resources


def _size(text: str) -> str:
    # The specification writes 4gb / 32gb; Dockyard's sizes read 4Gi.
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt])b", text.strip().lower())
    return f"{match.group(1)}{match.group(2).upper()}i" if match else text


def _ports(config: model.DevContainer, refuse: Refuse) -> tuple[Port, ...]:
    ports: list[Port] = []
    for index, entry in enumerate((*config.forward_ports, *config.app_port)):
        number: int | None = None
        if isinstance(entry, int):
            number = entry
        elif isinstance(entry, str):
            host, _, port = entry.rpartition(":")
            if host not in ("", "localhost", "127.0.0.1") or not port.isdigit():
                refuse(
                    ("forwardPorts", index), f"{entry!r}: only ports of the workspace itself are forwarded"
                )
                continue
            number = int(port)
        if number is None:
            continue
        attributes = config.ports_attributes.get(str(number), {})
        ports.append(
            Port(
                number,
                label=str(attributes.get("label", "")),
                on_auto_forward=str(attributes.get("onAutoForward", "")),
            )
        )
    return tuple(dict.fromkeys(ports))

"""The `dockyard.yaml` template manifest schema.

It lives in the SDK so that `dockyard templates push` can check a manifest before uploading it and so that the
server, the CLI and users read one definition. YAML loading with line numbers and Jinja2 rendering are the
server's business (`dockyard.templates`).

Validation runs in two modes. A manifest as written may hold `{{ parameters.x }}` in any string, so by default
the value checks skip strings that contain a template expression; after rendering, the same model is validated
with the context ``{"rendered": True}``, where every value is checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dockyard_sdk.egress import parse_entry
from dockyard_sdk.names import Name, ParameterName
from dockyard_sdk.units import parse_duration, parse_size

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Sized for a 2-CPU workspace: a build with `make -j` and a language server stay well under it, a fork bomb
# stops at it.
DEFAULT_PIDS = 1024
MIN_DISK = 16 * 2**20
MIN_PIDS = 64
MAX_PIDS = 1_000_000


def _templated(value: Any, info: ValidationInfo) -> bool:
    rendered = bool(info.context and info.context.get("rendered"))
    return not rendered and isinstance(value, str) and "{{" in value


class _Strict(BaseModel):
    # Attribute docstrings become the fields' descriptions in the OpenAPI document (read by the server, as for
    # `models.Model`).
    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)


class ParameterType(StrEnum):
    """A parameter's value type."""

    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    LIST_STRING = "list(string)"


class ParameterFormat(StrEnum):
    """What a string parameter holds, checked (and normalized) beyond its type."""

    GIT_URL = "git-url"
    GIT_REF = "git-ref"


class ParameterOption(_Strict):
    """One choice of a parameter with a fixed set of values."""

    name: str = Field(description="Label shown in the dashboard.")
    value: str | int | float | bool = Field(
        description="The value the parameter takes when this option is chosen."
    )
    description: str = ""
    """More about the option, for the dashboard."""


class ParameterValidation(_Strict):
    """Limits on a parameter's value, beyond its type."""

    regex: str | None = Field(None, description="The value must match this regular expression (strings).")
    min: float | None = Field(None, description="Smallest allowed value (numbers).")
    max: float | None = Field(None, description="Largest allowed value (numbers).")
    error: str | None = Field(
        None, description="Message shown instead of the default; may use {value}, {min}, {max}."
    )

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _range(self) -> ParameterValidation:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class ParameterSpec(_Strict):
    """A typed input that a template version declares and a workspace supplies."""

    name: ParameterName
    """The name used in `parameters.<name>` and in API requests."""
    display_name: str = ""
    """Label shown in the dashboard; the name when empty."""
    description: str = ""
    """What the parameter is for."""
    type: ParameterType = ParameterType.STRING
    """string, number, bool or list(string)."""
    default: str | int | float | bool | list[str] | None = None
    """The value used when none is given."""
    required: bool | None = Field(None, description="Defaults to true when there is no default.")
    options: list[ParameterOption] = Field(default_factory=list)
    """The allowed values; any value of the type when empty."""
    validation: ParameterValidation | None = None
    """Limits on the value."""
    format: ParameterFormat | None = Field(
        None,
        description="For strings: `git-url` (a URL, host/path or local path; `github.com/org/repo` becomes "
        "https://github.com/org/repo) or `git-ref` (a branch or tag name). Neither may start with `-`.",
    )
    mutable: bool = Field(False, description="Whether the value may change after the workspace is created.")

    @field_validator("options", mode="before")
    @classmethod
    def _plain_options(cls, value: Any) -> Any:
        # `options: [small, large]` is the common case; expand it to {name, value} pairs.
        if isinstance(value, list):
            return [o if isinstance(o, dict) else {"name": str(o), "value": o} for o in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        if self.validation is not None:
            if self.validation.regex is not None and self.type != ParameterType.STRING:
                raise ValueError("validation.regex applies only to string parameters")
            ranged = self.validation.min is not None or self.validation.max is not None
            if ranged and self.type != ParameterType.NUMBER:
                raise ValueError("validation.min/max apply only to number parameters")
        if self.options and self.type in (ParameterType.BOOL, ParameterType.LIST_STRING):
            raise ValueError(f"options are not supported for {self.type} parameters")
        if self.format is not None and self.type != ParameterType.STRING:
            raise ValueError("format applies only to string parameters")
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class Resources(_Strict):
    """The CPU, memory, GPU, disk and process limits of a workspace."""

    cpu: float | str = Field(2, description="CPU cores (fractions allowed).")
    memory: str | int = Field("4Gi", description="Memory limit, e.g. 4Gi.")
    gpu: int | str = Field(0, description="Number of GPUs.")
    disk: str | int | None = Field(
        None,
        description="Size of the home volume, e.g. 10Gi: a file system of its own of that size where the "
        "runtime can make one (writes past it fail with ENOSPC).",
    )
    pids: int = Field(
        DEFAULT_PIDS,
        description=f"Most processes and threads the workspace may run at once ({MIN_PIDS}-{MAX_PIDS}); a fork "
        "past it fails with EAGAIN.",
    )

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: float | str, info: ValidationInfo) -> float | str:
        if _templated(value, info):
            return value
        try:
            cpu = float(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a number of CPUs") from exc
        if not 0 < cpu <= 1024:
            raise ValueError(f"{cpu:g} CPUs is outside 0-1024")
        return cpu

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, value: str | int | None, info: ValidationInfo) -> str | int | None:
        if value is None or _templated(value, info):
            return value
        if parse_size(value) <= 0:
            raise ValueError("must be above zero")
        return value

    @field_validator("disk")
    @classmethod
    def _disk(cls, value: str | int | None, info: ValidationInfo) -> str | int | None:
        if value is None or _templated(value, info):
            return value
        if parse_size(value) < MIN_DISK:
            # The home becomes an ext4 file system of this size; smaller, its own metadata would fill it.
            raise ValueError(f"{value} is below the smallest home disk, 16Mi")
        return value

    @field_validator("pids", mode="before")
    @classmethod
    def _pids(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number of processes")
        if not MIN_PIDS <= value <= MAX_PIDS:
            raise ValueError(
                f"{value} is outside {MIN_PIDS}-{MAX_PIDS} (the agent, a shell and a few tools need {MIN_PIDS})"
            )
        return value

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, value: int | str, info: ValidationInfo) -> int | str:
        if _templated(value, info):
            return value
        try:
            gpu = int(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a number of GPUs") from exc
        if gpu < 0:
            raise ValueError("cannot be negative")
        return gpu

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)


class BuildSpec(_Strict):
    """How to build the workspace image from a Dockerfile among the template's files."""

    dockerfile: str = "Dockerfile"
    """The Dockerfile's path within the build context."""
    context: str = "."
    """The build context: a folder among the template's files."""
    args: dict[str, str] = Field(default_factory=dict)
    """Build arguments (`--build-arg`)."""


class AppShare(StrEnum):
    """Who may open an app: its owner, any signed-in user, or anyone."""

    OWNER = "owner"
    AUTHENTICATED = "authenticated"
    PUBLIC = "public"


class AppHealthcheck(_Strict):
    """How the health of an app is checked over HTTP."""

    path: str = "/"
    """The URL path to request."""
    interval: str = "5s"
    """Time between checks, e.g. 5s."""
    threshold: int = Field(6, ge=1)
    """Failed checks in a row before the app counts as unhealthy."""


class App(_Strict):
    """A web app served from inside the workspace."""

    slug: Name
    """The app's name in URLs, unique within the template."""
    display_name: str = ""
    """Label shown in the dashboard."""
    port: int = Field(ge=1, le=65535)
    """The port it listens on inside the workspace."""
    path: str = "/"
    """The URL path it is served under."""
    protocol: Literal["http", "https"] = "http"
    """`http` or `https`, as the app itself speaks."""
    command: str | None = Field(None, description="Started by the agent after the startup script.")
    share: AppShare = AppShare.OWNER
    """Who may open it."""
    subdomain: bool = False
    """Serve it on a subdomain of its own instead of under a path."""
    healthcheck: AppHealthcheck | None = None
    """How to check its health; none means not checked."""


class OnTtl(StrEnum):
    """What happens to a workspace when its TTL runs out."""

    STOP = "stop"
    DELETE = "delete"


class Lifetime(_Strict):
    """When a workspace is stopped or deleted by itself."""

    ttl: str | None = Field(None, description="Time until the workspace is stopped or deleted, e.g. 8h.")
    on_ttl: OnTtl = OnTtl.STOP
    """`stop` or `delete` the workspace when the TTL runs out."""
    idle_timeout: str | None = Field(
        None,
        description="Stop after this long without use (SSH, terminals, exec, port forwards, files, or a task "
        "reporting `working`), e.g. 30m.",
    )
    max_ttl: str | None = Field(
        None,
        description="The longest TTL a workspace may be given or extended to, e.g. 24h; also how long after its "
        "TTL was set a task reporting `working` may hold it off (without max_ttl: a day past the deadline).",
    )

    @field_validator("ttl", "idle_timeout", "max_ttl")
    @classmethod
    def _duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _templated(value, info):
            return value
        if parse_duration(str(value)).total_seconds() <= 0:
            raise ValueError("must be above zero")
        return str(value)


class Egress(StrEnum):
    """Which outbound connections a workspace may make: none, all, or an allow-list."""

    NONE = "none"
    ALL = "all"
    ALLOWLIST = "allowlist"


class Network(_Strict):
    """A workspace's outbound network access."""

    egress: Egress = Egress.ALL
    """`none`, `all` or `allowlist` (with `allow`)."""
    allow: list[str] = Field(
        default_factory=list,
        description="What egress allowlist reaches: host names (github.com), wildcards (*.pypi.org), IPv4 "
        "addresses or CIDRs (10.1.0.0/16), each optionally with :port.",
    )

    @field_validator("allow")
    @classmethod
    def _allow_entries(cls, value: list[str], info: ValidationInfo) -> list[str]:
        problems = []
        for index, text in enumerate(value):
            if _templated(text, info):
                continue
            entry, problem = parse_entry(text)
            if entry is None:
                problems.append(
                    InitErrorDetails(
                        type=PydanticCustomError("allow_entry", problem), loc=(index,), input=text
                    )
                )
        if problems:
            raise ValidationError.from_exception_data("allow", problems)
        return value

    @model_validator(mode="after")
    def _allow_only_with_allowlist(self) -> Network:
        if self.allow and self.egress != Egress.ALLOWLIST:
            raise ValueError("allow is only used with egress: allowlist")
        if self.egress == Egress.ALLOWLIST and not self.allow:
            raise ValueError("egress: allowlist needs at least one entry in allow")
        return self


class GitPush(StrEnum):
    """What a workspace may push with its owner's git credential."""

    ANY = "any"
    TASK_BRANCH = "task-branch"


class GitSpec(_Strict):
    """The repository a workspace works on: cloned, and its task branch checked out, before it is ready."""

    repo: str = ""
    """A git URL or path; empty means no repository (the step is skipped)."""
    branch: str = ""
    """The task branch: checked out if the repository has it, else created from the default branch."""
    path: str = Field("project", pattern=r"^/?[A-Za-z0-9._-][A-Za-z0-9._/-]*$")
    """Where to clone: relative to the home folder, or an absolute path (a dev container's workspace folder,
    which may already hold the image's copy of the configuration: the clone then takes the folder over)."""
    push: GitPush = GitPush.ANY
    """`task-branch`: the credential never enters the workspace; its git goes through Dockyard's git proxy,
    which refuses pushes to any ref but `refs/heads/<branch>`."""
    mirror: bool = False
    """Clone an http(s) repository from a mirror that the server fetches once for many starts (with the owner's
    credential) instead of over the network, for fleets of agents on one repository. Each start still sees the
    repository as it is then. Pushes and later fetches go to the repository itself. Docker runtime only:
    elsewhere, or when the server cannot fetch it, the workspace clones over the network."""


class DevcontainerRepo(_Strict):
    """A repository whose dev container configuration a template uses, fetched by the server at push."""

    repo: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    """An http(s) git URL; fetched with the pushing user's credential for its host (`dockyard git-auth add`)."""
    path: str = Field("", max_length=1024)
    """The configuration's path in the repository (`.devcontainer/devcontainer.json`, `.devcontainer.json`,
    `.devcontainer/NAME/devcontainer.json`) or a configuration name (`NAME`); empty finds it in the
    specification's order."""
    ref: str = Field("", max_length=256)
    """A branch, tag or commit; empty is the repository's default branch."""
    commit: str = ""
    """Set by the server: the commit the version's configuration files were read from."""
    file: str = ""
    """Set by the server: the configuration's path among the version's files."""


class KubernetesOverlay(_Strict):
    """Kubernetes-only additions; other runtimes ignore them, so a template stays portable."""

    pod: dict[str, Any] = Field(default_factory=dict)
    """Pod spec fields merged into the workspace pod: containers (sidecars, or `workspace` to add env and
    mounts to the workspace container), initContainers, volumes, nodeSelector, tolerations, affinity,
    priorityClassName, topologySpreadConstraints, dnsConfig, runtimeClassName. Checked at push."""


MAX_PREBUILD_INSTANCES = 20
"""The most pool members one preset may keep (a pool member holds a whole running workspace)."""


class Prebuild(_Strict):
    """A preset of parameter values whose workspaces are kept started ahead of demand (a warm pool).

    A create from the active version with exactly these values (after defaults) claims a pool member."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    """Parameter values of the preset; unnamed parameters take their defaults."""
    instances: int = Field(1, ge=0, le=MAX_PREBUILD_INSTANCES)
    """How many started workspaces to keep ready for this preset (0 keeps none)."""


class TemplateManifest(_Strict):
    """The parsed `dockyard.yaml` of one template version."""

    name: Name
    """The template's name."""
    display_name: str = ""
    """A human-friendly name."""
    description: str = ""
    """What the template is for."""
    icon: str = ""
    """The icon to show."""
    parameters: list[ParameterSpec] = Field(default_factory=list)
    """The inputs a workspace supplies."""
    resources: Resources = Field(default_factory=Resources)
    """CPU, memory, GPU, disk and process limits."""
    image: str | None = Field(None, description="An image to run, e.g. dockyard/base:bookworm.")
    build: BuildSpec | None = Field(None, description="Build a Dockerfile from the template's files.")
    devcontainer: str | DevcontainerRepo | None = Field(
        None,
        description="Path of a devcontainer.json among the template's files, or a repository whose "
        "configuration the template uses (`{repo, path, ref}`).",
    )
    user: str = Field("dev", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    """The Unix user the workspace runs as."""
    sudo: bool = Field(False, description="Let the workspace user use sudo (turns off no-new-privileges).")
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables set in the workspace."""
    startup_script: str = ""
    """A shell script the agent runs when the workspace starts."""
    startup_timeout: str = "10m"
    """How long the startup script may run before it counts as timed out, e.g. 10m."""
    shutdown_script: str = ""
    """A shell script the agent runs before the workspace stops."""
    apps: list[App] = Field(default_factory=list)
    """Web apps served from inside the workspace."""
    lifetime: Lifetime = Field(default_factory=Lifetime)
    """When the workspace is stopped or deleted by itself."""
    network: Network = Field(default_factory=Network)
    """Outbound network access."""
    git: GitSpec | None = None
    """The repository to clone before the workspace is ready, with credentials brokered by Dockyard."""
    kubernetes: KubernetesOverlay | None = None
    """Pod-spec overlay for the Kubernetes runtime."""
    prebuilds: list[Prebuild] = Field(default_factory=list, max_length=10)
    """Presets kept started in a warm pool, claimed by matching creates (docs/ARCHITECTURE.md, "Prebuilds")."""

    @property
    def devcontainer_file(self) -> str | None:
        """The configuration's path among the version's files (known for a repository once it was fetched)."""
        if isinstance(self.devcontainer, DevcontainerRepo):
            return self.devcontainer.file or None
        return self.devcontainer

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value

    @field_validator("startup_timeout")
    @classmethod
    def _timeout(cls, value: str, info: ValidationInfo) -> str:
        if not _templated(value, info) and parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be above zero")
        return value

    @model_validator(mode="after")
    def _one_image_source(self) -> TemplateManifest:
        sources = [s for s in ("image", "build", "devcontainer") if getattr(self, s) is not None]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one of image, build or devcontainer"
                + (f" (found {', '.join(sources)})" if sources else "")
            )
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate parameter names: {', '.join(duplicates)}")
        slugs = [a.slug for a in self.apps]
        if len(set(slugs)) != len(slugs):
            raise ValueError("app slugs must be unique")
        return self


@dataclass(frozen=True)
class Unsupported:
    """A manifest field the schema knows but Dockyard does not act on yet."""

    field: str
    used: Callable[[TemplateManifest], bool]
    hint: str


# The one list of fields that are refused at push because nothing would act on them: a template that asks for
# an allow-list must not silently get something else. The schema keeps them (so errors
# point at the field and stored versions still load); lift an entry when its feature lands.
NOT_SUPPORTED: tuple[Unsupported, ...] = ()


def unsupported(manifest: TemplateManifest) -> list[tuple[str, str]]:
    """(field, message) for every field the manifest uses that Dockyard does not implement yet."""
    return [(u.field, f"not supported yet: {u.hint}") for u in NOT_SUPPORTED if u.used(manifest)]

"""What a runtime is asked to run: a workspace's resolved plan, and what a runtime says it can do.

The provisioner renders a template version with a build's parameters once, into a `WorkspacePlan`, and stores it
on the build row (`workspace_builds.plan`). Everything after that reads the plan: the worker hands it to the
runtime, the hub welcomes the agent with its scripts, and a retried build runs the same plan again. The plan says
what to run (image, limits, environment, home, egress, how the agent gets in), never how an engine does it:
networks, bind mounts, volumes and pods are each runtime's own business.

`Capabilities` is the other half of the contract: callers branch on what a runtime reports it can do (GPUs, a
disk quota, an egress policy, a kind of agent link), never on which runtime it is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dockyard_sdk.egress import EntryKind, parse_entry

# Where the agent's program appears inside every workspace (docs/AGENT_PROTOCOL.md), and where a workspace with a
# `unix_socket` link finds its private link folder (the hub's socket and the agent's token).
AGENT_MOUNT = "/run/dockyard"
LINK_MOUNT = f"{AGENT_MOUNT}/link"
# Where a workspace finds the server's mirror of its repository (gitauth/mirrors.py), read-only.
GIT_MIRROR_MOUNT = "/run/dockyard-git-mirror"
SOCKET_NAME = "hub.sock"
TOKEN_NAME = "token"  # noqa: S105 - a file name
# How a workspace runs the agent (the folder is mounted read-only at /run/dockyard): as a module, so that Python
# loads the bytecode compiled by the server instead of compiling 1,700 lines at every start (~9 ms of CPU, which
# adds up when many workspaces start at once; a script named on the command line is never loaded from bytecode).
# `-I` keeps the user's home (the working directory) and PYTHON* variables out of the agent's imports. The path
# stays the last argument so that the process is still found as `.../agent.py`.
LAUNCHER = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1).rpartition('/')[0]); "
    "runpy.run_module('agent', run_name='__main__', alter_sys=True)"
)
# What a workspace without an agent runs, so that it stays up (unit tests with no agent folder).
IDLE_COMMAND = ("sleep", "infinity")


def agent_command(path: str = f"{AGENT_MOUNT}/agent.py") -> tuple[str, ...]:
    return ("python3", "-I", "-c", LAUNCHER, path)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Egress(StrEnum):
    NONE = "none"
    ALL = "all"
    ALLOWLIST = "allowlist"


class LinkKind(StrEnum):
    """How an agent reaches the control plane."""

    # A socket in a host folder the runtime makes appear at LINK_MOUNT in this workspace alone: the socket a
    # connection arrives on names its workspace (Docker on the server's own host).
    UNIX_SOCKET = "unix_socket"
    # The agent dials DOCKYARD_URL over HTTP(S)/WebSocket (runtimes on other hosts, such as Kubernetes).
    NETWORK = "network"


class Resources(_Frozen):
    cpu: float = 2.0
    memory_bytes: int = 4 * 2**30
    pids: int = 1024
    # Size of the home's own file system; None shares the host's disk.
    disk_bytes: int | None = None
    gpu: int = 0


class Home(_Frozen):
    """The workspace user and the persistent home that outlives stops (a Docker volume, a PVC)."""

    user: str = "dev"
    uid: int = 1000
    sudo: bool = False

    @property
    def path(self) -> str:
        return f"/home/{self.user}"


class NetworkPolicy(_Frozen):
    egress: Egress = Egress.ALL
    # Hosts or CIDRs an `allowlist` egress may reach.
    allow: tuple[str, ...] = ()


class AgentLink(_Frozen):
    kind: LinkKind = LinkKind.UNIX_SOCKET
    # NETWORK: the control plane's URL the agent dials.
    url: str | None = None

    def env(self) -> dict[str, str]:
        """What tells the agent its way in, for a runtime that mounts the workspace's link folder at LINK_MOUNT.

        The token travels in a file of that folder, never in the environment, which anyone who may inspect the
        container or read the pod sees.
        """
        env = {"DOCKYARD_AGENT_TOKEN_FILE": f"{LINK_MOUNT}/{TOKEN_NAME}"}
        if self.kind == LinkKind.NETWORK:
            assert self.url is not None
            env["DOCKYARD_URL"] = self.url
        else:
            env["DOCKYARD_AGENT_SOCKET"] = f"{LINK_MOUNT}/{SOCKET_NAME}"
        return env


class AppProcess(_Frozen):
    """A template app's long-running command, which the agent starts once the startup script settled."""

    slug: str
    command: str


class GitPlan(_Frozen):
    """The repository the agent clones, and the task branch it checks out, before the startup script; or why it
    must not (`error`, which the agent reports as its start error)."""

    repo: str = ""
    branch: str = ""
    path: str = "project"
    # `task-branch`: the workspace's git reaches the repository only through the control plane's git proxy,
    # which holds the credential and refuses pushes to any other ref (gitauth/proxy.py).
    push: str = "any"
    error: str = ""
    # The template asks for a clone from the server's mirror of the repository (gitauth/mirrors.py).
    mirror: bool = False
    # When the start asked the server to fetch its mirror (a time.time()); 0 when it did not. The agent clones
    # from the mirror once a fetch that began at or after it has worked.
    mirror_after: float = 0.0

    @property
    def proxied(self) -> bool:
        return self.push == "task-branch"

    def welcome(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        mirror = {"mirror": GIT_MIRROR_MOUNT, "mirror_after": self.mirror_after} if self.mirror_after else {}
        return {"repo": self.repo, "branch": self.branch, "path": self.path, "proxy": self.proxied, **mirror}


class AgentPlan(_Frozen):
    """How the agent gets into the workspace and what it runs once it is connected."""

    command: tuple[str, ...] = Field(default_factory=agent_command)
    link: AgentLink = Field(default_factory=AgentLink)
    startup_script: str = ""
    startup_timeout_seconds: float = 600.0
    shutdown_script: str = ""
    apps: tuple[AppProcess, ...] = ()
    git: GitPlan | None = None

    def welcome(self) -> dict[str, Any]:
        """The scripts part of the hub's welcome message (docs/AGENT_PROTOCOL.md)."""
        return {
            "startup_script": self.startup_script,
            "startup_timeout": self.startup_timeout_seconds,
            "shutdown_script": self.shutdown_script,
            "apps": [{"slug": app.slug, "command": app.command} for app in self.apps],
            "git": self.git.welcome() if self.git is not None else None,
        }


class ExtraMount(_Frozen):
    """A folder beyond the home: a named volume of this workspace (kept across stops, removed with it), or a host
    folder an admin allowed (dev container `mounts`)."""

    target: str
    # The volume's name within the workspace; the runtime makes it unique to the workspace.
    volume: str = ""
    host_path: str = ""
    read_only: bool = False


class ImageBuild(_Frozen):
    """A Dockerfile among the template version's files (stored once per content hash)."""

    dockerfile: str = "Dockerfile"
    context: str = "."
    args: dict[str, str] = Field(default_factory=dict)


class AppPort(_Frozen):
    slug: str
    port: int
    share: str = "owner"


class WorkspacePlan(_Frozen):
    """Everything a runtime needs to run one workspace, as the build decided it."""

    workspace_id: str
    name: str
    owner: str
    owner_id: str
    template: str
    build_id: str
    # The template version's content hash: names a built image and tells whether a rebuild is needed.
    content_hash: str = ""
    # The image to run: the template's image, or (before `ensure_image`) the name a Dockerfile build will get.
    image: str
    build: ImageBuild | None = None
    resources: Resources = Field(default_factory=Resources)
    home: Home = Field(default_factory=Home)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    env: dict[str, str] = Field(default_factory=dict)
    # Files placed in the workspace at start (path -> text); relative paths are under the home.
    files: dict[str, str] = Field(default_factory=dict)
    # None: no agent.
    agent: AgentPlan | None = None
    # What the workspace runs as its user instead of the agent (a sandbox running one program, the runtime
    # tests); None runs the agent's command, or IDLE_COMMAND when there is no agent.
    command: tuple[str, ...] | None = None
    apps: tuple[AppPort, ...] = ()
    # Extra labels a runtime puts on what it makes, next to its own (workspace, deployment).
    labels: dict[str, str] = Field(default_factory=dict)
    # The template's pod-spec overlay (`kubernetes.pod`, checked at push): only the Kubernetes runtime reads it,
    # others ignore it, so that a template stays portable.
    kubernetes_pod: dict[str, Any] = Field(default_factory=dict)
    mounts: tuple[ExtraMount, ...] = ()

    def workload(self) -> tuple[str, ...]:
        if self.command is not None:
            return self.command
        return self.agent.command if self.agent is not None else IDLE_COMMAND

    def stored(self) -> dict[str, Any]:
        """The JSON form kept on the build row."""
        return self.model_dump(mode="json")

    @classmethod
    def from_stored(cls, value: dict[str, Any]) -> WorkspacePlan:
        return cls.model_validate(value)


def _names_host(text: str) -> bool:
    entry, _ = parse_entry(text)
    return entry is None or entry.kind != EntryKind.ADDRESS or entry.port is not None


class Capabilities(_Frozen):
    """What a runtime can do on this host; reported, so callers branch on it rather than on its name."""

    # Agent links the runtime can provide (UNIX_SOCKET needs the runtime on the server's host).
    agent_links: frozenset[LinkKind] = frozenset()
    egress: frozenset[Egress] = frozenset({Egress.ALL})
    # An `allowlist` may name hosts and wildcards (an egress proxy), not only addresses and CIDRs.
    egress_names: bool = False
    gpu: bool = False
    # `resources.disk` bounds the home (otherwise the home shares the host's disk).
    disk_quota: bool = False
    # Stop keeps the workspace's state outside its home too, so a start resumes it.
    resume_keeps_root: bool = False
    # The runtime can keep the host's own services unreachable from workspaces (a host firewall).
    host_isolation: bool = False
    # `prepare_network` makes a network ahead of a workspace (the warm-network pool).
    prepared_networks: bool = False
    # Egress "all" workspaces share one bridge network: the warm-network pool makes none ahead for them.
    bridged_egress: bool = False
    # `WorkspacePlan.mounts`: extra named volumes and allowed host folders.
    extra_mounts: bool = False
    # A host folder of the server's data dir can be mounted into a workspace: git mirrors (gitauth/mirrors.py).
    git_mirrors: bool = False

    def refusal(self, plan: WorkspacePlan) -> str:
        """Why this runtime cannot run `plan` as written, or "" when it can."""
        if plan.resources.gpu > 0 and not self.gpu:
            return f"The template asks for {plan.resources.gpu} GPU(s); this runtime has none."
        if plan.network.egress not in self.egress:
            return f"This runtime cannot enforce egress {plan.network.egress.value!r}."
        if plan.network.egress == Egress.ALLOWLIST and not self.egress_names:
            names = [text for text in plan.network.allow if _names_host(text)]
            if names:
                return (
                    f"This runtime's egress allow-lists match addresses and CIDRs only; {names[0]!r} names a "
                    "host, which needs an egress proxy (the Docker runtime has one)."
                )

        if plan.mounts and not self.extra_mounts:
            return "This runtime cannot mount the dev container's `mounts`."
        if plan.agent is not None and plan.agent.link.kind not in self.agent_links:
            return f"This runtime cannot give an agent a {plan.agent.link.kind.value} link."
        return ""

"""Server settings. Every option is also an environment variable `DOCKYARD_<NAME>`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dockyard.outbound import OutboundPolicy


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "dockyard"


@dataclass
class Settings:
    listen: str = "127.0.0.1:3000"
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    access_log: bool = True
    log_format: str = "auto"  # auto | json | console
    # Load the built-in templates on first start; tests turn it off to start from an empty catalogue.
    builtin_templates: bool = True
    # Whether to trust X-Forwarded-For from this many proxies when recording client addresses.
    trusted_proxies: int = 0
    # Where workspaces run: "docker" (the engine at DOCKER_HOST or the default socket) or "kubernetes".
    runtime: str = "docker"
    # The Kubernetes runtime (docs/KUBERNETES.md): a kubeconfig (None: in-cluster, else ~/.kube/config), the
    # workspaces' namespace, the home claims' storage class ("dockyard-local" makes a hostPath volume per claim),
    # a RuntimeClass for every pod ("" for the node's default) and image pull secrets.
    kubeconfig: str | None = None
    kubernetes_namespace: str = "dockyard-workspaces"
    kubernetes_storage_class: str = "dockyard-local"
    kubernetes_runtime_class: str = ""
    kubernetes_image_pull_secrets: list[str] = field(default_factory=list)
    # Mount the agent's host folders into pods (hostPath): only where the pods run on this host (one node).
    kubernetes_host_paths: bool = False
    # Let template overlays ask for privileged containers, root, added capabilities and host folders.
    kubernetes_allow_privileged: bool = False
    # Host folders (and what is under them) that dev container `mounts` may bind; none by default.
    devcontainer_host_binds: list[str] = field(default_factory=list)
    # Address ranges the server does not connect to for its users (webhooks, the git proxy), beside the ones it
    # never does (dockyard/outbound.py).
    outbound_deny: list[str] = field(default_factory=list)
    # The operator's word that the cluster's network plugin enforces NetworkPolicies (egress none/allowlist).
    kubernetes_policies_enforced: bool = False
    # Docker hands out ~30 bridge networks from its default pools; workspaces get /28s from this range instead.
    # Empty leaves it to Docker's pools.
    workspace_subnets: str = "10.213.0.0/16"
    # Egress-"all" workspaces on one deployment bridge with veths the runtime plugs in ("shared"), on a network
    # each ("own"), or shared where this process can (root on the engine's host): see runtimes/docker/bridge.py.
    workspace_bridge: str = "auto"
    # Provisioner workers inside the server; 0 when builds run in separate `dockyard provisioner` processes;
    # None sizes them to the host (provisioner/sizing.py).
    provisioner_workers: int | None = None
    # Seconds between reconciliation passes (drift, stale builds, TTL deadlines).
    reconcile_interval: float = 5.0
    # The SSH gateway's address; empty turns the listener off (`dockyard ssh --stdio` still works).
    ssh_listen: str = "127.0.0.1:2222"
    # The host name clients use for the SSH gateway (config-ssh, certificates); default: the listen host.
    ssh_hostname: str = ""
    # Workspace networks made ahead of demand, per class ("open" has egress, "internal" not), so that a burst
    # of creates does not wait for the engine to make networks one at a time. See warmpool/pool.py. 16 of each:
    # a burst's first creates find networks made while the rest queue for workers anyway; an unused bridge
    # costs a few firewall rules, so a bigger pool is a choice for hosts that take bursts (bench/provision.py
    # --bursts runs with 64).
    warm_networks: dict[str, int] = field(default_factory=lambda: {"open": 16, "internal": 16})
    # This deployment's id (on everything the runtime makes; workspace network policies admit Dockyard's pods
    # labelled with it). Empty: made at first start and kept in the database.
    deployment_id: str = ""
    # Seconds between agent pings; an agent silent for two of them is dropped.
    agent_heartbeat: float = 15.0
    # The control plane's URL as workspace containers reach it (e.g. http://172.17.0.1:3000; several replicas
    # comma-separated). When set, agents of workspaces with egress dial it over the network (any replica may
    # hold them) instead of their link socket, and the host firewall lets workspaces reach its port.
    agent_url: str = ""
    # The egress proxy of `allowlist` workspaces (docs/SECURITY.md, "Egress allow-lists"): its ports on each such
    # workspace's gateway address, and static host entries it resolves before the host's resolver (NAME -> IPv4).
    egress_proxy_port: int = 3128
    # Where the host firewall redirects the workspace's other TCP connections (TLS SNI, HTTP Host, addresses).
    egress_intercept_port: int = 3129
    egress_dns_port: int = 53
    egress_hosts: dict[str, str] = field(default_factory=dict)
    # How other replicas reach this one to relay client streams to the agents it holds (e.g.
    # http://10.0.0.5:3000). Default: derived from `listen` (loopback when it listens on every address).
    relay_url: str = ""
    # The URL users reach the server by (e.g. https://dockyard.example.com behind a proxy): its origin is
    # allowed to send cookie-authenticated requests, and https here marks the session cookie Secure.
    access_url: str = ""
    # More origins allowed to send cookie-authenticated requests (the request's own Host always is).
    allowed_origins: list[str] = field(default_factory=list)
    # `*.apps.example[:port]`: serve workspace apps on their own hosts, `<slug>--<workspace>--<owner>.apps.example`.
    wildcard_access_url: str = ""
    # When set, `/metrics` answers only `Authorization: Bearer <metrics_token>`.
    metrics_token: str = ""
    # Start even when the data dir is open to other local users (loudly warned about at every start).
    allow_open_data_dir: bool = False
    # Templates with `git.mirror: true` clone from a mirror this process fetches (gitauth/mirrors.py).
    git_mirrors: bool = True

    @property
    def agent_dir(self) -> Path:
        """Mounted into every workspace: the agent script and the socket it dials."""
        return self.data_dir / "agent"

    @property
    def agent_links_dir(self) -> Path:
        """One private folder per workspace (its hub socket and agent token), each mounted into its workspace."""
        return self.data_dir / "agents"

    @property
    def disks_dir(self) -> Path:
        """The workspaces' size-limited home disks (sparse images, so this file system bounds their sum)."""
        return self.data_dir / "disks"

    @property
    def git_mirrors_dir(self) -> Path:
        """The git mirrors of this process's workspaces, one folder per owner and repository."""
        return self.data_dir / "git-mirrors"

    @property
    def outbound(self) -> OutboundPolicy:
        return OutboundPolicy.with_denied(self.outbound_deny)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'dockyard.db'}"

    @property
    def agent_url_ports(self) -> tuple[int, ...]:
        """The TCP ports workspaces must reach on the host for the network link."""
        ports = set()
        for url in self.agent_url.split(","):
            parts = urlsplit(url.strip())
            if parts.hostname:
                ports.add(parts.port or (443 if parts.scheme == "https" else 80))
        return tuple(sorted(ports))

    @property
    def replicas(self) -> bool:
        """Whether other server processes may share the database (PostgreSQL; SQLite means one process), so
        this one registers itself and relays streams to agents another replica holds."""
        return self.resolved_database_url.startswith("postgres")

    @property
    def resolved_relay_url(self) -> str:
        if self.relay_url:
            return self.relay_url.rstrip("/")
        host, port = self.host_port
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reading the setting, not binding
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

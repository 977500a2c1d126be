"""How a server reaches its cluster and what it puts on every workspace pod (`--kubeconfig`, `--namespace`, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The storage class name under which this runtime makes a hostPath PersistentVolume for each home claim itself,
# for clusters without a dynamic provisioner (the one-node test cluster of scripts/kubernetes.sh).
LOCAL_STORAGE_CLASS = "dockyard-local"


@dataclass(frozen=True)
class KubernetesOptions:
    # A kubeconfig file; None: in-cluster configuration when running in a pod, else ~/.kube/config.
    kubeconfig: str | None = None
    namespace: str = "dockyard-workspaces"
    storage_class: str = LOCAL_STORAGE_CLASS
    # Where `dockyard-local` volumes live on the node (one folder per workspace home).
    local_volume_root: str = "/var/lib/dockyard-volumes"
    # gVisor, Kata, ... when the cluster has such a RuntimeClass; "" for the node's default.
    runtime_class: str = ""
    image_pull_secrets: tuple[str, ...] = ()
    # "Never" where no registry may be reached (the test cluster): a missing image fails without a pull.
    image_pull_policy: str = "IfNotPresent"
    # Host folders in the workspace spec (the agent's folder and its link socket) become hostPath volumes. Only
    # correct when the pods run on the server's own host (a one-node cluster); with the networked agent link
    # the agent dials the server instead and no host folder is needed.
    host_paths: bool = False
    # A pod's requests are this fraction of the template's limits, so that a node is not full of idle
    # workspaces' reservations; 1.0 makes requests equal limits (Guaranteed QoS).
    request_fraction: float = 0.25
    # Home claims of templates that do not set `resources.disk`.
    default_home_size: str = "10Gi"
    # Seconds a start waits for the pod to run before it fails the build with the pod's last reason.
    ready_timeout: float = 120.0
    # The cluster's pod and service ranges: carved out of a workspace's egress so that it reaches no other pod.
    cluster_cidrs: tuple[str, ...] = ()
    # Extra labels for every object (e.g. a team's cost centre); Dockyard's own labels win on conflict.
    labels: dict[str, str] = field(default_factory=dict)
    # The operator's word that the cluster's network plugin enforces NetworkPolicies (Dockyard cannot check it
    # through the API): only then does the runtime offer egress `none` and `allowlist`, and host isolation.
    policies_enforced: bool = False
    # Whether a template overlay may ask for privileged containers or added capabilities.
    allow_privileged: bool = False

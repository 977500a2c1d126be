"""Prometheus metrics of provisioning: create-to-ready time per path, and the warm workspace pool's.

Process-local like every prometheus_client metric: each replica reports what it did (claims happen where the
create arrived, ready times where the agent is held, pool sizes where the leader fills the pool)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# How a workspace's first build became ready (workspace_builds.ready_path).
COLD = "cold"
WARM_NETWORK = "warm_network"
POOL_CLAIM = "pool_claim"

READY = Histogram(
    "dockyard_workspace_ready_seconds",
    "From the create request to the workspace's agent being ready, per template and path",
    ["template", "path"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
CLAIMS = Counter("dockyard_prebuild_claims_total", "Creates that claimed a warm pool member", ["template"])
MISSES = Counter(
    "dockyard_prebuild_misses_total",
    "Creates of a template with prebuilds that found no member to claim "
    "(`no_preset`: other parameter values or version; `empty`: the preset had no ready member)",
    ["template", "reason"],
)
CLAIM_SECONDS = Histogram(
    "dockyard_prebuild_claim_seconds",
    "From the create request to the claim's commit",
    ["template"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
POOL_SIZE = Gauge(
    "dockyard_prebuild_pool_size",
    "Warm pool members per preset and state (`desired`, `ready`, `building`, `failed`)",
    ["template", "preset", "state"],
)

"""Reading Docker's container states back as Dockyard observations."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from dockyard.runtimes.base import ContainerState, Observation
from dockyard.runtimes.docker import naming

# Exit codes a workload shows after our stop: 128+SIGTERM, or 128+SIGKILL when the timeout ran out.
STOP_EXIT_CODES = frozenset({143, 137})

# The `Status` text of an exited container in a container list: "Exited (143) 2 minutes ago".
EXITED_STATUS = re.compile(r"^Exited \((-?\d+)\)")


def from_inspect(workspace_id: str, attrs: dict[str, Any]) -> Observation:
    state = attrs.get("State") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return from_state(
        workspace_id,
        state.get("Status", ""),
        state.get("ExitCode"),
        bool(state.get("OOMKilled")),
        state.get("Error") or "",
        network_address(networks, naming.network_name(workspace_id)),
    )


def from_state(
    workspace_id: str, status: str, exit_code: int | None, oom: bool, error: str, address: str | None
) -> Observation:
    """Docker's container state in Dockyard's words.

    Docker does not record who stopped a container, so STOPPED is read from the exit code: 143 (SIGTERM, which
    a stop sends and docker-init forwards) or 137 (SIGKILL after the stop timeout), without the OOM flag. A
    workload that catches SIGTERM and exits 0 therefore shows as EXITED with code 0 after a stop, and one
    killed by a signal someone else sent shows as STOPPED.
    """
    if status in ("running", "paused", "restarting"):
        return Observation(workspace_id, ContainerState.RUNNING, detail=status, address=address)
    if status == "created":
        return Observation(workspace_id, ContainerState.STOPPED, detail="created, never started")
    if status == "removing":
        return Observation(workspace_id, ContainerState.MISSING, detail="being removed")
    if oom:
        return Observation(workspace_id, ContainerState.OOM_KILLED, exit_code, "killed: out of memory")
    if exit_code in STOP_EXIT_CODES:
        return Observation(workspace_id, ContainerState.STOPPED, exit_code, "stopped")
    detail = f"exited with code {exit_code}" + (f": {error}" if error else "")
    return Observation(workspace_id, ContainerState.EXITED, exit_code, detail)


def network_id(attrs: dict[str, Any], network: str) -> str | None:
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return (networks.get(network) or {}).get("NetworkID") or None


def network_address(networks: dict[str, Any], network: str) -> str | None:
    return (networks.get(network) or {}).get("IPAddress") or None


def timestamp(value: str | None) -> float | None:
    """Seconds since the epoch of an engine timestamp; None for Go's zero time ("0001-01-01T00:00:00Z")."""
    if not value or value.startswith("0001-"):
        return None
    # RFC 3339 with nanoseconds; datetime takes microseconds at most.
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        return None
    whole = datetime.fromisoformat(match.group(1) + ("+00:00" if match.group(3) == "Z" else match.group(3)))
    return whole.timestamp() + float("0." + (match.group(2) or "0"))

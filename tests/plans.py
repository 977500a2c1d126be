"""Workspace plans for runtime tests, written the short way: `workspace_plan(cpu=1, egress="none", ...)`."""

from __future__ import annotations

from typing import Any

from dockyard.runtimes.plan import Egress, Home, NetworkPolicy, Resources, WorkspacePlan

_RESOURCES = set(Resources.model_fields)
_HOME = set(Home.model_fields)


def workspace_plan(**values: Any) -> WorkspacePlan:
    """A plan from flat fields: resource names (cpu, memory_bytes, ...), home names (user, uid, sudo) and
    `egress` go into their groups; `files` may be bytes; anything else is a plan field."""
    resources = {k: values.pop(k) for k in list(values) if k in _RESOURCES}
    home = {k: values.pop(k) for k in list(values) if k in _HOME}
    if "egress" in values:
        values["network"] = NetworkPolicy(egress=Egress(values.pop("egress")))
    if values.get("command") is not None:
        values["command"] = tuple(values["command"])
    if "files" in values:
        values["files"] = {
            path: data.decode() if isinstance(data, bytes) else data for path, data in values["files"].items()
        }
    return WorkspacePlan(resources=Resources(**resources), home=Home(**home), **values)


def replaced(plan: WorkspacePlan, **values: Any) -> WorkspacePlan:
    """The plan with some flat fields changed."""
    flat: dict[str, Any] = {
        **{k: v for k, v in plan if k not in ("resources", "home", "network")},
        **plan.resources.model_dump(),
        **plan.home.model_dump(),
        "egress": plan.network.egress,
    }
    return workspace_plan(**{**flat, **values})

"""`dockyard users quota USER …` and `dockyard tokens quota TOKEN …`: show or replace limits.

With no limit option the command shows the limits and what uses them; with any, it replaces all of them (an
option left out means no limit; `--clear` removes every limit).
"""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output, render
from dockyard.cli.errors import build_request
from dockyard.cli.output import OutputFormat, OutputOption
from dockyard_sdk import models as m

WorkspacesOption = Annotated[
    int | None, typer.Option("--workspaces", help="Workspaces running or starting at once.")
]
CpuOption = Annotated[float | None, typer.Option("--cpu", help="CPU cores of running workspaces.")]
MemoryOption = Annotated[
    str | None, typer.Option("--memory", help="Memory of running workspaces, e.g. 64Gi.")
]
ClearOption = Annotated[bool, typer.Option("--clear", help="Remove every limit.")]
_NAMES = {
    "max_workspaces": "--workspaces",
    "max_cpu": "--cpu",
    "max_memory": "--memory",
    "creates_per_minute": "--creates-per-minute",
}


def limits(
    *, workspaces: int | None, cpu: float | None, memory: str | None, creates: int | None, clear: bool
) -> m.QuotaLimits | None:
    """The new limits, or None when the command only shows them."""
    if not clear and workspaces is None and cpu is None and memory is None and creates is None:
        return None
    return build_request(
        m.QuotaLimits,
        names=_NAMES,
        max_workspaces=workspaces,
        max_cpu=cpu,
        max_memory=memory,
        creates_per_minute=creates,
    )


def _limit(value: float | None, *, size: bool = False) -> str:
    if value is None:
        return "no limit"
    return render.size_text(int(value)) if size else f"{value:g}"


def show(quota: m.Quota, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.JSON:
        output.print_json(quota)
        return
    used = quota.usage
    pairs = [
        ("WORKSPACES", f"{used.workspaces} of {_limit(quota.max_workspaces)}"),
        ("CPU", f"{used.cpu:g} of {_limit(quota.max_cpu)}"),
        ("MEMORY", f"{render.size_text(used.memory_bytes)} of {_limit(quota.max_memory_bytes, size=True)}"),
    ]
    if quota.subject_type == "token":
        pairs.append(("CREATES/MIN", f"{used.creates_last_minute} of {_limit(quota.creates_per_minute)}"))
    output.print_rich(output.fields(pairs))


def user_quota(
    user: Annotated[str, typer.Argument(metavar="USER", help="Username or id.")],
    workspaces: WorkspacesOption = None,
    cpu: CpuOption = None,
    memory: MemoryOption = None,
    clear: ClearOption = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a user's quota, or replace it (owners only). A limit below current use is accepted; new creates
    and starts are then refused until use drops."""
    wanted = limits(workspaces=workspaces, cpu=cpu, memory=memory, creates=None, clear=clear)
    with config.session() as client:
        quota = client.get_user_quota(user) if wanted is None else client.set_user_quota(user, wanted)
    show(quota, output_format)


def token_quota(
    token: Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="The token's id or name.")],
    workspaces: WorkspacesOption = None,
    cpu: CpuOption = None,
    memory: MemoryOption = None,
    creates: Annotated[
        int | None, typer.Option("--creates-per-minute", help="Workspace creates in any 60 s.")
    ] = None,
    clear: ClearOption = False,
    user: Annotated[str, typer.Option("--user", help="Whose token (name or id).")] = "me",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a token's quota, or replace it (with another credential than that token)."""
    wanted = limits(workspaces=workspaces, cpu=cpu, memory=memory, creates=creates, clear=clear)
    with config.session() as client:
        if wanted is None:
            quota = client.get_token_quota(token, user=user)
        else:
            quota = client.set_token_quota(token, wanted, user=user)
    show(quota, output_format)

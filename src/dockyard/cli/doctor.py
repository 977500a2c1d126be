"""`dockyard doctor [--prune]`: the runtime's health, the host firewall, drifted workspaces, orphans and the
database's connections."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import models as m

_ORPHAN_COLUMNS: list[Column[m.OrphanedResource]] = [
    Column("KIND", lambda o: o.kind),
    Column("NAME", lambda o: o.name),
    Column("WORKSPACE ID", lambda o: o.workspace_id),
]


def doctor(
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove the orphaned resources and repair the host firewall's rules (owners only).",
        ),
    ] = False,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Check the runtime and host firewall; list drifted workspaces and orphans.

    Only this deployment's resources are listed (and pruned): other servers on the same engine are left alone.
    """
    with config.session() as client:
        report = client.prune() if prune else client.doctor()
        if prune and report.runtime_ok:
            removed = report.removed
            output.message(f"Removed {_count(removed)}" + "".join(f"\n  {o.kind} {o.name}" for o in removed))
            fixed = report.repaired
            if fixed is not None and (fixed.missing or fixed.stale):
                output.message(
                    "Repaired the host firewall"
                    + "".join(f"\n  added rules for {name}" for name in fixed.missing)
                    + "".join(f"\n  removed stale rules for {bridge}" for bridge in fixed.stale)
                )
    if output_format is OutputFormat.JSON:
        output.print_json(report)
    else:
        _print(report)
    if not report.runtime_ok:
        raise CliError(f"the {report.runtime} runtime is unavailable", detail=report.runtime_error)
    if report.database is not None and report.database.warning:
        output.message(f"Database: {report.database.warning}")
    if report.orphans and not prune:
        output.message(f"Found {_count(report.orphans)}; remove them with `dockyard doctor --prune`")
    firewall = report.host_firewall
    if firewall is not None and not firewall.ok:
        if firewall.error:
            raise CliError(f"the host firewall is not enforced: {firewall.error}")
        raise CliError(
            f"{len(firewall.missing)} workspace network{'' if len(firewall.missing) == 1 else 's'} can reach "
            "the host: their firewall rules are missing; add them with `dockyard doctor --prune`"
        )


def _count(orphans: list[m.OrphanedResource]) -> str:
    return f"{len(orphans)} orphaned resource{'' if len(orphans) == 1 else 's'}"


def _print(report: m.DoctorReport) -> None:
    runtime = f"{report.runtime}: ok" if report.runtime_ok else f"{report.runtime}: unavailable"
    output.print_rich(
        output.fields(
            [
                ("RUNTIME", runtime),
                ("DRIFTED", ", ".join(report.drifted) or "none"),
                ("ORPHANS", str(len(report.orphans)) if report.orphans else "none"),
                # Where egress-all workspaces are: on the deployment bridge, or on a network each.
                ("EGRESS ALL", "deployment bridge" if report.shared_bridge else "a network each"),
                ("WARM NETWORKS", ", ".join(f"{c} {n}" for c, n in report.warm_networks.items()) or "none"),
                ("HOST FIREWALL", _firewall(report.host_firewall)),
                ("DATABASE", _database(report.database)),
                ("DEPLOYMENT", report.deployment or "unknown"),
            ]
        )
    )
    if report.orphans:
        typer.echo()
        output.print_rich(output.table(_ORPHAN_COLUMNS, report.orphans))


def _firewall(firewall: m.HostFirewallReport | None) -> str:
    if firewall is None:
        return "unknown"
    if firewall.error:
        return "not enforced"
    problems = [f"{len(firewall.missing)} missing"] if firewall.missing else []
    problems += [f"{len(firewall.stale)} stale"] if firewall.stale else []
    return "ok" if not problems else ", ".join(problems)


def _database(database: m.DatabaseReport | None) -> str:
    if database is None:
        return "unknown"
    said = [database.backend]
    if database.admitted is not None:
        said.append(f"{database.in_use} of {database.admitted} connections open")
    if database.pool_limit is not None:
        said.append(f"this server's pool up to {database.pool_limit}")
    return ", ".join(said)

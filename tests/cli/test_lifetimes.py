"""`dockyard extend`, `dockyard schedule` and the lifetime lines of `dockyard show`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.cli.conftest import Cli


def test_extend_moves_the_deadline_and_refuses_past_the_maximum(logged_in: Cli) -> None:
    h = logged_in.h
    h.template(name="capped", lifetime={"ttl": "1h", "max_ttl": "3h", "idle_timeout": "30m"})
    h.workspace(template="capped", name="ext")

    result = logged_in.ok("extend", "ext", "2h")

    deadline = h.admin.get_workspace("ext").deadline
    assert deadline is not None
    assert abs(deadline - datetime.now(UTC) - timedelta(hours=2)) < timedelta(seconds=30)
    assert result.stderr == f"ext now stops at {deadline.strftime('%Y-%m-%dT%H:%MZ')}\n"

    refused = logged_in("extend", "ext", "5h")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: The TTL is longer than the template allows.\n  ttl: 5h is above the template's maximum 3h\n"
    )
    assert h.admin.get_workspace("ext").deadline == deadline

    shown = logged_in.ok("show", "ext").stdout
    assert re.search(r"\nIDLE TIMEOUT +30m\n", shown)
    assert re.search(r"\nACTIVE +no \(no activity since ", shown)
    assert re.search(r"\nAUTO STOP +\S+ \(idle\)\n", shown)


def test_schedule_sets_and_clears_autostart(logged_in: Cli) -> None:
    h = logged_in.h
    h.workspace(name="sch")

    result = logged_in.ok("schedule", "sch", "--autostart", "0 9 * * 1-5", "--tz", "Europe/Berlin")

    plan = h.admin.get_workspace("sch").autostart
    assert plan is not None
    assert plan.next_at is not None
    assert result.stderr == (
        f"sch starts on '0 9 * * 1-5' (Europe/Berlin); next at {plan.next_at.strftime('%Y-%m-%dT%H:%MZ')}\n"
    )
    assert re.search(
        r"\nAUTOSTART +0 9 \* \* 1-5 \(Europe/Berlin\), next ", logged_in.ok("show", "sch").stdout
    )

    bad = logged_in("schedule", "sch", "--autostart", "0 9 * *", "--tz", "Nowhere/Else")
    assert bad.exit_code == 1
    assert bad.stderr == (
        "error: Invalid autostart schedule.\n"
        "  autostart: '0 9 * *' is not five cron fields (minute hour day month weekday)\n"
        "  timezone: 'Nowhere/Else' is not an IANA time zone, e.g. Europe/Berlin\n"
    )
    assert h.admin.get_workspace("sch").autostart == plan

    neither = logged_in("schedule", "sch")
    assert neither.exit_code == 1
    assert neither.stderr.startswith("error: give --autostart CRON or --off\n")

    logged_in.ok("schedule", "sch", "--off")
    assert h.admin.get_workspace("sch").autostart is None

"""`dockyard users quota`, `dockyard tokens quota` and `dockyard tokens create --own-workspaces-only`."""

from __future__ import annotations

import re

from dockyard_sdk import models as m
from tests.cli.conftest import Cli


def test_users_quota_sets_shows_and_refuses_creates_past_it(logged_in: Cli) -> None:
    h = logged_in.h
    h.workspace(name="w1")

    shown = logged_in.ok("users", "quota", "admin", "--workspaces", "1", "--memory", "8Gi").stdout

    assert re.search(r"WORKSPACES +1 of 1\n", shown)
    assert re.search(r"CPU +2 of no limit\n", shown)
    assert re.search(r"MEMORY +4 GiB of 8 GiB\n", shown)
    refused = logged_in("create", "--template", "tmpl", "w2", "--no-wait")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "error: Quota exceeded: user admin may run at most 1 workspaces (1 running or starting).\n"
        "  max_workspaces: may run at most 1 workspaces (1 running or starting)\n"
    )
    assert [w.name for w in h.admin.list_workspaces().workspaces] == ["w1"]

    bad = logged_in("users", "quota", "admin", "--workspaces", "-1")
    assert bad.exit_code == 1
    assert "--workspaces" in bad.stderr
    assert h.admin.get_user_quota("admin").max_workspaces == 1

    logged_in.ok("users", "quota", "admin", "--clear")
    assert h.admin.get_user_quota("admin").max_workspaces is None


def test_tokens_quota_and_own_workspaces_only(logged_in: Cli) -> None:
    h = logged_in.h
    created = logged_in.ok("tokens", "create", "bot", "--own-workspaces-only", "-o", "json").stdout
    token = m.CreatedToken.model_validate_json(created)
    assert token.own_workspaces_only

    shown = logged_in.ok("tokens", "quota", "bot", "--creates-per-minute", "5").stdout

    assert re.search(r"CREATES/MIN +0 of 5\n", shown)
    assert h.admin.get_token_quota("bot").creates_per_minute == 5

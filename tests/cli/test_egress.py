"""`dockyard egress NAME`: a workspace's egress log as a table or the API's JSON."""

from __future__ import annotations

import json

from dockyard.egress.proxy import Attempt
from dockyard_sdk import models as m
from tests.cli.conftest import Cli


def test_dockyard_egress_prints_the_log(logged_in: Cli) -> None:
    h = logged_in.h
    h.template()
    ws = h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1"))
    egress = h.app.state.background.egress
    egress.log.record(ws.id, Attempt("http", "denied.test", 80, "denied", "not in the allow-list"))
    egress.log.flush()

    table = logged_in.ok("egress", "ws1")
    assert "denied.test" in table.stdout
    assert "not in the allow-list" in table.stdout
    assert table.stdout.splitlines()[0].split() == ["TIME", "PROTOCOL", "HOST", "PORT", "DECISION", "REASON"]
    as_json = json.loads(logged_in.ok("egress", "ws1", "-o", "json").stdout)
    assert as_json["count"] == 1
    assert {k: as_json["events"][0][k] for k in ("protocol", "host", "port", "decision")} == {
        "protocol": "http",
        "host": "denied.test",
        "port": 80,
        "decision": "denied",
    }
    missing = logged_in("egress", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ")

from __future__ import annotations

from pathlib import Path

from tests.harness import make_harness


def test_first_start_then_restart(tmp_path: Path, database_url: str) -> None:
    first = make_harness(tmp_path, database_url, builtin_templates=True)
    token = (first.data_dir / "admin-token").read_text()
    assert [t.name for t in first.admin.list_templates()] == [
        "ai-agent-sandbox",
        "base",
        "code-server",
        "desktop",
    ]
    assert [u.username for u in first.admin.list_users().users] == ["admin"]
    first.close()

    again = make_harness(tmp_path, database_url, builtin_templates=True)
    assert (again.data_dir / "admin-token").read_text() == token
    assert [t.name for t in again.admin.list_templates()] == [
        "ai-agent-sandbox",
        "base",
        "code-server",
        "desktop",
    ]
    assert [v.number for v in again.admin.list_template_versions("base")] == [1]
    again.close()

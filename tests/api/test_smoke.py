from __future__ import annotations

from tests.harness import Harness


def test_health_and_templates(h: Harness) -> None:
    assert h.admin.health().status == "ok"
    assert h.admin.list_templates() == []
    template = h.template(name="py")
    assert template.name == "py"
    assert template.active_version is not None
    assert [t.name for t in h.admin.list_templates()] == ["py"]

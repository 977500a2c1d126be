from __future__ import annotations

from tests.harness import Harness


def test_health_and_templates(h: Harness) -> None:
    assert h.admin.health().status == "ok"
    assert h.admin.list_templates() == []
    template = h.template(name="py")
    assert template.name == "py"
    assert template.active_version is not None
    assert [t.name for t in h.admin.list_templates()] == ["py"]


def test_metrics_and_buildinfo(h: Harness) -> None:
    h.admin.list_templates()
    text = h.client().http.get("/metrics").text
    assert 'dockyard_http_requests_total{method="GET",route="/api/v2/templates",status="200"}' in text
    assert "dockyard_http_request_duration_seconds_bucket" in text
    info = h.client().buildinfo()
    assert info.version == "0.1.0"
    response = h.client().http.get("/healthz")
    assert response.headers["x-request-id"]

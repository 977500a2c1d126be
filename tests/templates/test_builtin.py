from __future__ import annotations

import pytest

from dockyard.templates import archive, builtin, manifest, parameters


@pytest.mark.parametrize("name", builtin.NAMES)
def test_builtin_templates_parse(name: str) -> None:
    parsed = manifest.load(archive.from_directory(builtin.ROOT / name))
    assert parsed.name == name
    assert parsed.image == "dockyard/base:bookworm"


def test_agent_sandbox_accepts_both_request_shapes_from_design() -> None:
    schema = manifest.load(archive.from_directory(builtin.ROOT / "ai-agent-sandbox")).parameters
    first, problems = parameters.validate(
        schema, {"repo": "https://git.example/r.git", "branch": "main", "ttl_hours": "4"}
    )
    assert problems == []
    assert first["ttl_hours"] == 4
    second, problems = parameters.validate(
        schema, {"repo": "r", "task": "Fix the flaky test", "agent": "claude-code"}
    )
    assert problems == []
    assert (second["agent"], second["branch"]) == ("claude-code", "main")

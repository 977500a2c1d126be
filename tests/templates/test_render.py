from __future__ import annotations

import pytest

from dockyard.errors import ValidationFailed
from dockyard.templates.render import render
from dockyard_sdk.manifest import TemplateManifest


def _manifest(**fields: object) -> TemplateManifest:
    return TemplateManifest.model_validate({"name": "t", "image": "img", **fields})


def test_renders_every_string_with_typed_parameters() -> None:
    manifest = _manifest(
        resources={"cpu": "{{ parameters.cpu }}", "memory": "{{ parameters.mem }}Gi"},
        startup_script="git clone {{ parameters.repo | quote }}",
        lifetime={"ttl": "{{ parameters.ttl }}h"},
        env={"WS": "{{ workspace.name }}"},
    )
    out = render(
        manifest,
        {"cpu": 2, "mem": 8, "repo": "a b; rm -rf /", "ttl": 4},
        workspace={"name": "ws1", "id": "x", "owner": "alice"},
    )
    assert out.resources.cpu == 2.0
    assert out.resources.memory_bytes == 8 * 2**30
    assert out.startup_script == "git clone 'a b; rm -rf /'"
    assert out.lifetime.ttl == "4h"
    assert out.env == {"WS": "ws1"}


def test_rendered_values_are_checked_strictly() -> None:
    manifest = _manifest(lifetime={"ttl": "{{ parameters.ttl }}"})
    with pytest.raises(ValidationFailed) as info:
        render(manifest, {"ttl": "soon"})
    assert [(v.field, v.detail) for v in info.value.validations] == [
        ("lifetime.ttl", "after rendering: 'soon' is not a duration (use e.g. 90s, 30m, 4h, 1h30m, 2d)")
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ parameters.__class__.__init__.__globals__ }}",
        "{{ parameters.clear() }}",
    ],
)
def test_sandbox_blocks_python_internals(expression: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        render(_manifest(startup_script=expression), {"a": 1})
    assert info.value.validations[0].field == "startup_script"
    assert info.value.validations[0].detail.startswith("template error:")


def test_undefined_parameter_is_an_error() -> None:
    with pytest.raises(ValidationFailed) as info:
        render(_manifest(startup_script="{{ parameters.nope }}"), {})
    assert info.value.validations[0].detail == "template error: 'dict object' has no attribute 'nope'"

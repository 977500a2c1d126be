"""`prebuilds:` in a template: refused at push when a preset could not be created, and the pool in the API."""

from __future__ import annotations

import pytest

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness, tar_gz

HEAD = """
name: pooled
image: dockyard/base:bookworm
parameters:
  - {name: size, type: string, default: small, options: [{name: Small, value: small}, {name: Large, value: large}]}
  - {name: ttl_hours, type: number, default: 4, validation: {min: 1, max: 24}}
"""


def _push_error(h: Harness, prebuilds: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        h.admin.create_template(tar_gz({"dockyard.yaml": HEAD + prebuilds}))
    assert [t.name for t in h.admin.list_templates()] == []
    return caught.value


def test_presets_are_checked_against_the_parameters_at_push(h: Harness) -> None:
    error = _push_error(
        h,
        "prebuilds:\n"
        "  - {parameters: {size: huge, ttl_hours: 30}, instances: 1}\n"
        "  - {parameters: {colour: red}}\n"
        "  - {parameters: {}, instances: 2}\n"
        "  - {parameters: {size: small}, instances: 1}\n",
    )
    assert (error.status_code, error.message) == (
        422,
        "dockyard.yaml has prebuilds the template cannot make.",
    )
    got = sorted((v.field, v.line, v.detail) for v in error.validations)
    assert got == [
        ("prebuilds.0.parameters.size", 8, "'huge' is not one of the options ('small', 'large')"),
        ("prebuilds.0.parameters.ttl_hours", 8, "30 is above the maximum 24"),
        (
            "prebuilds.1.parameters.colour",
            9,
            "is not a parameter of template 'pooled' (known: size, ttl_hours)",
        ),
        (
            "prebuilds.3.parameters",
            11,
            "the same values as prebuilds[2]; merge them and add up their instances",
        ),
    ]


def test_instances_are_bounded(h: Harness) -> None:
    error = _push_error(h, "prebuilds:\n  - {parameters: {}, instances: 21}\n")
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [
        ("prebuilds.0.instances", "Input should be less than or equal to 20")
    ]
    error = _push_error(h, "prebuilds:\n  - {parameters: {}, instances: -1}\n")
    assert [(v.field, v.detail) for v in error.validations] == [
        ("prebuilds.0.instances", "Input should be greater than or equal to 0")
    ]


def test_the_pool_is_listed_for_those_who_may_see_the_template(h: Harness) -> None:
    h.admin.create_template(
        tar_gz({"dockyard.yaml": HEAD + "prebuilds:\n  - {parameters: {size: large}, instances: 0}\n"})
    )
    h.admin.create_template(tar_gz({"dockyard.yaml": "name: plain\nimage: dockyard/base:bookworm\n"}))
    listed = h.admin.prebuilds()
    assert listed.outdated == 0
    [preset] = listed.presets
    assert (preset.template, preset.version, preset.parameters) == (
        "pooled",
        1,
        {"size": "large", "ttl_hours": 4},
    )
    assert (preset.desired, preset.ready, preset.building, preset.failed) == (0, 0, 0, 0)
    assert h.admin.prebuilds("pooled") == listed
    assert h.admin.prebuilds("plain").presets == []

    anonymous = h.client()
    with pytest.raises(ApiError) as caught:
        anonymous.prebuilds()
    assert caught.value.status_code == 401
    no_scope = h.user("bob", scopes=[m.Scope.WORKSPACE_READ])
    with pytest.raises(ApiError) as caught:
        no_scope.prebuilds()
    assert caught.value.status_code == 403
    narrowed = h.user("carol", scopes=[m.Scope.TEMPLATE_READ], allow_list=["template:plain"])
    assert narrowed.prebuilds().presets == []
    with pytest.raises(ApiError) as caught:
        narrowed.prebuilds("pooled")
    # As for every template route: the allow-list refuses by name (templates.get).
    assert (caught.value.status_code, caught.value.message) == (
        403,
        "This token is not allowed to use template 'pooled'.",
    )

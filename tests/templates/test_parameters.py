from __future__ import annotations

from typing import Any

import pytest

from dockyard.errors import Validation
from dockyard.templates.parameters import validate
from dockyard_sdk.manifest import ParameterSpec

SCHEMA = [
    ParameterSpec.model_validate(p)
    for p in [
        {"name": "repo", "type": "string", "default": ""},
        {"name": "ttl_hours", "type": "number", "default": 4, "validation": {"min": 1, "max": 24}},
        {"name": "gpu", "type": "bool", "default": False, "mutable": True},
        {"name": "tags", "type": "list(string)", "default": []},
        {"name": "size", "type": "string", "options": ["small", "large"]},
        {
            "name": "branch",
            "type": "string",
            "default": "main",
            "validation": {"regex": "^[a-z]+$", "error": "branch {value} must be lowercase"},
        },
    ]
]


def test_defaults_fill_in() -> None:
    values, problems = validate(SCHEMA, {"size": "small"})
    assert problems == []
    assert values == {"repo": "", "ttl_hours": 4, "gpu": False, "tags": [], "size": "small", "branch": "main"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"ttl_hours": "4"}, 4),
        ({"ttl_hours": 2.5}, 2.5),
        ({"ttl_hours": "12.0"}, 12),
    ],
)
def test_number_coercion(given: dict[str, Any], expected: float) -> None:
    values, problems = validate(SCHEMA, {"size": "large", **given})
    assert problems == []
    assert values["ttl_hours"] == expected


def test_all_problems_reported_together() -> None:
    _values, problems = validate(
        SCHEMA,
        {"ttl_hours": 30, "gpu": "maybe", "tags": "[1]", "size": "medium", "branch": "Main", "colour": "red"},
        template_name="t",
    )
    assert problems == [
        Validation(
            "colour", "is not a parameter of template 't' (known: branch, gpu, repo, size, tags, ttl_hours)"
        ),
        Validation("ttl_hours", "30 is above the maximum 24"),
        Validation("gpu", "'maybe' is not true or false"),
        Validation("tags", "expected a list of strings"),
        Validation("size", "'medium' is not one of the options ('small', 'large')"),
        Validation("branch", "branch Main must be lowercase"),
    ]


def test_required_and_types() -> None:
    _, problems = validate(SCHEMA, {"ttl_hours": True})
    assert problems == [
        Validation("ttl_hours", "expected a number, got a boolean"),
        Validation("size", "is required"),
    ]
    _, problems = validate(SCHEMA, {"size": "small", "ttl_hours": "nan"})
    assert problems == [Validation("ttl_hours", "nan is not a number")]
    _, problems = validate(SCHEMA, {"size": "small", "ttl_hours": 0})
    assert problems == [Validation("ttl_hours", "0 is below the minimum 1")]


def test_list_and_bool_from_strings() -> None:
    values, problems = validate(SCHEMA, {"size": "small", "tags": '["a","b"]', "gpu": "TRUE"})
    assert problems == []
    assert (values["tags"], values["gpu"]) == (["a", "b"], True)
    values, _ = validate(SCHEMA, {"size": "small", "tags": "a,b"})
    assert values["tags"] == ["a", "b"]


def test_immutable_parameters_keep_previous_values() -> None:
    previous = {"repo": "r", "ttl_hours": 4, "gpu": False, "tags": [], "size": "small", "branch": "main"}
    values, problems = validate(SCHEMA, {"gpu": True}, previous=previous)
    assert problems == []
    assert values == {**previous, "gpu": True}
    _, problems = validate(SCHEMA, {"repo": "other"}, previous=previous)
    assert problems == [Validation("repo", "is immutable and cannot be changed")]

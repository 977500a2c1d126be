"""Every schema, property and operation in the OpenAPI document carries a description.

Fields are described by an attribute docstring on the line under them (or `Field(description=...)`), models and
enums by their class docstring, operations by the route function's docstring.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dockyard.api.descriptions import describe
from dockyard_sdk import models as m
from tests.harness import Harness


def _document(h: Harness) -> dict[str, Any]:
    response = h.admin.http.get("/api/v2/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def _undescribed(document: dict[str, Any]) -> list[str]:
    missing = []
    for name, schema in document["components"]["schemas"].items():
        if not schema.get("description"):
            missing.append(f"schema {name}: add a class docstring")
        for prop, value in schema.get("properties", {}).items():
            # Pydantic drops a property's description when it repeats the referenced schema's: say more.
            if not value.get("description"):
                missing.append(f"property {name}.{prop}: add a docstring on the line under the field")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not operation.get("description"):
                missing.append(f"operation {method.upper()} {path}: add a docstring to the route function")
    return missing


def test_every_schema_property_and_operation_is_described(h: Harness) -> None:
    document = _document(h)
    assert _undescribed(document) == []
    # Spot checks that the docstrings are what lands in the document.
    schemas = document["components"]["schemas"]
    assert schemas["WorkspaceStatus"]["description"] == m.WorkspaceStatus.__doc__
    assert schemas["ExecResult"]["properties"]["stderr"]["description"] == (
        "Standard error, in the same `encoding` as stdout."
    )
    assert schemas["TemplateManifest"]["properties"]["startup_script"]["description"] == (
        "A shell script the agent runs when the workspace starts."
    )
    assert schemas["Workspace"]["properties"]["latest_build"] == {
        "$ref": "#/components/schemas/WorkspaceBuild",
        "description": "The most recent build.",
    }
    create = document["paths"]["/api/v2/workspaces"]["post"]
    assert create["description"] == "Create a workspace from a template and queue its first start build."


def test_an_explicit_description_wins_over_the_docstring() -> None:
    class Probe(m.Model):
        explicit: int = Field(0, description="From Field.")
        """From the docstring."""
        documented: int = 0
        """From the docstring."""

    describe([Probe])
    properties = Probe.model_json_schema()["properties"]
    assert properties["explicit"]["description"] == "From Field."
    assert properties["documented"]["description"] == "From the docstring."


def test_the_report_lists_what_is_missing() -> None:
    document = {
        "components": {"schemas": {"Thing": {"properties": {"size": {"type": "integer"}}}}},
        "paths": {"/things": {"get": {"operationId": "listThings"}}},
    }
    assert _undescribed(document) == [
        "schema Thing: add a class docstring",
        "property Thing.size: add a docstring on the line under the field",
        "operation GET /things: add a docstring to the route function",
    ]

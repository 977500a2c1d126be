from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from typing import Any

import pytest

from dockyard.store.models import Template, Workspace
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness, manifest_yaml, tar_gz


def _error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def _names(h: Harness) -> list[str]:
    return [t.name for t in h.admin.list_templates()]


def test_push_creates_template_with_version_1(h: Harness) -> None:
    template = h.template({"setup.sh": "echo hi\n"}, name="py", display_name="Python")
    assert (template.name, template.display_name, template.description) == ("py", "Python", "a test template")
    version = template.active_version
    assert version is not None
    assert (version.number, version.name) == (1, "v1")
    assert [f.path for f in version.files] == ["dockyard.yaml", "setup.sh"]
    assert [p.name for p in version.manifest.parameters] == ["branch", "ttl_hours"]
    assert len(version.content_hash) == 64
    logs = h.admin.audit(action="template.create").audit_logs
    assert [(a.resource_name, a.username, a.status_code) for a in logs] == [("py", "admin", 201)]


def test_versions_are_content_addressed_and_immutable(h: Harness) -> None:
    h.template(name="py")
    same = tar_gz({"dockyard.yaml": manifest_yaml(name="py")})
    response = h.admin.http.post(
        "/api/v2/templates/py/versions", content=same, headers={"Content-Type": "application/gzip"}
    )
    assert response.status_code == 200
    assert response.json()["number"] == 1
    v2 = h.admin.create_template_version(
        "py", tar_gz({"dockyard.yaml": manifest_yaml(name="py", description="2")}), message="second"
    )
    assert (v2.number, v2.message) == (2, "second")
    assert h.admin.get_template("py").active_version_id == v2.id
    assert [v.number for v in h.admin.list_template_versions("py")] == [2, 1]
    # Addressable by id, name, number and hash prefix.
    for ref in (v2.id, "v2", "2", v2.content_hash[:12]):
        assert h.admin.get_template_version("py", ref).id == v2.id
    # Roll back to v1 by name.
    rolled = h.admin.update_template("py", m.UpdateTemplateRequest(active_version_id="v1"))
    assert rolled.active_version is not None
    assert rolled.active_version.number == 1


def test_push_without_activate_keeps_active_version(h: Harness) -> None:
    first = h.template(name="py")
    h.admin.create_template_version(
        "py", tar_gz({"dockyard.yaml": manifest_yaml(name="py", icon="x")}), activate=False
    )
    assert h.admin.get_template("py").active_version_id == first.active_version_id


def test_files_and_archive_round_trip(h: Harness) -> None:
    h.template({"scripts/setup.sh": "echo hi\n", "Dockerfile": "FROM scratch\n"}, name="py")
    files = h.admin.list_template_files("py", "v1")
    assert [f.path for f in files] == ["Dockerfile", "dockyard.yaml", "scripts/setup.sh"]
    assert h.admin.get_template_file("py", "v1", "scripts/setup.sh") == b"echo hi\n"
    error = _error(lambda: h.admin.get_template_file("py", "v1", "nope.txt"))
    assert (error.status_code, error.message) == (404, "File 'nope.txt' not found in template 'py'.")
    with tarfile.open(fileobj=io.BytesIO(h.admin.get_template_archive("py", "v1"))) as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "dockyard.yaml", "scripts/setup.sh"]


def test_archive_with_single_top_folder_is_accepted(h: Harness) -> None:
    template = h.admin.create_template(
        tar_gz({"mytemplate/dockyard.yaml": manifest_yaml(name="nested"), "mytemplate/a.sh": "x"})
    )
    assert template.active_version is not None
    assert [f.path for f in template.active_version.files] == ["a.sh", "dockyard.yaml"]


def test_multipart_upload_of_files(h: Harness) -> None:
    response = h.admin.http.post(
        "/api/v2/templates",
        files=[
            ("files", ("dockyard.yaml", manifest_yaml(name="multi").encode())),
            ("files", ("scripts/run.sh", b"echo\n")),
        ],
    )
    assert response.status_code == 201, response.text
    assert [f["path"] for f in response.json()["active_version"]["files"]] == [
        "dockyard.yaml",
        "scripts/run.sh",
    ]
    response = h.admin.http.post(
        "/api/v2/templates",
        files=[("archive", ("t.tgz", tar_gz({"dockyard.yaml": manifest_yaml(name="arch")})))],
    )
    assert response.status_code == 201, response.text


def test_duplicate_template_name_is_409(h: Harness) -> None:
    h.template(name="py")
    error = _error(lambda: h.template(name="py"))
    assert (error.status_code, error.message) == (409, "A template named 'py' already exists.")
    assert _names(h) == ["py"]


def test_unknown_template_is_404_naming_it(h: Harness) -> None:
    error = _error(lambda: h.admin.get_template("ghost"))
    assert (error.status_code, error.message) == (404, "Template 'ghost' not found.")
    error = _error(
        lambda: h.admin.create_template_version("ghost", tar_gz({"dockyard.yaml": manifest_yaml()}))
    )
    assert (error.status_code, error.message) == (404, "Template 'ghost' not found.")
    h.template(name="py")
    error = _error(lambda: h.admin.get_template_version("py", "v9"))
    assert (error.status_code, error.message) == (404, "Version 'v9' of template 'py' not found.")


def _upload_error(h: Harness, data: bytes) -> ApiError:
    error = _error(lambda: h.admin.create_template(data))
    assert _names(h) == []
    return error


def test_yaml_syntax_error_names_file_and_line(h: Harness) -> None:
    error = _upload_error(h, tar_gz({"dockyard.yaml": "name: py\nimage: x\nparameters: [\n  {name: a\n"}))
    assert error.status_code == 422
    assert error.message == "dockyard.yaml is not valid YAML."
    [problem] = error.validations
    assert (problem.file, problem.field) == ("dockyard.yaml", "(yaml)")
    assert problem.line is not None
    assert problem.line >= 4


def test_schema_errors_name_field_and_line(h: Harness) -> None:
    text = (
        "name: py\n"
        "image: img\n"
        "resources:\n"
        "  cpu: 2\n"
        "  memory: lots\n"
        "parameters:\n"
        "  - name: ttl\n"
        "    type: number\n"
        "    default: 99\n"
        "    validation: {min: 1, max: 24}\n"
        "colour: blue\n"
    )
    error = _upload_error(h, tar_gz({"dockyard.yaml": text}))
    assert error.status_code == 422
    got = sorted((v.field, v.line, v.detail) for v in error.validations)
    assert got == [
        ("colour", 11, "unknown field"),
        ("resources.memory", 5, "'lots' is not a size (use e.g. 512Mi, 4Gi, 10G)"),
    ]
    # Once the shape is right, the default is checked against its own rule.
    error = _upload_error(
        h, tar_gz({"dockyard.yaml": text.replace("lots", "4Gi").replace("colour: blue\n", "")})
    )
    assert [(v.field, v.line, v.detail) for v in error.validations] == [
        ("parameters.0.default", 9, "ttl: 99 is above the maximum 24")
    ]


@pytest.mark.parametrize(
    ("pids", "detail"),
    [
        (10, "10 is outside 64-1000000 (the agent, a shell and a few tools need 64)"),
        (2_000_000, "2000000 is outside 64-1000000 (the agent, a shell and a few tools need 64)"),
        ("many", "'many' is not a whole number of processes"),
        (True, "True is not a whole number of processes"),
    ],
)
def test_pids_limit_is_checked_at_push(h: Harness, pids: object, detail: str) -> None:
    text = manifest_yaml(resources={"cpu": 1, "memory": "1Gi", "pids": pids})
    error = _upload_error(h, tar_gz({"dockyard.yaml": text}))
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [("resources.pids", detail)]


def test_a_disk_too_small_for_a_file_system_is_refused_at_push(h: Harness) -> None:
    text = manifest_yaml(resources={"cpu": 1, "memory": "1Gi", "disk": "1Mi"})
    error = _upload_error(h, tar_gz({"dockyard.yaml": text}))
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [
        ("resources.disk", "1Mi is below the smallest home disk, 16Mi")
    ]


def test_pids_limit_defaults_to_1024(h: Harness) -> None:
    template = h.admin.create_template(tar_gz({"dockyard.yaml": manifest_yaml(name="procs")}))
    assert template.active_version is not None
    assert template.active_version.manifest.resources.pids == 1024


def test_template_expression_errors_are_caught_at_push(h: Harness) -> None:
    text = manifest_yaml(startup_script="echo {{ parameters.brnach }}")
    error = _upload_error(h, tar_gz({"dockyard.yaml": text}))
    assert error.status_code == 422
    [problem] = error.validations
    assert (problem.field, problem.detail) == (
        "startup_script",
        "template error: 'dict object' has no attribute 'brnach'",
    )
    assert problem.line == text.splitlines().index("startup_script: echo {{ parameters.brnach }}") + 1


def test_named_files_must_exist(h: Harness) -> None:
    error = _upload_error(
        h, tar_gz({"dockyard.yaml": manifest_yaml(image=None, build={"dockerfile": "Dockerfile"})})
    )
    assert [(v.field, v.detail) for v in error.validations] == [
        ("build.dockerfile", "file 'Dockerfile' is not in the template")
    ]


def test_yaml_alias_bomb_is_refused(h: Harness) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9)
    )
    error = _upload_error(h, tar_gz({"dockyard.yaml": "name: bomb\nimage: x\n" + bomb}))
    assert error.status_code == 422
    assert error.validations[0].detail == "YAML aliases (*name) are not allowed in a template manifest"


@pytest.mark.parametrize(
    ("members", "links", "problem"),
    [
        ({"../evil.sh": "x"}, {}, "'..' in a path is not allowed"),
        ({"/etc/passwd": "x"}, {}, "absolute paths are not allowed"),
        ({}, {"escape": "../../etc/passwd"}, "link to '../../etc/passwd' points outside the template folder"),
        ({}, {"abs": "/etc/shadow"}, "link to '/etc/shadow' points outside the template folder"),
    ],
)
def test_archive_escapes_are_refused(
    h: Harness, members: dict[str, str], links: dict[str, str], problem: str
) -> None:
    data = tar_gz({"dockyard.yaml": manifest_yaml(name="evil"), **members}, links=links)
    error = _upload_error(h, data)
    assert (error.status_code, error.validations[0].detail) == (422, problem)


def test_internal_symlink_is_kept(h: Harness) -> None:
    template = h.admin.create_template(
        tar_gz({"dockyard.yaml": manifest_yaml(name="ln"), "a/run.sh": "x"}, links={"run.sh": "a/run.sh"})
    )
    assert template.active_version is not None
    assert sorted(f.path for f in template.active_version.files) == ["a/run.sh", "dockyard.yaml", "run.sh"]


def test_oversized_archive_is_refused_before_reading(h: Harness) -> None:
    big = os.urandom(12 * 1024 * 1024)
    response = h.admin.http.post(
        "/api/v2/templates", content=big, headers={"Content-Type": "application/gzip"}
    )
    assert response.status_code == 413
    assert response.json()["message"] == "Request body is larger than 11 MB."
    # A small archive that expands past the limit is refused while reading, not after.
    expanding = tar_gz({"dockyard.yaml": manifest_yaml(name="zip"), "zeros": b"\0" * (11 * 1024 * 1024)})
    assert len(expanding) < 1024 * 1024
    error = _upload_error(h, expanding)
    assert (error.status_code, error.message) == (413, "The template's files add up to more than 10 MB.")


def test_garbage_upload_is_400(h: Harness) -> None:
    error = _upload_error(h, b"this is not a tarball")
    assert (error.status_code, error.message) == (400, "The upload is not a tar or tar.gz archive.")
    response = h.admin.http.post(
        "/api/v2/templates", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Unsupported content type 'application/json'."


def test_missing_manifest_is_422(h: Harness) -> None:
    error = _upload_error(h, tar_gz({"README.md": "hi"}))
    assert (error.status_code, error.message) == (422, "The template has no dockyard.yaml.")


@pytest.mark.parametrize("name", ["Upper", "-lead", "trail-", "a" * 33, "under_score", "dot.ted"])
def test_bad_template_names(h: Harness, name: str) -> None:
    error = _upload_error(h, tar_gz({"dockyard.yaml": manifest_yaml(name=name)}))
    assert error.status_code == 422
    assert error.validations[0].field == "name"
    assert "is not a valid name" in error.validations[0].detail


def test_update_and_patch_validation(h: Harness) -> None:
    h.template(name="py")
    updated = h.admin.update_template("py", m.UpdateTemplateRequest(description="new", display_name="Py"))
    assert (updated.description, updated.display_name) == ("new", "Py")
    error = _error(lambda: h.admin.update_template("py", m.UpdateTemplateRequest(active_version_id="v7")))
    assert (error.status_code, error.validations[0].field) == (422, "active_version_id")
    response = h.admin.http.patch("/api/v2/templates/py", json={"colour": "blue"})
    assert response.status_code == 422
    assert response.json()["validations"] == [{"field": "colour", "detail": "unknown field"}]
    response = h.admin.http.patch(
        "/api/v2/templates/py", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Malformed JSON in the request body."
    assert h.admin.get_template("py").description == "new"


def test_delete_refused_while_workspaces_use_it(h: Harness) -> None:
    template = h.template(name="py")
    with h.app.state.sessions() as db:
        row = db.get(Template, template.id)
        assert row is not None
        assert row.active_version_id is not None
        db.add(
            Workspace(
                organization_id=row.organization_id,
                owner_id=h.admin.me().id,
                template_id=row.id,
                template_version_id=row.active_version_id,
                name="ws",
                parameters={},
            )
        )
        db.commit()
    error = _error(lambda: h.admin.delete_template("py"))
    assert (error.status_code, error.message) == (409, "Template 'py' is used by 1 workspace.")
    assert _names(h) == ["py"]


def test_delete_template(h: Harness) -> None:
    h.template(name="py")
    h.admin.delete_template("py")
    assert _names(h) == []
    assert [a.action for a in h.admin.audit(resource="py").audit_logs] == [
        "template.delete",
        "template.create",
    ]


def test_parameter_check_shapes_from_design(h: Harness) -> None:
    h2 = h  # built-in template loaded explicitly for this test
    from dockyard.templates import builtin

    h2.admin.create_template(
        tar_gz({"dockyard.yaml": (builtin.ROOT / "ai-agent-sandbox" / "dockyard.yaml").read_text()})
    )
    first = h.admin.check_parameters(
        "ai-agent-sandbox", {"repo": "https://example.com/r.git", "branch": "dev", "ttl_hours": "4"}
    )
    assert first.parameters == {
        "repo": "https://example.com/r.git",
        "branch": "dev",
        "task": "",
        "agent": "none",
        "ttl_hours": 4,
    }
    second = h.admin.check_parameters(
        "ai-agent-sandbox", {"repo": "r", "task": "fix it", "agent": "claude-code"}
    )
    assert second.parameters["agent"] == "claude-code"
    error = _error(lambda: h.admin.check_parameters("ai-agent-sandbox", {"ttl_hours": 30, "branch": "a b"}))
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [
        ("branch", "a b is not a valid branch name"),
        ("ttl_hours", "30 is above the maximum 24"),
    ]

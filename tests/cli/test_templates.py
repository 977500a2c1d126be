from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dockyard.cli import config
from dockyard.cli.errors import CliError
from dockyard.cli.templates import _extract
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.cli.conftest import Cli, Golden
from tests.harness import Harness, manifest_yaml, tar_gz


def _folder(path: Path, files: dict[str, str] | None = None, **manifest: Any) -> Path:
    path.mkdir(exist_ok=True)
    for old in path.iterdir():
        old.unlink()
    for name, text in (files or {"dockyard.yaml": manifest_yaml(**manifest)}).items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _folder(tmp_path / "tmpl")


def _active(h: Harness, name: str = "tmpl") -> str | None:
    template = h.admin.get_template(name)
    return template.active_version.name if template.active_version else None


# --- push ---------------------------------------------------------------------------------------------------


def test_push_creates_the_template(logged_in: Cli, folder: Path, h: Harness) -> None:
    result = logged_in.ok("templates", "push", str(folder), "-m", "first")

    assert (result.stdout, result.stderr) == ("", "Created template tmpl (v1)\n")
    [version] = h.admin.list_template_versions("tmpl")
    assert (version.name, version.message, _active(h)) == ("v1", "first", "v1")


def test_push_pushes_new_versions_and_reports_unchanged_content(
    logged_in: Cli, folder: Path, h: Harness
) -> None:
    logged_in.ok("templates", "push", str(folder))
    _folder(folder, description="second")

    pushed = logged_in.ok("templates", "push", str(folder), "--message", "describe")
    again = logged_in.ok("templates", "push", str(folder))

    assert pushed.stderr == "Pushed tmpl v2; it is now the active version\n"
    assert again.stderr == "Template tmpl unchanged, already v2\n"
    assert [(v.name, v.message) for v in h.admin.list_template_versions("tmpl")] == [
        ("v2", "describe"),
        ("v1", ""),
    ]
    assert _active(h) == "v2"


def test_push_without_activating(logged_in: Cli, folder: Path, h: Harness) -> None:
    logged_in.ok("templates", "push", str(folder))
    _folder(folder, description="draft")

    result = logged_in.ok("templates", "push", str(folder), "--no-activate")

    assert result.stderr == "Pushed tmpl v2; the active version is still v1\n"
    assert _active(h) == "v1"
    again = logged_in.ok("templates", "push", str(folder), "--no-activate")
    assert again.stderr == "tmpl: content matches v2; the active version is still v1\n"
    assert _active(h) == "v1"


def test_push_of_older_content_reactivates_that_version(logged_in: Cli, folder: Path, h: Harness) -> None:
    logged_in.ok("templates", "push", str(folder))
    _folder(folder, description="second")
    logged_in.ok("templates", "push", str(folder))
    _folder(folder)

    result = logged_in.ok("templates", "push", str(folder))

    assert result.stderr == "tmpl: content matches v1, which is now the active version\n"
    assert _active(h) == "v1"
    assert len(h.admin.list_template_versions("tmpl")) == 2


def test_push_json_prints_the_version(logged_in: Cli, folder: Path, h: Harness) -> None:
    created = logged_in.ok("templates", "push", str(folder), "-o", "json")
    _folder(folder, description="second")
    pushed = logged_in.ok("templates", "push", str(folder), "--output", "json")

    v1, v2 = (m.TemplateVersion.model_validate_json(r.stdout) for r in (created, pushed))
    assert v1 == h.admin.get_template_version("tmpl", "v1")
    assert v2 == h.admin.get_template_version("tmpl", "v2")


def test_push_with_name_overrides_the_manifest(logged_in: Cli, folder: Path, h: Harness) -> None:
    assert logged_in.ok("templates", "push", str(folder), "--name", "other").stderr == (
        "Created template other (v1)\n"
    )
    assert [t.name for t in h.admin.list_templates()] == ["other"]
    _folder(folder, description="second")
    assert logged_in.ok("templates", "push", str(folder), "--name", "other").stderr == (
        "Pushed other v2; it is now the active version\n"
    )


def test_push_no_activate_on_a_new_template_warns(logged_in: Cli, folder: Path) -> None:
    result = logged_in.ok("templates", "push", str(folder), "--no-activate")
    assert result.stderr == (
        "warning: --no-activate is ignored for a new template: its first version is active\n"
        "Created template tmpl (v1)\n"
    )


def test_push_checks_the_manifest_before_uploading(
    logged_in: Cli, tmp_path: Path, h: Harness, golden: Golden
) -> None:
    manifest = (
        "name: Bad Name\n"
        "image: dockyard/base:bookworm\n"
        "parameters:\n"
        "  - name: size\n"
        "    type: huge\n"
        "  - name: ttl\n"
        "    type: number\n"
        "    validation: {min: 5, max: 1}\n"
        "colour: blue\n"
    )
    folder = _folder(tmp_path / "bad", {"dockyard.yaml": manifest})

    golden("templates_push_invalid_manifest", logged_in, "templates", "push", str(folder))

    assert len(logged_in.connections) == 1  # the login's: nothing was sent
    assert h.admin.list_templates() == []


def test_push_reports_yaml_syntax_errors_with_their_line(logged_in: Cli, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "bad", {"dockyard.yaml": "name: x\nimage: [unclosed\n"})

    result = logged_in("templates", "push", str(folder))

    assert result.exit_code == 1
    assert result.stderr == (
        "error: dockyard.yaml is not valid YAML.\n"
        "  dockyard.yaml:3: (yaml): while parsing a flow sequence "
        "expected ',' or ']', but got '<stream end>'\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- a list\n",
            "error: dockyard.yaml must be a mapping of fields.\n"
            "  dockyard.yaml:1: (root): expected a mapping such as `name: my-template`\n",
        ),
        (
            "name: x\n",
            "error: dockyard.yaml is invalid.\n"
            "  dockyard.yaml:1: (root): give exactly one of image, build or devcontainer\n",
        ),
    ],
)
def test_push_reports_manifest_shape_errors(logged_in: Cli, tmp_path: Path, text: str, expected: str) -> None:
    folder = _folder(tmp_path / "bad", {"dockyard.yaml": text})
    result = logged_in("templates", "push", str(folder))
    assert (result.exit_code, result.stderr) == (1, expected)


def test_push_needs_a_manifest(logged_in: Cli, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "empty", {"README.md": "hi"})
    result = logged_in("templates", "push", str(folder))
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: {folder} has no dockyard.yaml\nhint: a template folder needs a dockyard.yaml at its top\n",
    )


def test_push_shows_server_validation_errors(logged_in: Cli, tmp_path: Path, h: Harness) -> None:
    # The schema is fine, so only the server sees that the named Dockerfile is missing.
    folder = _folder(tmp_path / "t", image=None, build={"dockerfile": "Dockerfile"})

    result = logged_in("templates", "push", str(folder))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: dockyard.yaml names files the template does not contain.\n"
        "  dockyard.yaml:17: build.dockerfile: file 'Dockerfile' is not in the template\n"
    )
    assert h.admin.list_templates() == []


def test_push_shows_a_conflict(
    logged_in: Cli, folder: Path, h: Harness, golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone else creates the template between the CLI's lookup and its upload.
    real_factory = logged_in.client

    def racing_client(url: str, token: str | None) -> Any:
        client = real_factory(url, token)

        def get_template(name: str) -> m.Template:
            h.template(name=name, description="theirs")
            raise ApiError(404, f"Template {name!r} not found.")

        client.get_template = get_template  # type: ignore[method-assign]
        return client

    monkeypatch.setattr(config, "client_factory", racing_client)

    golden("templates_push_conflict", logged_in, "templates", "push", str(folder))

    assert h.admin.get_template("tmpl").description == "theirs"


def test_push_without_write_scope_is_forbidden(cli: Cli, folder: Path, h: Harness) -> None:
    reader = h.user("reader", scopes=[m.Scope.TEMPLATE_READ])
    assert reader.token is not None
    cli.login(reader.token)

    result = cli("templates", "push", str(folder))

    assert result.exit_code == 1
    assert result.stderr.endswith("\nhint: Your role or your token's scopes do not allow this.\n")
    assert h.admin.list_templates() == []


def test_push_needs_an_existing_folder(logged_in: Cli, tmp_path: Path) -> None:
    result = logged_in("templates", "push", str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


# --- list / show / versions ---------------------------------------------------------------------------------


# --- pull ---------------------------------------------------------------------------------------------------


def test_pull_writes_the_versions_files(logged_in: Cli, folder: Path, h: Harness, tmp_path: Path) -> None:
    (folder / "setup.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "setup.sh").chmod(0o755)
    (folder / "conf").mkdir()
    (folder / "conf/app.ini").write_text("[app]\n")
    logged_in.ok("templates", "push", str(folder))
    logged_in.ok("templates", "push", str(_folder(tmp_path / "second", description="second")))

    active = logged_in.ok("templates", "pull", "tmpl", str(tmp_path / "out"))
    assert active.stderr == f"Pulled tmpl v2 into {tmp_path / 'out'} (1 files)\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dockyard.yaml"]
    assert "second" in (tmp_path / "out/dockyard.yaml").read_text()

    first = logged_in.ok("templates", "pull", "tmpl", str(tmp_path / "v1"), "--version", "v1")
    assert first.stderr == f"Pulled tmpl v1 into {tmp_path / 'v1'} (3 files)\n"
    assert (tmp_path / "v1/setup.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (tmp_path / "v1/setup.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "v1/conf/app.ini").read_text() == "[app]\n"
    assert "second" not in (tmp_path / "v1/dockyard.yaml").read_text()


def test_pull_never_writes_into_a_folder_that_is_not_empty_unless_told(
    logged_in: Cli, folder: Path, tmp_path: Path
) -> None:
    logged_in.ok("templates", "push", str(folder))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    refused = logged_in("templates", "pull", "tmpl", str(out))
    assert (refused.exit_code, refused.stdout) == (1, "")
    assert (
        refused.stderr
        == f"error: {out} is not empty.\nhint: pull into a new folder, or pass --force to write into it\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    logged_in.ok("templates", "pull", "tmpl", str(out), "--force")
    assert sorted(p.name for p in out.iterdir()) == ["dockyard.yaml", "mine.txt"]
    missing = logged_in("templates", "pull", "nope", str(tmp_path / "x"))
    assert (missing.exit_code, missing.stderr.splitlines()[0]) == (1, "error: Template 'nope' not found.")
    assert not (tmp_path / "x").exists()


def test_pull_writes_the_lockfile_the_push_pinned_oci_features_in(
    logged_in: Cli, h: Harness, registry: str, tmp_path: Path
) -> None:
    """The lockfile the server wrote at push comes down with the files: commit it, and the repository pins
    the same features for the devcontainer CLI and for the next push."""
    ref = f"{registry}/features/hello:1"
    config_json = json.dumps({"image": "dockyard/base:bookworm", "features": {ref: {}}})
    manifest = manifest_yaml(name="dc", image=None, devcontainer=".devcontainer/devcontainer.json")
    h.admin.create_template(
        tar_gz({"dockyard.yaml": manifest, ".devcontainer/devcontainer.json": config_json})
    )
    logged_in.ok("templates", "pull", "dc", str(tmp_path / "dc"))
    lock = json.loads((tmp_path / "dc/.devcontainer/devcontainer-lock.json").read_text())
    assert list(lock["features"]) == [ref]
    assert lock["features"][ref]["resolved"].startswith(f"{registry}/features/hello@sha256:")
    # Pushed back as pulled: the same content, the same version.
    again = logged_in.ok("templates", "push", str(tmp_path / "dc"))
    assert again.stderr == "Template dc unchanged, already v1\n"


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../evil", tarfile.REGTYPE, ""),
        ("/etc/evil", tarfile.REGTYPE, ""),
        ("ok", tarfile.SYMTYPE, "../../x"),
    ],
)
def test_pull_writes_nothing_outside_the_folder_whatever_the_archive_holds(
    tmp_path: Path, name: str, kind: bytes, link: str
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(CliError) as refused:
        _extract(buffer.getvalue(), tmp_path / "out" / "in")
    assert "stopped there" in refused.value.message
    assert [p.name for p in (tmp_path / "out").rglob("*")] == ["in"]


def test_pull_follows_no_link_the_folder_already_holds(tmp_path: Path) -> None:
    """Under --force the folder may hold a link to elsewhere: a path through it is refused before any folder
    is made through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "sub").symlink_to(outside)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("sub/new/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(CliError) as refused:
        _extract(buffer.getvalue(), target)
    assert refused.value.message == f"{target / 'sub/new'} leads outside {target}; stopped there."
    assert list(outside.iterdir()) == []


def test_list_table(logged_in: Cli, h: Harness, golden: Golden) -> None:
    h.template(name="python", description="Python 3.12 with uv")
    h.template(name="go", description="Go [1.23] toolchain")  # brackets must not be read as markup
    h.admin.create_template_version("go", _tar(description="Go 1.23, v2"))

    golden("templates_list", logged_in, "templates", "list")


def _tar(**manifest: Any) -> bytes:
    return tar_gz({"dockyard.yaml": manifest_yaml(**manifest)})


def test_list_json_is_the_api_json(logged_in: Cli, h: Harness) -> None:
    h.template(name="python")
    h.template(name="go")
    shown = json.loads(logged_in.ok("templates", "list", "-o", "json").stdout)
    assert shown == [t.model_dump(mode="json") for t in h.admin.list_templates()]


def test_list_when_empty(logged_in: Cli) -> None:
    result = logged_in.ok("templates", "list")
    assert (result.stdout, result.stderr) == (
        "",
        "No templates yet; create one with `dockyard templates push DIR`.\n",
    )
    assert logged_in.ok("templates", "list", "-o", "json").stdout == "[]\n"


def test_show_table(logged_in: Cli, h: Harness) -> None:
    template = h.template(
        name="py",
        display_name="Python",
        resources={"cpu": 0.5, "memory": "2Gi", "gpu": 1, "disk": "10Gi"},
        parameters=[
            {"name": "branch", "type": "string", "default": "main", "description": "Git branch"},
            {"name": "size", "type": "string", "default": "small", "options": ["small", "large"]},
            {"name": "repo", "type": "string", "validation": {"regex": "^https://"}},
            {"name": "ttl_hours", "type": "number", "default": 4, "validation": {"min": 1, "max": 24}},
            {"name": "tags", "type": "list(string)", "default": ["a", "b"]},
            {"name": "gpu", "type": "bool", "default": False},
            {"name": "note", "type": "string", "default": ""},
        ],
        startup_script="echo {{ parameters.branch | quote }}",
        lifetime={"ttl": "{{ parameters.ttl_hours }}h"},
    )
    assert template.active_version is not None
    version = template.active_version

    result = logged_in.ok("templates", "show", "py")

    assert result.stderr == ""
    assert result.stdout == (
        f"NAME            py\n"
        f"ID              {template.id}\n"
        f"DISPLAY NAME    Python\n"
        f"DESCRIPTION     a test template\n"
        f"ACTIVE VERSION  v1 ({version.content_hash[:12]})\n"
        f"UPDATED         {template.updated_at:%Y-%m-%dT%H:%M}Z\n"
        f"SOURCE          image dockyard/base:bookworm\n"
        f"RESOURCES       0.5 CPU, 2Gi memory, 1 GPU, 10Gi disk\n"
        "\n"
        "PARAMETER  TYPE          DEFAULT     DESCRIPTION  OPTIONS/VALIDATION\n"
        "branch     string        main        Git branch\n"
        "size       string        small                    one of: small, large\n"
        "repo       string        (required)               regex ^https://\n"
        "ttl_hours  number        4                        min 1, max 24\n"
        "tags       list(string)  a, b\n"
        "gpu        bool          false\n"
        'note       string        ""\n'
    )


def test_show_json_is_the_api_json(logged_in: Cli, h: Harness, golden: Golden) -> None:
    h.template(name="py")
    result = golden("templates_show_json", logged_in, "templates", "show", "py", "-o", "json")
    assert json.loads(result.stdout) == h.admin.get_template("py").model_dump(mode="json")


def test_show_unknown_template(logged_in: Cli) -> None:
    result = logged_in("templates", "show", "nope")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "error: Template 'nope' not found.\n")


def test_versions_table_and_json(logged_in: Cli, h: Harness) -> None:
    h.template(name="py")
    v2 = h.admin.create_template_version(
        "py", _tar(name="py", description="2"), message="second", activate=False
    )
    v1 = h.admin.get_template_version("py", "v1")

    table = logged_in.ok("templates", "versions", "py")
    shown = json.loads(logged_in.ok("templates", "versions", "py", "-o", "json").stdout)

    assert table.stdout == (
        "VERSION  ACTIVE  HASH          CREATED            MESSAGE\n"
        f"v2               {v2.content_hash[:12]}  {v2.created_at:%Y-%m-%dT%H:%M}Z  second\n"
        f"v1       yes     {v1.content_hash[:12]}  {v1.created_at:%Y-%m-%dT%H:%M}Z\n"
    )
    assert shown == [v.model_dump(mode="json") for v in (v2, v1)]

"""`dockyard devcontainer read-configuration`: JSON on stdout, `error:` lines on stderr, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from dockyard.cli.main import app

CONFIG = ".devcontainer/devcontainer.json"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["devcontainer", "read-configuration", *args], env=env)


def workspace(tmp_path: Path, text: str, *, where: str = CONFIG) -> Path:
    folder = tmp_path / "project"
    (folder / where).parent.mkdir(parents=True, exist_ok=True)
    (folder / where).write_text(text)
    return folder


def test_prints_the_resolved_configuration(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "debian", // base\n "remoteEnv": {"G": "${localEnv:GREETING}"},}')
    result = run("--workspace-folder", str(folder), env={"GREETING": "hi"})
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {
        "configuration": {
            "image": "debian",
            "remoteEnv": {"G": "hi"},
            "configFilePath": {
                "$mid": 1,
                "fsPath": str(folder / CONFIG),
                "path": str(folder / CONFIG),
                "scheme": "vscode-fileHost",
            },
        },
        "workspace": {
            "workspaceFolder": "/workspaces/project",
            "workspaceMount": f"type=bind,source={folder},target=/workspaces/project",
        },
    }


def test_config_and_name_options(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "go"}', where=".devcontainer/go/devcontainer.json")
    workspace(tmp_path, '{"image": "rust"}', where=".devcontainer/rust/devcontainer.json")
    several = run("--workspace-folder", str(folder))
    assert (several.exit_code, several.stdout) == (1, "")
    assert several.stderr == (
        f"error: Workspace folder {folder} has several dev container configurations.\n"
        "  name: choose one of: go, rust\n"
    )
    named = run("--workspace-folder", str(folder), "--name", "rust")
    assert json.loads(named.stdout)["configuration"]["image"] == "rust"
    explicit = run(
        "--workspace-folder", str(folder), "--config", str(folder / ".devcontainer/go/devcontainer.json")
    )
    assert json.loads(explicit.stdout)["configuration"]["configFilePath"]["scheme"] == "file"
    both = run("--workspace-folder", str(folder), "--name", "go", "--config", "x.json")
    assert (both.exit_code, both.stderr) == (1, "error: --config and --name cannot be used together.\n")


def test_missing_configuration(tmp_path: Path) -> None:
    result = run("--workspace-folder", str(tmp_path))
    assert (result.exit_code, result.stdout) == (1, "")
    assert (
        result.stderr
        == f"error: Dev container config ({tmp_path}/.devcontainer/devcontainer.json) not found.\n"
    )


def test_invalid_configuration(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{\n  "image": 42,\n  "forwardPorts": "3000"\n}')
    result = run("--workspace-folder", str(folder))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: Invalid dev container config {CONFIG}.\n"
        f"  {CONFIG}:2: image: must be a string, not the number 42\n"
        f"  {CONFIG}:3: forwardPorts: must be a list of ports, not a string\n"
    )


def test_syntax_error(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "x",\n /* open')
    result = run("--workspace-folder", str(folder))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {CONFIG} is not valid JSON with comments.\n"
        f"  {CONFIG}:2: (syntax): unterminated block comment (column 2)\n"
    )


def test_unknown_variable_warns_or_fails_when_strict(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "x:${templateOption:v}"}')
    lenient = run("--workspace-folder", str(folder))
    assert lenient.exit_code == 0
    assert json.loads(lenient.stdout)["configuration"]["image"] == "x:${templateOption:v}"
    assert lenient.stderr == f"warning: {CONFIG}:1: image: unknown variable ${{templateOption:v}}\n"
    strict = run("--workspace-folder", str(folder), "--strict")
    assert (strict.exit_code, strict.stdout) == (1, "")
    assert strict.stderr == (
        f"error: Invalid dev container config {CONFIG}.\n  {CONFIG}:1: image: unknown variable ${{templateOption:v}}\n"
    )


def test_id_labels(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "x", "name": "${devcontainerId}"}')
    result = run("--workspace-folder", str(folder), "--id-label", "a=b", "--id-label", "c=d=e")
    # Computed with the reference's function for the labels {"a": "b", "c": "d=e"}.
    assert (
        json.loads(result.stdout)["configuration"]["name"]
        == "1ihumsp8mnijt8ftrnfeohi2nh4uv60j8gi93lg3n299rocfa8r3"
    )
    bad = run("--workspace-folder", str(folder), "--id-label", "novalue")
    assert (bad.exit_code, bad.stderr) == (
        1,
        "error: Invalid --id-label.\n  --id-label: 'novalue' is not NAME=VALUE\n",
    )


def test_the_installed_command_and_its_start_up(tmp_path: Path) -> None:
    folder = workspace(tmp_path, '{"image": "debian"}')
    env = dict(os.environ)
    dockyard = Path(sys.executable).parent / "dockyard"
    done = subprocess.run(
        [str(dockyard), "devcontainer", "read-configuration", "--workspace-folder", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["configuration"]["image"] == "debian"
    missing = subprocess.run(
        [str(dockyard), "devcontainer", "read-configuration", "--workspace-folder", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("error: Dev container config (")
    # Other commands start without loading the reader.
    code = "import sys, dockyard.cli.main; print('dockyard.templates.devcontainer' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )

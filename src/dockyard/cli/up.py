"""`dockyard up REPO_OR_DIR`: a workspace straight from a repository's dev container configuration.

A local folder is uploaded as a template of its own (named after the folder), its `dockyard.yaml` written here and naming
the folder's devcontainer.json; pushing the same files again reuses the version (and its cached image). A git
URL is cloned here (with your own git and its credentials) only to read its configuration: the template carries
the `.devcontainer` files and a `git:` section, so the workspace's agent clones the repository into the workspace
folder on its first start with the credential registered with `dockyard git-auth add`, as for any template. The configuration is checked here before anything is uploaded, so a refused one leaves nothing behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dockyard.cli import config, connect, output, progress, render
from dockyard.cli.errors import CliError
from dockyard.cli.output import OutputFormat, OutputOption
from dockyard_sdk import ApiError, Client
from dockyard_sdk import models as m
from dockyard_sdk.units import parse_duration

# Folders a workspace never needs from a local checkout (the SDK's pack skips the same).
_SKIP = {".git", ".hg", ".svn", "__pycache__", ".DS_Store", ".venv", "node_modules"}
_DESCRIBED = "dockyard up of "
_URL = re.compile(r"^(https?://|ssh://|git@|file://)|\.git$")


def up(
    source: Annotated[str, typer.Argument(metavar="REPO_OR_DIR", help="A local folder or a git URL.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Workspace name; default: the folder's or repository's name.")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", help="Template to push the configuration as; default: the folder's name."),
    ] = None,
    config_name: Annotated[
        str | None,
        typer.Option("--config-name", help="Use .devcontainer/NAME/devcontainer.json (one of several)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (image, features, hooks, ports) and stop.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until waitFor says it is ready.")
    ] = True,
    timeout: Annotated[str, typer.Option("--timeout", help="How long --wait waits at most.")] = "30m",
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a workspace from a repository's devcontainer.json, with no template written by hand."""
    from dockyard.errors import DockyardError
    from dockyard.templates.devcontainer import discovery
    from dockyard.templates.devcontainer import plan as plans

    started = time.monotonic()
    limit = _seconds(timeout)
    url = source if _URL.search(source) and not Path(source).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="dockyard-up-") as scratch:
        folder = _clone(url, Path(scratch) / "repo") if url else Path(source)
        if not folder.is_dir():
            raise CliError(f"{source} is neither a folder nor a git URL.")
        base = _slug(_repo_name(url) if url else folder.resolve().name)
        template_name = template or base
        workspace_name = name or base
        try:
            location = discovery.find(str(folder.resolve()), name=config_name)
        except DockyardError as exc:
            raise _cli_error(exc) from exc
        config_file = os.path.relpath(location.path, folder.resolve()).replace(os.sep, "/")
        files = _files(folder, only_devcontainer=url is not None)
        try:
            # Binds are the server's to allow (--devcontainer-allow-host-bind): its push decides.
            plan = plans.read(files, config_file, workspace_name=template_name, env={}, host_binds=None)
        except DockyardError as exc:
            raise _cli_error(exc) from exc
        manifest = _manifest(template_name, config_file, url=url, workspace_folder=plan.workspace_folder)
        if dry_run:
            _print_plan(plan, template_name, workspace_name, url, output_format)
            return
        files["dockyard.yaml"] = manifest.encode()
        archive = _tar_gz(files, folder)
    with config.session() as client:
        version = _push(client, template_name, archive, source)
        request = m.CreateWorkspaceRequest(template=template_name, name=workspace_name)
        created = client.create_workspace(request)
        build = created.latest_build
        output.message(
            f"Creating workspace {created.name} from {source} ({template_name} {version.name}, "
            f"build #{build.number})"
        )
        final = created
        if wait:
            final = progress.wait(client, created, build, ref=created.name, timeout=limit)
            final = connect.wait_ready(
                client,
                final,
                ref=created.name,
                timeout=max(1.0, limit - (time.monotonic() - started)),
                strict=True,
                whole_script=True,
            )
    if output_format is OutputFormat.JSON:
        output.print_json(final)
    else:
        render.print_details(final)
        for port in plan.ports:
            label = f" ({port.label})" if port.label else ""
            output.message(
                f"Port {port.port}{label}: dockyard port-forward {final.name} --tcp {port.port}:{port.port}"
            )


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise CliError(
            "Invalid --timeout.", validations=[m.ValidationDetail(field="--timeout", detail=str(exc))]
        ) from exc


def _cli_error(exc: Any) -> CliError:
    return CliError(
        exc.message,
        detail=exc.detail,
        validations=[
            m.ValidationDetail(field=v.field, detail=v.detail, file=v.file, line=v.line)
            for v in exc.validations
        ],
    )


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:32].strip("-")
    return slug or "workspace"


def _repo_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")


def _clone(url: str, target: Path) -> Path:
    # Only to read the configuration; `--` keeps a URL that starts with `-` from being read as an option.
    result = subprocess.run(
        ["git", "clone", "--depth", "1", "--quiet", "--", url, str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CliError(f"git clone {url} failed.", detail=result.stderr.strip()[-2000:])
    return target


def _files(folder: Path, *, only_devcontainer: bool) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in _SKIP for part in relative.parts) or not path.is_file() or path.is_symlink():
            continue
        key = relative.as_posix()
        if only_devcontainer and not (key.startswith(".devcontainer/") or key == ".devcontainer.json"):
            continue
        if key == "dockyard.yaml":
            continue  # the generated manifest takes its place
        files[key] = path.read_bytes()
    return files


def _manifest(template: str, config_file: str, *, url: str | None, workspace_folder: str) -> str:
    lines = [
        f"name: {template}",
        f"description: {json.dumps(_DESCRIBED + (url or template))}",
        f"devcontainer: {json.dumps(config_file)}",
    ]
    if url:
        # The template's git step, as any template's: the agent clones the repository into the workspace folder
        # before the hooks run, with the user's git credential brokered by Dockyard (`dockyard git-auth add`).
        lines.append(f"git: {json.dumps({'repo': url, 'path': workspace_folder})}")
    return "\n".join(lines) + "\n"


def _tar_gz(files: dict[str, bytes], folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            on_disk = folder / path
            info.mode = on_disk.stat().st_mode & 0o777 if on_disk.is_file() else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _push(client: Client, template: str, archive: bytes, source: str) -> m.TemplateVersion:
    try:
        existing = client.get_template(template)
    except ApiError as exc:
        if exc.status_code != 404:
            raise
        created = client.create_template(archive, name=template, message=f"dockyard up {source}")
        if created.active_version is not None:
            return created.active_version
        return client.list_template_versions(created.id)[0]
    active = existing.active_version
    if active is None or not active.manifest.description.startswith(_DESCRIBED):
        # Never push a repository over a template someone wrote by hand.
        raise CliError(
            f"Template {template} exists and was not made by `dockyard up`.",
            hint="name another template with --template",
        )
    return client.create_template_version(existing.id, archive, message=f"dockyard up {source}")


def _print_plan(
    plan: Any, template: str, workspace: str, url: str | None, output_format: OutputFormat
) -> None:
    if output_format is OutputFormat.JSON:
        print(
            json.dumps(
                {"template": template, "workspace": workspace, "clone": url, **plan.to_json()}, indent=2
            )
        )
        return
    say = typer.echo
    say(f"Workspace {workspace} from template {template} ({plan.config_file})")
    if plan.dockerfile:
        target = f", target {plan.target}" if plan.target else ""
        say(f"  image: built from {plan.dockerfile} (context {plan.context}{target})")
    else:
        say(f"  image: {plan.image}")
    for feature in plan.features:
        options = ", ".join(f"{k}={v}" for k, v in feature.env.items() if not k.startswith("_"))
        # What the tag resolved to, as the version's lockfile will pin it (or the repository's lockfile does).
        pinned = f" = {feature.pin.resolved}" if feature.pin is not None else ""
        say(f"  feature: {feature.id} ({options}){pinned}")
    say(f"  user: {plan.user or 'dev'}; workspace folder: {plan.workspace_folder}")
    if url:
        say(f"  clone: {url} into {plan.workspace_folder} (by the agent, with your brokered git credential)")
    if plan.resources:
        say("  resources: " + ", ".join(f"{k}={v}" for k, v in plan.resources.items()))
    for port in plan.ports:
        say(f"  port: {port.port}" + (f" ({port.label})" if port.label else ""))
    for step in plan.steps:
        marker = " (waitFor)" if step.hook == plan.wait_for else ""
        say(f"  {step.hook}{marker}: {json.dumps(step.command)}")
    for note in plan.notes:
        say(f"  note: {note}")

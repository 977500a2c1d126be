"""`dockyard templates push | pull | list | show | versions`."""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from dockyard.cli import config, output
from dockyard.cli.errors import CliError
from dockyard.cli.output import Column, OutputFormat, OutputOption
from dockyard_sdk import ApiError, Client
from dockyard_sdk import models as m
from dockyard_sdk.manifest import DevcontainerRepo, ParameterSpec, TemplateManifest

app = typer.Typer(help="Push and inspect templates.", no_args_is_help=True)

TemplateArg = Annotated[str, typer.Argument(metavar="NAME", help="Template name or id.")]


@app.command("push")
def push(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", exists=True, file_okay=False, help="The template folder.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Template name; default: the manifest's name.")
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed in this version.")] = "",
    activate: Annotated[
        bool, typer.Option("--activate/--no-activate", help="Make the pushed version the active one.")
    ] = True,
    output_format: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a template from a folder, or push the folder as the template's next version."""
    from dockyard.cli import manifest  # YAML loads only for a push

    parsed = manifest.check(folder)
    template_name = name or parsed.name
    with config.session() as client:
        existing = _find(client, template_name)
        if existing is None:
            if not activate:
                output.warning("--no-activate is ignored for a new template: its first version is active")
            version = _create(client, folder, name=name, message=message)
            output.message(f"Created template {template_name} ({version.name})")
        else:
            known = {v.id: v for v in client.list_template_versions(existing.id)}
            version = client.create_template_version(existing.id, folder, message=message, activate=activate)
            output.message(_push_summary(existing, version, known=known, activate=activate))
    if output_format is OutputFormat.JSON:
        output.print_json(version)


def _find(client: Client, template: str) -> m.Template | None:
    try:
        return client.get_template(template)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise


def _create(client: Client, folder: Path, *, name: str | None, message: str) -> m.TemplateVersion:
    created = client.create_template(folder, name=name, message=message)
    if created.active_version is not None:
        return created.active_version
    return client.list_template_versions(created.id)[0]


def _push_summary(
    template: m.Template, version: m.TemplateVersion, *, known: dict[str, m.TemplateVersion], activate: bool
) -> str:
    # The server answers identical content with the version that already holds it, so "new" means "unknown".
    active = template.active_version.name if template.active_version else "none"
    if version.id not in known:
        if activate:
            return f"Pushed {template.name} {version.name}; it is now the active version"
        return f"Pushed {template.name} {version.name}; the active version is still {active}"
    if version.id == template.active_version_id:
        return f"Template {template.name} unchanged, already {version.name}"
    if activate:
        return f"{template.name}: content matches {version.name}, which is now the active version"
    return f"{template.name}: content matches {version.name}; the active version is still {active}"


@app.command("pull")
def pull(
    template: TemplateArg,
    destination: Annotated[
        Path | None, typer.Argument(metavar="[DIR]", help="Where to write the files; default: ./NAME.")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A version (v3, or its id); default: the active one.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write into a folder that is not empty (the version's files replace theirs)."
        ),
    ] = False,
) -> None:
    """Write a version's files into a folder, as the server stores them: the dev container lockfile that
    pins its features included, and for a configuration fetched from a repository, that configuration."""
    with config.session() as client:
        found = client.get_template(template)
        ref = version or found.active_version_id
        if not ref:
            raise CliError(f"Template {found.name} has no active version.", hint="name one with --version")
        chosen = client.get_template_version(found.id, ref)
        data = client.get_template_archive(found.id, chosen.id)
    target = destination or Path(found.name)
    if target.exists() and not target.is_dir():
        raise CliError(f"{target} is not a folder.")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise CliError(
            f"{target} is not empty.", hint="pull into a new folder, or pass --force to write into it"
        )
    count = _extract(data, target)
    output.message(f"Pulled {found.name} {chosen.name} into {target} ({count} files)")


def _extract(data: bytes, target: Path) -> int:
    """The archive's files and links under `target`; nothing outside it, whatever the archive holds (the
    server checked it at push, but a pull trusts no archive) or the folder already holds (a link, with
    --force). Returns how many were written."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if not parts or member.name.startswith("/") or ".." in parts:
                raise CliError(
                    f"The archive holds a path outside the template: {member.name!r}; stopped there."
                )
            path = target.joinpath(*parts)
            folder = path if member.isdir() else path.parent
            if not _lands_inside(folder, root):
                raise CliError(f"{folder} leads outside {target}; stopped there.")
            folder.mkdir(parents=True, exist_ok=True)
            if member.isdir():
                continue
            if path.is_symlink():
                path.unlink()
            if member.issym():
                inside = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
                if member.linkname.startswith("/") or inside == ".." or inside.startswith("../"):
                    raise CliError(
                        f"The archive's link {member.name!r} leads outside the template; stopped there."
                    )
                path.unlink(missing_ok=True)
                path.symlink_to(member.linkname)
            elif member.isreg():
                handle = tar.extractfile(member)
                path.write_bytes(handle.read() if handle is not None else b"")
                path.chmod(0o755 if member.mode & 0o111 else 0o644)
            else:
                raise CliError(
                    f"The archive holds {member.name!r}, neither a file nor a link; stopped there."
                )
            count += 1
    return count


def _lands_inside(folder: Path, root: Path) -> bool:
    """Whether making `folder` (and writing in it) stays under `root`: the deepest part of it that exists
    already, a link included, decides where the rest would land."""
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    return existing.resolve().is_relative_to(root)


@app.command("list")
def list_templates(output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List the templates you can see."""
    with config.session() as client:
        templates = client.list_templates()
    columns: list[Column[m.Template]] = [
        Column("NAME", lambda t: t.name),
        Column("ACTIVE", lambda t: t.active_version.name if t.active_version else "-"),
        Column("DESCRIPTION", lambda t: t.description),
        Column("UPDATED", lambda t: output.when(t.updated_at)),
    ]
    output.emit(
        templates,
        output_format,
        columns=columns,
        rows=templates,
        empty="No templates yet; create one with `dockyard templates push DIR`.",
    )


@app.command("show")
def show(template: TemplateArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """Show a template, its active version and that version's parameters."""
    with config.session() as client:
        found = client.get_template(template)
    if output_format is OutputFormat.JSON:
        output.print_json(found)
        return
    version = found.active_version
    pairs = [("NAME", found.name), ("ID", found.id)]
    if found.display_name:
        pairs.append(("DISPLAY NAME", found.display_name))
    pairs += [
        ("DESCRIPTION", found.description),
        ("ACTIVE VERSION", f"{version.name} ({version.content_hash[:12]})" if version else "none"),
        ("UPDATED", output.when(found.updated_at)),
    ]
    if version is not None:
        pairs += [("SOURCE", _source(version.manifest)), ("RESOURCES", _resources(version.manifest))]
    output.print_rich(output.fields(pairs))
    if version is not None:
        typer.echo()
        if version.parameters:
            output.print_rich(output.table(_PARAMETER_COLUMNS, version.parameters))
        else:
            typer.echo("No parameters.")


def _source(parsed: TemplateManifest) -> str:
    if parsed.image is not None:
        return f"image {parsed.image}"
    if parsed.build is not None:
        return f"build {parsed.build.dockerfile}"
    source = parsed.devcontainer
    if isinstance(source, DevcontainerRepo):
        return (
            f"devcontainer {source.file} from {source.repo} at {source.commit[:12] or source.ref or 'HEAD'}"
        )
    return f"devcontainer {source}"


def _resources(parsed: TemplateManifest) -> str:
    r = parsed.resources
    text = f"{_value(r.cpu)} CPU, {r.memory} memory"
    if r.gpu not in (0, "0"):
        text += f", {r.gpu} GPU"
    if r.disk is not None:
        text += f", {r.disk} disk"
    return text


def _value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if value == "":
        return '""'
    return str(value)


def _default(spec: ParameterSpec) -> str:
    if spec.default is None:
        return "(required)" if spec.is_required else ""
    return _value(spec.default)


def _rules(spec: ParameterSpec) -> str:
    rules = []
    if spec.options:
        rules.append("one of: " + ", ".join(_value(o.value) for o in spec.options))
    check = spec.validation
    if check is not None:
        limits = [
            f"{label} {value:g}"
            for label, value in (("min", check.min), ("max", check.max))
            if value is not None
        ]
        if limits:
            rules.append(", ".join(limits))
        if check.regex is not None:
            rules.append(f"regex {check.regex}")
    return "; ".join(rules)


_PARAMETER_COLUMNS: list[Column[ParameterSpec]] = [
    Column("PARAMETER", lambda p: p.name),
    Column("TYPE", lambda p: p.type.value),
    Column("DEFAULT", _default),
    Column("DESCRIPTION", lambda p: p.description),
    Column("OPTIONS/VALIDATION", _rules),
]


@app.command("versions")
def versions(template: TemplateArg, output_format: OutputOption = OutputFormat.TABLE) -> None:
    """List a template's versions, newest first."""
    with config.session() as client:
        found = client.get_template(template)
        listed = client.list_template_versions(found.id)
    columns: list[Column[m.TemplateVersion]] = [
        Column("VERSION", lambda v: v.name),
        Column("ACTIVE", lambda v: "yes" if v.id == found.active_version_id else ""),
        Column("HASH", lambda v: v.content_hash[:12]),
        Column("CREATED", lambda v: output.when(v.created_at)),
        Column("MESSAGE", lambda v: v.message),
    ]
    output.emit(listed, output_format, columns=columns, rows=listed)

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, TemplateParam, scoped
from dockyard.errors import BadRequest, NotFound, ValidationFailed
from dockyard.templates import archive, parameters, service
from dockyard.templates.archive import MAX_ARCHIVE_BYTES, MAX_FILES, TemplateFiles
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope
from dockyard_sdk.names import NAME_RE

router = APIRouter(prefix="/api/v2/templates", tags=["templates"])
_TEMPLATE_LIST = TypeAdapter(list[wire.Template])


async def _refresh(lock: asyncio.Lock, load: Callable[[], list[wire.Template]]) -> None:
    async with lock:
        await run_in_threadpool(load)


def _catalog_lock(request: Request) -> asyncio.Lock:
    lock: asyncio.Lock | None = getattr(request.app.state, "catalog_lock", None)
    if lock is None:
        lock = request.app.state.catalog_lock = asyncio.Lock()
    return lock


_TAR_TYPES = {
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/octet-stream",
    "application/x-compressed-tar",
}

# Uploads are not JSON, so their request body is described here for the OpenAPI document.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The template folder as a tar or tar.gz archive (Content-Type application/gzip or application/x-tar), "
            "or as multipart/form-data: one part named `archive` holding the archive, or one part per file whose "
            "filename is its path in the template. At most 10 MB."
        ),
        "content": {
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"archive": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


async def read_upload(request: Request) -> TemplateFiles:
    """The template files of an upload, read under the size caps before anything is parsed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=MAX_FILES, max_fields=100, max_part_size=MAX_ARCHIVE_BYTES)
        except MultiPartException as exc:
            raise BadRequest("Malformed multipart upload.", detail=exc.message) from exc
        try:
            parts = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
            if len(parts) == 1 and parts[0][0] == "archive":
                return archive.read_tar(await parts[0][1].read())
            uploads = [(value.filename or key, await value.read()) for key, value in parts]
        finally:
            await form.close()
        if not uploads:
            raise BadRequest(
                "The multipart upload holds no files.",
                detail="Send a part named `archive` or one part per template file.",
            )
        return archive.from_uploads(uploads)
    if content_type in _TAR_TYPES or not content_type:
        body = await request.body()
        if not body:
            raise BadRequest("The request body is empty.", detail="Send the template as a tar.gz archive.")
        return archive.read_tar(body)
    raise BadRequest(
        f"Unsupported content type {content_type!r}.",
        detail="Send application/gzip, application/x-tar or multipart/form-data.",
    )


@router.get("", response_model=list[wire.Template])
async def list_templates(request: Request, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]) -> Response:
    """Templates, sorted by name, with their active versions; a token's allow-list narrows them."""

    def load() -> list[wire.Template]:
        with request.app.state.read_sessions() as db:
            return service.catalog.load(db, actor)

    found = service.catalog.peek(actor.organization_id)
    if found is not None:
        listed, stale = found
        lock = _catalog_lock(request)
        if stale and not lock.locked():
            request.app.state.catalog_refresh = asyncio.ensure_future(_refresh(lock, load))
    else:
        # One load at a time: when the cached list is gone under load, every request in flight would
        # otherwise query the database at the same moment; they wait for the one load instead.
        async with _catalog_lock(request):
            cached = service.catalog.get(actor.organization_id)
            listed = cached if cached is not None else await run_in_threadpool(load)
    return Response(_TEMPLATE_LIST.dump_json(service.visible(actor, listed)), media_type="application/json")


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY)
async def create_template(
    request: Request,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TEMPLATE_WRITE)],
    name: Annotated[
        str | None,
        Query(description="Overrides the manifest's name.", pattern=NAME_RE.pattern, max_length=32),
    ] = None,
    message: Annotated[str, Query(max_length=1024)] = "",
) -> wire.Template:
    """Create a template from an uploaded template folder; it becomes version v1."""
    files = await read_upload(request)
    privileged = request.app.state.settings.kubernetes_allow_privileged
    binds = request.app.state.settings.devcontainer_host_binds
    outbound = request.app.state.settings.outbound

    def work() -> wire.Template:
        return service.to_wire(
            db,
            service.create(
                db,
                actor,
                files,
                name=name,
                message=message,
                allow_privileged=privileged,
                host_binds=binds,
                outbound=outbound,
            ),
        )

    return await run_in_threadpool(work)


@router.get("/{template}")
def get_template(
    template: TemplateParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]
) -> wire.Template:
    """A template by name or id, with its active version."""
    return service.to_wire(db, template)


@router.patch("/{template}")
def update_template(
    body: wire.UpdateTemplateRequest,
    template: TemplateParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TEMPLATE_WRITE)],
) -> wire.Template:
    """Change a template's display name, description, icon or active version."""
    return service.to_wire(db, service.update(db, actor, template, body))


@router.delete("/{template}", status_code=status.HTTP_204_NO_CONTENT)
def delete_template(
    template: TemplateParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_WRITE)]
) -> None:
    """Delete a template that no workspace, live or deleted, was made from (409 otherwise)."""
    service.delete(db, actor, template)


@router.get("/{template}/versions")
def list_versions(
    template: TemplateParam, db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]
) -> list[wire.TemplateVersion]:
    """Every version of a template, newest first."""
    return [service.version_to_wire(v) for v in service.versions(db, template)]


@router.post("/{template}/versions", status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY)
async def create_version(
    request: Request,
    response: Response,
    template: TemplateParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TEMPLATE_WRITE)],
    message: Annotated[str, Query(max_length=1024)] = "",
    activate: Annotated[bool, Query(description="Make this the active version.")] = True,
) -> wire.TemplateVersion:
    """Push a new version. Pushing content identical to an existing version returns that version (200)."""
    files = await read_upload(request)
    privileged = request.app.state.settings.kubernetes_allow_privileged
    binds = request.app.state.settings.devcontainer_host_binds
    outbound = request.app.state.settings.outbound

    def work() -> wire.TemplateVersion:
        version, created = service.create_version(
            db,
            actor,
            template,
            files,
            message=message,
            activate=activate,
            allow_privileged=privileged,
            host_binds=binds,
            outbound=outbound,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return service.version_to_wire(version)

    return await run_in_threadpool(work)


@router.get("/{template}/versions/{version}")
def get_version(
    template: TemplateParam, version: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]
) -> wire.TemplateVersion:
    """One version by id, name (`v3`), number or content hash prefix, with its manifest and file list."""
    return service.version_to_wire(service.get_version(db, template, version))


@router.get("/{template}/versions/{version}/files")
def list_files(
    template: TemplateParam, version: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]
) -> list[wire.TemplateFile]:
    """The files of a template version."""
    return service.version_to_wire(service.get_version(db, template, version)).files


@router.get(
    "/{template}/versions/{version}/files/{path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_file(
    template: TemplateParam,
    version: str,
    path: str,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)],
) -> Response:
    """The content of one file of a template version."""
    files = service.files_of(db, service.get_version(db, template, version))
    item = files.files.get(path)
    if item is None or item.link is not None:
        raise NotFound(f"File {path!r} not found in template {template.name!r}.")
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if path.endswith((".yaml", ".yml", ".sh", "Dockerfile", ".json", ".md", ".txt")):
        media_type = "text/plain; charset=utf-8"
    return Response(item.data, media_type=media_type)


@router.get(
    "/{template}/versions/{version}/archive",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}},
)
def get_archive(
    template: TemplateParam, version: str, db: DbSession, actor: Annotated[Actor, scoped(Scope.TEMPLATE_READ)]
) -> Response:
    """A template version's files as a tar.gz archive."""
    row = service.get_version(db, template, version)
    return Response(
        service.archive_bytes(db, row),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{template.name}-v{row.number}.tar.gz"'},
    )


@router.post("/{template}/parameters/check")
def check_parameters(
    body: wire.ParameterCheckRequest,
    template: TemplateParam,
    db: DbSession,
    actor: Annotated[Actor, scoped(Scope.TEMPLATE_USE)],
    version: Annotated[
        str | None, Query(description="Version to check against; the active one by default.", max_length=64)
    ] = None,
) -> wire.ParameterCheckResponse:
    """Validate parameter values the way workspace creation will, returning the values with defaults filled."""
    if version is not None:
        row = service.get_version(db, template, version)
    elif template.active_version is not None:
        row = template.active_version
    else:
        raise NotFound(f"Template {template.name!r} has no active version.")
    spec = service.version_to_wire(row).manifest.parameters
    resolved, problems = parameters.validate(spec, body.parameters, template_name=template.name)
    if problems:
        raise ValidationFailed("Invalid parameters.", problems)
    return wire.ParameterCheckResponse(parameters=resolved)

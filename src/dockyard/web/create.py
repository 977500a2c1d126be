"""The create form, generated from the template's typed parameters and validated by the same service as
`POST /api/v2/workspaces`: the API's own messages are shown at the fields, and what the user typed is kept."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, HubDep, RuntimeDep
from dockyard.errors import DockyardError, Validation
from dockyard.runtimes.base import HostCapacity, Runtime, RuntimeFailure
from dockyard.templates import service as templates_service
from dockyard.tunnel import claims
from dockyard.web import session
from dockyard.web.render import error_page, render
from dockyard.web.session import CSRF_FIELD, page_actor
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import ParameterSpec, ParameterType
from dockyard_sdk.models import Scope

router = APIRouter(include_in_schema=False)
PageActor = Annotated[Actor, Depends(page_actor)]
MAX_FIELDS = 200


def _capacity(runtime: Runtime) -> HostCapacity | None:
    try:
        return runtime.capacity()
    except RuntimeFailure:
        # As the API: with the engine down the build fails and says so; the form need not refuse.
        return None


def _specs(db: DbSession, actor: Actor, template: str) -> tuple[wire.Template, list[ParameterSpec]]:
    actor.require(Scope.TEMPLATE_READ)
    row = templates_service.get(db, actor, template)
    found = templates_service.to_wire(db, row)
    version = found.active_version
    return found, list(version.manifest.parameters) if version else []


def _initial(spec: ParameterSpec) -> str:
    if spec.default is None:
        return ""
    if isinstance(spec.default, bool):
        return "true" if spec.default else "false"
    if isinstance(spec.default, list):
        return "\n".join(spec.default)
    return str(spec.default)


def values_from_form(specs: list[ParameterSpec], form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """Parameter values to send (blank means "not given", so defaults apply) and the raw text to show again."""
    sent: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for spec in specs:
        key = f"p.{spec.name}"
        if spec.type == ParameterType.BOOL:
            # The hidden "false" comes first; a ticked checkbox adds "true" after it.
            raw = str((form.getlist(key) or ["false"])[-1])
            typed[spec.name] = raw
            sent[spec.name] = raw == "true"
            continue
        raw = str(form.get(key) or "")
        typed[spec.name] = raw
        if spec.type == ParameterType.LIST_STRING:
            items = [line.strip() for line in raw.splitlines() if line.strip()]
            if items:
                sent[spec.name] = items
        elif raw.strip():
            sent[spec.name] = raw.strip()
    return sent, typed


def _form(
    request: Request,
    actor: Actor,
    template: wire.Template,
    specs: list[ParameterSpec],
    *,
    values: dict[str, str],
    name: str = "",
    problems: list[Validation] | None = None,
    message: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    errors: dict[str, str] = {}
    general: list[str] = []
    for problem in problems or []:
        field = problem.field.removeprefix("parameters.")
        if field == "name" or any(s.name == field for s in specs):
            errors.setdefault(field, problem.detail)
        else:
            general.append(str(problem))
    context = {
        "template": template,
        "specs": specs,
        "values": values,
        "name": name,
        "errors": errors,
        "general": general,
        "message": message,
    }
    return render(request, "create.html", context, status_code=status_code, actor=actor)


@router.get("/workspaces/new")
def create_form(
    request: Request,
    db: DbSession,
    actor: PageActor,
    template: Annotated[str, Query(max_length=64)],
) -> HTMLResponse:
    try:
        actor.require(Scope.WORKSPACE_CREATE)
        found, specs = _specs(db, actor, template)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    return _form(request, actor, found, specs, values={s.name: _initial(s) for s in specs})


@router.post("/workspaces/new")
async def create(
    request: Request, db: DbSession, runtime: RuntimeDep, hub: HubDep, actor: PageActor
) -> Response:
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    try:
        session.check_session_csrf(request, form.get(CSRF_FIELD))
        actor.require(Scope.WORKSPACE_CREATE)
        found, specs = _specs(db, actor, str(form.get("template") or "")[:64])
    except DockyardError as exc:
        return error_page(request, actor, exc)
    sent, typed = values_from_form(specs, form)
    name = str(form.get("name") or "").strip()
    try:
        body = wire.CreateWorkspaceRequest(template=found.id, name=name or None, parameters=sent)
    except ValidationError as exc:
        problems = [
            Validation(".".join(str(p) for p in e["loc"]), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()
        ]
        message = "Invalid request."
        return _form(
            request,
            actor,
            found,
            specs,
            values=typed,
            name=name,
            problems=problems,
            message=message,
            status_code=422,
        )
    try:
        # As the API creates: a claimed warm pool member's agent is told before the page moves on.
        loaded = await run_in_threadpool(
            claims.create_workspace, db, actor, body, hub=hub, capacity=_capacity(runtime)
        )
    except DockyardError as exc:
        return _form(
            request,
            actor,
            found,
            specs,
            values=typed,
            name=name,
            problems=exc.validations,
            message=exc.message,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/workspaces/{loaded.workspace.id}", status_code=303)

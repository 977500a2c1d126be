"""Admin pages: users and roles (owners), template versions (template admins and owners), and the audit log
(owners). Each section asks for the scope its API route declares, through the same services; everyone else
gets the 403 page, and a refused form changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from dockyard.accounts import users
from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession
from dockyard.errors import DockyardError, Forbidden, Validation, ValidationFailed
from dockyard.store import audit
from dockyard.templates import service as templates_service
from dockyard.web import forms
from dockyard.web.render import error_page, render
from dockyard.web.session import page_actor
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(include_in_schema=False)
PageActor = Annotated[Actor, Depends(page_actor)]
USER_FIELDS = ("username", "email", "password", "role")
AUDIT_PAGE = 50
# Sections in the order /admin tries them, with the scope each needs.
SECTIONS = (("users", Scope.USER_ADMIN), ("templates", Scope.TEMPLATE_WRITE), ("audit", Scope.AUDIT_READ))


def sections(actor: Actor) -> list[str]:
    return [name for name, scope in SECTIONS if actor.can(scope)]


def _render(
    request: Request, actor: Actor, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    context = {"sections": sections(actor), **context}
    return render(request, name, context, status_code=status_code, actor=actor)


@router.get("/admin")
def admin_home(request: Request, actor: PageActor) -> Response:
    allowed = sections(actor)
    if not allowed:
        refused = Forbidden(
            f"Your role ({actor.role.value}) has no admin pages.",
            detail="Users and the audit log are for owners; template versions for template admins too.",
        )
        return error_page(request, actor, refused)
    return RedirectResponse(f"/admin/{allowed[0]}", status_code=303)


# --- users ---------------------------------------------------------------------------------------------------


def _users_page(
    request: Request,
    db: DbSession,
    actor: Actor,
    *,
    q: str = "",
    form: dict[str, Any] | None = None,
    message: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    actor.require(Scope.USER_ADMIN)
    rows, count = users.list_users(db, actor, search=q or None, limit=500, offset=0)
    context = {
        "users": [users.to_wire(u) for u in rows],
        "count": count,
        "q": q,
        "roles": list(wire.Role),
        "form": form or {"typed": {"role": wire.Role.MEMBER.value}, "errors": {}},
        "message": message,
    }
    return _render(request, actor, "admin_users.html", context, status_code)


@router.get("/admin/users")
def users_page(
    request: Request, db: DbSession, actor: PageActor, q: Annotated[str, Query(max_length=64)] = ""
) -> HTMLResponse:
    try:
        return _users_page(request, db, actor, q=q)
    except DockyardError as exc:
        return error_page(request, actor, exc)


@router.post("/admin/users")
async def create_user(request: Request, db: DbSession, actor: PageActor) -> Response:
    try:
        posted = await forms.read(request)
        actor.require(Scope.USER_ADMIN)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    typed = {k: forms.one(posted, k, limit=300).strip() for k in ("username", "email", "role")}
    password = forms.one(posted, "password", limit=300)
    try:
        body = wire.CreateUserRequest(
            username=typed["username"], email=typed["email"], password=password or None, role=typed["role"]
        )
        users.create(db, actor, body)
    except (ValidationError, DockyardError) as exc:
        refused = (
            ValidationFailed("Invalid request.", forms.problems(exc))
            if isinstance(exc, ValidationError)
            else exc
        )
        errors, general = forms.at_fields(refused.validations, USER_FIELDS)
        form = {"typed": typed, "errors": errors, "general": general, "message": refused.message}
        return _users_page(request, db, actor, form=form, status_code=refused.status_code)
    return RedirectResponse(f"/admin/users#user-{typed['username']}", status_code=303)


@router.post("/admin/users/{ref}")
async def update_user(request: Request, db: DbSession, actor: PageActor, ref: str) -> Response:
    """One change per form: `role=...` from the role form, or `status=...` from suspend/reactivate."""
    try:
        posted = await forms.read(request)
        actor.require(Scope.USER_ADMIN)
        user = users.get(db, actor, ref[:64])
        change = {k: forms.one(posted, k, limit=32) for k in ("role", "status") if k in posted}
        try:
            body = wire.UpdateUserRequest(**change)
        except ValidationError as exc:
            raise ValidationFailed("Invalid request.", forms.problems(exc)) from exc
        users.update(db, actor, user, body)
    except DockyardError as exc:
        try:
            message = "; ".join([exc.message, *(str(v) for v in exc.validations)])
            return _users_page(request, db, actor, message=message, status_code=exc.status_code)
        except DockyardError as denied:
            return error_page(request, actor, denied)
    return RedirectResponse(f"/admin/users#user-{user.username}", status_code=303)


# --- template versions ---------------------------------------------------------------------------------------


def _templates_page(
    request: Request, db: DbSession, actor: Actor, *, message: str = "", status_code: int = 200
) -> HTMLResponse:
    actor.require(Scope.TEMPLATE_WRITE)
    listed = []
    for found in templates_service.visible(actor, templates_service.catalog.load(db, actor)):
        row = templates_service.get(db, actor, found.id)
        versions = [templates_service.version_to_wire(v) for v in templates_service.versions(db, row)]
        listed.append((found, versions))
    context = {"templates": listed, "message": message}
    return _render(request, actor, "admin_templates.html", context, status_code)


@router.get("/admin/templates")
def templates_page(request: Request, db: DbSession, actor: PageActor) -> HTMLResponse:
    try:
        return _templates_page(request, db, actor)
    except DockyardError as exc:
        return error_page(request, actor, exc)


@router.post("/admin/templates/{template}/activate")
async def activate_version(request: Request, db: DbSession, actor: PageActor, template: str) -> Response:
    """Make a version the active one: newer (an update) or older (a roll back), as `PATCH /templates/{t}`."""
    try:
        posted = await forms.read(request)
        actor.require(Scope.TEMPLATE_WRITE)
        row = templates_service.get(db, actor, template[:64])
        version = forms.one(posted, "version", limit=64)
        templates_service.update(db, actor, row, wire.UpdateTemplateRequest(active_version_id=version))
    except DockyardError as exc:
        try:
            message = "; ".join([exc.message, *(str(v) for v in exc.validations)])
            return _templates_page(request, db, actor, message=message, status_code=exc.status_code)
        except DockyardError as denied:
            return error_page(request, actor, denied)
    return RedirectResponse(f"/admin/templates#template-{row.name}", status_code=303)


# --- audit log -----------------------------------------------------------------------------------------------


def _time(field: str, raw: str) -> tuple[datetime | None, Validation | None]:
    """A `datetime-local` value (or any ISO 8601 time); without a zone it is UTC, as in the API."""
    if not raw:
        return None, None
    try:
        value = datetime.fromisoformat(raw)
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)), None
    except (ValueError, OverflowError):
        return None, Validation(field, f"{raw[:40]!r} is not a time like 2026-01-31T09:30")


@router.get("/admin/audit")
def audit_page(
    request: Request,
    db: DbSession,
    actor: PageActor,
    user: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    workspace: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    page_number: Annotated[str, Query(alias="page", max_length=8)] = "1",
) -> HTMLResponse:
    try:
        actor.require(Scope.AUDIT_READ)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    # A hand-edited `page=` falls back to the first page rather than a JSON error.
    page = max(1, int(page_number)) if page_number.isdigit() else 1
    filters = {"user": user, "action": action, "workspace": workspace, "since": since, "until": until}
    start, bad_since = _time("since", since)
    end, bad_until = _time("until", until)
    errors = {v.field: v.detail for v in (bad_since, bad_until) if v is not None}
    rows: list[Any] = []
    count = 0
    if not errors:
        rows, count = audit.search(
            db,
            user=user or None,
            action=action or None,
            resource_type="workspace" if workspace else None,
            resource=workspace or None,
            since=start,
            until=end,
            limit=AUDIT_PAGE,
            offset=(page - 1) * AUDIT_PAGE,
        )
    kept = {k: v for k, v in filters.items() if v}

    def link(number: int) -> str:
        return "/admin/audit?" + urlencode({**kept, "page": number})

    context = {
        "entries": rows,
        "count": count,
        "filters": filters,
        "errors": errors,
        "page": page,
        "pages": max(1, -(-count // AUDIT_PAGE)),
        "previous": link(page - 1) if page > 1 else "",
        "next": link(page + 1) if page * AUDIT_PAGE < count else "",
    }
    return _render(request, actor, "admin_audit.html", context, 422 if errors else 200)

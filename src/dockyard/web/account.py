"""The account page: your API tokens (created with scopes, an allow-list and a lifetime; the secret shown once;
revoked) and your SSH keys. The same services as `/api/v2/users/me/tokens` and `/api/v2/users/me/sshkeys`,
so the rules (a token never mints wider scopes than its creator's) are the API's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from dockyard.accounts import sshkeys, tokens, users
from dockyard.accounts.actor import ROLE_SCOPES, Actor
from dockyard.api.deps import DbSession
from dockyard.errors import DockyardError, Forbidden, ValidationFailed
from dockyard.gateway import keys
from dockyard.web import forms
from dockyard.web.render import error_page, render
from dockyard.web.session import page_actor
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(include_in_schema=False)
PageActor = Annotated[Actor, Depends(page_actor)]
TOKEN_FIELDS = ("name", "lifetime", "scopes", "allow_list")
KEY_FIELDS = ("name", "public_key")
LIFETIMES = ("1h", "8h", "1d", "7d", "30d", "90d", "366d")


def _page(
    request: Request,
    db: DbSession,
    actor: Actor,
    *,
    token_form: dict[str, Any] | None = None,
    key_form: dict[str, Any] | None = None,
    created: tuple[str, wire.ApiToken] | None = None,
    notice: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    actor.require(Scope.USER_READ)
    user = users.get(db, actor, "me")
    context = {
        "tokens": [tokens.to_wire(t) for t in tokens.list_tokens(db, user)],
        "keys": [sshkeys.to_wire(k) for k in sshkeys.list_keys(db, actor, user)],
        # Only the scopes this user's role can hold: offering the rest would only earn a refusal.
        "scopes": [s for s in Scope if s == Scope.ALL or s in ROLE_SCOPES[actor.role]],
        "lifetimes": LIFETIMES,
        "token_form": token_form or {"typed": {"lifetime": "30d", "scopes": []}, "errors": {}},
        "key_form": key_form or {"typed": {}, "errors": {}},
        "created": created,
        "notice": notice,
    }
    return render(request, "account.html", context, status_code=status_code, actor=actor)


def _refused(exc: DockyardError, values: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    errors, general = forms.at_fields(exc.validations, fields)
    return {"typed": values, "errors": errors, "general": general, "message": exc.message}


@router.get("/account")
def account_page(request: Request, db: DbSession, actor: PageActor) -> HTMLResponse:
    try:
        return _page(request, db, actor)
    except DockyardError as exc:
        return error_page(request, actor, exc)


@router.post("/account/tokens")
async def create_token(request: Request, db: DbSession, actor: PageActor) -> Response:
    try:
        form = await forms.read(request)
        actor.require(Scope.TOKEN_WRITE)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    allow_text = forms.one(form, "allow_list", limit=16384)
    values = {
        "name": forms.one(form, "name", limit=256).strip(),
        "lifetime": forms.one(form, "lifetime", limit=32).strip(),
        "scopes": [s[:32] for s in form.get("scopes", [])][:32],
        "allow_list": allow_text,
    }
    entries = [line.strip() for line in allow_text.splitlines() if line.strip()]
    try:
        body = wire.CreateTokenRequest(
            name=values["name"], lifetime=values["lifetime"], scopes=values["scopes"], allow_list=entries
        )
    except ValidationError as exc:
        refused = ValidationFailed("Invalid request.", forms.problems(exc))
        return _page(request, db, actor, token_form=_refused(refused, values, TOKEN_FIELDS), status_code=422)
    try:
        key, row = tokens.create(db, actor, users.get(db, actor, "me"), body)
    except DockyardError as exc:
        return _page(
            request,
            db,
            actor,
            token_form=_refused(exc, values, TOKEN_FIELDS),
            status_code=exc.status_code,
        )
    # Rendered, not redirected: the secret exists only in this response and is never stored in clear.
    return _page(request, db, actor, created=(key, tokens.to_wire(row)), status_code=201)


@router.post("/account/tokens/{ref}/revoke")
async def revoke_token(request: Request, db: DbSession, actor: PageActor, ref: str) -> Response:
    try:
        await forms.read(request)
        actor.require(Scope.TOKEN_WRITE)
        user = users.get(db, actor, "me")
        token = tokens.get(db, user, ref[:64])
        if token.id == actor.token_id:
            raise Forbidden(
                "This is the session you are using.", detail="Log out to end it; revoke other tokens here."
            )
        tokens.revoke(db, actor, token)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    return RedirectResponse("/account#tokens", status_code=303)


@router.post("/account/sshkeys")
async def add_key(request: Request, db: DbSession, actor: PageActor) -> Response:
    try:
        form = await forms.read(request)
        actor.require(Scope.USER_WRITE)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    values = {
        "name": forms.one(form, "name", limit=256).strip(),
        "public_key": forms.one(form, "public_key", limit=20000).strip(),
    }
    try:
        body = wire.CreateSshKeyRequest(name=values["name"], public_key=values["public_key"])
        keys.add(db, actor, users.get(db, actor, "me"), body)
    except ValidationError as exc:
        refused = ValidationFailed("Invalid request.", forms.problems(exc))
        return _page(request, db, actor, key_form=_refused(refused, values, KEY_FIELDS), status_code=422)
    except DockyardError as exc:
        return _page(
            request, db, actor, key_form=_refused(exc, values, KEY_FIELDS), status_code=exc.status_code
        )
    return RedirectResponse("/account#sshkeys", status_code=303)


@router.post("/account/sshkeys/{ref}/remove")
async def remove_key(request: Request, db: DbSession, actor: PageActor, ref: str) -> Response:
    try:
        await forms.read(request)
        sshkeys.remove(db, actor, users.get(db, actor, "me"), ref[:128])
    except DockyardError as exc:
        return error_page(request, actor, exc)
    return RedirectResponse("/account#sshkeys", status_code=303)

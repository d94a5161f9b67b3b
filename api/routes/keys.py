"""/api/v1/keys: API keys (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.answers import answer, key_created, key_out
from api.deps import app_registry, authorize
from api.routes import BAD_BODY
from api.schemas import IdOrPrefix, KeyCreate, KeyCreated, KeyOut
from registry.auth import Principal, Scope
from registry.services import Registry
from registry.services.keys import KeyInfo

router = APIRouter(prefix="/keys", tags=["keys"])

Admin = Annotated[Principal, Depends(authorize(Scope.ADMIN))]
Reg = Annotated[Registry, Depends(app_registry)]


def _out(info: KeyInfo) -> KeyOut:
    return KeyOut.model_validate(info)


@router.post(
    "",
    responses=BAD_BODY,
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    summary="Create an API key; the token is in this response only",
)
def create_key(body: KeyCreate, actor: Admin, reg: Reg) -> Response:
    issued = reg.keys.create(actor, name=body.name, scopes=list(body.scopes), user_email=body.user)
    return answer(key_created(issued), status_code=status.HTTP_201_CREATED)


@router.get("", response_model=list[KeyOut], summary="List API keys (never their secrets)")
def list_keys(_: Admin, reg: Reg) -> list[KeyOut]:
    return [_out(k) for k in reg.keys.list()]


@router.post(
    "/{api_key}/revoke",
    response_model=KeyOut,
    summary="Revoke an API key",
    description="`api_key` is the public key id (`mr_…`) or a unique prefix of at least 8 "
    "characters: 409 with `candidates` when several keys start with it.",
)
def revoke_key(api_key: IdOrPrefix, actor: Admin, reg: Reg) -> Response:
    return answer(key_out(reg.keys.revoke(actor, api_key)))

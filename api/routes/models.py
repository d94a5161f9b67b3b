"""/api/v1/models"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic.alias_generators import to_camel

from api.answers import answer, model_out
from api.deps import app_registry, authorize
from api.routes import BAD_BODY
from api.schemas import (
    ModelCreate,
    ModelName,
    ModelOut,
    ModelPage,
    ModelUpdate,
    TagIn,
    TaskType,
)
from registry.auth import Principal, Scope
from registry.errors import Invalid
from registry.filters import MAX_FILTER_LENGTH
from registry.pagination import MAX_LIMIT
from registry.services import Registry

router = APIRouter(prefix="/models", tags=["models"])

Reader = Annotated[Principal, Depends(authorize(Scope.MODELS_READ))]
Writer = Annotated[Principal, Depends(authorize(Scope.MODELS_WRITE))]
Reg = Annotated[Registry, Depends(app_registry)]

#: ``filter`` and ``orderBy``, shared with the versions listing (docs/api.md, "Search").
FilterQuery = Annotated[
    str | None,
    Query(
        alias="filter",
        max_length=MAX_FILTER_LENGTH,
        description="e.g. `tag.stage = 'candidate' AND createdAt >= '2026-01-01'`: fields, "
        "`=` `!=` `<` `<=` `>` `>=` `IN (…)`, AND / OR / NOT and parentheses (docs/api.md)",
    ),
]
OrderQuery = Annotated[
    str | None, Query(alias="orderBy", max_length=50, description="e.g. `createdAt desc`")
]
#: A tag key may hold '/', so the route takes the rest of the path; the service checks it.
TAG_KEY_DOC = "1 to 63 of letters, digits, '.', '_', '-', '/'"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    responses=BAD_BODY,
    summary="Register a model",
)
def create_model(body: ModelCreate, actor: Writer, reg: Reg) -> Response:
    model = reg.models.create(
        actor,
        name=body.name,
        provider=body.provider,
        task_type=body.task_type,
        description=body.description,
        is_active=body.is_active,
    )
    return answer(
        model_out(model),
        status_code=status.HTTP_201_CREATED,
        headers={"Location": f"/api/v1/models/{model.name}"},
    )


@router.get("", response_model=ModelPage, summary="List models, a page at a time")
def list_models(
    _: Reader,
    reg: Reg,
    task_type: Annotated[TaskType | None, Query(alias="taskType")] = None,
    provider: Annotated[str | None, Query(max_length=50)] = None,
    is_active: Annotated[bool | None, Query(alias="isActive")] = None,
    q: Annotated[
        str | None, Query(max_length=100, description="Substring of name or description")
    ] = None,
    filter_: FilterQuery = None,
    order_by: OrderQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ModelPage:
    page = reg.models.list(
        task_type=task_type,
        provider=provider,
        is_active=is_active,
        q=q,
        filter=filter_,
        order_by=order_by,
        limit=limit,
        cursor=cursor,
    )
    return ModelPage(
        items=[ModelOut.model_validate(m) for m in page.items], next_cursor=page.next_cursor
    )


@router.get("/{name}", response_model=ModelOut, summary="Show a model")
def get_model(name: ModelName, _: Reader, reg: Reg) -> ModelOut:
    return ModelOut.model_validate(reg.models.get(name))


@router.patch(
    "/{name}",
    response_model=ModelOut,
    responses=BAD_BODY,
    summary="Change a model's description, provider, task type or active flag",
)
def update_model(name: ModelName, body: ModelUpdate, actor: Writer, reg: Reg) -> Response:
    changes = body.model_dump(exclude_unset=True)
    for required in ("provider", "task_type", "is_active"):
        if required in changes and changes[required] is None:
            raise Invalid(f"{to_camel(required)} cannot be null")
    return answer(model_out(reg.models.update(actor, name, changes)))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a model, its versions and their artifacts",
    description="Only a model that was never deployed: once it had a deployment (in any "
    "status) its history is kept, and the answer is 409 suggesting `isActive: false`.",
)
def delete_model(name: ModelName, actor: Writer, reg: Reg) -> Response:
    reg.models.delete(actor, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/{name}/tags/{key:path}",
    response_model=ModelOut,
    responses=BAD_BODY,
    summary="Set a tag on a model (replaces its value; idempotent)",
    description=f"Key: {TAG_KEY_DOC}. Value: at most 5000 characters. Audited.",
)
def set_model_tag(name: ModelName, key: str, body: TagIn, actor: Writer, reg: Reg) -> Response:
    return answer(model_out(reg.models.set_tag(actor, name, key, body.value)))


@router.delete(
    "/{name}/tags/{key:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a tag from a model (404 if it has none by that key)",
)
def delete_model_tag(name: ModelName, key: str, actor: Writer, reg: Reg) -> Response:
    reg.models.delete_tag(actor, name, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""/api/v1/models/{name}/versions, and artifact upload and download."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from api.answers import answer, version_out
from api.deps import app_registry, authorize
from api.problems import problem, problem_responses
from api.routes import BAD_BODY
from api.routes.models import TAG_KEY_DOC, FilterQuery, OrderQuery
from api.schemas import (
    ModelName,
    TagIn,
    TransitionIn,
    VersionCreate,
    VersionNumber,
    VersionOut,
    VersionPage,
    VersionStatus,
    VersionUpdate,
)
from api.streaming import (
    BodyChannel,
    RangeNotSatisfiable,
    if_none_match_matches,
    parse_range,
    pump_body,
)
from registry.auth import Principal, Scope
from registry.errors import Invalid, PayloadTooLarge
from registry.pagination import MAX_LIMIT
from registry.services import Registry
from registry.storage import UploadAborted

router = APIRouter(prefix="/models/{name}/versions", tags=["versions"])

Reader = Annotated[Principal, Depends(authorize(Scope.MODELS_READ))]
Writer = Annotated[Principal, Depends(authorize(Scope.MODELS_WRITE))]
Reg = Annotated[Registry, Depends(app_registry)]

_UPLOAD_ERRORS = problem_responses(400, 408, 413, 429)
_DOWNLOAD_ERRORS = problem_responses(416)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionOut,
    responses=BAD_BODY,
    summary="Create a version (its artifact is uploaded separately)",
)
def create_version(name: ModelName, body: VersionCreate, actor: Writer, reg: Reg) -> Response:
    version = reg.versions.create(
        actor,
        name,
        version_number=body.version_number,
        fmt=body.format,
        release_notes=body.release_notes,
        parameters=body.parameters,
    )
    return answer(
        version_out(version),
        status_code=status.HTTP_201_CREATED,
        headers={"Location": f"/api/v1/models/{name}/versions/{version.version_number}"},
    )


@router.get("", response_model=VersionPage, summary="List a model's versions, newest first")
def list_versions(
    name: ModelName,
    _: Reader,
    reg: Reg,
    status: VersionStatus | None = None,
    filter_: FilterQuery = None,
    order_by: OrderQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> VersionPage:
    page = reg.versions.list(
        name, status=status, filter=filter_, order_by=order_by, limit=limit, cursor=cursor
    )
    return VersionPage(
        items=[VersionOut.model_validate(v) for v in page.items], next_cursor=page.next_cursor
    )


@router.get("/{version}", response_model=VersionOut, summary="Show a version")
def get_version(name: ModelName, version: VersionNumber, _: Reader, reg: Reg) -> VersionOut:
    return VersionOut.model_validate(reg.versions.get(name, version))


@router.patch(
    "/{version}",
    response_model=VersionOut,
    responses=BAD_BODY,
    summary="Change a version's release notes or parameters",
    description="`parameters` are what an API version serves: once the version has been "
    "validated, deployed or has left Staged, changing them is 409 (`type` ending in "
    "`version-immutable`). Release notes stay editable.",
)
def update_version(
    name: ModelName, version: VersionNumber, body: VersionUpdate, actor: Writer, reg: Reg
) -> Response:
    changes = body.model_dump(exclude_unset=True)
    return answer(version_out(reg.versions.update(actor, name, version, changes)))


@router.post(
    "/{version}/transitions",
    responses=BAD_BODY,
    response_model=VersionOut,
    summary="Move a version through its lifecycle",
    description="Allowed: Staged→Production, Staged→Failed, Production→Deprecated, "
    "Deprecated→Production, and any state→Archived. Anything else is 409, with the "
    "allowed moves in the body. Moves to Production pass the promotion gate.",
)
def transition_version(
    name: ModelName, version: VersionNumber, body: TransitionIn, actor: Writer, reg: Reg
) -> Response:
    moved = reg.versions.transition(
        actor, name, version, status=body.status, reason=body.reason, force=body.force
    )
    return answer(version_out(moved))


@router.put(
    "/{version}/tags/{key:path}",
    response_model=VersionOut,
    responses=BAD_BODY,
    summary="Set a tag on a version (replaces its value; idempotent)",
    description=f"Key: {TAG_KEY_DOC}. Value: at most 5000 characters. On any status, "
    "Production and Archived too: a tag is not part of what the version serves, and never "
    "changes its digest or validation. Audited.",
)
def set_version_tag(
    name: ModelName, version: VersionNumber, key: str, body: TagIn, actor: Writer, reg: Reg
) -> Response:
    return answer(version_out(reg.versions.set_tag(actor, name, version, key, body.value)))


@router.delete(
    "/{version}/tags/{key:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a tag from a version (404 if it has none by that key)",
)
def delete_version_tag(
    name: ModelName, version: VersionNumber, key: str, actor: Writer, reg: Reg
) -> Response:
    reg.versions.delete_tag(actor, name, version, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/{version}/artifact",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionOut,
    responses=_UPLOAD_ERRORS,
    summary="Upload the version's artifact (raw streamed body)",
    description="The body is streamed to the artifact store; its SHA-256 and size are computed "
    "on the way. With `X-Checksum-Sha256` a mismatch is 400. Above the size limit: 413. "
    "No byte for `MODELREG_UPLOAD_IDLE_TIMEOUT` seconds: 408. More than "
    "`MODELREG_UPLOADS_PER_KEY` uploads at once from one key: 429. In every such case, and "
    "if the client goes away, nothing is kept.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_artifact(
    request: Request,
    name: ModelName,
    version: VersionNumber,
    actor: Writer,
    reg: Reg,
    filename: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Artifact file name; default from the format, e.g. model.onnx",
        ),
    ] = None,
    # No max_length here: the service answers any malformed value with 400, not 422.
    x_checksum_sha256: Annotated[str | None, Header()] = None,
) -> VersionOut:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Invalid("Content-Length must be a number")
        if int(declared) > reg.settings.max_artifact_bytes:
            raise PayloadTooLarge(
                f"artifact of {declared} bytes exceeds the limit of "
                f"{reg.settings.max_artifact_bytes} bytes",
                limit=reg.settings.max_artifact_bytes,
            )
    loop = asyncio.get_running_loop()
    channel = BodyChannel(loop)
    work = loop.run_in_executor(
        request.app.state.upload_executor,
        functools.partial(
            reg.versions.upload,
            actor,
            name,
            version,
            channel.chunks(),
            filename=filename,
            expected_sha256=x_checksum_sha256,
        ),
    )
    channel.watch(work)
    try:
        await pump_body(
            request.stream(),
            channel,
            consumer=work,
            idle_timeout=reg.settings.upload_idle_timeout,
        )
    except ClientDisconnect:
        channel.fail(UploadAborted("the client disconnected before the upload was complete"))
    except BaseException:
        channel.fail(UploadAborted("the upload was interrupted"))
        raise
    result = await work
    return VersionOut.model_validate(result)


@router.get(
    "/{version}/artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)"},
        304: {"description": "Not modified (If-None-Match)"},
        **_DOWNLOAD_ERRORS,
    },
    summary="Download the version's artifact",
    description="Streams the artifact. `ETag` is its SHA-256; `Range: bytes=a-b` gives 206.",
)
def download_artifact(
    name: ModelName,
    version: VersionNumber,
    _: Reader,
    reg: Reg,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    ref = reg.versions.artifact(name, version)
    etag = f'"{ref.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "X-Checksum-Sha256": ref.sha256,
        "Content-Disposition": f'attachment; filename="{ref.filename}"',
    }
    if if_none_match_matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        byte_range = parse_range(range_header, ref.size)
    except RangeNotSatisfiable as exc:
        return problem(
            416,
            exc.detail,
            title=exc.title,
            headers={"Content-Range": f"bytes */{ref.size}"},
            size=ref.size,
        )
    if byte_range is None:
        body = reg.store.open_range(ref.key)
        headers["Content-Length"] = str(ref.size)
        code = status.HTTP_200_OK
    else:
        body = reg.store.open_range(ref.key, start=byte_range.start, length=byte_range.length)
        headers["Content-Length"] = str(byte_range.length)
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{ref.size}"
        code = status.HTTP_206_PARTIAL_CONTENT
    return StreamingResponse(
        body, status_code=code, headers=headers, media_type="application/octet-stream"
    )

"""Feedback: submit ratings and comments, list them, summarize them, compare serving versions."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import Discriminator, Tag

from api.answers import answer, feedback_batch_out
from api.deps import app_registry, authorize
from api.problems import problem_responses
from api.schemas import (
    MAX_FEEDBACK_BATCH,
    Environment,
    FeedbackBatchIn,
    FeedbackBatchOut,
    FeedbackCompareOut,
    FeedbackIn,
    FeedbackOut,
    FeedbackPage,
    FeedbackSummaryOut,
    ModelName,
    VersionNumber,
)
from registry import vocabulary
from registry.auth import Principal, Scope
from registry.errors import PayloadTooLarge
from registry.pagination import MAX_LIMIT
from registry.services import Registry

router = APIRouter(tags=["feedback"])

Reader = Annotated[Principal, Depends(authorize(Scope.MODELS_READ))]
Writer = Annotated[Principal, Depends(authorize(Scope.FEEDBACK_WRITE))]
Reg = Annotated[Registry, Depends(app_registry)]
Since = Annotated[
    datetime | None, Query(description="Only feedback at or after this time (ISO 8601, with zone)")
]
Until = Annotated[
    datetime | None, Query(description="Only feedback before this time (ISO 8601, with zone)")
]


def _writers(request: Request) -> anyio.CapacityLimiter:
    """At most ``MODELREG_FEEDBACK_WRITERS`` batches of this process are written at once, each
    in a thread; the others wait on the event loop, which costs nothing. A batch holds the
    interpreter lock for milliseconds of CPU, and with every thread of the pool writing one,
    the event loop (endpoint resolution runs on it) got a small share of the lock: under mixed
    load, resolution's p99 went from 35 ms alone to 1.7 s ("Mixed load" in
    docs/benchmarks.md). One limiter per event loop (the tests run several)."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    held: tuple[asyncio.AbstractEventLoop, anyio.CapacityLimiter] | None = getattr(
        state, "feedback_writers", None
    )
    if held is None or held[0] is not loop:
        limit = state.settings.feedback_writers
        held = state.feedback_writers = (loop, anyio.CapacityLimiter(limit))
    return held[1]


def _shape(body: Any) -> str:
    return "batch" if isinstance(body, dict) and "items" in body else "item"


FeedbackBody = Annotated[
    Annotated[FeedbackIn, Tag("item")] | Annotated[FeedbackBatchIn, Tag("batch")],
    Discriminator(_shape),
    Body(description='One item, or `{"items": [...]}` with up to 1,000 items'),
]


@router.post(
    "/feedback",
    response_model=FeedbackBatchOut,
    responses=problem_responses(400, 413),  # 400: a body that is not UTF-8
    summary="Submit one feedback item or a batch",
    description="A batch keeps its good items and rejects the bad ones one by one, with their "
    "index and reason (unknown version, bad rating, …); the answer lists both. A single item "
    "that cannot be kept, or a batch whose every item is rejected, answers 422 with the same "
    "lists in the problem body. More than 1,000 items answers 413.",
)
async def submit_feedback(
    body: FeedbackBody, actor: Writer, reg: Reg, request: Request
) -> Response:
    if isinstance(body, FeedbackBatchIn):
        if len(body.items) > MAX_FEEDBACK_BATCH:
            raise PayloadTooLarge(
                f"a batch holds at most {MAX_FEEDBACK_BATCH} items, this one has "
                f"{len(body.items)}: split it",
                maxItems=MAX_FEEDBACK_BATCH,
            )
        items = list(body.items)
    else:
        items = [body.model_dump(mode="json", by_alias=True, exclude_none=True)]
    result = await anyio.to_thread.run_sync(
        reg.feedback.submit, actor, items, limiter=_writers(request)
    )
    return answer(feedback_batch_out(result))


@router.get(
    "/models/{name}/versions/{version}/feedback",
    response_model=FeedbackPage,
    summary="A version's feedback, newest first",
)
def list_feedback(
    name: ModelName,
    version: VersionNumber,
    _: Reader,
    reg: Reg,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> FeedbackPage:
    page = reg.feedback.list(name, version, since=since, until=until, limit=limit, cursor=cursor)
    return FeedbackPage(
        items=[FeedbackOut.model_validate(i) for i in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/models/{name}/versions/{version}/feedback/summary",
    response_model=FeedbackSummaryOut,
    summary="Count, mean, distribution and share of ratings >= 4 with its Wilson 95% interval",
)
def feedback_summary(
    name: ModelName,
    version: VersionNumber,
    _: Reader,
    reg: Reg,
    since: Since = None,
    until: Until = None,
) -> FeedbackSummaryOut:
    summary = reg.feedback.version_summary(name, version, since=since, until=until)
    return FeedbackSummaryOut.of(summary)


@router.get(
    "/models/{name}/feedback/compare",
    response_model=FeedbackCompareOut,
    summary="The versions serving now, side by side, over the current rollout window",
    description="Each version with traffic (or in preview) is summarized from the start of the "
    "rollout's current step, or, with no rollout in progress, from the last traffic change.",
)
def compare_feedback(
    name: ModelName,
    _: Reader,
    reg: Reg,
    environment: Environment = vocabulary.Environment.PRODUCTION.value,
) -> FeedbackCompareOut:
    return FeedbackCompareOut.of(reg.feedback.compare(name, environment))

"""Feedback as it comes in: a submitted item checked on its own, and the versions a batch
names found in one query per kind of reference. A bad item is rejected with its reason; the
service keeps the good ones (``FeedbackService.submit``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from registry.models import AIModel, AIModelVersion
from registry.services.feedback_summary import RATINGS
from registry.storable import unstorable

MAX_BATCH = 1_000
MAX_COMMENT = 10_000
ITEM_FIELDS = frozenset(
    (
        "modelVersionId",
        "model",
        "versionNumber",
        "generationRequestId",
        "rating",
        "comment",
        "details",
    )
)


@dataclass(frozen=True)
class Kept:
    index: int
    id: uuid.UUID


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str


@dataclass(frozen=True)
class BatchResult:
    """Which items of a batch were kept (with their new ids) and which were rejected (why)."""

    kept: tuple[Kept, ...]
    rejected: tuple[Rejected, ...]


class BadItem(Exception):
    """An item that cannot be kept; its message is the reason given back."""


@dataclass(frozen=True)
class ParsedItem:
    ref: uuid.UUID | tuple[str, str]
    generation_request_id: uuid.UUID | None
    rating: int | None
    comment: str | None
    details: dict[str, Any] | None


def _uuid(value: Any, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise BadItem(f"{field} must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadItem(f"{field} is not a UUID: {value[:60]!r}") from None


def parse_item(raw: Any) -> ParsedItem:
    if not isinstance(raw, dict):
        raise BadItem("an item must be a JSON object")
    unknown = sorted(str(k) for k in raw if k not in ITEM_FIELDS)
    if unknown:
        raise BadItem(f"unknown field(s): {', '.join(unknown)}")
    for field in sorted(ITEM_FIELDS & raw.keys()):
        reason = unstorable(raw[field], field)
        if reason is not None:
            raise BadItem(reason)
    has_id = raw.get("modelVersionId") is not None
    has_pair = raw.get("model") is not None or raw.get("versionNumber") is not None
    if has_id == has_pair:
        raise BadItem("give exactly one of modelVersionId, or model and versionNumber")
    ref: uuid.UUID | tuple[str, str]
    if has_id:
        ref = _uuid(raw["modelVersionId"], "modelVersionId")
    else:
        model, number = raw.get("model"), raw.get("versionNumber")
        if not isinstance(model, str) or not isinstance(number, str) or not model or not number:
            raise BadItem("model and versionNumber must both be given, as strings")
        ref = (model, number)
    rating = raw.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
        raise BadItem("rating must be an integer from 1 to 5")
    if rating is not None and rating not in RATINGS:
        raise BadItem(f"rating must be from 1 to 5, got {rating}")
    comment = raw.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise BadItem("comment must be a string")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise BadItem(f"comment is longer than {MAX_COMMENT} characters")
    details = raw.get("details")
    if details is not None and not isinstance(details, dict):
        raise BadItem("details must be a JSON object")
    generation = raw.get("generationRequestId")
    return ParsedItem(
        ref=ref,
        generation_request_id=None
        if generation is None
        else _uuid(generation, "generationRequestId"),
        rating=rating,
        comment=comment,
        details=details,
    )


def resolve_refs(
    s: Session, items: Sequence[ParsedItem]
) -> dict[uuid.UUID | tuple[str, str], tuple[uuid.UUID, str, str]]:
    """Every reference of the batch that names a version: ``ref -> (id, model, number)``."""
    ids = {i.ref for i in items if isinstance(i.ref, uuid.UUID)}
    pairs = {i.ref for i in items if isinstance(i.ref, tuple)}
    found: dict[uuid.UUID | tuple[str, str], tuple[uuid.UUID, str, str]] = {}
    base = select(AIModelVersion.id, AIModel.name, AIModelVersion.version_number).join(
        AIModel, AIModel.id == AIModelVersion.model_id
    )
    if ids:
        for vid, name, number in s.execute(base.where(AIModelVersion.id.in_(list(ids)))):
            found[vid] = (vid, name, number)
    if pairs:
        stmt = base.where(tuple_(AIModel.name, AIModelVersion.version_number).in_(list(pairs)))
        for vid, name, number in s.execute(stmt):
            found[(name, number)] = (vid, name, number)
    return found


def unknown_reason(item: ParsedItem) -> str:
    if isinstance(item.ref, uuid.UUID):
        return f"no model version with id {item.ref}"
    model, number = item.ref
    return f"model {model!r} has no version {number!r}"

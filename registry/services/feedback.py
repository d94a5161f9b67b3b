"""AIModelFeedback: user ratings and comments on a version's outputs, and their aggregates.

A batch keeps its good items and rejects its bad ones one by one, in one transaction. The
aggregates (count, mean, distribution, share of ratings >= 4 with its Wilson interval) come
from one aggregate query; rows are never loaded into Python to be counted.

The rollout gates count people, not rows (:func:`summarize_raters`): a rater is the user
behind the API key that submitted the rating (``user_id``, never a field the client sends),
and each rater's ratings weigh as one vote, so a single key can neither open a gate nor tip
its mean alone.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import Principal
from registry.errors import Invalid
from registry.metrics import FEEDBACK_ITEMS, FEEDBACK_RATINGS
from registry.models import (
    ENVIRONMENTS,
    AIModel,
    AIModelDeployment,
    AIModelFeedback,
    AIModelVersion,
    DeploymentEvent,
    DeploymentRoute,
)
from registry.pagination import check_limit, decode_cursor, encode_cursor
from registry.services import audit
from registry.services.models import Page, get_model
from registry.services.versions import get_version
from registry.storable import unstorable
from registry.types import utcnow

MAX_BATCH = 1_000
MAX_COMMENT = 10_000
RATINGS = (1, 2, 3, 4, 5)
POSITIVE = 4
"""A rating of at least this counts as positive."""
Z95 = 1.96
ROLLOUT_STATUSES = ("Initiated", "Deploying")
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


@dataclass(frozen=True)
class FeedbackItem:
    id: uuid.UUID
    user_id: uuid.UUID
    model_version_id: uuid.UUID | None
    generation_request_id: uuid.UUID | None
    rating: int | None
    comment: str | None
    details: dict[str, Any] | None
    feedback_timestamp: datetime


@dataclass(frozen=True)
class FeedbackSummary:
    """The aggregates of one version's feedback over ``[since, until)`` (None: unbounded)."""

    model_version_id: uuid.UUID
    count: int
    rated: int
    mean: float | None
    distribution: Mapping[int, int]
    positive_share: float | None
    positive_low: float | None
    positive_high: float | None
    since: datetime | None
    until: datetime | None


@dataclass(frozen=True)
class RaterSummary:
    """One version's ratings over ``[since, until)``, one vote per rater (the user behind the
    submitting key): each rater's ratings are averaged first, then the raters' means are."""

    model_version_id: uuid.UUID
    raters: int
    """Distinct users with at least one rating in the window."""
    rated: int
    """Ratings (rows) in the window, from all raters."""
    mean: float | None
    """The mean of the raters' mean ratings."""
    positive_share: float | None
    """The share of raters whose mean rating is at least 4."""
    positive_low: float | None
    positive_high: float | None
    since: datetime | None
    until: datetime | None


@dataclass(frozen=True)
class ServingRoute:
    """One version serving a model in an environment now (a row of deployment_route)."""

    deployment_id: uuid.UUID
    model_version_id: uuid.UUID
    version_number: str
    role: str
    weight: int


@dataclass(frozen=True)
class FeedbackComparison:
    """The serving versions side by side, each summarized over the current window."""

    model: str
    environment: str
    window_start: datetime | None
    window_source: str
    """``rollout step`` (the rollout in progress's step start), ``traffic change`` (the last
    ``traffic`` event) or ``all time`` (neither exists)."""
    until: datetime
    serving: tuple[tuple[ServingRoute, FeedbackSummary], ...]


def wilson_interval(positive: int, total: int, *, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``positive / total``; None when ``total`` is 0."""
    if total <= 0:
        return None
    p = positive / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(
    s: Session,
    model_version_id: uuid.UUID,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> FeedbackSummary:
    """One aggregate query over the version's feedback in ``[since, until)``."""
    fb = AIModelFeedback
    columns = [
        func.count(),
        func.count(fb.rating),
        func.avg(fb.rating),
        *(func.coalesce(func.sum(case((fb.rating == k, 1), else_=0)), 0) for k in RATINGS),
    ]
    stmt = select(*columns).where(fb.model_version_id == model_version_id)
    if since is not None:
        stmt = stmt.where(fb.feedback_timestamp >= since)
    if until is not None:
        stmt = stmt.where(fb.feedback_timestamp < until)
    row = s.execute(stmt).one()
    count, rated, mean = int(row[0]), int(row[1]), row[2]
    distribution = {k: int(n) for k, n in zip(RATINGS, row[3:], strict=True)}
    positive = sum(n for k, n in distribution.items() if k >= POSITIVE)
    interval = wilson_interval(positive, rated)
    return FeedbackSummary(
        model_version_id=model_version_id,
        count=count,
        rated=rated,
        mean=float(mean) if mean is not None else None,
        distribution=distribution,
        positive_share=positive / rated if rated else None,
        positive_low=interval[0] if interval else None,
        positive_high=interval[1] if interval else None,
        since=since,
        until=until,
    )


def summarize_raters(
    s: Session,
    model_version_id: uuid.UUID,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> RaterSummary:
    """One aggregate query over the version's ratings in ``[since, until)``, grouped by rater
    first; the Wilson interval is over raters."""
    fb = AIModelFeedback
    per_rater = select(func.count(fb.rating).label("n"), func.avg(fb.rating).label("m")).where(
        fb.model_version_id == model_version_id, fb.rating.is_not(None)
    )
    if since is not None:
        per_rater = per_rater.where(fb.feedback_timestamp >= since)
    if until is not None:
        per_rater = per_rater.where(fb.feedback_timestamp < until)
    raters = per_rater.group_by(fb.user_id).subquery()
    row = s.execute(
        select(
            func.count(),
            func.coalesce(func.sum(raters.c.n), 0),
            func.avg(raters.c.m),
            func.coalesce(func.sum(case((raters.c.m >= POSITIVE, 1), else_=0)), 0),
        )
    ).one()
    count, rated, mean, positive = int(row[0]), int(row[1]), row[2], int(row[3])
    interval = wilson_interval(positive, count)
    return RaterSummary(
        model_version_id=model_version_id,
        raters=count,
        rated=rated,
        mean=float(mean) if mean is not None else None,
        positive_share=positive / count if count else None,
        positive_low=interval[0] if interval else None,
        positive_high=interval[1] if interval else None,
        since=since,
        until=until,
    )


class FeedbackService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # -- writing -----------------------------------------------------------------------------

    def submit(self, actor: Principal, items: Sequence[Any]) -> BatchResult:
        """Keep the good items and reject the bad ones, each with its index and reason.

        When no item can be kept nothing is written, and :class:`Invalid` carries the
        ``kept`` (empty) and ``rejected`` lists."""
        if len(items) > MAX_BATCH:
            raise Invalid(
                f"a batch holds at most {MAX_BATCH} items, this one has {len(items)}",
                maxItems=MAX_BATCH,
            )
        if not items:
            raise Invalid("the batch has no items")
        rejected: list[Rejected] = []
        parsed: list[tuple[int, _Item]] = []
        for index, raw in enumerate(items):
            try:
                parsed.append((index, _parse_item(raw)))
            except _Bad as bad:
                rejected.append(Rejected(index, str(bad)))
        now = utcnow()
        kept: list[Kept] = []
        labels: list[tuple[str, str, int | None]] = []
        with self.sessions.begin() as s:
            versions = _resolve(s, [item for _, item in parsed])
            rows = []
            for index, item in parsed:
                found = versions.get(item.ref)
                if found is None:
                    rejected.append(Rejected(index, _unknown(item)))
                    continue
                version_id, model_name, number = found
                new_id = uuid.uuid4()
                rows.append(
                    AIModelFeedback(
                        id=new_id,
                        user_id=actor.user_id,
                        generation_request_id=item.generation_request_id,
                        model_version_id=version_id,
                        rating=item.rating,
                        comment=item.comment,
                        details=item.details,
                        feedback_timestamp=now,
                        created_at=now,
                    )
                )
                kept.append(Kept(index, new_id))
                labels.append((model_name, number, item.rating))
            rejected.sort(key=lambda r: r.index)
            if not rows:
                FEEDBACK_ITEMS.labels("rejected").inc(len(rejected))
                raise Invalid(
                    rejected[0].reason
                    if len(items) == 1
                    else f"all {len(items)} items were rejected",
                    kept=[],
                    rejected=[{"index": r.index, "reason": r.reason} for r in rejected],
                )
            s.add_all(rows)
            audit.record(
                s,
                actor,
                "feedback_submitted",
                items=len(items),
                kept=len(kept),
                rejected=len(rejected),
                modelVersionIds=sorted({str(r.model_version_id) for r in rows}),
            )
        for model_name, number, rating in labels:
            if rating is not None:
                FEEDBACK_RATINGS.labels(model_name, number).observe(rating)
        if kept:
            FEEDBACK_ITEMS.labels("kept").inc(len(kept))
        if rejected:
            FEEDBACK_ITEMS.labels("rejected").inc(len(rejected))
        return BatchResult(tuple(kept), tuple(rejected))

    # -- reading -----------------------------------------------------------------------------

    def list(
        self,
        model: str,
        version: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[FeedbackItem]:
        """The version's feedback in ``[since, until)``, newest first, keyset-paged."""
        check_limit(limit)
        _check_window(since, until)
        fb = AIModelFeedback
        with self.sessions() as s:
            found = get_version(s, get_model(s, model), version)
            stmt = (
                select(fb)
                .where(fb.model_version_id == found.id)
                .order_by(fb.feedback_timestamp.desc(), fb.id.desc())
            )
            if since is not None:
                stmt = stmt.where(fb.feedback_timestamp >= since)
            if until is not None:
                stmt = stmt.where(fb.feedback_timestamp < until)
            if cursor:
                at, fid = decode_cursor(cursor, arity=2)
                try:
                    after = (datetime.fromisoformat(at), uuid.UUID(fid))
                except (TypeError, ValueError):
                    raise Invalid("cursor is not one this server issued") from None
                stmt = stmt.where(
                    or_(
                        fb.feedback_timestamp < after[0],
                        and_(fb.feedback_timestamp == after[0], fb.id < after[1]),
                    )
                )
            rows = [_item(r) for r in s.scalars(stmt.limit(limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = (
            encode_cursor([rows[-1].feedback_timestamp.isoformat(), str(rows[-1].id)])
            if more and rows
            else None
        )
        return Page(rows, nxt)

    def version_id(self, model: str, version: str) -> uuid.UUID:
        with self.sessions() as s:
            return get_version(s, get_model(s, model), version).id

    def summary(
        self,
        model_version_id: uuid.UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> FeedbackSummary:
        _check_window(since, until)
        with self.sessions() as s:
            return summarize(s, model_version_id, since=since, until=until)

    def rater_summary(
        self,
        model_version_id: uuid.UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> RaterSummary:
        """What the feedback gate judges: the version's ratings, one vote per rater."""
        _check_window(since, until)
        with self.sessions() as s:
            return summarize_raters(s, model_version_id, since=since, until=until)

    def compare(self, model_name: str, environment: str) -> FeedbackComparison:
        """The versions serving ``model_name`` in ``environment`` now, each summarized from
        the start of the current window (the rollout's step, else the last traffic change)."""
        if environment not in ENVIRONMENTS:
            raise Invalid(f"unknown environment {environment!r}", allowed=list(ENVIRONMENTS))
        now = utcnow()
        with self.sessions() as s:
            model = get_model(s, model_name)
            routes = [
                ServingRoute(
                    deployment_id=r.deployment_id,
                    model_version_id=r.model_version_id,
                    version_number=r.version_number,
                    role=r.role,
                    weight=r.weight,
                )
                for r in s.scalars(
                    select(DeploymentRoute)
                    .where(
                        DeploymentRoute.model_id == model.id,
                        DeploymentRoute.environment == environment,
                        or_(DeploymentRoute.weight > 0, DeploymentRoute.role == "preview"),
                    )
                    .order_by(DeploymentRoute.weight.desc(), DeploymentRoute.version_number)
                )
            ]
            start, source = _window_start(s, model.id, environment)
            serving = tuple(
                (r, summarize(s, r.model_version_id, since=start, until=now)) for r in routes
            )
        return FeedbackComparison(
            model=model.name,
            environment=environment,
            window_start=start,
            window_source=source,
            until=now,
            serving=serving,
        )


# -- helpers ---------------------------------------------------------------------------------


class _Bad(Exception):
    """An item that cannot be kept; its message is the reason given back."""


@dataclass(frozen=True)
class _Item:
    ref: uuid.UUID | tuple[str, str]
    generation_request_id: uuid.UUID | None
    rating: int | None
    comment: str | None
    details: dict[str, Any] | None


def _uuid(value: Any, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise _Bad(f"{field} must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _Bad(f"{field} is not a UUID: {value[:60]!r}") from None


def _parse_item(raw: Any) -> _Item:
    if not isinstance(raw, dict):
        raise _Bad("an item must be a JSON object")
    unknown = sorted(str(k) for k in raw if k not in ITEM_FIELDS)
    if unknown:
        raise _Bad(f"unknown field(s): {', '.join(unknown)}")
    for field in sorted(ITEM_FIELDS & raw.keys()):
        reason = unstorable(raw[field], field)
        if reason is not None:
            raise _Bad(reason)
    has_id = raw.get("modelVersionId") is not None
    has_pair = raw.get("model") is not None or raw.get("versionNumber") is not None
    if has_id == has_pair:
        raise _Bad("give exactly one of modelVersionId, or model and versionNumber")
    ref: uuid.UUID | tuple[str, str]
    if has_id:
        ref = _uuid(raw["modelVersionId"], "modelVersionId")
    else:
        model, number = raw.get("model"), raw.get("versionNumber")
        if not isinstance(model, str) or not isinstance(number, str) or not model or not number:
            raise _Bad("model and versionNumber must both be given, as strings")
        ref = (model, number)
    rating = raw.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
        raise _Bad("rating must be an integer from 1 to 5")
    if rating is not None and rating not in RATINGS:
        raise _Bad(f"rating must be from 1 to 5, got {rating}")
    comment = raw.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise _Bad("comment must be a string")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise _Bad(f"comment is longer than {MAX_COMMENT} characters")
    details = raw.get("details")
    if details is not None and not isinstance(details, dict):
        raise _Bad("details must be a JSON object")
    generation = raw.get("generationRequestId")
    return _Item(
        ref=ref,
        generation_request_id=None
        if generation is None
        else _uuid(generation, "generationRequestId"),
        rating=rating,
        comment=comment,
        details=details,
    )


def _resolve(
    s: Session, items: Sequence[_Item]
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


def _unknown(item: _Item) -> str:
    if isinstance(item.ref, uuid.UUID):
        return f"no model version with id {item.ref}"
    model, number = item.ref
    return f"model {model!r} has no version {number!r}"


def _check_window(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise Invalid(f"{name} needs a time zone (for example 2026-11-25T12:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise Invalid("since must be before until")


def _item(r: AIModelFeedback) -> FeedbackItem:
    return FeedbackItem(
        id=r.id,
        user_id=r.user_id,
        model_version_id=r.model_version_id,
        generation_request_id=r.generation_request_id,
        rating=r.rating,
        comment=r.comment,
        details=r.details,
        feedback_timestamp=r.feedback_timestamp,
    )


def _window_start(s: Session, model_id: uuid.UUID, environment: str) -> tuple[datetime | None, str]:
    step_started = s.scalar(
        select(AIModelDeployment.step_started_at)
        .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
        .where(
            AIModelVersion.model_id == model_id,
            AIModelDeployment.environment == environment,
            AIModelDeployment.status.in_(ROLLOUT_STATUSES),
            AIModelDeployment.step_started_at.is_not(None),
        )
        .order_by(AIModelDeployment.created_at.desc())
        .limit(1)
    )
    if step_started is not None:
        return step_started, "rollout step"
    changed = s.scalar(
        select(DeploymentEvent.at)
        .where(
            DeploymentEvent.model_id == model_id,
            DeploymentEvent.environment == environment,
            DeploymentEvent.kind == "traffic",
        )
        .order_by(DeploymentEvent.at.desc(), DeploymentEvent.id.desc())
        .limit(1)
    )
    if changed is not None:
        return changed, "traffic change"
    return None, "all time"


def serving_mean_ratings(s: Session) -> dict[tuple[str, str, str], float]:
    """(model, version, environment) → the mean rating of each version serving now, over
    its model and environment's current window: the gauge ``modelreg_feedback_mean_rating``.
    One small query per serving route (the composite index answers each); versions with no
    ratings in the window are left out."""
    rows = s.execute(
        select(
            AIModel.id,
            AIModel.name,
            DeploymentRoute.environment,
            DeploymentRoute.model_version_id,
            DeploymentRoute.version_number,
        )
        .join(AIModel, AIModel.id == DeploymentRoute.model_id)
        .where(or_(DeploymentRoute.weight > 0, DeploymentRoute.role == "preview"))
    ).all()
    windows: dict[tuple[uuid.UUID, str], datetime | None] = {}
    means: dict[tuple[str, str, str], float] = {}
    for model_id, model, environment, version_id, number in rows:
        key = (model_id, environment)
        if key not in windows:
            windows[key] = _window_start(s, model_id, environment)[0]
        stmt = select(func.avg(AIModelFeedback.rating)).where(
            AIModelFeedback.model_version_id == version_id
        )
        if windows[key] is not None:
            stmt = stmt.where(AIModelFeedback.feedback_timestamp >= windows[key])
        mean = s.scalar(stmt)
        if mean is not None:
            means[(model, number, environment)] = float(mean)
    return means

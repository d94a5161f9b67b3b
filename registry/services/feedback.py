"""AIModelFeedback: user ratings and comments on a version's outputs, and their aggregates.

A batch keeps its good items and rejects its bad ones one by one, in one transaction (the
items are checked in ``registry.services.feedback_ingest``). The aggregates come from
``registry.services.feedback_summary``: one aggregate query each, over the current window of
the versions that serve.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, and_, bindparam, func, insert, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import Principal
from registry.errors import Invalid
from registry.metrics import FEEDBACK_ITEMS, FEEDBACK_RATINGS
from registry.models import ENVIRONMENTS, AIModelFeedback
from registry.pagination import check_limit, decode_cursor, encode_cursor
from registry.services import audit
from registry.services.feedback_ingest import (
    MAX_BATCH,
    BadItem,
    BatchResult,
    Kept,
    ParsedItem,
    Rejected,
    parse_item,
    resolve_refs,
    unknown_reason,
)
from registry.services.feedback_summary import (
    FeedbackComparison,
    FeedbackSummary,
    RaterSummary,
    check_window,
    summarize,
    summarize_raters,
    window_start,
)
from registry.services.models import Page, get_model, get_version
from registry.services.routing import every_serving_route, serving_routes
from registry.types import UTCDateTime, utcnow


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
class _Row:
    id: uuid.UUID
    item: ParsedItem
    version_id: uuid.UUID


#: A batch in one statement of fixed text on PostgreSQL: one array per column, unnested.
_INSERT_UNNEST = text(
    "INSERT INTO ai_model_feedback (id, user_id, generation_request_id, model_version_id, "
    "rating, comment, details, feedback_timestamp, created_at) "
    "SELECT u.id, :user_id, u.generation_request_id, u.model_version_id, u.rating, u.comment, "
    "u.details, :now, :now FROM unnest(CAST(:ids AS uuid[]), CAST(:generation_request_ids AS "
    "uuid[]), CAST(:model_version_ids AS uuid[]), CAST(:ratings AS integer[]), "
    "CAST(:comments AS text[]), CAST(:details AS jsonb[])) "
    "AS u(id, generation_request_id, model_version_id, rating, comment, details)"
).bindparams(bindparam("user_id", type_=Uuid()), bindparam("now", type_=UTCDateTime()))


def _insert(s: Session, actor: Principal, rows: Sequence[_Row], now: datetime) -> None:
    """Write the kept items. Not as ORM objects: their construction and the unit of work cost
    more than the database spends on the rows. On PostgreSQL one statement whose text never
    changes (a multi-row VALUES is a new text per batch size, which psycopg parses anew each
    time: a quarter of a batch's CPU); elsewhere one executemany."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(
            _INSERT_UNNEST,
            {
                "user_id": actor.user_id,
                "now": now,
                "ids": [r.id for r in rows],
                "generation_request_ids": [r.item.generation_request_id for r in rows],
                "model_version_ids": [r.version_id for r in rows],
                "ratings": [r.item.rating for r in rows],
                "comments": [r.item.comment for r in rows],
                "details": [
                    None if r.item.details is None else json.dumps(r.item.details) for r in rows
                ],
            },
        )
        return
    s.execute(
        insert(AIModelFeedback),
        [
            {
                "id": r.id,
                "user_id": actor.user_id,
                "generation_request_id": r.item.generation_request_id,
                "model_version_id": r.version_id,
                "rating": r.item.rating,
                "comment": r.item.comment,
                "details": r.item.details,
                "feedback_timestamp": now,
                "created_at": now,
            }
            for r in rows
        ],
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
        parsed: list[tuple[int, ParsedItem]] = []
        for index, raw in enumerate(items):
            try:
                parsed.append((index, parse_item(raw)))
            except BadItem as bad:
                rejected.append(Rejected(index, str(bad)))
        now = utcnow()
        kept: list[Kept] = []
        labels: list[tuple[str, str, int | None]] = []
        with self.sessions.begin() as s:
            versions = resolve_refs(s, [item for _, item in parsed])
            rows = []
            for index, item in parsed:
                found = versions.get(item.ref)
                if found is None:
                    rejected.append(Rejected(index, unknown_reason(item)))
                    continue
                version_id, model_name, number = found
                new_id = uuid.uuid4()
                rows.append(_Row(new_id, item, version_id))
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
            _insert(s, actor, rows, now)
            audit.record(
                s,
                actor,
                "feedback_submitted",
                items=len(items),
                kept=len(kept),
                rejected=len(rejected),
                modelVersionIds=sorted({str(r.version_id) for r in rows}),
            )
        histograms: dict[tuple[str, str], Any] = {}  # one label lookup per version
        for model_name, number, rating in labels:
            if rating is not None:
                child = histograms.get((model_name, number))
                if child is None:
                    child = histograms[model_name, number] = FEEDBACK_RATINGS.labels(
                        model_name, number
                    )
                child.observe(rating)
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
        check_window(since, until)
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

    def version_summary(
        self,
        model: str,
        version: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> FeedbackSummary:
        """:meth:`summary` of the version ``model``/``version``, found in the same session."""
        with self.sessions() as s:
            found = get_version(s, get_model(s, model), version)
            check_window(since, until)
            return summarize(s, found.id, since=since, until=until)

    def summary(
        self,
        model_version_id: uuid.UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> FeedbackSummary:
        check_window(since, until)
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
        check_window(since, until)
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
            routes = serving_routes(s, model_id=model.id, environment=environment)
            start, source = window_start(s, model.id, environment)
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


def serving_mean_ratings(s: Session) -> dict[tuple[str, str, str], float]:
    """(model, version, environment) → the mean rating of each version serving now, over
    its model and environment's current window: the gauge ``modelreg_feedback_mean_rating``.
    One small query per serving route (the composite index answers each); versions with no
    ratings in the window are left out."""
    windows: dict[tuple[uuid.UUID, str], datetime | None] = {}
    means: dict[tuple[str, str, str], float] = {}
    for served in every_serving_route(s):
        key = (served.model_id, served.environment)
        if key not in windows:
            windows[key] = window_start(s, served.model_id, served.environment)[0]
        stmt = select(func.avg(AIModelFeedback.rating)).where(
            AIModelFeedback.model_version_id == served.route.model_version_id
        )
        if windows[key] is not None:
            stmt = stmt.where(AIModelFeedback.feedback_timestamp >= windows[key])
        mean = s.scalar(stmt)
        if mean is not None:
            means[(served.model_name, served.route.version_number, served.environment)] = float(
                mean
            )
    return means

"""The aggregates of a version's feedback: count, mean, distribution, and the share of ratings
>= 4 with its Wilson interval, each from one aggregate query; rows are never loaded into
Python to be counted.

The rollout gates count people, not rows (:func:`summarize_raters`): a rater is the user
behind the API key that submitted the rating (``user_id``, never a field the client sends),
and each rater's ratings weigh as one vote, so a single key can neither open a gate nor tip
its mean alone.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from registry.errors import Invalid
from registry.models import AIModelDeployment, AIModelFeedback, AIModelVersion, DeploymentEvent
from registry.services.routing import RouteEntry
from registry.vocabulary import ROLLING_OUT

RATINGS = (1, 2, 3, 4, 5)
POSITIVE = 4
"""A rating of at least this counts as positive."""
Z95 = 1.96


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
class FeedbackComparison:
    """The serving versions side by side, each summarized over the current window."""

    model: str
    environment: str
    window_start: datetime | None
    window_source: str
    """``rollout step`` (the rollout in progress's step start), ``traffic change`` (the last
    ``traffic`` event) or ``all time`` (neither exists)."""
    until: datetime
    serving: tuple[tuple[RouteEntry, FeedbackSummary], ...]


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


def check_window(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise Invalid(f"{name} needs a time zone (for example 2026-11-25T12:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise Invalid("since must be before until")


def window_start(s: Session, model_id: uuid.UUID, environment: str) -> tuple[datetime | None, str]:
    step_started = s.scalar(
        select(AIModelDeployment.step_started_at)
        .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
        .where(
            AIModelVersion.model_id == model_id,
            AIModelDeployment.environment == environment,
            AIModelDeployment.status.in_(ROLLING_OUT),
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

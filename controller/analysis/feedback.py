"""The feedback gate: users' ratings of the candidate against the stable version's, over the
current step's window.

It counts people, not rows (``registry.services.feedback.summarize_raters``): a rater is the
user behind the API key that submitted the rating, and each rater's ratings are averaged into
one vote before anything else. So one ``feedback:write`` key, however many ratings it sends,
is one rater: it can neither meet ``minRatings`` alone nor outvote the others.

- Fewer than ``minRatings`` raters of the candidate in the window: inconclusive (the step
  holds; after ``maxHold``, ``onHoldTimeout`` decides).
- ``on: mean``: fail when the mean of the candidate's raters' means is more than ``maxDrop``
  below the stable version's.
- ``on: positive_low``: fail when the lower bound of the Wilson 95% interval for the share of
  the candidate's raters whose mean is ≥ 4 is more than ``maxDrop`` below the stable
  version's share.

The stable version is judged over the same window; when it has fewer than ``minRatings``
raters there, over all of its ratings. With none at all, the candidate passes (there is
nothing to fall below).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from controller.analysis.base import GateContext, GateResult
from controller.strategies.base import Outcome
from registry.analysis_spec import GateSpec


class Summary(Protocol):
    raters: int
    rated: int
    mean: float | None
    positive_share: float | None
    positive_low: float | None


class FeedbackSource(Protocol):
    def rater_summary(
        self,
        model_version_id: uuid.UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Any: ...


class FeedbackGate:
    type = "feedback"

    def __init__(self, spec: GateSpec, *, source: FeedbackSource | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.source = source

    def evaluate(self, ctx: GateContext) -> GateResult:
        spec = self.spec
        if self.source is None:
            return GateResult(self.name, self.type, Outcome.ERROR, "no feedback source")
        if ctx.window_start >= ctx.now:
            return GateResult(
                self.name, self.type, Outcome.INCONCLUSIVE, "the step has just started"
            )
        mine: Summary = self.source.rater_summary(
            ctx.deployment.version.id, since=ctx.window_start, until=ctx.now
        )
        inputs: dict[str, Any] = {
            "windowStart": ctx.window_start.isoformat(),
            "candidateRaters": mine.raters,
            "candidateRatings": mine.rated,
            "candidateMean": mine.mean,
            "candidatePositiveLow": mine.positive_low,
            "minRatings": spec.min_ratings,
            "maxDrop": spec.max_drop,
            "on": spec.on,
        }
        if mine.raters < spec.min_ratings:
            return GateResult(
                self.name,
                self.type,
                Outcome.INCONCLUSIVE,
                f"{mine.raters} rater(s) of the candidate in this step ({mine.rated} "
                f"rating(s)), fewer than {spec.min_ratings} raters",
                inputs,
            )
        if ctx.stable is None:
            return GateResult(
                self.name, self.type, Outcome.PASSED, "no stable version to compare with", inputs
            )
        theirs: Summary = self.source.rater_summary(
            ctx.stable.version.id, since=ctx.window_start, until=ctx.now
        )
        if theirs.raters < spec.min_ratings:
            theirs = self.source.rater_summary(ctx.stable.version.id)
        inputs.update(
            stableRaters=theirs.raters,
            stableRatings=theirs.rated,
            stableMean=theirs.mean,
            stablePositiveShare=theirs.positive_share,
        )
        if spec.on == "mean":
            ours, reference, what = mine.mean, theirs.mean, "mean rating"
        else:
            ours, reference, what = mine.positive_low, theirs.positive_share, "share of ≥4"
        if ours is None or reference is None:
            return GateResult(
                self.name,
                self.type,
                Outcome.PASSED,
                "the stable version has no ratings to compare with",
                inputs,
            )
        drop = reference - ours
        inputs["drop"] = round(drop, 4)
        if drop > spec.max_drop:
            return GateResult(
                self.name,
                self.type,
                Outcome.FAILED,
                f"{what} {ours:.3g} is {drop:.3g} below stable's {reference:.3g} "
                f"(more than {spec.max_drop:g})",
                inputs,
            )
        return GateResult(
            self.name,
            self.type,
            Outcome.PASSED,
            f"{what} {ours:.3g} against stable's {reference:.3g} (drop {drop:.3g}, allowed "
            f"{spec.max_drop:g}) over {mine.raters} rater(s)",
            inputs,
        )

"""The feedback gate: users' ratings of the candidate against the stable version's, over the
current step's window.

- Fewer than ``minRatings`` ratings of the candidate in the window: inconclusive (the step
  holds; after ``maxHold``, ``onHoldTimeout`` decides).
- ``on: mean``: fail when the candidate's mean rating is more than ``maxDrop`` below the
  stable version's.
- ``on: positive_low``: fail when the lower bound of the candidate's Wilson 95% interval for
  the share of ratings ≥ 4 is more than ``maxDrop`` below the stable version's share.

The stable version is judged over the same window; when it has fewer than ``minRatings``
ratings there, over all of its ratings. With none at all, the candidate passes (there is
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
    rated: int
    mean: float | None
    positive_share: float | None
    positive_low: float | None


class FeedbackSource(Protocol):
    def summary(
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
        mine: Summary = self.source.summary(
            ctx.deployment.version.id, since=ctx.window_start, until=ctx.now
        )
        inputs: dict[str, Any] = {
            "windowStart": ctx.window_start.isoformat(),
            "candidateRatings": mine.rated,
            "candidateMean": mine.mean,
            "candidatePositiveLow": mine.positive_low,
            "minRatings": spec.min_ratings,
            "maxDrop": spec.max_drop,
            "on": spec.on,
        }
        if mine.rated < spec.min_ratings:
            return GateResult(
                self.name,
                self.type,
                Outcome.INCONCLUSIVE,
                f"{mine.rated} rating(s) of the candidate in this step, fewer than "
                f"{spec.min_ratings}",
                inputs,
            )
        if ctx.stable is None:
            return GateResult(
                self.name, self.type, Outcome.PASSED, "no stable version to compare with", inputs
            )
        theirs: Summary = self.source.summary(
            ctx.stable.version.id, since=ctx.window_start, until=ctx.now
        )
        if theirs.rated < spec.min_ratings:
            theirs = self.source.summary(ctx.stable.version.id)
        inputs.update(
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
            f"{spec.max_drop:g}) over {mine.rated} rating(s)",
            inputs,
        )

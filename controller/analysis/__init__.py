"""Analysis: a verdict for the step a rollout is on: pass, fail, inconclusive or error.

``Analysis`` is the interface the controller calls; :class:`StepAnalysis` implements it with
readiness and the gates a deployment configures in ``strategyParams.analysis`` (see
``registry/analysis_spec.py``): the Prometheus gate (``prometheus.py``), the same checks from
the model servers' own ``/metrics`` (``direct.py``), and the feedback gate (``feedback.py``).
"""

from controller.analysis.base import Analysis, GateContext, GateResult
from controller.analysis.direct import DirectGate, scrape_metrics
from controller.analysis.feedback import FeedbackGate
from controller.analysis.prometheus import PrometheusClient, PrometheusGate, QueryError
from controller.analysis.step import StepAnalysis, combine

__all__ = [
    "Analysis",
    "DirectGate",
    "FeedbackGate",
    "GateContext",
    "GateResult",
    "PrometheusClient",
    "PrometheusGate",
    "QueryError",
    "StepAnalysis",
    "combine",
    "scrape_metrics",
]

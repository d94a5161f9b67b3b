"""A version's validation summary: the verdicts its list line and the API's ``validation``
field show, read in the same SELECT as the version.

The three values are read-only column properties of ``AIModelVersion``, added to its mapper
here (and not in ``registry.models``, which holds the tables): correlated subqueries on the
result ``validation_result_id`` points at (the current digest's latest, see
``ValidationService._store``) and on a run of the current digest still waiting or running.
A page of versions is therefore one query. Importing this module adds them; the services
import it (``registry.services.models``), so every session that builds a summary has them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import column_property

from registry.models import AIModelValidationResult, AIModelVersion, ValidationRequest
from registry.vocabulary import VALIDATION_PENDING


def _add_summary_columns() -> None:
    mapper = AIModelVersion.__mapper__
    if mapper.has_property("validation_security"):
        return
    result, request = AIModelValidationResult, ValidationRequest
    for key, status in (
        ("validation_security", result.security_scan_status),
        ("validation_functional", result.functional_status),
    ):
        mapper.add_property(
            key,
            column_property(
                select(status)
                .where(result.id == AIModelVersion.validation_result_id)
                .correlate_except(result)
                .scalar_subquery()
            ),
        )
    mapper.add_property(
        "validation_pending",
        column_property(
            select(request.status)
            .where(
                request.model_version_id == AIModelVersion.id,
                request.sha256 == AIModelVersion.sha256,
                request.status.in_([s.value for s in VALIDATION_PENDING]),
            )
            .correlate_except(request)
            .order_by(request.status.desc())  # Running before Queued
            .limit(1)
            .scalar_subquery()
        ),
    )


_add_summary_columns()


@dataclass(frozen=True)
class ValidationSummary:
    """The verdicts of the latest finished run of a version's current artifact digest
    (``validation_id``; None before any finished), and the status of a run of that digest
    still waiting or running (``pending``)."""

    validation_id: uuid.UUID | None
    security_scan_status: str | None
    functional_status: str | None
    pending: str | None

    @classmethod
    def of(cls, version: Any) -> ValidationSummary | None:
        """From an ``AIModelVersion``; None when the version has neither a result nor a
        pending run (an API version, or no artifact yet)."""
        if version.validation_result_id is None and version.validation_pending is None:
            return None
        return cls(
            validation_id=version.validation_result_id,
            security_scan_status=version.validation_security,
            functional_status=version.validation_functional,
            pending=version.validation_pending,
        )

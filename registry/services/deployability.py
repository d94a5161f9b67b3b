"""The one deployability check: may this version serve this environment on this target?

Every path that changes what serves calls it: creating a deployment, a rollback (warm and
cold), promote and resume requests, and the controller's record of a rollout reaching Active.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from registry.errors import GateClosed, Invalid
from registry.io_signature import signature_diff
from registry.models import AIModelVersion
from registry.services.validations import latest_result_for_digest, validation_gate
from registry.serving import unservable_reason
from registry.vocabulary import ArtifactFormat, CheckStatus, Environment, VersionStatus

NOT_DEPLOYABLE = (VersionStatus.ARCHIVED, VersionStatus.FAILED)


@dataclass(frozen=True)
class Deployability:
    """What the check found. ``unservable`` is a 422 (the target cannot run the format);
    ``failed_checks`` a 409. ``signature_diff`` is filled whenever the candidate's signature
    differs from the stable's, also when ``allowSignatureChange`` let it through."""

    unservable: str | None
    failed_checks: tuple[str, ...]
    signature_diff: tuple[str, ...]
    signature_change_allowed: bool

    @property
    def ok(self) -> bool:
        return self.unservable is None and not self.failed_checks

    def summary(self) -> str:
        return self.unservable or "; ".join(self.failed_checks)


def assess_deployability(
    s: Session,
    version: AIModelVersion,
    *,
    environment: str,
    target: str,
    stable: AIModelVersion | None,
    allow_signature_change: bool = False,
) -> Deployability:
    """Check ``version`` against everything a deployment of it to ``environment`` needs."""
    failed: list[str] = []
    if version.status in NOT_DEPLOYABLE:
        failed.append(f"lifecycle: version {version.version_number!r} is {version.status}")
    if version.format != ArtifactFormat.API and version.source_path is None:
        failed.append("artifact: no artifact has been uploaded to this version")
    if environment == Environment.PRODUCTION:
        # The production gate: the current digest's latest validation passed both checks.
        failed += validation_gate(s, version)
    else:
        # Unvalidated versions may go to testing and staging; a failed security scan may not.
        result = latest_result_for_digest(s, version)
        if result is not None and result.security_scan_status == CheckStatus.FAILED:
            failed.append(f"securityScanStatus: Failed (validation {result.id})")
    diff: list[str] = []
    if stable is not None and stable.id != version.id and stable.signature and version.signature:
        diff = signature_diff(stable.signature, version.signature)
        if diff and not allow_signature_change:
            failed.append(
                f"signature: the inputs/outputs differ from the stable version "
                f"{stable.version_number!r}'s (see signatureDiff; "
                "strategyParams.allowSignatureChange overrides)"
            )
    return Deployability(
        unservable=unservable_reason(
            version.format, artifact_key=version.source_path, target=target
        ),
        failed_checks=tuple(failed),
        signature_diff=tuple(diff),
        signature_change_allowed=bool(diff) and allow_signature_change,
    )


def check_deployable(
    s: Session,
    version: AIModelVersion,
    *,
    environment: str,
    target: str,
    stable: AIModelVersion | None,
    allow_signature_change: bool = False,
) -> Deployability:
    """:func:`assess_deployability`, raising: 422 (:class:`Invalid`) when the target cannot
    serve the format, 409 (:class:`GateClosed`, with ``failedChecks``) when a check fails."""
    found = assess_deployability(
        s,
        version,
        environment=environment,
        target=target,
        stable=stable,
        allow_signature_change=allow_signature_change,
    )
    if found.unservable is not None:
        raise Invalid(found.unservable, format=version.format or ArtifactFormat.ONNX, target=target)
    if found.failed_checks:
        extra = {"signatureDiff": list(found.signature_diff)} if found.signature_diff else {}
        diff = f" ({'; '.join(found.signature_diff)})" if found.signature_diff else ""
        raise GateClosed(
            f"version {version.version_number!r} cannot be deployed to {environment}: "
            + "; ".join(found.failed_checks)
            + diff,
            failedChecks=list(found.failed_checks),
            **extra,
        )
    return found

"""What validators return: frozen reports of findings. A validator never touches the database."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Literal

from registry.vocabulary import CheckStatus


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Finding:
    """One problem. ``location`` names the file (and archive member) and, where it is known,
    the byte offset or the graph node, e.g. ``model.pt:archive/data.pkl@1234`` or
    ``model.onnx#node:Conv_3``."""

    severity: Severity
    rule_id: str
    message: str
    location: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": str(self.severity),
            "ruleId": self.rule_id,
            "message": self.message,
            "location": self.location,
        }


#: A scan's overall verdict. ``too-large`` is fail-closed but is not ``malicious``.
ScanVerdict = Literal["clean", "malicious", "too-large", "error"]


@dataclass(frozen=True)
class ScanReport:
    status: CheckStatus
    verdict: ScanVerdict
    findings: tuple[Finding, ...]
    files_scanned: tuple[str, ...] = ()
    bytes_scanned: int = 0
    duration_seconds: float = 0.0
    tool_versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["findings"] = [f.to_dict() for f in self.findings]
        return {
            "status": self.status,
            "verdict": self.verdict,
            "findings": data["findings"],
            "filesScanned": list(self.files_scanned),
            "bytesScanned": self.bytes_scanned,
            "durationSeconds": self.duration_seconds,
            "toolVersions": dict(self.tool_versions),
        }

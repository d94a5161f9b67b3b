"""A deployment's conditions: Kubernetes-style ``{type, status, reason, message,
lastTransitionTime}`` entries, one per type, that say why it is where it is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

Condition = dict[str, Any]


def condition(kind: str, status: bool, reason: str, message: str, now: datetime) -> Condition:
    """One condition: ``{type, status, reason, message, lastTransitionTime}``."""
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now.isoformat(),
    }


def merge_conditions(current: Sequence[Condition], updates: Sequence[Condition]) -> list[Condition]:
    """Replace conditions by type; keep ``lastTransitionTime`` when the status is unchanged."""
    merged = {c["type"]: c for c in current}
    for update in updates:
        old = merged.get(update["type"])
        if old is not None and old.get("status") == update["status"]:
            update = {**update, "lastTransitionTime": old.get("lastTransitionTime")}
        merged[update["type"]] = update
    return list(merged.values())


def merges_to_same(
    current: Sequence[Condition], updates: Sequence[tuple[str, bool, str, str]]
) -> bool:
    """Whether ``merge_conditions(current, [condition(*u, now) for u in updates])`` equals
    ``list(current)`` (for any ``now``), without building the conditions: each update's type
    is there once, with the same status, reason and message, and nothing more."""
    merged = {c["type"]: c for c in current}
    if len(merged) != len(current):
        return False
    for kind, status, reason, message in updates:
        old = merged.get(kind)
        if (
            old is None
            or len(old) != 5
            or "lastTransitionTime" not in old
            or old.get("status") != ("True" if status else "False")
            or old.get("reason") != reason
            or old.get("message") != message
        ):
            return False
    return True


def progress_message(conditions: Sequence[Condition] | None) -> str | None:
    """The ``Progressing`` condition's message: what a rollout says it is doing."""
    for c in conditions or []:
        if c.get("type") == "Progressing":
            return str(c.get("message"))
    return None

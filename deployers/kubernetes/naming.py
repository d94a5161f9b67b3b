"""Names and label values for the Kubernetes objects of a workload.

Kubernetes object names here are DNS-1123 labels (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most
63 characters), and label values at most 63 characters of ``[A-Za-z0-9._-]`` that start and end
with an alphanumeric. Model names and versions are free text, so they are normalised; whenever
that changes the text (or has to shorten it) a short hash of the *original* text is appended,
so that two different names (``text2img`` and ``Text2Img``) never map to the same one.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from registry.vocabulary import RouteRole

__all__ = [
    "MAX_NAME",
    "SLOTS",
    "dns_label",
    "label_value",
    "resource_name",
    "route_name",
    "short_hash",
    "slot_for",
]

MAX_NAME = 63
HASH_CHARS = 6
DEPLOYMENT_ID_CHARS = 8

#: Our workload roles and the slot each one is named after (plain strings: they go into names
#: and labels).
SLOTS: dict[str, str] = {role.value: role.value for role in RouteRole}

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def short_hash(text: str, *, chars: int = HASH_CHARS) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def _with_hash(base: str, original: str, *, limit: int) -> str:
    """``base`` cut to fit ``limit`` with ``-HASH`` of ``original`` appended."""
    suffix = short_hash(original)
    base = base[: limit - len(suffix) - 1].rstrip("-_.")
    return f"{base}-{suffix}" if base else suffix


def dns_label(text: str, *, limit: int = MAX_NAME) -> str:
    """``text`` as a DNS-1123 label of at most ``limit`` characters: unchanged when it already
    is one, else lower-cased, with runs of other characters turned into ``-`` and a hash of
    ``text`` appended."""
    if len(text) <= limit and _DNS_LABEL.fullmatch(text):
        return str(text)  # a plain string, also for a StrEnum member (a Target's environment)
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return _with_hash(base, text, limit=limit)


def label_value(text: str) -> str:
    """``text`` as a valid label value (at most 63 characters), hashed when it had to change."""
    if len(text) <= MAX_NAME and _LABEL_VALUE.fullmatch(text):
        return str(text)  # a plain string, also for a StrEnum member (a Target's environment)
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-_.")
    return _with_hash(base, text, limit=MAX_NAME)


def slot_for(role: str) -> str:
    """The slot a workload role is named after (``stable``, ``canary``, ``active``,
    ``preview``); another role is normalised as a name."""
    return SLOTS.get(role) or dns_label(role, limit=12)


def resource_name(*, model: str, environment: str, role: str, deployment_id: uuid.UUID) -> str:
    """The name of a workload's Deployment and Service: ``MODEL-ENV-SLOT-DEPLOYMENTID``, the
    deployment id cut to 8 hex digits, the whole a DNS-1123 label within 63 characters."""
    tail = f"-{slot_for(role)}-{deployment_id.hex[:DEPLOYMENT_ID_CHARS]}"
    return f"{_prefix(model, environment, limit=MAX_NAME - len(tail))}{tail}"


def route_name(*, model: str, environment: str) -> str:
    """The name of a model's HTTPRoute or VirtualService (and router Service) in an
    environment."""
    return _prefix(model, environment, limit=MAX_NAME)


def _prefix(model: str, environment: str, *, limit: int) -> str:
    prefix = f"{dns_label(model)}-{dns_label(environment)}"
    if len(prefix) <= limit:
        return prefix
    return _with_hash(prefix, f"{model}\0{environment}", limit=limit)

"""The light typed objects' base, and the endpoint answer: what the Resolver needs, without
the rest of ``modelreg_client.schemas`` (each dataclass costs its import time). See that
module for the whole story.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

W = TypeVar("W", bound="Wire")

_HINTS: dict[type, dict[str, Any]] = {}


def camel(name: str) -> str:
    """``model_version_id`` → ``modelVersionId``: the wire name of an attribute."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _read(hint: Any, value: Any) -> Any:
    """``value`` from JSON, as the annotation ``hint`` says."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _read(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_read(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _read(item, v) for k, v in value.items()}
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is uuid.UUID:
        return uuid.UUID(value)
    if isinstance(hint, type) and issubclass(hint, Wire):
        return hint.from_wire(value)
    return value


Mode = Literal["python", "json"]


def _dump(value: Any, *, mode: Mode, by_alias: bool) -> Any:
    if isinstance(value, Wire):
        return value.model_dump(mode=mode, by_alias=by_alias)
    if isinstance(value, list):
        return [_dump(v, mode=mode, by_alias=by_alias) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, mode=mode, by_alias=by_alias) for k, v in value.items()}
    if mode == "json":
        if isinstance(value, datetime):
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, uuid.UUID):
            return str(value)
    return copy.deepcopy(value)


@dataclasses.dataclass(frozen=True)
class Wire:
    """A response body. ``wire`` keeps the JSON exactly as the server sent it."""

    wire: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, repr=False, compare=False, kw_only=True
    )
    #: The server's name for this body (``components.schemas`` in its OpenAPI document).
    SCHEMA: ClassVar[str] = ""

    @classmethod
    def from_wire(cls: type[W], data: Mapping[str, Any]) -> W:
        """Read a JSON object; a field the server did not send takes its default, or None."""
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "wire":
                continue
            key = camel(field.name)
            if key in data:
                values[field.name] = _read(hints[field.name], data[key])
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                values[field.name] = None
        return cls(**values, wire=data)

    def model_dump(self, *, mode: Mode = "python", by_alias: bool = False) -> dict[str, Any]:
        """The fields as a dict: with ``by_alias`` under their camelCase wire names; in
        ``json`` mode with JSON values only. ``mode="json", by_alias=True`` is the body as the
        server sent it."""
        if mode == "json" and by_alias and self.wire:
            return copy.deepcopy(dict(self.wire))
        return {
            (camel(f.name) if by_alias else f.name): _dump(
                getattr(self, f.name), mode=mode, by_alias=by_alias
            )
            for f in dataclasses.fields(self)
            if f.name != "wire"
        }


# -- endpoints ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint(Wire):
    SCHEMA = "Endpoint"
    version_number: str
    model_version_id: str
    deployment_id: str
    url: str
    weight: int
    role: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectedEndpoint(Wire):
    SCHEMA = "SelectedEndpoint"
    version_number: str
    model_version_id: str
    url: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class EndpointAnswer(Wire):
    SCHEMA = "EndpointAnswer"
    model: str
    environment: str
    generation: int
    endpoints: list[Endpoint]
    selected: SelectedEndpoint | None

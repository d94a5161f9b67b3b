"""The light client's response types against the server's OpenAPI document: same fields, same
wire names, same required set, same types. A field the server adds, renames or retypes fails
here until modelreg_client/schemas.py follows."""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from api.app import create_app
from modelreg_client import Client
from modelreg_client.schemas import ALL, Wire, camel
from registry.settings import Settings
from tests.support.helpers import make_model, make_version


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    schemas: dict[str, Any] = app.openapi()["components"]["schemas"]
    return schemas


def schema_kind(schema: dict[str, Any]) -> str:
    """A JSON schema, spelled as the comparison needs it: ``uuid|null``, ``list[ref:X]``."""
    if "$ref" in schema:
        return "ref:" + schema["$ref"].rsplit("/", 1)[1]
    if "anyOf" in schema:
        return "|".join(sorted(schema_kind(s) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "string":
        return {"date-time": "datetime", "uuid": "uuid"}.get(schema.get("format", ""), "str")
    if kind == "object":
        extra = schema.get("additionalProperties", True)
        return "dict[" + ("any" if extra is True else schema_kind(extra)) + "]"
    if kind == "array":
        return "list[" + schema_kind(schema.get("items", {})) + "]"
    simple = {"integer": "int", "number": "float", "boolean": "bool", "null": "null"}
    return simple.get(kind, "any") if isinstance(kind, str) else "any"


def hint_kind(hint: Any) -> str:
    """An annotation of modelreg_client.schemas, spelled the same way."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return "|".join(sorted(hint_kind(a) for a in typing.get_args(hint)))
    if origin is list:
        return "list[" + hint_kind(typing.get_args(hint)[0]) + "]"
    if origin is dict:
        return "dict[" + hint_kind(typing.get_args(hint)[1]) + "]"
    if isinstance(hint, type) and issubclass(hint, Wire):
        return "ref:" + hint.SCHEMA
    named = {
        str: "str",
        int: "int",
        float: "float",
        bool: "bool",
        type(None): "null",
        datetime: "datetime",
        uuid.UUID: "uuid",
    }
    return named.get(hint, "any")


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.SCHEMA) for c in ALL])
def test_the_client_reads_what_the_server_answers(
    cls: type[Wire], components: dict[str, Any]
) -> None:
    schema = components[cls.SCHEMA]
    hints = typing.get_type_hints(cls)
    fields = {camel(f.name): f for f in dataclasses.fields(cls) if f.name != "wire"}
    assert set(fields) == set(schema["properties"]), "the same fields, by their wire names"
    required = {
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == set(schema.get("required", ())), "the same fields required"
    for name, f in fields.items():
        assert hint_kind(hints[f.name]) == schema_kind(schema["properties"][name]), name


def test_every_body_the_client_returns_is_checked() -> None:
    """Each ``Client`` method's return annotation is one of the checked classes (or plain)."""
    hints = {
        name: typing.get_type_hints(method).get("return")
        for name, method in vars(Client).items()
        if callable(method) and not name.startswith("_")
    }
    wires = set()
    for hint in hints.values():
        for arg in (hint, *typing.get_args(hint)):
            if isinstance(arg, type) and issubclass(arg, Wire):
                wires.add(arg)
    assert wires, hints
    assert wires <= set(ALL)


def test_a_body_reads_and_dumps_as_the_server_sent_it(client: Client, http: httpx.Client) -> None:
    make_model(http, "text2img", description="SD-like")
    sent = make_version(http, "text2img", "1.0", parameters={"inputShape": [1, 4]})
    version = client.get_version("text2img", "1.0")
    assert isinstance(version.id, uuid.UUID)
    assert isinstance(version.created_at, datetime)
    assert version.parameters == {"inputShape": [1, 4]}
    assert version.model_dump(mode="json", by_alias=True) == sent
    python = version.model_dump(by_alias=True)
    assert python["createdAt"] == version.created_at
    assert python["id"] == uuid.UUID(sent["id"])
    assert [m.name for m in client.list_models()] == ["text2img"]

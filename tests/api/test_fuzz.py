"""Schemathesis fuzzes the app's own OpenAPI schema, on SQLite and on PostgreSQL.

Every operation (artifact upload and download included, with the small bodies the fuzzer
generates) gets a bounded, derandomized batch of generated requests, authenticated with the
admin key. Each response must: not be a 5xx, use a declared status code, use a declared content
type, and match the declared schema. Failures are collected and reported together, so one run
shows every broken operation rather than the first.

Random path parameters almost always miss (404), so a model with a version, an uploaded
artifact, a validation run and a deployment are seeded first, and half of the generated cases
have their path parameters pointed at them: the fuzzer then reaches the code behind the lookups.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from registry.services import Registry
from tests.support.helpers import make_model, make_version, pass_validation, upload
from tests.support.live_server import LiveServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 10
MODEL, VERSION = "fuzz-model", "1.0"


def _seed(server: LiveServer, admin_token: str, registry: Registry) -> dict[str, str]:
    """Existing resources for the path parameters; returns parameter name -> value."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        make_model(http, MODEL)
        make_version(http, MODEL, VERSION)
        assert upload(http, MODEL, VERSION, b"fuzz weights").status_code == 201
        pass_validation(registry)
        runs = http.get(f"/api/v1/models/{MODEL}/versions/{VERSION}/validations")
        assert runs.status_code == 200, runs.text
        deployment = http.post(
            "/api/v1/deployments",
            json={
                "model": MODEL,
                "versionNumber": VERSION,
                "environment": "staging",
                "deploymentStrategy": "rolling_update",
            },
        )
        assert deployment.status_code == 202, deployment.text
    return {
        "name": MODEL,
        "version": VERSION,
        "validation_id": str(runs.json()[0]["id"]),
        "deployment_id": str(deployment.json()["id"]),
    }


def _fuzz_operation(
    operation: Any,
    base_url: str,
    session: requests.Session,
    seeds: dict[str, str],
    mode: GenerationMode,
    failures: list[str],
) -> None:
    label = f"{operation.label} [{mode.value}]"

    @given(case=operation.as_strategy(generation_mode=mode), seeded=st.booleans())
    @hsettings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # same inputs on every run: CI failures reproduce locally
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, seeded: bool) -> None:
        if seeded and case.path_parameters:
            for key in case.path_parameters:
                if key in seeds:
                    case.path_parameters[key] = seeds[key]
        try:
            response = case.call(base_url=base_url, session=session, timeout=30)
            case.validate_response(response, checks=CHECKS)
        except (Exception, FailureGroup) as exc:  # collect: report every operation at the end
            failures.append(f"{label}:\n  {case.as_curl_command()}\n  {exc}")

    try:
        run()
    except Unsatisfiable:
        # An operation with no parameters and no body has no invalid input to generate.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_fuzz_api_schema(server: LiveServer, admin_token: str, registry: Registry) -> None:
    seeds = _seed(server, admin_token, registry)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {admin_token}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for operation in operations:
                _fuzz_operation(operation, server.url, session, seeds, mode, failures)
    assert not failures, f"{len(failures)} fuzzing failure(s):\n\n" + "\n\n".join(failures)


def test_an_event_id_beyond_64_bits_is_a_422_not_a_database_overflow(http: httpx.Client) -> None:
    """Found by the fuzzer: `after` above the BIGINT range was a 500 on both databases."""
    for path in (f"/api/v1/deployments/{uuid.uuid4()}/events", "/api/v1/models/m/history"):
        response = http.get(path, params={"after": 2**63})
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert http.get(path, params={"after": 2**63 - 1}).status_code in (200, 404), path

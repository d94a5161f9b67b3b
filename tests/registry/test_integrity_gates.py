"""Production integrity: what a version serves is immutable, every path that changes what
serves runs the one deployability check, and a model's history is kept.

Real HTTP against the app on SQLite and PostgreSQL; the controller runs against the fake
deployer (our own interface) with a fixed clock.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli import app
from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from deployers.base import PermanentError, VersionRef, Workload, check_workload
from registry.io_signature import signature_diff
from registry.models import AIModelDeployment, DeploymentEvent
from registry.services import Registry
from registry.services.routing import current_routes
from registry.validation_outcome import ValidationOutcome
from registry.vocabulary import CheckStatus
from tests.support.fakes import FakeDeployer, SteadyTraffic
from tests.support.helpers import assert_problem, audit_rows, make_model, make_version, upload
from tests.support.live_server import LiveServer

T0 = datetime.now(UTC).replace(microsecond=0)
MODEL = "text2img"
X_1x4 = {"inputs": [{"name": "x", "type": "tensor(float)", "shape": [1, 4]}], "outputs": []}
X_Nx4 = {"inputs": [{"name": "x", "type": "tensor(float)", "shape": ["N", 4]}], "outputs": []}
INPUT_1x4 = {
    "inputs": [{"name": "input", "type": "tensor(float)", "shape": [1, 4]}],
    "outputs": [],
}


@pytest.fixture
def controller(registry: Registry) -> Controller:
    return Controller(
        registry.deployments,
        deployers={"local": FakeDeployer()},
        analysis=StepAnalysis(scrape=SteadyTraffic()),
        holder="integrity-test",
    )


@pytest.fixture(autouse=True)
def model(http: httpx.Client) -> None:
    make_model(http, MODEL)


def validate(
    registry: Registry,
    *,
    security: str = "Passed",
    functional: str = "Passed",
    signature: dict[str, Any] | None = None,
) -> None:
    """Play the worker through the real queue, with the functional report in the shape the
    functional validator writes (``results["functional"]["signature"]``)."""
    while (job := registry.validations.claim("test-worker")) is not None:
        functional_report: dict[str, Any] = {"status": functional}
        if signature is not None:
            functional_report["signature"] = signature
        registry.validations.complete(
            job,
            "test-worker",
            ValidationOutcome(
                security=CheckStatus(security),
                functional=CheckStatus(functional),
                sha256=job.sha256,
                benchmark={"latencyMs": {"p95": 1.0}},
                functional_report=functional_report,
            ),
        )


def onnx_version(
    http: httpx.Client,
    registry: Registry,
    number: str,
    *,
    signature: dict[str, Any] | None = None,
    security: str = "Passed",
    validated: bool = True,
) -> dict[str, Any]:
    make_version(http, MODEL, number)
    assert upload(http, MODEL, number, f"weights {number}".encode()).status_code == 201
    if validated:
        validate(registry, security=security, signature=signature)
    body: dict[str, Any] = http.get(f"/api/v1/models/{MODEL}/versions/{number}").json()
    return body


def deploy(
    http: httpx.Client, number: str, *, environment: str = "production", **body: Any
) -> httpx.Response:
    payload = {"model": MODEL, "environment": environment, "versionNumber": number, **body}
    return http.post("/api/v1/deployments", json=payload)


def serve(
    http: httpx.Client, controller: Controller, number: str, *, at: int, **params: Any
) -> dict[str, Any]:
    """Roll ``number`` out to production in one step and let the controller finish it."""
    response = deploy(http, number, strategyParams={"steps": [{"weight": 100}], **params})
    assert response.status_code == 202, response.text
    for i in range(3):
        controller.run_pass(now=T0 + timedelta(seconds=at + i))
    shown: dict[str, Any] = http.get(f"/api/v1/deployments/{response.json()['id']}").json()
    assert shown["status"] == "Active", shown
    return shown


def archive(http: httpx.Client, number: str) -> None:
    response = http.post(
        f"/api/v1/models/{MODEL}/versions/{number}/transitions", json={"status": "Archived"}
    )
    assert response.status_code == 200, response.text


def weights(registry: Registry, environment: str = "production") -> dict[str, int]:
    with registry.sessions() as s:
        model_id = registry.models.get(MODEL).id
        return {
            r.version_number: r.weight
            for r in current_routes(s, model_id=model_id, environment=environment)
        }


def deployment_count(registry: Registry) -> int:
    with registry.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AIModelDeployment)) or 0)


# -- 1. what a version serves is immutable ------------------------------------------------------


def test_the_endpoint_of_a_serving_api_version_cannot_be_patched(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    make_version(
        http, MODEL, "api-1", format="API", parameters={"endpoint": "https://good.example/v1"}
    )
    serve(http, controller, "api-1", at=0)
    path = f"/api/v1/models/{MODEL}/versions/api-1"
    body = assert_problem(
        http.patch(path, json={"parameters": {"endpoint": "https://evil.example/"}}),
        409,
        "cannot change",
    )
    assert body["type"].endswith("version-immutable")
    assert http.get(path).json()["parameters"] == {"endpoint": "https://good.example/v1"}
    notes = http.patch(path, json={"releaseNotes": "still editable"})
    assert notes.status_code == 200, notes.text
    assert notes.json()["releaseNotes"] == "still editable"
    routes = http.get(f"/api/v1/models/{MODEL}/endpoint", params={"environment": "production"})
    assert "evil" not in routes.text


@pytest.mark.parametrize(
    "freeze",
    [
        pytest.param("deployed-to-staging", id="deployed-anywhere"),
        pytest.param("left-staged", id="left-staged"),
    ],
)
def test_api_version_parameters_freeze(http: httpx.Client, freeze: str) -> None:
    make_version(http, MODEL, "api-1", format="API", parameters={"endpoint": "https://a.example"})
    path = f"/api/v1/models/{MODEL}/versions/api-1"
    if freeze == "deployed-to-staging":
        assert deploy(http, "api-1", environment="staging").status_code == 202
    else:
        moved = http.post(f"{path}/transitions", json={"status": "Failed"})
        assert moved.status_code == 200, moved.text
    body = assert_problem(
        http.patch(path, json={"parameters": {"endpoint": "https://b.example"}}), 409
    )
    assert body["type"].endswith("version-immutable")


def test_a_validated_version_keeps_its_parameters(http: httpx.Client, registry: Registry) -> None:
    onnx_version(http, registry, "1.0")
    path = f"/api/v1/models/{MODEL}/versions/1.0"
    body = assert_problem(http.patch(path, json={"parameters": {"threshold": 0.9}}), 409)
    assert body["type"].endswith("version-immutable")
    assert "validated" in body["detail"]


# -- 2. rollback, promote and resume run the deploy checks --------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("warm", id="warm-rollback-refused"),
        pytest.param("cold", id="cold-rollback-refused"),
    ],
)
def test_rollback_refuses_an_archived_version(
    http: httpx.Client, registry: Registry, controller: Controller, path: str
) -> None:
    onnx_version(http, registry, "1.0")
    onnx_version(http, registry, "2.0")
    serve(http, controller, "1.0", at=0)
    delay = "300s" if path == "warm" else "0s"
    serve(http, controller, "2.0", at=10, scaleDownDelay=delay)
    controller.run_pass(now=T0 + timedelta(seconds=20))  # cold: 1.0's servers are gone
    archive(http, "1.0")
    before = deployment_count(registry)
    body = assert_problem(http.post(f"/api/v1/models/{MODEL}/rollback"), 409, "Archived")
    assert any(c.startswith("lifecycle") for c in body["failedChecks"])
    assert weights(registry) == {"2.0": 100}
    assert deployment_count(registry) == before, "no rollout of the archived version started"
    assert audit_rows(registry, "deployment_rollback") == []


def test_a_rollback_with_the_environment_in_the_body_runs_the_same_check(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    onnx_version(http, registry, "1.0")
    onnx_version(http, registry, "2.0")
    serve(http, controller, "1.0", at=0)
    serve(http, controller, "2.0", at=10)
    archive(http, "1.0")
    before = deployment_count(registry)
    body = assert_problem(
        http.post(
            f"/api/v1/models/{MODEL}/rollback",
            json={"environment": "production", "reason": "the body form"},
        ),
        409,
        "Archived",
    )
    assert any(c.startswith("lifecycle") for c in body["failedChecks"])
    assert weights(registry) == {"2.0": 100}
    assert deployment_count(registry) == before
    assert audit_rows(registry, "deployment_rollback") == []


def test_rollback_refuses_a_version_whose_scan_failed(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    onnx_version(http, registry, "1.0")
    onnx_version(http, registry, "2.0")
    serve(http, controller, "1.0", at=0)
    serve(http, controller, "2.0", at=10)
    revalidate = http.post(f"/api/v1/models/{MODEL}/versions/1.0/validations")
    assert revalidate.status_code in (201, 202), revalidate.text
    validate(registry, security="Failed")  # a newer scan of 1.0's bytes found something
    body = assert_problem(http.post(f"/api/v1/models/{MODEL}/rollback"), 409)
    assert any(c.startswith("securityScanStatus: Failed") for c in body["failedChecks"])
    assert weights(registry) == {"2.0": 100}


@pytest.mark.parametrize("action", ["promote", "resume"])
def test_promote_and_resume_refuse_an_archived_candidate(
    http: httpx.Client, registry: Registry, controller: Controller, action: str
) -> None:
    onnx_version(http, registry, "1.0")
    onnx_version(http, registry, "2.0")
    serve(http, controller, "1.0", at=0)
    steps = [{"weight": 10, "pause": "1h"}, {"weight": 100}]
    dep = deploy(http, "2.0", strategyParams={"steps": steps}).json()
    controller.run_pass(now=T0 + timedelta(seconds=10))
    if action == "resume":
        assert http.post(f"/api/v1/deployments/{dep['id']}/pause").status_code == 202
    archive(http, "2.0")
    body = assert_problem(http.post(f"/api/v1/deployments/{dep['id']}/{action}"), 409, "Archived")
    assert any(c.startswith("lifecycle") for c in body["failedChecks"])
    shown = http.get(f"/api/v1/deployments/{dep['id']}").json()
    assert shown["requestedAction"] is None
    assert shown["progress"]["paused"] is (action == "resume")


def test_a_version_archived_mid_rollout_never_reaches_100_percent(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    onnx_version(http, registry, "1.0")
    onnx_version(http, registry, "2.0")
    serve(http, controller, "1.0", at=0)
    steps = [{"weight": 50, "pause": "30s"}, {"weight": 100}]
    dep = deploy(http, "2.0", strategyParams={"steps": steps}).json()
    for second in (10, 11, 12):
        controller.run_pass(now=T0 + timedelta(seconds=second))
    assert weights(registry) == {"1.0": 50, "2.0": 50}
    archive(http, "2.0")
    for second in (60, 61, 62, 63):
        controller.run_pass(now=T0 + timedelta(seconds=second))
    shown = http.get(f"/api/v1/deployments/{dep['id']}").json()
    assert shown["status"] == "RolledBack", shown
    assert weights(registry) == {"1.0": 100}
    with registry.sessions() as s:
        traffic = list(
            s.scalars(select(DeploymentEvent.details).where(DeploymentEvent.kind == "traffic"))
        )
    assert not any(
        r.get("versionNumber") == "2.0" and r.get("weight") == 100
        for t in traffic
        for r in (t or {}).get("routes", [])
    ), "the archived candidate was never routed all traffic"
    events = http.get(f"/api/v1/deployments/{dep['id']}/events").json()
    assert any(e["kind"] == "abort_requested" and "Archived" in e["reason"] for e in events)


# -- 3. a failed scan blocks every environment ------------------------------------------------


@pytest.mark.parametrize("environment", ["testing", "staging", "production"])
def test_a_failed_security_scan_blocks_every_environment(
    http: httpx.Client, registry: Registry, environment: str
) -> None:
    onnx_version(http, registry, "1.0", security="Failed")
    body = assert_problem(deploy(http, "1.0", environment=environment), 409)
    assert any(c.startswith("securityScanStatus: Failed") for c in body["failedChecks"])


@pytest.mark.parametrize("environment", ["testing", "staging"])
def test_an_unvalidated_version_may_go_to_testing_and_staging(
    http: httpx.Client, registry: Registry, environment: str
) -> None:
    onnx_version(http, registry, "1.0", validated=False)
    assert deploy(http, "1.0", environment=environment).status_code == 202


# -- 4. format and target ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "filename"),
    [
        pytest.param("PyTorch", "model.pt", id="pytorch-state-dict"),
        pytest.param("Pickle", "model.pkl", id="pickle"),
        pytest.param("ONNX", "model.pt", id="onnx-named-pt"),
    ],
)
def test_a_format_the_target_cannot_serve_is_422(
    http: httpx.Client, registry: Registry, fmt: str, filename: str
) -> None:
    make_version(http, MODEL, "1.0", format=fmt)
    # A pickle's header under ONNX is refused at upload already (registry.formats): give the
    # ONNX case bytes no sniffer names, so that its .pt name is what the deploy check sees.
    content = b"weights" if fmt == "ONNX" else b"\x80\x02weights"
    stored = upload(http, MODEL, "1.0", content, filename=filename)
    assert stored.status_code == 201, stored.text
    body = assert_problem(deploy(http, "1.0", environment="staging"), 422, "'local'")
    assert body["target"] == "local"
    assert fmt in body["detail"] or filename in body["detail"]
    assert deployment_count(registry) == 0


def test_an_onnx_bundle_is_deployable(http: httpx.Client) -> None:
    make_version(http, MODEL, "1.0")
    assert upload(http, MODEL, "1.0", b"bundle", filename="model.tar.gz").status_code == 201
    assert deploy(http, "1.0", environment="staging").status_code == 202


@pytest.mark.parametrize(
    ("version", "refused"),
    [
        pytest.param(
            VersionRef(uuid.uuid4(), "1", "PyTorch", "ab" * 32, "m/1/model.pt"), True, id="pytorch"
        ),
        pytest.param(
            VersionRef(uuid.uuid4(), "1", "Pickle", "ab" * 32, "m/1/model.pkl"), True, id="pickle"
        ),
        pytest.param(
            VersionRef(uuid.uuid4(), "1", "ONNX", "ab" * 32, "m/1/model.onnx"), False, id="onnx"
        ),
        pytest.param(
            VersionRef(uuid.uuid4(), "1", "ONNX", "ab" * 32, "m/1/model.zip"), False, id="bundle"
        ),
        pytest.param(
            VersionRef(uuid.uuid4(), "1", "API", endpoint="https://a.example"), False, id="api"
        ),
    ],
)
def test_check_workload_agrees_with_the_format_table(version: VersionRef, refused: bool) -> None:
    workload = Workload(deployment_id=uuid.uuid4(), version=version, replicas=1)
    if refused:
        with pytest.raises(PermanentError, match="cannot serve"):
            check_workload(workload)
    else:
        check_workload(workload)


# -- 5. signatures ----------------------------------------------------------------------------


def test_the_signature_is_stored_and_shown(http: httpx.Client, registry: Registry) -> None:
    shown = onnx_version(http, registry, "1.0", signature=X_Nx4)
    assert shown["signature"] == X_Nx4
    make_version(http, MODEL, "2.0")
    assert upload(http, MODEL, "2.0", b"weights 2").status_code == 201
    while (job := registry.validations.claim("w")) is not None:
        registry.validations.complete(
            job,
            "w",
            ValidationOutcome(
                security=CheckStatus.PASSED,
                functional=CheckStatus.FAILED,
                functional_report={"signature": X_1x4},
            ),
        )
    failed = http.get(f"/api/v1/models/{MODEL}/versions/2.0").json()
    assert failed["signature"] is None, "only a passed functional check's signature is kept"


def test_versions_show_prints_the_signature(
    http: httpx.Client,
    registry: Registry,
    server: LiveServer,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    onnx_version(http, registry, "1.0", signature=X_Nx4)
    monkeypatch.setenv("MODELREG_URL", server.url)
    monkeypatch.setenv("MODELREG_TOKEN", admin_token)
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["versions", "show", MODEL, "1.0"])
    assert result.exit_code == 0, result.output
    assert "input 'x' tensor(float) [N, 4]" in result.output


@pytest.mark.parametrize("strategy", ["canary", "blue_green", "rolling_update"])
def test_a_candidate_with_another_signature_is_refused(
    http: httpx.Client, registry: Registry, controller: Controller, strategy: str
) -> None:
    onnx_version(http, registry, "1.0", signature=X_1x4)
    onnx_version(http, registry, "2.0", signature=INPUT_1x4)
    serve(http, controller, "1.0", at=0)
    body = assert_problem(
        deploy(http, "2.0", deploymentStrategy=strategy), 409, "signature", "input 'x' is gone"
    )
    assert any(c.startswith("signature") for c in body["failedChecks"])
    assert body["signatureDiff"] == [
        "input 'x' is gone",
        "new input 'input' tensor(float) [1, 4]",
    ]
    assert weights(registry) == {"1.0": 100}


def test_allow_signature_change_overrides_and_is_audited(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    onnx_version(http, registry, "1.0", signature=X_1x4)
    onnx_version(http, registry, "2.0", signature=INPUT_1x4)
    serve(http, controller, "1.0", at=0)
    response = deploy(http, "2.0", strategyParams={"allowSignatureChange": True})
    assert response.status_code == 202, response.text
    last = audit_rows(registry, "deployment_created")[-1].details or {}
    assert last["allowSignatureChange"] is True
    assert "input 'x' is gone" in last["signatureDiff"]
    assert_problem(deploy(http, "2.0", strategyParams={"allowSignatureChange": "yes"}), 422)


def test_compatible_or_unknown_signatures_pass(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    onnx_version(http, registry, "1.0", signature=X_1x4)
    onnx_version(http, registry, "2.0", signature=X_Nx4)  # a symbolic batch dim matches 1
    onnx_version(http, registry, "3.0")  # validated before signatures were stored
    serve(http, controller, "1.0", at=0)
    serve(http, controller, "2.0", at=10)
    assert deploy(http, "3.0").status_code == 202


@pytest.mark.parametrize(
    ("stable", "candidate", "diff"),
    [
        pytest.param(X_1x4, X_1x4, [], id="same"),
        pytest.param(X_1x4, X_Nx4, [], id="symbolic-dim-matches-fixed"),
        pytest.param(
            X_1x4,
            {"inputs": [{"name": "x", "type": "tensor(float)", "shape": [1, None]}]},
            [],
            id="unknown-dim-matches",
        ),
        pytest.param(
            X_1x4,
            {"inputs": [{"name": "x", "type": "tensor(float)", "shape": [1, 8]}]},
            ["input 'x' shape [1, 4] is now [1, 8]"],
            id="fixed-dim-differs",
        ),
        pytest.param(
            X_1x4,
            {"inputs": [{"name": "x", "type": "tensor(float)", "shape": [1, 4, 1]}]},
            ["input 'x' shape [1, 4] is now [1, 4, 1]"],
            id="rank-differs",
        ),
        pytest.param(
            X_1x4,
            {"inputs": [{"name": "x", "type": "tensor(double)", "shape": [1, 4]}]},
            ["input 'x' type tensor(float) is now tensor(double)"],
            id="element-type-differs",
        ),
        pytest.param(
            {"inputs": [], "outputs": [{"name": "y", "type": "tensor(float)", "shape": [1]}]},
            {"inputs": [], "outputs": [{"name": "z", "type": "tensor(float)", "shape": [1]}]},
            ["output 'y' is gone", "new output 'z' tensor(float) [1]"],
            id="output-renamed",
        ),
    ],
)
def test_signature_diff(stable: dict[str, Any], candidate: dict[str, Any], diff: list[str]) -> None:
    assert signature_diff(stable, candidate) == diff


# -- 7. history is never lost -------------------------------------------------------------------


def test_a_model_that_was_deployed_keeps_its_history(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    onnx_version(http, registry, "1.0")
    dep = serve(http, controller, "1.0", at=0)
    assert http.post(f"/api/v1/deployments/{dep['id']}/undeploy").status_code == 202
    for second in (10, 11, 12):
        controller.run_pass(now=T0 + timedelta(seconds=second))
    body = assert_problem(http.delete(f"/api/v1/models/{MODEL}"), 409, "isActive")
    assert body["suggestion"] == {"isActive": False}
    history = http.get(f"/api/v1/models/{MODEL}/history").json()
    assert any(e["kind"] == "promoted" for e in history["events"])
    assert http.get(f"/api/v1/deployments/{dep['id']}").status_code == 200
    retired = http.patch(f"/api/v1/models/{MODEL}", json={"isActive": False})
    assert retired.status_code == 200, retired.text


def test_the_validator_stores_the_signature_and_a_renamed_input_is_refused(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    """The whole path, with the real validation worker and real ONNX models: the stable takes
    ``x``, the candidate was re-exported with its input named ``input``."""
    from tests.support.onnx_models import add_model
    from validators.worker import ValidationWorker

    for number, input_name in (("1.0", "x"), ("2.0", "input")):
        make_version(http, MODEL, number, parameters={"dimensions": {"batch": 2}})
        model = add_model(input_name=input_name)
        assert upload(http, MODEL, number, model).status_code == 201
    worker = ValidationWorker(registry)
    while worker.run_once():
        pass
    stable = http.get(f"/api/v1/models/{MODEL}/versions/1.0").json()
    assert stable["signature"]["inputs"] == [
        {"name": "x", "type": "tensor(float)", "shape": ["batch", 4]}
    ]
    serve(http, controller, "1.0", at=0)
    body = assert_problem(deploy(http, "2.0"), 409)
    assert any(c.startswith("signature") for c in body["failedChecks"])
    assert "input 'x' is gone" in body["signatureDiff"]
    assert weights(registry) == {"1.0": 100}

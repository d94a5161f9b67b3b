"""What a user reads of a run: one id for the run and its result, and the phase the worker is
in while it works."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.services import Registry
from tests.support.helpers import make_model, make_version, upload
from tests.support.onnx_models import add_model
from validators.worker import _HOST, SCRATCH_PREFIX, ValidationWorker


def phase_then_wait(**kwargs: Any) -> None:
    """A child that says it is benchmarking, then waits for the test's go-ahead."""
    output: Path = kwargs["output"]
    output.with_name("phase").write_text("benchmark")
    go = output.with_name("go")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    passed = {"status": "Passed", "findings": []}
    output.write_text(
        json.dumps(
            {
                "securityStatus": "Passed",
                "functionalStatus": "Passed",
                "security": passed,
                "functional": passed,
                "benchmark": None,
            }
        )
    )


@pytest.fixture
def model(http: httpx.Client) -> str:
    make_model(http, "m")
    return "m"


def _runs(http: httpx.Client) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = http.get("/api/v1/models/m/versions/1.0/validations").json()
    return runs


def test_a_run_and_its_result_have_one_id(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    assert ValidationWorker(registry).run_once()

    (run,) = _runs(http)
    assert run["result"]["id"] == run["id"]
    version = http.get("/api/v1/models/m/versions/1.0").json()
    assert version["validationResultId"] == run["id"]
    assert version["validation"]["validationId"] == run["id"]
    assert http.get(f"/api/v1/validations/{run['id']}").json()["id"] == run["id"]


def test_the_worker_records_the_phase_while_the_child_works(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    (queued,) = _runs(http)
    assert queued["phase"] is None
    worker = ValidationWorker(registry, child_entry=phase_then_wait)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    try:
        phase = None
        deadline = time.monotonic() + 60
        while phase != "benchmark" and time.monotonic() < deadline:
            time.sleep(0.1)
            phase = http.get(f"/api/v1/validations/{queued['id']}").json()["phase"]
        assert phase == "benchmark"
    finally:
        pattern = f"{SCRATCH_PREFIX}_{_HOST}_{os.getpid()}_*"
        for scratch in Path(tempfile.gettempdir()).glob(pattern):
            (scratch / "go").touch()
        thread.join(timeout=120)
    done = http.get(f"/api/v1/validations/{queued['id']}").json()
    assert done["status"] == "Done"
    assert done["phase"] is None


def test_a_joblib_estimator_is_loaded_and_run_by_the_real_child(
    http: httpx.Client, model: str, registry: Registry, tmp_path: Path
) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).standard_normal((40, 3))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), tmp_path / "m.joblib")
    make_version(http, model, "1.0", format="Joblib")
    upload(http, model, "1.0", (tmp_path / "m.joblib").read_bytes(), filename="m.joblib")
    assert ValidationWorker(registry).run_once()

    (run,) = _runs(http)
    result = run["result"]
    assert (result["securityScanStatus"], result["functionalStatus"]) == ("Passed", "Passed")
    assert result["results"]["functional"]["loaded"]["predict"]["inputShape"] == [1, 3]
    transition = http.post(
        "/api/v1/models/m/versions/1.0/transitions", json={"status": "Production"}
    )
    assert transition.status_code == 200, transition.text


def test_a_torch_state_dict_is_loaded_by_the_real_child_or_skipped_saying_why(
    http: httpx.Client, model: str, registry: Registry, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "w.pt")
    make_version(http, model, "1.0", format="PyTorch")
    upload(http, model, "1.0", (tmp_path / "w.pt").read_bytes(), filename="w.pt")
    assert ValidationWorker(registry).run_once()

    (run,) = _runs(http)
    result = run["result"]
    functional = result["results"]["functional"]
    assert result["securityScanStatus"] == "Passed"
    if result["functionalStatus"] == "Skipped":  # torch would not import under the limits
        assert "torch" in functional["reason"]
    else:
        assert result["functionalStatus"] == "Passed", functional
        assert functional["loaded"]["parameterCount"] == 4

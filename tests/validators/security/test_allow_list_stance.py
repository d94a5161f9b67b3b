"""The default stance on what a pickle calls is an allow-list (issue 16, item 7): a callable
off the list is at least HIGH and named, whatever it is, so a gadget nobody has listed yet
still fails the scan. The benign set is made here with the real libraries and must stay
clean. Payloads are inert; nothing is ever unpickled.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

from tests.support import corpus_pickle as corpus
from validators.report import Finding, Severity
from validators.security import scan_artifact
from validators.security.pickle import scan_pickle
from validators.security.policy import DEFAULT_POLICY


def _scan(data: bytes) -> list[Finding]:
    return scan_pickle(io.BytesIO(data), location="m.pkl", policy=DEFAULT_POLICY)


# -- gadgets a deny-list missed ------------------------------------------------------------------

GADGETS = [
    ("_pyrepl.pager", "pipe_pager"),
    ("mailcap", "findmatch"),
    ("pexpect", "run"),
    ("pexpect", "spawn"),
    ("joblib.externals.cloudpickle", "loads"),
    ("joblib.externals.loky.backend.popen_loky_posix", "Popen"),
    ("_frozen_importlib", "_gcd_import"),
    ("_frozen_importlib_external", "SourceFileLoader"),
    ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
]


@pytest.mark.parametrize(("module", "name"), GADGETS, ids=[f"{m}.{n}" for m, n in GADGETS])
def test_a_published_gadget_is_critical(module: str, name: str) -> None:
    for data in (
        corpus.call_global(module, name, protocol=0),
        corpus.call_global(module, name, protocol=2),
        corpus.stack_global_call(module, name),
    ):
        assert any(f.severity is Severity.CRITICAL for f in _scan(data)), (module, name)


def test_the_pickle_basichandlers_unpickles_is_scanned_too() -> None:
    inner = corpus.call_global("os", "system", "true", protocol=2)
    data = (
        corpus.proto(2)
        + corpus.glob("torch.utils.data.datapipes.utils.decoder", "basichandlers")
        + corpus.MARK + corpus.sbu("pickle") + corpus.binbytes(inner) + corpus.TUPLE
        + corpus.REDUCE + corpus.STOP
    )  # fmt: skip
    embedded = [f for f in _scan(data) if "in an embedded pickle" in f.message]
    assert any(f.severity is Severity.CRITICAL and "os.system" in f.message for f in embedded)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("somewhere_new.gadgets", "run_anything"),
        ("numpy.testing._private.utils", "runstring"),  # below a listed module: CRITICAL
        ("idna.codec", "Codec"),
    ],
)
def test_any_callable_off_the_allow_list_fails_the_scan(module: str, name: str) -> None:
    findings = _scan(corpus.call_global(module, name, protocol=2))
    assert any(DEFAULT_POLICY.fails(f.severity) for f in findings)
    assert any(f"{module}.{name}" in f.message for f in findings)


def test_an_allowed_prefix_does_not_allow_an_attribute_path_below_it() -> None:
    # sklearn.* classes are allowed; a method reached through one is not
    data = corpus.call_global("sklearn.base", "BaseEstimator.__reduce_ex__", protocol=4)
    assert any(DEFAULT_POLICY.fails(f.severity) for f in _scan(data))
    data = corpus.call_global("sklearn.linear_model._base", "LinearRegression.fit", protocol=4)
    assert any(DEFAULT_POLICY.fails(f.severity) for f in _scan(data))


# -- the benign set, from the real libraries ----------------------------------------------------


def _sklearn() -> dict[str, Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x = np.random.default_rng(0).random((40, 4))
    y = (x[:, 0] > 0.5).astype(int)
    return {
        "pipeline": Pipeline([("s", StandardScaler()), ("lr", LogisticRegression())]).fit(x, y),
        "forest": RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
        "boosting": GradientBoostingClassifier(n_estimators=3, random_state=0).fit(x, y),
        "tfidf": TfidfVectorizer().fit(["alpha beta gamma", "beta gamma delta"]),
        "columns": ColumnTransformer([("oh", OneHotEncoder(), [0])]).fit([["a"], ["b"]]),
    }


def _boosters() -> dict[str, Any]:
    x = np.random.default_rng(1).random((40, 4))
    y = (x[:, 0] > 0.5).astype(int)
    made: dict[str, Any] = {}
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    made["xgboost"] = xgboost.XGBClassifier(n_estimators=3).fit(x, y)
    made["xgboost-booster"] = made["xgboost"].get_booster()
    made["lightgbm"] = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
    made["lightgbm-booster"] = made["lightgbm"].booster_
    return made


def _randomness() -> dict[str, Any]:
    return {
        "numpy-legacy-state": np.random.get_state(),
        "numpy-generator": np.random.default_rng(2),
        "numpy-randomstate": np.random.RandomState(2),
        "python-random-state": random.getstate(),
    }


def _torch_checkpoint() -> dict[str, Any]:
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "epoch": 3,
        "whole_optimizer": optimizer,
        "whole_scheduler": scheduler,
    }


def _pickled(obj: object, path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


WRITERS: dict[str, Callable[[object, Path], None]] = {
    "pickle": _pickled,
    "joblib": lambda obj, path: joblib.dump(obj, path),
    "joblib-zlib": lambda obj, path: joblib.dump(obj, path, compress=("zlib", 3)),
    "joblib-xz": lambda obj, path: joblib.dump(obj, path, compress=("xz", 3)),
}


@pytest.fixture(scope="module")
def benign_objects() -> dict[str, Any]:
    return {**_sklearn(), **_boosters(), **_randomness()}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_real_ml_objects_scan_clean(
    tmp_path: Path, benign_objects: dict[str, Any], writer: str
) -> None:
    for name, obj in benign_objects.items():
        path = tmp_path / f"{name}.{writer}"
        WRITERS[writer](obj, path)
        report = scan_artifact(path)
        assert report.verdict == "clean", (name, [f.to_dict() for f in report.findings])
        assert not [f for f in report.findings if f.severity >= Severity.MEDIUM], name


def test_a_real_torch_training_checkpoint_scans_clean(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(_torch_checkpoint(), path)
    report = scan_artifact(path)
    assert report.verdict == "clean", [f.to_dict() for f in report.findings]
    assert not [f for f in report.findings if f.severity >= Severity.MEDIUM]
    legacy = tmp_path / "legacy.pt"
    torch.save(_torch_checkpoint(), legacy, _use_new_zipfile_serialization=False)
    assert scan_artifact(legacy).verdict == "clean"

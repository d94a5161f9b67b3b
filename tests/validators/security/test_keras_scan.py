"""Keras models, read as data: real Keras 3 saves pass, hand-made payloads are caught, hostile
files give findings and never an exception. No model is ever loaded back."""

from __future__ import annotations

import base64
import json
import marshal
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.formats import H5_MAGIC, looks_like_h5
from validators.report import Finding, Severity
from validators.security.keras_scan import (
    MAX_CONFIG_BYTES,
    MAX_FINDINGS_PER_RULE,
    is_keras_zip,
    scan_h5,
    scan_keras_config,
    scan_keras_zip,
)

# -- real Keras 3 models (torch backend), built once for the module ----------------------------


@pytest.fixture(scope="module")
def keras(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    pytest.importorskip("torch", reason="PyTorch is not installed (Keras's backend here)")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KERAS_BACKEND", "torch")
        env.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras-home")))
        module: ModuleType = pytest.importorskip("keras")
    assert module.backend.backend() == "torch"
    return module


@pytest.fixture(scope="module")
def saved(keras: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real models saved as ``.keras`` and legacy ``.h5``: plain ones, and one with a Lambda."""
    layers = keras.layers
    out = tmp_path_factory.mktemp("keras-models")
    sequential = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, activation="relu", kernel_regularizer="l2"),
            layers.BatchNormalization(),
            layers.Dropout(0.2),
            layers.Dense(2, activation="softmax"),
        ]
    )
    sequential.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    inputs = keras.Input((6, 4))
    x = layers.Bidirectional(layers.LSTM(4, return_sequences=True))(inputs)
    x = layers.TimeDistributed(layers.Dense(3, kernel_initializer="he_normal"))(x)
    x = layers.Conv1D(2, 3, activation="tanh")(x)
    x = layers.BatchNormalization()(x)
    x = keras.Sequential([keras.Input((4, 2)), layers.Dense(5), layers.Dropout(0.1)])(x)
    functional = keras.Model(inputs, layers.Dense(1)(x))
    functional.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.MeanAbsoluteError(), "mse"],
    )

    with_lambda = keras.Sequential([keras.Input((3,)), layers.Lambda(lambda v: v * 2)])
    paths: dict[str, Path] = {}
    for name, model in (
        ("sequential", sequential),
        ("functional", functional),
        ("lambda", with_lambda),
    ):
        for suffix in ("keras", "h5"):
            paths[f"{name}.{suffix}"] = out / f"{name}.{suffix}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns about the Lambda and about H5
                model.save(paths[f"{name}.{suffix}"])
    return paths


def _scan(path: Path, **limits: int) -> list[Finding]:
    scan = scan_h5 if path.suffix == ".h5" else scan_keras_zip
    return scan(path, location=path.name, **limits)


@pytest.mark.parametrize(
    "name", ["sequential.keras", "sequential.h5", "functional.keras", "functional.h5"]
)
def test_real_builtin_models_have_no_finding(saved: dict[str, Path], name: str) -> None:
    assert _scan(saved[name]) == []


def test_real_files_are_recognised(saved: dict[str, Path], tmp_path: Path) -> None:
    with zipfile.ZipFile(saved["functional.keras"]) as archive:
        assert is_keras_zip(archive.namelist())
        weights = tmp_path / "model.weights.h5"
        weights.write_bytes(archive.read("model.weights.h5"))
    assert looks_like_h5(saved["functional.h5"].read_bytes()[:4096])
    assert looks_like_h5(weights.read_bytes()[:4096])
    # a weights file holds no config: nothing there is deserialized
    assert scan_h5(weights, location="model.weights.h5") == []


@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_real_lambda_model_is_caught(saved: dict[str, Path], suffix: str) -> None:
    path = saved[f"lambda.{suffix}"]
    document = "config.json" if suffix == "keras" else "model_config"
    findings = _scan(path)
    assert [(f.severity, f.rule_id, f.location) for f in findings] == [
        (Severity.CRITICAL, "keras.lambda", f"{path.name}:{document}#layers[1](lambda)")
    ]
    assert "bytecode" in findings[0].message


# -- hand-made payloads, from the public descriptions of the format -----------------------------

LAMBDA_CODE = base64.b64encode(marshal.dumps((lambda v: v).__code__)).decode()


def _obj(class_name: str, module: str | None = "keras.layers", **config: Any) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _dense(name: str = "dense", **config: Any) -> dict[str, Any]:
    return _obj("Dense", name=name, units=2, **config)


def _lambda(name: str = "evil") -> dict[str, Any]:
    code = {"code": LAMBDA_CODE, "defaults": None, "closure": None}
    return _obj("Lambda", name=name, function={"class_name": "__lambda__", "config": code})


def _sequential(name: str, *layers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**_obj("Sequential", "keras", name=name, layers=list(layers)), **extra}


def _fn(module: str, name: str) -> dict[str, Any]:
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


def _with_registered(obj: dict[str, Any], registered: str) -> dict[str, Any]:
    return {**obj, "registered_name": registered}


# Legacy (Keras 2 / tf.keras) configs name classes only and keep a Lambda's code in a list.
LEGACY_LAMBDA = {
    "class_name": "Sequential",
    "config": {
        "name": "legacy",
        "layers": [
            {"class_name": "Dense", "config": {"name": "dense", "units": 2}},
            {
                "class_name": "Lambda",
                "config": {
                    "name": "old_lambda",
                    "function": [LAMBDA_CODE, None, None],
                    "function_type": "lambda",
                    "module": "__main__",
                    "arguments": {},
                },
            },
        ],
    },
}

PAYLOADS = [
    pytest.param(
        _sequential("s", _dense(), _lambda()),
        "keras.lambda",
        "layers[1](evil)",
        "bytecode",
        id="lambda-layer",
    ),
    pytest.param(
        _sequential("s", _obj("system", "os", name="pwn")),
        "keras.custom-object",
        "layers[0](pwn)",
        "os.system",
        id="module-os-system",
    ),
    pytest.param(
        _sequential("s", _with_registered(_dense(), "MyPackage>Evil")),
        "keras.custom-object",
        "layers[0](dense)",
        "MyPackage>Evil",
        id="custom-registered-name",
    ),
    pytest.param(
        _sequential("outer", _dense(), _sequential("inner", _dense("d2"), _lambda("deep"))),
        "keras.lambda",
        "layers[1](inner)/layers[1](deep)",
        "Lambda",
        id="lambda-in-nested-model",
    ),
    pytest.param(
        _sequential("s", _obj("Bidirectional", name="bidi", layer=_lambda("fwd"))),
        "keras.lambda",
        "layers[0](bidi)/layer(fwd)",
        "Lambda",
        id="lambda-in-bidirectional",
    ),
    pytest.param(
        _sequential("s", _obj("TimeDistributed", name="td", layer=_lambda("step"))),
        "keras.lambda",
        "layers[0](td)/layer(step)",
        "Lambda",
        id="lambda-in-time-distributed",
    ),
    pytest.param(
        _sequential("s", _dense(activation=_fn("subprocess", "run"))),
        "keras.custom-object",
        "layers[0](dense)/activation",
        "subprocess.run",
        id="activation-from-subprocess",
    ),
    pytest.param(
        _sequential("s", _dense(kernel_initializer=_obj("Evil", "evil_pkg.init"))),
        "keras.custom-object",
        "layers[0](dense)/kernel_initializer",
        "evil_pkg.init.Evil",
        id="custom-initializer",
    ),
    pytest.param(
        _sequential("s", _dense(activation={"class_name": "__lambda__", "config": {}})),
        "keras.lambda",
        "layers[0](dense)/activation",
        "__lambda__",
        id="lambda-bytecode-as-activation",
    ),
    pytest.param(
        _sequential("s", _dense(), compile_config={"optimizer": _obj("Adam", "mypkg.opt")}),
        "keras.custom-object",
        "compile_config/optimizer",
        "mypkg.opt.Adam",
        id="custom-optimizer",
    ),
    pytest.param(
        _sequential("s", _dense(), compile_config={"metrics": [_fn("builtins", "eval")]}),
        "keras.custom-object",
        "compile_config/metrics[0]",
        "builtins.eval",
        id="metric-builtins-eval",
    ),
    pytest.param(
        _sequential("s", _dense(activation=_fn("keras.utils", "get_file"))),
        "keras.unsafe-api",
        "layers[0](dense)/activation",
        "keras.utils.get_file",
        id="keras-get-file-gadget",
    ),
    pytest.param(
        _sequential("s", _dense(), _obj("MyLayer", None, name="mine")),
        "keras.custom-object",
        "layers[1](mine)",
        "__main__",
        id="module-null",
    ),
    pytest.param(
        LEGACY_LAMBDA, "keras.lambda", "layers[1](old_lambda)", "legacy", id="legacy-lambda"
    ),
    pytest.param(
        {"class_name": "Sequential", "config": {"layers": [{"class_name": "MyPackage>MyLayer"}]}},
        "keras.custom-object",
        "layers[0]",
        "MyPackage",
        id="legacy-registered-class",
    ),
]


def _keras_zip(path: Path, config: bytes, **members: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _h5(path: Path, **attrs: Any) -> Path:
    with h5py.File(path, "w") as h5:
        h5.create_group("model_weights")
        for name, value in attrs.items():
            h5.attrs[name] = value
    return path


Writer = Callable[[Path, bytes], Path]
CONTAINERS = [
    pytest.param(lambda d, c: _keras_zip(d / "m.keras", c), "m.keras:config.json", id="keras"),
    pytest.param(
        lambda d, c: _h5(d / "m.h5", model_config=c.decode()), "m.h5:model_config", id="h5"
    ),
    pytest.param(lambda d, c: _h5(d / "m.h5", model_config=c), "m.h5:model_config", id="h5-bytes"),
]


@pytest.mark.parametrize(("write", "document"), CONTAINERS)
@pytest.mark.parametrize(("config", "rule", "path", "says"), PAYLOADS)
def test_payload_is_caught(
    tmp_path: Path,
    write: Writer,
    document: str,
    config: dict[str, Any],
    rule: str,
    path: str,
    says: str,
) -> None:
    findings = _scan(write(tmp_path, json.dumps(config).encode()))
    assert [(f.rule_id, f.location) for f in findings] == [(rule, f"{document}#{path}")]
    assert says in findings[0].message
    expected = Severity.HIGH if rule == "keras.custom-object" else Severity.CRITICAL
    assert findings[0].severity == expected


def test_lambda_calling_a_custom_function_reports_both(tmp_path: Path) -> None:
    layer = _obj("Lambda", name="call", function=_fn("os", "system"))
    findings = scan_keras_config(json.dumps(_sequential("s", layer)).encode(), location="c")
    assert [(f.severity, f.rule_id, f.location) for f in findings] == [
        (Severity.CRITICAL, "keras.lambda", "c#layers[0](call)"),
        (Severity.HIGH, "keras.custom-object", "c#layers[0](call)/function"),
    ]
    assert "os.system" in findings[0].message


def test_custom_loss_in_h5_training_config(tmp_path: Path) -> None:
    training = {"loss": _obj("Evil", "evil.losses"), "optimizer_config": _obj("Adam", None)}
    path = _h5(
        tmp_path / "m.h5",
        model_config=json.dumps(_sequential("s", _dense())),
        training_config=json.dumps(training),
    )
    findings = scan_h5(path, location="m.h5")
    assert [(f.rule_id, f.location) for f in findings] == [
        ("keras.custom-object", "m.h5:training_config#loss"),
        ("keras.custom-object", "m.h5:training_config#optimizer_config"),
    ]


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(_fn("keras.activations", "relu"), id="keras-function"),
        pytest.param(
            {**_fn("builtins", "relu"), "registered_name": "function"}, id="keras36-function"
        ),
        pytest.param(_with_registered(_obj("SGD", "keras.optimizers"), "SGD"), id="same-name"),
        pytest.param(_with_registered(_dense(), "keras>Dense"), id="keras-registered-name"),
        pytest.param(_obj("GlorotUniform", "tf_keras.initializers"), id="tf-keras"),
        pytest.param(_obj("Zeros", "tensorflow.keras.initializers"), id="tensorflow-keras"),
        pytest.param(_obj("L2", "keras.src.regularizers.regularizers"), id="keras-src"),
        pytest.param({"class_name": "__keras_tensor__", "config": {"shape": [1]}}, id="tensor"),
        pytest.param({"class_name": "Dense", "config": {"units": 1}}, id="legacy-builtin"),
    ],
)
def test_builtin_objects_pass(obj: dict[str, Any]) -> None:
    config = _sequential("s", _dense(activation=obj))
    assert scan_keras_config(json.dumps(config).encode(), location="c") == []


def test_findings_per_rule_are_capped() -> None:
    config = _sequential("s", *(_lambda(f"l{i}") for i in range(MAX_FINDINGS_PER_RULE + 5)))
    findings = scan_keras_config(json.dumps(config).encode(), location="c")
    assert len(findings) == MAX_FINDINGS_PER_RULE + 1
    assert findings[-1].rule_id == "keras.lambda"
    assert findings[-1].severity is Severity.CRITICAL
    assert "5 more" in findings[-1].message


# -- hostile files: a clear finding, never an exception ----------------------------------------


def _deep(levels: int) -> bytes:
    return b'{"a": ' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize(
    ("config", "says"),
    [
        pytest.param(b'{"class_name": "Seq', "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "array, not an object", id="not-an-object"),
        pytest.param(_deep(1000), "nest", id="1000-deep"),
        pytest.param(_deep(150), "deeper than", id="150-deep"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, "nest", id="200000-deep"),
        pytest.param(b'{"class_name": ["Lambda"]}', "not a string", id="class-name-list"),
        pytest.param(b'{"class_name": "Dense", "module": 7}', "not a string", id="module-int"),
    ],
)
@pytest.mark.parametrize(("write", "document"), CONTAINERS)
def test_malformed_config(
    tmp_path: Path, write: Writer, document: str, config: bytes, says: str
) -> None:
    findings = _scan(write(tmp_path, config))
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.HIGH, "keras.malformed")]
    assert findings[0].location.startswith(document)
    assert says in findings[0].message


@pytest.mark.parametrize(("write", "document"), [CONTAINERS[0], CONTAINERS[2]])
def test_config_not_utf8(tmp_path: Path, write: Writer, document: str) -> None:
    # (an H5 str attribute holds UTF-8 only: the bytes kind is the one that can carry these)
    findings = _scan(write(tmp_path, b'{"a": "\xff\xfe"}'))
    assert [(f.rule_id, f.location) for f in findings] == [("keras.malformed", document)]
    assert "UTF-8" in findings[0].message


def _bounded(scan: Callable[[], list[Finding]]) -> tuple[list[Finding], int, float]:
    """The findings, the peak of Python allocations and the seconds a scan took."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        findings = scan()
        return findings, tracemalloc.get_traced_memory()[1], time.monotonic() - started
    finally:
        tracemalloc.stop()


def test_huge_config_json_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("metadata.json", "{}")
        with archive.open("config.json", "w") as member:
            chunk = b" " * (1024 * 1024)
            for _ in range(MAX_CONFIG_BYTES // len(chunk)):
                member.write(chunk)
            member.write(b"{}")  # one byte over, after 64 MiB of whitespace
    assert path.stat().st_size < 1024 * 1024
    findings, peak, seconds = _bounded(lambda: scan_keras_zip(path, location="m.keras"))
    assert [(f.severity, f.rule_id, f.location) for f in findings] == [
        (Severity.HIGH, "limit.keras_config", "m.keras:config.json")
    ]
    assert str(MAX_CONFIG_BYTES + 2) in findings[0].message
    assert peak < 4 * 1024 * 1024
    assert seconds < 1


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(b"PK\x03\x04 not really a zip", "cannot be read", id="broken-zip"),
        pytest.param(b"", "cannot be read", id="empty"),
    ],
)
def test_unreadable_zip(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "m.keras"
    path.write_bytes(data)
    findings = scan_keras_zip(path, location="m.keras")
    assert [(f.severity, f.rule_id, f.location) for f in findings] == [
        (Severity.HIGH, "keras.malformed", "m.keras")
    ]
    assert says in findings[0].message


def test_zip_without_config_json(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("model/config.json", "{}")
    assert not is_keras_zip(["metadata.json", "model/config.json"])
    findings = scan_keras_zip(path, location="m.keras")
    assert [f.rule_id for f in findings] == ["keras.malformed"]


def test_every_config_json_of_a_zip_is_scanned(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    benign = json.dumps(_sequential("s", _dense())).encode()
    evil = json.dumps(_sequential("s", _lambda())).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        _keras_zip(path, evil, **{"config.json": benign})
    assert [f.rule_id for f in scan_keras_zip(path, location="m.keras")] == ["keras.lambda"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(H5_MAGIC + b"\0\0\0\0\0\x08\x08\0" + b"garbage" * 9, "h5py", id="truncated"),
        pytest.param(b"not hdf5 at all" * 100, "signature", id="not-hdf5"),
        pytest.param(b"", "h5py", id="empty"),
    ],
)
def test_unreadable_h5(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "m.h5"
    path.write_bytes(data)
    findings = scan_h5(path, location="m.h5")
    assert [(f.severity, f.rule_id, f.location) for f in findings] == [
        (Severity.HIGH, "keras.h5.malformed", "m.h5")
    ]
    assert "Unable to" in findings[0].message  # h5py's own words
    assert says in findings[0].message


def test_truncated_real_h5(saved: dict[str, Path], tmp_path: Path) -> None:
    data = saved["functional.h5"].read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 3])
    findings = scan_h5(path, location="cut.h5")
    assert findings
    assert {f.rule_id for f in findings} <= {"keras.h5.malformed", "keras.malformed"}
    assert all(f.severity is Severity.HIGH for f in findings)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param(np.int64(7), "not a string", id="int"),
        pytest.param(np.arange(4), "not a string", id="int-array"),
        pytest.param(np.array([b"{}", b"{}"]), "array of shape (2,)", id="string-array"),
        pytest.param(np.array([1.5]), "not a string", id="float-array"),
    ],
)
def test_h5_model_config_not_a_string(tmp_path: Path, value: Any, says: str) -> None:
    findings = scan_h5(_h5(tmp_path / "m.h5", model_config=value), location="m.h5")
    assert [(f.severity, f.rule_id, f.location) for f in findings] == [
        (Severity.HIGH, "keras.malformed", "m.h5:model_config")
    ]
    assert says in findings[0].message


def test_h5_fixed_length_config_over_the_limit(tmp_path: Path) -> None:
    config = json.dumps(_sequential("s", _dense())).encode().ljust(8000)
    path = _h5(tmp_path / "m.h5", model_config=np.bytes_(config))
    findings = scan_h5(path, location="m.h5", max_config_bytes=4096)
    assert [(f.rule_id, f.location) for f in findings] == [
        ("limit.keras_config", "m.h5:model_config")
    ]
    assert "8000 bytes" in findings[0].message
    assert scan_h5(path, location="m.h5", max_config_bytes=8000) == []


def test_h5_variable_length_config_over_the_limit(tmp_path: Path) -> None:
    layers = [_dense(f"dense_{i}") for i in range(400)]
    config = json.dumps(_sequential("s", *layers))
    assert len(config) > 32 * 1024
    path = _h5(tmp_path / "m.h5", model_config=config)
    findings = scan_h5(path, location="m.h5", max_config_bytes=16384)
    assert [(f.rule_id, f.location) for f in findings] == [
        ("limit.keras_config", "m.h5:model_config")
    ]
    assert "global heap" in findings[0].message
    assert scan_h5(path, location="m.h5") == []


def test_h5_small_config_in_a_big_file_is_read(tmp_path: Path) -> None:
    path = _h5(tmp_path / "m.h5", model_config=json.dumps(_sequential("s", _lambda())))
    with h5py.File(path, "a") as h5:
        h5["model_weights"].create_dataset("kernel", data=np.zeros(64 * 1024))
    assert path.stat().st_size > 65536
    findings = scan_h5(path, location="m.h5", max_config_bytes=65536)
    assert [f.rule_id for f in findings] == ["keras.lambda"]


def test_h5_config_that_is_not_json(tmp_path: Path) -> None:
    findings = scan_h5(_h5(tmp_path / "m.h5", model_config="{not json"), location="m.h5")
    assert [(f.rule_id, f.location) for f in findings] == [("keras.malformed", "m.h5:model_config")]


# -- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(H5_MAGIC + b"\0" * 8, True, id="at-0"),
        pytest.param(b"\0" * 512 + H5_MAGIC, True, id="at-512"),
        pytest.param(b"\0" * 2048 + H5_MAGIC, True, id="at-2048"),
        pytest.param(b"\0" * 100 + H5_MAGIC, False, id="at-100"),
        pytest.param(b"\0" * 512 + H5_MAGIC[:4], False, id="cut-at-512"),
        pytest.param(H5_MAGIC[:7], False, id="too-short"),
        pytest.param(b"", False, id="empty"),
    ],
)
def test_looks_like_h5(head: bytes, expected: bool) -> None:
    assert looks_like_h5(head) is expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(["metadata.json", "config.json", "model.weights.h5"], True, id="keras"),
        pytest.param(["config.json", "metadata.json"], True, id="no-weights"),
        pytest.param(["config.json"], False, id="no-metadata"),
        pytest.param(["archive/data.pkl", "archive/version"], False, id="torch"),
        pytest.param(["m/config.json", "m/metadata.json"], False, id="not-at-root"),
    ],
)
def test_is_keras_zip(names: list[str], expected: bool) -> None:
    assert is_keras_zip(names) is expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["class_name", "module", "registered_name", "config", "layers", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_gives_findings_and_never_raises(document: object) -> None:
    findings = scan_keras_config(json.dumps(document).encode(), location="c")
    assert all(isinstance(f, Finding) and f.location.startswith("c") for f in findings)

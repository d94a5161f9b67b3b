"""A labelled corpus of model files in every format issue 16 names, for ``bench.scan_compare``.

``write_format_corpus(root)`` writes each sample under ``root`` (a file, or a folder for a
SavedModel) and returns its name and whether it is malicious. The malicious samples follow
the public descriptions of each bypass class (pickle header tricks, object arrays, compressed
and irregular containers, Keras, SavedModel, TorchScript, gadgets a deny-list missed,
framing); their payloads are inert (``os.system("true")``). The benign samples are made with
the real libraries (scikit-learn, xgboost, lightgbm, joblib with every compressor, torch
checkpoints and TorchScript, Keras on the torch backend, real TensorFlow SavedModels from the
test fixtures). Nothing here ever loads a sample.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import corpus_pickle as corpus

SAVED_MODELS = Path(__file__).parent.parent / "validators" / "security" / "fixtures" / "savedmodel"
PAYLOAD_V0 = b"cos\nsystem\n(S'true'\ntR"


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("true",))


def _torch_zip(path: Path, data_pkl: bytes, *, extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)


def _npy(descr: object, body: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def _patched_zip(payload: bytes, patch: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    data = bytearray(buffer.getvalue())
    if patch == "bad-crc":
        data[14:18] = b"\0\0\0\0"  # the local header's CRC
        central = data.find(b"PK\x01\x02")
        data[central + 16 : central + 20] = b"\0\0\0\0"
    elif patch == "name-mismatch":
        data[30 : 30 + len("archive/data.pkl")] = b"archive/xxxx.pkl"
    else:
        flag = {"flag-0x1": 0x1, "flag-0x20": 0x20, "flag-0x40": 0x40}[patch]
        data[6] |= flag
        central = data.find(b"PK\x01\x02")
        data[central + 8] |= flag
    return bytes(data)


def _keras_zip(path: Path, config: dict[str, Any]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))


def _sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2}}
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "seq", "layers": [dense, *layers]},
    }


def _h5(path: Path, config: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)


def _torchscript(path: Path, *, inject: str | None = None) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model.eval()), path)
    if inject is None:
        return
    clean = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(clean)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("container.py"):
                head, sep, tail = data.decode().partition("    input: Tensor) -> Tensor:\n")
                data = (head + sep + inject + tail).encode()
            dst.writestr(info, data)


def _malicious(root: Path) -> list[str]:
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        written.append(name)

    def make(name: str, writer: Callable[[Path], None]) -> None:
        writer(root / name)
        written.append(name)

    # 1. header tricks
    put("proto0-header.pkl", b"\x80\x00" + PAYLOAD_V0 + b".")
    put("proto1-header.pkl", b"\x80\x01" + PAYLOAD_V0 + b".")
    long_first = b"X" + struct.pack("<I", 5000) + b"a" * 5000 + b"0" + PAYLOAD_V0 + b"."
    put("long-first-opcode.pkl", long_first)
    make("proto0-in-torch-zip.pt", lambda p: _torch_zip(p, b"\x80\x00" + PAYLOAD_V0 + b"."))
    make("long-first-opcode-in-torch-zip.pt", lambda p: _torch_zip(p, long_first))
    # 2. object arrays, whatever the spelling
    evil = pickle.dumps(_Evil(), protocol=2)
    for spelling, descr in {"O": "O", "pipe-O": "|O", "object": "object"}.items():
        put(f"object-array-{spelling}.npy", _npy(descr, evil))
    put("object-array-structured.npy", _npy([("a", "<f4"), ("b", "|O")], evil))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("x.npy", _npy("object", evil))
    put("object-array.npz", buffer.getvalue())
    # 3. compression and containers
    import joblib

    for codec in ("zlib", "bz2", "lzma", "xz", "gzip"):
        make(f"joblib-{codec}.joblib", lambda p, c=codec: joblib.dump(_Evil(), p, compress=(c, 3)))
    import py7zr

    def seven(path: Path) -> None:
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as zf:
            zf.writestr("archive/data.pkl", evil)
            zf.writestr("archive/version", "3\n")
        with py7zr.SevenZipFile(path, "w") as archive:
            archive.writestr(inner.getvalue(), "model.pt")

    make("nullifai-in-7z.7z", seven)
    for patch in ("bad-crc", "name-mismatch", "flag-0x1", "flag-0x20", "flag-0x40"):
        put(f"zip-{patch}.pt", _patched_zip(evil, patch))
    # 4. Keras
    lam = {"class_name": "Lambda", "config": {"name": "evil", "function": ["4wEA", None, None]}}
    custom = {"module": "os", "class_name": "system", "config": {"name": "x"}}
    make("keras-lambda.keras", lambda p: _keras_zip(p, _sequential(lam)))
    make("keras-custom-module.keras", lambda p: _keras_zip(p, _sequential(custom)))
    make("keras-lambda.h5", lambda p: _h5(p, _sequential(lam)))
    make("keras-custom-module.h5", lambda p: _h5(p, _sequential(custom)))
    # 5. SavedModel
    for fixture in sorted(SAVED_MODELS.iterdir()):
        if fixture.is_dir() and not fixture.name.startswith("benign_"):
            folder = root / f"savedmodel-{fixture.name}"
            folder.mkdir()
            shutil.copy(fixture / "saved_model.pb", folder / "saved_model.pb")
            written.append(folder.name)
    # 6. TorchScript that reaches outside
    make(
        "torchscript-from-file.pt",
        lambda p: _torchscript(p, inject='    _9 = torch.from_file("/etc/passwd", False, 9)\n'),
    )
    # 7. gadgets a deny-list missed
    for module, name in (
        ("_pyrepl.pager", "pipe_pager"),
        ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
        ("mailcap", "findmatch"),
        ("pexpect", "run"),
        ("pexpect", "spawn"),
        ("joblib.externals.cloudpickle", "loads"),
        ("_frozen_importlib", "_gcd_import"),
        ("not_listed_anywhere.tools", "run"),
    ):
        put(f"gadget-{module}.{name}.pkl", corpus.call_global(module, name, "true", protocol=2))
    # 9. framing
    call = b"\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."
    put("frame-ends-inside-an-opcode.pkl", b"\x80\x04\x95" + struct.pack("<Q", 5) + call)
    put("frame-longer-than-the-file.pkl", b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + call)
    return written


def _benign(root: Path) -> list[str]:
    import joblib
    import torch

    written: list[str] = []
    x = np.random.default_rng(0).random((40, 4))
    y = (x[:, 0] > 0.5).astype(int)
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    objects: dict[str, Any] = {
        "sklearn-pipeline": Pipeline([("s", StandardScaler()), ("lr", LogisticRegression())]).fit(
            x, y
        ),
        "sklearn-boosting": GradientBoostingClassifier(n_estimators=3).fit(x, y),
        "numpy-generator": np.random.default_rng(1),
    }
    try:
        import lightgbm
        import xgboost

        objects["xgboost"] = xgboost.XGBClassifier(n_estimators=3).fit(x, y)
        objects["lightgbm"] = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
    except ImportError:
        pass
    for name, obj in objects.items():
        (root / f"{name}.pkl").write_bytes(pickle.dumps(obj, protocol=4))
        written.append(f"{name}.pkl")
        for codec in ("zlib", "bz2", "xz", "gzip"):
            joblib.dump(obj, root / f"{name}-{codec}.joblib", compress=(codec, 3))
            written.append(f"{name}-{codec}.joblib")
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    optimizer = torch.optim.AdamW(model.parameters())
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }
    torch.save(checkpoint, root / "torch-checkpoint.pt")
    torch.save(model, root / "torch-whole-module.pt")
    big = {f"layer{i}.weight": torch.randn(256, 256) for i in range(40)}
    torch.save(big, root / "torch-random-weights.pt")  # 40 storages of random floats
    _torchscript(root / "torchscript.pt")
    written += [
        "torch-checkpoint.pt",
        "torch-whole-module.pt",
        "torch-random-weights.pt",
        "torchscript.pt",
    ]
    written += _keras_benign(root)
    for fixture in sorted(SAVED_MODELS.iterdir()):
        if fixture.is_dir() and fixture.name.startswith("benign_"):
            folder = root / f"savedmodel-{fixture.name}"
            folder.mkdir()
            shutil.copy(fixture / "saved_model.pb", folder / "saved_model.pb")
            written.append(folder.name)
    return written


def _keras_benign(root: Path) -> list[str]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return []
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(optimizer="adam", loss="mse")
    model.save(root / "keras-model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(root / "keras-model.h5")
    return ["keras-model.keras", "keras-model.h5"]


def write_format_corpus(root: Path) -> dict[str, bool]:
    """Write the corpus under ``root``: file or folder name → malicious?"""
    labels = dict.fromkeys(_malicious(root), True)
    labels.update(dict.fromkeys(_benign(root), False))
    return labels

"""The functional check: does an ONNX artifact load, pass the ONNX checker and run on CPU?

``check_model(path, parameters=..., policy=...)`` validates the model, opens an onnxruntime
session (CPU only), feeds it deterministic random inputs generated from the declared input
types and shapes, and requires every output to have the declared element type and, for
floating-point outputs, only finite values. Optionally it also runs known test vectors.

Dynamic dimensions (a ``dim_param`` or no value) get their size from, in this order:

1. ``parameters["inputShapes"][input_name]``: the whole shape of that input, a list of ints;
2. ``parameters["dimensions"][dim_param]``: the size of a named dimension, e.g.
   ``{"batch": 4, "seq": 128}``;
3. the policy: ``batch_size`` for the first dimension, ``default_dim`` for the others.

An input whose rank is not declared at all is treated as a scalar unless ``inputShapes``
names its shape.

Test vectors: ``parameters["testVectors"]`` names an ``.npz`` file, relative to the bundle
directory ``path`` (a single model file has no bundle, and so no test vectors); it may not
leave that directory, also not through a symbolic link. It holds one array ``input:<name>``
for every model input and one array ``output:<name>`` for each output to compare (outputs it
does not name are not compared),
e.g. ``numpy.savez("vectors.npz", **{"input:x": x, "output:y": y})``. The model runs on the
``input:`` arrays and each named output must match with ``numpy.allclose(actual, expected,
rtol=policy.rtol, atol=policy.atol)``; the report gives the largest absolute error per output.
The file is read with ``allow_pickle=False``.

``make_inputs`` and ``open_session`` are shared with the benchmark (``validators.benchmark``).

The modules: ``policy`` (``FunctionalPolicy``), ``report`` (the report and ``CheckProblem``),
``session`` (locating the model and opening its session), ``inputs`` (generated inputs),
``inference`` (running the model, judging its outputs and the test vectors) and ``check``
(``check_model``).

This module never raises for a bad artifact: every problem becomes a :class:`Finding`, and any
unexpected exception becomes the finding ``functional.error``. onnx, onnxruntime and numpy are
imported only when a check runs.
"""

from __future__ import annotations

from validators.functional.check import check_model
from validators.functional.inputs import make_inputs
from validators.functional.policy import FunctionalPolicy
from validators.functional.report import CheckProblem, FunctionalReport, OutputComparison
from validators.functional.session import Session, open_session, resolve_model_file, tool_versions

__all__ = [
    "CheckProblem",
    "FunctionalPolicy",
    "FunctionalReport",
    "OutputComparison",
    "Session",
    "check_model",
    "make_inputs",
    "open_session",
    "resolve_model_file",
    "tool_versions",
]

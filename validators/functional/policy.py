"""How the functional check generates inputs and judges outputs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionalPolicy:
    """How inputs are generated and outputs judged."""

    #: Size of a dynamic first dimension (the batch) when the parameters do not name it.
    batch_size: int = 1
    #: Size of any other dynamic dimension when the parameters do not name it.
    default_dim: int = 1
    #: Generated floats are uniform in [low, high); integers are uniform in [low, high).
    float_range: tuple[float, float] = (0.0, 1.0)
    int_range: tuple[int, int] = (0, 4)
    seed: int = 0
    #: Refuse to generate more elements than this over all inputs (guards against OOM when a
    #: parameter asks for a huge shape).
    max_input_elements: int = 50_000_000
    rtol: float = 1e-3
    atol: float = 1e-5
    #: Cancel a run (``RunOptions.terminate``) after this many seconds; None: no limit.
    run_timeout_seconds: float | None = 120.0
    intra_op_threads: int | None = None
    test_vectors_key: str = "testVectors"

"""Replay: no counterexample is reported until the executors agree that it is one.

A witness is re-run on the exact reference executor and, for an imported model, on
onnxruntime's integer kernels. Any disagreement is a hard error, never a verdict: it
means an engine or the importer is wrong, and the user must hear that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitqnn.qnn import execute
from bitqnn.query import Query


class ReplayMismatch(RuntimeError):
    """A witness failed replay: an engine, the importer or a runtime disagrees."""


@dataclass(frozen=True)
class Replay:
    input: np.ndarray  # flat integers
    outputs: np.ndarray  # flat integer outputs on the reference executor
    onnxruntime_checked: bool


def check_on_executor(query: Query, witness: np.ndarray, engine: str) -> np.ndarray:
    """The witness's outputs on the reference executor; raises unless it is a real counterexample."""
    x = np.asarray(witness, dtype=np.int64).reshape(-1)
    if not query.region.contains(x):
        raise ReplayMismatch(f"{query.label}: engine {engine} returned a witness outside the region")
    outputs = execute(query.network, x)[0]
    if not query.violation.holds(outputs)[0]:
        raise ReplayMismatch(f"{query.label}: engine {engine} returned a witness that does not violate "
                             f"the property on the reference executor (outputs {outputs.tolist()})")
    return outputs


def replay(query: Query, witness: np.ndarray, engine: str) -> Replay:
    x = np.asarray(witness, dtype=np.int64).reshape(-1)
    outputs = check_on_executor(query, x, engine)
    checked = False
    if query.network.onnx_path is not None:
        from bitqnn.onnx_io import run_onnxruntime

        runtime = run_onnxruntime(query.network, x[None, :])[0]
        if not np.array_equal(runtime, outputs):
            raise ReplayMismatch(f"{query.label}: onnxruntime gives {runtime.tolist()} but the reference "
                                 f"executor gives {outputs.tolist()} on the witness")
        checked = True
    return Replay(x, outputs, checked)

"""Shared helpers for exporting scikit-learn ReLU MLPs to plain ONNX graphs.

The graph is built by hand with ``onnx.helper`` (rather than a converter) so
that the exported model contains exactly the ops the verifier is meant to
handle -- a chain of ``Gemm`` (transB=1) and ``Relu`` producing pre-softmax
logits -- and nothing else (no ZipMap, no ArgMax, no Softmax).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.neural_network import MLPClassifier

OPSET = 21
# IR version 10 is the one that introduced opset 21; onnxruntime 1.32 accepts it,
# whereas onnx 1.23's default IR (14) may be newer than some runtimes support.
IR_VERSION = 10
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def mlp_logits(clf: MLPClassifier, x: np.ndarray) -> np.ndarray:
    """Recompute the pre-softmax activations from ``coefs_``/``intercepts_``.

    sklearn only exposes probabilities, so the reference logits the ONNX graph
    must reproduce are computed here independently of the exporter.
    """
    h = x.astype(np.float64)
    last = len(clf.coefs_) - 1
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        h = h @ w + b
        if i < last:
            h = np.maximum(h, 0.0)
    return h


def _layer_nodes(
    i: int, w: np.ndarray, b: np.ndarray, src: str, dst: str, relu: bool
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Build one Gemm (+ optional Relu) layer and its initializers.

    Weights are stored transposed ([out, in]) with transB=1, the layout
    PyTorch-style exporters produce, so tools see the common convention.
    """
    w_name, b_name = f"fc{i}.weight", f"fc{i}.bias"
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w.T, dtype=np.float32), w_name),
        numpy_helper.from_array(b.astype(np.float32), b_name),
    ]
    gemm_out = f"fc{i}_out" if relu else dst
    nodes = [
        helper.make_node(
            "Gemm", [src, w_name, b_name], [gemm_out], name=f"fc{i}", transB=1
        )
    ]
    if relu:
        nodes.append(helper.make_node("Relu", [gemm_out], [dst], name=f"relu{i}"))
    return nodes, inits


def build_mlp_onnx(clf: MLPClassifier, graph_name: str) -> onnx.ModelProto:
    """Turn a fitted ReLU MLPClassifier into an ONNX Gemm/Relu chain."""
    if clf.activation != "relu":
        raise ValueError(f"only relu MLPs are supported, got {clf.activation}")
    n_in = clf.coefs_[0].shape[0]
    n_out = clf.coefs_[-1].shape[1]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    src = INPUT_NAME
    last = len(clf.coefs_) - 1
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        dst = OUTPUT_NAME if i == last else f"h{i}"
        layer_nodes, layer_inits = _layer_nodes(i, w, b, src, dst, relu=i < last)
        nodes += layer_nodes
        inits += layer_inits
        src = dst
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", n_out])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="bitqnn-training",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnx(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray:
    """Evaluate a model with onnxruntime's default session options on CPU."""
    src = (
        model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    )
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT_NAME: x.astype(np.float32)})[0]


def check_against_sklearn(
    model: onnx.ModelProto, clf: MLPClassifier, x: np.ndarray, tol: float = 1e-5
) -> tuple[float, float]:
    """Fail loudly if onnxruntime's logits drift from sklearn's own weights.

    A silent transpose or layer-order mistake would otherwise only show up as
    a slightly worse accuracy, so the exported graph is compared numerically
    against a float64 evaluation of ``coefs_``/``intercepts_``. The bound is
    ``tol * max(1, max_j |ref[row, j]|)``: float32 rounding error in a logit
    scales with the magnitudes flowing through its row (logits reach ~50 on
    Fashion-MNIST, where one float32 ulp is ~4e-6), so a purely absolute 1e-5
    would be a few ulps and would flake with a different BLAS.
    Returns the maximum absolute and maximum row-scaled differences.
    """
    got = run_onnx(model, x)
    ref = mlp_logits(clf, x)
    diff = np.abs(got - ref)
    row_scale = np.maximum(1.0, np.abs(ref).max(axis=1, keepdims=True))
    scaled = float(np.max(diff / row_scale))
    if scaled > tol:
        raise AssertionError(
            f"ONNX logits differ from sklearn by {scaled} (scaled) > {tol}"
        )
    return float(np.max(diff)), scaled


def export_mlp(clf: MLPClassifier, x_check: np.ndarray, path: Path) -> onnx.ModelProto:
    """Build, verify against sklearn and save the float ONNX model."""
    model = build_mlp_onnx(clf, path.stem)
    abs_err, scaled_err = check_against_sklearn(model, clf, x_check)
    onnx.save(model, str(path))
    print(
        f"wrote {path} (onnx vs sklearn: max abs diff {abs_err:.2e}, "
        f"max row-scaled diff {scaled_err:.2e})"
    )
    return model


def onnx_accuracy(
    model: onnx.ModelProto | str | Path, x: np.ndarray, y: np.ndarray
) -> float:
    """Top-1 accuracy of an ONNX model's logits under onnxruntime."""
    return float(np.mean(run_onnx(model, x).argmax(1) == y))

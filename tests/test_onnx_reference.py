"""onnx's ReferenceEvaluator on the QDQ models: where it disagrees with the executor, and why.

ReferenceEvaluator runs a QDQ model's float path (DequantizeLinear, float32 Gemm / Conv /
Add, QuantizeLinear); onnxruntime's integer kernels, which the executor follows, compute the
same real number r before rounding in different arithmetic. Two roundings of r can only
differ where r lies within their float32 errors of a rounding boundary k + 1/2, and then by
one step. The test follows every disagreeing sample to the first layer where it differs and
checks exactly that for every differing element there; later layers see different inputs
and are not compared. MaxPool and Reshape must agree exactly.

The error bound is the textbook one for a float32 dot product of K terms, (K + 8) * 2**-24
times the sum of the terms' magnitudes, in output units; a real semantic difference (a
wrong multiplier order, a zero point in the wrong place) shows up far outside it.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, version_converter
from onnx.reference import ReferenceEvaluator

from bitqnn.onnx_io import load_qnn
from bitqnn.qnn import QNN, Conv2d, Dense, Lookup, run_layer
from tests.onnx_models import ARCHITECTURES, TYPE_PAIRS, grid_inputs, quantized_model

UNIT = 2.0**-24
# the stressed models' power-of-two scales make both computations exact: no disagreements, so they are slow-only
CASES = [pytest.param(a, t, p, s, marks=[pytest.mark.slow] if s else [],
                      id=f"{a}-{t[0]}{t[1]}-{'pc' if p else 'pt'}-{'stressed' if s else 'plain'}")
         for a, t, p, s in itertools.product(ARCHITECTURES, TYPE_PAIRS, (False, True), (False, True))]


class QdqModel:
    """The QDQ file's own view: activation QuantizeLinear nodes in order, constants, producers."""

    def __init__(self, model: onnx.ModelProto):
        self.constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.quantizers = [node for node in model.graph.node
                           if node.op_type == "QuantizeLinear" and node.input[0] not in self.constants]

    def params(self, node: onnx.NodeProto) -> tuple[float, int]:
        return float(self.constants[node.input[1]]), int(self.constants[node.input[2]])


def _real_input(qnn: QNN, x: np.ndarray) -> np.ndarray:
    real = (x - qnn.input_zero).astype(np.float32) * np.float32(qnn.input_scale)
    return real.reshape(len(x), *qnn.input_shape)


def _distance_to_boundary(r: np.ndarray) -> np.ndarray:
    return np.abs(r - (np.floor(r) + 0.5))


def _linear_explained(qnn: QNN, index: int, values: np.ndarray, acc: np.ndarray, rows, cols) -> np.ndarray:
    """For each differing (sample, neuron): is r = acc * M within float32 error of k + 1/2?"""
    layer = qnn.layers[index]
    form = qnn.linear_form(index)
    multiplier = np.asarray(layer.output.requant.multiplier, np.float64)
    multiplier = multiplier[0] if multiplier.size == 1 else multiplier[form.channels[cols]]
    magnitude = (np.abs(values[rows] - layer.input_zero) * np.abs(form.matrix[cols])).sum(axis=1)
    magnitude = (magnitude + np.abs(layer.bias[form.channels[cols]])) * multiplier
    r = acc[rows, cols] * multiplier
    terms = np.count_nonzero(form.matrix[cols], axis=1)
    return _distance_to_boundary(r) <= (terms + 8) * UNIT * magnitude


def _add_explained(model: QdqModel, quantizer: onnx.NodeProto, previous: np.ndarray, rows, cols) -> np.ndarray:
    """For a float-path Add of a constant: r = ((x - zx) sx + (c - zc) sc) / sy + zy near k + 1/2?"""
    add = model.producer[quantizer.input[0]]
    assert add.op_type == "Add"
    dequantizers = [model.producer[name] for name in add.input]
    x_dq, c_dq = sorted(dequantizers, key=lambda node: node.input[0] in model.constants)
    (sx, zx), (sc, zc), (sy, zy) = model.params(x_dq), model.params(c_dq), model.params(quantizer)
    constant = np.broadcast_to(model.constants[c_dq.input[0]].astype(np.int64).reshape(-1), (previous.shape[1],))
    x_term = (previous[rows, cols] - zx) * sx
    c_term = (constant[cols] - zc) * sc
    r = (x_term + c_term) / sy + zy
    return _distance_to_boundary(r) <= 16 * UNIT * ((np.abs(x_term) + np.abs(c_term)) / sy + abs(zy) + 1)


@pytest.mark.parametrize("architecture,types,per_channel,stressed", CASES)
def test_reference_evaluator_differs_only_near_rounding_boundaries(tmp_path, architecture, types, per_channel,
                                                                   stressed):
    path = quantized_model(tmp_path, architecture, "qdq", *types, per_channel, stressed)
    qnn = load_qnn(path)
    model = onnx.load(path)
    qdq = QdqModel(model)
    reference = ReferenceEvaluator(version_converter.convert_version(model, 21))
    x = grid_inputs(qnn)
    results = reference.run(None, {"input": _real_input(qnn, x)}, intermediate=True)
    assert np.array_equal(results[qdq.quantizers[0].output[0]].reshape(len(x), -1), x)
    assert len(qdq.quantizers) == len(qnn.layers) + 1
    agreeing = np.ones(len(x), dtype=bool)
    counts = Counter()
    values, previous = x, x
    for index, (layer, quantizer) in enumerate(zip(qnn.layers, qdq.quantizers[1:], strict=True)):
        output, acc = run_layer(qnn, index, values)
        theirs = results[quantizer.output[0]].reshape(len(x), -1).astype(np.int64)
        # onnxruntime runs int8 activations on a uint8 grid (see bitqnn.onnx_io.regrid): find that shift
        shifts, frequency = np.unique((output - theirs)[agreeing], return_counts=True)
        shift = int(shifts[np.argmax(frequency)])
        assert shift in (0, 128)
        differ = (output - shift != theirs) & agreeing[:, None]
        rows, cols = np.nonzero(differ)
        if rows.size:
            assert np.all(np.abs(output[rows, cols] - shift - theirs[rows, cols]) == 1)
            if isinstance(layer, Dense | Conv2d):
                explained = _linear_explained(qnn, index, values, acc, rows, cols)
            elif isinstance(layer, Lookup):
                explained = _add_explained(qdq, quantizer, previous, rows, cols)
            else:
                explained = np.zeros(rows.size, dtype=bool)
            assert np.all(explained), f"layer {index} ({type(layer).__name__}): unexplained differences"
            counts[type(layer).__name__] += int(np.unique(rows).size)
        agreeing &= ~differ.any(axis=1)
        values, previous = output, theirs
    print(f"{path.name}: {len(x) - int(agreeing.sum())} of {len(x)} samples differ, first at {dict(counts)}")

"""Imported quantized models agree bit for bit with onnxruntime on 10,000 inputs each.

Every model quantize_static produces for our four architectures, in QDQ and QOperator
format, per-tensor and per-channel, with int8 and uint8 activations, plain and stressed
(see tests/onnx_models.py): `execute` and `run_onnxruntime` must be equal on uniform random
grid inputs plus the all-min and all-max corners. The stressed models must also really hit
requantization ties and upper saturation, or the test would prove less than it claims.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bitqnn.onnx_io import load_model, load_qnn, run_onnxruntime
from bitqnn.qnn import QNN, Conv2d, Dense, execute, run_layer
from bitqnn.requant import Float32Requant
from tests.onnx_models import ARCHITECTURES, SAMPLES, TYPE_PAIRS, grid_inputs, quantized_model

CASES = list(itertools.product(ARCHITECTURES, ("qdq", "qop"), TYPE_PAIRS, (False, True)))


def requant_events(qnn: QNN, x: np.ndarray) -> tuple[int, int]:
    """How many requantizations were exact ties, and how many saturated at the top of the range."""
    ties = saturated = 0
    values = x
    for index, layer in enumerate(qnn.layers):
        output, acc = run_layer(qnn, index, values)
        if isinstance(layer, Dense | Conv2d) and isinstance(layer.output.requant, Float32Requant):
            multiplier = np.asarray(layer.output.requant.multiplier, np.float32)
            if multiplier.size > 1:
                multiplier = multiplier[qnn.linear_form(index).channels]
            product = acc.astype(np.float32) * multiplier
            ties += int(np.sum(product - np.floor(product) == 0.5))
            saturated += int(np.sum(np.rint(product) + layer.output.zero > layer.output.hi))
        values = output
    return ties, saturated


@pytest.mark.parametrize("stressed", [False, True], ids=["plain", "stressed"])
@pytest.mark.parametrize("architecture,fmt,types,per_channel", CASES,
                         ids=[f"{a}-{f}-{t[0]}{t[1]}-{'pc' if p else 'pt'}" for a, f, t, p in CASES])
def test_bit_exact_against_onnxruntime(tmp_path, architecture, fmt, types, per_channel, stressed):
    path = quantized_model(tmp_path, architecture, fmt, *types, per_channel, stressed)
    qnn = load_qnn(path)
    assert qnn.onnx_path == str(path) and "onnxruntime" in qnn.semantics
    assert (qnn.input_lo, qnn.input_hi) == ((-128, 127) if types[0] == "s8" else (0, 255))
    x = grid_inputs(qnn)
    ours = execute(qnn, x)
    theirs = run_onnxruntime(qnn, x)
    assert ours.shape == theirs.shape == (SAMPLES, qnn.output_size)
    assert np.array_equal(ours, theirs), f"{int(np.sum(np.any(ours != theirs, axis=1)))} of {SAMPLES} inputs differ"
    if stressed:
        ties, saturated = requant_events(qnn, x[:2000])
        assert ties > 50 and saturated > 50, (ties, saturated)


def test_layer_structure_of_imported_models(tmp_path):
    kinds = {}
    for architecture in ARCHITECTURES:
        qnn = load_model(quantized_model(tmp_path, architecture, "qdq", "u8", "s8", False, False))
        kinds[architecture] = [type(layer).__name__ for layer in qnn.layers]
    assert kinds == {"mlp_gemm": ["Dense", "Dense", "Dense"], "mlp_matmul": ["Dense", "Lookup", "Dense", "Lookup"],
                     "cnn": ["Conv2d", "MaxPool2d", "Reshape", "Dense"], "clip": ["Dense", "Dense"]}


@pytest.mark.parametrize("architecture", ["mlp_gemm", "clip"])
@pytest.mark.parametrize("activations", ["s8", "u8"])
def test_relu_and_clip_become_output_clamps(tmp_path, architecture, activations):
    """The quantizer puts the zero point of a ReLU/Clip(0, .) output at the bottom of the range."""
    qnn = load_qnn(quantized_model(tmp_path, architecture, "qdq", activations, "s8", False, False))
    hidden = qnn.layers[0].output
    assert hidden.lo == hidden.zero

"""Float ONNX models import as FloatNetworks that compute what onnxruntime and onnx's reference do.

FloatNetwork works in float64 and the runtimes in float32, so agreement is to float32
accuracy: |ours - theirs| <= 1e-5 + 1e-5 * |theirs|.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from bitqnn.floatnet import FloatConv2d, FloatDense, FloatNetwork
from bitqnn.onnx_io import load_float, load_model
from bitqnn.qnn import MaxPool2d, Reshape
from tests.onnx_models import ARCHITECTURES, float_extras_model, float_model, input_shape, save

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _runtimes(path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = ReferenceEvaluator(onnx.load(path))
    return session.run(None, {"input": x})[0], reference.run(None, {"input": x})[0]


def _check_against_runtimes(model: onnx.ModelProto, path) -> FloatNetwork:
    save(model, path)
    network = load_float(path)
    x = np.random.default_rng(7).normal(0, 1.5, (1000, *input_shape(model))).astype(np.float32)
    ours = network.forward(x)
    for theirs in _runtimes(path, x):
        np.testing.assert_allclose(ours, theirs.reshape(len(x), -1), **TOLERANCE)
    return network


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_float_models_match_runtimes(tmp_path, architecture):
    network = _check_against_runtimes(float_model(architecture, np.random.default_rng(3)), tmp_path / "m.onnx")
    assert isinstance(load_model(tmp_path / "m.onnx"), FloatNetwork)
    kinds = [type(layer).__name__ for layer in network.layers]
    expected = {"mlp_gemm": ["FloatDense"] * 3, "mlp_matmul": ["FloatDense"] * 2, "clip": ["FloatDense"] * 2,
                "cnn": ["FloatConv2d", "MaxPool2d", "Reshape", "FloatDense"]}
    assert kinds == expected[architecture]
    clips = [layer.clip for layer in network.layers if isinstance(layer, FloatDense | FloatConv2d)]
    assert clips[:-1] == ([(0.0, 1.0)] if architecture == "clip" else [(0.0, float("inf"))] * (len(clips) - 1))
    assert clips[-1] is None


def test_less_common_float_spellings(tmp_path):
    network = _check_against_runtimes(float_extras_model(np.random.default_rng(4)), tmp_path / "extras.onnx")
    conv, pool, flat, dense = network.layers
    assert isinstance(conv, FloatConv2d) and conv.clip == (0.0, float("inf")) and conv.pads == (0, 0, 1, 1)
    assert isinstance(pool, MaxPool2d) and isinstance(flat, Reshape) and flat.shape == (18,)
    assert isinstance(dense, FloatDense) and dense.clip is None

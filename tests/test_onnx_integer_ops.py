"""The less common integer spellings import bit-exactly too, and so do the shipped examples.

MatMulInteger/ConvInteger with static scales and a float rescale, QLinearAdd of a per-channel
bias on a feature map (onnxruntime's scalar kernel path), float Relu/Clip islands that
onnxruntime does not fuse, integer-typed model inputs, and examples/digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitqnn.onnx_io import load_model, load_qnn, run_onnxruntime
from bitqnn.qnn import Conv2d, Dense, Lookup, execute
from tests.onnx_models import (
    cnn_with_add_model,
    grid_inputs,
    integer_input_model,
    integer_ops_model,
    island_model,
    quantize_float,
    save,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "digits"


def assert_bit_exact(path) -> None:
    qnn = load_qnn(path)
    x = grid_inputs(qnn)
    ours, theirs = execute(qnn, x), run_onnxruntime(qnn, x)
    assert np.array_equal(ours, theirs), f"{int(np.sum(np.any(ours != theirs, axis=1)))} of {len(x)} inputs differ"


@pytest.mark.parametrize("conv", [False, True], ids=["matmul_integer", "conv_integer"])
@pytest.mark.parametrize("tie_prone", [False, True], ids=["random_scales", "power_of_two_scales"])
def test_static_matmul_and_conv_integer(tmp_path, conv, tie_prone):
    path = save(integer_ops_model(np.random.default_rng(1), conv, tie_prone), tmp_path / "m.onnx")
    qnn = load_qnn(path)
    assert isinstance(qnn.layers[0], Conv2d if conv else Dense) and isinstance(qnn.layers[-1], Dense)
    assert "float32" in qnn.layers[0].output.describe()
    assert_bit_exact(path)


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
@pytest.mark.parametrize("types", [("u8", "s8"), ("s8", "s8")])
@pytest.mark.parametrize("spread", [1.0, 0.33])
def test_per_channel_bias_add_on_feature_map(tmp_path, fmt, types, spread):
    path = quantize_float(cnn_with_add_model(np.random.default_rng(2), gain=1.0 / spread), tmp_path, "m", fmt, *types,
                          per_channel=False, spread=spread)
    lookup = load_qnn(path).layers[1]
    assert isinstance(lookup, Lookup) and lookup.table.shape[0] == 3  # one row per channel
    assert_bit_exact(path)


@pytest.mark.parametrize("op", ["Relu", "Clip"])
def test_float_island_becomes_lookup(tmp_path, op):
    path = save(island_model(op), tmp_path / "m.onnx")
    assert [type(layer).__name__ for layer in load_qnn(path).layers] == ["Lookup"]
    assert_bit_exact(path)


def test_integer_input_and_output(tmp_path):
    path = save(integer_input_model(np.random.default_rng(3)), tmp_path / "m.onnx")
    qnn = load_qnn(path)
    assert (qnn.input_lo, qnn.input_hi, qnn.input_scale, qnn.input_zero) == (0, 255, 1.0, 0)
    assert_bit_exact(path)


@pytest.mark.parametrize("name", ["digits_q8", "digits_small_q8"])
def test_digits_examples(name):
    path = EXAMPLES / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} has not been built")
    qnn = load_model(path)
    assert all(isinstance(layer, Dense) for layer in qnn.layers)
    assert_bit_exact(path)

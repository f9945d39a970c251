"""DRA is sound: on every model, the true QNN-minus-float difference at 10,000 random and
corner inputs lies inside each mode's interval; and the modes rank as designed."""

from __future__ import annotations

import numpy as np
import pytest

from bitqnn.dra import MODES, DifferentialAnalysis
from bitqnn.error_query import ErrorQuery
from bitqnn.floatnet import RELU, FloatDense, FloatNetwork
from bitqnn.onnx_io import load_float
from bitqnn.qnn import run_layer
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point
from bitqnn.query import Box
from bitqnn.requant import Rounding

DIGITS = "examples/digits/digits.onnx"


def random_mlp(rng: np.random.Generator) -> FloatNetwork:
    sizes = [int(rng.integers(3, 12))] + [int(rng.integers(3, 10)) for _ in range(rng.integers(1, 4))]
    sizes.append(int(rng.integers(2, 5)))
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        clip = RELU if i < len(sizes) - 2 else None
        layers.append(FloatDense(rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in)), rng.normal(0, 0.1, n_out), clip))
    return FloatNetwork((sizes[0],), tuple(layers))


def sample_points(rng: np.random.Generator, box: Box, count: int = 10_000) -> np.ndarray:
    """Random grid points, a tenth of them box corners (where the extremes of a box often are)."""
    points = rng.integers(box.lo, box.hi + 1, (count, box.lo.size))
    corners = count // 10
    points[:corners] = np.where(rng.random((corners, box.lo.size)) < 0.5, box.lo, box.hi)
    return points


def assert_sound(query: ErrorQuery, rng: np.random.Generator) -> dict[str, float]:
    errors = query.errors(sample_points(rng, query.region))
    analysis = DifferentialAnalysis(query.float_net, query.qnn, query.region)
    widths = {}
    for mode in MODES:
        bounds = analysis.run(mode)
        assert np.all(errors >= bounds.lo) and np.all(errors <= bounds.hi), mode
        widths[mode] = float(bounds.width.mean())
    return widths


def test_dra_is_sound_on_random_fixed_point_networks():
    tighter = 0
    for seed in range(24):
        rng = np.random.default_rng(seed)
        net = random_mlp(rng)
        bits = int(rng.choice([4, 6, 8, 10]))
        config = FixedPointConfig(weights=bits, activations=bits, rounding=list(Rounding)[seed % 4],
                                  output="requantized" if seed % 3 == 0 else "accumulator")
        qnn = quantize_fixed_point(net, config, rng.random((200, net.input_shape[0])))
        center, radius = rng.integers(0, 256, net.input_shape[0]), int(rng.integers(0, 6))
        box = Box(np.clip(center - radius, 0, 255), np.clip(center + radius, 0, 255))
        widths = assert_sound(ErrorQuery(net, qnn, box, 0.0, tuple(range(qnn.output_size))), rng)
        assert widths["symbolic"] <= widths["concrete"] + 1e-12 and widths["concrete"] <= widths["naive"] + 1e-12
        tighter += widths["symbolic"] < widths["naive"]
    assert tighter >= 18


def assert_hidden_sound(query: ErrorQuery, points: np.ndarray) -> None:
    """Every hidden layer's recorded bounds (the MILP's difference rows) and the float
    network's pre-activation bounds hold at the points."""
    analysis = DifferentialAnalysis(query.float_net, query.qnn, query.region)
    analysis.run("symbolic")
    q_values, f_values = points, query.real_inputs(points)
    for layer, (a_lo, a_hi) in zip(analysis.layers, analysis.float_pre, strict=True):
        q_values, acc = run_layer(query.qnn, layer.index, q_values)
        f_pre = query.float_net.pre_activation(layer.index, f_values)
        f_values = query.float_net.activate(layer.index, f_pre)
        assert np.all(f_pre >= a_lo) and np.all(f_pre <= a_hi), layer.index
        if layer.index not in analysis.hidden:
            continue
        bounds = analysis.hidden[layer.index]
        pre = layer.acc_scale * acc + layer.acc_shift - f_pre
        post = layer.out_scale * (q_values - layer.stage.zero) - f_values
        assert np.all(pre >= bounds.pre_lo) and np.all(pre <= bounds.pre_hi), layer.index
        assert np.all(post >= bounds.post_lo) and np.all(post <= bounds.post_hi), layer.index


def test_hidden_difference_bounds_are_sound_on_random_fixed_point_networks():
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        net = random_mlp(rng)
        bits = int(rng.choice([4, 6, 8]))
        config = FixedPointConfig(weights=bits, activations=bits, rounding=list(Rounding)[seed % 4])
        qnn = quantize_fixed_point(net, config, rng.random((200, net.input_shape[0])))
        center, radius = rng.integers(0, 256, net.input_shape[0]), int(rng.integers(1, 6))
        box = Box(np.clip(center - radius, 0, 255), np.clip(center + radius, 0, 255))
        query = ErrorQuery(net, qnn, box, 0.0, tuple(range(qnn.output_size)))
        assert_hidden_sound(query, sample_points(rng, box, 5_000))


@pytest.mark.parametrize("bits", [4, 8])
def test_dra_is_sound_on_the_digits_model(bits):
    net = load_float(DIGITS)
    samples = np.load("examples/digits/test.npz")["x"]
    qnn = quantize_fixed_point(net, FixedPointConfig(weights=bits, activations=bits, input_frac=3), samples)
    rng = np.random.default_rng(bits)
    center = qnn.quantize_input(samples[0].reshape(-1))
    box = Box(np.clip(center - 2, 0, 255), np.clip(center + 2, 0, 255))
    widths = assert_sound(ErrorQuery(net, qnn, box, 0.0, tuple(range(10))), rng)
    assert widths["symbolic"] < widths["naive"]

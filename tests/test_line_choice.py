"""Bounds whose lines are chosen per bound (`line_choice`): sound at every sampled point of
boxes too large to enumerate (the enumerated tiny boxes are in test_engines_agree), never
looser than the shared lines, and tighter where roundings are coarse."""

from __future__ import annotations

import numpy as np

from bitqnn.onnx_io import load_float
from bitqnn.qnn import run_layer
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point
from bitqnn.query import Box
from bitqnn.symbolic import SymbolicAnalysis
from tests.netgen import REQUANT_KINDS, random_dense_qnn


def corner_and_random_points(rng: np.random.Generator, box: Box, count: int = 4000) -> np.ndarray:
    points = rng.integers(box.lo, box.hi + 1, (count, box.lo.size))
    points[: count // 4] = np.where(rng.random((count // 4, box.lo.size)) < 0.5, box.lo, box.hi)
    return points


def assert_contains(qnn, bounds, points) -> None:
    values = points
    for index, layer in enumerate(bounds.layers):
        values, acc = run_layer(qnn, index, values)
        assert np.all(values >= layer.lo) and np.all(values <= layer.hi), index
        if acc is not None:
            assert np.all(acc >= layer.acc_lo) and np.all(acc <= layer.acc_hi), index


def test_chosen_lines_are_sound_and_never_looser_on_wide_boxes():
    tighter = 0
    for seed in range(18):
        rng = np.random.default_rng(500 + seed)
        qnn = random_dense_qnn(rng, REQUANT_KINDS[seed % len(REQUANT_KINDS)], sizes=(10, 12, 12, 4))
        center = rng.integers(qnn.input_lo, qnn.input_hi + 1, qnn.input_size)
        box = Box(np.maximum(center - 2, qnn.input_lo), np.minimum(center + 2, qnn.input_hi))
        shared = SymbolicAnalysis(qnn, box).bounds
        chosen = SymbolicAnalysis(qnn, box, choose_lines=True).bounds
        assert_contains(qnn, chosen, corner_and_random_points(rng, box))
        for a, b in zip(shared.layers, chosen.layers, strict=True):
            assert np.all(b.lo >= a.lo) and np.all(b.hi <= a.hi), seed
            if a.acc_lo is not None:
                assert np.all(b.acc_lo >= a.acc_lo) and np.all(b.acc_hi <= a.acc_hi), seed
        last_shared, last_chosen = shared.layers[-1], chosen.layers[-1]
        tighter += (last_chosen.acc_hi - last_chosen.acc_lo).sum() < (last_shared.acc_hi - last_shared.acc_lo).sum()
    assert tighter >= 9  # 15 of 18 when written


def test_chosen_lines_tighten_a_coarse_digits_qnn():
    """At 4 bits most hidden neurons straddle one rounding step, where the shared line is flat."""
    net = load_float("examples/digits/digits.onnx")
    samples = np.load("examples/digits/test.npz")["x"]
    qnn = quantize_fixed_point(net, FixedPointConfig(weights=4, activations=4, input_frac=3), samples)
    center = qnn.quantize_input(samples[0].reshape(-1))
    box = Box(np.clip(center - 3, 0, 255), np.clip(center + 3, 0, 255))
    shared = SymbolicAnalysis(qnn, box).bounds.layers[-1]
    chosen = SymbolicAnalysis(qnn, box, choose_lines=True).bounds.layers[-1]
    assert_contains(qnn, SymbolicAnalysis(qnn, box, choose_lines=True).bounds,
                    corner_and_random_points(np.random.default_rng(0), box))
    assert (chosen.acc_hi - chosen.acc_lo).sum() < (shared.acc_hi - shared.acc_lo).sum()

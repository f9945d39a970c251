"""The shifted symbolic analysis (`SymbolicAnalysis.shifted`), on which bit-flip pruning
rests: its bounds must hold for every input of the box and every shift in its ranges,
checked by running each shifted network (the shift moved into the biases) on every point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bitqnn.bounds import AccumulatorShift
from bitqnn.qnn import Dense, run_layer
from bitqnn.query import Box
from bitqnn.symbolic import SymbolicAnalysis
from tests.netgen import random_dense_case

SHIFTS_PER_CASE = 12


def every_point(box: Box) -> np.ndarray:
    axes = [np.arange(a, b + 1) for a, b in zip(box.lo, box.hi, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, box.lo.size)


def random_shift(rng: np.random.Generator, qnn, dense: list[int]) -> AccumulatorShift:
    index = int(rng.choice(dense))
    size = qnn.layers[index].weight.shape[0]
    lo = np.where(rng.random(size) < 0.5, -rng.integers(0, 40, size), 0)
    hi = np.where(rng.random(size) < 0.5, rng.integers(0, 40, size), 0)
    return AccumulatorShift(index, lo.astype(np.int64), hi.astype(np.int64))


def layer_values(qnn, shift: AccumulatorShift, amounts: np.ndarray, points: np.ndarray) -> list[np.ndarray]:
    """Every layer's outputs on the points, with `amounts` added to the shifted layer's biases."""
    layer = qnn.layers[shift.layer]
    shifted = replace(qnn, layers=tuple(replace(layer, bias=layer.bias + amounts) if i == shift.layer else other
                                        for i, other in enumerate(qnn.layers)), _cache={})
    values, outputs = points, []
    for index in range(len(shifted.layers)):
        values, _ = run_layer(shifted, index, values)
        outputs.append(values)
    return outputs


@pytest.mark.parametrize("seed", range(24))
def test_shifted_bounds_hold_on_every_point_and_shift(seed):
    _, query = random_dense_case(seed)
    qnn, box = query.network, query.region
    rng = np.random.default_rng(1000 + seed)
    dense = [i for i, layer in enumerate(qnn.layers) if isinstance(layer, Dense)]
    clean = SymbolicAnalysis(qnn, box)
    points = every_point(box)
    for _ in range(3):
        shift = random_shift(rng, qnn, dense)
        bounds = clean.shifted(shift).bounds
        corners = [shift.lo, shift.hi] + [rng.integers(shift.lo, shift.hi + 1) for _ in range(SHIFTS_PER_CASE)]
        for amounts in corners:
            for index, values in enumerate(layer_values(qnn, shift, amounts, points)):
                layer = bounds.layers[index]
                assert np.all(values >= layer.lo) and np.all(values <= layer.hi), (seed, index)


@pytest.mark.parametrize("seed", range(8))
def test_a_shifted_analysis_reuses_the_clean_layers_without_changing_its_bounds(seed):
    """The prefix taken from the clean analysis is what a fresh shifted analysis computes."""
    _, query = random_dense_case(seed)
    qnn, box = query.network, query.region
    rng = np.random.default_rng(seed)
    dense = [i for i, layer in enumerate(qnn.layers) if isinstance(layer, Dense)]
    clean = SymbolicAnalysis(qnn, box)
    shift = random_shift(rng, qnn, dense)
    reused, fresh = clean.shifted(shift).bounds, SymbolicAnalysis(qnn, box, shift=shift).bounds
    for a, b in zip(reused.layers, fresh.layers, strict=True):
        assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi)
    zero = AccumulatorShift(shift.layer, np.zeros_like(shift.lo), np.zeros_like(shift.hi))
    for a, b in zip(clean.shifted(zero).bounds.layers, clean.bounds.layers, strict=True):
        assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi)

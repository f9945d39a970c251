"""Random tiny QNNs and queries, small enough to enumerate every input.

Shared by every cross-check test so that all engines face the same distribution:
all requantization modes, per-channel parameters, zero points, conv, pooling, lookups.
"""

from __future__ import annotations

import numpy as np

from bitqnn.properties import robust_violation
from bitqnn.qnn import QNN, Conv2d, Dense, Lookup, MaxPool2d, Reshape, execute
from bitqnn.query import Box, Query
from bitqnn.requant import (
    FixedPointMultiplierRequant,
    Float32Requant,
    OutputStage,
    Rounding,
    ShiftRequant,
)

REQUANT_KINDS = ("floor", "half_up", "half_even", "half_away", "tflite", "float32")


def random_requant(rng: np.random.Generator, kind: str, channels: int, acc_span: int):
    """A requant that maps an accumulator span of about acc_span onto a few dozen steps."""
    per_channel = channels if rng.random() < 0.5 else 1
    if kind in {r.value for r in Rounding}:
        base = max(int(np.log2(max(acc_span, 2))) - 4, 0)
        shift = rng.integers(max(base - 1, 0), base + 2, per_channel)
        return ShiftRequant(shift.astype(np.int64), Rounding(kind))
    multipliers = rng.uniform(0.5, 2.0, per_channel) * 16.0 / max(acc_span, 1)
    if kind == "tflite":
        return FixedPointMultiplierRequant.from_real(multipliers)
    return Float32Requant(multipliers.astype(np.float32))


def random_stage(rng: np.random.Generator, kind: str, channels: int, acc_span: int, signed: bool) -> OutputStage:
    requant = random_requant(rng, kind, channels, acc_span)
    zero = int(rng.integers(-3, 4))
    if signed:
        return OutputStage(requant, zero, -8, 7)
    return OutputStage(requant, zero, max(zero, 0), 15)  # ReLU folded into the clamp


def random_dense_qnn(rng: np.random.Generator, kind: str, sizes: tuple[int, ...] = (3, 4, 3)) -> QNN:
    layers = []
    span_in = 8
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight = rng.integers(-8, 8, (n_out, n_in))
        wz = rng.integers(-1, 2, n_out if rng.random() < 0.5 else 1)
        xz = int(rng.integers(-2, 3))
        bias = rng.integers(-20, 20, n_out)
        span = int(np.abs(weight - wz.reshape(-1, 1)).sum(axis=1).max()) * span_in
        last = i == len(sizes) - 2
        keep_accumulator = last and rng.random() < 0.4
        stage = OutputStage(None) if keep_accumulator else random_stage(rng, kind, n_out, span, signed=last)
        layers.append(Dense(weight, wz.astype(np.int64), xz, bias, stage))
        span_in = 16
    if rng.random() < 0.3:  # an elementwise lookup between two layers
        table = np.sort(rng.integers(-5, 6, (1, 64)), axis=1)
        layers.insert(1, Lookup(table, -32))
        layers[0] = Dense(layers[0].weight, layers[0].weight_zero, layers[0].input_zero, layers[0].bias,
                          OutputStage(layers[0].output.requant, layers[0].output.zero, -32, 31))
    return QNN((sizes[0],), -4, 4, tuple(layers), name=f"dense-{kind}")


def random_conv_qnn(rng: np.random.Generator, kind: str) -> QNN:
    conv_w = rng.integers(-4, 5, (2, 1, 2, 2))
    conv = Conv2d(conv_w, np.zeros(1, np.int64), int(rng.integers(-1, 2)), rng.integers(-5, 5, 2),
                  random_stage(rng, kind, 2, 32, signed=False), pads=(0, 0, 1, 1))
    pool = MaxPool2d((2, 2), (2, 2))
    dense = Dense(rng.integers(-6, 7, (3, 2)), np.zeros(1, np.int64), 0, rng.integers(-10, 10, 3),
                  OutputStage(None))
    return QNN((1, 3, 3), -3, 3, (conv, pool, Reshape((2,)), dense), name=f"conv-{kind}")


MAX_POINTS = 50_000


def random_query(rng: np.random.Generator, qnn: QNN, radius: int = 1) -> Query:
    """A robustness query on an L-inf box, shrunk until brute force can enumerate it."""
    center = rng.integers(qnn.input_lo, qnn.input_hi + 1, qnn.input_size)
    lo = np.maximum(center - radius, qnn.input_lo)
    hi = np.minimum(center + radius, qnn.input_hi)
    while np.prod((hi - lo + 1).astype(float)) > MAX_POINTS:
        dim = int(rng.integers(qnn.input_size))
        lo[dim] = hi[dim] = center[dim]
    label = int(np.argmax(execute(qnn, center)[0]))
    tiebreak = "strict" if rng.random() < 0.5 else "lowest_index"
    violation = robust_violation(label, qnn.output_size, tiebreak)
    return Query(qnn, Box(lo, hi), violation, label=f"robust({label}, {tiebreak})")


def random_dense_case(seed: int) -> tuple[str, Query]:
    """A dense network of one of the requantization kinds, by seed, with a query on it."""
    rng = np.random.default_rng(seed)
    kind = REQUANT_KINDS[seed % len(REQUANT_KINDS)]
    return kind, random_query(rng, random_dense_qnn(rng, kind), radius=int(rng.integers(1, 4)))


def searched_cases(search, cases: int):
    """Per random dense case: (seed, query, enumeration's verdict, the point `search(query)`
    returned or None), after checking that every point returned lies in the box and
    violates the atom it was searched for."""
    from bitqnn.engines.enumeration import EnumerationEngine

    truth = EnumerationEngine()
    for seed in range(cases):
        _, query = random_dense_case(seed)
        atom, point = search(query)
        if point is not None:
            assert np.all(query.region.lo <= point) and np.all(point <= query.region.hi), seed
            assert atom.holds(execute(query.network, point))[0], seed
        yield seed, query, truth.solve(query, 60).verdict, point

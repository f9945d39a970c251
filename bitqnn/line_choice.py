"""Relaxation lines chosen per bound, at the input where that bound is attained.

The symbolic pass gives each neuron one upper and one lower line, the one of least area
over its whole accumulator range, and every later bound shares them. A neuron whose
rounding step sits mid-range then gets a flat line, which forgets how the input moves
it. But every edge of the neuron's exact hull is a valid line over the whole range, so
each bound may take its own per neuron. Here each bound (one row) starts from the shared
lines, takes the box corner that attains it, runs that input forward through the lines
it used, and then gives each neuron the hull edge that is tight at the accumulator
reached. Accumulators are averaged over rounds (damping) so that the choice settles
instead of flipping between two ends. Every round's bound is sound, because every line is;
the least one is kept. This is alpha-CROWN's idea with a fixed-point step instead of
gradients, which suits relaxations that are a few hull edges per neuron.

Measured on the 3x100 error benchmark network at Q = 4 (Fashion-MNIST image 0, radius
3): the QNN's output ranges are 363.6 wide on average with shared lines and 312.0 with
chosen ones, in 0.5 s. An LP over every hull facet, with the shared lines' intermediate
bounds, gives 321.6: choosing per bound at every layer beats optimising the last one.
Robustness queries keep the shared lines: on the core benchmark's plain 784-64-32 model
(10 images, radii 1 to 4, at 6 and at 4 bits) chosen lines settle 1 more of 261 open
competing classes and fix at most 0.2 more neurons per query, for 3 times the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bitqnn.hull import stage_hull
from bitqnn.requant import OutputStage

if TYPE_CHECKING:
    from bitqnn.symbolic import _Tightener

RELATIVE_MARGIN = 1e-9
# Tuned on the 3x100 Q = 4 network, image 0 (mean output width): 4 undamped rounds 331.8,
# 8 rounds damped by 0.5 to 0.7 311.6 to 312.3.
ROUNDS = 8
DAMPING = 0.6  # the weight of the accumulators averaged so far against the new round's
CHUNK_CELLS = 4_000_000  # rows x neurons x edges held at once while choosing lines


@dataclass(frozen=True)
class HullLines:
    """Every hull edge of each neuron's stage as a sound line, padded to one count per layer:
    slope[n, e] * acc + offset[n, e] bounds neuron n from above (upper) or below (lower)."""

    upper_slope: np.ndarray
    upper_offset: np.ndarray
    lower_slope: np.ndarray
    lower_offset: np.ndarray

    @staticmethod
    def identity(size: int) -> HullLines:
        ones, zeros = np.ones((size, 1)), np.zeros((size, 1))
        return HullLines(ones, zeros, ones, zeros)


def _sound_offsets(slopes: list[float], xs: np.ndarray, ys: np.ndarray, upper: bool) -> list[float]:
    """The offset that puts each slope's line on the far side of every point, padded for
    float64: computed from the points themselves, not from an edge's two ends."""
    reach = float(np.max(np.abs(xs)))
    offsets = []
    for k in slopes:
        gaps = ys - k * xs
        offset = float(gaps.max() if upper else gaps.min())
        pad = RELATIVE_MARGIN * (1.0 + abs(offset) + abs(k) * reach)
        offsets.append(offset + pad if upper else offset - pad)
    return offsets


def _padded(rows: list[tuple[list[float], list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and offsets as [n, E] arrays, short rows repeating their last line."""
    width = max(len(slopes) for slopes, _ in rows)
    slope = np.array([s + [s[-1]] * (width - len(s)) for s, _ in rows])
    offset = np.array([o + [o[-1]] * (width - len(o)) for _, o in rows])
    return slope, offset


def hull_lines(stage: OutputStage, channels: np.ndarray, acc_lo: np.ndarray, acc_hi: np.ndarray) -> HullLines:
    """Each neuron's hull edges over its accumulator range (a stable neuron: its constant)."""
    ups, lows = [], []
    for channel, lo, hi in zip(channels, acc_lo, acc_hi, strict=True):
        starts, values = stage.steps(int(channel), int(lo), int(hi))
        if len(starts) == 1:
            flat = ([0.0], [float(values[0])])
            ups.append(flat)
            lows.append(flat)
            continue
        hull = stage_hull(starts, values, int(hi))
        firsts = starts.astype(np.float64)
        lasts = np.append(starts[1:] - 1, hi).astype(np.float64)
        ys = values.astype(np.float64)
        up = [e.slope for e in hull.upper] or [0.0]
        low = [e.slope for e in hull.lower] or [0.0]
        ups.append((up, _sound_offsets(up, firsts, ys, upper=True)))
        lows.append((low, _sound_offsets(low, lasts, ys, upper=False)))
    upper_slope, upper_offset = _padded(ups)
    lower_slope, lower_offset = _padded(lows)
    return HullLines(upper_slope, upper_offset, lower_slope, lower_offset)


def _tight_edge(slopes: np.ndarray, offsets: np.ndarray, acc: np.ndarray, upper: bool):
    """Per row and neuron, the edge whose line is lowest (upper) or highest (lower) at acc."""
    values = slopes[None] * acc[:, :, None] + offsets[None]
    pick = (values.argmin(axis=2) if upper else values.argmax(axis=2))[:, :, None]
    shape = values.shape
    return (np.take_along_axis(np.broadcast_to(slopes, shape), pick, 2)[:, :, 0],
            np.take_along_axis(np.broadcast_to(offsets, shape), pick, 2)[:, :, 0])


class _Rows:
    """Upper bounds on a block of rows c @ acc(target), each with its own lines."""

    def __init__(self, tightener: _Tightener, target: int, chain: list[int], reached: int, rows: np.ndarray) -> None:
        self.t, self.target, self.chain, self.rows = tightener, target, chain, rows
        self.lo_in, self.hi_in = tightener.concrete_before(reached)
        self.forms = {i: (tightener.qnn.linear_form(i).matrix.astype(np.float64),
                          tightener.qnn.linear_form(i).offset.astype(np.float64)) for i in [target, *chain]}
        self.lines = {}
        for i in chain:
            rel = tightener.relaxations[i]
            self.lines[i] = [np.broadcast_to(v, (rows.shape[0], v.size)) for v in
                             (rel.upper_slope, rel.upper_offset, rel.lower_slope, rel.lower_offset)]
        self.averaged: dict[int, np.ndarray] = {}

    def bound(self) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
        """Back-substitution with the current lines: the bound (margin included), each chain
        layer's output coefficients, and the input coefficients."""
        matrix, offset = self.forms[self.target]
        coeffs = self.rows @ matrix
        const = self.rows @ offset
        magnitude = np.abs(const)
        signs = {}
        for i in self.chain:  # descending
            signs[i] = coeffs
            up_k, up_b, low_k, low_b = self.lines[i]
            upward = coeffs > 0
            slope = np.where(upward, up_k, low_k) * coeffs
            shifts = np.where(upward, up_b, low_b) * coeffs
            matrix, offset = self.forms[i]
            const = const + shifts.sum(axis=1) + slope @ offset
            magnitude = magnitude + np.abs(shifts).sum(axis=1) + np.abs(slope) @ np.abs(offset)
            coeffs = slope @ matrix
        value = np.maximum(coeffs, 0) @ self.hi_in + np.minimum(coeffs, 0) @ self.lo_in + const
        reach = np.maximum(np.abs(self.lo_in), np.abs(self.hi_in))
        return value + RELATIVE_MARGIN * (1.0 + magnitude + np.abs(coeffs) @ reach), signs, coeffs

    def rechoose(self, signs: dict[int, np.ndarray], input_coeffs: np.ndarray, damping: float) -> None:
        """Run the attaining corner forward through the lines used; re-pick each neuron's edge."""
        values = np.where(input_coeffs > 0, self.hi_in, self.lo_in)
        for i in reversed(self.chain):  # ascending
            (matrix, offset), layer = self.forms[i], self.t.layers[i]
            acc = np.clip(values @ matrix.T + offset, layer.acc_lo, layer.acc_hi)
            if i in self.averaged:
                acc = damping * self.averaged[i] + (1.0 - damping) * acc
            self.averaged[i] = acc
            up_k, up_b, low_k, low_b = self.lines[i]
            sign = signs[i]
            above, below = up_k * acc + up_b, low_k * acc + low_b
            values = np.where(sign > 0, above, np.where(sign < 0, below, (above + below) / 2.0))
            edges = self.t.hull[i]
            self.lines[i] = [*_tight_edge(edges.upper_slope, edges.upper_offset, acc, upper=True),
                             *_tight_edge(edges.lower_slope, edges.lower_offset, acc, upper=False)]


def chosen_line_bounds(tightener: _Tightener, target: int, rounds: int = ROUNDS,
                       damping: float = DAMPING) -> tuple[np.ndarray, np.ndarray]:
    """Integer bounds on layer `target`'s accumulators, each by its own lines (the tightest
    of `rounds` choices). Walks back as far as the shared back-substitution does."""
    chain, current = [], target - 1
    while current >= 0 and tightener._symbolic(current):
        if current in tightener.relaxations:
            chain.append(current)
        current -= 1
    size = tightener.qnn.linear_form(target).matrix.shape[0]
    rows = np.vstack([np.eye(size), -np.eye(size)])
    widest = max([tightener.hull[i].upper_slope.size + tightener.hull[i].lower_slope.size for i in chain], default=1)
    step = max(1, CHUNK_CELLS // widest)
    best = np.full(rows.shape[0], np.inf)
    for first in range(0, rows.shape[0], step):
        block = _Rows(tightener, target, chain, current + 1, rows[first:first + step])
        for round_ in range(rounds if chain else 1):
            value, signs, input_coeffs = block.bound()
            best[first:first + step] = np.minimum(best[first:first + step], value)
            if chain and round_ + 1 < rounds:
                block.rechoose(signs, input_coeffs, damping)
    return np.floor(-best[size:]).astype(np.int64), np.ceil(best[:size]).astype(np.int64)

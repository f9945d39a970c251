"""Interval tolerance of one neuron's accumulator: how far it may move with the property intact.

The moved neuron's output difference is pushed through the rest of the network as
intervals added to the clean network's bounds (difference propagation), and the property
is checked on the outputs' clean symbolic ranges plus those differences. Scenarios are
batched over the neurons of a layer, and a vectorised bisection finds each neuron's
tolerance upward and downward. Cheap and loose across wide layers, where the shifted
analysis of `fault_perturb` takes over.
"""

from __future__ import annotations

import numpy as np

from bitqnn.qnn import QNN
from bitqnn.query import Violation
from bitqnn.requant import OutputStage, Rounding, ShiftRequant
from bitqnn.symbolic import SymbolicAnalysis


def stage_difference(stage: OutputStage, channels: np.ndarray, acc_lo: np.ndarray, acc_hi: np.ndarray,
                     d_lo: np.ndarray, d_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on y(a + d) - y(a) over a in [acc_lo, acc_hi], d in [d_lo, d_hi] (elementwise).

    Monotonicity gives y(acc_hi + d_hi) - y(acc_lo) from above. A power-of-two shift also
    bounds the step count: floor and half-up put a boundary every 2**shift accumulators, so
    a move by d crosses at most ceil(d / 2**shift); any rounding stays within 1/2 of
    a / 2**shift, so a move crosses at most floor(d / 2**shift) + 1."""
    up = stage(acc_hi + d_hi, channels) - stage(acc_lo, channels)
    down = stage(acc_lo + d_lo, channels) - stage(acc_hi, channels)
    if stage.requant is None:
        up, down = np.minimum(up, np.maximum(d_hi, 0)), np.maximum(down, np.minimum(d_lo, 0))
    elif isinstance(stage.requant, ShiftRequant):
        shift = np.asarray(stage.requant.shift).ravel()
        shift = shift[0] if shift.size == 1 else shift[channels]
        if np.all(shift >= 0):
            unit = np.left_shift(np.int64(1), shift)
            rise, fall = np.maximum(d_hi, 0), np.maximum(-d_lo, 0)
            if stage.requant.rounding in (Rounding.FLOOR, Rounding.HALF_UP):
                rise_steps, fall_steps = -(-rise // unit), -(-fall // unit)
            else:
                rise_steps, fall_steps = rise // unit + 1, fall // unit + 1
            up = np.minimum(up, rise_steps)
            down = np.maximum(down, -fall_steps)
    up = np.where(d_hi <= 0, np.minimum(up, 0), up)
    down = np.where(d_lo >= 0, np.maximum(down, 0), down)
    return down, up


class DifferenceCheck:
    """Does the property survive when neurons of one layer move by given amounts?

    Scenarios are batched: row s of the inputs moves neuron `neurons[s]` of layer
    `index`'s accumulator by [d_lo[s], d_hi[s]] and leaves the rest of that layer clean."""

    def __init__(self, qnn: QNN, analysis: SymbolicAnalysis, violation: Violation) -> None:
        self.qnn = qnn
        self.bounds = analysis.bounds
        self.terms = [[(atom, analysis.output_range(atom.terms)[1]) for atom in term] for term in violation.terms]

    def holds(self, index: int, neurons: np.ndarray, d_lo: np.ndarray, d_hi: np.ndarray) -> np.ndarray:
        qnn, bounds = self.qnn, self.bounds
        form = qnn.linear_form(index)
        b = bounds.layers[index]
        ch = form.channels[neurons]
        own_lo, own_hi = stage_difference(qnn.layers[index].output, ch, b.acc_lo[neurons], b.acc_hi[neurons],
                                          d_lo, d_hi)
        width = b.lo.size
        diff_lo = np.zeros((neurons.size, width))
        diff_hi = np.zeros((neurons.size, width))
        rows = np.arange(neurons.size)
        diff_lo[rows, neurons], diff_hi[rows, neurons] = own_lo, own_hi
        for later in range(index + 1, len(qnn.layers)):
            matrix = qnn.linear_form(later).matrix.astype(np.float64)
            pos, neg = np.maximum(matrix, 0).T, np.minimum(matrix, 0).T
            acc_dlo = (diff_lo @ pos + diff_hi @ neg).astype(np.int64)
            acc_dhi = (diff_hi @ pos + diff_lo @ neg).astype(np.int64)
            nb = bounds.layers[later]
            channels = qnn.linear_form(later).channels
            lo, hi = stage_difference(qnn.layers[later].output, channels[None, :], nb.acc_lo[None, :],
                                      nb.acc_hi[None, :], acc_dlo, acc_dhi)
            diff_lo, diff_hi = lo.astype(np.float64), hi.astype(np.float64)
        safe = np.ones(neurons.size, dtype=bool)
        for term in self.terms:
            ruled_out = np.zeros(neurons.size, dtype=bool)
            for atom, clean_high in term:
                high = np.full(neurons.size, float(clean_high))
                for i, c in atom.terms:
                    high += np.maximum(c * diff_lo[:, i], c * diff_hi[:, i])
                ruled_out |= high < atom.bound
            safe &= ruled_out
        return safe


def tolerances(check: DifferenceCheck, index: int, neurons: np.ndarray, limit: np.ndarray,
               upward: bool) -> np.ndarray:
    """Per neuron, the largest t <= limit with the accumulator moving by [0, t] (or [-t, 0])
    and the property intact (0 where even a move of 1 may break it)."""
    hi = limit.astype(np.int64).copy()
    whole = _probe(check, index, neurons, hi, upward)
    lo = np.where(whole, hi, 0)  # a move of 0 is the clean network, which the caller has proved
    active = ~whole
    while np.any(active & (hi - lo > 1)):
        mid = lo + (hi - lo) // 2
        probe = active & (hi - lo > 1)
        safe = np.zeros(neurons.size, dtype=bool)
        safe[probe] = _probe(check, index, neurons[probe], mid[probe], upward)
        lo = np.where(probe & safe, mid, lo)
        hi = np.where(probe & ~safe, mid, hi)
    return lo


def _probe(check: DifferenceCheck, index: int, neurons: np.ndarray, t: np.ndarray, upward: bool) -> np.ndarray:
    zero = np.zeros(neurons.size, dtype=np.int64)
    return check.holds(index, neurons, zero, t) if upward else check.holds(index, neurons, -t, zero)

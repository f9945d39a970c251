"""Interval reachability on the exact integer semantics.

Bounds are what keep exact encodings small: a neuron whose output interval is a single
value is a constant to every engine, and one whose accumulator never reaches a clamp
needs no clamp constraint. Sound by construction: each step is monotone or an exact
min/max over a finite range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bitqnn.qnn import QNN, Conv2d, Dense, Lookup, MaxPool2d, Reshape
from bitqnn.query import Box, LinearAtom, Violation


@dataclass(frozen=True)
class LayerBounds:
    lo: np.ndarray  # output bounds, flat int64
    hi: np.ndarray
    acc_lo: np.ndarray | None = None  # accumulator bounds of linear layers
    acc_hi: np.ndarray | None = None
    may_overflow: np.ndarray | None = None  # bool per neuron: bounds leave the accumulator width

    @property
    def stable(self) -> np.ndarray:
        return self.lo == self.hi


@dataclass(frozen=True)
class NetworkBounds:
    input_lo: np.ndarray
    input_hi: np.ndarray
    layers: tuple[LayerBounds, ...]

    def before(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the input of layer `index`."""
        if index == 0:
            return self.input_lo, self.input_hi
        return self.layers[index - 1].lo, self.layers[index - 1].hi

    @property
    def output(self) -> LayerBounds:
        return self.layers[-1]

    def unstable_neurons(self, qnn: QNN) -> tuple[int, int]:
        """(unstable, total) over the outputs of requantizing linear layers."""
        unstable = total = 0
        for layer, bounds in zip(qnn.layers, self.layers, strict=True):
            if isinstance(layer, Dense | Conv2d) and layer.output.requant is not None:
                unstable += int(np.sum(~bounds.stable))
                total += bounds.lo.size
        return unstable, total

    def with_safe_accumulators(self, index: int, neurons: list[int], bits: int) -> NetworkBounds:
        """These bounds after proving that layer `index`'s listed accumulators never overflow."""
        old = self.layers[index]
        limit = np.int64(1) << (bits - 1)
        acc_lo, acc_hi, flags = old.acc_lo.copy(), old.acc_hi.copy(), old.may_overflow.copy()
        acc_lo[neurons] = np.maximum(acc_lo[neurons], -limit)
        acc_hi[neurons] = np.minimum(acc_hi[neurons], limit - 1)
        flags[neurons] = False
        layers = list(self.layers)
        layers[index] = LayerBounds(old.lo, old.hi, acc_lo, acc_hi, flags)
        return NetworkBounds(self.input_lo, self.input_hi, tuple(layers))

    def overflow_sites(self) -> list[tuple[int, int]]:
        sites = []
        for index, bounds in enumerate(self.layers):
            if bounds.may_overflow is not None:
                sites.extend((index, int(n)) for n in np.flatnonzero(bounds.may_overflow))
        return sites


def interval_product(matrix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact range of matrix @ v over the box lo <= v <= hi (a row or a whole matrix)."""
    positive, negative = np.maximum(matrix, 0), np.minimum(matrix, 0)
    return positive @ lo + negative @ hi, positive @ hi + negative @ lo


@dataclass(frozen=True)
class AccumulatorShift:
    """Any amount in [lo[n], hi[n]] added to neuron n's accumulator in layer `layer`, each
    neuron's independently: how one analysis covers every fault of a layer's parameters
    at once (`fault_perturb`). int64 arrays over the layer's neurons."""

    layer: int
    lo: np.ndarray
    hi: np.ndarray


def _linear(qnn: QNN, index: int, lo: np.ndarray, hi: np.ndarray, shift: AccumulatorShift | None = None) -> LayerBounds:
    layer = qnn.layers[index]
    form = qnn.linear_form(index)
    acc_lo, acc_hi = interval_product(form.matrix, lo, hi)
    acc_lo, acc_hi = acc_lo + form.offset, acc_hi + form.offset
    if shift is not None and shift.layer == index:
        acc_lo, acc_hi = acc_lo + shift.lo, acc_hi + shift.hi
    may_overflow = None
    if qnn.accumulator_bits < 63:
        limit = np.int64(1) << (qnn.accumulator_bits - 1)
        may_overflow = (acc_lo < -limit) | (acc_hi >= limit)
        if qnn.overflow == "wrap":
            acc_lo = np.where(may_overflow, -limit, acc_lo)
            acc_hi = np.where(may_overflow, limit - 1, acc_hi)
    out_lo = layer.output(acc_lo, form.channels)
    out_hi = layer.output(acc_hi, form.channels)
    return LayerBounds(out_lo, out_hi, acc_lo, acc_hi, may_overflow)


def _maxpool(qnn: QNN, index: int, lo: np.ndarray, hi: np.ndarray) -> LayerBounds:
    windows = qnn.pool_windows(index)
    floor = np.iinfo(np.int64).min
    lo_p = np.append(lo, floor)
    hi_p = np.append(hi, floor)
    return LayerBounds(lo_p[windows].max(axis=1), hi_p[windows].max(axis=1))


def _lookup(qnn: QNN, index: int, lo: np.ndarray, hi: np.ndarray) -> LayerBounds:
    layer = qnn.layers[index]
    assert isinstance(layer, Lookup)
    rows = qnn.lookup_channels(index)
    out_lo = np.empty_like(lo)
    out_hi = np.empty_like(hi)
    for i, (row, a, b) in enumerate(zip(rows, lo - layer.input_lo, hi - layer.input_lo, strict=True)):
        if a < 0 or b >= layer.table.shape[1]:
            raise ValueError(f"layer {index}: lookup input range [{a + layer.input_lo}, "
                             f"{b + layer.input_lo}] exceeds its table")
        segment = layer.table[row, a:b + 1]
        out_lo[i], out_hi[i] = segment.min(), segment.max()
    return LayerBounds(out_lo, out_hi)


def interval_bounds(qnn: QNN, box: Box, shift: AccumulatorShift | None = None) -> NetworkBounds:
    lo = box.lo.astype(np.int64)
    hi = box.hi.astype(np.int64)
    layers = []
    for index, layer in enumerate(qnn.layers):
        if isinstance(layer, Dense | Conv2d):
            bounds = _linear(qnn, index, lo, hi, shift)
        elif isinstance(layer, MaxPool2d):
            bounds = _maxpool(qnn, index, lo, hi)
        elif isinstance(layer, Reshape):
            bounds = LayerBounds(lo, hi)
        else:
            bounds = _lookup(qnn, index, lo, hi)
        layers.append(bounds)
        lo, hi = bounds.lo, bounds.hi
    return NetworkBounds(box.lo.astype(np.int64), box.hi.astype(np.int64), tuple(layers))


def atom_range(atom: LinearAtom, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int]:
    """The range of the atom's left-hand side over the output box."""
    low = sum(min(c * int(lo[i]), c * int(hi[i])) for i, c in atom.terms)
    high = sum(max(c * int(lo[i]), c * int(hi[i])) for i, c in atom.terms)
    return low, high


AtomRange = Callable[[LinearAtom], tuple[int, int]]


def prune_violation(violation: Violation, output: LayerBounds,
                    atom_range_fn: AtomRange | None = None) -> tuple[Violation, bool]:
    """Drop terms the output bounds rule out and atoms they guarantee.

    Returns the remaining violation (terms ordered by how much room their weakest atom
    has, most first, so counterexamples tend to come early) and whether some term holds
    for every input, in which case any point of the box is a witness.
    """
    if atom_range_fn is None:
        def atom_range_fn(atom: LinearAtom) -> tuple[int, int]:
            return atom_range(atom, output.lo, output.hi)
    kept = []
    for term in violation.terms:
        atoms, slack = [], []
        for atom in term:
            low, high = atom_range_fn(atom)
            if high < atom.bound:
                break
            if low < atom.bound:
                atoms.append(atom)
                slack.append(high - atom.bound)
        else:
            if not atoms:
                return Violation(((),)), True
            kept.append((min(slack), tuple(atoms)))
    kept.sort(key=lambda item: -item[0])
    return Violation(tuple(term for _, term in kept)), False

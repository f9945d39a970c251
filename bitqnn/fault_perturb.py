"""Proving whole neurons' flips harmless with one symbolic analysis per group of neurons.

A flip of a parameter feeding neuron n adds some amount m to n's accumulator. Let each
listed neuron's accumulator take any extra amount its remaining flips can add
(`bounds.AccumulatorShift`): the symbolic bounds of the network so shifted cover every
such fault at once, with the correlations through the rest of the network kept (which
interval differences lose). If they prove the property, every flip of those neurons is
harmless whenever a fault touches one neuron at a time (scope "one", or k = 1). Neurons
are tested together first and split in halves where the group fails; a neuron that fails
alone is retried with its low bits only (when each row is a whole fault, k = 1), so its
harmless low-order flips are still pruned.

The shift enters the symbolic bounds exactly, as one more input term of the layer it
acts on, and the layers before it are the clean analysis's (`SymbolicAnalysis.shifted`).
An earlier version cut the network at a hidden layer and gave that layer's inputs the clean
bounds as a box, which forgot how they co-vary: on the L1-trained 3x512 MNIST model (image
16, radius 2) no second-layer neuron's flips could then be proved harmless, not even its
lowest bit's, and the 1,400 tests that said so used up the query's 600 s.
"""

from __future__ import annotations

import time

import numpy as np

from bitqnn.bounds import AccumulatorShift, LayerBounds, NetworkBounds
from bitqnn.faults import Candidates
from bitqnn.query import Violation
from bitqnn.symbolic import SymbolicAnalysis


def shifted_analysis(analysis: SymbolicAnalysis, index: int, neurons: np.ndarray, low: np.ndarray,
                     high: np.ndarray) -> SymbolicAnalysis:
    """The analysis where each listed neuron of layer `index` may have any amount in
    [low, high] added to its accumulator, all at once."""
    size = analysis.bounds.layers[index].lo.size
    shift_lo, shift_hi = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    shift_lo[neurons], shift_hi[neurons] = low, high
    return analysis.shifted(AccumulatorShift(index, shift_lo, shift_hi))


def shifted_holds(analysis: SymbolicAnalysis, violation: Violation, index: int, neurons: np.ndarray,
                  low: np.ndarray, high: np.ndarray) -> bool:
    """Does the property hold when each listed neuron of layer `index` may have any amount
    in [low, high] added to its accumulator, all at once?"""
    remaining, always = shifted_analysis(analysis, index, neurons, low, high).prune(violation)
    return not remaining.terms and not always


def tighten_one_neuron(analysis: SymbolicAnalysis, faulty: NetworkBounds, index: int, neuron: int, low: int,
                       high: int) -> NetworkBounds:
    """`faulty` (bounds for every fault of one neuron, `fault_prune.fault_bounds`) narrowed
    by the shifted analysis: the intervals and differences of `fault_bounds` forget how the
    layers after the fault co-vary, the symbolic bounds keep it. On the 3x512 MNIST model
    (image 10 at radius 1, a first-layer neuron) they narrow the last two layers'
    accumulator ranges 2 and 3.4 times, and SCIP settles a term in 0.8 s that took it 38 s
    with the wider bounds."""
    shifted = shifted_analysis(analysis, index, np.array([neuron]), np.array([low]), np.array([high])).bounds
    layers = list(faulty.layers)
    for position in range(index, len(layers)):
        loose, tight = layers[position], shifted.layers[position]
        layers[position] = LayerBounds(np.maximum(loose.lo, tight.lo), np.minimum(loose.hi, tight.hi),
                                       np.maximum(loose.acc_lo, tight.acc_lo),
                                       np.minimum(loose.acc_hi, tight.acc_hi), loose.may_overflow)
    return NetworkBounds(faulty.input_lo, faulty.input_hi, tuple(layers))


class PruningTimeout(Exception):
    """The query's time ran out while pruning: an analysis per neuron group adds up."""


def harmless_rows(analysis: SymbolicAnalysis, violation: Violation, cands: Candidates, low: np.ndarray,
                  high: np.ndarray, low_bit_retry: bool, deadline: float) -> np.ndarray:
    """Per candidate row (all of one layer, each moving its neuron's accumulator by an
    amount in [low[j], high[j]]): proved harmless by a shifted symbolic analysis."""
    index = int(cands.layer[0])
    harmless = np.zeros(len(cands), dtype=bool)

    def span(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        neurons, position = np.unique(cands.neuron[rows], return_inverse=True)
        lo = np.zeros(neurons.size, dtype=np.int64)
        hi = np.zeros(neurons.size, dtype=np.int64)
        np.minimum.at(lo, position, low[rows])
        np.maximum.at(hi, position, high[rows])
        return neurons, lo, hi

    def test(rows: np.ndarray) -> bool:
        if time.perf_counter() > deadline:
            raise PruningTimeout(f"timeout while pruning the flips of layer {index}")
        neurons, lo, hi = span(rows)
        return shifted_holds(analysis, violation, index, neurons, lo, hi)

    def settle(neurons: np.ndarray) -> None:
        rows = np.flatnonzero(np.isin(cands.neuron, neurons))
        if test(rows):
            harmless[rows] = True
        elif neurons.size > 1:
            half = neurons.size // 2
            settle(neurons[:half])
            settle(neurons[half:])
        elif low_bit_retry:
            retry_low_bits(rows)

    def retry_low_bits(rows: np.ndarray) -> None:
        """The largest set of the neuron's low bits (those below some bit) proved harmless,
        found by bisection: the sets are nested, and a wider shift only loosens the bounds,
        so when a set fails the larger ones are not worth a test (only a passing test marks
        rows harmless). Where the lowest bit alone fails, that is three tests, not seven."""
        tops = sorted(set(cands.bit[rows].tolist()))[1:]  # the bit each candidate set stops below
        best, first, last = None, 0, len(tops) - 1
        while first <= last:
            middle = (first + last) // 2
            low_bits = rows[cands.bit[rows] < tops[middle]]
            if test(low_bits):
                best, first = low_bits, middle + 1
            else:
                last = middle - 1
        if best is not None:
            harmless[best] = True

    settle(np.unique(cands.neuron))
    return harmless

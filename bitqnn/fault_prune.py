"""Sound pruning of bit-flip candidates before any exact solving.

Three tests, cheapest first, each sound for the fault model it is applied under:

* Invariance (any scope): a neuron whose output stays one value over its accumulator
  range widened by its k worst flips cannot pass any of its flips on, alone or together.
* Tolerance (a fault touches one parameter: scope "one", or k = 1): how far each
  neuron's accumulator may move with the property intact, by interval differences
  (`fault_tolerance`); a parameter whose flipped values, split at the sign change, stay
  inside it is harmless.
* The shifted symbolic analysis (same condition) for what is left (`fault_perturb`).

A fourth test, `screen`, is the fault engine's to call when few flip sets are left:
symbolic bounds of each faulty network on its own. It costs one analysis per set, but it
is the only test that sees a fault's effect on every later layer's relaxation, so it
settles sets that all cheaper tests leave (and that CP-SAT, handed them together, may not).

What survives goes to an exact engine. The counts are reported, since how much is
pruned decides how long the rest takes.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from bitqnn.bounds import LayerBounds, NetworkBounds, interval_product
from bitqnn.fault_perturb import harmless_rows, tighten_one_neuron
from bitqnn.fault_tolerance import DifferenceCheck, stage_difference, tolerances
from bitqnn.faults import Candidates, FaultModel, apply_flips, patterns
from bitqnn.qnn import QNN, Dense
from bitqnn.query import Query, Violation
from bitqnn.symbolic import SymbolicAnalysis, analysis_of


@dataclass(frozen=True)
class Pruning:
    remaining: Candidates
    clean: NetworkBounds  # the clean network's bounds, from which fault bounds are derived
    rows: int
    parameters: int
    pruned_invariant: int  # rows
    pruned_tolerance: int  # rows
    pruned_symbolic: int  # rows

    @property
    def pruned(self) -> int:
        return self.rows - len(self.remaining)


def row_perturbation(qnn: QNN, cands: Candidates, bounds: NetworkBounds) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate row, the range of what it adds to its neuron's accumulator."""
    low = cands.delta.astype(np.float64).copy()
    high = low.copy()
    weights = np.flatnonzero(~cands.bias)
    for index in np.unique(cands.layer[weights]):
        rows = weights[cands.layer[weights] == index]
        layer = qnn.layers[index]
        x_lo, x_hi = bounds.before(int(index))
        a = (x_lo[cands.column[rows]] - layer.input_zero).astype(np.float64)
        b = (x_hi[cands.column[rows]] - layer.input_zero).astype(np.float64)
        d = cands.delta[rows].astype(np.float64)
        low[rows] = np.minimum(d * a, d * b)
        high[rows] = np.maximum(d * a, d * b)
    return low.astype(np.int64), high.astype(np.int64)


def _top_k_sums(groups: np.ndarray, values: np.ndarray, k: int, size: int) -> np.ndarray:
    """Per group, the sum of its k largest positive values (0 where it has none)."""
    order = np.lexsort((-values, groups))
    g, v = groups[order], values[order]
    first = np.searchsorted(g, g, side="left")
    rank = np.arange(g.size) - first
    take = (rank < k) & (v > 0)
    return np.bincount(g[take], weights=v[take], minlength=size).astype(np.int64)


def fault_bounds(qnn: QNN, clean: NetworkBounds, cands: Candidates, k: int) -> tuple[NetworkBounds, np.ndarray]:
    """Bounds valid for every network the candidates allow, and which rows are invariant.

    Layer by layer: a layer whose inputs are unchanged keeps its clean accumulator
    bounds; then each neuron's range grows by its k worst flips, unless that cannot change
    its output at all. A layer after a faulty one takes the tighter of two sound bounds:
    intervals over the widened inputs, and its clean (symbolic) accumulator bounds moved by
    how far the faulty network's inputs can differ from the clean one's (difference
    propagation, `fault_tolerance.stage_difference`). The second keeps a deep network's
    bounds nearer the clean ones when one first-layer neuron is faulty: on the 3x512 MNIST
    model (image 10 at radius 1) the last two layers' mean accumulator widths went from
    33057 and 53382 to 26100 and 40413 (clean: 8695 and 8420)."""
    invariant = np.zeros(len(cands), dtype=bool)
    layers = list(clean.layers)
    widened = False
    diff_lo = diff_hi = None  # faulty minus clean outputs of the layer before, once widened
    for index, layer in enumerate(qnn.layers):
        here = np.flatnonzero(cands.layer == index)
        if not widened and here.size == 0:
            continue
        if not isinstance(layer, Dense):
            if widened:
                raise ValueError(f"layer {index}: fault bounds need dense layers after a faulty one")
            continue
        form = qnn.linear_form(index)
        old = clean.layers[index]
        lo_in, hi_in = (clean.input_lo, clean.input_hi) if index == 0 else (layers[index - 1].lo, layers[index - 1].hi)
        if widened:
            acc_lo, acc_hi = interval_product(form.matrix, lo_in, hi_in)
            move_lo, move_hi = interval_product(form.matrix, diff_lo, diff_hi)
            acc_lo = np.maximum(acc_lo + form.offset, old.acc_lo + move_lo)
            acc_hi = np.minimum(acc_hi + form.offset, old.acc_hi + move_hi)
        else:
            acc_lo, acc_hi = old.acc_lo, old.acc_hi
            move_lo = move_hi = np.zeros(acc_lo.shape, dtype=np.int64)
        sub = cands.subset(here)
        view = NetworkBounds(clean.input_lo, clean.input_hi, tuple(layers))
        low, high = row_perturbation(qnn, sub, view)
        size = form.matrix.shape[0]
        down = _top_k_sums(sub.neuron, -low, k, size)
        up = _top_k_sums(sub.neuron, high, k, size)
        wide_lo, wide_hi = acc_lo - down, acc_hi + up
        out_lo = layer.output(wide_lo, form.channels)
        out_hi = layer.output(wide_hi, form.channels)
        clean_lo, clean_hi = layer.output(acc_lo, form.channels), layer.output(acc_hi, form.channels)
        fixed = (out_lo == out_hi) & (out_lo == clean_lo) & (clean_lo == clean_hi) & within_width(qnn, wide_lo, wide_hi)
        invariant[here] = fixed[sub.neuron]
        keep_wide = ~fixed
        acc_lo = np.where(keep_wide, wide_lo, acc_lo)
        acc_hi = np.where(keep_wide, wide_hi, acc_hi)
        out_lo = np.where(keep_wide, out_lo, clean_lo)
        out_hi = np.where(keep_wide, out_hi, clean_hi)
        diff_lo, diff_hi = stage_difference(layer.output, form.channels, old.acc_lo, old.acc_hi,
                                            move_lo - down, move_hi + up)
        diff_lo = np.maximum(diff_lo, out_lo - old.hi)
        diff_hi = np.minimum(diff_hi, out_hi - old.lo)
        # a neuron that may differ from the clean one widens what follows even when its range
        # does not move: the clean bounds of the next layer rest on how the clean values co-vary
        widened = widened or bool(np.any((diff_lo != 0) | (diff_hi != 0)))
        overflow = ~within_width(qnn, acc_lo, acc_hi)
        layers[index] = LayerBounds(out_lo, out_hi, acc_lo, acc_hi, overflow)
    return NetworkBounds(clean.input_lo, clean.input_hi, tuple(layers)), invariant


def group_bounds(analysis: SymbolicAnalysis, cands: Candidates, k: int) -> NetworkBounds:
    """`fault_bounds` for a group of flips that the exact stage encodes, narrowed by the
    shifted symbolic analysis (`fault_perturb.tighten_one_neuron`) when the whole group
    sits on one neuron, as it does under scope "one" or k = 1."""
    qnn, clean = analysis.network, analysis.bounds
    bounds, _ = fault_bounds(qnn, clean, cands, k)
    layers, neurons = np.unique(cands.layer), np.unique(cands.neuron)
    if layers.size != 1 or neurons.size != 1:
        return bounds
    low, high = row_perturbation(qnn, cands, clean)
    one_group = np.zeros(len(cands), dtype=np.int64)
    down, up = _top_k_sums(one_group, -low, k, 1)[0], _top_k_sums(one_group, high, k, 1)[0]
    return tighten_one_neuron(analysis, bounds, int(layers[0]), int(neurons[0]), -int(down), int(up))


def within_width(qnn: QNN, acc_lo: np.ndarray, acc_hi: np.ndarray) -> np.ndarray:
    """Accumulator ranges inside the declared width: outside it, wraparound or an error
    changes the meaning, so no shortcut that reads the plain staircase applies there."""
    limit = np.int64(1) << (qnn.accumulator_bits - 1)
    return (acc_lo >= -limit) & (acc_hi < limit)


def prune(query: Query, analysis: SymbolicAnalysis, cands: Candidates, model: FaultModel,
          deadline: float = math.inf, symbolic: bool = True) -> Pruning:
    """Drop the candidate rows that provably cannot break the property: invariant neurons
    first (cheapest), then, where a fault touches one parameter, the interval tolerance
    and last (unless `symbolic` is off) the shifted symbolic analysis for what is left."""
    qnn, violation, clean = query.network, query.violation, analysis.bounds
    _, invariant = fault_bounds(qnn, clean, cands, model.k)
    keep = ~invariant
    by_tolerance = by_symbolic = 0
    if (model.scope == "one" or model.k == 1) and np.any(keep):
        keep, by_tolerance = _tolerance_pass(qnn, analysis, violation, cands, model.k, keep)
        if symbolic:
            keep, by_symbolic = _symbolic_pass(query, analysis, cands, model.k, keep, deadline)
    return Pruning(cands.subset(keep), clean, len(cands), cands.parameters, int(invariant.sum()), by_tolerance,
                   by_symbolic)


def _symbolic_pass(query: Query, analysis: SymbolicAnalysis, cands: Candidates, k: int,
                   keep: np.ndarray, deadline: float) -> tuple[np.ndarray, int]:
    clean = analysis.bounds
    keep = keep.copy()
    pruned = 0
    for index in np.unique(cands.layer[keep]):
        rows = np.flatnonzero(keep & (cands.layer == index))
        part = cands.subset(rows)
        moves = parameter_moves(query.network, part, k, clean)
        low, high = np.minimum(moves.low, 0)[moves.row_param], np.maximum(moves.high, 0)[moves.row_param]
        acc = clean.layers[int(index)]
        inside = within_width(query.network, acc.acc_lo[part.neuron] + low, acc.acc_hi[part.neuron] + high)
        chosen = np.flatnonzero(inside)
        harmless = np.zeros(len(part), dtype=bool)
        if chosen.size:  # with k > 1 a retry on low bits alone would miss flip sets mixing in a high bit
            harmless[chosen] = harmless_rows(analysis, query.violation, part.subset(chosen), low[chosen],
                                             high[chosen], low_bit_retry=k == 1, deadline=deadline)
        keep[rows[harmless]] = False
        pruned += int(harmless.sum())
    return keep, pruned


def _tolerance_pass(qnn: QNN, analysis: SymbolicAnalysis, violation: Violation, cands: Candidates, k: int,
                    keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Scope "one": keep a parameter only if one of its flipped values leaves the tolerance."""
    check = DifferenceCheck(qnn, analysis, violation)
    keep = keep.copy()
    live_rows = np.flatnonzero(keep)
    live = cands.subset(live_rows)
    harmless_rows = np.zeros(len(live), dtype=bool)
    for index in np.unique(live.layer):
        here = np.flatnonzero(live.layer == index)
        moves = parameter_moves(qnn, live.subset(here), k, analysis.bounds)
        size = qnn.layers[int(index)].weight.shape[0]
        need_up = np.zeros(size, dtype=np.int64)
        need_down = np.zeros(size, dtype=np.int64)
        np.maximum.at(need_up, moves.neuron, np.maximum(moves.high, 0))
        np.maximum.at(need_down, moves.neuron, np.maximum(-moves.low, 0))
        neurons = np.flatnonzero((need_up > 0) | (need_down > 0))
        up = np.zeros(size, dtype=np.int64)
        down = np.zeros(size, dtype=np.int64)
        if neurons.size:
            up[neurons] = tolerances(check, int(index), neurons, need_up[neurons], upward=True)
            down[neurons] = tolerances(check, int(index), neurons, need_down[neurons], upward=False)
        clean = analysis.bounds.layers[int(index)]
        inside = within_width(qnn, clean.acc_lo[moves.neuron] + moves.low, clean.acc_hi[moves.neuron] + moves.high)
        harmless = (moves.high <= up[moves.neuron]) & (-moves.low <= down[moves.neuron]) & inside
        for p in np.flatnonzero(harmless & moves.mixed):
            harmless[p] = bool(check.holds(int(index), moves.neuron[p:p + 1], moves.low[p:p + 1],
                                           moves.high[p:p + 1])[0])
        harmless_rows[here] = harmless[moves.row_param]
    keep[live_rows[harmless_rows]] = False
    return keep, int(harmless_rows.sum())


@dataclass(frozen=True)
class ParameterMoves:
    """Per parameter of one layer (per candidate row when k = 1, so that a harmless low bit
    is pruned even where the sign bit of the same weight is not): its neuron and how far its flipped values move the
    accumulator; `mixed` where one flipped value can move it both ways (an input that
    spans zero), so the tolerance of each direction alone does not cover it."""

    neuron: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mixed: np.ndarray
    row_param: np.ndarray  # per candidate row, its parameter's position in these arrays


def parameter_moves(qnn: QNN, cands: Candidates, k: int, bounds: NetworkBounds) -> ParameterMoves:
    """A flipped value adds D * f, where D sums <= k of the parameter's deltas and f is
    x - xz (1 for a bias). D ranges over [-(k largest negative sum), k largest positive
    sum] and f over the input's bounds, so the extremes sit at the corners."""
    key = cands.param if k > 1 else np.arange(len(cands))  # one flip: each row is its own flipped value
    params, first, row_param = np.unique(key, return_index=True, return_inverse=True)
    size = params.size
    most = _top_k_sums(row_param, cands.delta, k, size)
    least = -_top_k_sums(row_param, -cands.delta, k, size)
    index = int(cands.layer[0])
    zero = qnn.layers[index].input_zero
    x_lo, x_hi = bounds.before(index)
    column = cands.column[first]
    bias = cands.bias[first]
    a = np.where(bias, 1, x_lo[np.where(bias, 0, column)] - zero)
    b = np.where(bias, 1, x_hi[np.where(bias, 0, column)] - zero)
    corners = np.stack([most * a, most * b, least * a, least * b])
    return ParameterMoves(cands.neuron[first], corners.min(axis=0), corners.max(axis=0), (a < 0) & (b > 0),
                          row_param)


@dataclass(frozen=True)
class Screening:
    keep: np.ndarray  # bool per candidate row: in some flip set the bounds did not settle
    open_sets: list[tuple[int, ...]]  # the flip sets (candidate rows) not settled ...
    open_queries: list[Query]  # ... and each one's query on its faulty network (analysed, where reached)
    screened: int  # flip sets analysed before the deadline


def screen(query: Query, cands: Candidates, model: FaultModel, limit: int, deadline: float) -> Screening | None:
    """Symbolic bounds of each faulty network the candidates allow, one flip set at a time;
    None when there are more than `limit` sets. A row stays if any set holding it is not
    proved, or was not reached by the deadline (sound: a row that stays is only looked at
    again, by an exact engine, together with the sets already proved). The open sets'
    queries carry their analyses (`analysis_of`), so an engine given them next does not
    compute the bounds again."""
    sets = list(itertools.islice(patterns(cands, model), limit + 1))
    if len(sets) > limit:
        return None
    open_sets, open_queries = [], []
    screened = 0
    for rows in sets:
        faulty = replace(query, network=apply_flips(query.network, [cands.flip(j) for j in rows]))
        if time.perf_counter() <= deadline:
            screened += 1
            if faulty_network_proved(faulty):
                continue
        open_sets.append(rows)
        open_queries.append(faulty)
    keep = np.zeros(len(cands), dtype=bool)
    keep[[j for rows in open_sets for j in rows]] = True
    return Screening(keep, open_sets, open_queries, screened)


def faulty_network_proved(faulty: Query) -> bool:
    """Do the symbolic bounds of a faulty network prove the property? Never where an
    accumulator may leave its width: what that means is the exact engines' to settle."""
    analysis = analysis_of(faulty)
    if analysis.bounds.overflow_sites():
        return False
    violation, everywhere = analysis.prune(faulty.violation)
    return not violation.terms and not everywhere

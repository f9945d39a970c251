"""Symbolic (DeepPoly-style) bounds on the exact integer semantics.

Each requantize-and-clamp stage is a monotone step function of its accumulator. Over
the accumulator's range it is sandwiched between two lines whose offsets are computed
from the exact pieces of the step function (`OutputStage.steps`), so the rounding error
is accounted for exactly rather than as a guessed +-1/2. Back-substituting these lines to
the input gives accumulator bounds that are often far tighter than intervals, which fixes
more neurons before any solver runs.

Arithmetic is float64; every concretised bound is widened by a margin far above the
float64 error of the sums involved, then rounded outward to an integer, so the result
stays sound. MaxPool and Lookup layers act as barriers: symbolic expressions restart
from their interval bounds.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from bitqnn.bounds import AccumulatorShift, LayerBounds, NetworkBounds, interval_bounds, prune_violation
from bitqnn.hull import stage_hull
from bitqnn.line_choice import HullLines, chosen_line_bounds, hull_lines
from bitqnn.qnn import QNN, Conv2d, Dense, Reshape
from bitqnn.query import Box, Query, Violation
from bitqnn.requant import OutputStage

RELATIVE_MARGIN = 1e-9


@dataclass(frozen=True)
class Relaxation:
    """lower_slope*acc + lower_offset <= y <= upper_slope*acc + upper_offset, per neuron."""

    lower_slope: np.ndarray
    lower_offset: np.ndarray
    upper_slope: np.ndarray
    upper_offset: np.ndarray


def _best_line(starts: np.ndarray, ends: np.ndarray, values: np.ndarray, slopes: list[float], upper: bool):
    """Among candidate slopes, the sound line with the least area between it and the steps.
    All candidates at once: this runs for every neuron of every analysis."""
    lengths = (ends - starts + 1).astype(np.float64)
    sums = float(np.sum((starts + ends).astype(np.float64) * lengths / 2.0))  # sum of acc over all pieces
    ks = np.asarray(slopes, dtype=np.float64)
    width, mass = float(np.sum(lengths)), float(np.sum(values * lengths))
    if upper:
        offsets = np.max(values[None, :] - ks[:, None] * starts[None, :], axis=1)
        areas = ks * sums + offsets * width - mass
    else:
        offsets = np.min(values[None, :] - ks[:, None] * ends[None, :], axis=1)
        areas = mass - offsets * width - ks * sums
    best = int(np.argmin(areas))
    k, offset = float(ks[best]), float(offsets[best])
    pad = RELATIVE_MARGIN * (1.0 + abs(offset) + abs(k) * float(max(abs(starts[0]), abs(ends[-1]))))
    return k, offset + pad if upper else offset - pad


def relax_stage(stage: OutputStage, channel: int, acc_lo: int, acc_hi: int) -> tuple[float, float, float, float]:
    """(lower slope, lower offset, upper slope, upper offset) for one neuron.

    Candidate slopes are the flat line, the chord, the central slope and every edge of
    the stage's exact convex hull; the hull edges are what make narrow ranges tight.
    """
    starts, values = stage.steps(channel, acc_lo, acc_hi)
    if len(starts) == 1:
        return 0.0, float(values[0]), 0.0, float(values[0])
    hull = stage_hull(starts, values, acc_hi)
    ends = np.append(starts[1:] - 1, acc_hi)
    values = values.astype(np.float64)
    chord = (values[-1] - values[0]) / float(acc_hi - acc_lo)
    central = (values[-1] - values[0]) / max(float(starts[-1] - ends[0]), 1.0)
    common = [0.0, chord, central]
    lower_k, lower_b = _best_line(starts, ends, values, common + [e.slope for e in hull.lower], upper=False)
    upper_k, upper_b = _best_line(starts, ends, values, common + [e.slope for e in hull.upper], upper=True)
    return lower_k, lower_b, upper_k, upper_b


def _relax_layer(qnn: QNN, index: int, acc_lo: np.ndarray, acc_hi: np.ndarray) -> Relaxation:
    stage = qnn.layers[index].output
    channels = qnn.linear_form(index).channels
    rows = [relax_stage(stage, int(c), int(a), int(b)) for c, a, b in zip(channels, acc_lo, acc_hi, strict=True)]
    lk, lb, uk, ub = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return Relaxation(lk, lb, uk, ub)


class _Tightener:
    def __init__(self, qnn: QNN, box: Box, choose_lines: bool = False, shift: AccumulatorShift | None = None,
                 prefix: _Tightener | None = None) -> None:
        """`prefix`: an analysis of the same network and box, unshifted, whose layers before
        the shifted one are taken as they are (a shift changes nothing before its layer)."""
        if shift is not None and choose_lines:
            raise ValueError("chosen lines do not model an accumulator shift")
        self.qnn = qnn
        self.shift = shift
        self.loose = interval_bounds(qnn, box, shift)
        self.relaxations: dict[int, Relaxation] = {}
        self.choose_lines = choose_lines  # each bound picks its own hull edges (line_choice)
        self.hull: dict[int, HullLines] = {}
        self.layers: list[LayerBounds] = []
        self.input_lo = box.lo.astype(np.float64)
        self.input_hi = box.hi.astype(np.float64)
        if prefix is not None and shift is not None:
            self.layers = list(prefix.layers[:shift.layer])
            self.relaxations = {i: r for i, r in prefix.relaxations.items() if i < shift.layer}

    def concrete_before(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index == 0:
            return self.input_lo, self.input_hi
        return self.layers[index - 1].lo.astype(np.float64), self.layers[index - 1].hi.astype(np.float64)

    def accumulator_bounds(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on layer `index`'s accumulators."""
        form = self.qnn.linear_form(index)
        low, high = self.backsubstitute(form.matrix.astype(np.float64), form.offset.astype(np.float64), index - 1)
        if self._shifted(index):
            low, high = low + self.shift.lo, high + self.shift.hi
        return low, high

    def _shifted(self, index: int) -> bool:
        return self.shift is not None and self.shift.layer == index

    def walk_back(self, coeffs: np.ndarray, const: np.ndarray, last: int):
        """Linear upper and lower functions of coeffs @ (outputs of layer `last`) + const in
        the inputs of the first layer it reaches back to (a barrier, or the network input).
        Returns (upper, upper_const, lower, lower_const, magnitude, reached)."""
        upper, upper_const = coeffs, const
        lower, lower_const = coeffs.copy(), const.copy()
        magnitude = np.abs(const)
        current = last
        while current >= 0 and self._symbolic(current):
            if current in self.relaxations:
                rel = self.relaxations[current]
                upper, upper_const = self._through(upper, upper_const, rel, current, upper_side=True)
                lower, lower_const = self._through(lower, lower_const, rel, current, upper_side=False)
                magnitude = magnitude + np.abs(upper_const) + np.abs(lower_const)
            current -= 1
        return upper, upper_const, lower, lower_const, magnitude, current + 1

    def backsubstitute(self, coeffs: np.ndarray, const: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer bounds on coeffs @ (outputs of layer `last`) + const, walking back to a barrier."""
        upper, upper_const, lower, lower_const, magnitude, reached = self.walk_back(coeffs, const, last)
        lo_in, hi_in = self.concrete_before(reached)
        high = np.maximum(upper, 0) @ hi_in + np.minimum(upper, 0) @ lo_in + upper_const
        low = np.maximum(lower, 0) @ lo_in + np.minimum(lower, 0) @ hi_in + lower_const
        reach = np.maximum(np.abs(lo_in), np.abs(hi_in))
        margin = RELATIVE_MARGIN * (1.0 + magnitude + np.abs(upper) @ reach + np.abs(lower) @ reach)
        return np.floor(low - margin).astype(np.int64), np.ceil(high + margin).astype(np.int64)

    def _symbolic(self, index: int) -> bool:
        return index in self.relaxations or isinstance(self.qnn.layers[index], Reshape)

    def _through(self, coeffs: np.ndarray, const: np.ndarray, rel: Relaxation, index: int, upper_side: bool):
        """Replace layer `index`'s outputs by its relaxation, then its accumulator by its inputs."""
        positive, negative = np.maximum(coeffs, 0), np.minimum(coeffs, 0)
        if upper_side:
            slope = positive * rel.upper_slope + negative * rel.lower_slope
            const = const + positive @ rel.upper_offset + negative @ rel.lower_offset
        else:
            slope = positive * rel.lower_slope + negative * rel.upper_slope
            const = const + positive @ rel.lower_offset + negative @ rel.upper_offset
        if self._shifted(index):  # the shift enters this layer's accumulators only, so this is exact
            up, down = (self.shift.hi, self.shift.lo) if upper_side else (self.shift.lo, self.shift.hi)
            const = const + np.maximum(slope, 0) @ up + np.minimum(slope, 0) @ down
        form = self.qnn.linear_form(index)
        return slope @ form.matrix, const + slope @ form.offset

    def run(self) -> NetworkBounds:
        for index in range(len(self.layers), len(self.qnn.layers)):
            layer = self.qnn.layers[index]
            loose = self.loose.layers[index]
            if not isinstance(layer, Dense | Conv2d) or (loose.may_overflow is not None and loose.may_overflow.any()):
                self.layers.append(self._recompute_nonlinear(index, loose))
                continue
            low, high = self.accumulator_bounds(index)
            if self.choose_lines and index > 0:
                chosen_low, chosen_high = chosen_line_bounds(self, index)
                low, high = np.maximum(low, chosen_low), np.minimum(high, chosen_high)
            acc_lo = np.maximum(low, loose.acc_lo)
            acc_hi = np.minimum(high, loose.acc_hi)
            channels = self.qnn.linear_form(index).channels
            bounds = LayerBounds(layer.output(acc_lo, channels), layer.output(acc_hi, channels),
                                 acc_lo, acc_hi, loose.may_overflow)
            self.layers.append(bounds)
            if layer.output.requant is not None or layer.output.lo is not None or layer.output.hi is not None:
                self.relaxations[index] = _relax_layer(self.qnn, index, acc_lo, acc_hi)
                if self.choose_lines:
                    self.hull[index] = hull_lines(layer.output, channels, acc_lo, acc_hi)
            else:
                ones = np.ones(acc_lo.shape)
                self.relaxations[index] = Relaxation(ones, np.zeros(acc_lo.shape), ones, np.zeros(acc_lo.shape))
                if self.choose_lines:
                    self.hull[index] = HullLines.identity(acc_lo.size)
        return NetworkBounds(self.loose.input_lo, self.loose.input_hi, tuple(self.layers))

    def _recompute_nonlinear(self, index: int, loose: LayerBounds) -> LayerBounds:
        """Interval step for a barrier layer, fed by the tighter bounds computed so far."""
        if index == 0:
            return loose
        lo, hi = self.layers[index - 1].lo, self.layers[index - 1].hi
        shift = AccumulatorShift(0, self.shift.lo, self.shift.hi) if self._shifted(index) else None
        partial = interval_bounds(_suffix(self.qnn, index), Box(lo, hi), shift)
        return partial.layers[0]


def _suffix(qnn: QNN, index: int) -> QNN:
    """The network from layer `index` on, for interval steps on tightened inputs."""
    from dataclasses import replace

    return replace(qnn, input_shape=qnn.shapes[index], layers=qnn.layers[index:], _cache={})


class SymbolicAnalysis:
    """Tightened bounds for a box, plus bounds on linear functions of the outputs.

    `choose_lines`: every accumulator bound past the first layer also picks its own hull
    edges per neuron (`line_choice`), tighter where roundings are coarse, for a few more
    back-substitutions.
    """

    def __init__(self, qnn: QNN, box: Box, choose_lines: bool = False, shift: AccumulatorShift | None = None,
                 prefix: SymbolicAnalysis | None = None) -> None:
        self._tightener = _Tightener(qnn, box, choose_lines, shift, prefix._tightener if prefix else None)
        self.bounds = self._tightener.run()

    @property
    def network(self) -> QNN:
        return self._tightener.qnn

    def shifted(self, shift: AccumulatorShift) -> SymbolicAnalysis:
        """The same network and box with `shift` added to one layer's accumulators; the
        layers before it are this analysis's, so a shifted analysis costs only the rest."""
        return SymbolicAnalysis(self.network, Box(self.bounds.input_lo, self.bounds.input_hi),
                                shift=shift, prefix=self)

    def prune(self, violation: Violation) -> tuple[Violation, bool]:
        """`prune_violation` with each atom bounded by back-substitution, not by output intervals."""
        return prune_violation(violation, self.bounds.output, lambda atom: self.output_range(atom.terms))

    def output_range(self, terms: tuple[tuple[int, int], ...]) -> tuple[int, int]:
        """Sound integer range of sum(c * y[i]) over the box, by back-substitution."""
        coeffs = np.zeros((1, self.bounds.output.lo.size))
        for index, c in terms:
            coeffs[0, index] += c
        low, high = self._tightener.backsubstitute(coeffs, np.zeros(1), len(self._tightener.qnn.layers) - 1)
        return int(low[0]), int(high[0])

    def input_influence(self, terms: tuple[tuple[int, int], ...]) -> np.ndarray | None:
        """How much each input's range moves the linear bounds of sum(c * y[i]): the
        coefficient sizes times the input widths. None when a layer the analysis treats
        by intervals (max-pool, lookup) stops the bounds from reaching the input."""
        coeffs = np.zeros((1, self.bounds.output.lo.size))
        for index, c in terms:
            coeffs[0, index] += c
        upper, _, lower, _, _, reached = self._tightener.walk_back(
            coeffs, np.zeros(1), len(self._tightener.qnn.layers) - 1)
        if reached != 0:
            return None
        width = self._tightener.input_hi - self._tightener.input_lo
        return (np.abs(upper[0]) + np.abs(lower[0])) * width


_ANALYSES: weakref.WeakKeyDictionary[Query, SymbolicAnalysis] = weakref.WeakKeyDictionary()


def analysis_of(query: Query) -> SymbolicAnalysis:
    """The query's analysis, computed once however many portfolio stages ask for it."""
    if query not in _ANALYSES:
        _ANALYSES[query] = SymbolicAnalysis(query.network, query.region)
    return _ANALYSES[query]


def symbolic_bounds(qnn: QNN, box: Box) -> NetworkBounds:
    return SymbolicAnalysis(qnn, box).bounds

"""Differential reachability analysis: bounds on QNN(x) - f(x) over an input box.

Three modes, kept side by side so their precision can be compared on the same queries:

- `naive`: bound each network on its own and subtract the intervals. Both ranges are as
  wide as the box makes them, while their difference may be tiny, so this is the baseline.
- `concrete`: carry an interval for the difference itself through every layer.
  The accumulator difference is W_q (y_q - y_f) + (W_q - W_f) y_f + (b_q - b_f), and the
  activation difference splits into clamp_q(a_q) - clamp_q(a_f) (1-Lipschitz, so within
  [min(0, da), max(0, da)]), clamp_q(a_f) - clip_f(a_f) (where only one network clamps) and
  the rounding error read off the exact step function.
- `symbolic`: linear bounds on the difference itself, back-substituted through both
  networks to the shared real input (`bitqnn.dra_backsub`). Each activation difference is
  bounded by lines from both networks' relaxations (the QNN's clamp-plus-rounding and the
  float ReLU, each a piecewise-linear map between two lines), where the input terms
  cancel exactly if both are surely linear, or by lines in the accumulator difference
  alone; per neuron the tighter. Met with the concrete interval at every layer.

The float network's own bounds, which every mode but `naive` starts from, are
back-substituted too.

All arithmetic is float64 with every concretised bound widened by a relative margin far
above its rounding error; the result bounds the exact real difference, which the tests
check against the executor and a float64 forward pass.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from bitqnn.bounds import NetworkBounds, interval_bounds, interval_product
from bitqnn.dra_backsub import BackSubstitution, DifferenceLines, FloatLines, Line
from bitqnn.error_query import ErrorQuery
from bitqnn.floatnet import FloatNetwork
from bitqnn.pairing import RELATIVE_MARGIN, PairedLayer, clip_gap, pair_layers, rounding_error
from bitqnn.qnn import QNN
from bitqnn.query import Box
from bitqnn.symbolic import SymbolicAnalysis

MODES = ("naive", "concrete", "symbolic")
TIE = 1e-6  # relative difference under which a line counts as no looser than the tightest candidate


@dataclass(frozen=True)
class DifferenceBounds:
    """Per output: lo <= QNN_real(x) - f(x) <= hi for every x in the box."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def width(self) -> np.ndarray:
        return self.hi - self.lo

    def max_abs(self, outputs: tuple[int, ...] | None = None) -> float:
        """An upper bound on the L-inf error over the box (on the given outputs, else all)."""
        columns = slice(None) if outputs is None else list(outputs)
        return float(np.max(np.maximum(np.abs(self.lo[columns]), np.abs(self.hi[columns]))))


def _widen(lo: np.ndarray, hi: np.ndarray, magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pad = RELATIVE_MARGIN * (1.0 + magnitude)
    return lo - pad, hi + pad


def _affine(weight: np.ndarray, lo: np.ndarray, hi: np.ndarray, bias: np.ndarray | float = 0.0):
    low, high = interval_product(weight, lo, hi)
    low, high = low + bias, high + bias
    return _widen(low, high, np.abs(weight) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(bias))


def _real_box(qnn: QNN, box: Box) -> tuple[np.ndarray, np.ndarray]:
    scale, zero = qnn.input_scale, qnn.input_zero
    return scale * (box.lo - zero).astype(np.float64), scale * (box.hi - zero).astype(np.float64)


def _q_real_accumulators(layer: PairedLayer, bounds: NetworkBounds) -> tuple[np.ndarray, np.ndarray]:
    b = bounds.layers[layer.index]
    lo = layer.acc_scale * b.acc_lo + layer.acc_shift
    hi = layer.acc_scale * b.acc_hi + layer.acc_shift
    return _widen(lo, hi, np.abs(lo) + np.abs(hi))


def _q_real_outputs(layer: PairedLayer, bounds: NetworkBounds) -> tuple[np.ndarray, np.ndarray]:
    if layer.stage.requant is None and layer.stage.lo is None and layer.stage.hi is None:
        return _q_real_accumulators(layer, bounds)
    b = bounds.layers[layer.index]
    lo, hi = layer.out_scale * (b.lo - layer.stage.zero), layer.out_scale * (b.hi - layer.stage.zero)
    return _widen(lo, hi, np.abs(lo) + np.abs(hi))


def _clip(values: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    return values if clip is None else np.clip(values, *clip)


@dataclass(frozen=True)
class HiddenDifference:
    """Bounds on QNN_real - f at one layer, before its activations (accumulators) and after."""

    pre_lo: np.ndarray
    pre_hi: np.ndarray
    post_lo: np.ndarray
    post_hi: np.ndarray


class DifferentialAnalysis:
    """Everything the modes share: the paired layers and each network's own bounds."""

    def __init__(self, float_net: FloatNetwork, qnn: QNN, box: Box) -> None:
        self.float_net, self.qnn, self.box = float_net, qnn, box
        self.layers = pair_layers(float_net, qnn)
        self.x_lo, self.x_hi = _real_box(qnn, box)
        # the naive baseline sees plain intervals; the other modes start from each
        # network's tightest own bounds
        self.q_intervals = interval_bounds(qnn, box)
        self.float_intervals = self._float_intervals()
        self.q_bounds = SymbolicAnalysis(qnn, box, choose_lines=True).bounds
        self.hidden: dict[int, HiddenDifference] = {}  # per paired layer, filled by `symbolic`
        self._results: dict[str, DifferenceBounds] = {}
        self.rounding = {layer.index: rounding_error(layer, self.q_bounds.layers[layer.index].acc_lo,
                                                     self.q_bounds.layers[layer.index].acc_hi)
                         for layer in self.layers}
        self.lines = BackSubstitution(self.layers, self.x_lo, self.x_hi)
        self.float_pre = self._float_symbolic()

    def _float_intervals(self) -> list[tuple[np.ndarray, np.ndarray]]:
        pre, lo, hi = [], self.x_lo, self.x_hi
        for layer in self.layers:
            a_lo, a_hi = _affine(layer.float_weight, lo, hi, layer.float_bias)
            pre.append((a_lo, a_hi))
            lo, hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        return pre

    def _float_symbolic(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pre-activation bounds of the float network by back-substitution, met with intervals;
        each layer's relaxation is registered for the layers after it (and the symbolic mode)."""
        pre = []
        for position, (layer, (i_lo, i_hi)) in enumerate(zip(self.layers, self.float_intervals, strict=True)):
            eye = np.eye(layer.float_bias.size)
            lo = np.maximum(i_lo, self.lines.lower(position, None, eye, post=False))
            hi = np.maximum(np.minimum(i_hi, self.lines.upper(position, None, eye, post=False)), lo)
            pre.append((lo, hi))
            self.lines.float_lines.append(FloatLines(*_relax(_float_clamp(layer), lo, hi)))
        return pre

    def run(self, mode: str) -> DifferenceBounds:
        """The mode's bounds, computed once per analysis however often they are asked for."""
        if mode not in MODES:
            raise ValueError(f"unknown DRA mode {mode!r}; choose from {', '.join(MODES)}")
        if mode not in self._results:
            self._results[mode] = {"naive": self.naive, "concrete": self.concrete, "symbolic": self.symbolic}[mode]()
        return self._results[mode]

    def naive(self) -> DifferenceBounds:
        q_lo, q_hi = _q_real_outputs(self.layers[-1], self.q_intervals)
        last = self.layers[-1]
        f_lo, f_hi = (_clip(v, last.float_clip) for v in self.float_intervals[-1])
        return DifferenceBounds(*_widen(q_lo - f_hi, q_hi - f_lo, np.abs(q_lo) + np.abs(f_hi)))

    def concrete(self) -> DifferenceBounds:
        f_lo, f_hi = self.x_lo, self.x_hi
        d_lo = d_hi = np.zeros(self.x_lo.shape)  # both networks see the same real input
        for layer, (a_lo, a_hi) in zip(self.layers, self.float_pre, strict=True):
            d_lo, d_hi = self._activation_difference(layer, a_lo, a_hi, *self._accumulator_difference(
                layer, f_lo, f_hi, d_lo, d_hi, a_lo, a_hi))
            f_lo, f_hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        return DifferenceBounds(d_lo, d_hi)

    def _accumulator_difference(self, layer: PairedLayer, f_lo, f_hi, d_lo, d_hi, a_lo, a_hi):
        gap_w = layer.q_weight - layer.float_weight
        lo1, hi1 = _affine(layer.q_weight, d_lo, d_hi)
        lo2, hi2 = _affine(gap_w, f_lo, f_hi, layer.q_bias - layer.float_bias)
        q_lo, q_hi = _q_real_accumulators(layer, self.q_bounds)
        return np.maximum(lo1 + lo2, q_lo - a_hi), np.minimum(hi1 + hi2, q_hi - a_lo)

    def _activation_difference(self, layer: PairedLayer, a_lo, a_hi, da_lo, da_hi):
        e_lo, e_hi = self.rounding[layer.index]
        g_lo, g_hi = clip_gap(layer, a_lo, a_hi)
        lo = np.minimum(0.0, da_lo) + g_lo + e_lo
        hi = np.maximum(0.0, da_hi) + g_hi + e_hi
        if layer.clamp_lo.max() == -np.inf and layer.clamp_hi.min() == np.inf and layer.float_clip is None:
            lo, hi = da_lo + e_lo, da_hi + e_hi  # no activation on either side: the difference passes
        q_lo, q_hi = _q_real_outputs(layer, self.q_bounds)
        f_lo, f_hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        lo, hi = _widen(lo, hi, np.abs(da_lo) + np.abs(da_hi) + np.abs(g_lo) + np.abs(g_hi) + np.abs(e_lo) + 1.0)
        return np.maximum(lo, q_lo - f_hi), np.minimum(hi, q_hi - f_lo)

    def symbolic(self) -> DifferenceBounds:
        """Back-substituted bounds on the difference itself, layer by layer.

        At each layer the accumulator difference is bounded by back-substitution, then
        each neuron's activation difference gets the upper and lower line, among
        `_candidate_lines`, whose back-substituted bound is tightest (a line before the
        constant on a tie: its input dependence can still cancel in later layers). Each
        layer's bounds are met with the concrete mode's, so this is never looser.
        """
        f_lo, f_hi = self.x_lo, self.x_hi
        d_lo = d_hi = np.zeros(self.x_lo.shape)
        del self.lines.difference_lines[:]
        for position, (layer, (a_lo, a_hi)) in enumerate(zip(self.layers, self.float_pre, strict=True)):
            eye, none = np.eye(layer.float_bias.size), np.zeros((layer.float_bias.size,) * 2)
            da_lo, da_hi = self._accumulator_difference(layer, f_lo, f_hi, d_lo, d_hi, a_lo, a_hi)
            da_lo = np.maximum(da_lo, self.lines.lower(position, eye, none, post=False))
            da_hi = np.maximum(np.minimum(da_hi, self.lines.upper(position, eye, none, post=False)), da_lo)
            y_lo, y_hi = self._activation_difference(layer, a_lo, a_hi, da_lo, da_hi)
            ups, lows = self._candidate_lines(position, a_lo, a_hi, da_lo, da_hi)
            up, d_hi = self._tightest(position, [*ups, Line.constant(y_hi)], upper=True)
            low, d_lo = self._tightest(position, [*lows, Line.constant(y_lo)], upper=False)
            d_hi = np.maximum(d_hi, d_lo)
            self.lines.difference_lines.append(DifferenceLines(up, low, *self.rounding[layer.index]))
            self.hidden[layer.index] = HiddenDifference(da_lo, da_hi, d_lo, d_hi)
            f_lo, f_hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        return DifferenceBounds(d_lo, d_hi)

    def _tightest(self, position: int, candidates: list[Line], upper: bool) -> tuple[Line, np.ndarray]:
        """Per neuron, the first candidate whose bound is within TIE of the best, and the best bound."""
        e_lo, e_hi = self.rounding[self.layers[position].index]
        values = []
        for line in candidates:
            value = np.zeros(line.c.shape)
            if line.da.any() or line.af.any():  # a constant needs no margin of its own
                bound = self.lines.upper if upper else self.lines.lower
                value = bound(position, np.diag(line.da), np.diag(line.af), post=False)
            e_low, e_high = np.minimum(line.e * e_lo, line.e * e_hi), np.maximum(line.e * e_lo, line.e * e_hi)
            values.append(value + line.c + (e_high if upper else e_low))
        values = np.array(values)
        best = values.min(axis=0) if upper else values.max(axis=0)
        slack = TIE * (1.0 + np.abs(best))
        chosen = np.argmax(values <= best + slack if upper else values >= best - slack, axis=0)
        pick = np.arange(best.size)
        fields = ("da", "af", "e", "c")
        line = Line(*(np.array([getattr(c, name) for c in candidates])[chosen, pick] for name in fields))
        return line, best

    def _candidate_lines(self, position: int, a_lo, a_hi, da_lo, da_hi) -> tuple[list[Line], list[Line]]:
        """Upper and lower lines on dy = y_q - y_f in (da, a_f, e), each sound over the box.

        With a_q = da + a_f, y_q = clamp_q(a_q) + e, and each network's own relaxation
        (k_low a + b_low <= activation <= k_up a + b_up):
        - both relaxations: dy <= qku da + (qku - fkl) a_f + qbu - fbl + e, where both
          networks are surely linear exactly dy = da + e;
        - the QNN's range against the float relaxation: dy <= q_hi - fkl a_f - fbl;
        - the QNN relaxation against the float range: dy <= qku (da + a_f) + qbu + e - min y_f;
        - da alone: clamp_q(a_f + da) - clamp_q(a_f) lies between min(0, da) and max(0, da)
          (monotone and 1-Lipschitz), so between their chords over [da_lo, da_hi], plus the
          gap clamp_q(a_f) - clip_f(a_f) where only one network clamps, plus e.
        Lower lines mirror these.
        """
        layer, fl = self.layers[position], self.lines.float_lines[position]
        qa_lo, qa_hi = _q_real_accumulators(layer, self.q_bounds)
        qku, qbu, qkl, qbl = _relax(_q_clamp(layer), qa_lo, qa_hi)
        q_lo, q_hi = _q_real_outputs(layer, self.q_bounds)
        f_lo, f_hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        g_lo, g_hi = clip_gap(layer, a_lo, a_hi)
        zero, one = np.zeros(a_lo.shape), np.ones(a_lo.shape)
        mixed = (da_lo < 0) & (da_hi > 0)
        span = np.where(mixed, da_hi - da_lo, 1.0)
        rise = np.where(mixed, da_hi / span, (da_lo >= 0).astype(np.float64))  # the upper chord's slope
        fall = np.where(mixed, -da_lo / span, (da_hi <= 0).astype(np.float64))  # the lower chord's slope
        pad = RELATIVE_MARGIN * (1.0 + np.abs(da_lo) + np.abs(da_hi) + np.abs(g_lo) + np.abs(g_hi))
        ups = [Line(qku, qku - fl.k_low, one, qbu - fl.b_low),
               Line(zero, -fl.k_low, zero, q_hi - fl.b_low),
               Line(qku, qku, one, qbu - f_lo),
               Line(rise, zero, one, -rise * np.minimum(da_lo, 0) + g_hi + pad)]
        lows = [Line(qkl, qkl - fl.k_up, one, qbl - fl.b_up),
                Line(zero, -fl.k_up, zero, q_lo - fl.b_up),
                Line(qkl, qkl, one, qbl - f_hi),
                Line(fall, zero, one, -fall * np.maximum(da_hi, 0) + g_lo - pad)]
        return ups, lows


_ANALYSES: weakref.WeakKeyDictionary[ErrorQuery, DifferentialAnalysis] = weakref.WeakKeyDictionary()


def analysis_for(query: ErrorQuery) -> DifferentialAnalysis:
    """The query's analysis, built once for the pipeline's stages (DRA, MILP, bound report)."""
    if query not in _ANALYSES:
        _ANALYSES[query] = DifferentialAnalysis(query.float_net, query.qnn, query.region)
    return _ANALYSES[query]


def _float_clamp(layer: PairedLayer) -> tuple[np.ndarray, np.ndarray]:
    low, high = layer.float_clip if layer.float_clip is not None else (-np.inf, np.inf)
    return np.full(layer.float_bias.shape, low), np.full(layer.float_bias.shape, high)


def _q_clamp(layer: PairedLayer) -> tuple[np.ndarray, np.ndarray]:
    return layer.clamp_lo, layer.clamp_hi


def _relax(clamp: tuple[np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray):
    """Upper and lower lines (slope, offset) around a -> clip(a, L, H) on [lo, hi], per neuron.

    Each side takes the slope among 0, 1 and the chord whose line stays closest to the map
    at the two ends; its offset is the exact extreme of h(p) - k p, which for this
    piecewise-linear h lies at an end or at a kink (L or H inside the range).
    """
    low, high = clamp
    points = np.stack([lo, hi, np.clip(low, lo, hi), np.clip(high, lo, hi)])
    values = np.clip(points, low, high)
    h_lo, h_hi = np.clip(lo, low, high), np.clip(hi, low, high)
    chord = np.where(hi > lo, (h_hi - h_lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    sides = []
    for upper in (True, False):
        best_k = best_b = best_gap = None
        for k in (np.zeros(lo.shape), np.ones(lo.shape), chord):
            residual = values - k[None, :] * points
            b = residual.max(axis=0) if upper else residual.min(axis=0)
            gap = np.abs(k * lo + b - h_lo) + np.abs(k * hi + b - h_hi)
            if best_gap is None:
                best_k, best_b, best_gap = k, b, gap
            else:
                better = gap < best_gap
                best_k, best_b, best_gap = (np.where(better, k, best_k), np.where(better, b, best_b),
                                            np.minimum(gap, best_gap))
        pad = RELATIVE_MARGIN * (1.0 + np.abs(best_b) + np.abs(lo) + np.abs(hi))
        sides.append((best_k, best_b + pad if upper else best_b - pad))
    (ku, bu), (kl, bl) = sides
    return ku, bu, kl, bl

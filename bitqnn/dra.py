"""Differential reachability analysis: bounds on QNN(x) - f(x) over an input box.

Three modes, kept side by side so their precision can be compared on the same queries:

- `naive`: bound each network on its own and subtract the intervals. Both ranges are as
  wide as the box makes them, while their difference may be tiny, so this is the baseline.
- `concrete`: carry an interval for the difference itself through every layer.
  The accumulator difference is W_q (y_q - y_f) + (W_q - W_f) y_f + (b_q - b_f), and the
  activation difference splits into clamp_q(a_q) - clamp_q(a_f) (1-Lipschitz, so within
  [min(0, da), max(0, da)]), clamp_q(a_f) - clip_f(a_f) (where only one network clamps) and
  the rounding error read off the exact step function.
- `symbolic`: linear bounds in the shared real input on the difference itself. The
  accumulator difference is composed from the previous layer's difference lines and the
  float network's own lines (a forward DeepPoly-style pass); each activation difference is
  bounded by lines from both networks' relaxations (the QNN's clamp-plus-rounding and the
  float ReLU, each a piecewise-linear map between two lines), where the input terms
  cancel exactly if both are surely linear. Met with the concrete interval at every layer.

All arithmetic is float64 with every concretised bound widened by a relative margin far
above its rounding error; the result bounds the exact real difference, which the tests
check against the executor and a float64 forward pass.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from bitqnn.bounds import NetworkBounds, interval_bounds, interval_product
from bitqnn.error_query import ErrorQuery
from bitqnn.floatnet import FloatNetwork
from bitqnn.pairing import RELATIVE_MARGIN, PairedLayer, clip_gap, pair_layers, rounding_error
from bitqnn.qnn import QNN
from bitqnn.query import Box
from bitqnn.symbolic import SymbolicAnalysis

MODES = ("naive", "concrete", "symbolic")
TIE = 1e-6  # relative difference under which a line counts as no looser than a constant


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
        self.q_bounds = SymbolicAnalysis(qnn, box).bounds
        self.hidden: dict[int, HiddenDifference] = {}  # per paired layer, filled by `symbolic`
        self._results: dict[str, DifferenceBounds] = {}
        self.rounding = {layer.index: rounding_error(layer, self.q_bounds.layers[layer.index].acc_lo,
                                                     self.q_bounds.layers[layer.index].acc_hi)
                         for layer in self.layers}
        # the symbolic mode's variables: the real input, then one per rounding QNN neuron
        # (its exact rounding error y_q - clamp(a_q), free in its range)
        self.noise_start: dict[int, int] = {}
        lows, highs = [self.x_lo], [self.x_hi]
        columns = self.x_lo.size
        for layer in self.layers:
            e_lo, e_hi = self.rounding[layer.index]
            if np.any(e_hi > e_lo):
                self.noise_start[layer.index] = columns
                columns += e_lo.size
                lows.append(e_lo)
                highs.append(e_hi)
        self.domain_lo, self.domain_hi = np.concatenate(lows), np.concatenate(highs)
        self.float_pre = self._float_symbolic()

    def _float_intervals(self) -> list[tuple[np.ndarray, np.ndarray]]:
        pre, lo, hi = [], self.x_lo, self.x_hi
        for layer in self.layers:
            a_lo, a_hi = _affine(layer.float_weight, lo, hi, layer.float_bias)
            pre.append((a_lo, a_hi))
            lo, hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        return pre

    def _float_symbolic(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pre-activation bounds of the float network from its own linear bounds."""
        up = low = self._input_lines()
        pre = []
        for layer, (a_lo, a_hi) in zip(self.layers, self.float_intervals, strict=True):
            up, low, bounds = self._through(layer.float_weight, layer.float_bias, up, low, a_lo, a_hi,
                                            _float_clamp(layer))
            pre.append(bounds)
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
        """Linear bounds in x on the difference itself, layer by layer.

        Each activation's difference is bounded by lines built from the two networks'
        own relaxations (`_difference_lines`), or by the concrete interval for a neuron
        where that is tighter. Each layer's bounds are met with the concrete mode's, so
        this is never looser.
        """
        n = self.x_lo.size
        zero = (np.zeros((n, self.domain_lo.size)), np.zeros(n))
        f_up = f_low = self._input_lines()
        d_up, d_low = zero, zero
        f_lo, f_hi = self.x_lo, self.x_hi
        d_lo = d_hi = np.zeros(n)
        for layer, (a_lo, a_hi) in zip(self.layers, self.float_pre, strict=True):
            da_lo, da_hi = self._accumulator_difference(layer, f_lo, f_hi, d_lo, d_hi, a_lo, a_hi)
            gap = layer.q_weight - layer.float_weight
            da_up = _compose(layer.q_weight, d_up, d_low, gap, f_up, f_low, layer.q_bias - layer.float_bias)
            da_low = _compose(layer.q_weight, d_low, d_up, gap, f_low, f_up, layer.q_bias - layer.float_bias)
            da_lo = np.maximum(da_lo, self._concretise(*da_low, upper=False))
            da_hi = np.minimum(da_hi, self._concretise(*da_up, upper=True))
            y_lo, y_hi = self._activation_difference(layer, a_lo, a_hi, da_lo, da_hi)
            af_up, af_low = _affine_lines(layer.float_weight, layer.float_bias, f_up, f_low)
            d_up, d_low = self._difference_lines(layer, da_up, da_low, af_up, af_low, a_lo, a_hi)
            qa_lo, qa_hi = _q_real_accumulators(layer, self.q_bounds)
            f_clamp_lo, f_clamp_hi = _float_clamp(layer)
            passes = ((a_lo >= f_clamp_lo) & (a_hi <= f_clamp_hi)
                      & (qa_lo >= layer.clamp_lo) & (qa_hi <= layer.clamp_hi))
            f_up, f_low, _ = self._through(layer.float_weight, layer.float_bias, f_up, f_low, a_lo, a_hi,
                                           _float_clamp(layer))
            q_lo, q_hi = _q_real_outputs(layer, self.q_bounds)
            for up, low in (self._lipschitz_lines(layer, da_up, da_low, da_lo, da_hi, a_lo, a_hi),
                            ((-f_low[0], q_hi - f_low[1]), (-f_up[0], q_lo - f_up[1]))):
                d_up = self._tighter(d_up, up, passes, upper=True)
                d_low = self._tighter(d_low, low, passes, upper=False)
            d_up = self._or_constant(d_up, y_hi, passes, upper=True)
            d_low = self._or_constant(d_low, y_lo, passes, upper=False)
            d_lo = np.maximum(y_lo, self._concretise(*d_low, upper=False))
            d_hi = np.minimum(y_hi, self._concretise(*d_up, upper=True))
            self.hidden[layer.index] = HiddenDifference(da_lo, da_hi, d_lo, d_hi)
            f_lo, f_hi = _clip(a_lo, layer.float_clip), _clip(a_hi, layer.float_clip)
        return DifferenceBounds(d_lo, d_hi)

    def _difference_lines(self, layer: PairedLayer, da_up, da_low, af_up, af_low, a_lo, a_hi):
        """Linear bounds on y_q - y_f from each network's activation relaxation.

        With y_q <= ku a_q + bu + e and y_f >= kl' a_f + bl', and a_q = da + a_f:
        y_q - y_f <= ku da + (ku - kl') a_f + (bu + e - bl'), and symmetrically below. Where
        both networks are surely linear the a_f terms cancel and the difference passes
        through exactly; elsewhere the remaining a_f term keeps its input dependence.
        """
        qa_lo, qa_hi = _q_real_accumulators(layer, self.q_bounds)
        qku, qbu, qkl, qbl = _relax(_q_clamp(layer), qa_lo, qa_hi)
        fku, fbu, fkl, fbl = _relax(_float_clamp(layer), a_lo, np.maximum(a_hi, a_lo))
        upper = _plus(_scaled(da_up, da_low, qku), _scaled(af_up, af_low, qku - fkl), qbu - fbl)
        lower = _plus(_scaled(da_low, da_up, qkl), _scaled(af_low, af_up, qkl - fku), qbl - fbu)
        return _plus(upper, self._rounding_line(layer, True), 0.0), _plus(lower, self._rounding_line(layer, False), 0.0)

    def _lipschitz_lines(self, layer: PairedLayer, da_up, da_low, da_lo, da_hi, a_lo, a_hi):
        """Linear bounds on y_q - y_f in the accumulator difference alone.

        y_q - y_f = [clamp_q(a_f + da) - clamp_q(a_f)] + [clamp_q(a_f) - clip_f(a_f)] + e. The
        first part lies between min(0, da) and max(0, da) (clamp_q is monotone and
        1-Lipschitz); over da in [dl, du] the chords of those two maps bound it by lines in
        da, hence in x. Unlike the two networks' own relaxations, these keep no float
        accumulator term, so they stay tight on neurons neither network has surely fixed.
        """
        g_lo, g_hi = clip_gap(layer, a_lo, a_hi)
        mixed = (da_lo < 0) & (da_hi > 0)
        span = np.where(mixed, da_hi - da_lo, 1.0)
        rise = np.where(mixed, da_hi / span, (da_lo >= 0).astype(np.float64))  # slope of the upper chord
        fall = np.where(mixed, -da_lo / span, (da_hi <= 0).astype(np.float64))  # slope of the lower chord
        pad = RELATIVE_MARGIN * (1.0 + np.abs(da_lo) + np.abs(da_hi) + np.abs(g_lo) + np.abs(g_hi))
        upper = (rise[:, None] * da_up[0], rise * da_up[1] - rise * np.minimum(da_lo, 0) + g_hi + pad)
        lower = (fall[:, None] * da_low[0], fall * da_low[1] - fall * np.maximum(da_hi, 0) + g_lo - pad)
        return _plus(upper, self._rounding_line(layer, True), 0.0), _plus(lower, self._rounding_line(layer, False), 0.0)

    def _tighter(self, line, other, passes: np.ndarray, upper: bool):
        """Per neuron, `line` where the difference passes through linearly or where it
        concretises no worse than `other`, else `other`."""
        mine, theirs = self._concretise(*line, upper=upper), self._concretise(*other, upper=upper)
        keep = passes | (mine <= theirs if upper else mine >= theirs)
        return np.where(keep[:, None], line[0], other[0]), np.where(keep, line[1], other[1])

    def _or_constant(self, line, constant: np.ndarray, passes: np.ndarray, upper: bool):
        """Per neuron, the line where the difference passes through linearly (its input
        dependence pays off in later layers even when it concretises looser, as measured),
        or elsewhere where it concretises no worse than the constant bound."""
        value = self._concretise(*line, upper=upper)
        slack = TIE * (1.0 + np.abs(constant))  # a line that only ties still carries its input dependence
        keep = passes | (value <= constant + slack if upper else value >= constant - slack)
        return np.where(keep[:, None], line[0], 0.0), np.where(keep, line[1], constant)

    def _input_lines(self):
        """x itself, as lines over the whole domain."""
        n = self.x_lo.size
        return np.eye(n, self.domain_lo.size), np.zeros(n)

    def _rounding_line(self, layer: PairedLayer, upper: bool):
        """The rounding error of each QNN neuron as a line: its own variable where it has
        one (so later layers keep its sign pattern), else its bound."""
        e_lo, e_hi = self.rounding[layer.index]
        coeffs = np.zeros((e_lo.size, self.domain_lo.size))
        if layer.index in self.noise_start:
            start = self.noise_start[layer.index]
            coeffs[np.arange(e_lo.size), start + np.arange(e_lo.size)] = 1.0
            return coeffs, np.zeros(e_lo.size)
        return coeffs, (e_hi if upper else e_lo)

    def _concretise(self, coeffs: np.ndarray, const: np.ndarray, upper: bool) -> np.ndarray:
        lo, hi = _affine(coeffs, self.domain_lo, self.domain_hi, const)
        return hi if upper else lo

    def _through(self, weight, bias, up, low, a_lo, a_hi, clamp, error=None):
        """Linear bounds of the next layer's outputs from those of its inputs (in x)."""
        acc_up, acc_low = _affine_lines(weight, bias, up, low)
        lo_from_lines = self._concretise(*acc_low, upper=False)
        hi_from_lines = self._concretise(*acc_up, upper=True)
        lo, hi = np.maximum(a_lo, lo_from_lines), np.minimum(a_hi, hi_from_lines)
        hi = np.maximum(hi, lo)
        ku, bu, kl, bl = _relax(clamp, lo, hi)
        if error is not None:
            bl, bu = bl + error[0], bu + error[1]
        out_up = (ku[:, None] * acc_up[0], ku * acc_up[1] + bu)
        out_low = (kl[:, None] * acc_low[0], kl * acc_low[1] + bl)
        return out_up, out_low, (lo, hi)


def _compose(q_weight, d_first, d_second, gap, f_first, f_second, bias):
    """One side of q_weight @ d + gap @ y_f + bias from linear bounds (first: the same side)."""
    qp, qn = np.maximum(q_weight, 0), np.minimum(q_weight, 0)
    gp, gn = np.maximum(gap, 0), np.minimum(gap, 0)
    coeffs = qp @ d_first[0] + qn @ d_second[0] + gp @ f_first[0] + gn @ f_second[0]
    const = qp @ d_first[1] + qn @ d_second[1] + gp @ f_first[1] + gn @ f_second[1] + bias
    return coeffs, const


def _affine_lines(weight, bias, up, low):
    """Upper and lower lines of weight @ v + bias from lines of v."""
    pos, neg = np.maximum(weight, 0), np.minimum(weight, 0)
    return ((pos @ up[0] + neg @ low[0], pos @ up[1] + neg @ low[1] + bias),
            (pos @ low[0] + neg @ up[0], pos @ low[1] + neg @ up[1] + bias))


def _scaled(same, other, factor: np.ndarray):
    """factor * v as a line on the side of `same`, per neuron (a negative factor flips sides)."""
    chosen = np.where((factor >= 0)[:, None], same[0], other[0])
    const = np.where(factor >= 0, same[1], other[1])
    return factor[:, None] * chosen, factor * const


def _plus(a, b, const: np.ndarray):
    return a[0] + b[0], a[1] + b[1] + const


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

"""The error question as one MILP: the QNN exactly in integers beside its float network in reals.

The QNN half is exact: integer inputs, integer accumulators, requantization as integer
rounding rows (or the exact step table read off the executor for multiplier modes), clamps
with one binary per reachable side whose big-M comes from sound bounds, never a guess. The
float half is the usual big-M ReLU/clip encoding with bounds from the float network's own
symbolic pass. Sound per-neuron bounds on the difference of the two networks (the
differential analysis of `bitqnn.dra`, recorded at each hidden layer) are added as redundant rows:
they change no solution, but without them the LP relaxation sees two unrelated networks
and its bound on their difference is as loose as subtracting two intervals. Solving and
reading answers is `bitqnn.engines.error_milp`'s job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.bounds import NetworkBounds
from bitqnn.dra import DifferentialAnalysis
from bitqnn.error_query import ErrorQuery
from bitqnn.hull import stage_hull
from bitqnn.pairing import PairedLayer
from bitqnn.qnn import QNN, Dense, Reshape
from bitqnn.requant import OutputStage, Rounding, ShiftRequant

MAX_STEP_PIECES = 4096  # larger step tables are declined (UNKNOWN) rather than encoded
# smaller row coefficients go into the row's bounds (`Milp.row`): ten times SCIP's zero
# tolerance, for presolve's multipliers; the smallest real coefficient bitqnn writes on
# purpose, an accumulator's scale in a difference row, is 2**-24 (6e-8) at Q = 16
TINY_COEFFICIENT = 1e-8
STEP_PRIORITY = 10  # SCIP's branching priority of step integers under `Milp.steps_first` (others: 0)


class UnsupportedEncoding(Exception):
    """The query is valid but this MILP cannot state it exactly."""


Var = Any  # a pywraplp.Variable; SWIG types carry no useful annotation


@dataclass
class Lin:
    """An affine form sum(coef * var) + const over MILP variables (keyed by variable index)."""

    terms: dict[int, tuple[Var, float]] = field(default_factory=dict)
    const: float = 0.0

    @staticmethod
    def of(value: Lin | Var | float | int) -> Lin:
        if isinstance(value, Lin):
            return value
        if isinstance(value, int | float | np.integer | np.floating):
            return Lin({}, float(value))
        return Lin({value.index(): (value, 1.0)}, 0.0)

    def is_constant(self) -> bool:
        return not self.terms

    def add(self, other: Lin, scale: float = 1.0) -> Lin:
        terms = dict(self.terms)
        for key, (var, coef) in other.terms.items():
            old = terms.get(key, (var, 0.0))[1]
            terms[key] = (var, old + scale * coef)
        return Lin(terms, self.const + scale * other.const)

    def scaled(self, factor: float, shift: float = 0.0) -> Lin:
        return Lin({k: (v, factor * c) for k, (v, c) in self.terms.items()}, factor * self.const + shift)


def dot(row: np.ndarray, values: list[Lin], const: float) -> Lin:
    """sum(row[j] * values[j]) + const, skipping zero weights."""
    total = Lin({}, float(const))
    for j in np.flatnonzero(row):
        total = _accumulate(total, values[j], float(row[j]))
    return total


def _accumulate(total: Lin, value: Lin, scale: float) -> Lin:
    """total += scale * value, in place on total's dict (dot products are the hot loop)."""
    for key, (var, coef) in value.terms.items():
        old = total.terms.get(key, (var, 0.0))[1]
        total.terms[key] = (var, old + scale * coef)
    total.const += scale * value.const
    return total


class Milp:
    """A thin layer over a pywraplp SCIP solver that counts what it creates.

    `steps_first` makes SCIP branch on the rounded quotients of shift requantization
    (q = round(acc / 2**s), which say which step each neuron takes) before any other
    variable: inputs, clamp binaries, step-table binaries of the multiplier modes. Measured on the
    hardest robustness terms of the speed benchmark's sparse models (one thread, 120 s,
    SCIP's feasibility search): eight proofs took 180 s in all instead of 279 s (wide
    model, image 24 at radius 3: 84 s to 24 s; image 8 at radius 5: 17 s to 8 s per term;
    the core model's image 0 at radius 4 went the other way, 23 s to 29 s), one
    counterexample came in 40 s instead of 75 s and another was not found in 120 s
    (46 s before). So proofs gain and SCIP's own search for points is a toss-up; the
    robustness engine turns it on (`engines.milp`, and so the neighbourhood search that
    calls it); the climb, the error-bound model and the bit-flip model leave it off (in the
    last two it was measured and decided nothing more).
    """

    def __init__(self, threads: int, steps_first: bool = False) -> None:
        solver = pywraplp.Solver.CreateSolver("SCIP")
        if solver is None:
            raise UnsupportedEncoding("OR-Tools was built without SCIP")
        solver.SetNumThreads(threads)
        self.solver = solver
        self.steps_first = steps_first
        self.binaries = self.integers = self.reals = self.rows = 0
        self.big_m = 0.0
        # per row: what its lower and upper bound are moved by (constant, tiny terms)
        self.offsets: dict[int, tuple[float, float]] = {}

    def int_var(self, lo: float, hi: float, name: str) -> Lin:
        lo, hi = math.ceil(lo), math.floor(hi)
        if lo == hi:
            return Lin({}, float(lo))
        self.integers += 1
        return Lin.of(self.solver.IntVar(lo, hi, name))

    def step_var(self, lo: float, hi: float, name: str) -> Lin:
        """A rounded quotient: branched on first under `steps_first`."""
        step = self.int_var(lo, hi, name)
        if self.steps_first and not step.is_constant():
            var_of(step).SetBranchingPriority(STEP_PRIORITY)
        return step

    def binary(self, name: str) -> Lin:
        self.binaries += 1
        return Lin.of(self.solver.BoolVar(name))

    def real_var(self, lo: float, hi: float, name: str) -> Lin:
        if lo == hi:
            return Lin({}, float(lo))
        self.reals += 1
        return Lin.of(self.solver.NumVar(lo, hi, name))

    def row(self, expr: Lin, lo: float = -math.inf, hi: float = math.inf) -> Any:
        """lo <= expr <= hi, with the constant moved to the bounds, and every coefficient
        below TINY_COEFFICIENT moved there too, as the range its term takes over its
        variable's bounds.

        Why: SCIP deletes a coefficient below its zero tolerance (numerics/epsilon, 1e-9)
        and solves the row without it, so a bound it proves could miss that term. Trained
        float weights go that small (Fashion-MNIST's border pixels: 1,839 first-layer
        weights of the 1x100 model, after the input scale), and SCIP's points broke such
        rows by the deleted terms exactly (2.4e-6 on one row), which made `VerifySolution`
        void whole runs. Moved into the bounds, the term widens the row instead: a sound
        relaxation of at most 2.2e-6 on that model's first layer."""
        self.rows += 1
        keep, low, high = [], 0.0, 0.0
        for var, coef in expr.terms.values():
            if abs(coef) >= TINY_COEFFICIENT:
                keep.append((var, coef))
            elif coef != 0.0:
                ends = (coef * var.lb(), coef * var.ub())
                low, high = low + min(ends), high + max(ends)
        constraint = self.solver.Constraint(-math.inf, math.inf)
        self.offsets[constraint.index()] = (expr.const + high, expr.const + low)
        self.set_row_bounds(constraint, lo, hi)
        for var, coef in keep:
            constraint.SetCoefficient(var, coef)
        return constraint

    def set_row_bounds(self, constraint: Any, lo: float, hi: float) -> None:
        """New bounds lo <= expr <= hi on a row made by `row`, keeping its moved terms."""
        below, above = self.offsets[constraint.index()]
        constraint.SetBounds(lo - below, hi - above)

    def note_big_m(self, *values: float) -> None:
        self.big_m = max(self.big_m, *(abs(float(v)) for v in values))


def var_of(value: Lin) -> Var:
    """The variable of a form that is exactly one variable."""
    (var, _), = value.terms.values()
    return var


# ---- activations shared by both networks: y = max(z, c) and y = min(z, c) ----

def at_least(milp: Milp, z: Lin, z_lo: float, z_hi: float, c: float, integer: bool, name: str) -> tuple[Lin, float]:
    """y = max(z, c) with one binary (1: y = z); big-M from the bounds [z_lo, z_hi] of z."""
    if z_lo >= c:
        return z, z_lo
    if z_hi <= c:
        return Lin({}, float(c)), c
    y = milp.int_var(c, z_hi, f"max{name}") if integer else milp.real_var(c, z_hi, f"max{name}")
    d = milp.binary(f"on{name}")
    milp.note_big_m(c - z_lo, z_hi - c)
    milp.row(y.add(z, -1.0), lo=0.0)  # y >= z
    milp.row(y.add(z, -1.0).add(d, c - z_lo), hi=c - z_lo)  # d = 1: y <= z
    milp.row(y.add(d, -(z_hi - c)), hi=c)  # d = 0: y <= c
    return y, c


def at_most(milp: Milp, z: Lin, z_lo: float, z_hi: float, c: float, integer: bool, name: str) -> tuple[Lin, float]:
    """y = min(z, c) with one binary (1: y = z); big-M from the bounds of z."""
    if z_hi <= c:
        return z, z_hi
    if z_lo >= c:
        return Lin({}, float(c)), c
    y = milp.int_var(z_lo, c, f"min{name}") if integer else milp.real_var(z_lo, c, f"min{name}")
    d = milp.binary(f"un{name}")
    milp.note_big_m(z_hi - c, c - z_lo)
    milp.row(y.add(z, -1.0), hi=0.0)  # y <= z
    milp.row(y.add(z, -1.0).add(d, -(z_hi - c)), lo=-(z_hi - c))  # d = 1: y >= z
    milp.row(y.add(d, c - z_lo), lo=c)  # d = 0: y >= c
    return y, c


def clamp(milp: Milp, z: Lin, z_lo: float, z_hi: float, lo: float | None, hi: float | None,
          integer: bool, name: str) -> Lin:
    """clamp(z, lo, hi); a side the bounds of z never reach costs nothing."""
    low = z_lo
    if lo is not None and math.isfinite(lo):
        z, low = at_least(milp, z, z_lo, z_hi, lo, integer, f"{name}l")
        z_hi = max(z_hi, lo)
    if hi is not None and math.isfinite(hi):
        z, _ = at_most(milp, z, low, z_hi, hi, integer, f"{name}h")
    return z


# ---- the QNN, exactly ----

def shift_round(milp: Milp, acc: Lin, acc_lo: int, acc_hi: int, q_lo: int, q_hi: int, shift: int,
                rounding: Rounding, name: str) -> Lin:
    """q = round(acc / 2**shift) exactly, as integer rows."""
    if shift <= 0:
        return acc.scaled(float(2 ** -shift))
    unit, half = 2**shift, 2 ** (shift - 1)
    if rounding is Rounding.HALF_AWAY and acc_lo >= 0:
        rounding = Rounding.HALF_UP
    q = milp.step_var(q_lo, q_hi, f"q{name}")
    if q.is_constant():
        return q
    rest = acc.add(q, -float(unit))  # acc - unit * q
    if rounding is Rounding.HALF_EVEN:
        odd = milp.binary(f"odd{name}")
        half_q = milp.int_var(math.floor(q_lo / 2) - 1, math.ceil(q_hi / 2) + 1, f"h{name}")
        milp.row(q.add(half_q, -2.0).add(odd, -1.0), 0.0, 0.0)  # q = 2 h + odd
        milp.row(rest.add(odd, -1.0), lo=-half)  # ties go to the even neighbour
        milp.row(rest.add(odd, 1.0), hi=half)
    elif rounding is Rounding.HALF_AWAY:
        half_away_rows(milp, rest, acc, acc_lo, acc_hi, q_lo, q_hi, unit, half, name)
    else:
        offset = 0 if rounding is Rounding.FLOOR else half
        milp.row(rest, lo=-offset, hi=unit - 1 - offset)
    return q


def half_away_rows(milp: Milp, rest: Lin, acc: Lin, acc_lo: int, acc_hi: int, q_lo: int, q_hi: int,
                   unit: int, half: int, name: str) -> None:
    """Round half away from zero: half-up rows where acc >= 0, their mirror where acc < 0,
    chosen by a sign binary; every big-M is the exact range of its row over the bounds."""
    if acc_hi <= 0:  # q = ceil((acc - half) / unit)
        milp.row(rest, lo=-unit + half + 1, hi=half)
        return
    sign = milp.binary(f"pos{name}")
    milp.note_big_m(acc_lo, acc_hi + 1)
    milp.row(acc.add(sign, float(acc_lo)), lo=float(acc_lo))  # sign = 1: acc >= 0
    milp.row(acc.add(sign, -float(acc_hi + 1)), hi=-1.0)  # sign = 0: acc <= -1
    rest_lo, rest_hi = acc_lo - unit * q_hi, acc_hi - unit * q_lo
    for low, high, on in ((-half, unit - 1 - half, True), (-unit + half + 1, half, False)):
        slack_lo, slack_hi = low - rest_lo, rest_hi - high  # how far each side must relax
        milp.note_big_m(slack_lo, slack_hi)
        # on the active branch low <= rest <= high; off it, rest's own range
        if on:
            milp.row(rest.add(sign, -float(slack_lo)), lo=float(low - slack_lo))
            milp.row(rest.add(sign, float(slack_hi)), hi=float(high + slack_hi))
        else:
            milp.row(rest.add(sign, float(slack_lo)), lo=float(low))
            milp.row(rest.add(sign, -float(slack_hi)), hi=float(high))


def step_table(milp: Milp, stage: OutputStage, channel: int, acc: Lin, acc_lo: int, acc_hi: int,
               name: str) -> Lin:
    """Any monotone stage, exactly: d_k = [acc >= start_k] for each step, y = sum of the rises."""
    starts, values = stage.steps(channel, acc_lo, acc_hi)
    if len(starts) > MAX_STEP_PIECES:
        raise UnsupportedEncoding(f"neuron {name}: {len(starts)} steps in its requantization table, "
                                  f"over the limit {MAX_STEP_PIECES}")
    y = Lin({}, float(values[0]))
    previous = None
    for k in range(1, len(starts)):
        d = milp.binary(f"st{name}_{k}")
        start = int(starts[k])
        milp.note_big_m(start - acc_lo, acc_hi - start + 1)
        milp.row(acc.add(d, -float(start - acc_lo)), lo=float(acc_lo))  # d = 1: acc >= start
        milp.row(acc.add(d, -float(acc_hi - start + 1)), hi=float(start - 1))  # d = 0: acc < start
        if previous is not None:
            milp.row(previous.add(d, -1.0), lo=0.0)
        previous = d
        y = y.add(d, float(values[k] - values[k - 1]))
    return y


def hull_rows(milp: Milp, stage: OutputStage, channel: int, acc: Lin, acc_lo: int, acc_hi: int, y: Lin) -> None:
    """The stage's exact convex hull as redundant rows: no solution changes, the LP tightens."""
    starts, values = stage.steps(channel, acc_lo, acc_hi)
    if len(starts) > MAX_STEP_PIECES:
        return
    for row in stage_hull(starts, values, acc_hi).rows():
        expr = y.scaled(float(row.y_coeff)).add(acc, float(row.acc_coeff))
        milp.row(expr, hi=float(row.bound)) if row.upper else milp.row(expr, lo=float(row.bound))


def output_stage(milp: Milp, stage: OutputStage, channel: int, acc: Lin, acc_lo: int, acc_hi: int,
                 name: str) -> Lin:
    """y = stage(acc) exactly."""
    requant = stage.requant
    if requant is None:
        return clamp(milp, acc, acc_lo, acc_hi, stage.lo, stage.hi, True, name)
    if not isinstance(requant, ShiftRequant):
        return step_table(milp, stage, channel, acc, acc_lo, acc_hi, name)
    shifts = np.asarray(requant.shift).ravel()
    shift = int(shifts[0] if shifts.size == 1 else shifts[channel])
    ch = np.array(channel)
    q_lo, q_hi = int(requant(np.array(acc_lo), ch)), int(requant(np.array(acc_hi), ch))
    q = shift_round(milp, acc, acc_lo, acc_hi, q_lo, q_hi, shift, requant.rounding, name)
    z = q.scaled(1.0, float(stage.zero))
    return clamp(milp, z, q_lo + stage.zero, q_hi + stage.zero, stage.lo, stage.hi, True, name)


@dataclass
class LayerVars:
    """One dense layer of both networks inside the MILP."""

    q_acc: list[Lin | None]  # None where the neuron is stable (no accumulator variable)
    q_out: list[Lin]
    f_pre: list[Lin]
    f_out: list[Lin]


# what a caller adds to a neuron's accumulator (layer, neuron, the layer's inputs): bit flips do
AccumulatorTerms = Callable[[int, int, list[Lin]], Lin]


def qnn_layer(milp: Milp, qnn: QNN, bounds: NetworkBounds, index: int, values: list[Lin],
              extra: AccumulatorTerms | None = None) -> tuple[list[Lin | None], list[Lin]]:
    """One dense QNN layer exactly: an integer accumulator row and its output stage per
    unstable neuron; a neuron the bounds fix is a constant."""
    layer = qnn.layers[index]
    assert isinstance(layer, Dense)
    form = qnn.linear_form(index)
    b = bounds.layers[index]
    if b.may_overflow is not None and bool(np.any(b.may_overflow)):
        raise UnsupportedEncoding(f"layer {index}: the bounds do not exclude accumulator overflow")
    accs: list[Lin | None] = []
    outs: list[Lin] = []
    for n in range(form.matrix.shape[0]):
        if b.lo[n] == b.hi[n]:
            accs.append(None)
            outs.append(Lin({}, float(b.lo[n])))
            continue
        acc_lo, acc_hi = int(b.acc_lo[n]), int(b.acc_hi[n])
        acc = milp.int_var(acc_lo, acc_hi, f"a{index}_{n}")
        total = dot(form.matrix[n], values, float(form.offset[n]))
        if extra is not None:
            total = total.add(extra(index, n, values))
        milp.row(acc.add(total, -1.0), 0.0, 0.0)
        channel = int(form.channels[n])
        y = output_stage(milp, layer.output, channel, acc, acc_lo, acc_hi, f"{index}_{n}")
        if len(y.terms) == 1 and y.const == 0.0 and next(iter(y.terms.values()))[1] == 1.0:
            var = var_of(y)
            var.SetBounds(max(var.lb(), float(b.lo[n])), min(var.ub(), float(b.hi[n])))
        if layer.output.requant is not None and not y.is_constant():
            hull_rows(milp, layer.output, channel, acc, acc_lo, acc_hi, y)
        accs.append(acc)
        outs.append(y)
    return accs, outs


def violation_rows(milp: Milp, outputs: list[Lin], term) -> list[Lin]:
    """One conjunction of output atoms as rows; each atom's left-hand side, in order."""
    sides = []
    for atom in term:
        lhs = Lin()
        for output, coefficient in atom.terms:
            lhs = lhs.add(outputs[output], float(coefficient))
        milp.row(lhs, lo=float(atom.bound))
        sides.append(lhs)
    return sides


# ---- the float network ----

def float_layer(milp: Milp, layer: PairedLayer, pre: tuple[np.ndarray, np.ndarray],
                values: list[Lin]) -> tuple[list[Lin], list[Lin]]:
    """a = W y + b in a real variable bounded by the float network's sound bounds, then its clip."""
    a_lo, a_hi = pre
    clip = layer.float_clip
    pres, outs = [], []
    for n in range(layer.float_weight.shape[0]):
        name = f"f{layer.index}_{n}"
        a = milp.real_var(float(a_lo[n]), float(a_hi[n]), f"p{name}")
        milp.row(a.add(dot(layer.float_weight[n], values, float(layer.float_bias[n])), -1.0), 0.0, 0.0)
        pres.append(a)
        if clip is None:
            outs.append(a)
        else:
            outs.append(clamp(milp, a, float(a_lo[n]), float(a_hi[n]), clip[0], clip[1], False, name))
    return pres, outs


# ---- difference rows: the link between the two halves ----

def difference_rows(milp: Milp, analysis: DifferentialAnalysis, layer: PairedLayer, layer_vars: LayerVars) -> int:
    """Rows lo <= QNN_real - float <= hi for every neuron of a hidden layer, before and after
    its activation, from the bounds the DRA's symbolic pass found at that layer. Returns
    the number of rows added."""
    hidden = analysis.hidden[layer.index]
    added = 0
    for pre in (True, False):
        lo, hi = (hidden.pre_lo, hidden.pre_hi) if pre else (hidden.post_lo, hidden.post_hi)
        q_vals = layer_vars.q_acc if pre else layer_vars.q_out
        f_vals = layer_vars.f_pre if pre else layer_vars.f_out
        for n, (q, f) in enumerate(zip(q_vals, f_vals, strict=True)):
            if q is None:
                continue
            if pre:
                real = q.scaled(float(layer.acc_scale[n]), float(layer.acc_shift[n]))
            else:
                real = q.scaled(float(layer.out_scale[n]), -float(layer.out_scale[n]) * float(layer.stage.zero))
            diff = real.add(f, -1.0)
            if diff.is_constant():
                continue
            milp.row(diff, float(lo[n]), float(hi[n]))
            added += 1
    return added


# ---- the whole model ----

@dataclass
class ErrorModel:
    """The built MILP and the handles the runs need: inputs, differences and their rows."""

    milp: Milp
    inputs: list[Lin]
    differences: dict[int, Lin]  # output j -> QNN_real_j - f_j
    rows: dict[int, Any]  # output j -> the row carrying its DRA bounds and the cut
    fix_rows: list[Any]  # per input, a free row x_i that pins the input for `full_hint`
    dra_lo: np.ndarray
    dra_hi: np.ndarray
    seconds: float

    def stats(self) -> dict:
        m = self.milp
        return {"binaries": m.binaries, "integers": m.integers, "reals": m.reals, "rows": m.rows,
                "big_m": m.big_m, "build_seconds": round(self.seconds, 3)}


def build_model(query: ErrorQuery, analysis: DifferentialAnalysis, dra_lo: np.ndarray, dra_hi: np.ndarray,
                threads: int, coupling: bool) -> ErrorModel:
    """Both networks layer by layer on one integer input, then QNN_real_j - f_j per output
    in a row carrying the DRA's bounds (which a run tightens into its cut)."""
    start = time.perf_counter()
    qnn, box = query.qnn, query.region
    if coupling and not analysis.hidden:
        analysis.run("symbolic")  # the pass that records each hidden layer's difference bounds
    milp = Milp(threads)
    inputs = [milp.int_var(int(lo), int(hi), f"x{i}") for i, (lo, hi) in enumerate(zip(box.lo, box.hi, strict=True))]
    q_values = inputs
    f_values = [x.scaled(float(qnn.input_scale), -float(qnn.input_scale) * float(qnn.input_zero)) for x in inputs]
    paired = {layer.index: (layer, pre) for layer, pre in zip(analysis.layers, analysis.float_pre, strict=True)}
    last = len(qnn.layers) - 1
    for index, q_layer in enumerate(qnn.layers):
        if isinstance(q_layer, Reshape):
            continue
        layer, pre = paired[index]
        accs, q_values = qnn_layer(milp, qnn, analysis.q_bounds, index, q_values)
        f_pres, f_values = float_layer(milp, layer, pre, f_values)
        if coupling and index != last:
            difference_rows(milp, analysis, layer, LayerVars(accs, q_values, f_pres, f_values))
    scale = np.broadcast_to(np.asarray(qnn.output_scale, dtype=np.float64).ravel(), (qnn.output_size,))
    differences, rows = {}, {}
    for j in query.outputs:
        diff = q_values[j].scaled(float(scale[j]), -float(scale[j]) * float(qnn.output_zero)).add(f_values[j], -1.0)
        differences[j] = diff
        rows[j] = milp.row(diff, float(dra_lo[j]), float(dra_hi[j]))
    fix_rows = [None if x.is_constant() else milp.row(x) for x in inputs]
    return ErrorModel(milp, inputs, differences, rows, fix_rows, dra_lo, dra_hi, time.perf_counter() - start)

"""Exact integer encoding of a query for OR-Tools CP-SAT.

Every quantity is an integer variable with the domain interval bounds give it, so there
is no big-M to guess and no epsilon: rounding is a pair of linear inequalities (or the
exact step table for multiplier modes), clamps are CP-SAT's native min/max, wraparound
is an integer multiple of 2**bits. Stable neurons are plain Python ints and never
become variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from bitqnn.bounds import NetworkBounds, interval_product
from bitqnn.hull import stage_hull
from bitqnn.qnn import QNN, Conv2d, Dense, Lookup, MaxPool2d, Reshape
from bitqnn.query import LinearAtom
from bitqnn.requant import OutputStage, Rounding, ShiftRequant
from bitqnn.step_cuts import StepCut

Value = int | cp_model.IntVar


class UnsupportedEncoding(Exception):
    """The query is valid but this encoding cannot state it exactly."""


@dataclass
class Encoding:
    model: cp_model.CpModel
    inputs: list[Value]
    outputs: list[Value]
    variables: int


class _Builder:
    def __init__(self, qnn: QNN, bounds: NetworkBounds) -> None:
        self.qnn = qnn
        self.bounds = bounds
        self.model = cp_model.CpModel()
        self.count = 0
        self.layer_inputs: list[list[Value]] = []
        self.neurons: dict[tuple[int, int], tuple[Value, Value]] = {}  # (layer, neuron) -> (acc, y)

    def new_var(self, lo: int, hi: int, name: str) -> Value:
        if lo == hi:
            return int(lo)
        self.count += 1
        return self.model.new_int_var(int(lo), int(hi), name)

    def inputs(self) -> list[Value]:
        lo, hi = self.bounds.input_lo, self.bounds.input_hi
        return [self.new_var(int(a), int(b), f"x{i}") for i, (a, b) in enumerate(zip(lo, hi, strict=True))]

    def layer(self, index: int, values: list[Value]) -> list[Value]:
        layer = self.qnn.layers[index]
        self.layer_inputs.append(values)
        if isinstance(layer, Dense | Conv2d):
            return self.linear(index, layer.output, values)
        if isinstance(layer, MaxPool2d):
            return self.maxpool(index, values)
        if isinstance(layer, Reshape):
            return values
        assert isinstance(layer, Lookup)
        return self.lookup(index, layer, values)

    def linear_expr(self, row: np.ndarray, offset: int, values: list[Value]):
        """sum(row * values) + offset, with constant inputs folded into the offset."""
        variables, coeffs = [], []
        constant = int(offset)
        for j in np.flatnonzero(row):
            v = values[j]
            if isinstance(v, int):
                constant += int(row[j]) * v
            else:
                variables.append(v)
                coeffs.append(int(row[j]))
        return cp_model.LinearExpr.weighted_sum(variables, coeffs) + constant

    def accumulator(self, index: int, neuron: int, row: np.ndarray, offset: int, values: list[Value]):
        """The exact accumulator as a linear expression, with wraparound where reachable."""
        expr = self.linear_expr(row, offset, values) + self.extra_terms(index, neuron, values)
        layer_bounds = self.bounds.layers[index]
        if layer_bounds.may_overflow is None or not layer_bounds.may_overflow[neuron]:
            return expr
        if self.qnn.overflow != "wrap":
            raise UnsupportedEncoding(
                f"accumulator overflow not excluded at layer {index} neuron {neuron}")
        bits = self.qnn.accumulator_bits
        raw_lo, raw_hi = self._raw_range(row, offset, index)
        half = 2 ** (bits - 1)
        k = self.new_var((raw_lo + half) >> bits, (raw_hi + half) >> bits, f"wrap{index}_{neuron}")
        wrapped = self.new_var(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, f"acc{index}_{neuron}")
        self.model.add(wrapped == expr - (2**bits) * k)
        return wrapped

    def extra_terms(self, index: int, neuron: int, values: list[Value]):
        """What a subclass adds to an accumulator (bit flips do); the plain network adds nothing."""
        return 0

    def _raw_range(self, row: np.ndarray, offset: int, index: int) -> tuple[int, int]:
        lo, hi = self.bounds.before(index)
        low, high = interval_product(row, lo, hi)
        return int(low) + offset, int(high) + offset

    def linear(self, index: int, stage: OutputStage, values: list[Value]) -> list[Value]:
        form = self.qnn.linear_form(index)
        b = self.bounds.layers[index]
        out: list[Value] = []
        for n in range(form.matrix.shape[0]):
            if b.lo[n] == b.hi[n]:
                out.append(int(b.lo[n]))
                continue
            acc_lo, acc_hi = int(b.acc_lo[n]), int(b.acc_hi[n])
            acc = self.new_var(acc_lo, acc_hi, f"a{index}_{n}")
            self.model.add(acc == self.accumulator(index, n, form.matrix[n], int(form.offset[n]), values))
            y = self.output_stage(stage, int(form.channels[n]), acc, acc_lo, acc_hi,
                                  int(b.lo[n]), int(b.hi[n]), f"{index}_{n}")
            if stage.requant is not None and not isinstance(y, int):
                self.hull_rows(stage, int(form.channels[n]), acc, acc_lo, acc_hi, y)
            self.neurons[(index, n)] = (acc, y)
            out.append(y)
        return out

    def hull_rows(self, stage: OutputStage, channel: int, acc: Value, acc_lo: int, acc_hi: int, y: Value) -> None:
        """The stage's exact convex hull as redundant integer rows: they change no solution,
        only tighten CP-SAT's LP relaxation, which is what its proofs lean on."""
        starts, values = stage.steps(channel, acc_lo, acc_hi)
        for row in stage_hull(starts, values, acc_hi).rows():
            expr = row.y_coeff * y + row.acc_coeff * acc
            self.model.add(expr <= row.bound if row.upper else expr >= row.bound)

    def output_stage(self, stage: OutputStage, channel: int, acc, acc_lo: int, acc_hi: int,
                     y_lo: int, y_hi: int, name: str) -> Value:
        if stage.requant is None:
            y = self.new_var(y_lo, y_hi, f"y{name}")
            self.model.add(y == acc)
            return y
        requant = stage.requant
        if isinstance(requant, ShiftRequant):
            shifts = np.asarray(requant.shift).ravel()
            shift = int(shifts[0] if shifts.size == 1 else shifts[channel])
            ch = np.array(channel)
            q_lo = int(requant(np.array(acc_lo), ch))
            q_hi = int(requant(np.array(acc_hi), ch))
            q = self.shift_round(acc, acc_lo, acc_hi, q_lo, q_hi, shift, requant.rounding, name)
            if q is not None:
                return self.clamp(q, q_lo + stage.zero, q_hi + stage.zero, stage, y_lo, y_hi, name)
        return self.step_table(stage, channel, acc, acc_lo, acc_hi, y_lo, y_hi, name)

    def shift_round(self, acc, acc_lo: int, acc_hi: int, q_lo: int, q_hi: int, shift: int,
                    rounding: Rounding, name: str):
        """q = round(acc / 2**shift) as linear inequalities; None where no such form exists."""
        if shift <= 0:
            q = self.new_var(q_lo, q_hi, f"q{name}")
            self.model.add(acc * (2 ** -shift) == q)
            return q
        unit, half = 2**shift, 2 ** (shift - 1)
        if rounding is Rounding.HALF_AWAY:
            if acc_lo >= 0:
                rounding = Rounding.HALF_UP
            elif acc_hi <= 0:  # q = ceil((acc - half) / unit)
                q = self.new_var(q_lo, q_hi, f"q{name}")
                self.model.add(unit * q - unit + half + 1 <= acc)
                self.model.add(acc <= unit * q + half)
                return q
            else:
                return None
        q = self.new_var(q_lo, q_hi, f"q{name}")
        if rounding is Rounding.HALF_EVEN:
            parity = self.model.new_bool_var(f"odd{name}")
            half_q = self.model.new_int_var(q_lo // 2 - 1, q_hi // 2 + 1, f"h{name}")
            self.model.add(q == 2 * half_q + parity)
            self.model.add(unit * q - half + parity <= acc)
            self.model.add(acc <= unit * q + half - parity)
            return q
        offset = 0 if rounding is Rounding.FLOOR else half
        self.model.add(unit * q <= acc + offset)
        self.model.add(acc + offset <= unit * q + unit - 1)
        return q

    def clamp(self, q: Value, z_lo: int, z_hi: int, stage: OutputStage, y_lo: int, y_hi: int,
              name: str) -> Value:
        """y = clamp(q + zero, lo, hi); the sides the bounds cannot reach cost nothing."""
        shifted = q + stage.zero
        need_lo = stage.lo is not None and z_lo < stage.lo
        need_hi = stage.hi is not None and z_hi > stage.hi
        y = self.new_var(y_lo, y_hi, f"y{name}")
        if not need_lo and not need_hi:
            self.model.add(y == shifted)
        elif need_lo and not need_hi:
            self.model.add_max_equality(y, [shifted, stage.lo])
        elif need_hi and not need_lo:
            self.model.add_min_equality(y, [shifted, stage.hi])
        else:
            floor_lo = max(z_lo, stage.lo)
            mid = self.new_var(floor_lo, max(z_hi, floor_lo), f"m{name}")
            self.model.add_max_equality(mid, [shifted, stage.lo])
            self.model.add_min_equality(y, [mid, stage.hi])
        return y

    def step_table(self, stage: OutputStage, channel: int, acc, acc_lo: int, acc_hi: int,
                   y_lo: int, y_hi: int, name: str) -> Value:
        """Any monotone stage, exactly: acc lies in piece k, and y is piece k's value."""
        starts, values = stage.steps(channel, acc_lo, acc_hi)
        ends = np.append(starts[1:] - 1, acc_hi)
        piece = self.new_var(0, len(starts) - 1, f"k{name}")
        y = self.new_var(y_lo, y_hi, f"y{name}")
        if isinstance(piece, int):
            return int(values[0])
        lo_var = self.new_var(int(starts[0]), int(starts[-1]), f"s{name}")
        hi_var = self.new_var(int(ends[0]), int(ends[-1]), f"e{name}")
        self.model.add_element(piece, [int(s) for s in starts], lo_var)
        self.model.add_element(piece, [int(e) for e in ends], hi_var)
        self.model.add_element(piece, [int(v) for v in values], y)
        self.model.add(lo_var <= acc)
        self.model.add(acc <= hi_var)
        return y

    def maxpool(self, index: int, values: list[Value]) -> list[Value]:
        windows = self.qnn.pool_windows(index)
        lo_in, hi_in = self.bounds.before(index)
        b = self.bounds.layers[index]
        out: list[Value] = []
        for n, window in enumerate(windows):
            members = [int(i) for i in window if i >= 0]
            if b.lo[n] == b.hi[n]:
                out.append(int(b.lo[n]))
                continue
            floor = max(int(lo_in[i]) for i in members)
            candidates = [values[i] for i in members if hi_in[i] >= floor]
            y = self.new_var(int(b.lo[n]), int(b.hi[n]), f"p{index}_{n}")
            self.model.add_max_equality(y, candidates)
            out.append(y)
        return out

    def lookup(self, index: int, layer: Lookup, values: list[Value]) -> list[Value]:
        rows = self.qnn.lookup_channels(index)
        lo_in, hi_in = self.bounds.before(index)
        b = self.bounds.layers[index]
        out: list[Value] = []
        for n, v in enumerate(values):
            if isinstance(v, int):
                out.append(int(layer.table[rows[n], v - layer.input_lo]))
                continue
            a, z = int(lo_in[n]), int(hi_in[n])
            segment = layer.table[rows[n], a - layer.input_lo:z - layer.input_lo + 1]
            position = self.new_var(0, z - a, f"l{index}_{n}")
            self.model.add(position == v - a)
            y = self.new_var(int(b.lo[n]), int(b.hi[n]), f"t{index}_{n}")
            self.model.add_element(position, [int(t) for t in segment], y)
            out.append(y)
        return out


def overflow_model(qnn: QNN, bounds: NetworkBounds, index: int, neuron: int) -> Encoding:
    """Inputs in the box whose raw accumulator (index, neuron) leaves the declared width.

    Layers before `index` must already be free of reachable overflow in `bounds`.
    """
    builder = _Builder(qnn, bounds)
    inputs = builder.inputs()
    values = inputs
    for layer in range(index):
        values = builder.layer(layer, values)
    form = qnn.linear_form(index)
    raw = builder.linear_expr(form.matrix[neuron], int(form.offset[neuron]), values)
    limit = 2 ** (qnn.accumulator_bits - 1)
    above = builder.model.new_bool_var("above")
    builder.model.add(raw >= limit).only_enforce_if(above)
    builder.model.add(raw <= -limit - 1).only_enforce_if(~above)
    return Encoding(builder.model, inputs, [], builder.count)


def encode_network(qnn: QNN, bounds: NetworkBounds) -> tuple[_Builder, list[Value], list[Value]]:
    builder = _Builder(qnn, bounds)
    inputs = builder.inputs()
    values = inputs
    for index in range(len(qnn.layers)):
        values = builder.layer(index, values)
    return builder, inputs, values


def add_step_cuts(builder: _Builder, cuts: Sequence[StepCut]) -> None:
    """Each cut's step indicator as a boolean tied exactly to its accumulator, the unary
    sum that gives y from those booleans, and the cuts themselves: redundant rows that
    change no solution and tighten the LP relaxation CP-SAT's proofs rest on."""
    booleans: dict[tuple[int, int, int], cp_model.IntVar] = {}
    for layer, neuron in sorted({(c.indicator.layer, c.indicator.neuron) for c in cuts}):
        acc, y = builder.neurons[(layer, neuron)]
        b = builder.bounds.layers[layer]
        form = builder.qnn.linear_form(layer)
        stage = builder.qnn.layers[layer].output
        starts, steps = stage.steps(int(form.channels[neuron]), int(b.acc_lo[neuron]), int(b.acc_hi[neuron]))
        unary = int(steps[0])
        previous = None
        for k in range(1, len(starts)):
            z = builder.model.new_bool_var(f"z{layer}_{neuron}_{k}")
            builder.model.add(acc >= int(starts[k])).only_enforce_if(z)
            builder.model.add(acc <= int(starts[k]) - 1).only_enforce_if(~z)
            if previous is not None:
                builder.model.add_implication(z, previous)
            unary = unary + int(steps[k] - steps[k - 1]) * z
            booleans[(layer, neuron, k)] = previous = z
        builder.model.add(y == unary)
    for cut in cuts:
        indicator = cut.indicator
        values = builder.layer_inputs[indicator.layer]
        expr = sum(int(c) * values[j] for j, c in zip(cut.members, cut.weights, strict=True))
        expr += cut.z_coeff * booleans[(indicator.layer, indicator.neuron, indicator.step)]
        builder.model.add(expr >= cut.bound if cut.at_least else expr <= cut.bound)


def encode_term(qnn: QNN, bounds: NetworkBounds, term: tuple[LinearAtom, ...],
                cuts: Sequence[StepCut] = ()) -> Encoding:
    """The network plus one conjunction of output atoms (and any step cuts to tighten it)."""
    builder, inputs, outputs = encode_network(qnn, bounds)
    add_step_cuts(builder, cuts)
    for atom in term:
        expr = sum(c * outputs[i] for i, c in atom.terms)
        builder.model.add(expr >= atom.bound)
    return Encoding(builder.model, inputs, outputs, builder.count)

"""A query as QF_BV terms: bit-precise two's-complement arithmetic, every width taken from the bounds.

Every value is a `Signal`: a bit-vector term, a constant bias kept outside the term, and
the exact integer range of their sum. The bias is what keeps terms narrow: an input box
[98, 102] costs a 3-bit term, not an 8-bit one, and adding or comparing with a constant
is free constant folding. Each term is as wide as its range needs, and no wider.

One fact makes this both small and exact: two's-complement arithmetic modulo 2**w gives
the true result whenever that result fits in w bits, whatever the operands' widths. So an
operation truncates or sign-extends its operands to the width of its own result range
and never overflows -- except in an accumulator that the network itself lets wrap, which
is then computed in exactly `accumulator_bits` bits, wraparound included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import z3

from bitqnn.bounds import LayerBounds, NetworkBounds, interval_bounds
from bitqnn.qnn import Conv2d, Dense, Lookup, MaxPool2d, Reshape
from bitqnn.query import Query, Violation
from bitqnn.requant import (
    INT32_MAX,
    INT32_MIN,
    FixedPointMultiplierRequant,
    OutputStage,
    Rounding,
    ShiftRequant,
)

RequantStyle = Literal["steps", "arith"]
"""steps: every requant as its exact step function, thresholds from requant.py (the default:
faster with z3 for every requant kind, see benchmarks/smt_frontends.py --style); arith: shifts,
SRDHM and rounding as bit-vector arithmetic, an independent re-derivation of requant.py
(float32 requant has no such form and always uses steps)."""


class OverflowNotExcluded(Exception):
    """An accumulator may leave its width under overflow='error': its meaning is then undefined."""


def signed_width(lo: int, hi: int) -> int:
    """The fewest two's-complement bits that hold every integer in [lo, hi]."""
    return 1 + max(v.bit_length() if v >= 0 else (~v).bit_length() for v in (lo, hi))


def _slice(term: z3.BitVecRef, size: int, offset: int, width: int) -> z3.BitVecRef:
    """Bits offset .. offset+width-1 of the infinite sign extension of a term of `size` bits.

    The size is passed in, not asked of z3: z3's Python `size()` costs more than the slice.
    """
    if offset + width > size:
        term = z3.SignExt(offset + width - size, term)
        size = offset + width
    if offset == 0 and width == size:
        return term
    return z3.Extract(offset + width - 1, offset, term)


@dataclass(frozen=True)
class Signal:
    """value = signed(term) + bias, known to lie in [lo, hi]; the term is exactly as wide as that needs."""

    term: z3.BitVecRef
    lo: int
    hi: int
    bias: int

    @property
    def is_constant(self) -> bool:
        return self.lo == self.hi

    @property
    def width(self) -> int:
        return _width(self.lo, self.hi, self.bias)

    @property
    def ctx(self) -> z3.Context:
        return self.term.ctx

    def term_at(self, width: int) -> z3.BitVecRef:
        """The term modulo 2**width: exact wherever the value it feeds fits that width."""
        return _slice(self.term, self.width, 0, width)


def _width(lo: int, hi: int, bias: int) -> int:
    return signed_width(lo - bias, hi - bias)


def _narrowest_bias(lo: int, hi: int) -> int:
    """The bias that puts [lo, hi] into ceil(log2(hi - lo + 1)) signed bits: no sign bit wasted."""
    return lo + (1 << (max((hi - lo).bit_length(), 1) - 1))


def constant(value: int, ctx: z3.Context) -> Signal:
    return Signal(z3.BitVecVal(0, 1, ctx), value, value, value)


def variable(name: str, lo: int, hi: int, ctx: z3.Context) -> tuple[Signal, list[z3.BoolRef]]:
    """A fresh input in [lo, hi] and the constraints that keep it there."""
    if lo == hi:
        return constant(lo, ctx), []
    bias = _narrowest_bias(lo, hi)
    width = _width(lo, hi, bias)
    var = z3.BitVec(name, width, ctx)
    top = hi - bias
    return Signal(var, lo, hi, bias), ([var <= top] if top < (1 << (width - 1)) - 1 else [])


def shift_constant(a: Signal, c: int) -> Signal:
    return Signal(a.term, a.lo + c, a.hi + c, a.bias + c)


def rebias(a: Signal, bias: int) -> Signal:
    """The same value with another bias (one constant adder; free when the bias is unchanged)."""
    width = _width(a.lo, a.hi, bias)
    term = a.term_at(width)
    if a.bias != bias:
        term = term + z3.BitVecVal(a.bias - bias, width, a.ctx)
    return Signal(term, a.lo, a.hi, bias)


def restrict(a: Signal, lo: int, hi: int) -> Signal:
    """Narrow a signal to a range it is known to lie in (from bounds): the term loses its unused high bits."""
    lo, hi = max(a.lo, lo), min(a.hi, hi)
    if lo > hi:
        raise ValueError(f"restricting [{a.lo}, {a.hi}] to an empty range")
    if lo == hi:
        return constant(lo, a.ctx)
    return Signal(a.term_at(_width(lo, hi, a.bias)), lo, hi, a.bias)


def add(a: Signal, b: Signal) -> Signal:
    if a.is_constant:
        return shift_constant(b, a.lo)
    if b.is_constant:
        return shift_constant(a, b.lo)
    lo, hi, bias = a.lo + b.lo, a.hi + b.hi, a.bias + b.bias
    width = _width(lo, hi, bias)
    return Signal(a.term_at(width) + b.term_at(width), lo, hi, bias)


def scale(a: Signal, c: int) -> Signal:
    if c == 0 or a.is_constant:
        return constant(c * a.lo, a.ctx)
    if c == 1:
        return a
    lo, hi = sorted((c * a.lo, c * a.hi))
    bias = c * a.bias
    width = _width(lo, hi, bias)
    term = -a.term_at(width) if c == -1 else a.term_at(width) * z3.BitVecVal(c, width, a.ctx)
    return Signal(term, lo, hi, bias)


def _balanced(items: list, combine):
    """Pairwise reduction of a non-empty list: log2(n) levels, and each sum only as wide as its own range."""
    while len(items) > 1:
        items = [combine(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)] + items[len(items) & ~1:]
    return items[0]


def total(signals: list[Signal], offset: int, ctx: z3.Context) -> Signal:
    """offset + sum(signals) by a balanced adder tree over the non-constant signals."""
    offset += sum(s.lo for s in signals if s.is_constant)
    variable_part = [s for s in signals if not s.is_constant]
    if not variable_part:
        return constant(offset, ctx)
    return shift_constant(_balanced(variable_part, add), offset)


def wrapped_linear(pairs: list[tuple[Signal, int]], offset: int, bits: int, ctx: z3.Context) -> Signal:
    """offset + sum(c * x) computed modulo 2**bits throughout: exactly the wrapping accumulator."""
    constant_part = z3.BitVecVal(offset + sum(c * x.bias for x, c in pairs), bits, ctx)
    products = [x.term_at(bits) * z3.BitVecVal(c, bits, ctx) for x, c in pairs if not x.is_constant]
    limit = 1 << (bits - 1)
    return Signal(_balanced([*products, constant_part], lambda p, q: p + q), -limit, limit - 1, 0)


def at_least(a: Signal, c: int) -> z3.BoolRef:
    """a >= c, decided outright when the range settles it."""
    if c <= a.lo or c > a.hi:
        return z3.BoolVal(c <= a.lo, a.ctx)
    return a.term >= z3.BitVecVal(c - a.bias, a.width, a.ctx)


def flag(bit: z3.BitVecRef) -> Signal:
    """A 1-bit term as the integer 0 or 1."""
    return Signal(z3.ZeroExt(1, bit), 0, 1, 0)


def condition_flag(cond: z3.BoolRef) -> Signal:
    if z3.is_true(cond) or z3.is_false(cond):
        return constant(int(z3.is_true(cond)), cond.ctx)
    return flag(z3.If(cond, z3.BitVecVal(1, 1, cond.ctx), z3.BitVecVal(0, 1, cond.ctx)))


def ite(cond: z3.BoolRef, a: Signal, b: Signal) -> Signal:
    if z3.is_true(cond) or z3.is_false(cond):
        return a if z3.is_true(cond) else b
    bias = b.bias if a.is_constant else a.bias
    lo, hi = min(a.lo, b.lo), max(a.hi, b.hi)
    width = _width(lo, hi, bias)
    return Signal(z3.If(cond, rebias(a, bias).term_at(width), rebias(b, bias).term_at(width)), lo, hi, bias)


def clamp(a: Signal, lo: int | None, hi: int | None) -> Signal:
    if lo is not None and a.lo < lo:
        a = constant(lo, a.ctx) if a.hi <= lo else restrict(ite(at_least(a, lo), a, constant(lo, a.ctx)), lo, a.hi)
    if hi is not None and a.hi > hi:
        a = constant(hi, a.ctx) if a.lo >= hi else restrict(ite(at_least(a, hi + 1), constant(hi, a.ctx), a), a.lo, hi)
    return a


def maximum(signals: list[Signal]) -> Signal:
    """Max by an ite chain over the entries that can exceed the best guaranteed value."""
    floor = max(s.lo for s in signals)
    best = next(s for s in signals if s.lo == floor)
    result = best
    for s in signals:
        if s is not best and s.hi > floor:
            bias = result.bias
            width = _width(min(result.lo, s.lo), max(result.hi, s.hi), bias)
            mine, theirs = result.term_at(width), rebias(s, bias).term_at(width)
            either = Signal(z3.If(theirs > mine, theirs, mine), min(result.lo, s.lo), max(result.hi, s.hi), bias)
            result = restrict(either, max(result.lo, s.lo), either.hi)
    return result


def piecewise(a: Signal, starts: list[int], values: list[int]) -> Signal:
    """values[k] where starts[k] <= a < starts[k+1]: a balanced ite tree over the thresholds.

    Exact for any piecewise-constant map (monotone requant steps, arbitrary lookup tables).
    """
    lo, hi = min(values), max(values)
    if lo == hi:
        return constant(lo, a.ctx)
    bias = _narrowest_bias(lo, hi)
    width = _width(lo, hi, bias)

    def tree(i: int, j: int) -> z3.BitVecRef:
        if j - i == 1:
            return z3.BitVecVal(values[i] - bias, width, a.ctx)
        mid = (i + j) // 2
        return z3.If(at_least(a, starts[mid]), tree(mid, j), tree(i, mid))

    return Signal(tree(0, len(values)), lo, hi, bias)


def floor_shift(a: Signal, s: int) -> Signal:
    """floor(a / 2**s) for s > 0: the term's high bits, after moving the bias's low bits into it."""
    if a.is_constant:
        return constant(a.lo >> s, a.ctx)
    aligned = rebias(a, a.bias - a.bias % (1 << s))
    bias = aligned.bias >> s
    lo, hi = a.lo >> s, a.hi >> s
    return Signal(_slice(aligned.term, aligned.width, s, _width(lo, hi, bias)), lo, hi, bias)


def round_shift(a: Signal, s: int, rounding: Rounding) -> Signal:
    """a / 2**s rounded as requant.shift_round does; s <= 0 multiplies exactly.

    Every mode is one floor shift of a + c with c in {half - 1, half}: half_away adds
    [a >= 0], half_even adds bit s of a (the parity of floor(a / 2**s)).
    """
    if s <= 0:
        return scale(a, 1 << -s)
    half = 1 << (s - 1)
    if rounding is Rounding.FLOOR:
        return floor_shift(a, s)
    if rounding is Rounding.HALF_UP:
        return floor_shift(shift_constant(a, half), s)
    if rounding is Rounding.HALF_AWAY:
        return floor_shift(add(shift_constant(a, half - 1), condition_flag(at_least(a, 0))), s)
    if rounding is Rounding.HALF_EVEN:
        aligned = rebias(a, a.bias - a.bias % (1 << (s + 1)))  # bias now leaves bit s alone
        parity = flag(_slice(aligned.term, aligned.width, s, 1))
        return floor_shift(add(shift_constant(aligned, half - 1), parity), s)
    raise ValueError(f"unknown rounding mode {rounding!r}")


def _per_channel(param: np.ndarray, channel: int) -> int:
    param = np.asarray(param).ravel()
    return int(param[0] if param.size == 1 else param[channel])


def tflite_requant(a: Signal, m: int, shift: int) -> Signal:
    """TFLite: SRDHM(saturate(a << left), m), then RoundingDivideByPOT(right).

    With m > 0, gemmlowp's nudge-then-truncate is one floor shift: for ab >= 0,
    trunc((ab + 2**30) / 2**31) is floor; for ab < 0, trunc((ab + 1 - 2**30) / 2**31)
    = floor((ab + 1 - 2**30 + 2**31 - 1) / 2**31) = floor((ab + 2**30) / 2**31). The
    saturating case of SRDHM needs m = INT32_MIN, which a positive multiplier never is.
    RoundingDivideByPOT rounds half away from zero, as shift_round's half_away does.
    """
    if not 0 < m <= INT32_MAX:
        raise ValueError(f"TFLite multiplier {m} outside (0, 2**31)")
    shifted = clamp(scale(a, 1 << max(shift, 0)), INT32_MIN, INT32_MAX)
    high = floor_shift(shift_constant(scale(shifted, m), 1 << 30), 31)
    return round_shift(high, max(-shift, 0), Rounding.HALF_AWAY)


def output_stage(stage: OutputStage, channel: int, acc: Signal, style: RequantStyle) -> Signal:
    """y = clamp(R(acc) + zero, lo, hi), exactly."""
    if acc.is_constant or (stage.requant is not None and not _has_arithmetic(stage, style)):
        starts, values = stage.steps(channel, acc.lo, acc.hi)
        return piecewise(acc, starts.tolist(), values.tolist())
    if stage.requant is None:
        return clamp(acc, stage.lo, stage.hi)
    requant = stage.requant
    if isinstance(requant, ShiftRequant):
        y = round_shift(acc, _per_channel(requant.shift, channel), requant.rounding)
    else:
        assert isinstance(requant, FixedPointMultiplierRequant)
        y = tflite_requant(acc, _per_channel(requant.multiplier, channel), _per_channel(requant.shift, channel))
    exact = requant(np.array([acc.lo, acc.hi]), np.array([channel, channel]))
    y = restrict(y, int(exact[0]), int(exact[1]))  # interval arithmetic on rounding is looser than the map
    return clamp(shift_constant(y, stage.zero), stage.lo, stage.hi)


def _has_arithmetic(stage: OutputStage, style: RequantStyle) -> bool:
    return style == "arith" and isinstance(stage.requant, ShiftRequant | FixedPointMultiplierRequant)


@dataclass
class Encoding:
    """The query as one QF_BV formula over the input variables, in its own z3 context."""

    ctx: z3.Context
    inputs: list[Signal]  # the flat network input, constants where the box fixes a coordinate
    formula: z3.BoolRef  # box constraints and violation
    stats: dict = field(default_factory=dict)

    @property
    def variables(self) -> list[z3.BitVecRef]:
        return [s.term for s in self.inputs if not s.is_constant]

    def decode(self, values: dict[str, int]) -> np.ndarray:
        """The network input of a model, given each variable's signed value by name.

        A variable a model leaves out is unconstrained, and 0 always lies in its range.
        """
        return np.array([s.lo if s.is_constant else values.get(str(s.term), 0) + s.bias for s in self.inputs],
                        dtype=np.int64)

    def smtlib(self) -> str:
        """SMT-LIB2 text up to (check-sat), declaring every input variable even if the formula lost it."""
        solver = z3.Solver(ctx=self.ctx)
        solver.add(self.formula)
        commands = [line for line in solver.to_smt2().splitlines()
                    if not line.startswith((";", "(set-info", "(declare-fun"))]
        declarations = [f"(declare-fun {v} () (_ BitVec {v.size()}))" for v in self.variables]
        return "\n".join(["(set-logic QF_BV)", *declarations, *commands])


def _linear_layer(query: Query, index: int, values: list[Signal], bounds: LayerBounds,
                  style: RequantStyle, ctx: z3.Context) -> list[Signal]:
    qnn = query.network
    layer = qnn.layers[index]
    form = qnn.linear_form(index)
    wraps = bounds.may_overflow if qnn.overflow == "wrap" and bounds.may_overflow is not None else None
    outputs = []
    for j in range(form.matrix.shape[0]):
        if bounds.lo[j] == bounds.hi[j]:
            outputs.append(constant(int(bounds.lo[j]), ctx))
            continue
        columns = np.flatnonzero(form.matrix[j])
        pairs = [(values[i], int(form.matrix[j, i])) for i in columns]
        offset = int(form.offset[j])
        if wraps is not None and wraps[j]:
            acc = wrapped_linear(pairs, offset, qnn.accumulator_bits, ctx)
        else:
            acc = total([scale(x, c) for x, c in pairs], offset, ctx)
        acc = restrict(acc, int(bounds.acc_lo[j]), int(bounds.acc_hi[j]))
        outputs.append(output_stage(layer.output, int(form.channels[j]), acc, style))
    return outputs


def _lookup_layer(query: Query, index: int, values: list[Signal]) -> list[Signal]:
    layer = query.network.layers[index]
    assert isinstance(layer, Lookup)
    outputs = []
    for x, row in zip(values, query.network.lookup_channels(index), strict=True):
        segment = layer.table[row, x.lo - layer.input_lo:x.hi - layer.input_lo + 1]
        changes = np.concatenate([[0], np.flatnonzero(np.diff(segment)) + 1])
        outputs.append(piecewise(x, (changes + x.lo).tolist(), segment[changes].tolist()))
    return outputs


def _is(value: bool, p: z3.BoolRef) -> bool:
    return z3.is_true(p) if value else z3.is_false(p)


def _connective(parts: list[z3.BoolRef], ctx: z3.Context, neutral: bool, build) -> z3.BoolRef:
    """`build` (z3.And or z3.Or) with constants folded and never fewer than two operands:
    SMT-LIB's left-associative `and`/`or` take at least two, and Bitwuzla insists."""
    if any(_is(not neutral, p) for p in parts):
        return z3.BoolVal(not neutral, ctx)
    parts = [p for p in parts if not _is(neutral, p)]
    if len(parts) < 2:
        return parts[0] if parts else z3.BoolVal(neutral, ctx)
    return build(*parts)


def all_of(parts: list[z3.BoolRef], ctx: z3.Context) -> z3.BoolRef:
    return _connective(parts, ctx, True, z3.And)


def any_of(parts: list[z3.BoolRef], ctx: z3.Context) -> z3.BoolRef:
    return _connective(parts, ctx, False, z3.Or)


def _violation(violation: Violation, outputs: list[Signal], ctx: z3.Context) -> z3.BoolRef:
    terms = []
    for term in violation.terms:
        atoms = [at_least(total([scale(outputs[i], c) for i, c in atom.terms], 0, ctx), atom.bound)
                 for atom in term]
        terms.append(all_of(atoms, ctx))
    return any_of(terms, ctx)


def _check_overflow(query: Query, bounds: NetworkBounds) -> None:
    if query.network.overflow == "error":
        sites = bounds.overflow_sites()
        if sites:
            layer, neuron = sites[0]
            raise OverflowNotExcluded(f"accumulator overflow not excluded at layer {layer} neuron {neuron}")


def encode(query: Query, style: RequantStyle = "steps") -> Encoding:
    """The query's violation as a QF_BV formula: satisfiable exactly when the property fails."""
    qnn = query.network
    bounds = interval_bounds(qnn, query.region)
    _check_overflow(query, bounds)
    ctx = z3.Context()
    values, box = [], []
    for i, (lo, hi) in enumerate(zip(query.region.lo.tolist(), query.region.hi.tolist(), strict=True)):
        signal, constraints = variable(f"x{i}", lo, hi, ctx)
        values.append(signal)
        box.extend(constraints)
    inputs = values
    for index, layer in enumerate(qnn.layers):
        layer_bounds = bounds.layers[index]
        if isinstance(layer, Dense | Conv2d):
            values = _linear_layer(query, index, values, layer_bounds, style, ctx)
        elif isinstance(layer, MaxPool2d):
            values = [maximum([values[i] for i in window if i >= 0]) for window in qnn.pool_windows(index)]
        elif isinstance(layer, Lookup):
            values = _lookup_layer(query, index, values)
        else:
            assert isinstance(layer, Reshape)
        values = [restrict(v, int(lo), int(hi)) for v, lo, hi in zip(values, layer_bounds.lo, layer_bounds.hi,
                                                                      strict=True)]
    formula = all_of([*box, _violation(query.violation, values, ctx)], ctx)
    free = sum(not s.is_constant for s in inputs)
    unstable, neurons = bounds.unstable_neurons(qnn)
    stats = {"input_variables": free, "input_bits": sum(s.width for s in inputs if not s.is_constant),
             "unstable_neurons": unstable, "neurons": neurons}
    return Encoding(ctx, inputs, formula, stats)


def export_smtlib(query: Query, path: str | Path, style: RequantStyle = "steps") -> None:
    """A standalone QF_BV benchmark for any SMT-LIB2 solver: sat exactly when the property fails.

    Input i is `x<i> + bias_i` with x<i> read as a signed bit-vector; the biases are
    listed in comments so that a model from any solver decodes to a network input.
    """
    encoding = encode(query, style)
    lines = [f"; bitqnn query: {query.label}", f"; network: {query.network.describe()}"]
    lines += [f"; input {i} = x{i} (signed) + {s.bias}" if not s.is_constant else f"; input {i} = {s.lo}"
              for i, s in enumerate(encoding.inputs)]
    Path(path).write_text("\n".join([*lines, encoding.smtlib(), "(exit)", ""]))

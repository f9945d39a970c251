"""Bit-vector values that carry their exact integer range: the arithmetic the QF_BV encoding is built from.

Every value is a `Signal`: a bit-vector term, a constant bias kept outside the term, and
the exact integer range of their sum. The bias is what keeps terms narrow: an input box
[98, 102] costs a 3-bit term, not an 8-bit one, and adding or comparing with a constant
is free constant folding. Each term is as wide as its range needs, and no wider.

Two's-complement arithmetic modulo 2**w gives the true result whenever that result fits
in w bits, whatever the operands' widths. So each operation here truncates or
sign-extends its operands to the width of its own result range and never overflows;
`wrapped_linear` is the one place that computes in a fixed width on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from bitqnn.requant import Rounding


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

"""Requantization: the map from an exact integer accumulator to a stored activation.

Every mode here is a monotone (non-decreasing) step function of the accumulator.
That single fact is what makes exact encodings possible without tolerances: the
points where the output steps can be found exactly by bisection on this very code,
so the encoders never re-derive a rounding rule by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


class Rounding(str, Enum):
    """How a division by a power of two rounds; names match the .qspec keywords."""

    FLOOR = "floor"
    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    HALF_AWAY = "half_away"


def shift_round(values: np.ndarray, shift: np.ndarray | int, rounding: Rounding) -> np.ndarray:
    """Divide int64 values by 2**shift with the given rounding; shift <= 0 multiplies exactly."""
    v = np.asarray(values, dtype=np.int64)
    s = np.broadcast_to(np.asarray(shift, dtype=np.int64), v.shape)
    left = np.where(s < 0, -s, 0)
    right = np.where(s > 0, s, 0)
    v = v << left
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    if rounding is Rounding.FLOOR:
        return v >> right
    if rounding is Rounding.HALF_UP:
        return (v + half) >> right
    if rounding is Rounding.HALF_AWAY:
        magnitude = (np.abs(v) + half) >> right
        return np.where(v < 0, -magnitude, magnitude)
    if rounding is Rounding.HALF_EVEN:
        q = (v + half) >> right
        mask = (np.int64(1) << right) - 1
        tie = (right > 0) & ((v & mask) == half)
        return q - (tie & ((q & 1) == 1))
    raise ValueError(f"unknown rounding mode {rounding!r}")


def _per_channel(param: np.ndarray, channels: np.ndarray) -> np.ndarray:
    param = np.asarray(param)
    return param[0] if param.size == 1 else param[channels]


class Requant(Protocol):
    """A monotone map from accumulator to (unclamped, zero-point-free) output integer."""

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, eq=False)
class ShiftRequant:
    """Power-of-two fixed point: the family QVIP, QEBVerif and Henzinger et al. use."""

    shift: np.ndarray  # int64, one per output channel or a single value
    rounding: Rounding

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        return shift_round(acc, _per_channel(self.shift, channels), self.rounding)

    def describe(self) -> str:
        shifts = sorted(set(np.asarray(self.shift).ravel().tolist()))
        return f"shift {shifts} {self.rounding.value}"


def _trunc_div(num: np.ndarray, den: int) -> np.ndarray:
    """C integer division (toward zero), as TFLite's int64 arithmetic does."""
    q = np.abs(num) // den
    return np.where(num < 0, -q, q)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's SRDHM on int32 operands, computed exactly in int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    result = _trunc_div(ab + nudge, 1 << 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, result)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: divide by 2**exponent, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


@dataclass(frozen=True, eq=False)
class FixedPointMultiplierRequant:
    """TFLite / gemmlowp: a Q31 multiplier m and a shift, M = m * 2**(shift - 31).

    The left shift saturates to int32 where TFLite's reference leaves it undefined,
    which keeps the map monotone.
    """

    multiplier: np.ndarray  # int64 values in [2**30, 2**31)
    shift: np.ndarray  # int64, positive means left shift

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        m = _per_channel(self.multiplier, channels)
        shift = _per_channel(self.shift, channels)
        left = np.maximum(shift, 0)
        right = np.maximum(-shift, 0)
        shifted = np.clip(np.asarray(acc, dtype=np.int64) << left, INT32_MIN, INT32_MAX)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m), right)

    def describe(self) -> str:
        return "tflite fixed-point multiplier"

    @staticmethod
    def from_real(multipliers: np.ndarray) -> FixedPointMultiplierRequant:
        """Split real multipliers into (Q31 integer, shift) the way TFLite's QuantizeMultiplier does."""
        values = np.atleast_1d(np.asarray(multipliers, dtype=np.float64))
        ms, shifts = [], []
        for value in values:
            if value <= 0:
                raise ValueError(f"requantization multiplier must be positive, got {value}")
            fraction, exponent = np.frexp(value)
            q = int(round(fraction * (1 << 31)))
            if q == 1 << 31:
                q //= 2
                exponent += 1
            ms.append(q)
            shifts.append(int(exponent))
        return FixedPointMultiplierRequant(np.array(ms, np.int64), np.array(shifts, np.int64))


@dataclass(frozen=True, eq=False)
class Float32Requant:
    """onnxruntime's integer kernels: float32(acc) * float32 multiplier, round half to even."""

    multiplier: np.ndarray  # float32, positive

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        m = _per_channel(np.asarray(self.multiplier, dtype=np.float32), channels)
        product = np.asarray(acc, dtype=np.int64).astype(np.float32) * m
        return np.rint(product).astype(np.int64)

    def describe(self) -> str:
        return "float32 multiplier, round half even"


@dataclass(frozen=True, eq=False)
class OutputStage:
    """y = clamp(R(acc) + zero, lo, hi); no requant means the accumulator is the output.

    The clamp is where ReLU and saturation live: ReLU is lo == zero.
    """

    requant: Requant | None
    zero: int = 0
    lo: int | None = None
    hi: int | None = None
    _tables: dict[int, StepTable] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc, dtype=np.int64)
        y = acc if self.requant is None else self.requant(acc, channels) + self.zero
        if self.lo is not None or self.hi is not None:
            y = np.clip(y, self.lo, self.hi)
        return y

    def describe(self) -> str:
        parts = ["identity" if self.requant is None else self.requant.describe()]
        if self.zero:
            parts.append(f"+{self.zero}")
        if self.lo is not None or self.hi is not None:
            parts.append(f"clamp[{self.lo},{self.hi}]")
        return " ".join(parts)

    def steps(self, channel: int, acc_lo: int, acc_hi: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact step function on [acc_lo, acc_hi]: (starts, values), both int64.

        Piece i covers accumulators from starts[i] up to starts[i+1] - 1 (the last one to
        acc_hi) and maps them all to values[i]. Found by bisection on __call__ itself.

        A stage clamped on both sides has at most hi - lo + 1 pieces, so its staircase is
        kept per channel and sliced: the symbolic analysis asks for every neuron's steps on
        every run, and on the 3x512 MNIST model's bit-flip pruning (hundreds of analyses)
        the bisections were 72% of the time."""
        if self.lo is None or self.hi is None:
            return self._bisect_steps(channel, acc_lo, acc_hi)
        table = self._tables.get(channel)
        if table is None or acc_lo < table.lo or acc_hi > table.hi:
            lo, hi = (acc_lo, acc_hi) if table is None else (min(acc_lo, table.lo), max(acc_hi, table.hi))
            table = StepTable(lo, hi, *self._bisect_steps(channel, lo, hi))
            self._tables[channel] = table
        return table.within(acc_lo, acc_hi)

    def _bisect_steps(self, channel: int, acc_lo: int, acc_hi: int) -> tuple[np.ndarray, np.ndarray]:
        ch = np.array(channel)
        y_lo = int(self(np.array(acc_lo), ch))
        y_hi = int(self(np.array(acc_hi), ch))
        targets = np.arange(y_lo + 1, y_hi + 1, dtype=np.int64)
        lo = np.full(targets.shape, acc_lo, dtype=np.int64)
        hi = np.full(targets.shape, acc_hi, dtype=np.int64)
        while np.any(lo < hi):
            mid = lo + (hi - lo) // 2
            reached = self(mid, np.broadcast_to(ch, mid.shape)) >= targets
            hi = np.where(reached, mid, hi)
            lo = np.where(reached, lo, mid + 1)
        starts = np.concatenate([[acc_lo], lo]).astype(np.int64)
        keep = np.ones(starts.shape, dtype=bool)
        keep[:-1] = starts[:-1] != starts[1:]  # a skipped output value has an empty piece
        starts = starts[keep]
        values = self(starts, np.broadcast_to(ch, starts.shape))
        return starts, values


@dataclass(frozen=True)
class StepTable:
    """A stage's staircase on [lo, hi]; its restriction to a sub-range is a slice, since
    the pieces of a monotone step function on a sub-range are its pieces cut there."""

    lo: int
    hi: int
    starts: np.ndarray
    values: np.ndarray

    def within(self, acc_lo: int, acc_hi: int) -> tuple[np.ndarray, np.ndarray]:
        first = int(np.searchsorted(self.starts, acc_lo, side="right")) - 1
        last = int(np.searchsorted(self.starts, acc_hi, side="right"))
        starts = self.starts[first:last].copy()
        starts[0] = acc_lo
        return starts, self.values[first:last].copy()


def round_real(values: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Round float64 values to int64 with the given tie rule, exactly.

    x - floor(x) is exact in float64, so the tie test compares the true fraction.
    """
    x = np.asarray(values, dtype=np.float64)
    floor = np.floor(x)
    frac = x - floor
    if rounding is Rounding.FLOOR:
        tie_up = np.zeros(x.shape, dtype=bool)
    elif rounding is Rounding.HALF_UP:
        tie_up = np.ones(x.shape, dtype=bool)
    elif rounding is Rounding.HALF_AWAY:
        tie_up = floor >= 0
    else:
        tie_up = (floor.astype(np.int64) & 1) == 1
    up = (frac > 0.5) | ((frac == 0.5) & tie_up)
    if rounding is Rounding.FLOOR:
        up = np.zeros(x.shape, dtype=bool)
    return floor.astype(np.int64) + up

"""Requantization modes against independent exact references (fractions, direct formulas)."""

import math
from fractions import Fraction

import numpy as np
import pytest

from bitqnn.requant import (
    FixedPointMultiplierRequant,
    Float32Requant,
    OutputStage,
    Rounding,
    ShiftRequant,
    round_real,
    shift_round,
)


def reference_round(value: Fraction, mode: Rounding) -> int:
    floor = math.floor(value)
    rest = value - floor
    if mode is Rounding.FLOOR or rest < Fraction(1, 2):
        return floor
    if rest > Fraction(1, 2):
        return floor + 1
    return {Rounding.HALF_UP: floor + 1, Rounding.HALF_EVEN: floor + (floor % 2),
            Rounding.HALF_AWAY: floor + 1 if value > 0 else floor}[mode]


@pytest.mark.parametrize("mode", list(Rounding))
@pytest.mark.parametrize("shift", [-2, 0, 1, 2, 3, 7])
def test_shift_round_matches_exact_fractions(mode, shift):
    values = np.arange(-700, 701, dtype=np.int64)
    expected = [reference_round(Fraction(int(v)) / Fraction(2) ** shift, mode)
                for v in values]
    assert shift_round(values, shift, mode).tolist() == expected


@pytest.mark.parametrize("mode", list(Rounding))
def test_round_real_matches_exact_fractions(mode):
    values = np.concatenate([np.arange(-40, 41) / 4.0, np.random.default_rng(0).uniform(-50, 50, 300)])
    expected = [reference_round(Fraction(float(v)), mode) for v in values]
    assert round_real(values, mode).tolist() == expected


def tflite_reference(acc: int, multiplier: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier written out with Python integers."""
    x = max(min(acc * (1 << max(shift, 0)), 2**31 - 1), -(2**31))
    ab = x * multiplier
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    numerator = ab + nudge
    high = (abs(numerator) >> 31) * (1 if numerator >= 0 else -1)  # C division truncates toward zero
    exponent = max(-shift, 0)
    mask = (1 << exponent) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> exponent) + (1 if remainder > threshold else 0)


def test_tflite_multiplier_matches_written_out_reference():
    rng = np.random.default_rng(1)
    for real in [0.00372, 0.25, 0.7, 1.5, 3.9e-5]:
        requant = FixedPointMultiplierRequant.from_real(np.array([real]))
        m, s = int(requant.multiplier[0]), int(requant.shift[0])
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
        accs = rng.integers(-(2**20), 2**20, 2000)
        got = requant(accs, np.zeros_like(accs))
        assert got.tolist() == [tflite_reference(int(a), m, s) for a in accs]
        # round half away from zero to the nearest of acc * M, within one unit
        assert np.all(np.abs(got - accs * (m * 2.0 ** (s - 31))) <= 1.0)


def test_float32_requant_rounds_half_even_in_single_precision():
    requant = Float32Requant(np.array([0.5], np.float32))
    accs = np.array([-3, -1, 1, 3, 5, 7])
    assert requant(accs, np.zeros_like(accs)).tolist() == [-2, 0, 0, 2, 2, 4]


@pytest.mark.parametrize("stage", [
    OutputStage(ShiftRequant(np.array([4]), Rounding.HALF_EVEN), 3, -8, 40),
    OutputStage(ShiftRequant(np.array([-1]), Rounding.FLOOR), 0, None, 100),
    OutputStage(FixedPointMultiplierRequant.from_real(np.array([0.013])), -5, -128, 127),
    OutputStage(Float32Requant(np.array([0.0071], np.float32)), 0, 0, 255),
])
def test_steps_reproduce_the_stage_exactly(stage):
    starts, values = stage.steps(0, -3000, 3000)
    accs = np.arange(-3000, 3001)
    piece = np.searchsorted(starts, accs, side="right") - 1
    assert np.array_equal(values[piece], stage(accs, np.zeros_like(accs)))
    assert np.all(np.diff(values) > 0) and np.all(np.diff(starts) > 0)

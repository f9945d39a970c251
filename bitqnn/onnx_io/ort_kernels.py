"""Exact numpy emulations of the onnxruntime CPU kernels that quantized models run on x86-64.

Each formula below was established by measurement against onnxruntime 1.32 (MLAS, x86-64
with AVX2 and AVX-512 VNNI) over full input grids, with random scales and with tie-prone
short-mantissa scales. tests/test_onnx_kernels.py repeats the measurements; the competing
formulas named here disagree with onnxruntime on thousands of points, these on none.

- QuantizeLinear: clamp(rint(x / scale) + zero) with a float32 *division* (multiplying by
  1/scale disagrees), round half to even, zero point added after rounding.
- DequantizeLinear: float32(q - zero) * scale, one float32 rounding (q*scale - zero*scale
  disagrees).
- QGemm, QLinearMatMul, QLinearConv (MlasRequantizeOutput and the symmetric-weight conv
  kernels): the exact int32 accumulator plus the int32 bias, then rint(float32(acc) * M) +
  zero, clamped to the output type, with M = (a_scale * b_scale[c]) / y_scale evaluated left
  to right in float32 (QGemm: ((alpha * a_scale) * b_scale[c]) / y_scale). Per-channel weight
  scales give one M per output channel. No intermediate int16 saturation occurs on a VNNI
  CPU: u8 x s8 products with full-range weights (255 * 127 summed four times) come out exact.
  Without VNNI, MLAS's AVX2 u8s8 kernel uses VPMADDUBSW, which saturates pairs of products
  to int16; quantize_static's reduce_range (7-bit weights) is what avoids that there.
- QLinearAdd (MlasQLinearAddKernelAvx2): rA = float32(sA / sC), rB = float32(sB / sC),
  F = float32(zC) - fma(rA, zA, rB * zB) and c = fma(A, rA, fma(B, rB, F)), y = clamp(rint(c)),
  where A and B are the raw stored integers (the zero points enter before rounding). Which
  input plays A follows onnxruntime's broadcasting into spans (`constant_plays_b`): input 0
  plays A when both vary along the span, an input constant along it (a scalar or
  per-channel bias) plays B, and when the span is a single element both are "scalars" and
  input 0 plays B. The SSE2 formula (no fma), swapped roles and the plain float path
  (dequantize, add, quantize) all disagree; so would ARM's fixed-point NEON kernel, which is
  why imported semantics name the platform.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

F32 = np.float32


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    diff = np.asarray(q, dtype=np.int64) - np.asarray(zero, dtype=np.int64)
    return diff.astype(F32) * np.asarray(scale, dtype=F32)


def quantize(values: np.ndarray, scale: np.ndarray, zero: int, lo: int, hi: int) -> np.ndarray:
    ratio = np.asarray(values, dtype=F32) / np.asarray(scale, dtype=F32)
    return np.clip(rint_to_int(ratio) + zero, lo, hi)


def rint_to_int(values: np.ndarray) -> np.ndarray:
    """Round half to even into int64; values beyond +-2**40 saturate (every clamp is far inside)."""
    return np.rint(np.clip(values, -(2.0**40), 2.0**40)).astype(np.int64)


def qlinear_multiplier(a_scale: float, b_scale: np.ndarray, y_scale: float, alpha: float = 1.0) -> np.ndarray:
    """The float32 requantization multiplier of QGemm / QLinearMatMul / QLinearConv, one per channel."""
    leading = F32(F32(alpha) * F32(a_scale))
    return np.atleast_1d((leading * np.asarray(b_scale, dtype=F32)) / F32(y_scale)).astype(F32)


def qlinear_add(a: np.ndarray, a_scale: float, a_zero: int, b: np.ndarray, b_scale: float, b_zero: int,
                c_scale: float, c_zero: int, lo: int, hi: int) -> np.ndarray:
    """MLAS's AVX2 QLinearAdd on raw stored integers a (role A) and b (role B), broadcast."""
    ratio_a = F32(F32(a_scale) / F32(c_scale))
    ratio_b = F32(F32(b_scale) / F32(c_scale))
    fixed = F32(F32(c_zero) - fma32(ratio_a, F32(a_zero), F32(ratio_b * F32(b_zero))))
    a_f, b_f = np.broadcast_arrays(np.asarray(a, dtype=F32), np.asarray(b, dtype=F32))
    inner = fma32(b_f, ratio_b, fixed)
    return np.clip(rint_to_int(fma32(a_f, ratio_a, inner)), lo, hi)


def constant_plays_b(x_first: bool, constant_shape: tuple[int, ...], sample_shape: tuple[int, ...]) -> bool:
    """Whether the constant operand of a QLinearAdd plays B (see the module notes), batch > 1.

    onnxruntime cuts the output into spans along the trailing dimensions on which both
    inputs have equal sizes. If those hold more than one element, both operands vary along a
    span and input 0 plays A. Otherwise the constant is constant along each span and plays
    B -- unless the constant has no dimensions beyond that run (a [1] or [] constant on a
    tensor whose last dimension is 1): then every span is one element and input 0 plays B.
    The batch dimension (assumed > 1) never matches, so a batch of one sample can take the
    last branch where larger batches take the middle one.
    """
    run, elements = 0, 1
    for c_dim, x_dim in zip(reversed(constant_shape), reversed(sample_shape)):
        if c_dim != x_dim:
            break
        run, elements = run + 1, elements * x_dim
    if elements > 1:
        return x_first
    if run == len(constant_shape):
        return not x_first
    return True


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add, a * b + c with one rounding, for float32 operands.

    The product of two float32 values is exact in float64; the float64 sum is checked for
    exactness with Knuth's two-sum, and the rare inexact entries are redone in rationals, so
    the single rounding to float32 is always the correct one.
    """
    operands = [np.asarray(v, dtype=F32) for v in (a, b, c)]
    shape = np.broadcast_shapes(*(v.shape for v in operands))
    a64, b64, c64 = (np.broadcast_to(v, shape).astype(np.float64).ravel() for v in operands)
    product = a64 * b64
    total = product + c64
    virtual = total - product
    error = (product - (total - virtual)) + (c64 - virtual)
    result = total.astype(F32)
    for i in np.flatnonzero(error):
        exact = Fraction(float(a64[i])) * Fraction(float(b64[i])) + Fraction(float(c64[i]))
        result[i] = round_to_float32(exact)
    return result.reshape(shape)


def round_to_float32(value: Fraction) -> F32:
    """Round a rational to the nearest float32, ties to even (normal range)."""
    if value == 0:
        return F32(0.0)
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    ulp = Fraction(2) ** (max(exponent, -126) - 23)
    units = magnitude / ulp
    whole, rest = divmod(units.numerator, units.denominator)
    if 2 * rest > units.denominator or (2 * rest == units.denominator and whole % 2 == 1):
        whole += 1
    result = F32(float(whole * ulp))
    return -result if value < 0 else result

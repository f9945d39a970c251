"""Regions: written once in real terms, resolved onto each network's integer input grid.

A region statement does not know which network it will be used with, so it is checked
and kept in real terms (`Region`); `Region.box(qnn)` then maps it through that network's
own input quantizer. The quantizer is monotone, so the image of a real interval is the
integer interval between the images of its ends. That interval is intersected with the
representable inputs; a region that misses them entirely is an error, not a silent
single saturated point.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bitqnn.qnn import QNN
from bitqnn.query import Box
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError


@dataclass(frozen=True, eq=False)
class Region:
    """lo/hi are offsets around `center` (or absolute real bounds when center is None),
    each a scalar or one value per input; `steps` means whole grid steps, else real units."""

    expr: ast.RegionExpr
    center: np.ndarray | None
    lo: np.ndarray
    hi: np.ndarray
    steps: bool

    def box(self, qnn: QNN, network: str, use: ast.Pos) -> Box:
        n = qnn.input_size
        where = f"network '{network}' (used on line {use.line})"
        if self.center is not None and self.center.size != n:
            raise SpecError(f"the centre point has {self.center.size} values but {where} takes {n} inputs",
                            self.expr.center.pos)
        lo = _per_input(self.lo, n, _bound_pos(self.expr, "lo"), where)
        hi = _per_input(self.hi, n, _bound_pos(self.expr, "hi"), where)
        if self.center is None:
            grid_lo, grid_hi = grid(qnn, lo), grid(qnn, hi)
        elif self.steps:
            center = grid(qnn, self.center, margin=2 + int(max(np.abs(lo).max(), np.abs(hi).max())))
            grid_lo, grid_hi = center + lo, center + hi
        else:
            grid_lo, grid_hi = grid(qnn, self.center + lo), grid(qnn, self.center + hi)
        grid_lo = np.maximum(grid_lo, qnn.input_lo)
        grid_hi = np.minimum(grid_hi, qnn.input_hi)
        outside = np.flatnonzero(grid_lo > grid_hi)
        if outside.size:
            real_lo, real_hi = qnn.dequantize_input(np.array([qnn.input_lo, qnn.input_hi]))
            raise SpecError(f"the region misses the input range [{real_lo:g}, {real_hi:g}] of {where} "
                            f"in input {outside[0]}", self.expr.pos)
        return Box(grid_lo.astype(np.int64), grid_hi.astype(np.int64))

    def center_on(self, qnn: QNN) -> np.ndarray | None:
        """The centre as the deployed network would see it (quantized and saturated)."""
        return None if self.center is None else qnn.quantize_input(self.center)


def grid(qnn: QNN, real: np.ndarray, margin: int = 2) -> np.ndarray:
    """The network's own input quantizer with its saturation moved `margin` steps outwards.

    A value beyond the input range must stay recognisably beyond it (by more than any
    offset later added to it); reusing quantize_input keeps its rounding mode the one
    source of truth. Reals are clipped first so that huge values cannot overflow int64.
    """
    wide = replace(qnn, input_lo=qnn.input_lo - margin, input_hi=qnn.input_hi + margin)
    real_lo, real_hi = wide.dequantize_input(np.array([wide.input_lo, wide.input_hi]))
    return wide.quantize_input(np.clip(real, real_lo, real_hi))


def _per_input(values: np.ndarray, n: int, pos: ast.Pos, where: str) -> np.ndarray:
    if values.ndim == 0:
        return np.full(n, values)
    if values.size != n:
        raise SpecError(f"{values.size} bounds given but {where} takes {n} inputs", pos)
    return values


def _bound_pos(expr: ast.RegionExpr, end: str) -> ast.Pos:
    if isinstance(expr, ast.Linf):
        return expr.radius.pos
    return (expr.lo if end == "lo" else expr.hi).pos


def _amount(quantity: ast.Quantity, steps: bool, what: str) -> np.ndarray:
    """A scalar or vector quantity as int64 steps or float64 reals."""
    numbers = (quantity.value,) if isinstance(quantity.value, ast.Number) else quantity.value.values
    if steps:
        for number in numbers:
            if number.value.denominator != 1:
                raise SpecError(f"{what} in input steps must be a whole number; add 'real' for real units",
                                number.pos)
        values = np.array([int(number.value) for number in numbers], dtype=np.int64)
    else:
        values = np.array([float(number.value) for number in numbers], dtype=np.float64)
    return values.reshape(()) if isinstance(quantity.value, ast.Number) else values


def resolve(expr: ast.RegionExpr, center: np.ndarray | None) -> Region:
    """Check what can be checked without a network; `center` is the real centre point, if any."""
    if isinstance(expr, ast.Linf):
        if isinstance(expr.radius.value, ast.Vector):
            raise SpecError("linf takes one radius; use box(x, lo=..., hi=...) for per-input bounds",
                            expr.radius.pos)
        steps = not expr.radius.real
        radius = _amount(expr.radius, steps, "the radius")
        if radius < 0:
            raise SpecError("the radius must not be negative", expr.radius.pos)
        return Region(expr, center, np.asarray(-radius), radius, steps)
    steps = center is not None and not (expr.lo.real or expr.hi.real)
    if center is not None and expr.lo.real != expr.hi.real:
        raise SpecError("lo and hi must be in the same units: mark both 'real' or neither", expr.hi.pos)
    lo = _amount(expr.lo, steps, "lo")
    hi = _amount(expr.hi, steps, "hi")
    if lo.ndim and hi.ndim and lo.size != hi.size:
        raise SpecError(f"lo has {lo.size} values but hi has {hi.size}", expr.hi.pos)
    above = np.flatnonzero(np.atleast_1d(lo > hi))
    if above.size:
        raise SpecError("lo exceeds hi" + (f" at input {above[0]}" if lo.ndim or hi.ndim else ""), expr.pos)
    return Region(expr, center, lo, hi, steps)

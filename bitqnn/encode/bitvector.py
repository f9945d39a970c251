"""A query as QF_BV terms: bit-precise two's-complement arithmetic, every width taken from the bounds.

The values are `bv_signal.Signal`s, each as wide as its exact range needs. Accumulators
that the network lets wrap are computed in exactly `accumulator_bits` bits, wraparound
included; everything else never overflows by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import z3

from bitqnn.bounds import LayerBounds, NetworkBounds, interval_bounds
from bitqnn.encode.bv_signal import (
    Signal,
    at_least,
    clamp,
    constant,
    floor_shift,
    maximum,
    piecewise,
    restrict,
    round_shift,
    scale,
    shift_constant,
    total,
    variable,
    wrapped_linear,
)
from bitqnn.qnn import Conv2d, Dense, Lookup, MaxPool2d, Reshape
from bitqnn.query import Box, Query, Violation
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
                  style: RequantStyle, ctx: z3.Context, extra: dict[int, list[Signal]]) -> list[Signal]:
    """The layer's outputs; `extra[j]` are further terms of neuron j's accumulator (bit flips add them)."""
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
            assert j not in extra, "extra accumulator terms are never encoded with wraparound"
            acc = wrapped_linear(pairs, offset, qnn.accumulator_bits, ctx)
        else:
            acc = total([scale(x, c) for x, c in pairs] + extra.get(j, []), offset, ctx)
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


def input_signals(region: Box, ctx: z3.Context) -> tuple[list[Signal], list[z3.BoolRef]]:
    """One signal per flat input (a constant where the box fixes it) and the box constraints."""
    inputs, box = [], []
    for i, (lo, hi) in enumerate(zip(region.lo.tolist(), region.hi.tolist(), strict=True)):
        signal, constraints = variable(f"x{i}", lo, hi, ctx)
        inputs.append(signal)
        box.extend(constraints)
    return inputs, box


ExtraTerms = Callable[[int, list[Signal]], dict[int, list[Signal]]]
"""Given a linear layer's index and input signals: further accumulator terms per neuron."""


def encode_layers(query: Query, bounds: NetworkBounds, values: list[Signal], style: RequantStyle,
                  ctx: z3.Context, extra: ExtraTerms | None = None) -> list[Signal]:
    """The network's flat outputs from its input signals, each value narrowed to its bounds."""
    qnn = query.network
    for index, layer in enumerate(qnn.layers):
        layer_bounds = bounds.layers[index]
        if isinstance(layer, Dense | Conv2d):
            added = extra(index, values) if extra is not None else {}
            values = _linear_layer(query, index, values, layer_bounds, style, ctx, added)
        elif isinstance(layer, MaxPool2d):
            values = [maximum([values[i] for i in window if i >= 0]) for window in qnn.pool_windows(index)]
        elif isinstance(layer, Lookup):
            values = _lookup_layer(query, index, values)
        else:
            assert isinstance(layer, Reshape)
        values = [restrict(v, int(lo), int(hi)) for v, lo, hi in zip(values, layer_bounds.lo, layer_bounds.hi,
                                                                      strict=True)]
    return values


def encode(query: Query, style: RequantStyle = "steps") -> Encoding:
    """The query's violation as a QF_BV formula: satisfiable exactly when the property fails."""
    qnn = query.network
    bounds = interval_bounds(qnn, query.region)
    _check_overflow(query, bounds)
    ctx = z3.Context()
    inputs, box = input_signals(query.region, ctx)
    outputs = encode_layers(query, bounds, inputs, style, ctx)
    formula = all_of([*box, _violation(query.violation, outputs, ctx)], ctx)
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

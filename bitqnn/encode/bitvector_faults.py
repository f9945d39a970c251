"""A bit-flip fault query as QF_BV terms: stored bit patterns XOR symbolic masks.

Independent of the integer encoding (`encode/cpsat_faults.py`), which adds +-2**bit per
flip: here each candidate parameter's stored pattern is XOR-ed with a mask variable of
the storage width, sign- or zero-extended and shifted left as the layer uses it, and
its change is multiplied with the layer input as a bit-vector product. The flip budget
is a popcount over all masks; scope "one" also allows at most one non-zero mask. The
rest of the network is `encode/bitvector.py`'s, with each flipped parameter's change
added to its neuron's accumulator, so every width again comes from bounds, here ones
valid for every faulty network (`fault_prune.fault_bounds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import z3

from bitqnn.bounds import NetworkBounds, interval_bounds, interval_product
from bitqnn.encode.bitvector import Encoding, RequantStyle, _violation, all_of, encode_layers, input_signals
from bitqnn.encode.bv_signal import Signal, rebias, scale, shift_constant, signed_width
from bitqnn.fault_prune import fault_bounds
from bitqnn.faults import Candidates, FaultQuery, Flip, candidates
from bitqnn.qnn import QNN, Storage


class FaultEncodingUnsupported(Exception):
    """The fault query is valid but cannot be encoded exactly (overflow not excluded, or no bounds)."""


@dataclass(frozen=True)
class FaultyParameter:
    """One candidate parameter: where it sits, how it is stored, and which of its bits may flip."""

    layer: int
    bias: bool
    neuron: int
    column: int  # -1 for a bias
    storage: Storage
    used: int  # the clean value the layer uses
    positions: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"mask_{self.layer}_{'b' if self.bias else 'w'}_{self.neuron}_{self.column}"

    @property
    def pattern(self) -> int:
        """The clean stored bit pattern, as an unsigned integer of the storage width."""
        return (self.used >> self.storage.shift) & ((1 << self.storage.bits) - 1)

    def flips(self, mask: int) -> list[Flip]:
        kind, index = ("biases", (self.neuron,)) if self.bias else ("weights", (self.neuron, self.column))
        return [Flip(self.layer, kind, index, b) for b in self.positions if mask >> b & 1]


def faulty_parameters(qnn: QNN, cands: Candidates) -> list[FaultyParameter]:
    """The candidate table grouped by parameter, in the table's order."""
    rows_of: dict[int, list[int]] = {}
    for j, p in enumerate(cands.param.tolist()):
        rows_of.setdefault(p, []).append(j)
    result = []
    for rows in rows_of.values():
        j = rows[0]
        layer = qnn.layers[int(cands.layer[j])]
        bias, neuron, column = bool(cands.bias[j]), int(cands.neuron[j]), int(cands.column[j])
        storage = layer.bias_storage if bias else layer.weight_storage
        used = int(layer.bias[neuron] if bias else layer.weight[neuron, column])
        if int(storage.flip(np.array(used), 0)) != used:
            raise FaultEncodingUnsupported(f"layer {int(cands.layer[j])} value {used} is not representable "
                                           f"in its storage {storage}")
        positions = tuple(sorted({int(cands.bit[r]) for r in rows}))
        result.append(FaultyParameter(int(cands.layer[j]), bias, neuron, column, storage, used, positions))
    return result


def flipped_value(param: FaultyParameter, mask: z3.BitVecRef) -> Signal:
    """The value the layer uses once `mask` is XOR-ed into the stored pattern.

    Its range comes from the bits that may flip: a free bit of weight w (2**b, or
    -2**(bits-1) for a two's-complement sign bit) adds min(w, 0) .. max(w, 0)."""
    storage = param.storage
    weights = [1 << b for b in range(storage.bits)]
    if storage.signed:
        weights[-1] = -weights[-1]
    fixed = sum(w for b, w in enumerate(weights) if param.pattern >> b & 1 and b not in param.positions)
    lo = (fixed + sum(min(weights[b], 0) for b in param.positions)) << storage.shift
    hi = (fixed + sum(max(weights[b], 0) for b in param.positions)) << storage.shift
    raw = z3.BitVecVal(param.pattern, storage.bits, mask.ctx) ^ mask
    wide = z3.SignExt(1, raw) if storage.signed else z3.ZeroExt(1, raw)
    if storage.shift:
        wide = z3.Concat(wide, z3.BitVecVal(0, storage.shift, mask.ctx))
    return Signal(z3.Extract(signed_width(lo, hi) - 1, 0, wide), lo, hi, 0)


def multiply(a: Signal, b: Signal) -> Signal:
    """a * b in a width that holds every product of their ranges, so it never overflows."""
    if a.is_constant or b.is_constant:
        return scale(b, a.lo) if a.is_constant else scale(a, b.lo)
    corners = (a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi)
    lo, hi = min(corners), max(corners)
    width = signed_width(lo, hi)
    return Signal(rebias(a, 0).term_at(width) * rebias(b, 0).term_at(width), lo, hi, 0)


def at_most(bits: list[z3.BitVecRef], limit: int, ctx: z3.Context) -> z3.BoolRef:
    """At most `limit` of these 1-bit terms are set: an unsigned sum wide enough for all of them."""
    if limit >= len(bits):
        return z3.BoolVal(True, ctx)
    width = len(bits).bit_length()
    return z3.ULE(z3.Sum([z3.ZeroExt(width - 1, b) for b in bits]), z3.BitVecVal(limit, width, ctx))


@dataclass
class FaultEncoding:
    """The fault query's violation as one QF_BV formula over inputs and masks."""

    encoding: Encoding
    masks: list[tuple[FaultyParameter, z3.BitVecRef]]

    def flips(self, values: dict[str, int]) -> tuple[Flip, ...]:
        """The flips of a model, given each variable's signed value by name (absent: zero)."""
        found: list[Flip] = []
        for param, mask in self.masks:
            found.extend(param.flips(values.get(str(mask), 0) & ((1 << param.storage.bits) - 1)))
        return tuple(found)


def _check_bounds(bounds: NetworkBounds) -> None:
    """Refuse if the fault bounds let any accumulator leave its width: none is encoded with wraparound."""
    for index, layer in enumerate(bounds.layers):
        if layer.may_overflow is not None and np.any(layer.may_overflow):
            raise FaultEncodingUnsupported(f"a flip may overflow an accumulator of layer {index} "
                                           f"(neuron {int(np.flatnonzero(layer.may_overflow)[0])})")


def _check_faulty_accumulators(qnn: QNN, index: int, values: list[Signal], added: dict[int, list[Signal]]) -> None:
    """Refuse if a flipped neuron's accumulator may leave its width, by this encoding's own ranges.

    The accumulators are encoded without wraparound, and the fault bounds keep the clean
    accumulator range of a neuron whose flips cannot change its output, so they do not
    say whether those flips overflow."""
    if qnn.accumulator_bits >= 63:
        return
    form = qnn.linear_form(index)
    lo = np.array([v.lo for v in values], dtype=np.int64)
    hi = np.array([v.hi for v in values], dtype=np.int64)
    limit = 1 << (qnn.accumulator_bits - 1)
    for neuron, terms in added.items():
        row = form.matrix[neuron]
        low, high = interval_product(row, lo, hi)
        low = int(low) + int(form.offset[neuron]) + sum(t.lo for t in terms)
        high = int(high) + int(form.offset[neuron]) + sum(t.hi for t in terms)
        if low < -limit or high >= limit:
            raise FaultEncodingUnsupported(f"a flip may overflow the accumulator of layer {index} neuron {neuron}")


def encode_faults(fq: FaultQuery, style: RequantStyle = "steps") -> FaultEncoding:
    """Satisfiable exactly when some allowed flip set (none included) and some input in the
    region make the violation hold."""
    query, model = fq.query, fq.model
    qnn = query.network
    cands = candidates(qnn, model)
    try:
        bounds, _ = fault_bounds(qnn, interval_bounds(qnn, query.region), cands, model.k)
    except ValueError as error:
        raise FaultEncodingUnsupported(str(error)) from error
    _check_bounds(bounds)
    params = faulty_parameters(qnn, cands)
    ctx = z3.Context()
    masks = [(p, z3.BitVec(p.name, p.storage.bits, ctx)) for p in params]
    constraints = []
    for p, mask in masks:
        forbidden = ((1 << p.storage.bits) - 1) & ~sum(1 << b for b in p.positions)
        if forbidden:
            constraints.append((mask & forbidden) == 0)
    bits = [z3.Extract(b, b, mask) for p, mask in masks for b in p.positions]
    constraints.append(at_most(bits, model.k, ctx))
    if model.scope == "one":
        nonzero = [z3.If(mask != 0, z3.BitVecVal(1, 1, ctx), z3.BitVecVal(0, 1, ctx)) for _, mask in masks]
        constraints.append(at_most(nonzero, 1, ctx))
    by_layer: dict[int, list[tuple[FaultyParameter, Signal]]] = {}
    for p, mask in masks:
        by_layer.setdefault(p.layer, []).append((p, shift_constant(flipped_value(p, mask), -p.used)))

    def changes(index: int, values: list[Signal]) -> dict[int, list[Signal]]:
        """What each flipped parameter of layer `index` adds to its neuron's accumulator."""
        added: dict[int, list[Signal]] = {}
        zero = qnn.layers[index].input_zero
        for p, change in by_layer.get(index, []):
            term = change if p.bias else multiply(change, shift_constant(values[p.column], -zero))
            added.setdefault(p.neuron, []).append(term)
        _check_faulty_accumulators(qnn, index, values, added)
        return added

    inputs, box = input_signals(query.region, ctx)
    outputs = encode_layers(query, bounds, inputs, style, ctx, changes)
    formula = all_of([*box, *constraints, _violation(query.violation, outputs, ctx)], ctx)
    stats = {"input_variables": sum(not s.is_constant for s in inputs), "masks": len(masks),
             "mask_bits": len(bits), "candidate_flips": len(cands)}
    return FaultEncoding(Encoding(ctx, inputs, formula, stats), masks)


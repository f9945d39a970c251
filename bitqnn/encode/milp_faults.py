"""The integer encoding of bit flips for SCIP: `encode.cpsat_faults`'s model as MILP rows.

Why a second exact encoding of the same flips: on the plain robustness queries SCIP
decides in seconds what CP-SAT leaves open for minutes (`engines.milp`), and a group of
flips is such a query with a few hundred booleans more. The two race per group.

A candidate flip is a binary f. It adds delta * (x - xz) to its neuron's accumulator for
a weight (delta = +-2**bit) and delta for a bias. The product is linearised exactly:
with x - xz in [L, U] from sound bounds, z = f * (x - xz) is

    L f <= z <= U f,    (x - xz) - U (1 - f) <= z <= (x - xz) - L (1 - f),

which pins z to 0 when f = 0 and to x - xz when f = 1. Budgets are sums of binaries;
scope "one" adds a selector per parameter that every flip of the parameter implies.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitqnn.bounds import NetworkBounds
from bitqnn.encode.milp import Lin, Milp, qnn_layer, violation_rows
from bitqnn.faults import Candidates, FaultModel
from bitqnn.qnn import QNN, Reshape
from bitqnn.query import LinearAtom


@dataclass
class MilpFaultModel:
    milp: Milp
    inputs: list[Lin]
    flags: list[Lin]
    sides: list[Lin]  # each atom's left-hand side, in the order of the term


class _FlipTerms:
    """The flips' binaries, their budget rows, and what each adds to its accumulator."""

    def __init__(self, milp: Milp, bounds: NetworkBounds, qnn: QNN, cands: Candidates, fault: FaultModel) -> None:
        self.milp, self.bounds, self.qnn, self.cands = milp, bounds, qnn, cands
        self.flags = [milp.binary(f"flip{j}") for j in range(len(cands))]
        budget = Lin()
        for flag in self.flags:
            budget = budget.add(flag)
        milp.row(budget, hi=float(fault.k))
        if fault.scope == "one":
            selectors: dict[int, Lin] = {}
            for j, p in enumerate(cands.param.tolist()):
                if p not in selectors:
                    selectors[p] = milp.binary(f"param{p}")
                milp.row(self.flags[j].add(selectors[p], -1.0), hi=0.0)  # a flip selects its parameter
            chosen = Lin()
            for selector in selectors.values():
                chosen = chosen.add(selector)
            milp.row(chosen, hi=1.0)
        self.rows_of: dict[tuple[int, int], list[int]] = {}
        for j, (layer, neuron) in enumerate(zip(cands.layer.tolist(), cands.neuron.tolist(), strict=True)):
            self.rows_of.setdefault((layer, neuron), []).append(j)

    def __call__(self, index: int, neuron: int, values: list[Lin]) -> Lin:
        total = Lin()
        rows = self.rows_of.get((index, neuron), [])
        if not rows:
            return total
        zero = self.qnn.layers[index].input_zero
        lo_in, hi_in = self.bounds.before(index)
        for j in rows:
            flag, delta = self.flags[j], float(self.cands.delta[j])
            if self.cands.bias[j]:
                total = total.add(flag, delta)
                continue
            column = int(self.cands.column[j])
            shifted = values[column].scaled(1.0, -float(zero))  # x - xz
            if shifted.is_constant():
                total = total.add(flag, delta * shifted.const)
                continue
            low, high = float(lo_in[column]) - zero, float(hi_in[column]) - zero
            product = self.milp.real_var(min(low, 0.0), max(high, 0.0), f"z{j}")
            self.milp.note_big_m(low, high)
            self.milp.row(product.add(flag, -low), lo=0.0)  # z >= L f
            self.milp.row(product.add(flag, -high), hi=0.0)  # z <= U f
            self.milp.row(product.add(shifted, -1.0).add(flag, -high), lo=-high)  # z >= x' - U (1 - f)
            self.milp.row(product.add(shifted, -1.0).add(flag, -low), hi=-low)  # z <= x' - L (1 - f)
            total = total.add(product, delta)
        return total


def encode_fault_milp(qnn: QNN, bounds: NetworkBounds, cands: Candidates, fault: FaultModel,
                      term: tuple[LinearAtom, ...], threads: int = 1) -> MilpFaultModel:
    """The network with its candidate flips, plus one conjunction of output atoms as rows.
    `bounds` must hold for every network the flips allow (`fault_prune.fault_bounds`)."""
    milp = Milp(threads)
    inputs = [milp.int_var(float(a), float(b), f"x{i}")
              for i, (a, b) in enumerate(zip(bounds.input_lo, bounds.input_hi, strict=True))]
    flips = _FlipTerms(milp, bounds, qnn, cands, fault)
    values = inputs
    for index, layer in enumerate(qnn.layers):
        if not isinstance(layer, Reshape):
            _, values = qnn_layer(milp, qnn, bounds, index, values, flips)
    return MilpFaultModel(milp, inputs, flips.flags, violation_rows(milp, values, term))

"""The integer encoding of bit flips for CP-SAT.

A candidate flip is a boolean f. It adds delta * (x - xz) to its neuron's accumulator
for a weight (delta = +-2**bit, what the flip adds to the stored value), or delta for
a bias. The product with the input is linearised exactly: z = x - xz if f else 0, with
z's domain taken from the input's bounds. Budgets are sums of booleans; scope "one"
adds a selector per parameter that every flip of the parameter implies.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from bitqnn.bounds import NetworkBounds
from bitqnn.encode.cpsat import Value, _Builder
from bitqnn.faults import Candidates, FaultModel
from bitqnn.qnn import QNN
from bitqnn.query import LinearAtom


@dataclass
class FaultEncoding:
    model: cp_model.CpModel
    inputs: list[Value]
    outputs: list[Value]
    flags: list[cp_model.IntVar]
    variables: int


class FaultBuilder(_Builder):
    def __init__(self, qnn: QNN, bounds: NetworkBounds, cands: Candidates, fault: FaultModel) -> None:
        super().__init__(qnn, bounds)
        self.cands = cands
        self.flags = [self.model.new_bool_var(f"flip{j}") for j in range(len(cands))]
        self.model.add(sum(self.flags) <= fault.k)
        if fault.scope == "one":
            selectors: dict[int, cp_model.IntVar] = {}
            for j, p in enumerate(cands.param.tolist()):
                if p not in selectors:
                    selectors[p] = self.model.new_bool_var(f"param{p}")
                self.model.add_implication(self.flags[j], selectors[p])
            self.model.add(sum(selectors.values()) <= 1)
        self.rows_of: dict[tuple[int, int], list[int]] = {}
        for j, (layer, neuron) in enumerate(zip(cands.layer.tolist(), cands.neuron.tolist(), strict=True)):
            self.rows_of.setdefault((layer, neuron), []).append(j)

    def extra_terms(self, index: int, neuron: int, values: list[Value]):
        rows = self.rows_of.get((index, neuron), [])
        if not rows:
            return 0
        zero = self.qnn.layers[index].input_zero
        lo_in, hi_in = self.bounds.before(index)
        coeffs, variables = [], []
        for j in rows:
            flag, delta = self.flags[j], int(self.cands.delta[j])
            if self.cands.bias[j]:
                coeffs.append(delta)
                variables.append(flag)
                continue
            column = int(self.cands.column[j])
            x = values[column]
            if isinstance(x, int):
                coeffs.append(delta * (x - zero))
                variables.append(flag)
                continue
            lo, hi = int(lo_in[column]) - zero, int(hi_in[column]) - zero
            product = self.model.new_int_var(min(lo, 0), max(hi, 0), f"z{j}")
            self.model.add(product == x - zero).only_enforce_if(flag)
            self.model.add(product == 0).only_enforce_if(~flag)
            coeffs.append(delta)
            variables.append(product)
        return cp_model.LinearExpr.weighted_sum(variables, coeffs)


def encode_fault_term(qnn: QNN, bounds: NetworkBounds, cands: Candidates, fault: FaultModel,
                      term: tuple[LinearAtom, ...]) -> FaultEncoding:
    """The network with its candidate flips, plus one conjunction of output atoms."""
    builder = FaultBuilder(qnn, bounds, cands, fault)
    inputs = builder.inputs()
    values = inputs
    for index in range(len(qnn.layers)):
        values = builder.layer(index, values)
    for atom in term:
        builder.model.add(sum(c * values[i] for i, c in atom.terms) >= atom.bound)
    return FaultEncoding(builder.model, inputs, values, builder.flags, builder.count)

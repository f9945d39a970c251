"""Linear properties over real outputs, compiled to exact integer atoms.

The user writes inequalities over real outputs y[i] = scale_i * (q_i - zero). The
engines see only integer outputs q_i. Every coefficient (a float scale, a decimal
literal) is an exact Fraction, so each inequality becomes an integer inequality that
holds for exactly the same q: no epsilon, and a strict '>' is '>= bound + 1' once
everything is an integer. The property's negation, in DNF, is the violation.
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import product

import numpy as np

from bitqnn.qnn import QNN
from bitqnn.query import LinearAtom, Violation
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError

MAX_TERMS = 4096


def output_scales(qnn: QNN) -> list[Fraction]:
    """The exact real value of one output step, per flat output."""
    one_step = qnn.dequantize_output(np.full(qnn.output_size, qnn.output_zero + 1))
    return [Fraction(float(s)) for s in one_step]


def _output_index(output: ast.Output, n_outputs: int, network: str) -> int:
    index = output.index.value
    if index.denominator != 1 or not 0 <= index < n_outputs:
        raise SpecError(f"network '{network}' has outputs y[0] to y[{n_outputs - 1}]; there is no y[{index}]",
                        output.index.pos)
    return int(index)


def comparison_atom(comparison: ast.Comparison, qnn: QNN, network: str) -> LinearAtom:
    """The comparison as one integer atom over the raw outputs, true for exactly the same outputs."""
    scales = output_scales(qnn)
    coeffs: dict[int, Fraction] = {}
    constant = Fraction(0)  # the comparison is: sum(coeffs[i] * q_i) + constant (op) 0
    for sign, terms in ((1, comparison.left), (-1, comparison.right)):
        for term in terms:
            if term.output is None:
                constant += sign * term.coeff
                continue
            index = _output_index(term.output, len(scales), network)
            step = sign * term.coeff * scales[index]
            coeffs[index] = coeffs.get(index, Fraction(0)) + step
            constant -= step * qnn.output_zero
    denominator = math.lcm(constant.denominator, *(c.denominator for c in coeffs.values()))
    ints = {i: int(c * denominator) for i, c in sorted(coeffs.items()) if c != 0}
    rhs = int(-constant * denominator)  # sum(ints[i] * q_i) (op) rhs, all integers
    if comparison.op in ("<=", "<"):
        ints = {i: -c for i, c in ints.items()}
        rhs = -rhs
    bound = rhs + 1 if comparison.op in (">", "<") else rhs
    divisor = math.gcd(*ints.values())
    if divisor > 1:  # dividing by the gcd keeps it exact: an integer sum >= b iff sum/g >= ceil(b/g)
        ints = {i: c // divisor for i, c in ints.items()}
        bound = -((-bound) // divisor)
    return LinearAtom(tuple(ints.items()), bound)


def negate(atom: LinearAtom) -> LinearAtom:
    """not (sum >= b) is sum <= b - 1 over the integers, i.e. -sum >= 1 - b."""
    return LinearAtom(tuple((i, -c) for i, c in atom.terms), 1 - atom.bound)


def _negation_dnf(formula: ast.Formula, qnn: QNN, network: str) -> list[tuple[LinearAtom, ...]]:
    if isinstance(formula, ast.Comparison):
        return [(negate(comparison_atom(formula, qnn, network)),)]
    parts = [_negation_dnf(part, qnn, network) for part in formula.parts]
    if isinstance(formula, ast.AllOf):  # not (a and b) = not a or not b
        return [term for part in parts for term in part]
    if math.prod(len(part) for part in parts) > MAX_TERMS:  # not (a or b) = not a and not b
        raise SpecError(f"the property's negation has more than {MAX_TERMS} cases; split it into several proves",
                        formula.pos)
    return [tuple(atom for term in combo for atom in term) for combo in product(*parts)]


def linear_violation(formula: ast.Formula, qnn: QNN, network: str) -> Violation:
    """The exact integer DNF of 'the formula fails'."""
    return Violation(tuple(_negation_dnf(formula, qnn, network)))

"""The network's LP relaxation, used only to aim the falsifier.

Each unstable neuron is replaced by the exact convex hull of its step function (over
the accumulator range the bounds give), so the LP optimum is an input where many
accumulators sit just at their steps, tipped the way the property wants. Rounding that
point and searching around it on the exact executor finds counterexamples that neither
gradient steps from the centre nor CP-SAT's own search reach (measured on the
Fashion-MNIST benchmark). The LP runs in floating point, so it never proves anything:
its only output is a starting point, and whatever is found there is checked exactly.
"""

from __future__ import annotations

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.bounds import NetworkBounds
from bitqnn.hull import stage_hull
from bitqnn.qnn import QNN, Conv2d, Dense, Reshape

Term = int | float | pywraplp.Variable


def _linear_layer(solver: pywraplp.Solver, qnn: QNN, index: int, bounds: NetworkBounds,
                  values: list[Term]) -> list[Term]:
    form, stage, b = qnn.linear_form(index), qnn.layers[index].output, bounds.layers[index]
    out: list[Term] = []
    infinity = solver.infinity()
    for n in range(form.matrix.shape[0]):
        if b.lo[n] == b.hi[n]:
            out.append(int(b.lo[n]))
            continue
        acc_lo, acc_hi = int(b.acc_lo[n]), int(b.acc_hi[n])
        acc = solver.NumVar(acc_lo, acc_hi, "")
        row = solver.Constraint(-infinity, infinity)
        constant = float(form.offset[n])
        for j in np.flatnonzero(form.matrix[n]):
            if isinstance(values[j], pywraplp.Variable):
                row.SetCoefficient(values[j], float(form.matrix[n, j]))
            else:
                constant += float(form.matrix[n, j]) * values[j]
        row.SetCoefficient(acc, -1.0)
        row.SetBounds(-constant, -constant)
        if stage.requant is None and stage.lo is None and stage.hi is None:
            out.append(acc)
            continue
        y = solver.NumVar(float(b.lo[n]), float(b.hi[n]), "")
        starts, steps = stage.steps(int(form.channels[n]), acc_lo, acc_hi)
        for row in stage_hull(starts, steps, acc_hi).rows():
            bound = float(row.bound)
            side = solver.Constraint(-infinity, bound) if row.upper else solver.Constraint(bound, infinity)
            side.SetCoefficient(y, float(row.y_coeff))
            side.SetCoefficient(acc, float(row.acc_coeff))
        out.append(y)
    return out


def relaxation_point(qnn: QNN, bounds: NetworkBounds, terms: tuple[tuple[int, int], ...],
                     time_limit: float) -> np.ndarray | None:
    """A real input in the box maximizing sum(c * y[i]) over the LP relaxation; None when
    the network has layers this LP does not model or the solve does not finish."""
    if not all(isinstance(layer, Dense | Conv2d | Reshape) for layer in qnn.layers):
        return None
    solver = pywraplp.Solver.CreateSolver("GLOP")
    solver.SetTimeLimit(max(1, int(time_limit * 1000)))
    inputs = [int(lo) if lo == hi else solver.NumVar(float(lo), float(hi), "")
              for lo, hi in zip(bounds.input_lo, bounds.input_hi, strict=True)]
    values: list[Term] = list(inputs)
    for index, layer in enumerate(qnn.layers):
        if isinstance(layer, Dense | Conv2d):
            values = _linear_layer(solver, qnn, index, bounds, values)
    objective = solver.Objective()
    for i, c in terms:
        if isinstance(values[i], pywraplp.Variable):
            objective.SetCoefficient(values[i], objective.GetCoefficient(values[i]) + c)
    objective.SetMaximization()
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return np.array([v.solution_value() if isinstance(v, pywraplp.Variable) else float(v) for v in inputs])

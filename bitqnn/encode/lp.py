"""The network's LP relaxation: it aims the falsifier and chooses cutting planes.

Each unstable neuron is replaced by the exact convex hull of its step function (over
the accumulator range the bounds give), so the LP optimum is an input where many
accumulators sit just at their steps, tipped the way the property wants. Rounding that
point and searching around it on the exact executor finds counterexamples that neither
gradient steps from the centre nor CP-SAT's own search reach (measured on the
Fashion-MNIST benchmark). With `indicators=True` every step of every unstable neuron also
gets a relaxed indicator z = [acc >= start], which is what `step_cuts` separates on.

The LP runs in floating point, so it never proves anything: its outputs are a starting
point for a search, and a choice of inequalities whose validity is exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.bounds import NetworkBounds
from bitqnn.engines.stop import StopSignal
from bitqnn.hull import stage_hull
from bitqnn.qnn import QNN, Conv2d, Dense, Reshape

Term = int | float | pywraplp.Variable


@dataclass(frozen=True)
class StepIndicator:
    """z = 1 exactly when neuron `neuron` of layer `layer` has acc >= start (its step `step`)."""

    layer: int
    neuron: int
    step: int
    start: int


def supported(qnn: QNN) -> bool:
    return all(isinstance(layer, Dense | Conv2d | Reshape) for layer in qnn.layers)


def value_of(term: Term) -> float:
    return term.solution_value() if isinstance(term, pywraplp.Variable) else float(term)


class RelaxationLP:
    """The GLOP model of the whole network; `layer_inputs[i]` are layer i's input terms."""

    def __init__(self, qnn: QNN, bounds: NetworkBounds, indicators: bool = False) -> None:
        if not supported(qnn):
            raise ValueError("the LP relaxation models dense, conv and reshape layers only")
        self.qnn, self.bounds = qnn, bounds
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        self.infinity = self.solver.infinity()
        self.with_indicators = indicators
        self.indicators: list[StepIndicator] = []
        self.indicator_vars: list[pywraplp.Variable] = []
        self.inputs: list[Term] = [int(lo) if lo == hi else self.solver.NumVar(float(lo), float(hi), "")
                                   for lo, hi in zip(bounds.input_lo, bounds.input_hi, strict=True)]
        self.layer_inputs: list[list[Term]] = []
        values = list(self.inputs)
        for index, layer in enumerate(qnn.layers):
            self.layer_inputs.append(values)
            if isinstance(layer, Dense | Conv2d):
                values = self._linear_layer(index, values)
        self.outputs = values

    def row(self, lo: float, hi: float, terms: list[tuple[Term, float]]) -> pywraplp.Constraint:
        """lo <= sum(c * t) <= hi, with constant terms moved into the sides."""
        shift = 0.0
        constraint = self.solver.Constraint(-self.infinity, self.infinity)
        for term, coeff in terms:
            if isinstance(term, pywraplp.Variable):
                constraint.SetCoefficient(term, constraint.GetCoefficient(term) + coeff)
            else:
                shift += coeff * term
        constraint.SetBounds(lo - shift if lo > -self.infinity else lo, hi - shift if hi < self.infinity else hi)
        return constraint

    def _linear_layer(self, index: int, values: list[Term]) -> list[Term]:
        form, stage, b = self.qnn.linear_form(index), self.qnn.layers[index].output, self.bounds.layers[index]
        out: list[Term] = []
        for n in range(form.matrix.shape[0]):
            if b.lo[n] == b.hi[n]:
                out.append(int(b.lo[n]))
                continue
            acc_lo, acc_hi = int(b.acc_lo[n]), int(b.acc_hi[n])
            acc = self.solver.NumVar(acc_lo, acc_hi, "")
            nonzero = np.flatnonzero(form.matrix[n])
            self.row(-float(form.offset[n]), -float(form.offset[n]),
                     [(values[j], float(form.matrix[n, j])) for j in nonzero] + [(acc, -1.0)])
            if stage.requant is None and stage.lo is None and stage.hi is None:
                out.append(acc)
                continue
            y = self.solver.NumVar(float(b.lo[n]), float(b.hi[n]), "")
            starts, steps = stage.steps(int(form.channels[n]), acc_lo, acc_hi)
            for hull_row in stage_hull(starts, steps, acc_hi).rows():
                bound = float(hull_row.bound)
                lo, hi = (-self.infinity, bound) if hull_row.upper else (bound, self.infinity)
                self.row(lo, hi, [(y, float(hull_row.y_coeff)), (acc, float(hull_row.acc_coeff))])
            if self.with_indicators and self._exact_accumulator(index, n):
                self._add_indicators(index, n, acc, acc_lo, acc_hi, y, starts, steps)
            out.append(y)
        return out

    def _exact_accumulator(self, index: int, neuron: int) -> bool:
        """Indicators speak of acc = row . input + offset, which wraparound would break."""
        may_overflow = self.bounds.layers[index].may_overflow
        return may_overflow is None or not may_overflow[neuron]

    def _add_indicators(self, index: int, neuron: int, acc, acc_lo: int, acc_hi: int, y,
                        starts: np.ndarray, steps: np.ndarray) -> None:
        """y = steps[0] + sum((steps[k] - steps[k-1]) * z_k), each z_k big-M linked to acc."""
        link: list[tuple[Term, float]] = [(y, 1.0)]
        previous = None
        for k in range(1, len(starts)):
            z = self.solver.NumVar(0.0, 1.0, "")
            start = int(starts[k])
            link.append((z, -float(steps[k] - steps[k - 1])))
            if previous is not None:
                self.row(0.0, self.infinity, [(previous, 1.0), (z, -1.0)])
            self.row(float(acc_lo), self.infinity, [(acc, 1.0), (z, -float(start - acc_lo))])
            self.row(-self.infinity, float(start - 1), [(acc, 1.0), (z, -float(acc_hi - start + 1))])
            self.indicators.append(StepIndicator(index, neuron, k, start))
            self.indicator_vars.append(z)
            previous = z
        self.row(float(steps[0]), float(steps[0]), link)

    def maximize(self, terms: tuple[tuple[int, int], ...], time_limit: float,
                 stop: StopSignal | None = None) -> float | None:
        """max sum(c * output[i]) over the relaxation; None if GLOP does not finish (or is stopped)."""
        objective = self.solver.Objective()
        objective.Clear()
        constant = 0.0
        for i, c in terms:
            if isinstance(self.outputs[i], pywraplp.Variable):
                objective.SetCoefficient(self.outputs[i], objective.GetCoefficient(self.outputs[i]) + c)
            else:
                constant += c * self.outputs[i]
        objective.SetMaximization()
        self.solver.SetTimeLimit(max(1, int(time_limit * 1000)))
        with (stop or StopSignal()).hook(self.solver.InterruptSolve):
            status = self.solver.Solve()
        if status != pywraplp.Solver.OPTIMAL:
            return None
        return objective.Value() + constant

    def input_point(self) -> np.ndarray:
        return np.array([value_of(v) for v in self.inputs])


def relaxation_point(qnn: QNN, bounds: NetworkBounds, terms: tuple[tuple[int, int], ...],
                     time_limit: float, stop: StopSignal | None = None) -> np.ndarray | None:
    """A real input in the box maximizing sum(c * y[i]) over the LP relaxation; None when
    the network has layers this LP does not model or the solve does not finish."""
    if not supported(qnn):
        return None
    lp = RelaxationLP(qnn, bounds)
    if lp.maximize(terms, time_limit, stop) is None:
        return None
    return lp.input_point()

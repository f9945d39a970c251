"""Robustness by MILP: the exact integer model of the QNN, solved by SCIP.

Why a second solver for a question CP-SAT already answers exactly: on the core benchmark's
sparse 784-64-32 model, SCIP (through OR-Tools' `pywraplp`) decided 6 of the 9 queries
that CP-SAT left open at 60 s (image 20 at radius 2: proved in 13 s, where CP-SAT needs
109 s). CP-SAT stays the exact default; `auto` races the two (`ThreadRace`).

SCIP runs with its cutting-plane separators off (NO_CUTS). Measured on 2026-11-24, one
thread, 60 s per term, on the hardest terms of the core and wide benchmark models: the
separation rounds move the bound little and take most of each node's time (`y[5] - y[9]`
of the core model's image 0 at radius 4: 517 nodes and 13 s with them, 1,477 nodes and
3.5 s without). Without them the hard core terms took 0.5-19 s instead of 8-57 s, and 4
of the 6 wide-model queries left open at 60 s were decided (1 with the defaults). On the
whole benchmarks it is a net gain, not a pure one: core 97 to 99 of 100 decided, wide 131
to 135 of 150, but a few wide queries got slower (README, Benchmark section).

SCIP branches on the rounded quotients of the requantization before anything else
(`encode.milp.Milp.steps_first`): on the speed benchmark's hardest terms it took the proofs
from 279 s to 180 s in all (measured there, with the cases that went the other way).

The model is `encode.milp`'s QNN half: integer inputs, accumulators and outputs, rounding
as integer rows, clamps with one binary per reachable side and big-M values from sound
bounds. What each answer rests on:
- FALSIFIED: SCIP's point is rounded to the integer grid and replayed on the reference
  executor here; a point that does not replay is not a witness (the term stays open).
- PROVED: SCIP's infeasibility proof, which rests on its floating-point LP with the tight
  tolerances of `error_milp.SCIP_NUMERICS`. Every coefficient and side is a small
  integer, so the numerics are benign, but this is not a certificate as CP-SAT's integer
  reasoning is; the outcome says so in its stats ("tolerance"), and the tests cross-check
  the engine against enumeration and against CP-SAT.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.encode.milp import Lin, Milp, UnsupportedEncoding, qnn_layer, violation_rows
from bitqnn.engines.error_milp import FEASIBILITY_TOLERANCE, SCIP_NUMERICS, solver_parameters
from bitqnn.engines.quiet import quiet_native_output
from bitqnn.engines.stop import StopSignal
from bitqnn.engines.terms import solve_terms
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import QNN, Dense, Reshape, execute
from bitqnn.query import Query, Violation
from bitqnn.symbolic import analysis_of

FIRST_SOLUTION = "limits/solutions = 1\n"  # any point past the bound falsifies the term
NO_CUTS = "separating/maxrounds = 0\nseparating/maxroundsroot = 0\n"  # see the module docstring
SOLVED = (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE)
TOLERANCE_NOTE = f"SCIP floating-point LP, feasibility tolerance {FEASIBILITY_TOLERANCE:g}"


class MilpEngine:
    name = "milp"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def solve(self, query: Query, timeout: float, stop: StopSignal | None = None) -> Outcome:
        start = time.perf_counter()
        stop = stop or StopSignal()
        unsupported = unsupported_layer(query.network)
        if unsupported:
            return Outcome.unknown(self.name, 0.0, f"the MILP engine encodes dense layers only, not {unsupported}")
        analysis = analysis_of(query)
        violation, trivially_violated = analysis.prune(query.violation)
        if trivially_violated:
            return Outcome(Verdict.FALSIFIED, self.name, time.perf_counter() - start, witness=query.region.lo.copy())
        stats = {"terms": len(query.violation.terms), "terms_after_bounds": len(violation.terms),
                 "tolerance": TOLERANCE_NOTE}

        def solve_term(term, seconds: float):
            status, witness = self._solve_term(query, analysis.bounds, Violation((term,)), seconds, stop)
            reason = "SCIP's point does not replay on the executor" if status in SOLVED else "timeout"
            return status == pywraplp.Solver.INFEASIBLE, witness, reason

        return solve_terms(self.name, violation.terms, solve_term, start, timeout, stop, stats, UnsupportedEncoding)

    def _solve_term(self, query: Query, bounds, term: Violation, seconds: float, stop: StopSignal):
        """(status, witness or None) for one term: SCIP looks for a point that violates it."""
        began = time.perf_counter()
        milp, inputs, outputs = qnn_model(query, bounds, self.threads, steps_first=True)
        sides = violation_rows(milp, outputs, term.terms[0])
        left = seconds - (time.perf_counter() - began)  # building the model spent the term's time too
        status = search_violating_point(milp, sides, left, stop)
        if status not in SOLVED:
            return status, None
        point = solved_input(inputs, query.region.lo, query.region.hi)
        holds = bool(term.holds(execute(query.network, point))[0])
        return status, (point if holds else None)


def unsupported_layer(qnn: QNN) -> str | None:
    """The kind of the first layer `qnn_model` cannot encode, if any."""
    return next((type(layer).__name__ for layer in qnn.layers if not isinstance(layer, Dense | Reshape)), None)


def qnn_model(query: Query, bounds, threads: int, steps_first: bool = False) -> tuple[Milp, list[Lin], list[Lin]]:
    """The QNN exactly on the query's box: (the model, its input variables, its outputs);
    `steps_first` as in `encode.milp.Milp`."""
    milp = Milp(threads, steps_first)
    lo, hi = query.region.lo, query.region.hi
    inputs = [milp.int_var(float(a), float(b), f"x{i}") for i, (a, b) in enumerate(zip(lo, hi, strict=True))]
    values = inputs
    for index, layer in enumerate(query.network.layers):
        if not isinstance(layer, Reshape):
            _, values = qnn_layer(milp, query.network, bounds, index, values)
    return milp, inputs, values


def solved_input(inputs: list[Lin], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """SCIP's point on the integer input grid (integrality holds only within its tolerance)."""
    values = [round(v.const + sum(var.solution_value() * c for var, c in v.terms.values())) for v in inputs]
    return np.clip(np.array(values, dtype=np.int64), lo, hi)


def search_violating_point(milp: Milp, sides: list[Lin], seconds: float, stop: StopSignal) -> int:
    """SCIP's status on a model whose violation rows are stated: it stops at the first point,
    maximising the first atom's slack, which steers it towards violating points."""
    solver = milp.solver
    goal = solver.Objective()
    for var, coefficient in sides[0].terms.values():
        goal.SetCoefficient(var, coefficient)
    goal.SetMaximization()
    solver.SetTimeLimit(max(int(seconds * 1000), 1))
    solver.SetSolverSpecificParametersAsString(SCIP_NUMERICS + NO_CUTS + FIRST_SOLUTION)
    with stop.hook(solver.InterruptSolve), quiet_native_output():
        return solver.Solve(solver_parameters())

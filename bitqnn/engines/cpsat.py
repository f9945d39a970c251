"""The default exact engine: one CP-SAT model per violation term (per competing class).

Splitting by term keeps each model a plain conjunction, lets interval bounds discard
whole terms before any solving, and returns the first counterexample found.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from bitqnn.bounds import interval_bounds, prune_violation
from bitqnn.encode.cpsat import UnsupportedEncoding, encode_term
from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Query
from bitqnn.symbolic import SymbolicAnalysis


class CpSatEngine:
    name = "cpsat"

    def __init__(self, workers: int = 2, seed: int = 0, bounds: str = "symbolic") -> None:
        if bounds not in ("symbolic", "interval"):
            raise ValueError(f"unknown bounds mode {bounds!r}")
        self.workers = workers
        self.seed = seed
        self.bounds_mode = bounds

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        if self.bounds_mode == "symbolic":
            analysis = SymbolicAnalysis(query.network, query.region)
            bounds = analysis.bounds
            violation, trivially_violated = prune_violation(
                query.violation, bounds.output, lambda atom: analysis.output_range(atom.terms))
        else:
            bounds = interval_bounds(query.network, query.region)
            violation, trivially_violated = prune_violation(query.violation, bounds.output)
        unstable, total = bounds.unstable_neurons(query.network)
        stats = {"unstable_neurons": unstable, "neurons": total,
                 "terms": len(query.violation.terms), "terms_after_bounds": len(violation.terms)}
        if trivially_violated:
            return Outcome(Verdict.FALSIFIED, self.name, time.perf_counter() - start,
                           witness=query.region.lo.copy(), stats=stats)
        unknown_reason = ""
        for term in violation.terms:
            remaining = timeout - (time.perf_counter() - start)
            if remaining <= 0:
                return Outcome.unknown(self.name, time.perf_counter() - start, "timeout", **stats)
            try:
                encoding = encode_term(query.network, bounds, term)
            except UnsupportedEncoding as error:
                return Outcome.unknown(self.name, time.perf_counter() - start, str(error), **stats)
            solver = cp_model.CpSolver()
            solver.parameters.max_time_in_seconds = remaining
            solver.parameters.num_workers = self.workers
            solver.parameters.random_seed = self.seed
            status = solver.solve(encoding.model)
            stats["variables"] = max(stats.get("variables", 0), encoding.variables)
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                witness = np.array([v if isinstance(v, int) else solver.value(v) for v in encoding.inputs],
                                   dtype=np.int64)
                return Outcome(Verdict.FALSIFIED, self.name, time.perf_counter() - start,
                               witness=witness, stats=stats)
            if status == cp_model.MODEL_INVALID:
                raise RuntimeError(f"CP-SAT rejected the model: {encoding.model.validate()}")
            if status != cp_model.INFEASIBLE:
                unknown_reason = "timeout"
        elapsed = time.perf_counter() - start
        if unknown_reason:
            return Outcome.unknown(self.name, elapsed, unknown_reason, **stats)
        return Outcome(Verdict.PROVED, self.name, elapsed, stats=stats)

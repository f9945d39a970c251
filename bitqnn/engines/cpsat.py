"""The default exact engine: one CP-SAT model per violation term (per competing class).

Splitting by term keeps each model a plain conjunction, lets interval bounds discard
whole terms before any solving, and returns the first counterexample found.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from bitqnn.bounds import interval_bounds, prune_violation
from bitqnn.encode.cpsat import UnsupportedEncoding, encode_term, overflow_model
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import AccumulatorOverflow, execute
from bitqnn.query import Query
from bitqnn.symbolic import analysis_of


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
            analysis = analysis_of(query)
            bounds = analysis.bounds
            violation, trivially_violated = analysis.prune(query.violation)
        else:
            bounds = interval_bounds(query.network, query.region)
            violation, trivially_violated = prune_violation(query.violation, bounds.output)
        unstable, total = bounds.unstable_neurons(query.network)
        stats = {"unstable_neurons": unstable, "neurons": total,
                 "terms": len(query.violation.terms), "terms_after_bounds": len(violation.terms)}
        if query.network.overflow == "error" and bounds.overflow_sites():
            bounds, reason = self._exclude_overflow(query, bounds, start, timeout)
            if reason:
                return Outcome.unknown(self.name, time.perf_counter() - start, reason, **stats)
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
            solver = self._new_solver(remaining)
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

    def _new_solver(self, remaining: float) -> cp_model.CpSolver:
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = remaining
        solver.parameters.num_workers = self.workers
        solver.parameters.random_seed = self.seed
        return solver

    def _exclude_overflow(self, query: Query, bounds, start: float, timeout: float):
        """Decide, layer by layer, whether any accumulator the bounds cannot clear really overflows.

        A reachable overflow under overflow='error' is an error in the network as declared,
        raised with the input that causes it (replayed on the executor); cleared sites get
        bounds inside the declared width.
        """
        qnn = query.network
        for index in sorted({site[0] for site in bounds.overflow_sites()}):
            neurons = [n for layer, n in bounds.overflow_sites() if layer == index]
            for neuron in neurons:
                remaining = timeout - (time.perf_counter() - start)
                if remaining <= 0:
                    return bounds, f"timeout while excluding accumulator overflow at layer {index} neuron {neuron}"
                encoding = overflow_model(qnn, bounds, index, neuron)
                solver = self._new_solver(remaining)
                status = solver.solve(encoding.model)
                if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                    witness = np.array([v if isinstance(v, int) else solver.value(v) for v in encoding.inputs])
                    try:
                        execute(qnn, witness)
                    except AccumulatorOverflow as overflow:
                        raise AccumulatorOverflow(f"{query.label}: {overflow} for the input "
                                                  f"{witness.tolist()} in the region") from None
                    raise RuntimeError(f"{query.label}: CP-SAT found an overflow at layer {index} neuron "
                                       f"{neuron} that the executor does not reproduce")
                if status != cp_model.INFEASIBLE:
                    return bounds, f"accumulator overflow not excluded at layer {index} neuron {neuron}: timeout"
            bounds = bounds.with_safe_accumulators(index, neurons, qnn.accumulator_bits)
        return bounds, ""

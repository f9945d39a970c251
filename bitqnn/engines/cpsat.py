"""The default exact engine: one CP-SAT model per violation term (per competing class).

Splitting by term keeps each model a plain conjunction, lets interval bounds discard
whole terms before any solving, and returns the first counterexample found. A term that a
short first try does not settle gets rounds of step cuts (`step_cuts`) to tighten its LP
relaxation; the cuts are exact integer rows, so they change no answer, only how fast one
is found.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from bitqnn.bounds import interval_bounds, prune_violation
from bitqnn.encode.cpsat import UnsupportedEncoding, encode_term, overflow_model
from bitqnn.engines.stop import StopSignal
from bitqnn.engines.terms import solve_terms
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import AccumulatorOverflow, execute
from bitqnn.query import Query
from bitqnn.step_cuts import cut_rounds
from bitqnn.symbolic import analysis_of

FIRST_TRY_SHARE, FIRST_TRY_CAP = 0.2, 5.0  # CP-SAT without cuts: share of a term's time, and seconds
CUT_SHARE, CUT_CAP = 0.2, 10.0  # LP rounds of cuts: share of what is then left, and seconds


def solve_model(model: cp_model.CpModel, seconds: float, workers: int, seed: int = 0,
                objective=None, stop: StopSignal | None = None) -> tuple[int, cp_model.CpSolver]:
    """Solve with a time limit; with an objective (a term's slack), stop at the first solution.

    Maximizing the slack lets the bound-driven tree search with the full LP work, which
    proves near-boundary terms that the default portfolio leaves open (measured on the
    Fashion-MNIST benchmark); any point past the bound falsifies, so the first one ends it.
    With one worker that search runs alone: on image 0's second term at radius 2 it proved
    in 50 s what one default worker left open at 60 s.
    """
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, seconds)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    if objective is not None and not isinstance(objective, int):
        model.maximize(objective)
        solver.parameters.stop_after_first_solution = True
        if workers >= 2:
            solver.parameters.subsolvers.extend(["lb_tree_search", "max_lp"])
        else:  # one worker (a piece among others): the bound-driven search alone
            solver.parameters.optimize_with_lb_tree_search = True
    with (stop or StopSignal()).hook(solver.stop_search):
        status = solver.solve(model)
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {model.validate()}")
    return status, solver


def input_values(solver: cp_model.CpSolver, inputs: list) -> np.ndarray:
    return np.array([v if isinstance(v, int) else solver.value(v) for v in inputs], dtype=np.int64)


class CpSatEngine:
    name = "cpsat"

    def __init__(self, workers: int = 2, seed: int = 0, bounds: str = "symbolic", cuts: bool = True,
                 first_try: bool = True) -> None:
        if bounds not in ("symbolic", "interval"):
            raise ValueError(f"unknown bounds mode {bounds!r}")
        self.workers = workers
        self.seed = seed
        self.bounds_mode = bounds
        self.cuts = cuts
        self.first_try = first_try  # False: straight to the cuts (a stage before already tried without)

    def solve(self, query: Query, timeout: float, stop: StopSignal | None = None) -> Outcome:
        start = time.perf_counter()
        stop = stop or StopSignal()
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

        def solve_term(term, seconds: float):
            status, witness = self._solve_term(query, bounds, term, seconds, stats, stop)
            return status == cp_model.INFEASIBLE, witness, "timeout"

        return solve_terms(self.name, violation.terms, solve_term, start, timeout, stop, stats, UnsupportedEncoding)

    def _solve_term(self, query: Query, bounds, term, seconds: float, stats: dict, stop: StopSignal):
        """CP-SAT alone for a short first try (most terms fall there), then step cuts and
        CP-SAT again with the rest of the time. Returns (status, witness or None)."""
        start = time.perf_counter()
        if not self.cuts:
            return self._solve_model(query, bounds, term, [], seconds, stats, stop)
        if self.first_try:
            first_try = min(FIRST_TRY_CAP, FIRST_TRY_SHARE * seconds)
            status, witness = self._solve_model(query, bounds, term, [], first_try, stats, stop)
            if status != cp_model.UNKNOWN or stop.stopped:
                return status, witness
        if stop.stopped:
            return cp_model.UNKNOWN, None
        remaining = seconds - (time.perf_counter() - start)
        target = float(term[0].bound)
        result = cut_rounds(query.network, bounds, term[0].terms, min(CUT_CAP, CUT_SHARE * remaining), target,
                            stop=stop)
        if stop.stopped:
            return cp_model.UNKNOWN, None
        cuts = [] if result is None else result.cuts
        stats["cuts"] = stats.get("cuts", 0) + len(cuts)
        remaining = seconds - (time.perf_counter() - start)
        return self._solve_model(query, bounds, term, cuts, remaining, stats, stop)

    def _solve_model(self, query: Query, bounds, term, cuts, seconds: float, stats: dict, stop: StopSignal):
        began = time.perf_counter()
        encoding = encode_term(query.network, bounds, term, cuts)
        stats["variables"] = max(stats.get("variables", 0), encoding.variables)
        objective = sum(c * encoding.outputs[i] for i, c in term[0].terms)
        left = seconds - (time.perf_counter() - began)  # building the model spent the term's time too
        status, solver = solve_model(encoding.model, left, self.workers, self.seed, objective, stop)
        found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        return status, input_values(solver, encoding.inputs) if found else None

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
                status, solver = solve_model(encoding.model, remaining, self.workers, self.seed)
                if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                    witness = input_values(solver, encoding.inputs)
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

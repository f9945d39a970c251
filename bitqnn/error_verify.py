"""The error-bound pipeline: DRA first, then a search for large errors, then the MILP.

DRA settles most questions in milliseconds when eps is generous; a sampled and
locally improved point settles most of the rest when eps is too tight; the complete
MILP engine only sees what lies between, and annealing from the search's point runs
beside it in a second thread, because between the DRA bound and the climb's point the
truth is often a larger error that only a longer search finds (`error_search.anneal`).
Every reported witness is an integer input whose error was computed on the reference
executor and in float64, never a solver's value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from bitqnn.dra import analysis_for
from bitqnn.engines.portfolio import race
from bitqnn.engines.stop import StopSignal
from bitqnn.error_query import ErrorOutcome, ErrorQuery
from bitqnn.error_search import anneal, search_error
from bitqnn.outcome import Verdict
from bitqnn.verify import Result

ERROR_ENGINES = ("auto", "dra", "search", "milp")


def dra_bound(query: ErrorQuery, mode: str = "symbolic") -> float:
    """A sound upper bound on max |error| over the box and the chosen outputs."""
    return analysis_for(query).run(mode).max_abs(query.outputs)


def verify_error(query: ErrorQuery, timeout: float, engine: str = "auto", search_budget: float = 1.0) -> ErrorOutcome:
    """Is max |error| <= eps? PROVED, FALSIFIED with a replayed witness, or UNKNOWN."""
    if engine not in ERROR_ENGINES:
        raise ValueError(f"unknown error-bound engine {engine!r}; choose from {', '.join(ERROR_ENGINES)}")
    start = time.perf_counter()
    proven = None
    if engine in ("auto", "dra"):
        proven = dra_bound(query)
        if proven <= query.eps:
            return ErrorOutcome(Verdict.PROVED, "dra", time.perf_counter() - start, proven=proven)
    witness, witnessed = None, None
    if engine in ("auto", "search"):
        witness, witnessed = search_error(query, min(search_budget, timeout))
        if witnessed > query.eps:
            return ErrorOutcome(Verdict.FALSIFIED, "search", time.perf_counter() - start,
                                witness=witness, witnessed=witnessed, proven=proven)
    if engine in ("auto", "milp"):
        from bitqnn.engines.error_milp import ErrorMilpEngine  # SCIP loads only when needed

        remaining = max(timeout - (time.perf_counter() - start), 0.0)
        milp = ErrorMilpEngine(yield_at_root=engine == "auto")
        outcome, witness, witnessed = _complete_stage(
            query, engine, lambda stop: milp.solve(query, remaining, known=witness, stop=stop),
            witness, witnessed, remaining, until=query.eps, anneal_past_unknown=True)
        return _merge(outcome, witness, witnessed, proven, time.perf_counter() - start)
    reason = "DRA bound above eps" if engine == "dra" else "no error above eps found"
    return ErrorOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start, reason,
                        witness=witness, witnessed=witnessed, proven=proven)


def tightest_bound(query: ErrorQuery, timeout: float, engine: str = "auto",
                   known: ErrorOutcome | None = None) -> ErrorOutcome:
    """error <= proven (sound) and error >= witnessed (a replayed input), as close as time allows.

    The MILP sharpens both numbers only for engines that include it (auto, milp); with dra
    or search the answer is the DRA bound and the best point a short search finds. A point
    `known` from an earlier stage is kept instead of searching again.
    """
    start = time.perf_counter()
    proven = dra_bound(query)
    if known is not None and known.witnessed is not None:
        witness, witnessed = known.witness, known.witnessed
    else:
        witness, witnessed = search_error(query, min(1.0, timeout / 10))
    if engine not in ("auto", "milp"):
        return ErrorOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start, "", witness, witnessed, proven)
    from bitqnn.engines.error_milp import ErrorMilpEngine

    remaining = max(timeout - (time.perf_counter() - start), 0.0)
    outcome, witness, witnessed = _complete_stage(
        query, engine, lambda stop: ErrorMilpEngine().maximize(query, remaining, known=witness, stop=stop),
        witness, witnessed, remaining, until=math.inf)
    return _merge(outcome, witness, witnessed, proven, time.perf_counter() - start)


def _complete_stage(query: ErrorQuery, engine: str, milp: Callable[[StopSignal], ErrorOutcome],
                    witness: np.ndarray | None, witnessed: float | None, seconds: float,
                    until: float, anneal_past_unknown: bool = False) -> tuple[ErrorOutcome, np.ndarray | None,
                                                                               float | None]:
    """(the MILP's outcome, the best witness, its error): the MILP alone for `milp` (no
    witness yet in `verify_error`); for `auto`, the MILP and `anneal` from the search's
    `witness` in two threads. The MILP's return ends the annealing, except that with
    `anneal_past_unknown` an UNKNOWN from a MILP that gave up early leaves it the rest of
    the time; an annealed error above `until` stops the MILP. An annealed error above eps
    makes the outcome FALSIFIED: a replayed point outranks a floating-point LP's proof,
    and such a conflict drops the proof's bound and is flagged in the stats.

    BLAS runs on one thread during the race: the annealing's products are too small to gain
    from more, and OpenBLAS's extra thread took the core SCIP needed (2x100 at Q = 8, one
    process, 30 s: 5,407 annealing steps beside the MILP with it, 12,270 without; alone,
    12,653 and 12,840)."""
    if engine == "milp":
        return milp(StopSignal()), witness, witnessed
    with threadpool_limits(limits=1, user_api="blas"):
        results = race([lambda stop: milp(stop),
                        lambda stop: anneal(query, witness, seconds, enough=until, stop=lambda: stop.stopped)],
                       lambda result: (result.verdict is not Verdict.UNKNOWN or not anneal_past_unknown)
                       if isinstance(result, ErrorOutcome) else result[1] > until)
    outcome, (point, error) = results
    if error <= witnessed:
        return outcome, witness, witnessed
    if error > query.eps and outcome.verdict is not Verdict.FALSIFIED:
        conflict = outcome.proven is not None and outcome.proven < error
        stats = dict(outcome.stats, conflict=True) if conflict else outcome.stats
        outcome = ErrorOutcome(Verdict.FALSIFIED, "anneal", outcome.seconds, "an annealed point, replayed, exceeds eps",
                               point, error, None if conflict else outcome.proven, stats)
    return outcome, point, error


def _merge(outcome: ErrorOutcome, witness, witnessed, proven, seconds: float) -> ErrorOutcome:
    """The MILP's answer, keeping the better of its and the earlier stages' bound and witness."""
    if witnessed is not None and (outcome.witnessed is None or witnessed > outcome.witnessed):
        outcome_witness, outcome_witnessed = witness, witnessed
    else:
        outcome_witness, outcome_witnessed = outcome.witness, outcome.witnessed
    bounds = [b for b in (proven, outcome.proven) if b is not None]
    return ErrorOutcome(outcome.verdict, f"auto:{outcome.engine}", seconds, outcome.reason, outcome_witness,
                        outcome_witnessed, min(bounds) if bounds else None, outcome.stats)


def error_result(query: ErrorQuery, kind: str, timeout: float, engine: str = "auto") -> Result:
    """A spec statement's answer as a report row.

    `prove error(...) <= eps` runs the pipeline; when it does not prove, the tightest bound
    is computed too (with the same timeout again, and the same engine), so a failed proof
    always says how far off it is. `bound error(...)` computes only the tightest bound: its
    row is PROVED for the bound it reports.
    """
    outcome = None
    if kind == "error":
        outcome = verify_error(query, timeout, engine)
    if outcome is None or outcome.verdict is not Verdict.PROVED:
        bound = tightest_bound(query, timeout, engine, known=outcome)
        outcome = bound if outcome is None else _combine(query, outcome, bound)
        if kind == "bound":
            outcome = ErrorOutcome(Verdict.PROVED, bound.engine, bound.seconds, bound.reason, bound.witness,
                                   bound.witnessed, bound.proven, bound.stats)
    stats = {k: v for k, v in outcome.stats.items() if isinstance(v, int | float | str)}
    if outcome.proven is not None:
        stats["proven"] = outcome.proven
    if outcome.witnessed is not None:
        stats["witnessed"] = outcome.witnessed
    witness = None if outcome.witness is None else np.asarray(outcome.witness, dtype=np.int64)
    return Result(query.label, outcome.verdict, outcome.engine, outcome.seconds, describe_bound(outcome),
                  witness=None if witness is None else witness.tolist(),
                  witness_real=None if witness is None else query.real_inputs(witness)[0].tolist(),
                  outputs_real=None if witness is None else query.errors(witness)[0].tolist(), stats=stats)


def describe_bound(outcome: ErrorOutcome) -> str:
    parts = []
    if outcome.proven is not None:
        parts.append(f"error <= {outcome.proven:.6g} proven")
    if outcome.witnessed is not None:
        parts.append(f"error >= {outcome.witnessed:.6g} witnessed")
    if outcome.reason:
        parts.append(outcome.reason)
    return "; ".join(parts)


def _combine(query: ErrorQuery, first: ErrorOutcome, bound: ErrorOutcome) -> ErrorOutcome:
    """A failed prove's answer updated with the bound search's numbers, which may decide it."""
    pairs = [(o.witnessed, o.witness) for o in (first, bound) if o.witnessed is not None]
    witnessed, witness = max(pairs, key=lambda p: p[0]) if pairs else (None, None)
    provens = [o.proven for o in (first, bound) if o.proven is not None]
    proven = min(provens) if provens else None
    verdict, engine = first.verdict, first.engine
    if witnessed is not None and witnessed > query.eps:
        verdict, engine = Verdict.FALSIFIED, bound.engine if witnessed == bound.witnessed else first.engine
    elif proven is not None and proven <= query.eps:
        verdict, engine = Verdict.PROVED, bound.engine
    return ErrorOutcome(verdict, engine, first.seconds + bound.seconds, bound.reason, witness, witnessed,
                        proven, {**bound.stats, **first.stats})

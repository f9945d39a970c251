"""The loop shared by the engines that build one exact model per violation term (CP-SAT, SCIP).

A violation is a disjunction of terms (one per competing class), so the query is proved
when every term is closed and falsified as soon as one term yields a replayed point. A
term left open does not end the loop: a later term may still falsify.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Outcome, Verdict

# term, seconds -> (closed: no point violates it, witness or None, why it stayed open)
TermSolver = Callable[[object, float], tuple[bool, np.ndarray | None, str]]


def solve_terms(engine: str, terms, solve_term: TermSolver, start: float, timeout: float, stop: StopSignal,
                stats: dict, unsupported: type[Exception]) -> Outcome:
    open_reason = ""
    for term in terms:
        remaining = timeout - (time.perf_counter() - start)
        if remaining <= 0 or stop.stopped:
            return Outcome.unknown(engine, time.perf_counter() - start,
                                   "stopped" if stop.stopped else "timeout", **stats)
        try:
            closed, witness, reason = solve_term(term, remaining)
        except unsupported as error:
            return Outcome.unknown(engine, time.perf_counter() - start, str(error), **stats)
        if witness is not None:
            return Outcome(Verdict.FALSIFIED, engine, time.perf_counter() - start, witness=witness, stats=stats)
        if not closed:
            open_reason = open_reason or reason
    elapsed = time.perf_counter() - start
    if open_reason:
        return Outcome.unknown(engine, elapsed, open_reason, **stats)
    return Outcome(Verdict.PROVED, engine, elapsed, stats=stats)

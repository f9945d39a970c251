"""The bit-precise engine: the QF_BV encoding decided by z3.

It is the reference among the exact engines rather than the fast one: it models
two's-complement wraparound directly and shares no arithmetic with the integer
encoding, so the two cross-check each other. Every counterexample is replayed on the
reference executor before it is reported; one that does not replay is a bug, never a
verdict.
"""

from __future__ import annotations

import time

import numpy as np
import z3

from bitqnn.encode.bitvector import OverflowNotExcluded, RequantStyle, encode
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import execute
from bitqnn.query import Query

Z3_MAX_TIMEOUT_MS = 2**32 - 1  # z3's timeout parameter is an unsigned 32-bit count of milliseconds


class EngineDisagreement(RuntimeError):
    """An engine's answer contradicts the reference executor."""


def replay(query: Query, witness: np.ndarray, engine: str) -> None:
    """Raise EngineDisagreement unless the witness is in the box and violates the property."""
    if not query.region.contains(witness):
        raise EngineDisagreement(f"{engine}: witness {witness.tolist()} lies outside the box of {query.label}")
    outputs = execute(query.network, witness[None, :])
    if not query.violation.holds(outputs)[0]:
        raise EngineDisagreement(f"{engine}: witness {witness.tolist()} does not violate {query.label}: "
                                 f"outputs {outputs[0].tolist()}")


class SmtEngine:
    name = "smt"

    def __init__(self, style: RequantStyle = "steps") -> None:
        self.style = style

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        try:
            encoding = encode(query, self.style)
        except OverflowNotExcluded as error:
            return Outcome.unknown(self.name, time.perf_counter() - start, str(error))
        encoded = time.perf_counter()
        stats = dict(encoding.stats, encode_seconds=encoded - start)
        remaining = timeout - (encoded - start)
        if remaining <= 0:
            return Outcome.unknown(self.name, encoded - start, "timeout", **stats)
        solver = z3.SolverFor("QF_BV", ctx=encoding.ctx)
        solver.set("timeout", min(max(1, int(remaining * 1000)), Z3_MAX_TIMEOUT_MS))
        solver.add(encoding.formula)
        result = solver.check()
        seconds = time.perf_counter() - start
        stats["solve_seconds"] = seconds - stats["encode_seconds"]
        if result == z3.unsat:
            return Outcome(Verdict.PROVED, self.name, seconds, stats=stats)
        if result == z3.sat:
            witness = encoding.witness(solver.model())
            replay(query, witness, self.name)
            return Outcome(Verdict.FALSIFIED, self.name, seconds, witness=witness, stats=stats)
        return Outcome.unknown(self.name, seconds, solver.reason_unknown(), **stats)

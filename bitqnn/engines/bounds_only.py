"""Bounds as an engine: PROVED when symbolic bounds rule out every violation term.

It can never falsify, and it costs a fraction of a second, so the portfolio runs it
first and nothing heavier runs on queries it settles.
"""

from __future__ import annotations

import time

from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Query
from bitqnn.symbolic import analysis_of


class BoundsEngine:
    name = "bounds"

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        analysis = analysis_of(query)
        violation, everywhere = analysis.prune(query.violation)
        elapsed = time.perf_counter() - start
        if everywhere:
            return Outcome(Verdict.FALSIFIED, self.name, elapsed, witness=query.region.lo.copy())
        if not violation.terms:
            return Outcome(Verdict.PROVED, self.name, elapsed, stats={"terms": len(query.violation.terms)})
        return Outcome.unknown(self.name, elapsed, f"{len(violation.terms)} of {len(query.violation.terms)} "
                                                   "cases left by bounds")

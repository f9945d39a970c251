"""`auto`: engines composed in sequence, each given what is left of the deadline.

A portfolio is just another engine. The first conclusive answer wins; an engine that
can only falsify (the attack) gets a small slice so that proofs keep most of the time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Query


@dataclass(frozen=True)
class Stage:
    engine: object  # anything with .name and .solve(query, timeout)
    share: float = 1.0  # the fraction of the remaining time this stage may use
    cap: float | None = None  # and at most this many seconds


class SequentialPortfolio:
    def __init__(self, name: str, stages: list[Stage]) -> None:
        self.name = name
        self.stages = stages

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        reasons = []
        for stage in self.stages:
            remaining = timeout - (time.perf_counter() - start)
            if remaining <= 0:
                break
            allowed = remaining * stage.share if stage.cap is None else min(remaining * stage.share, stage.cap)
            outcome = stage.engine.solve(query, allowed)
            if outcome.verdict is not Verdict.UNKNOWN:
                stats = dict(outcome.stats, stage=stage.engine.name)
                return Outcome(outcome.verdict, f"{self.name}:{stage.engine.name}",
                               time.perf_counter() - start, outcome.reason, outcome.witness, stats)
            reasons.append(f"{stage.engine.name}: {outcome.reason}")
        reason = "; ".join(reasons) if reasons else "timeout"
        return Outcome.unknown(self.name, time.perf_counter() - start, reason)

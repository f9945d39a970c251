"""Brute force under bit flips: every allowed flip pattern on every input of the box.

The ground truth for tiny networks. It shares nothing with the exact fault engines but
the fault model's candidate table: each faulty network is built by `apply_flips` (which
XORs the stored bit patterns, never adding deltas) and run on the reference executor.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable

import numpy as np

from bitqnn.engines.enumeration import box_points
from bitqnn.engines.faults import FaultOutcome
from bitqnn.faults import Candidates, FaultModel, FaultQuery, apply_flips, candidates, patterns, stored_values
from bitqnn.outcome import Verdict
from bitqnn.qnn import AccumulatorOverflow, execute

DEFAULT_EVALUATION_LIMIT = 5_000_000  # flip patterns times box points


def pattern_count(cands: Candidates, model: FaultModel) -> int:
    """How many non-empty patterns `faults.patterns` yields, without listing them."""
    sizes = range(1, model.k + 1)
    if model.scope == "any":
        return sum(math.comb(len(cands), size) for size in sizes)
    rows = np.unique(cands.param, return_counts=True)[1].tolist()
    return sum(math.comb(n, size) for n in rows for size in sizes)


class FaultEnumerationEngine:
    name = "faults-enumerate"

    def __init__(self, limit: int = DEFAULT_EVALUATION_LIMIT, batch: int = 65536) -> None:
        self.limit = limit
        self.batch = batch

    def solve(self, fq: FaultQuery, timeout: float) -> FaultOutcome:
        start_time = time.perf_counter()
        query = fq.query
        cands = candidates(query.network, fq.model)
        points = query.region.points
        count = pattern_count(cands, fq.model) + 1  # the clean network too
        stats = {"patterns": count, "points": points}
        if count * points > self.limit:
            return FaultOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start_time,
                                f"{count} flip patterns x {points} points exceed the limit {self.limit}",
                                stats=stats)
        all_patterns: Iterable[tuple[int, ...]] = itertools.chain([()], patterns(cands, fq.model))
        for rows in all_patterns:
            flips = tuple(cands.flip(j) for j in rows)
            network = apply_flips(query.network, flips)
            for first in range(0, points, self.batch):
                if time.perf_counter() - start_time > timeout:
                    return FaultOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start_time, "timeout",
                                        stats=stats)
                batch = box_points(query.region.lo, query.region.hi, first, min(self.batch, points - first))
                try:
                    outputs = execute(network, batch)
                except AccumulatorOverflow as error:  # the faulty network's meaning is undefined there
                    named = "; ".join(f.describe(query.network, *stored_values(query.network, f, flips))
                                      for f in flips)
                    return FaultOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start_time,
                                        f"flips ({named}) overflow an accumulator: {error}", stats=stats)
                hits = np.flatnonzero(query.violation.holds(outputs))
                if hits.size:
                    return FaultOutcome(Verdict.FALSIFIED, self.name, time.perf_counter() - start_time, "",
                                        batch[hits[0]].copy(), flips, stats)
        return FaultOutcome(Verdict.PROVED, self.name, time.perf_counter() - start_time, stats=stats)

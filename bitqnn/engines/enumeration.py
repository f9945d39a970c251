"""Brute force: run the reference executor on every point of the box.

The third, trivially correct engine. It decides tiny boxes outright and is the ground
truth that the exact engines are cross-checked against.
"""

from __future__ import annotations

import time

import numpy as np

from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import execute
from bitqnn.query import Query

DEFAULT_POINT_LIMIT = 2_000_000


def box_points(lo: np.ndarray, hi: np.ndarray, start: int, count: int) -> np.ndarray:
    """Points start .. start+count-1 of the box in mixed-radix (C) order, as [count, n]."""
    sizes = (hi - lo + 1).astype(np.int64)
    index = np.arange(start, start + count, dtype=np.int64)
    points = np.empty((count, lo.size), dtype=np.int64)
    for dim in range(lo.size - 1, -1, -1):
        points[:, dim] = lo[dim] + index % sizes[dim]
        index //= sizes[dim]
    return points


class EnumerationEngine:
    name = "enumerate"

    def __init__(self, point_limit: int = DEFAULT_POINT_LIMIT, batch: int = 65536) -> None:
        self.point_limit = point_limit
        self.batch = batch

    def solve(self, query: Query, timeout: float) -> Outcome:
        start_time = time.perf_counter()
        total = query.region.points
        if total > self.point_limit:
            return Outcome.unknown(self.name, 0.0, f"box has {total} points, over the limit {self.point_limit}")
        for start in range(0, total, self.batch):
            if time.perf_counter() - start_time > timeout:
                return Outcome.unknown(self.name, time.perf_counter() - start_time, "timeout")
            points = box_points(query.region.lo, query.region.hi, start, min(self.batch, total - start))
            hits = np.flatnonzero(query.violation.holds(execute(query.network, points)))
            if hits.size:
                return Outcome(Verdict.FALSIFIED, self.name, time.perf_counter() - start_time,
                               witness=points[hits[0]], stats={"points": start + int(hits[0]) + 1})
        return Outcome(Verdict.PROVED, self.name, time.perf_counter() - start_time, stats={"points": total})

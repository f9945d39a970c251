"""The stage hull is the exact convex hull: every reachable (acc, y) point lies inside it,
and every corner it uses is a reachable point, for all requantization kinds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from bitqnn.hull import Edge, stage_hull
from bitqnn.symbolic import relax_stage
from tests.netgen import REQUANT_KINDS, random_stage


def _line(edge: Edge, acc: int) -> Fraction:
    return edge.y0 + Fraction(edge.y1 - edge.y0, edge.x1 - edge.x0) * (acc - edge.x0)


def _cases(kind: str, count: int = 40):
    rng = np.random.default_rng(REQUANT_KINDS.index(kind))
    for _ in range(count):
        stage = random_stage(rng, kind, channels=3, acc_span=400, signed=bool(rng.random() < 0.5))
        channel = int(rng.integers(0, 3))
        acc_lo = int(rng.integers(-300, 200))
        acc_hi = acc_lo + int(rng.integers(0, 500))
        yield stage, channel, acc_lo, acc_hi


@pytest.mark.parametrize("kind", REQUANT_KINDS)
def test_hull_contains_the_graph_and_touches_it_at_every_corner(kind):
    for stage, channel, acc_lo, acc_hi in _cases(kind):
        accs = np.arange(acc_lo, acc_hi + 1)
        ys = stage(accs, np.full(accs.shape, channel))
        graph = dict(zip(accs.tolist(), ys.tolist(), strict=True))
        starts, values = stage.steps(channel, acc_lo, acc_hi)
        hull = stage_hull(starts, values, acc_hi)
        for acc, y in graph.items():
            assert all(y <= _line(e, acc) for e in hull.upper if e.x0 <= acc <= e.x1)
            assert all(y >= _line(e, acc) for e in hull.lower if e.x0 <= acc <= e.x1)
            assert all(y <= _line(e, acc) for e in hull.upper)  # concave side: valid beyond its span
            assert all(y >= _line(e, acc) for e in hull.lower)
        for e in hull.upper + hull.lower:
            assert graph[e.x0] == e.y0 and graph[e.x1] == e.y1
        rows = hull.rows()  # the integer form every encoder states
        assert len(rows) == sum(e.y1 != e.y0 for e in hull.upper + hull.lower)
        for row in rows:
            sides = row.y_coeff * ys + row.acc_coeff * accs
            assert np.all(sides <= row.bound) if row.upper else np.all(sides >= row.bound)
        if acc_lo < acc_hi:  # the edges cover the whole range, so no tighter hull exists
            for edges in (hull.upper, hull.lower):
                assert edges[0].x0 == acc_lo and edges[-1].x1 == acc_hi
                assert all(a.x1 == b.x0 for a, b in zip(edges, edges[1:], strict=False))


@pytest.mark.parametrize("kind", REQUANT_KINDS)
def test_symbolic_relaxation_lines_stay_sound(kind):
    for stage, channel, acc_lo, acc_hi in _cases(kind):
        lk, lb, uk, ub = relax_stage(stage, channel, acc_lo, acc_hi)
        accs = np.arange(acc_lo, acc_hi + 1)
        ys = stage(accs, np.full(accs.shape, channel)).astype(np.float64)
        assert np.all(ys <= uk * accs + ub) and np.all(ys >= lk * accs + lb)

"""The error search: its incremental neighbourhood is the executor's, and on boxes small
enough to enumerate it finds the true largest error (and never claims more)."""

from __future__ import annotations

import numpy as np

from bitqnn.engines.enumeration import box_points
from bitqnn.error_search import Neighbourhood, search_error
from tests.test_error_milp import SHIFT_CASES, random_query


def moved_points(x: np.ndarray, coords: np.ndarray, values: np.ndarray) -> np.ndarray:
    points = np.repeat(x[None, :], len(coords), axis=0)
    points[np.arange(len(coords)), coords] = values
    return points


def test_neighbourhood_errors_are_the_executors():
    for seed in range(30):
        query = random_query(seed)
        rng = np.random.default_rng(seed)
        x = rng.integers(query.region.lo, query.region.hi + 1)
        for fast in (True, False):
            neighbourhood = Neighbourhood(query)
            assert neighbourhood.fast  # dense first layers in both networks
            neighbourhood.fast = fast
            coords, values, errors = neighbourhood.errors(x)
            assert np.all(values != x[coords])
            expected = query.errors(moved_points(x, coords, values))
            # the QNN part is exact; the float part may differ from a direct pass in the last bits
            np.testing.assert_allclose(errors, expected, rtol=0, atol=1e-9)
            assert len(coords) == int(np.sum(query.region.hi - query.region.lo))


def test_search_reaches_the_enumerated_maximum():
    found = 0
    for seed in range(SHIFT_CASES):
        query = random_query(seed)
        truth = float(np.abs(query.errors(box_points(query.region.lo, query.region.hi, 0,
                                                     query.region.points))).max())
        point, claimed = search_error(query, 0.05, seed=seed)
        assert query.region.contains(point)
        assert claimed == float(np.abs(query.errors(point)).max())
        assert claimed <= truth + 1e-12 * (1 + truth)
        found += claimed >= truth - 1e-12 * (1 + truth)
    assert found >= 0.9 * SHIFT_CASES, found


def test_search_starts_from_a_given_point():
    query = random_query(3)
    grid = box_points(query.region.lo, query.region.hi, 0, query.region.points)
    worst = grid[int(np.argmax(np.abs(query.errors(grid)).max(axis=1)))]
    point, claimed = search_error(query, 0.0, start=worst)  # no time to climb: the start must win
    assert claimed == float(np.abs(query.errors(worst)).max()) == float(np.abs(query.errors(point)).max())

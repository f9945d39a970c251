"""The error search: its incremental neighbourhood is the executor's, and on boxes small
enough to enumerate the climb and the annealing find the true largest error (and never
claim more)."""

from __future__ import annotations

import numpy as np
import pytest

from bitqnn.engines.enumeration import box_points
from bitqnn.error_search import Neighbourhood, anneal, search_error
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
            moves = rng.integers(0, neighbourhood.size, 40)
            coords, values, errors = neighbourhood.errors(x, moves)
            assert np.all(values != x[coords]) and len(coords) == int(np.sum(neighbourhood.values[moves] != x[
                neighbourhood.coords[moves]]))
            np.testing.assert_allclose(errors, query.errors(moved_points(x, coords, values)), rtol=0, atol=1e-9)


def enumerated_maximum(query) -> float:
    return float(np.abs(query.errors(box_points(query.region.lo, query.region.hi, 0, query.region.points))).max())


@pytest.mark.parametrize("search, share", [
    (lambda query, seed: search_error(query, 0.05, seed=seed), 0.9),
    # from the box's low corner, in 0.1 s, annealing reached 35 of 60 when this was written:
    # its temperature is set for 784-pixel boxes, and the pipeline starts it from the climb's point
    (lambda query, seed: anneal(query, query.region.lo, 0.1, seed=seed), 0.5),
], ids=["climb", "anneal"])
def test_search_reaches_the_enumerated_maximum(search, share):
    """Sound on every case (a claimed error is the replayed one and never above the
    truth), and the maximum itself in most."""
    found = 0
    for seed in range(SHIFT_CASES):
        query = random_query(seed)
        truth = enumerated_maximum(query)
        point, claimed = search(query, seed)
        assert query.region.contains(point)
        assert claimed == float(np.abs(query.errors(point)).max())
        assert claimed <= truth + 1e-12 * (1 + truth)
        found += claimed >= truth - 1e-12 * (1 + truth)
    assert found >= share * SHIFT_CASES, found


def test_search_starts_from_a_given_point():
    query = random_query(3)
    grid = box_points(query.region.lo, query.region.hi, 0, query.region.points)
    worst = grid[int(np.argmax(np.abs(query.errors(grid)).max(axis=1)))]
    point, claimed = search_error(query, 0.0, start=worst)  # no time to climb: the start must win
    assert claimed == float(np.abs(query.errors(worst)).max()) == float(np.abs(query.errors(point)).max())


def test_annealing_ends_at_enough_and_when_stopped():
    query = random_query(5)
    start = query.region.lo
    first = float(np.abs(query.errors(start)).max())
    truth = enumerated_maximum(query)
    assert first < truth  # so there is something to find
    point, claimed = anneal(query, start, 30.0, enough=first)
    assert claimed > first  # it returned at the first better point, long before 30 s
    point, claimed = anneal(query, start, 30.0, stop=lambda: True)
    assert np.array_equal(point, start) and claimed == first

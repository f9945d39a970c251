"""The exact neighbourhood search against enumeration: it returns only real
counterexamples, and on tiny networks, starting from neighbourhoods of two inputs, it
still finds more than half of them (it stops short of the whole box). It is raced inside
`auto`, so it must also stop when asked."""

import numpy as np

from bitqnn.engines import neighbourhood
from bitqnn.engines.attack import straight_through_jacobian
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.neighbourhood import neighbourhood_search
from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Verdict
from bitqnn.qnn import execute
from tests.netgen import random_dense_case

CASES = 90


def gradient_of(query, atom):
    def gradient_at(x):
        jac = straight_through_jacobian(query.network, x)
        return sum(c * jac[i] for i, c in atom.terms)

    return gradient_at


def search_every_term(query, stop=None):
    """The first point any term's search returns, from the box's centre."""
    centre = (query.region.lo + query.region.hi) // 2
    for (atom,) in query.violation.terms:
        point, _ = neighbourhood_search(query, atom, centre, gradient_of(query, atom), lambda: 10.0,
                                     stop or StopSignal())
        if point is not None:
            return atom, point
    return None, None


def test_the_search_returns_only_counterexamples_and_finds_many(monkeypatch):
    monkeypatch.setattr(neighbourhood, "FIRST_FREE", 2)  # real neighbourhoods even on tiny boxes
    truth = EnumerationEngine()
    falsifiable = found = 0
    for seed in range(CASES):
        _, query = random_dense_case(seed)
        expected = truth.solve(query, 60).verdict
        atom, point = search_every_term(query)
        if point is not None:
            assert np.all(query.region.lo <= point) and np.all(point <= query.region.hi), seed
            assert atom.holds(execute(query.network, point))[0] and expected is Verdict.FALSIFIED, seed
            found += 1
        falsifiable += expected is Verdict.FALSIFIED
    print(f"neighbourhood search: {found} of {falsifiable} falsifiable cases")
    assert falsifiable >= 20 and found >= 0.5 * falsifiable  # 31 of 49 when written



"""The hinted climb against enumeration: it returns only real counterexamples, and on tiny
networks, where SCIP settles the whole box within the time given, it finds one exactly
when one exists. It is raced inside `auto`, so it must also stop when asked."""

import threading
import time

from bitqnn.engines.climb import climb
from bitqnn.engines.milp import unsupported_layer
from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Verdict
from bitqnn.qnn import execute
from bitqnn.symbolic import analysis_of
from tests.netgen import searched_cases
from tests.test_engine_milp import hard_shipped_query

CASES = 60


def climb_every_term(query, stop=None):
    """The first point any term's climb returns, from the box's centre."""
    centre = (query.region.lo + query.region.hi) // 2
    for (atom,) in query.violation.terms:
        point = climb(query, atom, centre, lambda: 10.0, stop or StopSignal())
        if point is not None:
            return atom, point
    return None, None


def test_the_climb_returns_only_counterexamples_and_finds_every_one():
    falsifiable = found = 0
    for seed, query, expected, point in searched_cases(climb_every_term, CASES):
        if unsupported_layer(query.network):
            assert point is None, seed  # a lookup table has no MILP encoding here
            continue
        falsifiable += expected is Verdict.FALSIFIED
        found += point is not None
        # unlike the neighbourhood search, nothing is fixed: a tiny box is searched whole
        assert (point is not None) == (expected is Verdict.FALSIFIED), seed
    assert falsifiable >= 20 and found == falsifiable


def test_a_climb_stops_mid_search_when_asked():
    """A raced climb must let go of its core as soon as a rival answers."""
    query, stop = hard_shipped_query(), StopSignal()
    analysis = analysis_of(query)
    violation, _ = analysis.prune(query.violation)
    (atom,) = violation.terms[0]
    centre = (query.region.lo + query.region.hi) // 2
    threading.Timer(1.0, stop.stop).start()
    start = time.perf_counter()
    point = climb(query, atom, centre, lambda: 30.0 - (time.perf_counter() - start), stop)
    assert time.perf_counter() - start < 4
    assert point is None or atom.holds(execute(query.network, point))[0]

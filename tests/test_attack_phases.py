"""What the attack's two exact phases share: stopped, they return nothing at once (they are
raced inside `auto`); after a gradient phase that ends short of a violation, they start
from its best point, and every witness they return replays and is real."""

import pytest

from bitqnn.engines.attack import AttackEngine
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Verdict
from bitqnn.qnn import execute
from tests.netgen import random_dense_case
from tests.test_climb import climb_every_term
from tests.test_neighbourhood import search_every_term

CASES = 60
SEARCHES = {"neighbourhood": search_every_term, "climb": climb_every_term}


@pytest.mark.parametrize("phase", sorted(SEARCHES))
def test_a_stopped_phase_returns_nothing(phase):
    stop = StopSignal()
    stop.stop()
    attack = AttackEngine(budget=30.0, phases=("lp", phase))
    for seed in range(CASES):
        _, query = random_dense_case(seed)
        assert SEARCHES[phase](query, stop) == (None, None), seed
        outcome = attack.solve(query, 30, stop=stop)
        assert outcome.verdict is Verdict.UNKNOWN and outcome.reason == "stopped", seed


@pytest.mark.parametrize("phase", sorted(SEARCHES))
def test_the_attack_falls_back_on_the_phase_and_its_witnesses_replay(phase):
    """One gradient start, so that the gradient phase leaves some counterexamples over."""
    truth, attack = EnumerationEngine(), AttackEngine(budget=2.0, restarts=1, phases=("gradient", phase))
    by_phase = 0
    for seed in range(3 * CASES):
        _, query = random_dense_case(seed)
        outcome = attack.solve(query, 10)
        if outcome.verdict is Verdict.FALSIFIED:
            assert query.violation.holds(execute(query.network, outcome.witness))[0], seed
            assert truth.solve(query, 60).verdict is Verdict.FALSIFIED, seed
            by_phase += outcome.stats["phase"] == phase
    assert by_phase >= 1

"""The SCIP robustness engine and the thread race, against enumeration and against CP-SAT.

SCIP's PROVED rests on floating-point LP, so it is held to the same bar as the exact
engines: the same verdict as enumerating every input and as CP-SAT, on every random dense
network of every requantization kind, with every witness replayed.
"""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bitqnn.engines.milp as milp_engine
from bitqnn.encode.milp import STEP_PRIORITY
from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.milp import MilpEngine, qnn_model
from bitqnn.engines.portfolio import Handoff, ThreadRace
from bitqnn.engines.registry import make_engine
from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import Lookup, execute
from bitqnn.symbolic import analysis_of
from bitqnn.verify import verify
from tests.netgen import REQUANT_KINDS, random_conv_qnn, random_dense_case, random_dense_qnn, random_query

CASES = 180




def test_milp_agrees_with_enumeration_and_cpsat():
    truth, milp, cpsat = EnumerationEngine(), MilpEngine(), CpSatEngine()
    seen: dict = {}
    for seed in range(CASES):
        kind, query = random_dense_case(seed)
        outcome = milp.solve(query, 60)
        if any(isinstance(layer, Lookup) for layer in query.network.layers):
            assert outcome.verdict is Verdict.UNKNOWN and "Lookup" in outcome.reason
            continue
        expected = truth.solve(query, 60).verdict
        assert outcome.verdict is expected, (seed, kind, outcome)
        assert cpsat.solve(query, 60).verdict is expected, (seed, kind)
        if outcome.verdict is Verdict.FALSIFIED:
            assert query.check_witness(outcome.witness, execute(query.network, outcome.witness)), seed
        else:
            assert "tolerance" in outcome.stats  # a PROVED from SCIP says what it rests on
        seen[(kind, expected)] = seen.get((kind, expected), 0) + 1
    assert all(seen.get((k, v), 0) >= 3 for k in REQUANT_KINDS for v in (Verdict.PROVED, Verdict.FALSIFIED)), seen


def test_milp_declines_layers_it_does_not_encode():
    rng = np.random.default_rng(3)
    query = random_query(rng, random_conv_qnn(rng, "half_up"))
    outcome = MilpEngine().solve(query, 10)
    assert outcome.verdict is Verdict.UNKNOWN and "Conv2d" in outcome.reason


def test_auto_with_its_race_agrees_with_enumeration():
    truth, auto = EnumerationEngine(), make_engine("auto")
    for seed in range(0, CASES, 3):
        _, query = random_dense_case(seed)
        result = verify(query, auto, 60)  # verify replays every witness
        assert result.verdict is truth.solve(query, 60).verdict, seed


class _Stubborn:
    """Searches until stopped: what a losing solver looks like. With `build_seconds` it
    first builds its model, dropping any interrupt meanwhile, as CP-SAT and SCIP do."""

    name = "stubborn"

    def __init__(self, build_seconds: float = 0.0) -> None:
        self.build_seconds = build_seconds
        self.stopped_after: float | None = None

    def solve(self, query, timeout, stop: StopSignal):
        start = time.perf_counter()
        searching, released = threading.Event(), threading.Event()

        def interrupt() -> None:
            if searching.is_set():
                released.set()

        with stop.hook(interrupt):
            time.sleep(self.build_seconds)
            searching.set()
            released.wait(timeout)
        self.stopped_after = time.perf_counter() - start
        return Outcome.unknown(self.name, self.stopped_after, "stopped")


class _Quick:
    name = "quick"

    def __init__(self, verdict: Verdict | None = Verdict.PROVED, error: Exception | None = None) -> None:
        self.verdict, self.error = verdict, error

    def solve(self, query, timeout, stop: StopSignal):
        time.sleep(0.2)
        if self.error is not None:
            raise self.error
        return Outcome(self.verdict, self.name, 0.2)


def test_race_stops_the_loser_as_soon_as_one_engine_answers():
    _, query = random_dense_case(1)
    loser = _Stubborn()
    start = time.perf_counter()
    outcome = ThreadRace("race", [loser, _Quick()]).solve(query, 30)
    assert outcome.verdict is Verdict.PROVED and outcome.engine == "quick"
    assert time.perf_counter() - start < 2 and loser.stopped_after < 2


def test_race_stops_a_loser_whose_search_starts_after_the_answer():
    _, query = random_dense_case(1)
    loser = _Stubborn(build_seconds=0.5)  # building its model while the rival answers
    outcome = ThreadRace("race", [loser, _Quick()]).solve(query, 30)
    assert outcome.verdict is Verdict.PROVED and loser.stopped_after < 2


def test_race_reraises_an_engine_error_and_stops_the_rest():
    _, query = random_dense_case(1)
    loser = _Stubborn()
    with pytest.raises(RuntimeError, match="replay"):
        ThreadRace("race", [_Quick(error=RuntimeError("replay disagrees")), loser]).solve(query, 30)
    assert loser.stopped_after < 2


def test_a_handoff_passes_its_thread_on_once_the_first_engine_is_out_of_turn():
    _, query = random_dense_case(1)
    first = _Stubborn()
    start = time.perf_counter()
    outcome = Handoff(first, _Quick(), seconds=0.3).solve(query, 30)
    assert outcome.verdict is Verdict.PROVED and outcome.engine == "quick"
    assert 0.3 <= first.stopped_after < 1 and time.perf_counter() - start < 2


def test_a_handoff_stopped_by_its_race_never_starts_its_second_engine():
    _, query = random_dense_case(1)
    first, second = _Stubborn(), _Stubborn()
    outcome = ThreadRace("race", [Handoff(first, second, seconds=20), _Quick()]).solve(query, 30)
    assert outcome.verdict is Verdict.PROVED and first.stopped_after < 2 and second.stopped_after is None


def test_stop_signal_reaches_a_hook_registered_after_the_stop():
    signal, calls = StopSignal(), []
    signal.stop()
    with signal.hook(lambda: calls.append(1)):
        pass
    assert calls == [1] and signal.stopped


def hard_shipped_query():
    """A query both solvers leave open for over 20 s: the fixed-point digits spec's first
    statement with its box widened by 8 steps."""
    from dataclasses import replace

    from bitqnn.query import Box
    from bitqnn.spec.compile import compile_spec

    query = compile_spec(Path(__file__).resolve().parents[1] / "specs/digits_fixed_point.qspec")[0].query
    lo, hi = query.region.lo, query.region.hi
    return replace(query, region=Box(np.maximum(lo - 8, 0), np.minimum(hi + 8, 255)))


def test_race_stops_real_cpsat_still_in_its_cut_rounds():
    """The rival answers while CP-SAT is still building cuts and its model; CP-SAT must not
    then search the hard query to its 30 s limit."""
    start = time.perf_counter()
    outcome = ThreadRace("race", [CpSatEngine(workers=1, first_try=False), _Quick()]).solve(hard_shipped_query(), 30)
    assert outcome.verdict is Verdict.PROVED and time.perf_counter() - start < 10


@pytest.mark.parametrize("engine", [MilpEngine(), CpSatEngine(workers=1, cuts=False)], ids=["milp", "cpsat"])
def test_a_real_solver_stops_mid_search_when_asked(engine):
    query, stop = hard_shipped_query(), StopSignal()
    threading.Timer(1.0, stop.stop).start()
    start = time.perf_counter()
    outcome = engine.solve(query, 30, stop=stop)
    assert outcome.verdict is Verdict.UNKNOWN and outcome.reason == "stopped", outcome
    assert time.perf_counter() - start < 4


@pytest.mark.parametrize("engine, builder", [(MilpEngine(), "bitqnn.engines.milp.qnn_layer"),
                                             (CpSatEngine(workers=1, cuts=False), "bitqnn.engines.cpsat.encode_term")],
                         ids=["milp", "cpsat"])
def test_building_the_model_spends_the_time_limit_too(engine, builder, monkeypatch):
    """On a 784-input network building one term's model takes about a second; solvers
    given the whole limit after that overran it, and a 60 s query's pieces, still running
    at 61 s, had to be killed."""
    module, name = builder.rsplit(".", 1)
    build = getattr(__import__(module, fromlist=[name]), name)

    def slow_build(*args, **kwargs):
        time.sleep(0.5)
        return build(*args, **kwargs)

    monkeypatch.setattr(builder, slow_build)
    start = time.perf_counter()
    outcome = engine.solve(hard_shipped_query(), 2.0)
    assert outcome.verdict is Verdict.UNKNOWN and time.perf_counter() - start < 2.0 + 0.5, outcome


@pytest.mark.parametrize("steps_first", [True, False])
def test_scip_branches_on_the_rounded_quotients_first_only_when_asked(steps_first):
    rng = np.random.default_rng(5)
    query = random_query(rng, random_dense_qnn(rng, "half_up", sizes=(6, 8, 4)), radius=3)
    milp, _, _ = qnn_model(query, analysis_of(query).bounds, 1, steps_first=steps_first)
    priorities = {var.name(): var.branching_priority() for var in milp.solver.variables()}
    quotients = [name for name in priorities if name.startswith("q")]
    assert quotients  # the random box leaves some neuron between two steps
    assert all(priorities[name] == (STEP_PRIORITY if steps_first else 0) for name in quotients)
    assert all(p == 0 for name, p in priorities.items() if not name.startswith("q"))


def test_the_robustness_engine_asks_for_the_quotients_first(monkeypatch):
    asked = []
    build = milp_engine.qnn_model

    def spy(query, bounds, threads, steps_first=False):
        asked.append(steps_first)
        return build(query, bounds, threads, steps_first)

    monkeypatch.setattr(milp_engine, "qnn_model", spy)
    for seed in range(40):
        _, query = random_dense_case(seed)
        MilpEngine().solve(query, 10)
    assert asked and all(asked)

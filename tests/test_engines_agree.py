"""Every exact path against brute-force enumeration on networks small enough to enumerate.

The generator covers all six requantization kinds, per-channel parameters, zero points,
conv, max-pool and lookup layers. Zero disagreements are allowed, and every
counterexample must replay on the reference executor.
"""

from dataclasses import replace

import numpy as np
import pytest

from bitqnn.bounds import interval_bounds
from bitqnn.engines.attack import AttackEngine
from bitqnn.engines.bounds_only import BoundsEngine
from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.engines.enumeration import EnumerationEngine, box_points
from bitqnn.outcome import Verdict
from bitqnn.qnn import AccumulatorOverflow, Lookup, MaxPool2d, check_input, execute, run_layer
from bitqnn.symbolic import SymbolicAnalysis, symbolic_bounds
from tests.netgen import REQUANT_KINDS, random_conv_qnn, random_dense_qnn, random_query

CASES = 240


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    kind = REQUANT_KINDS[seed % len(REQUANT_KINDS)]
    qnn = random_dense_qnn(rng, kind) if seed % 3 else random_conv_qnn(rng, kind)
    return kind, random_query(rng, qnn, radius=int(rng.integers(1, 4)))


def replays(query, witness) -> bool:
    return query.check_witness(witness, execute(query.network, witness))


@pytest.mark.parametrize("bounds", ["symbolic", "interval"])
def test_cpsat_agrees_with_enumeration(bounds):
    engine, truth = CpSatEngine(bounds=bounds), EnumerationEngine()
    seen = {}
    for seed in range(CASES):
        kind, query = random_case(seed)
        expected = truth.solve(query, 60).verdict
        outcome = engine.solve(query, 60)
        assert outcome.verdict is expected, (seed, kind, outcome)
        if outcome.verdict is Verdict.FALSIFIED:
            assert replays(query, outcome.witness), (seed, kind)
        seen[(kind, expected)] = seen.get((kind, expected), 0) + 1
    # the generator must exercise both answers for every requantization kind
    assert all(seen.get((k, v), 0) >= 5 for k in REQUANT_KINDS for v in (Verdict.PROVED, Verdict.FALSIFIED))


def test_bounds_and_attack_never_contradict_enumeration():
    truth, bounds, attack = EnumerationEngine(), BoundsEngine(), AttackEngine(budget=0.2)
    decided = 0
    for seed in range(CASES):
        _, query = random_case(seed)
        expected = truth.solve(query, 60).verdict
        for engine in (bounds, attack):
            outcome = engine.solve(query, 5)
            if outcome.verdict is not Verdict.UNKNOWN:
                decided += 1
                assert outcome.verdict is expected, (seed, engine.name)
            if outcome.verdict is Verdict.FALSIFIED:
                assert replays(query, outcome.witness)
    assert decided > CASES // 2


def test_bounds_contain_every_reachable_value():
    for seed in range(120):
        _, query = random_case(seed)
        qnn = query.network
        points = check_input(qnn, box_points(query.region.lo, query.region.hi, 0, query.region.points))
        for bounds in (interval_bounds(qnn, query.region), symbolic_bounds(qnn, query.region),
                       SymbolicAnalysis(qnn, query.region, choose_lines=True).bounds):
            values = points
            for index, layer_bounds in enumerate(bounds.layers):
                values, acc = run_layer(qnn, index, values)
                assert np.all(values >= layer_bounds.lo) and np.all(values <= layer_bounds.hi), (seed, index)
                if acc is not None:
                    assert np.all(acc >= layer_bounds.acc_lo) and np.all(acc <= layer_bounds.acc_hi)


def narrow_accumulator_cases(overflow: str):
    """The random cases again, with 6-bit accumulators; yields (query, every point of its box)."""
    for seed in range(60):
        _, query = random_case(seed)
        qnn = replace(query.network, accumulator_bits=6, overflow=overflow, _cache={})
        query = replace(query, network=qnn)
        yield seed, query, box_points(query.region.lo, query.region.hi, 0, query.region.points)


def test_wraparound_accumulators_are_encoded_exactly():
    """A 6-bit accumulator that really wraps: CP-SAT must follow the wrapped values."""
    checked = wrapped = 0
    for seed, query, points in narrow_accumulator_cases("wrap"):
        qnn = query.network
        raw = np.abs(run_layer(replace(qnn, accumulator_bits=64, _cache={}), 0, check_input(qnn, points))[1])
        wrapped += int(np.any(raw >= 32))
        expected = EnumerationEngine().solve(query, 60).verdict
        assert CpSatEngine().solve(query, 60).verdict is expected, seed
        checked += 1
    assert wrapped >= 10 and checked == 60


def test_reachable_overflow_is_an_error_and_unreachable_overflow_is_cleared():
    """overflow='error' with a 6-bit accumulator: CP-SAT must find exactly the boxes that overflow."""
    raised = cleared = 0
    for seed, query, points in narrow_accumulator_cases("error"):
        try:
            execute(query.network, points)
            truth = EnumerationEngine().solve(query, 60).verdict
        except AccumulatorOverflow:
            truth = None
        if truth is None:
            with pytest.raises(AccumulatorOverflow, match="for the input"):
                CpSatEngine().solve(query, 60)
            raised += 1
        else:
            cleared += bool(interval_bounds(query.network, query.region).overflow_sites())
            assert CpSatEngine().solve(query, 60).verdict is truth, seed
    assert raised >= 10 and cleared >= 1


def test_lp_guided_attack_finds_most_counterexamples_and_only_real_ones():
    truth, attack = EnumerationEngine(), AttackEngine(budget=0.5, phases=("lp",))
    falsifiable = found = 0
    for seed in range(CASES):
        _, query = random_case(seed)
        if any(isinstance(layer, MaxPool2d | Lookup) for layer in query.network.layers):
            continue  # the LP models dense, conv and reshape layers only
        expected = truth.solve(query, 60).verdict
        outcome = attack.solve(query, 5)
        assert outcome.verdict in (Verdict.FALSIFIED, Verdict.UNKNOWN)
        if outcome.verdict is Verdict.FALSIFIED:
            assert expected is Verdict.FALSIFIED and replays(query, outcome.witness)
            found += 1
        falsifiable += expected is Verdict.FALSIFIED
    print(f"LP-guided attack: {found} of {falsifiable} falsifiable cases")
    assert falsifiable >= 40 and found >= 0.8 * falsifiable

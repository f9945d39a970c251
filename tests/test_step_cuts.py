"""Step cuts are valid inequalities: checked at every integer point of enumerable boxes.

The derivation in bitqnn/step_cuts.py says each cut holds whenever z is the true step
indicator of its neuron. These tests take that claim to brute force: the cuts separated at
random fractional points (so that many are produced, not only those one LP needs) and the
cuts of full LP rounds must hold at every input of the box, with every layer's exact
values and indicators.
"""

import itertools

import numpy as np
import pytest

from bitqnn.encode.lp import RelaxationLP, supported
from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.qnn import Conv2d, Dense, run_layer
from bitqnn.query import Box
from bitqnn.step_cuts import NeuronRow, StepCut, cut_rounds, separate
from bitqnn.symbolic import analysis_of
from tests.netgen import REQUANT_KINDS, random_dense_qnn, random_query


def case(seed: int):
    rng = np.random.default_rng(7000 + seed)
    kind = REQUANT_KINDS[seed % len(REQUANT_KINDS)]
    return rng, random_query(rng, random_dense_qnn(rng, kind), radius=2)


def box_points(box: Box) -> np.ndarray:
    axes = [range(int(a), int(b) + 1) for a, b in zip(box.lo, box.hi, strict=True)]
    return np.array(list(itertools.product(*axes)), dtype=np.int64)


def layer_values(qnn, points: np.ndarray):
    """Per layer: its exact flat inputs and accumulators over every point."""
    inputs, accumulators = [], []
    values = points
    for index in range(len(qnn.layers)):
        inputs.append(values)
        values, acc = run_layer(qnn, index, values)
        accumulators.append(acc)
    return inputs, accumulators, values


def assert_cuts_hold(cuts: list[StepCut], inputs, accumulators) -> None:
    for cut in cuts:
        indicator = cut.indicator
        d = inputs[indicator.layer]
        z = (accumulators[indicator.layer][:, indicator.neuron] >= indicator.start).astype(np.int64)
        lhs = d[:, cut.members] @ cut.weights + cut.z_coeff * z
        assert np.all(lhs >= cut.bound) if cut.at_least else np.all(lhs <= cut.bound), cut


def enumerated_cases(count: int):
    """(rng, query, bounds, per-layer inputs, accumulators, outputs) for LP-modelled cases."""
    for seed in range(count):
        rng, query = case(seed)
        if supported(query.network):
            yield (rng, query, analysis_of(query).bounds,
                   *layer_values(query.network, box_points(query.region)))


def test_cuts_separated_anywhere_hold_at_every_point():
    produced = 0
    for rng, query, bounds, inputs, accumulators, _ in enumerated_cases(60):
        lp = RelaxationLP(query.network, bounds, indicators=True)
        cuts = []
        for indicator in lp.indicators:
            row = NeuronRow.of(query.network, bounds, indicator.layer, indicator.neuron)
            d_lo, d_hi = bounds.before(indicator.layer)
            for _ in range(4):
                point = d_lo + rng.random(d_lo.shape) * (d_hi - d_lo)
                cuts += separate(row, indicator, float(rng.random()), point)
        assert_cuts_hold(cuts, inputs, accumulators)
        produced += len(cuts)
    assert produced > 500


def test_cut_rounds_only_lower_a_sound_lp_bound():
    rounds_with_cuts = 0
    for _, query, bounds, inputs, accumulators, outputs in enumerated_cases(40):
        for term in query.violation.terms:
            terms = term[0].terms
            result = cut_rounds(query.network, bounds, terms, time_limit=5.0)
            true_max = int(sum(c * outputs[:, i] for i, c in terms).max())
            assert result.lp_bounds[-1] >= true_max - 1e-6, (query.label, result.lp_bounds, true_max)
            assert all(b >= a - 1e-6 for a, b in zip(result.lp_bounds[1:], result.lp_bounds, strict=False))
            assert_cuts_hold(result.cuts, inputs, accumulators)
            rounds_with_cuts += bool(result.cuts)
    assert rounds_with_cuts >= 10


@pytest.mark.parametrize("cuts", [True, False])
def test_cpsat_with_and_without_cuts_agrees_with_enumeration(cuts):
    """first_try=False sends every term through the cut rounds, which tiny nets never need."""
    engine, truth = CpSatEngine(cuts=cuts, first_try=False), EnumerationEngine()
    with_cuts = 0
    for seed in range(60):
        _, query = case(seed)
        expected = truth.solve(query, 60).verdict
        outcome = engine.solve(query, 60)
        assert outcome.verdict is expected, seed
        with_cuts += outcome.stats.get("cuts", 0) > 0
    assert (with_cuts >= 10) if cuts else (with_cuts == 0)


def test_layers_the_lp_does_not_model_get_no_cuts():
    rng = np.random.default_rng(3)
    for _ in range(20):
        qnn = random_dense_qnn(rng, "half_up")
        query = random_query(rng, qnn)
        linear = all(isinstance(layer, Dense | Conv2d) for layer in qnn.layers)
        result = cut_rounds(qnn, analysis_of(query).bounds, query.violation.terms[0][0].terms, 1.0)
        assert (result is None) is (not linear)

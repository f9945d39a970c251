"""The fault engines against each other and against brute force, on random tiny networks.

Brute force (every flip pattern on every input, built by `apply_flips` and run on the
reference executor) is the ground truth; the bit-vector engine (masks XOR stored
patterns) and the CP-SAT engines (+-2**bit per flip, after pruning) share no flip
arithmetic with it or with each other. Every counterexample is replayed on its faulty
network, and its flips are checked against the budget and the scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest

from bitqnn.bounds import interval_bounds
from bitqnn.engines.enumeration import box_points
from bitqnn.engines.fault_enumeration import FaultEnumerationEngine, pattern_count
from bitqnn.engines.faults import FaultEngine, FaultOutcome
from bitqnn.engines.smt_faults import SmtFaultEngine
from bitqnn.fault_prune import fault_bounds, group_bounds, screen
from bitqnn.faults import (
    SCOPES,
    BitSelection,
    FaultModel,
    FaultQuery,
    ParamSelection,
    apply_flips,
    candidates,
    patterns,
    weighted_layers,
)
from bitqnn.outcome import Verdict
from bitqnn.properties import robust_violation, targeted_violation
from bitqnn.qnn import QNN, Dense, Storage, execute, run_layer
from bitqnn.query import Box, Query
from bitqnn.symbolic import _ANALYSES, SymbolicAnalysis
from tests.netgen import REQUANT_KINDS, random_dense_qnn

SIZES = ((2, 3, 2), (3, 3, 2), (2, 4, 3), (3, 2, 3))
BROAD_SIZES = (*SIZES, (2, 3, 3, 2), (3, 2, 2, 3))
TIMEOUT = 60.0


def in_storage(rng: np.random.Generator, values: np.ndarray, broad: bool) -> tuple[np.ndarray, Storage]:
    """A random storage for a parameter tensor, and the values moved to the nearest it holds.

    Narrow: signed, 4-6 bits, weights unshifted (netgen's weights, in [-8, 7], fit as they
    are). Broad: 3-8 bits, unsigned too (negative values clip to 0), weights shifted too."""
    bits = int(rng.integers(3, 9) if broad else rng.integers(4, 7))
    signed = not broad or rng.random() < 0.7
    shift = int(rng.integers(0, 3)) if rng.random() < 0.5 else 0
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    stored = np.clip(np.round(values / (1 << shift)).astype(np.int64), lo, hi)
    return stored << shift, Storage(bits, signed, shift)


def stored_network(rng: np.random.Generator, kind: str, broad: bool) -> QNN:
    """A random dense network whose weights and biases sit in small storage."""
    sizes = (BROAD_SIZES if broad else SIZES)[int(rng.integers(len(BROAD_SIZES if broad else SIZES)))]
    qnn = random_dense_qnn(rng, kind, sizes)
    while not all(isinstance(layer, Dense) for layer in qnn.layers):
        qnn = random_dense_qnn(rng, kind, sizes)
    layers = []
    for layer in qnn.layers:
        weight, weight_storage = layer.weight, Storage(int(rng.integers(4, 7)), True)
        if broad:
            weight, weight_storage = in_storage(rng, layer.weight.astype(np.float64), broad)
        bias, bias_storage = in_storage(rng, layer.bias.astype(np.float64), broad)
        layers.append(replace(layer, weight=weight, bias=bias, weight_storage=weight_storage,
                              bias_storage=bias_storage))
    return replace(qnn, layers=tuple(layers), _cache={})


def random_bits(rng: np.random.Generator) -> BitSelection:
    kind = ("all", "sign", "top", "list")[int(rng.integers(4))]
    if kind == "top":
        return BitSelection("top", count=int(rng.integers(1, 4)))
    if kind == "list":
        return BitSelection("list", positions=tuple(int(b) for b in rng.choice(3, int(rng.integers(1, 3)),
                                                                                 replace=False)))
    return BitSelection(kind)


def random_selection(rng: np.random.Generator, qnn: QNN, layer: int, kind: str) -> ParamSelection:
    """All of a layer's weights or biases, or a few listed ones."""
    dense = qnn.layers[weighted_layers(qnn)[layer]]
    shape = (dense.bias if kind == "biases" else dense.weight).shape
    if rng.random() < 0.4:
        return ParamSelection(layer, kind)
    count = int(rng.integers(1, 4))
    indices = {tuple(int(rng.integers(n)) for n in shape) for _ in range(count)}
    return ParamSelection(layer, kind, tuple(sorted(indices)))


def random_model(rng: np.random.Generator, qnn: QNN, broad: bool) -> FaultModel:
    layers = len(weighted_layers(qnn))
    picks = [(int(rng.integers(layers)), ("weights", "biases")[int(rng.integers(2))])
             for _ in range(int(rng.integers(1, 4 if broad else 3)))]
    params = tuple(random_selection(rng, qnn, layer, kind) for layer, kind in dict.fromkeys(picks))
    k = int(rng.integers(1, 4 if broad else 3))
    return FaultModel(k, params, random_bits(rng), SCOPES[int(rng.integers(2))])


EVALUATIONS = 300_000  # brute force's work per broad case: flip patterns times box points


def random_fault_query(seed: int, broad: bool = False) -> FaultQuery:
    """A robustness query at a point or on a small box, under a random fault model.

    Broad cases also have wider boxes, deeper networks, k = 3 and targeted properties;
    their fault models are redrawn until brute force stays cheap."""
    rng = np.random.default_rng([seed, 2024 + broad])
    qnn = stored_network(rng, REQUANT_KINDS[seed % len(REQUANT_KINDS)], broad)
    center = rng.integers(qnn.input_lo, qnn.input_hi + 1, qnn.input_size)
    radius = np.where(rng.random(qnn.input_size) < 0.5, int(rng.integers(0, 3 if broad else 2)), 0)
    box = Box(np.maximum(center - radius, qnn.input_lo), np.minimum(center + radius, qnn.input_hi))
    label = int(np.argmax(execute(qnn, center)[0]))
    tiebreak = "strict" if rng.random() < 0.5 else "lowest_index"
    violation = robust_violation(label, qnn.output_size, tiebreak)
    if broad and rng.random() < 0.3:
        violation = targeted_violation(int(rng.integers(qnn.output_size)), qnn.output_size, tiebreak)
    query = Query(qnn, box, violation, label=f"seed {seed}")
    model = random_model(rng, qnn, broad)
    while broad and (pattern_count(candidates(qnn, model), model) + 1) * box.points > EVALUATIONS:
        model = random_model(rng, qnn, broad)
    return FaultQuery(query, model)


def check_counterexample(fq: FaultQuery, outcome: FaultOutcome) -> None:
    """The flips are allowed, and the witness violates the property on the faulty network."""
    model, query = fq.model, fq.query
    flips = outcome.flips
    assert len(flips) <= model.k and len(set(flips)) == len(flips), outcome
    cands = candidates(query.network, model)
    allowed = {cands.flip(j) for j in range(len(cands))}
    assert set(flips) <= allowed, outcome
    if model.scope == "one":
        assert len({(f.layer, f.kind, f.index) for f in flips}) <= 1, outcome
    assert query.region.contains(outcome.witness), outcome
    outputs = execute(apply_flips(query.network, flips), outcome.witness)
    assert query.violation.holds(outputs)[0], (outcome, outputs)


@dataclass
class Tally:
    proved: int = 0
    falsified: int = 0
    clean_falsified: int = 0
    by_screening: int = 0  # auto's answers settled by screening or decided per faulty network after it


def agreed_outcomes(fq: FaultQuery, engines: list, seed: int) -> list[FaultOutcome]:
    """Every engine decides, all alike, and every counterexample replays."""
    outcomes = [engine.solve(fq, TIMEOUT) for engine in engines]
    verdicts = [o.verdict for o in outcomes]
    assert Verdict.UNKNOWN not in verdicts, (seed, [(o.engine, o.reason) for o in outcomes])
    assert len(set(verdicts)) == 1, (seed, fq.model, [(o.engine, o.verdict.value) for o in outcomes])
    for outcome in outcomes:
        if outcome.verdict is Verdict.FALSIFIED:
            check_counterexample(fq, outcome)
    return outcomes


def cross_check(seeds: range, broad: bool) -> Tally:
    engines = [FaultEnumerationEngine(), SmtFaultEngine(), FaultEngine("cpsat"), FaultEngine("milp"),
               FaultEngine("auto")]
    tally = Tally()
    for seed in seeds:
        outcomes = agreed_outcomes(random_fault_query(seed, broad), engines, seed)
        tally.by_screening += "screened_sets" in outcomes[-1].stats
        if outcomes[0].verdict is Verdict.PROVED:
            tally.proved += 1
        elif outcomes[0].flips:
            tally.falsified += 1
        else:
            tally.clean_falsified += 1
    return tally


def test_fault_engines_agree_with_brute_force():
    tally = cross_check(range(200), broad=False)
    assert tally.proved >= 50 and tally.falsified >= 50 and tally.clean_falsified >= 5, tally
    assert tally.by_screening >= 50, tally


@pytest.mark.slow
def test_fault_engines_agree_with_brute_force_broadly():
    """Unsigned and shifted storage, 3-8 bits, three layers, k = 3, targeted properties."""
    tally = cross_check(range(800), broad=True)
    assert tally.proved >= 200 and tally.falsified >= 200, tally


def test_point_queries_skip_the_symbolic_pass_and_agree_with_brute_force(monkeypatch):
    """At one input under scope "one" the point search is complete, so `auto` goes there
    after the cheap pruning tests alone (the symbolic pass had cost a 3x100 MNIST query its
    whole 120 s, where the search falsifies it in 2 s)."""

    def symbolic_pass(*args, **kwargs):
        raise AssertionError("the symbolic pruning pass ran on a point query")

    monkeypatch.setattr("bitqnn.fault_prune._symbolic_pass", symbolic_pass)
    engines = [FaultEnumerationEngine(), FaultEngine("auto")]
    tally = Tally()
    for seed in range(120):
        fq = random_fault_query(seed)
        query = fq.query
        point = replace(query, region=Box(query.region.lo, query.region.lo.copy()))
        outcomes = agreed_outcomes(FaultQuery(point, replace(fq.model, scope="one")), engines, seed)
        if outcomes[0].verdict is Verdict.PROVED:
            tally.proved += 1
        else:
            tally.falsified += 1
    assert tally.proved >= 20 and tally.falsified >= 20, tally


def assert_bounds_contain(qnn: QNN, bounds, cands, model: FaultModel, points: np.ndarray, case) -> None:
    for rows in [(), *patterns(cands, model)]:
        faulty = apply_flips(qnn, tuple(cands.flip(j) for j in rows))
        values = points
        for index, layer_bounds in enumerate(bounds.layers):
            values, acc = run_layer(faulty, index, values)
            assert np.all(values >= layer_bounds.lo) and np.all(values <= layer_bounds.hi), (case, rows, index)
            fixed = layer_bounds.lo == layer_bounds.hi
            assert np.all((acc >= layer_bounds.acc_lo) | fixed) and np.all((acc <= layer_bounds.acc_hi) | fixed), \
                (case, rows, index)


def test_fault_bounds_contain_every_faulty_network():
    """fault_bounds is what the exact encodings take their widths and constants from; on
    symbolic clean bounds its difference propagation is what is tested, and per neuron
    `group_bounds` adds the shifted analysis."""
    groups = 0
    for seed in range(60):
        fq = random_fault_query(seed)
        query, model = fq.query, fq.model
        qnn = query.network
        cands = candidates(qnn, model)
        points = box_points(query.region.lo, query.region.hi, 0, query.region.points)
        analysis = SymbolicAnalysis(qnn, query.region)
        for clean in (interval_bounds(qnn, query.region), analysis.bounds):
            bounds, _ = fault_bounds(qnn, clean, cands, model.k)
            assert_bounds_contain(qnn, bounds, cands, model, points, seed)
        for layer, neuron in sorted(set(zip(cands.layer.tolist(), cands.neuron.tolist(), strict=True))):
            part = cands.subset(np.flatnonzero((cands.layer == layer) & (cands.neuron == neuron)))
            narrowed = group_bounds(analysis, part, model.k)
            assert_bounds_contain(qnn, narrowed, part, model, points, (seed, layer, neuron))
            groups += 1
    assert groups >= 50, groups


def test_screening_settles_only_flip_sets_without_a_counterexample():
    """`screen` drops a flip set when its faulty network's own symbolic bounds prove the
    property; brute force over the box must then find no violation on that network, and
    every row of a set it keeps open must stay a candidate."""
    settled = open_count = 0
    for seed in range(80):
        fq = random_fault_query(seed)
        query, model = fq.query, fq.model
        cands = candidates(query.network, model)
        screening = screen(query, cands, model, limit=10_000, deadline=math.inf)
        assert screening is not None and screening.screened == pattern_count(cands, model), seed
        points = box_points(query.region.lo, query.region.hi, 0, query.region.points)
        open_queries = dict(zip(screening.open_sets, screening.open_queries, strict=True))
        for rows in patterns(cands, model):
            outputs = execute(apply_flips(query.network, tuple(cands.flip(j) for j in rows)), points)
            if rows in open_queries:
                open_count += 1
                assert screening.keep[list(rows)].all(), (seed, rows)
                faulty = open_queries[rows]  # the set's own network, with the analysis screening made
                assert np.array_equal(execute(faulty.network, points), outputs), (seed, rows)
                assert faulty in _ANALYSES, (seed, rows)
                continue
            settled += 1
            assert not query.violation.holds(outputs).any(), (seed, rows)
    assert settled >= 100 and open_count >= 100, (settled, open_count)


def test_screening_gives_up_on_many_flip_sets_and_keeps_unreached_ones():
    fq = random_fault_query(3)
    query, model = fq.query, fq.model
    cands = candidates(query.network, model)
    count = pattern_count(cands, model)
    assert screen(query, cands, model, limit=count - 1, deadline=math.inf) is None
    late = screen(query, cands, model, limit=count, deadline=-math.inf)
    assert late is not None and late.screened == 0 and late.keep.all()
    assert len(late.open_sets) == count

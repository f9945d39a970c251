"""The MILP error engine and the DRA against enumeration, on tiny quantized networks.

Every grid point of each box is run through `ErrorQuery.errors`, so the true largest error
is known exactly. The engine's witnesses must replay, its bounds must hold, and both
verdicts must come out right on either side of the true maximum: 0 disagreements.
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import cache

import numpy as np
import pytest

import bitqnn.engines.error_milp as error_milp
import bitqnn.error_verify as error_verify
from bitqnn.dra import MODES, DifferentialAnalysis
from bitqnn.engines.enumeration import box_points
from bitqnn.engines.error_milp import ErrorMilpEngine
from bitqnn.engines.stop import StopSignal
from bitqnn.error_query import ErrorOutcome, ErrorQuery
from bitqnn.error_verify import verify_error
from bitqnn.floatnet import RELU, FloatDense, FloatNetwork
from bitqnn.outcome import Verdict
from bitqnn.qnn import Dense
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point
from bitqnn.query import Box
from bitqnn.requant import FixedPointMultiplierRequant, Float32Requant, OutputStage, Rounding, ShiftRequant

SHIFT_CASES = 60  # all four roundings, 1 to 3 hidden layers, Q in {3, 4, 6, 8}
TABLE_CASES = 6  # the same networks with multiplier requantization (exact step tables)
TIMEOUT = 30.0  # per call; a tiny model never comes near it


def slack(value: float) -> float:
    """float64 round-off between batched and single-point forward passes (BLAS may sum a
    batch in another order), which separates a replay from the enumerated maximum."""
    return 1e-12 * (1.0 + abs(value))


def random_float_net(rng: np.random.Generator, name: str) -> FloatNetwork:
    n_in = int(rng.integers(2, 5))
    sizes = [n_in] + [int(rng.integers(2, 6)) for _ in range(int(rng.integers(1, 4)))] + [int(rng.integers(1, 4))]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight = rng.normal(0.0, 1.5 / np.sqrt(a), (b, a))
        layers.append(FloatDense(weight, rng.normal(0.0, 0.3, b), RELU if i < len(sizes) - 2 else None))
    return FloatNetwork((n_in,), tuple(layers), name=name)


def random_query(seed: int, activation_bits: tuple[int, ...] = (3, 4, 6, 8)) -> ErrorQuery:
    """A float MLP, its fixed-point QNN and a box of at most a few thousand grid points.

    The input has only 3 to 5 bits, so a box spans a large part of the real input range
    and many neurons are unstable on it (a box of 8-bit pixels would fix nearly all)."""
    rng = np.random.default_rng(7000 + seed)
    net = random_float_net(rng, f"random {seed}")
    bits = int(rng.integers(3, 6))
    config = FixedPointConfig(weights=int(rng.choice([3, 4, 6, 8])), activations=int(rng.choice(activation_bits)),
                              input_bits=bits, input_frac=bits, rounding=list(Rounding)[seed % 4],
                              output="accumulator" if rng.random() < 0.5 else "requantized")
    n_in = net.input_shape[0]
    qnn = quantize_fixed_point(net, config, rng.random((200, n_in)))
    top = 2**bits - 1
    center = rng.integers(0, top + 1, n_in)
    radius = rng.integers(1, int(max(2, 3000 ** (1 / n_in) // 2)) + 1, n_in)
    box = Box(np.clip(center - radius, 0, top).astype(np.int64), np.clip(center + radius, 0, top).astype(np.int64))
    outputs = tuple(range(net.layers[-1].weight.shape[0]))
    return ErrorQuery(net, qnn, box, 0.0, outputs, label=f"random {seed} {config.rounding.value}")


def with_multiplier_requant(query: ErrorQuery, kind: str) -> ErrorQuery:
    """The same QNN with every shift stage restated as a real multiplier 2**-shift, so the
    engine has to fall back on the exact step table (float32: half even; tflite: half away)."""
    layers = []
    for layer in query.qnn.layers:
        stage = layer.output
        if isinstance(layer, Dense) and isinstance(stage.requant, ShiftRequant):
            real = np.exp2(-np.asarray(stage.requant.shift, dtype=np.float64))
            requant = (Float32Requant(real.astype(np.float32)) if kind == "float32"
                       else FixedPointMultiplierRequant.from_real(real))
            layer = dataclasses.replace(layer, output=OutputStage(requant, stage.zero, stage.lo, stage.hi))
        layers.append(layer)
    qnn = dataclasses.replace(query.qnn, layers=tuple(layers), _cache={})
    return dataclasses.replace(query, qnn=qnn, label=f"{query.label} as {kind}")


@cache
def case(index: int) -> tuple[ErrorQuery, np.ndarray]:
    """Query number `index` and its errors at every grid point of the box."""
    if index < SHIFT_CASES:
        query = random_query(index)
    else:
        offset = index - SHIFT_CASES
        # few activation bits keep the step tables (one binary per step) small
        query = with_multiplier_requant(random_query(100 + offset, (3, 4)), ("float32", "tflite")[offset % 2])
    points = box_points(query.region.lo, query.region.hi, 0, query.region.points)
    return query, query.errors(points)


ALL_CASES = range(SHIFT_CASES + TABLE_CASES)


def replayed(query: ErrorQuery, witness: np.ndarray) -> float:
    assert query.region.contains(witness)
    return float(np.abs(query.errors(witness)).max())


def engine_for(index: int) -> ErrorMilpEngine:
    """Half the cases without random sampling, so the MILP itself must find the witnesses."""
    return ErrorMilpEngine(samples=0 if index % 2 else 64)


def test_cases_cover_what_they_claim():
    queries = [case(i)[0] for i in ALL_CASES]
    assert {q.label.split()[2] for q in queries[:SHIFT_CASES]} == {r.value for r in Rounding}
    depths = {len(q.float_net.layers) - 1 for q in queries}
    assert depths == {1, 2, 3}
    assert max(q.region.points for q in queries) <= 5000
    unstable = sum(int(np.sum(~DifferentialAnalysis(q.float_net, q.qnn, q.region).q_bounds.layers[0].stable))
                   for q in queries)
    assert unstable > len(queries)  # the boxes are wide enough to leave neurons undecided


def test_dra_bounds_every_grid_point():
    failures = []
    for index in ALL_CASES:
        query, errors = case(index)
        analysis = DifferentialAnalysis(query.float_net, query.qnn, query.region)
        for mode in MODES:
            bounds = analysis.run(mode)
            if np.any(errors.min(axis=0) < bounds.lo) or np.any(errors.max(axis=0) > bounds.hi):
                failures.append((query.label, mode))
    assert failures == []


def test_maximize_brackets_the_true_maximum():
    failures = []
    for index in ALL_CASES:
        query, errors = case(index)
        true_max = float(np.abs(errors).max())
        outcome = engine_for(index).maximize(query, TIMEOUT)
        ok = (outcome.witness is not None and replayed(query, outcome.witness) == outcome.witnessed
              and outcome.witnessed <= true_max + slack(true_max) and true_max <= outcome.proven
              and outcome.proven - true_max <= 1e-4 * (1 + true_max))  # complete on tiny models
        if not ok:
            failures.append((query.label, true_max, outcome.witnessed, outcome.proven, outcome.reason))
        assert "tolerance" in outcome.stats and "margin" in outcome.reason
    assert failures == []


def test_solve_decides_eps_on_both_sides_of_the_true_maximum():
    failures = []
    for index in ALL_CASES:
        query, errors = case(index)
        true_max = float(np.abs(errors).max())
        engine = engine_for(index)
        if true_max > 1e-6:
            below = engine.solve(dataclasses.replace(query, eps=true_max * 0.9), TIMEOUT)
            if (below.verdict is not Verdict.FALSIFIED or below.witness is None
                    or not replayed(query, below.witness) > true_max * 0.9):
                failures.append((query.label, "below", below.verdict, below.reason))
        above = engine.solve(dataclasses.replace(query, eps=true_max * 1.1 + 1e-6), TIMEOUT)
        if above.verdict is not Verdict.PROVED or not true_max <= above.proven:
            failures.append((query.label, "above", above.verdict, above.reason))
    assert failures == []


def test_multiplier_stages_use_step_tables():
    query, _ = case(SHIFT_CASES)
    outcome = ErrorMilpEngine(samples=0).maximize(query, TIMEOUT)
    assert outcome.stats["model"]["binaries"] > 0


def test_unpaired_networks_are_unknown_with_a_reason():
    query, _ = case(0)
    bare = dataclasses.replace(query, qnn=dataclasses.replace(query.qnn, layer_scales=None, _cache={}))
    outcome = ErrorMilpEngine().solve(bare, TIMEOUT)
    assert outcome.verdict is Verdict.UNKNOWN and "scale" in outcome.reason


@pytest.mark.parametrize("eps_factor", [0.5, 2.0])
def test_no_false_verdict_at_a_short_timeout(eps_factor):
    """Whatever a tight budget cuts short, a verdict given must still be right."""
    for index in range(0, SHIFT_CASES, 8):
        query, errors = case(index)
        true_max = float(np.abs(errors).max())
        eps = true_max * eps_factor
        outcome = ErrorMilpEngine(samples=0).solve(dataclasses.replace(query, eps=eps), 0.05)
        if outcome.verdict is Verdict.PROVED:
            assert true_max <= eps
        if outcome.verdict is Verdict.FALSIFIED:
            assert replayed(query, outcome.witness) > eps


def test_scip_settings_avoid_the_varbound_fault():
    """Five rows from a half-away rounding model on which SCIP 10.0.0 with default settings
    returns an "optimal" point that violates a row by 7 units (y=4, q=-3, optimum 0.0723).
    The engine's settings must give the true optimum, y=2 and q=-4 at 0.0607."""
    from ortools.linear_solver import pywraplp

    from bitqnn.engines.error_milp import SCIP_SETTINGS

    solver = pywraplp.Solver.CreateSolver("SCIP")
    y, f = solver.IntVar(0, 5, "y"), solver.NumVar(0, 0.0763746, "f")
    a, q = solver.IntVar(-322, -207, "a"), solver.IntVar(-5, -3, "q")
    g = solver.NumVar(-0.314433, -0.205473, "g")
    for lo, hi, terms in [(-0.00939619, 0.0286454, [(y, 0.015625), (f, -1)]), (-322, -322, [(a, 1), (y, -23)]),
                          (-31, 32, [(a, 1), (q, -64)]), (-0.314433, -0.314433, [(g, 1), (f, -1.42665)]),
                          (0.0458, 0.0722597, [(q, 0.0625), (g, -1)])]:
        row = solver.Constraint(lo, hi)
        for var, coef in terms:
            row.SetCoefficient(var, coef)
    solver.Maximize(0.0625 * q - g)
    solver.SetSolverSpecificParametersAsString(SCIP_SETTINGS)
    assert solver.Solve() == pywraplp.Solver.OPTIMAL
    assert solver.VerifySolution(1e-6, False)
    assert (y.solution_value(), q.solution_value()) == (2, -4)
    assert abs(solver.Objective().Value() - 0.0607171474) < 1e-8


def test_tiny_coefficients_widen_the_row_instead_of_vanishing():
    """y = 5e-10 * x with x up to 1e7 reaches 5e-3. SCIP deletes the coefficient (below its
    zero tolerance) and answers 0, a bound below a reachable value; `Milp.row` moves the
    term into the row's bounds, and `set_row_bounds` keeps it there (y <= 5e-3 + hi)."""
    from ortools.linear_solver import pywraplp

    from bitqnn.encode.milp import Milp, var_of

    raw = pywraplp.Solver.CreateSolver("SCIP")
    x, y = raw.IntVar(0, 10**7, "x"), raw.NumVar(-1.0, 1.0, "y")
    row = raw.Constraint(0.0, 0.0)
    row.SetCoefficient(y, 1.0)
    row.SetCoefficient(x, -5e-10)
    raw.Maximize(y)
    assert raw.Solve() == pywraplp.Solver.OPTIMAL
    assert raw.Objective().Value() < 1e-9  # the hazard: true maximum 5e-3

    milp = Milp(threads=1)
    x, y = milp.int_var(0, 10**7, "x"), milp.real_var(-1.0, 1.0, "y")
    constraint = milp.row(y.add(x, -5e-10), 0.0, 0.0)
    solver = milp.solver
    solver.Maximize(var_of(y))
    for lo, hi in ((0.0, 0.0), (-1e-3, 1e-3)):
        milp.set_row_bounds(constraint, lo, hi)
        assert solver.Solve() == pywraplp.Solver.OPTIMAL
        # sound, and no wider than the moved term's range
        assert 5e-3 + hi - 1e-12 <= solver.Objective().Value() <= 5e-3 + hi + 1e-12
        assert solver.VerifySolution(1e-9, False)


def test_a_pair_cut_short_gets_the_time_the_others_leave():
    """Rounds: a pair whose run ends at its time limit is run again once the others settle."""
    query, errors = case(2)  # the DRA leaves 6 (output, sign) pairs open at this eps
    eps = float(np.abs(errors).max()) * 1.1 + 1e-6
    runs: list[tuple[int, int]] = []

    class FirstRunCutShort(ErrorMilpEngine):
        def _decide_pair(self, setup, pair, deadline, left, eps):
            runs.append((pair.output, pair.sign))
            if len(runs) == 1:
                return True  # as if SCIP had stopped at its time limit without an answer
            return super()._decide_pair(setup, pair, deadline, left, eps)

    outcome = FirstRunCutShort(samples=0).solve(dataclasses.replace(query, eps=eps), TIMEOUT)
    assert outcome.verdict is Verdict.PROVED
    assert len(runs) == 7 and runs.count(runs[0]) == 2 and runs[-1] == runs[0]


def test_maximize_gives_the_time_to_the_pairs_that_can_beat_the_witness(monkeypatch):
    """A pair whose DRA bound is below the error already replayed is never run, so it must
    not hold back a share of the time either."""
    engine = ErrorMilpEngine(samples=64)
    chosen = None
    for index in range(SHIFT_CASES):
        query, _ = case(index)
        setup = engine.prepare(query, None, None)
        contenders = sum(p.dra_bound > setup.search.witnessed for p in setup.pairs)
        if 0 < contenders < len(setup.pairs):
            chosen = query, contenders, len(setup.pairs)
            break
    assert chosen is not None
    query, contenders, pairs = chosen
    given: list[float] = []
    run = error_milp.run_milp

    def spy(model, pair, seconds, extra, hint, stop=None):
        given.append(seconds)
        return run(model, pair, seconds, extra, hint, stop)

    monkeypatch.setattr(error_milp, "run_milp", spy)
    timeout = 20.0
    engine.maximize(query, timeout)
    assert given and given[0] >= (timeout - 2.0) / contenders > timeout / pairs


def test_a_stopped_solve_ends_at_once_and_claims_nothing():
    query, errors = case(0)
    stop = StopSignal()
    stop.stop()
    # at eps = the true maximum no point falsifies and only a MILP run could prove
    outcome = ErrorMilpEngine(samples=0).solve(dataclasses.replace(query, eps=float(np.abs(errors).max())),
                                               TIMEOUT, stop=stop)
    assert outcome.verdict is Verdict.UNKNOWN and outcome.seconds < 5
    bound = ErrorMilpEngine(samples=0).maximize(query, TIMEOUT, stop=stop)
    assert bound.seconds < 5 and bound.proven >= float(np.abs(errors).max())  # the DRA's bounds, kept


@pytest.mark.parametrize("eps_factor", [0.9, 1.1])
def test_the_auto_pipeline_decides_both_sides_of_the_true_maximum(eps_factor):
    """DRA, the climb, then the MILP beside the annealing: the verdicts that reach a user."""
    failures = []
    for index in range(0, SHIFT_CASES, 6):
        query, errors = case(index)
        true_max = float(np.abs(errors).max())
        eps = true_max * eps_factor + (1e-6 if eps_factor > 1 else 0.0)
        outcome = verify_error(dataclasses.replace(query, eps=eps), TIMEOUT, search_budget=0.0)
        expected = Verdict.PROVED if eps_factor > 1 else Verdict.FALSIFIED
        if true_max > 1e-6 and outcome.verdict is not expected:
            failures.append((query.label, outcome.verdict, outcome.reason))
        if outcome.verdict is Verdict.FALSIFIED and not replayed(query, outcome.witness) > eps:
            failures.append((query.label, "witness", outcome.witnessed))
    assert failures == []


def test_annealing_falsifies_what_the_milp_leaves_open(monkeypatch):
    """A MILP that finds nothing until stopped: the annealed point decides, replayed."""
    query, errors = case(5)
    true_max = float(np.abs(errors).max())
    waited = []

    def idle_solve(self, query, timeout, known=None, stop=None):
        deadline = time.perf_counter() + timeout
        while not stop.stopped and time.perf_counter() < deadline:
            time.sleep(0.01)
        waited.append(stop.stopped)
        return ErrorOutcome(Verdict.UNKNOWN, "milp", 0.0, "idle")

    monkeypatch.setattr(ErrorMilpEngine, "solve", idle_solve)
    start = query.region.lo
    monkeypatch.setattr(error_verify, "search_error",
                        lambda query, budget: (start, float(np.abs(query.errors(start)).max())))
    eps = (float(np.abs(query.errors(start)).max()) + true_max) / 2
    assert float(np.abs(query.errors(start)).max()) < eps < true_max
    outcome = verify_error(dataclasses.replace(query, eps=eps), TIMEOUT)
    assert outcome.verdict is Verdict.FALSIFIED and outcome.engine == "auto:anneal"
    assert replayed(query, outcome.witness) == outcome.witnessed > eps
    assert waited == [True]  # the annealing's answer stopped the MILP


def test_annealing_goes_on_past_a_milp_that_gives_up(monkeypatch):
    """An UNKNOWN returned early (as `yield_at_root` does) leaves the annealing its time."""
    query, errors = case(5)
    true_max = float(np.abs(errors).max())
    monkeypatch.setattr(ErrorMilpEngine, "solve",
                        lambda self, query, timeout, known=None, stop=None:
                        ErrorOutcome(Verdict.UNKNOWN, "milp", 0.0, "gave up"))
    start = query.region.lo
    monkeypatch.setattr(error_verify, "search_error",
                        lambda query, budget: (start, float(np.abs(query.errors(start)).max())))
    eps = (float(np.abs(query.errors(start)).max()) + true_max) / 2
    outcome = verify_error(dataclasses.replace(query, eps=eps), TIMEOUT)
    assert outcome.verdict is Verdict.FALSIFIED and outcome.engine == "auto:anneal"
    assert replayed(query, outcome.witness) == outcome.witnessed > eps


@pytest.mark.parametrize("yields", [True, False])
def test_solve_yields_when_scip_cannot_finish_a_root(monkeypatch, yields):
    """Every run ends at its time limit on the root node: with `yield_at_root` the first
    such run ends `solve`, UNKNOWN and claiming nothing; without it every open pair runs."""
    query, errors = case(2)  # the DRA leaves 6 (output, sign) pairs open at this eps
    eps = float(np.abs(errors).max()) * 1.1 + 1e-6
    runs = []

    def root_only(model, pair, seconds, extra, hint, stop=None):
        runs.append((pair.output, pair.sign))
        return error_milp.RunResult(error_milp.pywraplp.Solver.NOT_SOLVED, math.inf, None, [], seconds, 1)

    monkeypatch.setattr(error_milp, "run_milp", root_only)
    outcome = ErrorMilpEngine(samples=0, yield_at_root=yields).solve(dataclasses.replace(query, eps=eps), 2.0)
    assert outcome.verdict is Verdict.UNKNOWN and outcome.proven is None
    if yields:
        assert len(runs) == 1 and "root node" in outcome.reason
    else:
        assert len(runs) >= 6 and len(set(runs)) == 6

"""The bit-vector engine against brute force, and its arithmetic against requant.py, value by value."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import z3

from bitqnn.encode.bitvector import export_smtlib, tflite_requant
from bitqnn.encode.bv_signal import Signal, rebias, round_shift, signed_width, variable
from bitqnn.engines import smt
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.smt import YICES, SmtEngine
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, Dense, execute, wrap_to_bits
from bitqnn.query import Box, LinearAtom, Query, Violation
from bitqnn.replay import ReplayMismatch, check_on_executor
from bitqnn.requant import (
    FixedPointMultiplierRequant,
    OutputStage,
    Rounding,
    ShiftRequant,
)
from tests.netgen import REQUANT_KINDS, random_conv_qnn, random_dense_qnn, random_query

ENUMERATION = EnumerationEngine()


def agree(query: Query, engine: SmtEngine) -> Verdict:
    """Both engines decide the query the same way; a FALSIFIED witness has already replayed in solve."""
    mine, truth = engine.solve(query, 30.0), ENUMERATION.solve(query, 30.0)
    assert mine.verdict is truth.verdict, (query.label, mine, truth)
    return mine.verdict


@pytest.mark.parametrize("kind", REQUANT_KINDS)
@pytest.mark.parametrize("family", ["dense", "deep", "conv"])
def test_matches_enumeration(kind: str, family: str) -> None:
    engine = SmtEngine()
    verdicts = []
    for seed in range(14):
        rng = np.random.default_rng([seed, REQUANT_KINDS.index(kind), len(family)])
        if family == "conv":
            qnn = random_conv_qnn(rng, kind)
        else:
            qnn = random_dense_qnn(rng, kind, (3, 4, 3) if family == "dense" else (3, 5, 4, 3))
        radius = 1 if family == "conv" else 1 + seed % 2  # conv boxes have 9 dimensions: 3**9 points
        verdicts.append(agree(random_query(rng, qnn, radius=radius), engine))
    assert Verdict.UNKNOWN not in verdicts


@pytest.mark.parametrize("kind", REQUANT_KINDS)
def test_arith_style_matches_enumeration(kind: str) -> None:
    engine = SmtEngine(style="arith")
    for seed in range(8):
        rng = np.random.default_rng([seed, REQUANT_KINDS.index(kind), 99])
        qnn = random_conv_qnn(rng, kind) if seed % 2 else random_dense_qnn(rng, kind, (3, 5, 4, 3))
        agree(random_query(rng, qnn, radius=1 + seed % 2), engine)


needs_yices = pytest.mark.skipif(shutil.which(YICES) is None, reason="yices-smt2 not installed")


@needs_yices
@pytest.mark.parametrize("kind", REQUANT_KINDS)
def test_yices_backend_matches_enumeration(kind: str) -> None:
    engine = SmtEngine(backend="yices")
    for seed in range(10):
        rng = np.random.default_rng([seed, REQUANT_KINDS.index(kind), 17])
        qnn = random_conv_qnn(rng, kind) if seed % 3 == 0 else random_dense_qnn(rng, kind, (3, 5, 4, 3))
        assert agree(random_query(rng, qnn, radius=1 + seed % 3 // 2), engine) is not Verdict.UNKNOWN


@pytest.mark.parametrize("backend", ["z3", pytest.param("yices", marks=needs_yices)])
def test_an_input_the_formula_ignores_still_decodes(backend: str) -> None:
    # x1 has weight 0 and a box of 4 points (no range constraint), so no assertion mentions it
    layer = Dense(np.array([[3, 0], [-2, 0]]), np.zeros(1, np.int64), 0, np.array([0, 1]), OutputStage(None))
    qnn = QNN((2,), -8, 8, (layer,))
    query = Query(qnn, Box(np.array([0, 2]), np.array([3, 5])), Violation(((LinearAtom(((0, 1), (1, -1)), 10),),)))
    outcome = SmtEngine(backend=backend).solve(query, 10.0)
    assert outcome.verdict is Verdict.FALSIFIED and query.region.contains(outcome.witness)


def test_missing_yices_is_unknown(monkeypatch) -> None:
    monkeypatch.setattr(smt, "YICES", "no-such-solver-binary")
    rng = np.random.default_rng(2)
    outcome = SmtEngine(backend="yices").solve(random_query(rng, random_dense_qnn(rng, "floor")), 10.0)
    assert outcome.verdict is Verdict.UNKNOWN and "not found" in outcome.reason


@pytest.mark.slow
@pytest.mark.parametrize("kind", REQUANT_KINDS)
def test_arith_and_steps_agree_beyond_enumeration(kind: str) -> None:
    """Two independent requant encodings on boxes of 7**6 points; z3 may give up on the odd one."""
    decided = 0
    for seed in range(3):
        rng = np.random.default_rng([seed, REQUANT_KINDS.index(kind), 5])
        query = random_query(rng, random_dense_qnn(rng, kind, (6, 8, 6, 4)), radius=3)
        verdicts = {SmtEngine(style).solve(query, 20.0).verdict for style in ("steps", "arith")} - {Verdict.UNKNOWN}
        assert len(verdicts) <= 1
        decided += len(verdicts)
    assert decided == 3


def wrapping(qnn: QNN, bits: int, overflow: str = "wrap") -> QNN:
    return dataclasses.replace(qnn, accumulator_bits=bits, overflow=overflow, _cache={})


def test_wraparound_decides_a_property_that_exact_sums_never_violate() -> None:
    # acc = 10*x0 + 7*x1 + 3 is never negative, but in 8 bits it wraps past 127
    layer = Dense(np.array([[10, 7]]), np.zeros(1, np.int64), 0, np.array([3]), OutputStage(None))
    qnn = QNN((2,), 0, 12, (layer,), accumulator_bits=8, overflow="wrap")
    negative = Violation(((LinearAtom(((0, -1),), 100),),))  # y0 <= -100
    query = Query(qnn, Box(np.zeros(2, np.int64), np.full(2, 12)), negative)
    outcome = SmtEngine().solve(query, 10.0)
    assert outcome.verdict is Verdict.FALSIFIED
    assert agree(query, SmtEngine()) is Verdict.FALSIFIED
    exact = 10 * outcome.witness[0] + 7 * outcome.witness[1] + 3
    assert exact > 127 and execute(qnn, outcome.witness)[0, 0] == wrap_to_bits(np.array(exact), 8)


@pytest.mark.parametrize("kind", REQUANT_KINDS)
def test_wrapping_networks_match_enumeration(kind: str) -> None:
    wrapped = 0
    for seed in range(8):
        rng = np.random.default_rng([seed, REQUANT_KINDS.index(kind), 7])
        base = random_dense_qnn(rng, kind, (3, 5, 3))
        query = random_query(rng, base, radius=2)
        qnn = wrapping(base, bits=6)
        query = Query(qnn, query.region, query.violation, query.label)
        points = np.stack(np.meshgrid(*[np.arange(lo, hi + 1) for lo, hi in zip(query.region.lo, query.region.hi)]),
                          axis=-1).reshape(-1, qnn.input_size)
        exact = points @ qnn.linear_form(0).matrix.T + qnn.linear_form(0).offset
        wrapped += bool(np.any((exact < -32) | (exact > 31)))
        agree(query, SmtEngine())
    assert wrapped >= 4  # the accumulators really do wrap in most of these boxes


def test_possible_overflow_under_error_policy_is_unknown() -> None:
    rng = np.random.default_rng(5)
    base = random_dense_qnn(rng, "floor")
    query = random_query(rng, base, radius=4)
    query = Query(wrapping(base, bits=6, overflow="error"), query.region, query.violation)
    outcome = SmtEngine().solve(query, 10.0)
    assert outcome.verdict is Verdict.UNKNOWN
    assert outcome.reason.startswith("accumulator overflow not excluded at layer 0 neuron")


def test_exported_smtlib_parses_back_with_the_same_answer(tmp_path) -> None:
    answers = set()
    for seed in range(10):
        rng = np.random.default_rng([seed, 42])
        kind = REQUANT_KINDS[seed % len(REQUANT_KINDS)]
        qnn = random_conv_qnn(rng, kind) if seed % 3 == 0 else random_dense_qnn(rng, kind)
        query = random_query(rng, qnn, radius=2)
        path = tmp_path / f"q{seed}.smt2"
        export_smtlib(query, path)
        text = path.read_text()
        assert "(set-logic QF_BV)" in text and text.rstrip().endswith("(exit)")
        solver = z3.Solver()
        solver.add(z3.parse_smt2_file(str(path)))
        expected = {Verdict.FALSIFIED: z3.sat, Verdict.PROVED: z3.unsat}[SmtEngine().solve(query, 30.0).verdict]
        assert solver.check() == expected
        answers.add(str(expected))
    assert answers == {"sat", "unsat"}


def test_exported_smtlib_is_read_by_bitwuzla(tmp_path) -> None:
    """Bitwuzla is stricter than z3 (e.g. `and` needs two operands): the export is plain SMT-LIB2."""
    bitwuzla = pytest.importorskip("bitwuzla")
    for seed in range(4):
        rng = np.random.default_rng([seed, 43])
        query = random_query(rng, random_dense_qnn(rng, REQUANT_KINDS[seed]), radius=2)
        export_smtlib(query, tmp_path / "q.smt2")
        parser = bitwuzla.Parser(bitwuzla.TermManager(), bitwuzla.Options())
        parser.parse(str(tmp_path / "q.smt2"), parse_only=True)
        expected = {Verdict.FALSIFIED: "sat", Verdict.PROVED: "unsat"}[SmtEngine().solve(query, 30.0).verdict]
        assert str(parser.bitwuzla().check_sat()) == expected


def test_zero_timeout_is_unknown() -> None:
    rng = np.random.default_rng(3)
    query = random_query(rng, random_dense_qnn(rng, "float32"))
    outcome = SmtEngine().solve(query, 0.0)
    assert outcome.verdict is Verdict.UNKNOWN and outcome.reason == "timeout"


def test_replay_rejects_a_witness_that_does_not_violate() -> None:
    rng = np.random.default_rng(11)
    query = random_query(rng, random_dense_qnn(rng, "half_even"), radius=0)
    center = query.region.lo
    with pytest.raises(ReplayMismatch):
        check_on_executor(query, center, "test")  # the label is the argmax at the centre, and the box is that point
    with pytest.raises(ReplayMismatch):
        check_on_executor(query, center - 10, "test")


# --- the arithmetic encodings, value by value against requant.py ---------------------------------


def evaluate(result: Signal, source: Signal, x: int) -> int:
    """result's value when the input variable `source` equals x."""
    var = source.term
    term = z3.substitute(result.term, (var, z3.BitVecVal(x - source.bias, var.size(), var.ctx)))
    return z3.simplify(term).as_signed_long() + result.bias


def sample_points(rng: np.random.Generator, stage: OutputStage, lo: int, hi: int) -> list[int]:
    """Both ends, random points, and both sides of some steps in a random window."""
    points = {lo, hi, *rng.integers(lo, hi + 1, 20).tolist()}
    start = int(rng.integers(lo, hi + 1))
    starts, _ = stage.steps(0, start, min(hi, start + 3000))
    starts = rng.choice(starts, min(len(starts), 15), replace=False)
    points |= {int(s) + d for s in starts for d in (-1, 0) if lo <= s + d <= hi}
    return sorted(points)


def check_against_reference(rng: np.random.Generator, requant, build, lo: int, hi: int) -> None:
    ctx = z3.Context()
    source, _ = variable("a", lo, hi, ctx)
    result = build(rebias(source, int(rng.integers(lo - 50, hi + 50))))  # any bias must do
    points = sample_points(rng, OutputStage(requant), lo, hi)
    expected = requant(np.array(points), np.zeros(len(points), np.int64))
    got = [evaluate(result, source, x) for x in points]
    assert got == expected.tolist()
    assert result.lo <= min(got) and max(got) <= result.hi


@pytest.mark.parametrize("rounding", list(Rounding))
def test_round_shift_matches_shift_round(rounding: Rounding) -> None:
    rng = np.random.default_rng(list(Rounding).index(rounding))
    for _ in range(25):
        shift = int(rng.integers(-2, 9))
        magnitude = 1 << int(rng.integers(3, 16))
        lo = int(rng.integers(-magnitude, magnitude))
        hi = lo + int(rng.integers(1, magnitude))
        check_against_reference(rng, ShiftRequant(np.array([shift]), rounding),
                                lambda a, s=shift: round_shift(a, s, rounding), lo, hi)


def test_tflite_requant_matches_reference_including_saturation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        requant = FixedPointMultiplierRequant.from_real(np.array([10.0 ** rng.uniform(-5, 1.5)]))
        m, shift = int(requant.multiplier[0]), int(requant.shift[0])
        magnitude = 1 << int(rng.integers(4, 33))
        lo = int(rng.integers(-magnitude, magnitude))
        hi = lo + int(rng.integers(1, magnitude))
        check_against_reference(rng, requant, lambda a, m=m, s=shift: tflite_requant(a, m, s), lo, hi)


def test_gemmlowp_nudge_and_truncation_is_one_floor_shift() -> None:
    """The identity tflite_requant rests on, proved for every product of two int32 values."""
    ab = z3.BitVec("ab", 64)
    nudge = z3.If(ab >= 0, z3.BitVecVal(1 << 30, 64), z3.BitVecVal(1 - (1 << 30), 64))
    gemmlowp = (ab + nudge) / z3.BitVecVal(1 << 31, 64)  # bvsdiv truncates toward zero, as C does
    claim = z3.Implies(z3.And(ab >= -(1 << 62), ab <= 1 << 62), gemmlowp == (ab + (1 << 30)) >> 31)
    solver = z3.Solver()
    solver.add(z3.Not(claim))
    assert solver.check() == z3.unsat


def test_signed_width() -> None:
    assert [signed_width(lo, hi) for lo, hi in [(0, 0), (-1, 0), (0, 1), (-128, 127), (-129, 0), (0, 128)]] == \
        [1, 1, 2, 8, 9, 9]

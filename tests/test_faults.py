"""Bit flips on stored parameters: the storage semantics, `apply_flips`, and small fault queries.

`Storage.flip` is what every fault engine's notion of a flipped value rests on (brute
force through `apply_flips`, CP-SAT through `bit_delta`), so it is checked here against
an independent reading of two's-complement and unsigned bit patterns.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from bitqnn.engines.fault_enumeration import FaultEnumerationEngine, pattern_count
from bitqnn.engines.faults import FaultEngine
from bitqnn.engines.smt_faults import SmtFaultEngine
from bitqnn.faults import (
    BitSelection,
    FaultModel,
    FaultModelError,
    FaultQuery,
    Flip,
    ParamSelection,
    apply_flips,
    candidates,
    patterns,
)
from bitqnn.outcome import Verdict
from bitqnn.properties import robust_violation
from bitqnn.qnn import QNN, Dense, Lookup, Storage, execute
from bitqnn.query import Box, Query
from bitqnn.requant import OutputStage, Rounding, ShiftRequant


def pattern_value(pattern: int, bits: int, signed: bool) -> int:
    """The integer a bit pattern stands for: bit b weighs 2**b, a sign bit -2**(bits-1)."""
    return pattern - (1 << bits) if signed and pattern >> (bits - 1) & 1 else pattern


def test_flipping_the_sign_bit_of_a_signed_value():
    storage = Storage(4, True)
    assert int(storage.flip(np.array(5), 0b1000)) == -3  # 0101 -> 1101
    assert int(storage.flip(np.array(-3), 0b1000)) == 5
    assert int(storage.flip(np.array(0), 0b1000)) == -8
    assert int(storage.bit_delta(np.array(5), 3)) == -8
    assert int(storage.bit_delta(np.array(-8), 3)) == 8
    assert int(storage.flip(np.array(-1), 0b1111)) == 0


def test_flipping_an_unsigned_value_never_goes_negative():
    storage = Storage(4, False)
    assert int(storage.flip(np.array(5), 0b1000)) == 13
    assert int(storage.flip(np.array(13), 0b1000)) == 5
    assert int(storage.flip(np.array(0), 0b1111)) == 15
    assert int(storage.bit_delta(np.array(13), 3)) == -8
    assert int(storage.bit_delta(np.array(6), 0)) == 1


def test_a_shifted_storage_flips_bits_of_the_stored_value():
    storage = Storage(4, True, shift=2)  # the layer uses stored * 4
    assert storage.stored(np.array(20)) == 5
    assert int(storage.flip(np.array(20), 0b1000)) == -12  # stored 5 -> -3
    assert int(storage.bit_delta(np.array(20), 3)) == -32  # -2**(3 + 2)
    assert int(storage.bit_delta(np.array(20), 0)) == -4  # stored 5 -> 4
    assert int(storage.bit_delta(np.array(16), 0)) == 4


def test_flip_acts_elementwise():
    storage = Storage(3, True)
    assert storage.flip(np.array([0, 1, -4, 3]), 0b100).tolist() == [-4, -3, 0, -1]
    assert storage.flip(np.array([0, 1, -4, 3]), np.array([1, 1, 2, 0])).tolist() == [1, 0, -2, 3]


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shift", [0, 1, 3])
def test_flip_matches_the_bit_pattern_and_deltas_add_up(signed: bool, shift: int):
    """Every representable value and mask: XOR of the pattern, and the sum of the
    single-bit deltas (what the integer encoding adds) is the whole change."""
    for bits in range(1, 7):
        storage = Storage(bits, signed, shift)
        values = range(-(1 << (bits - 1)), 1 << (bits - 1)) if signed else range(1 << bits)
        for value, mask in itertools.product(values, range(1 << bits)):
            used = np.array(value << shift)
            expected = pattern_value((value & ((1 << bits) - 1)) ^ mask, bits, signed) << shift
            assert int(storage.flip(used, mask)) == expected, (bits, value, mask)
            deltas = sum(int(storage.bit_delta(used, b)) for b in range(bits) if mask >> b & 1)
            assert int(used) + deltas == expected, (bits, value, mask)


def two_layer_network() -> QNN:
    identity = OutputStage(None)
    first = Dense(np.array([[1, -2], [3, 0]]), np.zeros(1, np.int64), 0, np.array([4, -8]), identity,
                  weight_storage=Storage(4, True), bias_storage=Storage(4, True, shift=1))
    second = Dense(np.array([[1, 1]]), np.zeros(1, np.int64), 0, np.array([0]), identity,
                   weight_storage=Storage(3, False), bias_storage=Storage(4, True))
    return QNN((2,), -4, 4, (first, second), name="two-layer")


def test_apply_flips_changes_only_the_flipped_parameters():
    qnn = two_layer_network()
    x = np.array([1, 2])
    assert execute(qnn, x).tolist() == [[1 - 4 + 4 + 3 - 8]]
    faulty = apply_flips(qnn, (Flip(0, "weights", (0, 1), 3), Flip(0, "biases", (1,), 0)))
    assert faulty.layers[0].weight.tolist() == [[1, 6], [3, 0]]  # -2 = 1110 -> 0110
    assert faulty.layers[0].bias.tolist() == [4, -6]  # stored -4 -> -3, used << 1
    assert faulty.layers[1] is qnn.layers[1]
    assert execute(faulty, x).tolist() == [[1 + 12 + 4 + 3 - 6]]
    assert qnn.layers[0].weight.tolist() == [[1, -2], [3, 0]] and qnn.layers[0].bias.tolist() == [4, -8]
    assert execute(qnn, x).tolist() == [[-4]]  # the original's cached linear forms are untouched


def test_flips_of_one_parameter_combine_and_cancel():
    qnn = two_layer_network()
    both = apply_flips(qnn, (Flip(1, "weights", (0, 0), 0), Flip(1, "weights", (0, 0), 2)))
    assert both.layers[1].weight.tolist() == [[4, 1]]  # unsigned 001 -> 100
    twice = apply_flips(qnn, (Flip(1, "weights", (0, 1), 1), Flip(1, "weights", (0, 1), 1)))
    assert twice.layers[1].weight.tolist() == [[1, 1]]


def test_candidates_list_each_bit_with_its_delta():
    qnn = two_layer_network()
    model = FaultModel(2, (ParamSelection(0, "biases"), ParamSelection(1, "weights", ((0, 1),))),
                       BitSelection("top", count=2), "one")
    cands = candidates(qnn, model)
    rows = {(cands.flip(j), int(cands.delta[j])) for j in range(len(cands))}
    expected = {(Flip(0, "biases", (n,), b), int(qnn.layers[0].bias_storage.bit_delta(qnn.layers[0].bias[n], b)))
                for n in range(2) for b in (2, 3)}
    expected |= {(Flip(1, "weights", (0, 1), b), 1 << b) for b in (1, 2)}
    assert len(cands) == 6 and rows == expected
    assert cands.parameters == 3
    assert pattern_count(cands, model) == len(list(patterns(cands, model))) == 3 * 3
    anywhere = FaultModel(2, model.params, model.bits, "any")
    assert pattern_count(cands, anywhere) == len(list(patterns(cands, anywhere))) == 6 + 15


def point_query(qnn: QNN, x: np.ndarray, label: int) -> Query:
    return Query(qnn, Box(x, x), robust_violation(label, qnn.output_size, "strict"))


def test_small_fault_queries_on_every_engine():
    qnn = two_layer_network()
    second = Dense(np.array([[1, 0], [0, 1]]), np.zeros(1, np.int64), 0, np.array([0, 0]), OutputStage(None),
                   weight_storage=Storage(3, False), bias_storage=Storage(4, True))
    qnn = QNN((2,), -4, 4, (qnn.layers[0], second))
    query = point_query(qnn, np.array([2, 0]), 0)  # outputs [6, -2]
    engines = [FaultEnumerationEngine(), SmtFaultEngine(), FaultEngine("cpsat"), FaultEngine("milp"),
               FaultEngine("auto")]
    low_bits = FaultQuery(query, FaultModel(1, (ParamSelection(0, "biases"),), BitSelection("list", positions=(0,))))
    sign_bits = FaultQuery(query, FaultModel(1, (ParamSelection(0, "weights"),), BitSelection("sign")))
    lavish = FaultQuery(query, FaultModel(4, (ParamSelection(0, "weights", ((0, 0),)),), BitSelection("sign")))
    for engine in engines:
        assert engine.solve(low_bits, 10).verdict is Verdict.PROVED, engine.name
        for fq in (sign_bits, lavish):  # a budget beyond the candidate bits allows them all
            outcome = engine.solve(fq, 10)
            assert outcome.verdict is Verdict.FALSIFIED, engine.name
            assert outcome.flips == (Flip(0, "weights", (0, 0), 3),), engine.name  # 1 -> -7 is the only way


def test_enumeration_refuses_above_its_limit():
    qnn = two_layer_network()
    fq = FaultQuery(point_query(qnn, np.array([0, 0]), 0), FaultModel(2, (ParamSelection(0, "weights"),)))
    outcome = FaultEnumerationEngine(limit=100).solve(fq, 10)
    assert outcome.verdict is Verdict.UNKNOWN and "limit" in outcome.reason


def wrapping_network(overflow: str) -> QNN:
    """y0 = clamp(7 * x + 90, -8, 7) in an 8-bit accumulator, y1 = 0: a saturated neuron
    whose bias flip (90 -> 122) lets the accumulator wrap at x = 4 (150 -> -106)."""
    stage = OutputStage(ShiftRequant(np.array([0]), Rounding.FLOOR), 0, -8, 7)
    dense = Dense(np.array([[7], [0]]), np.zeros(1, np.int64), 0, np.array([90, 0]), stage,
                  weight_storage=Storage(4, True), bias_storage=Storage(8, True))
    return QNN((1,), -4, 4, (dense,), accumulator_bits=8, overflow=overflow)


def wrapping_query(overflow: str) -> FaultQuery:
    model = FaultModel(1, (ParamSelection(0, "biases", ((0,),)),), BitSelection("list", positions=(5,)))
    return FaultQuery(point_query(wrapping_network(overflow), np.array([4]), 0), model)


def test_brute_force_and_bitvector_engines_see_a_flip_wrap_the_accumulator():
    wrap, error = wrapping_query("wrap"), wrapping_query("error")
    outcome = FaultEnumerationEngine().solve(wrap, 10)
    assert outcome.verdict is Verdict.FALSIFIED and outcome.flips == (Flip(0, "biases", (0,), 5),)
    assert "overflow" in FaultEnumerationEngine().solve(error, 10).reason
    for fq in (wrap, error):  # accumulators are encoded without wraparound, so it must refuse
        outcome = SmtFaultEngine().solve(fq, 10)
        assert outcome.verdict is Verdict.UNKNOWN and "overflow" in outcome.reason


@pytest.mark.parametrize("overflow", ["wrap", "error"])
def test_fault_engine_does_not_prove_a_query_whose_flip_overflows(overflow: str):
    assert FaultEngine("cpsat").solve(wrapping_query(overflow), 10).verdict is not Verdict.PROVED


@pytest.mark.parametrize("overflow", ["wrap", "error"])
def test_point_search_counterexamples_replay_when_a_flip_overflows(overflow: str):
    """y0 = 3 * x in an 8-bit accumulator at x = 4: the sign flip 3 -> -125 gives -500,
    which wraps to 12 (still robust) or is an overflow error, never a counterexample."""
    dense = Dense(np.array([[3], [0]]), np.zeros(1, np.int64), 0, np.array([0, 0]), OutputStage(None),
                  weight_storage=Storage(8, True), bias_storage=Storage(8, True))
    qnn = QNN((1,), -4, 4, (dense,), accumulator_bits=8, overflow=overflow)
    model = FaultModel(1, (ParamSelection(0, "weights", ((0, 0),)),), BitSelection("sign"), "one")
    assert FaultEngine("auto").solve(FaultQuery(point_query(qnn, np.array([4]), 0), model), 10).verdict \
        is not Verdict.FALSIFIED


def lookup_network() -> QNN:
    """Dense -> Lookup (a non-monotone table) -> Dense: fault bounds stop at the lookup."""
    identity = OutputStage(None, 0, -4, 4)
    first = Dense(np.array([[1], [-1]]), np.zeros(1, np.int64), 0, np.array([0, 1]), identity,
                  weight_storage=Storage(4, True), bias_storage=Storage(4, True))
    table = Lookup(np.array([[0, 3, -2, 1, 4, -1, 2, 0, 1]]), -4)
    second = Dense(np.eye(2, dtype=np.int64), np.zeros(1, np.int64), 0, np.zeros(2, np.int64), OutputStage(None),
                   weight_storage=Storage(4, True), bias_storage=Storage(4, True))
    return QNN((1,), -2, 2, (first, table, second))


def lookup_query() -> FaultQuery:
    qnn = lookup_network()
    x = np.array([1])
    label = int(np.argmax(execute(qnn, x)[0]))
    model = FaultModel(1, (ParamSelection(0, "biases"),), BitSelection("top", count=2))
    return FaultQuery(point_query(qnn, x, label), model)


def test_flips_before_a_lookup_are_refused_by_the_bitvector_engine():
    fq = lookup_query()
    assert FaultEnumerationEngine().solve(fq, 10).verdict is not Verdict.UNKNOWN
    outcome = SmtFaultEngine().solve(fq, 10)
    assert outcome.verdict is Verdict.UNKNOWN and "dense" in outcome.reason


def test_fault_engine_answers_flips_before_a_lookup():
    fq = lookup_query()
    truth = FaultEnumerationEngine().solve(fq, 10).verdict
    assert FaultEngine("cpsat").solve(fq, 10).verdict in (truth, Verdict.UNKNOWN)


def test_candidates_reject_values_their_storage_cannot_hold():
    """Bias 5 stored with shift 1 reads back as 4: two flips of it then differ by 1
    between delta sums (CP-SAT) and XOR (apply_flips)."""
    dense = Dense(np.array([[0], [0]]), np.zeros(1, np.int64), 0, np.array([5, 14]), OutputStage(None),
                  weight_storage=Storage(4, True), bias_storage=Storage(4, True, shift=1))
    qnn = QNN((1,), -4, 4, (dense,))
    with pytest.raises(FaultModelError):
        candidates(qnn, FaultModel(2, (ParamSelection(0, "biases"),)))


def test_pruning_stops_at_the_deadline():
    """The augmented analyses add up on wide networks, so they must honour the query's time."""
    from bitqnn.fault_perturb import PruningTimeout, harmless_rows
    from bitqnn.onnx_io import load_qnn
    from bitqnn.symbolic import SymbolicAnalysis

    qnn = load_qnn(str(Path(__file__).resolve().parents[1] / "examples/digits/digits_q8.onnx"))
    cands = candidates(qnn, FaultModel(1, (ParamSelection(0, "weights", ((0, 0),)),)))
    x = np.zeros(qnn.input_size, dtype=np.int64) + qnn.input_lo
    query = point_query(qnn, x, int(np.argmax(execute(qnn, x)[0])))
    analysis = SymbolicAnalysis(qnn, query.region)
    moves = np.abs(cands.delta)
    with pytest.raises(PruningTimeout):
        harmless_rows(analysis, query.violation, cands, -moves, moves, True, deadline=0.0)

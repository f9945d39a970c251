"""Review tests for synthesis, fixed-point export and imported-model error bounds.

Tests that pass hold the code to its claims on random cases (every search attempt against
enumeration, export round trips against onnxruntime, error bounds against enumerated
errors, malformed specs rejected as input errors). Tests marked xfail(strict=True) each
reproduce one bug found in review; the reason says what goes wrong.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bitqnn.answer import Answerer
from bitqnn.cli import main
from bitqnn.dra import analysis_for
from bitqnn.error_query import ErrorQuery
from bitqnn.floatnet import RELU, FloatDense, FloatNetwork
from bitqnn.onnx_io import export_fixed_point, load_model
from bitqnn.pairing import pair_layers
from bitqnn.qnn import execute
from bitqnn.quantize import FixedPointConfig, LayerConfig, quantize_fixed_point
from bitqnn.query import Box, Query
from bitqnn.requant import Rounding
from bitqnn.spec import ast, compile_file
from bitqnn.spec.compile import Obligation
from bitqnn.synthesis.certificate import certificate_spec
from bitqnn.synthesis.search import Synthesizer, refutes

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


# ---- helpers -------------------------------------------------------------------------------

def write_float_mlp(rng: np.random.Generator, path: Path, sizes=(3, 4, 3), hidden_relu: bool = True) -> None:
    """A float Gemm MLP as ONNX (float32 weights, so the float import reads back the same numbers)."""
    nodes, inits, source = [], [], "input"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        inits += [numpy_helper.from_array(rng.normal(0, 0.7, (n_out, n_in)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.2, n_out).astype(np.float32), f"b{i}")]
        last = i == len(sizes) - 2
        out = "output" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [source, f"w{i}", f"b{i}"], [out], transB=1))
        source = out
        if not last and hidden_relu:
            nodes.append(helper.make_node("Relu", [out], [f"a{i}"]))
            source = f"a{i}"
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", sizes[0]])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", sizes[-1]])]
    graph = helper.make_graph(nodes, "mlp", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def grid_points(box: Box) -> np.ndarray:
    return np.array(list(itertools.product(*(range(a, b + 1) for a, b in zip(box.lo, box.hi, strict=True)))),
                    dtype=np.int64)


def truly_holds(obligation) -> bool:
    """A plain, targeted, linear or error keep, decided by enumerating its whole box."""
    query = obligation.query
    if isinstance(query, ErrorQuery):
        return float(np.abs(query.errors(grid_points(query.region))).max()) <= query.eps
    assert isinstance(query, Query)
    return not query.violation.holds(execute(query.network, grid_points(query.region))).any()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def synth_statement(block: str, fixed: str, after: str = " with timeout=10, budget=30") -> str:
    return f"synthesize q from f with fixed({fixed}) {{\n  {block}\n}}{after}\n"


# ---- the search against enumeration, through the spec ------------------------------------

SEARCH_CASES = [
    # (seed, rounding, output, search lines, keeps)
    (3, "half_up", "accumulator", ["search weights in [2, 3, 5], activations in [2, 4, 6]",
                                   "search layer 0 weights in [3, 6]", "minimize memory"],
     ["keep robust(q, linf(x0, 1))", "keep robust(q, linf(x1, 2))"]),
    (23, "floor", "requantized", ["search weights in [2, 4, 6], activations in [3, 5]",
                                 "search layer 1 weight_frac in [2, 3]", "minimize bitops"],
     ["keep robust(q, linf(x0, 2))", "keep targeted(q, linf(x2, 1), target=1)",
      "keep q(linf(x1, 1)): y[0] > y[1] or y[2] > y[1]"]),
    (9, "half_even", "accumulator", ["search weights in [2, 3, 4, 6], activations in [2, 3, 4]",
                                     "search layer 0 activation_frac in [2, 3]"],
     ["keep robust(q, linf(x0, 1))", "keep error(f, q, linf(x2, 1)) <= 0.35"]),
    (11, "half_away", "accumulator", ["search weights in [3, 4, 5], activations in [3, 4, 5]", "minimize memory"],
     ["keep robust(q, linf(x1, 1))", "keep error(f, q, linf(x0, 1)) <= 0.6"]),
]


@pytest.mark.parametrize(("seed", "rounding", "output", "searches", "keeps"), SEARCH_CASES,
                         ids=[f"seed{case[0]}-{case[1]}-{case[2]}" for case in SEARCH_CASES])
def test_every_attempt_agrees_with_enumeration(tmp_path, seed, rounding, output, searches, keeps):
    """Through `synthesize` statements: each attempt's status is the enumerated truth, and no stored
    counterexample `refutes` a candidate that keeps the property."""
    rng = np.random.default_rng(seed)
    write_float_mlp(rng, tmp_path / "f.onnx")
    np.savez(tmp_path / "cal.npz", x=rng.uniform(0, 1.8, (64, 3)).astype(np.float32))
    points = "".join(f"let x{k} = [{', '.join(f'{v:.3f}' for v in rng.uniform(0.2, 1.7, 3))}]\n" for k in range(3))
    fixed = f'input=8, input_frac=7, rounding={rounding}, output={output}, calibrate="cal.npz"'
    engine = "auto" if any("error(" in k for k in keeps) else "cpsat"
    text = 'network f = onnx "f.onnx"\n' + points + synth_statement(
        "\n  ".join(searches + keeps), fixed, f" with timeout=20, budget=120, engine={engine}")
    (tmp_path / "s.qspec").write_text(text)
    (spec,) = compile_file(tmp_path / "s.qspec").syntheses
    problem = spec.problem
    result = Synthesizer(problem, Answerer(1), log=lambda line: None).run()
    compiled = {a.candidate: problem.obligations_for(problem.quantize(a.candidate)) for a in result.attempts}
    for attempt in result.attempts:
        truth = [truly_holds(o) for o in compiled[attempt.candidate]]
        if attempt.status == "invalid":  # certified, then refused by the exporter: the truth must be "keeps"
            assert "cannot be delivered" in attempt.reason and all(truth), attempt.reason
            continue
        assert attempt.status in ("certified", "refuted"), attempt.reason
        assert (attempt.status == "certified") == all(truth), (attempt.candidate.describe(), attempt.reason, truth)
    witnesses = [(index, np.asarray(r.witness, dtype=np.int64)) for a in result.attempts
                 for index, r in a.results.items() if r.witness is not None]
    for attempt in result.attempts:
        for index, witness in witnesses:
            obligation = compiled[attempt.candidate][index]
            if refutes(obligation, witness):
                assert not truly_holds(obligation), (attempt.candidate.describe(), index)
    if result.best is not None:
        assert result.stopped == "local minimum"


def test_fraction_bit_choices_are_offered_in_the_written_order():
    """Width moves are the neighbours; the other fraction choices of the same widths are the
    variants an attempt falls back on, in the order the spec lists them."""
    from bitqnn.synthesis.space import Candidate, LayerChoices, LayerSetting, SearchSpace

    space = SearchSpace((LayerChoices((4, 8), (8,), (6, 0, 3)), LayerChoices((8,), ())))
    start = Candidate((LayerSetting(8, 8, 6), LayerSetting(8, None)))
    assert {c.describe() for c in space.neighbours(start)} == {"w4a8(wf6) w8"}
    assert [c.describe() for c in space.fraction_variants(start)] == ["w8a8(wf0) w8", "w8a8(wf3) w8"]


def test_another_fraction_choice_is_tried_when_the_first_fails(tmp_path, capsys):
    text = (f'network f = onnx "{DIGITS / "digits_small.onnx"}"\n'
            f'let x0 = sample "{DIGITS / "test.npz"}" index 0\n'
            + synth_statement("search weights in [8], weight_frac in [0, 6]\n  keep robust(q, linf(x0, 1))",
                              "input=8, input_frac=8, output=accumulator"))
    (tmp_path / "s.qspec").write_text(text)
    (spec,) = compile_file(tmp_path / "s.qspec").syntheses
    result = Synthesizer(spec.problem, Answerer(1), log=lambda line: None).run()
    tried = {a.candidate.describe() for a in result.attempts}
    assert "w8a8(wf6) w8(wf6)" in tried or result.best is not None, tried


def test_refutes_counts_negative_errors():
    identity = FloatNetwork((2,), (FloatDense(np.array([[1.0, 0.0]]), np.array([0.0])),))
    qnn = quantize_fixed_point(identity, FixedPointConfig(input_bits=4, input_frac=2, weights=2, weight_frac=0,
                                                          output="accumulator"))  # QNN(x) = x exactly
    shifted = FloatNetwork((2,), (FloatDense(np.array([[1.0, 0.0]]), np.array([1.0])),))  # f(x) = x + 1
    query = ErrorQuery(shifted, qnn, Box(np.zeros(2, np.int64), np.full(2, 15, np.int64)), 0.5, (0,))
    witness = np.array([3, 0])
    assert float(query.errors(witness)[0, 0]) == pytest.approx(-1.0)  # |error| = 1 > eps
    keep = Obligation("error", ast.Pos("t", 1, 1), "error", query, {"timeout": 1.0, "engine": "auto"})
    assert refutes(keep, witness)


# ---- bad input through the command line -----------------------------------------------------

HEADER = (f'network f = onnx "{DIGITS / "digits_small.onnx"}"\n'
          f'let x0 = sample "{DIGITS / "test.npz"}" index 0\n')


@pytest.mark.parametrize(("block", "fixed", "after", "message"), [
    ("search weight_frac in [1.5]\n  keep robust(q, linf(x0, 1))", "", "", "whole numbers"),
    ("search weights in []\n  keep robust(q, linf(x0, 1))", "", "", "expected a number"),
    ("search layer -1 weights in [4]\n  keep robust(q, linf(x0, 1))", "", "", "no layer -1"),
    ("keep error(f, q, linf(x0, 1)) <= 1", "", " with engine=cpsat", "does not bound errors"),
    ("keep backdoor_free(q, x0, target=4, size=[2, 2], values=[0, 255], image=[8, 8], at=[0, 0]) "
     "under bitflips(k=1, params=q.weights)", "", "", "not to backdoor_free"),
    ("keep robust(q, linf(x0, 1))", "inputs=8", "", "unknown option 'inputs'"),
    ("keep robust(q, linf(x0, 1))", 'calibrate="nope.npz"', "", "no such file"),
    ("keep robust(f, linf(x0, 1))", "", "", "is a float network"),
])
def test_malformed_synthesize_statements_are_input_errors(tmp_path, capsys, block, fixed, after, message):
    path = tmp_path / "s.qspec"
    path.write_text(HEADER + synth_statement(block, fixed, after))
    for command in (["check", str(path)], ["synthesize", str(path), "--out", str(tmp_path / "out")]):
        code, err = run_cli(command, capsys)
        assert code == 2 and message in err and "Traceback" not in err, (command, code, err)
        assert not (tmp_path / "out").exists()


def test_a_bitflip_keep_with_a_non_fault_engine_is_an_input_error(tmp_path, capsys):
    path = tmp_path / "s.qspec"
    path.write_text(HEADER + synth_statement("search weights in [8]\n  keep robust(q, linf(x0, 1)) under "
                                             "bitflips(k=1, params=q.weights) with engine=bounds", ""))
    code, err = run_cli(["check", str(path)], capsys)
    assert code == 2, err
    code, err = run_cli(["synthesize", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2, err


def test_unexportable_widths_are_refused_before_the_search(tmp_path, capsys):
    path = tmp_path / "s.qspec"
    path.write_text(HEADER + synth_statement("search weights in [12], activations in [12]\n"
                                             "  keep robust(q, linf(x0, 1))", "input=8, input_frac=8"))
    code, err = run_cli(["synthesize", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2, err


# ---- export round trips ----------------------------------------------------------------------

def random_float_mlp(rng: np.random.Generator) -> FloatNetwork:
    sizes = [int(rng.integers(2, 7)) for _ in range(int(rng.integers(2, 5)))]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        r = rng.random()
        clip = (RELU if r < 0.5 else (0.0, float(rng.uniform(0.5, 3))) if r < 0.7
                else (-float(rng.uniform(0.3, 2)), float(rng.uniform(0.3, 2))) if r < 0.85 else None)
        layers.append(FloatDense(rng.normal(0, 0.8, (n_out, n_in)), rng.normal(0, 0.3, n_out),
                                 None if i == len(sizes) - 2 and r < 0.6 else clip))
    return FloatNetwork((sizes[0],), tuple(layers), name="random")


def onnxruntime_real(path: Path, input_scale: float, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": (x * input_scale).astype(np.float32)})[0].astype(np.float64)


@pytest.mark.parametrize("seed", range(24))
def test_random_fixed_point_export_round_trips(tmp_path, seed):
    """QNN == onnxruntime == re-imported QNN on the QNN's inputs, and re-imported == onnxruntime on the
    whole stored input range; narrow and signed activations, every rounding, either output."""
    rng = np.random.default_rng(1000 + seed)
    net = random_float_mlp(rng)
    input_bits = int(rng.integers(2, 9))
    signed = bool(rng.random() < 0.3)
    roundings = [Rounding.HALF_UP, Rounding.HALF_EVEN, Rounding.FLOOR, Rounding.HALF_AWAY]
    config = FixedPointConfig(
        weights=int(rng.integers(2, 9)), activations=int(rng.integers(2, 8)), input_bits=input_bits,
        input_frac=int(rng.integers(max(input_bits - 3, 0), input_bits + 1)), input_signed=signed,
        rounding=roundings[seed % 4], output=("accumulator", "requantized")[seed // 4 % 2],
        layers=tuple(LayerConfig(i, weights=int(rng.integers(2, 9)), activations=int(rng.integers(2, 8)))
                     for i in range(len(net.layers)) if rng.random() < 0.5))
    calibration = rng.uniform(-1.0 if signed else 0.0, 1.0, (100, net.input_shape[0]))
    qnn = quantize_fixed_point(net, config, calibration)
    path = tmp_path / "m.onnx"
    try:
        export_fixed_point(qnn, path)
    except ValueError as error:  # ExportError: refused, and nothing written
        assert "half_away" in str(error) and not path.exists()
        return
    n = qnn.input_size
    x = np.concatenate([rng.integers(qnn.input_lo, qnn.input_hi + 1, (2000, n)),
                        np.where(rng.random((500, n)) < 0.5, qnn.input_lo, qnn.input_hi)])
    expected = execute(qnn, x)
    assert np.array_equal(onnxruntime_real(path, qnn.input_scale, x), qnn.dequantize_output(expected))
    imported = load_model(path)
    assert np.array_equal(execute(imported, x), expected)
    wide = np.concatenate([rng.integers(imported.input_lo, imported.input_hi + 1, (2000, n)),
                           np.where(rng.random((500, n)) < 0.5, imported.input_lo, imported.input_hi)])
    assert np.array_equal(onnxruntime_real(path, imported.input_scale, wide),
                          imported.dequantize_output(execute(imported, wide)).astype(np.float32))


def linear_hidden_qnn(activations: int, rounding: Rounding = Rounding.HALF_EVEN, seed: int = 0):
    """A float MLP whose hidden layer has no activation function: signed hidden activations."""
    rng = np.random.default_rng(seed)
    net = FloatNetwork((4,), (FloatDense(rng.normal(0, 0.7, (5, 4)), rng.normal(0, 0.2, 5)),
                              FloatDense(rng.normal(0, 0.7, (3, 5)), rng.normal(0, 0.2, 3))), name="linear hidden")
    config = FixedPointConfig(weights=6, activations=activations, input_bits=8, input_frac=8, rounding=rounding,
                              output="accumulator")
    return net, quantize_fixed_point(net, config, rng.uniform(0, 1, (50, 4)))


def test_a_signed_8_bit_hidden_layer_before_an_accumulator_output_reimports(tmp_path):
    _, qnn = linear_hidden_qnn(8)
    path = tmp_path / "m.onnx"
    export_fixed_point(qnn, path)
    x = np.random.default_rng(0).integers(0, 256, (2000, 4))
    assert np.array_equal(onnxruntime_real(path, qnn.input_scale, x), qnn.dequantize_output(execute(qnn, x)))
    assert np.array_equal(execute(load_model(path), x), execute(qnn, x))


def test_a_narrow_signed_hidden_layer_reimports_pairable(tmp_path):
    net, qnn = linear_hidden_qnn(6)
    path = tmp_path / "m.onnx"
    export_fixed_point(qnn, path)
    imported = load_model(path)
    x = np.random.default_rng(0).integers(0, 256, (2000, 4))
    assert np.array_equal(execute(imported, x), execute(qnn, x))
    pair_layers(net, imported)


# ---- error bounds of imported models ---------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_imported_model_error_bounds_cover_enumerated_errors(tmp_path, seed):
    """DRA (every mode) on the re-imported model of an exported QNN, half-up ones included (float
    tails, _chain_affine), bounds the enumerated error on a box and on the whole input range."""
    rng = np.random.default_rng(2000 + seed)
    hidden = int(rng.integers(2, 6))
    clip = RELU if seed % 3 else (0.0, 1.5)
    net = FloatNetwork((2,), (FloatDense(rng.normal(0, 0.8, (hidden, 2)), rng.normal(0, 0.3, hidden), clip),
                              FloatDense(rng.normal(0, 0.8, (3, hidden)), rng.normal(0, 0.3, 3),
                                         RELU if seed % 4 == 0 else None)))
    rounding = (Rounding.HALF_UP, Rounding.FLOOR, Rounding.HALF_EVEN, Rounding.HALF_UP)[seed % 4]
    config = FixedPointConfig(weights=int(rng.integers(3, 9)), activations=int(rng.integers(3, 9)), input_bits=6,
                              input_frac=int(rng.integers(4, 7)), rounding=rounding,
                              output=("accumulator", "requantized")[seed % 2])
    qnn = quantize_fixed_point(net, config, rng.uniform(0, 1, (64, 2)))
    export_fixed_point(qnn, tmp_path / "m.onnx")
    imported = load_model(tmp_path / "m.onnx")
    centre = rng.integers(0, 64, 2)
    boxes = [Box(np.maximum(centre - 6, 0), np.minimum(centre + 6, 63)), Box(np.zeros(2, np.int64), np.full(2, 63))]
    for box in boxes:
        query = ErrorQuery(net, imported, box, 0.0, (0, 1, 2))
        real = float(np.abs(query.errors(grid_points(box))).max())
        analysis = analysis_for(query)
        for mode in ("naive", "concrete", "symbolic"):
            assert analysis.run(mode).max_abs(query.outputs) >= real, (mode, box.lo, box.hi)


@pytest.mark.parametrize(("architecture", "types", "per_channel"), [
    ("mlp_gemm", ("u8", "s8"), False), ("mlp_gemm", ("s8", "s8"), True), ("clip", ("u8", "u8"), False),
    ("clip", ("s8", "s8"), True)])
def test_onnxruntime_quantized_models_pair_with_sound_error_bounds(tmp_path, architecture, types, per_channel):
    """onnxruntime's own QDQ models, imported (clamps folded, scales recorded), against sampled errors."""
    from bitqnn.error_search import search_error
    from bitqnn.onnx_io import load_float
    from tests.onnx_models import float_model, quantize_float

    rng = np.random.default_rng(4)
    path = quantize_float(float_model(architecture, rng, gain=2.0), tmp_path, "m", "qdq", *types, per_channel)
    qnn, net = load_model(path), load_float(tmp_path / "m_float.onnx")
    for radius in (1, 4, 40):
        centre = rng.integers(qnn.input_lo, qnn.input_hi + 1, qnn.input_size)
        box = Box(np.maximum(centre - radius, qnn.input_lo), np.minimum(centre + radius, qnn.input_hi))
        query = ErrorQuery(net, qnn, box, 0.0, tuple(range(qnn.output_size)))
        _, worst = search_error(query, 0.2)
        sampled = rng.integers(box.lo, box.hi + 1, (5000, box.lo.size))
        worst = max(worst, float(np.abs(query.errors(sampled)).max()))
        analysis = analysis_for(query)
        for mode in ("naive", "concrete", "symbolic"):
            assert analysis.run(mode).max_abs(query.outputs) >= worst, (mode, radius)


# ---- the certificate and the written model ----------------------------------------------------

def test_a_narrower_input_than_the_written_model_is_an_input_error(tmp_path, capsys):
    """The written model takes uint8 inputs; a 4-bit QNN is defined on fewer, so a property
    certified for it (y[0] <= 0.327 holds on [14, 15] per input but not at 16) would not hold of
    the file. The statement is refused before any search, with its position."""
    rng = np.random.default_rng(0)
    write_float_mlp(rng, tmp_path / "f.onnx")
    (tmp_path / "s.qspec").write_text('network f = onnx "f.onnx"\nlet x0 = [1.875, 1.875, 1.875]\n' + synth_statement(
        "search weights in [6], activations in [6]\n  keep q(linf(x0, 1)): y[0] <= 0.327",
        "input=4, input_frac=3, rounding=half_even, output=accumulator"))
    code, err = run_cli(["synthesize", str(tmp_path / "s.qspec"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "s.qspec:3:19" in err and "set input=8" in err, err


def test_the_generated_spec_states_the_certified_properties(tmp_path):
    (tmp_path / "s.qspec").write_text(HEADER + synth_statement(
        "search weights in [8]\n  keep robust(q, linf(x0, 1), label=0)",
        "input=8, input_frac=8, output=accumulator", " with tiebreak=lowest_index, budget=30"))
    (spec,) = compile_file(tmp_path / "s.qspec").syntheses
    out = tmp_path / "out"
    out.mkdir()
    export_fixed_point(spec.problem.quantize(spec.problem.space.largest()), out / "q.onnx")
    deployed = load_model(out / "q.onnx")
    (out / "q.qspec").write_text(certificate_spec(spec, out, out / "q.onnx"))
    certified = spec.problem.obligations_for(deployed)
    generated = compile_file(out / "q.qspec").obligations
    assert [o.query.violation.terms for o in generated] == [o.query.violation.terms for o in certified]


def test_the_generated_spec_resolves_paths_inside_keeps(tmp_path):
    spec_dir, out = tmp_path / "spec", tmp_path / "out"
    spec_dir.mkdir()
    out.mkdir()
    for name in ("digits_small.onnx", "test.npz"):
        (spec_dir / name).write_bytes((DIGITS / name).read_bytes())
    (spec_dir / "s.qspec").write_text('network f = onnx "digits_small.onnx"\n' + synth_statement(
        'search weights in [8]\n  keep robust(q, linf(sample "test.npz" index 0, 1))',
        "input=8, input_frac=8, output=accumulator"))
    (spec,) = compile_file(spec_dir / "s.qspec").syntheses
    export_fixed_point(spec.problem.quantize(spec.problem.space.largest()), out / "q.onnx")
    (out / "q.qspec").write_text(certificate_spec(spec, out, out / "q.onnx"))
    assert len(compile_file(out / "q.qspec").obligations) == 1


@pytest.mark.parametrize(("block", "message"), [
    pytest.param("keep robust(q, linf([0.5, 0.5], 1))", "2 values"),
    pytest.param("search weight_frac in [100000000000]\n  keep robust(q, linf(x0, 1))", "fraction"),
])
def test_more_malformed_synthesize_statements_are_input_errors(tmp_path, capsys, block, message):
    path = tmp_path / "s.qspec"
    path.write_text(HEADER + synth_statement(block, ""))
    code, err = run_cli(["check", str(path)], capsys)
    assert code == 2 and message in err, err


def test_a_later_statement_may_not_define_the_synthesize_name(tmp_path, capsys):
    """The name stands for the candidates whenever the keeps compile, so it is reserved: a later
    definition is an input error with its position, not a failure in the middle of a search."""
    path = tmp_path / "s.qspec"
    path.write_text(HEADER + synth_statement("search weights in [8]\n  keep robust(q, linf(x0, 1))",
                                             "input=8, input_frac=8, output=accumulator")
                    + "network q = quantize f with fixed(input=8, input_frac=8)\nprove robust(q, linf(x0, 1))\n")
    code, err = run_cli(["check", str(path)], capsys)
    assert code == 2 and "s.qspec:7:9" in err and "names the candidates of the synthesize statement" in err, err

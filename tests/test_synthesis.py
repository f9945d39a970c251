"""Synthesis: the search against brute-force truth, the spec statement, and the CLI end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from bitqnn.answer import Answerer
from bitqnn.cli import main
from bitqnn.floatnet import RELU, FloatDense, FloatNetwork
from bitqnn.onnx_io import load_model
from bitqnn.properties import robust_violation
from bitqnn.qnn import execute
from bitqnn.quantize import FixedPointConfig
from bitqnn.query import Box, Query
from bitqnn.spec import ast
from bitqnn.spec.compile import Obligation, compile_file, compile_text
from bitqnn.spec.errors import SpecError
from bitqnn.synthesis.search import Problem, Synthesizer
from bitqnn.synthesis.space import Candidate, LayerChoices, LayerSetting, SearchSpace

CONFIG = FixedPointConfig(input_bits=4, input_frac=3, output="accumulator")
SPACE = SearchSpace((LayerChoices((2, 3, 4), (2, 3, 4)), LayerChoices((2, 3, 4), ())))


def tiny_net(rng: np.random.Generator) -> FloatNetwork:
    return FloatNetwork((3,), (FloatDense(rng.normal(0, 0.6, (4, 3)), rng.normal(0, 0.2, 4), RELU),
                               FloatDense(rng.normal(0, 0.6, (3, 4)), rng.normal(0, 0.2, 3))))


def boxes(rng: np.random.Generator, count: int) -> list[Box]:
    found = []
    for _ in range(count):
        center = rng.integers(2, 14, 3)
        found.append(Box(np.maximum(center - 2, 0), np.minimum(center + 2, 15)))
    return found


def robust_obligations(net: FloatNetwork, regions: list[Box], engine: str):
    """Robustness of each box with the float network's label at the box centre, as `keep` makes it."""
    labels = [int(np.argmax(net.forward((b.lo + b.hi) / 2 / 2**CONFIG.input_frac)[0])) for b in regions]

    def obligations_for(qnn):
        return [Obligation(f"robust {i}", ast.Pos("t", 1, 1), "robust",
                           Query(qnn, box, robust_violation(label, 3, "strict"), f"robust {i}"),
                           {"timeout": 30.0, "engine": engine})
                for i, (box, label) in enumerate(zip(regions, labels, strict=True))]

    return obligations_for


def truly_kept(obligations) -> bool:
    """Every property by enumerating every input of its box."""
    for obligation in obligations:
        query = obligation.query
        points = np.array(list(itertools.product(*(range(a, b + 1) for a, b in
                                                   zip(query.region.lo, query.region.hi, strict=True)))))
        if query.violation.holds(execute(query.network, points)).any():
            return False
    return True


@pytest.mark.parametrize("engine", ["cpsat", "smt"])
def test_search_agrees_with_brute_force(engine):
    mixed = reused = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        net = tiny_net(rng)
        calibration = rng.uniform(0, 1.8, (64, 3))
        problem = Problem(net, CONFIG, calibration, SPACE, "bits",
                          robust_obligations(net, boxes(rng, 2), engine), budget=120, deliverable=False)
        truth = {}
        for candidate in _all_candidates():
            truth[candidate] = truly_kept(problem.obligations_for(problem.quantize(candidate)))
        result = Synthesizer(problem, Answerer(1), log=lambda line: None).run()
        for attempt in result.attempts:
            assert attempt.status in ("certified", "refuted"), attempt.reason  # exact engines on tiny nets
            assert (attempt.status == "certified") == truth[attempt.candidate], (seed, attempt.candidate)
        uniform = [c for c in sorted(SPACE.uniform(), key=problem.cost_of) if truth[c]]
        assert (result.best_uniform.candidate if result.best_uniform else None) == (uniform[0] if uniform else None)
        if result.best is not None:
            assert truth[result.best.candidate] and result.stopped == "local minimum"
            cheaper = [c for c in SPACE.neighbours(result.best.candidate) if problem.cost_of(c) < result.best.cost]
            assert not any(truth[c] for c in cheaper)
        mixed += 0 < sum(truth.values()) < len(truth)
        reused += sum(a.status == "refuted" and a.solver_runs == 0 for a in result.attempts)
    assert mixed >= 3  # the cases exercise both outcomes, not only all-pass or all-fail spaces
    assert reused >= 1  # and refutations by replayed counterexamples, checked against the truth above


def _all_candidates() -> list[Candidate]:
    return [Candidate((LayerSetting(w0, a0), LayerSetting(w1, None)))
            for w0, a0, w1 in itertools.product((2, 3, 4), (2, 3, 4), (2, 3, 4))]


def test_neighbours_lower_one_width_by_one_choice():
    space = SearchSpace((LayerChoices((2, 4, 8), (4, 8), (None, 3)), LayerChoices((4, 8), ())))
    start = Candidate((LayerSetting(8, 8, None), LayerSetting(8, None)))
    found = {c.describe() for c in space.neighbours(start)}
    assert found == {"w4a8 w8", "w8a4 w8", "w8a8 w4"}
    assert [c.describe() for c in space.fraction_variants(start)] == ["w8a8(wf3) w8"]
    assert [c.uniform_width() for c in space.uniform()] == [4, 8]
    assert space.size() == 3 * 2 * 2 * 2


REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
HEADER = (f'network f = onnx "{DIGITS / "digits.onnx"}"\n'
          f'let x0 = sample "{DIGITS / "test.npz"}" index 0\n')


def synth(block: str, fixed: str = "input=8, input_frac=8", after: str = "") -> str:
    return HEADER + f"synthesize q from f with fixed({fixed}) {{\n{block}\n}}{after}\n"


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    (synth("  search bits in [4]\n  keep robust(q, linf(x0, 1))"), 4, 10, "unknown option 'bits'"),
    (synth("  search weights in [1, 4]\n  keep robust(q, linf(x0, 1))"), 4, 21, "between 2 and 8"),
    (synth("  search weights in 4\n  keep robust(q, linf(x0, 1))"), 4, 21, "expected '['"),
    (synth("  search layer 2 activations in [4]\n  keep robust(q, linf(x0, 1))"), 4, 18, "no activation width"),
    (synth("  search layer 3 weights in [4]\n  keep robust(q, linf(x0, 1))"), 4, 16, "no layer 3"),
    (synth("  search weights in [4]\n  search weights in [6]\n  keep robust(q, linf(x0, 1))"), 5, 10,
     "already searched"),
    (synth("  minimize area\n  keep robust(q, linf(x0, 1))"), 4, 12, "unknown cost 'area'"),
    (synth("  minimize bits\n  minimize memory\n  keep robust(q, linf(x0, 1))"), 5, 12, "one minimize"),
    (synth("  search weights in [4]"), 3, 1, "at least one keep"),
    (synth("  keep robust(p, linf(x0, 1))"), 4, 15, "unknown network 'p'"),
    (synth("  keep robust(q, linf(x0, 1))", after=" with budget=0"), 5, 15, "budget must be a number > 0"),
    (HEADER + 'network p = onnx "' + str(DIGITS / "digits_q8.onnx") + '"\n'
     "synthesize q from p with fixed() {\n  keep robust(q, linf(x0, 1))\n}\n", 4, 19, "already quantized"),
])
def test_synthesize_errors_point_at_the_offending_text(text, line, column, message):
    with pytest.raises(SpecError) as caught:
        compile_text(text, str(REPO / "specs" / "synth.qspec"))
    error = caught.value
    assert message in error.message
    assert (error.pos.line, error.pos.column) == (line, column), error.render()


def test_keeps_compile_per_candidate_with_the_float_label(tmp_path):
    text = synth("  search weights in [4, 8]\n  keep robust(q, linf(x0, 1))\n  keep error(f, q, linf(x0, 1)) <= 2",
                 fixed="input=8, input_frac=8, output=accumulator")
    path = tmp_path / "synth.qspec"
    path.write_text(text)
    (spec,) = compile_file(path).syntheses
    problem = spec.problem
    label = int(np.argmax(problem.float_net.forward(np.load(DIGITS / "test.npz")["x"][:1])[0]))
    for candidate in problem.space.uniform():
        qnn = problem.quantize(candidate)
        robust, error = problem.obligations_for(qnn)
        assert robust.query.network is qnn and error.query.qnn is qnn
        assert robust.query.violation.terms == robust_violation(label, 10, "strict").terms
    assert "synthesize" not in spec.definitions and "let x0" in spec.definitions


@pytest.mark.slow
def test_shipped_spec_synthesizes_and_its_output_reproves(tmp_path, monkeypatch, capsys):
    """specs/digits_synthesize.qspec end to end: search, export, certificate, then `bitqnn prove`
    on the generated spec re-proves every kept property on the written ONNX model."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    assert main(["synthesize", "specs/digits_synthesize.qspec", "--out", str(out), "--json"]) == 0
    (certificate,) = json.loads(capsys.readouterr().out)
    assert certificate["result"] == "certified" and certificate["reverified_on_onnx"]
    assert json.loads((out / "certificate.json").read_text()) == certificate
    assert certificate["candidate"]["cost"] <= certificate["uniform_baseline"]["cost"]
    (spec,) = compile_file("specs/digits_synthesize.qspec").syntheses
    # the certificate's widths and fraction bits, stated explicitly, give back the certified network
    chosen = Candidate(tuple(LayerSetting(row["weights"], row["activations"], row["weight_frac"],
                                          row["activation_frac"]) for row in certificate["candidate"]["layers"]))
    qnn, deployed = spec.problem.quantize(chosen), load_model(out / "q.onnx")
    x = qnn.quantize_input(np.load(DIGITS / "test.npz")["x"])
    assert np.array_equal(execute(qnn, x), execute(deployed, x))
    assert main(["prove", str(out / "q.qspec"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["verdict"] for r in rows] == ["proved"] * len(spec.keep_texts)
    assert [row["onnx"]["verdict"] for row in certificate["properties"]] == ["proved"] * len(spec.keep_texts)


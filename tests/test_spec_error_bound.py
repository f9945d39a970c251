"""`prove error(f, q, r) <= eps` and `bound error(f, q, r)`: compilation, bad input, and the
CLI path that DRA settles on its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitqnn.cli import EXIT_FALSIFIED, EXIT_PROVED, EXIT_UNKNOWN, main
from bitqnn.error_query import ErrorQuery
from bitqnn.spec import SpecError, compile_spec, compile_text
from tests.test_cli import ROOT

HEADER = f"""
network f = onnx "{ROOT}/examples/digits/digits.onnx"
network q = quantize f with fixed(weights=8, activations=8, input=8, input_frac=3,
                                  calibrate="{ROOT}/examples/digits/test.npz")
let x0 = sample "{ROOT}/examples/digits/test.npz" index 0
"""


def compile_body(body: str):
    return compile_text(HEADER + body, str(ROOT / "specs" / "inline.qspec"))


def test_error_statements_compile_to_error_queries():
    prove, bound = compile_body("prove error(f, q, linf(x0, 2), output=3) <= 0.5 with engine=dra\n"
                                "bound error(f, q, linf(x0, 1))\n")
    assert prove.kind == "error" and bound.kind == "bound"
    assert isinstance(prove.query, ErrorQuery) and prove.query.outputs == (3,) and prove.query.eps == 0.5
    assert bound.query.outputs == tuple(range(10))
    assert prove.options["engine"] == "dra" and bound.options["engine"] == "auto"
    assert int((prove.query.region.hi - prove.query.region.lo).max()) == 4


@pytest.mark.parametrize("body, message", [
    ("prove error(q, f, linf(x0, 1)) <= 1\n", "takes the float network first"),
    ("prove error(f, f, linf(x0, 1)) <= 1\n", "takes a quantized one second"),
    ("prove error(f, q, linf(x0, 1)) <= -1\n", "at least 0"),
    ("prove error(f, q, linf(x0, 1), output=10) <= 1\n", "there is no class 10"),
    ("prove error(f, q, linf(x0, 1)) <= 1 with engine=cpsat\n", "engine must be one of auto, dra, search, milp"),
    ("prove error(f, q, linf(x0, 1)) <= 1 with tiebreak=strict\n", "unknown option 'tiebreak'"),
    ("options engine=cpsat\nprove error(f, q, linf(x0, 1)) <= 1\n", "does not bound errors"),
    ("prove error(f, q, linf(x0, 1)) < 1\n", "expected"),
])
def test_bad_error_statements_are_rejected_with_their_position(body, message):
    with pytest.raises(SpecError) as caught:
        compile_body(body)
    rendered = caught.value.render()
    assert message in rendered and "inline.qspec:" in rendered


@pytest.mark.parametrize("engine", ["dra", "milp"])
def test_an_imported_quantized_model_pairs_with_its_float_model_soundly(engine):
    """onnxruntime's QDQ model against the float model it was made from: every sampled error is
    within the bound, and the bound is not vacuous."""
    from bitqnn.error_verify import error_result

    body = f'network p = onnx "{ROOT}/examples/digits/digits_q8.onnx"\nbound error(f, p, linf(x0, 2))\n'
    (obligation,) = compile_body(body)
    query = obligation.query
    result = error_result(query, "bound", 5, engine)
    points = query.probe_points(4000, np.random.default_rng(0))
    sampled = float(query.errors(points).max())
    assert sampled <= result.stats["proven"] < 10 * max(sampled, 1e-3)


def test_cli_proves_a_generous_bound_by_dra_and_reports_it(capsys, tmp_path):
    spec = tmp_path / "bound.qspec"
    spec.write_text(HEADER + "prove error(f, q, linf(x0, 1)) <= 10 with engine=dra\n")
    code = main(["prove", str(spec)])
    out = capsys.readouterr().out
    assert code == EXIT_PROVED
    assert "PROVED" in out and "error <= " in out and "proven" in out


def test_shipped_error_specs_prove_and_falsify(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["prove", "specs/digits_error_bound.qspec"]) == EXIT_PROVED
    assert "2 proved, 0 falsified, 0 unknown" in capsys.readouterr().out
    assert main(["prove", "specs/digits_error_falsify.qspec", "--json"]) == EXIT_FALSIFIED
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"] == {"proved": 0, "falsified": 2, "unknown": 0}
    obligations = compile_spec(ROOT / "specs" / "digits_error_falsify.qspec")
    for obligation, result in zip(obligations, payload["results"], strict=True):
        replayed = obligation.query.errors(np.array(result["witness"]))[0]
        assert np.abs(replayed).max() > obligation.query.eps  # the witness really breaks the bound
        assert result["stats"]["witnessed"] <= result["stats"]["proven"]


def test_a_dra_only_prove_that_fails_stays_unknown_with_both_numbers(capsys, tmp_path):
    spec = tmp_path / "tight.qspec"
    spec.write_text(HEADER + "prove error(f, q, linf(x0, 1)) <= 1.5 with engine=dra\n")
    code = main(["prove", str(spec), "--json"])
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert code == EXIT_UNKNOWN and result["verdict"] == "unknown"
    assert result["stats"]["witnessed"] <= 1.5 < result["stats"]["proven"]  # DRA only: the MILP never ran
    assert result["seconds"] < 10

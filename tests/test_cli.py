"""The `bitqnn` command end to end: verdicts, output formats, exit codes, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitqnn.cli import EXIT_FALSIFIED, EXIT_INPUT, EXIT_PROVED, EXIT_UNKNOWN, main

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prove_robust_spec_proves_everything(capsys):
    code, out, _ = run(capsys, "prove", SPECS / "digits_robust.qspec")
    assert code == EXIT_PROVED
    assert "4 proved, 0 falsified, 0 unknown" in out
    assert "onnxruntime" in out  # the semantics line says which meaning was verified


def test_falsified_properties_come_with_replayed_counterexamples(capsys):
    code, out, _ = run(capsys, "prove", SPECS / "digits_falsify.qspec", "--json")
    assert code == EXIT_FALSIFIED
    payload = json.loads(out)
    assert payload["summary"] == {"proved": 0, "falsified": 2, "unknown": 0}
    for result in payload["results"]:
        assert result["onnxruntime_checked"] is True
        assert len(result["witness"]) == 64 and len(result["outputs"]) == 10


def test_fixed_point_spec_runs_the_quantizer_and_both_exact_engines(capsys):
    code, out, _ = run(capsys, "prove", SPECS / "digits_fixed_point.qspec", "--json")
    assert code == EXIT_FALSIFIED
    results = json.loads(out)["results"]
    assert [r["verdict"] for r in results] == ["proved", "proved", "falsified"]
    assert results[1]["engine"] == "smt"
    assert results[2]["onnxruntime_checked"] is False  # a quantized-in-bitqnn network has no ONNX file


def test_timeout_gives_unknown_with_its_exit_code(capsys, tmp_path):
    spec = tmp_path / "hard.qspec"
    spec.write_text(f'network q = onnx "{ROOT}/examples/digits/digits_q8.onnx"\n'
                    f'let x = sample "{ROOT}/examples/digits/test.npz" index 1\n'
                    "prove robust(q, linf(x, 8)) with engine=cpsat, timeout=0.5\n")
    code, out, _ = run(capsys, "prove", spec)
    assert code == EXIT_UNKNOWN and "UNKNOWN" in out and "timeout" in out


def test_vnncomp_files(capsys, tmp_path):
    code, _, _ = run(capsys, "prove", SPECS / "digits_falsify.qspec", "--vnncomp", tmp_path)
    assert code == EXIT_FALSIFIED
    text = (tmp_path / "property_1.txt").read_text().splitlines()
    assert text[0] == "sat" and text[1].startswith("((X_0 ") and text[-1].endswith(")")
    assert sum(line.lstrip("(").startswith("Y_") for line in text) == 10


def test_smtlib_export_is_readable_by_z3(capsys, tmp_path):
    z3 = pytest.importorskip("z3")
    target = tmp_path / "q.smt2"
    spec = tmp_path / "one.qspec"
    spec.write_text(f'network q = onnx "{ROOT}/examples/digits/digits_small_q8.onnx"\n'
                    f'let x = sample "{ROOT}/examples/digits/test.npz" index 0\n'
                    "prove robust(q, linf(x, 1))\n")
    code, _, _ = run(capsys, "prove", spec, "--smtlib", target)
    assert code == EXIT_PROVED
    solver = z3.Solver()
    solver.from_file(str(target))
    assert solver.check() == z3.unsat  # the exported query agrees with the proof


def test_check_validates_without_solving(capsys):
    code, out, _ = run(capsys, "check", SPECS / "digits_fixed_point.qspec")
    assert code == EXIT_PROVED and "3 properties checked" in out


def test_run_prints_the_integer_trace(capsys):
    code, out, _ = run(capsys, "run", ROOT / "examples/digits/digits_q8.onnx",
                       "--sample", ROOT / "examples/digits/test.npz", "--index", "0")
    assert code == EXIT_PROVED
    assert out.count("accumulator:") == 3 and "argmax" in out


@pytest.mark.parametrize("argv, fragment", [
    (["prove", "missing.qspec"], "missing.qspec"),
    (["run", "nope.onnx", "--sample", "x.npz"], "nope.onnx"),
    (["run", str(ROOT / "examples/digits/digits_q8.onnx"), "--sample",
      str(ROOT / "examples/digits/test.npz"), "--index", "9999"], "index 9999"),
])
def test_bad_input_is_one_line_with_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_INPUT
    assert fragment in err and "Traceback" not in err


def test_spec_error_points_at_line_and_column(capsys, tmp_path):
    spec = tmp_path / "bad.qspec"
    spec.write_text('network q = onnx "x.onnx"\nprove robust(q, r9)\n')
    code, _, err = run(capsys, "prove", spec)
    assert code == EXIT_INPUT
    assert "bad.qspec:1:" in err or "bad.qspec:2:" in err
    assert "^" in err


def test_console_script_runs_as_a_process():
    done = subprocess.run([sys.executable, "-m", "bitqnn.cli", "check", str(SPECS / "digits_robust.qspec")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4 properties checked" in done.stdout


def _softmax_model(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1, name="fc"),
         helper.make_node("Softmax", ["h"], ["y"], name="probabilities")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)


@pytest.mark.parametrize("model, fragment", [
    ("softmax.onnx", "'probabilities' (Softmax)"),
    ("garbage.onnx", "garbage.onnx"),
])
def test_bad_models_named_in_the_spec_are_rejected_before_solving(capsys, tmp_path, model, fragment):
    if model == "softmax.onnx":
        _softmax_model(tmp_path / model)
    else:
        (tmp_path / model).write_bytes(b"not a protobuf")
    spec = tmp_path / "s.qspec"
    spec.write_text(f'network q = onnx "{model}"\nprove robust(q, box(lo=0, hi=1), label=0)\n')
    code, _, err = run(capsys, "prove", spec)
    assert code == EXIT_INPUT
    assert fragment in err and "s.qspec:1:" in err and "Traceback" not in err

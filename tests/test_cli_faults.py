"""`bitqnn prove` on properties under bit flips: the shipped specs, replay of the flips, bad engines."""

import json
import re

import numpy as np
import pytest

from bitqnn.cli import EXIT_FALSIFIED, EXIT_INPUT, EXIT_PROVED
from bitqnn.faults import Flip, apply_flips, weighted_layers
from bitqnn.onnx_io import load_qnn
from bitqnn.qnn import execute
from tests.test_cli import ROOT, SPECS, run

FLIP = re.compile(r"layers\[(\d+)\]\.(weights|biases)\[([\d, ]+)\] bit (\d+): stored (-?\d+) -> (-?\d+)")


def test_resilience_spec_proves_and_reports_pruning(capsys):
    code, out, _ = run(capsys, "prove", SPECS / "digits_bitflip_resilient.qspec")
    assert code == EXIT_PROVED
    assert "2 proved, 0 falsified, 0 unknown" in out
    assert "candidate flips pruned" in out


def test_attack_spec_names_the_flip_and_it_replays_independently(capsys):
    code, out, _ = run(capsys, "prove", SPECS / "digits_bitflip_attack.qspec", "--json")
    assert code == EXIT_FALSIFIED
    (result,) = json.loads(out)["results"]
    (text,) = result["flips"]
    linear, kind, index, bit, before, after = FLIP.search(text).groups()
    qnn = load_qnn(str(ROOT / "examples/digits/digits_q8.onnx"))
    layer_index = weighted_layers(qnn)[int(linear)]
    multi = tuple(int(i) for i in index.split(","))
    stored = getattr(qnn.layers[layer_index], "weight" if kind == "weights" else "bias")[multi]
    raw = (int(stored) & 0xFF) ^ (1 << int(bit))  # int8 storage, read back as two's complement
    assert int(before) == stored and int(after) == (raw - 256 if raw >= 128 else raw)
    x = np.array(result["witness"])
    clean, faulty = execute(qnn, x)[0], execute(apply_flips(qnn, (Flip(layer_index, kind, multi, int(bit)),)), x)[0]
    assert faulty.tolist() == result["outputs"]
    assert int(np.argmax(clean)) != int(np.argmax(faulty)) or list(faulty).count(faulty.max()) > 1


def test_an_engine_that_cannot_model_flips_is_refused_with_the_position(capsys, tmp_path):
    spec = tmp_path / "bad.qspec"
    spec.write_text(f'network q = onnx "{ROOT / "examples/digits/digits_q8.onnx"}"\n'
                    f'let x = sample "{ROOT / "examples/digits/test.npz"}" index 0\n'
                    "prove robust(q, linf(x, 0)) under bitflips(k=1, params=q.weights) with engine=attack\n")
    code, _, err = run(capsys, "prove", spec)
    assert code == EXIT_INPUT
    assert f"{spec}:3:1" in err and "does not analyse bit flips" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("bench, images", [("bitflip", 20), ("speed", 25)])
def test_benchmarks_refuse_a_bad_image_range_in_one_line(capsys, bench, images):
    """Checked before any model or data file is read, so the test needs neither."""
    code, out, err = run(capsys, "bench", bench, "--first-image", "-1")
    assert code == EXIT_INPUT and not out
    assert err.strip().count("\n") == 0 and f"--first-image >= 0, got {images}, -1" in err


def test_benchmark_queries_keep_their_image_numbers_when_a_run_starts_later():
    from bitqnn.bench import make_queries

    qnn = load_qnn(ROOT / "examples/digits/digits_q8.onnx")
    images = np.zeros((2, qnn.input_size), dtype=np.int64)
    queries = make_queries(qnn, images, np.array([3, 5]), [1, 2], first=8)
    assert [q.label for q in queries] == ["image 8 radius 1", "image 9 radius 1", "image 8 radius 2",
                                          "image 9 radius 2"]


@pytest.mark.parametrize("spec, expected", [("digits_bitflip_resilient.qspec", EXIT_PROVED),
                                            ("digits_bitflip_attack.qspec", EXIT_FALSIFIED)])
def test_the_milp_fault_encoding_decides_the_shipped_specs(capsys, spec, expected):
    """`--engine milp`: pruning, then SCIP's encoding of the flips for whatever is left."""
    code, out, _ = run(capsys, "prove", SPECS / spec, "--engine", "milp")
    assert code == expected, out

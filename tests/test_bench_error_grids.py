"""`bitqnn bench errorbound --eps-from`: grids read back from a report, and bad reports refused."""

from __future__ import annotations

import json

import pytest

from bitqnn.bench_error import BenchInputError, read_grids


def write_report(path, models):
    path.write_text(json.dumps({"models": models}))
    return str(path)


def test_grids_come_back_per_model_and_q(tmp_path):
    path = write_report(tmp_path / "r.json", [{"model": "a.onnx", "bits": 4, "eps": [1.5, 3.0]},
                                              {"model": "a.onnx", "bits": 8, "eps": [0.1, 0.2, 0.4]}])
    assert read_grids(path, ["a.onnx"], [8, 4]) == {("a.onnx", 4): [1.5, 3.0], ("a.onnx", 8): [0.1, 0.2, 0.4]}


@pytest.mark.parametrize("content, message", [
    (None, "No such file"),
    ("not json", "not an errorbound report"),
    (json.dumps({"tasks": 3}), "not an errorbound report"),
    (json.dumps({"models": [{"model": "a.onnx", "bits": 4, "eps": [1.0]}]}), "no eps grid for a.onnx at Q=6"),
])
def test_a_bad_report_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BenchInputError) as error:
        read_grids(str(path), ["a.onnx"], [4, 6])
    assert message in str(error.value) and "\n" not in str(error.value)

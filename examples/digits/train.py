"""Train the small digits MLPs used by bitqnn's examples and export them.

Run as ``python examples/digits/train.py``; everything is written next to this
script. The data is scikit-learn's shipped 8x8 digits set, so no download is
needed and the result is reproducible from fixed seeds.

Produced files:

* ``digits.onnx`` / ``digits_small.onnx`` -- float Gemm/Relu chains
  (64-32-16-10 and 64-10-10), input ``input`` [N, 64] in [0, 1], output
  ``logits`` [N, 10].
* ``digits_q8.onnx`` / ``digits_small_q8.onnx`` -- the same models after
  ``onnxruntime.quantization.quantize_static`` with its defaults (QDQ format,
  int8 activations and weights, per-tensor, MinMax calibration) over the first
  200 training images.
* ``test.npz`` (``x`` float32 [397, 64], ``y`` int64), ``test_first10.csv``
  and ``sample0.npy`` -- held-out inputs for examples and tests.

Quantization note: the float model is first passed through
``quant_pre_process`` with graph optimization switched off. That only adds
shape-inferred ``value_info`` (which the quantizer wants, and otherwise warns
about) and leaves the Gemm/Relu node structure untouched, so the QDQ model is
a faithful copy of the float one.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _mlp_export import INPUT_NAME, export_mlp, onnx_accuracy

HERE = Path(__file__).resolve().parent
SEED = 0
TEST_SIZE = 397
N_CALIB = 200
MODELS: dict[str, tuple[int, ...]] = {"digits": (32, 16), "digits_small": (10,)}


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return a fixed stratified split with inputs scaled into [0, 1].

    Dividing the 0..16 pixel counts by 16 keeps every input exactly
    representable, which makes fixed-point input encodings lossless.
    """
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SEED
    )
    return x_tr, x_te, y_tr, y_te


def train_mlp(hidden: tuple[int, ...], x: np.ndarray, y: np.ndarray) -> MLPClassifier:
    """Fit a deterministic ReLU MLP; a fixed iteration cap keeps runtime bounded."""
    clf = MLPClassifier(
        hidden_layer_sizes=hidden,
        activation="relu",
        solver="adam",
        max_iter=600,
        random_state=SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


class _Calibration(CalibrationDataReader):
    """Feeds the calibration images to the quantizer as a single batch."""

    def __init__(self, x: np.ndarray) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter([{INPUT_NAME: x}])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_qdq(float_path: Path, out_path: Path, x_calib: np.ndarray) -> None:
    """Quantize with onnxruntime's default static QDQ settings."""
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(float_path), str(prepped), skip_optimization=True)
        quantize_static(
            str(prepped),
            str(out_path),
            _Calibration(x_calib),
            quant_format=QuantFormat.QDQ,
        )
    onnx.checker.check_model(onnx.load(str(out_path)), full_check=True)
    print(f"wrote {out_path}")


def write_test_data(x_te: np.ndarray, y_te: np.ndarray) -> None:
    """Save the held-out inputs in the formats the examples consume."""
    np.savez(HERE / "test.npz", x=x_te.astype(np.float32), y=y_te.astype(np.int64))
    np.savetxt(HERE / "test_first10.csv", x_te[:10], delimiter=",", fmt="%.4f")
    np.save(HERE / "sample0.npy", x_te[0].astype(np.float32))


def build_one(
    name: str, hidden: tuple[int, ...], split: tuple[np.ndarray, ...]
) -> None:
    """Train, export, quantize and report one model."""
    x_tr, x_te, y_tr, y_te = split
    clf = train_mlp(hidden, x_tr, y_tr)
    print(f"{name}: sklearn test accuracy {clf.score(x_te, y_te):.4f}")
    float_path = HERE / f"{name}.onnx"
    export_mlp(clf, np.concatenate([x_tr, x_te]), float_path)
    print(
        f"{name}: float ONNX test accuracy {onnx_accuracy(float_path, x_te, y_te):.4f}"
    )
    q_path = HERE / f"{name}_q8.onnx"
    quantize_qdq(float_path, q_path, x_tr[:N_CALIB])
    print(f"{name}_q8: QDQ ONNX test accuracy {onnx_accuracy(q_path, x_te, y_te):.4f}")


def main() -> None:
    """Build every digits artifact."""
    logging.getLogger().setLevel(logging.ERROR)
    split = load_split()
    for name, hidden in MODELS.items():
        build_one(name, hidden, split)
    write_test_data(split[1], split[3])


if __name__ == "__main__":
    main()

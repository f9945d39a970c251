"""Train the Fashion-MNIST MLPs used by bitqnn's benchmarks and export them.

Run as ``python benchmarks/train_fashion.py [--data PATH]``. By default the
data is read from ``<repo>/../shared/data/fashion_mnist.npz`` (keys
``x_train``, ``y_train``, ``x_test``, ``y_test``; uint8 28x28 images).

Inputs are ``pixel / 256.0`` rather than ``/ 255.0`` on purpose: every input
is then exactly ``k * 2**-8`` for an integer ``k`` in 0..255, so an unsigned
8-bit fixed-point input with 8 fraction bits reproduces the float input
bit-for-bit and the encoding of the input layer loses nothing.

Training is capped at a fixed number of Adam epochs (no early stopping) so the
run stays within a few minutes on two cores; the resulting models only need to
be reasonable benchmark subjects, not state of the art. Both float models are
written to ``benchmarks/models/`` as plain Gemm/Relu ONNX chains with input
``input`` [N, 784] and output ``logits`` [N, 10].
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from _mlp_export import export_mlp, onnx_accuracy

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/fashion_mnist.npz"
OUT_DIR = REPO / "benchmarks" / "models"
SEED = 0
EPOCHS = 20
MODELS: dict[str, tuple[int, ...]] = {
    "fashion_784_64_32": (64, 32),
    "fashion_784_100_100": (100, 100),
}


def to_inputs(pixels: np.ndarray) -> np.ndarray:
    """Flatten raw 0..255 images into exactly-representable float32 inputs (see above)."""
    return (pixels.reshape(len(pixels), -1) / 256.0).astype(np.float32)


def load_data(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load flattened, exactly-representable float32 inputs and int64 labels."""
    with np.load(path) as d:
        x_tr, x_te = to_inputs(d["x_train"]), to_inputs(d["x_test"])
        return x_tr, d["y_train"].astype(np.int64), x_te, d["y_test"].astype(np.int64)


def train_mlp(hidden: tuple[int, ...], x: np.ndarray, y: np.ndarray) -> MLPClassifier:
    """Fit a ReLU MLP for a fixed epoch budget so runtime is predictable."""
    clf = MLPClassifier(
        hidden_layer_sizes=hidden,
        activation="relu",
        solver="adam",
        batch_size=128,
        max_iter=EPOCHS,
        random_state=SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def build_one(name: str, hidden: tuple[int, ...], data: tuple[np.ndarray, ...]) -> None:
    """Train, export and report one model."""
    x_tr, y_tr, x_te, y_te = data
    start = time.perf_counter()
    clf = train_mlp(hidden, x_tr, y_tr)
    secs = time.perf_counter() - start
    print(
        f"{name}: trained {clf.n_iter_} epochs in {secs:.1f}s, "
        f"sklearn test accuracy {clf.score(x_te, y_te):.4f}"
    )
    path = OUT_DIR / f"{name}.onnx"
    export_mlp(clf, x_te, path)
    print(f"{name}: float ONNX test accuracy {onnx_accuracy(path, x_te, y_te):.4f}")


def parse_args(description: str, default_data: Path = DEFAULT_DATA) -> argparse.Namespace:
    """Only the data location is configurable; everything else is pinned."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data,
        help=f"{default_data.name} (default: {default_data})",
    )
    return parser.parse_args()


def export_models(models: dict[str, tuple[int, ...]], data: tuple[np.ndarray, ...]) -> None:
    """Train and export each named model on already loaded (x_tr, y_tr, x_te, y_te)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, hidden in models.items():
        build_one(name, hidden, data)


def build_models(models: dict[str, tuple[int, ...]], description: str) -> tuple[np.ndarray, ...]:
    """Train and export each named model on the data given by --data; returns the data."""
    data = load_data(parse_args(description).data)
    export_models(models, data)
    return data


def main() -> None:
    """Build every benchmark model."""
    build_models(MODELS, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

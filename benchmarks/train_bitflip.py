"""Train the MNIST MLPs of the bit-flip benchmark and export them.

Run as ``python benchmarks/train_bitflip.py [--data PATH]``. By default the data is
read from ``<repo>/../shared/data/mnist_test.npz`` (keys ``x_test``, ``y_test``; uint8
28x28 images). MNIST is used because it is the dataset of BFAVerifier, the prior
bit-flip verifier we compare with, but the shared data holds only the MNIST *test*
set. So the models are trained on its first 8000 images and images 8000..9999 are
held out: every accuracy printed here is on the held-out images, and the benchmark's
queries must be drawn from them too, never from the first 8000.

The recipe is ``train_fashion.py``'s (its helpers are reused): inputs ``pixel / 256.0``
so that an unsigned 8-bit input with 8 fraction bits is exact, ReLU, Adam, batch 128,
a fixed number of epochs, seed 0, here for hidden layers 1x100, 3x100 and 3x512 (the
"test accuracy" lines of the training log are held-out accuracies); and a second 3x512
model, ``mnist_784_512x3_l1``, by ``train_sparse.py``'s recipe (numpy Adam with an L1
penalty of 1e-4 on the first layer's weights, 20 epochs, seed 0). Each model is
written to ``benchmarks/models/`` as a plain Gemm/Relu ONNX chain, then quantized into
8-bit fixed point (calibrated on the first 2000 training images) to check that the
quantized network the benchmark verifies is still accurate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))
from _mlp_export import export_mlp, onnx_accuracy  # noqa: E402
from train_fashion import OUT_DIR, export_models, parse_args, to_inputs  # noqa: E402
from train_sparse import train as train_sparse  # noqa: E402

from bitqnn.onnx_io import load_float  # noqa: E402
from bitqnn.qnn import execute  # noqa: E402
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared/data/mnist_test.npz"
TRAIN_IMAGES = 8000  # the rest of the MNIST test set is held out
CALIBRATION_IMAGES = 2000
CONFIG = FixedPointConfig(weights=8, activations=8, input_bits=8, input_frac=8)
MODELS: dict[str, tuple[int, ...]] = {
    "mnist_784_100": (100,),
    "mnist_784_100x3": (100, 100, 100),
    "mnist_784_512x3": (512, 512, 512),
}
# trained by train_sparse.py's recipe (an L1 penalty on the first layer), whose docstring
# says why: the same architecture with far fewer first-layer neurons left unfixed by a box
SPARSE_MODELS: dict[str, tuple[int, ...]] = {"mnist_784_512x3_l1": (512, 512, 512)}


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw pixels and int64 labels of the training and held-out parts of the test set."""
    with np.load(path) as d:
        pixels, labels = d["x_test"], d["y_test"].astype(np.int64)
    return pixels[:TRAIN_IMAGES], labels[:TRAIN_IMAGES], pixels[TRAIN_IMAGES:], labels[TRAIN_IMAGES:]


def quantized_accuracy(path: Path, calibration: np.ndarray, pixels: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the exact 8-bit QNN, fed raw pixels as ``bitqnn bench`` feeds them."""
    qnn = quantize_fixed_point(load_float(path), CONFIG, calibration)
    predictions = execute(qnn, pixels.reshape(len(pixels), -1).astype(np.int64)).argmax(axis=1)
    return float((predictions == labels).mean())


def main() -> None:
    """Train and export every model, then report float and quantized held-out accuracy."""
    args = parse_args(__doc__.splitlines()[0], DEFAULT_DATA)
    px_tr, y_tr, px_te, y_te = load_split(args.data)
    x_tr, x_te = to_inputs(px_tr), to_inputs(px_te)
    export_models(MODELS, (x_tr, y_tr, x_te, y_te))
    for name, hidden in SPARSE_MODELS.items():
        export_mlp(train_sparse(hidden, x_tr, y_tr), x_te, OUT_DIR / f"{name}.onnx")
    print(f"quantization: {CONFIG.describe()}; calibrated on {CALIBRATION_IMAGES} training images")
    for name in [*MODELS, *SPARSE_MODELS]:
        path = OUT_DIR / f"{name}.onnx"
        print(
            f"{name}: held-out accuracy float {onnx_accuracy(path, x_te, y_te):.4f}, "
            f"8-bit {quantized_accuracy(path, x_tr[:CALIBRATION_IMAGES], px_te, y_te):.4f} "
            f"({len(y_te)} images)"
        )


if __name__ == "__main__":
    main()

"""Train the 1x100 and 3x100 Fashion-MNIST MLPs of the quantization error-bound benchmark.

Run as ``python benchmarks/train_errorbound.py [--data PATH]``. The benchmark
(``bitqnn bench errorbound``, ``bitqnn/bench_error.py``) follows QEBVerif's: ReLU MLPs
with 1, 2 and 3 hidden layers of 100 neurons. The 2x100 model is
``benchmarks/models/fashion_784_100_100.onnx`` from ``train_fashion.py`` and is reused as
is, so this script trains only the other two, with the very same recipe (it calls
``build_models`` from ``train_fashion.py``: inputs ``pixel / 256.0``,
Adam, batch 128, a fixed number of epochs, seed 0) so the three models differ in depth
only. It writes ``benchmarks/models/fashion_784_100.onnx`` and
``benchmarks/models/fashion_784_100x3.onnx`` and prints the test accuracy of all three.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))
from _mlp_export import onnx_accuracy  # noqa: E402
from train_fashion import OUT_DIR, build_models  # noqa: E402

MODELS: dict[str, tuple[int, ...]] = {
    "fashion_784_100": (100,),
    "fashion_784_100x3": (100, 100, 100),
}
REUSED = "fashion_784_100_100"  # trained by train_fashion.py with the same recipe


def main() -> None:
    """Train and export the two new models, then report the reused one's accuracy too."""
    data = build_models(MODELS, __doc__.splitlines()[0])
    reused = OUT_DIR / f"{REUSED}.onnx"
    if reused.exists():
        _, _, x_te, y_te = data
        print(f"{REUSED} (reused): float ONNX test accuracy {onnx_accuracy(reused, x_te, y_te):.4f}")
    else:
        print(f"{REUSED}: missing; run benchmarks/train_fashion.py to build it")


if __name__ == "__main__":
    main()

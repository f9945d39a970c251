"""Requantization of an integer accumulator that leaves through float32 ops (MatMulInteger, ConvInteger).

onnxruntime runs MatMulInteger/ConvInteger -> Cast -> Mul/Add/... -> QuantizeLinear as an
exact int32 accumulator followed by IEEE float32 steps and MLAS's QuantizeLinear (a float32
division by the output scale, then round half to even). Every step is checked to be
non-decreasing, so the whole map is monotone, as OutputStage.steps requires.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitqnn.onnx_io.float_steps import FloatStep, apply_steps
from bitqnn.onnx_io.ort_kernels import rint_to_int


@dataclass(frozen=True, eq=False)
class Float32ChainRequant:
    """rint(steps(float32(acc))): per-channel float32 steps, the last one the division by y_scale."""

    steps: tuple[FloatStep, ...]

    def __post_init__(self) -> None:
        if not all(step.monotone for step in self.steps):
            raise ValueError("float requantization steps must be non-decreasing")

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc, dtype=np.int64)
        index = np.broadcast_to(channels, acc.shape)
        return rint_to_int(apply_steps(self.steps, acc.astype(np.float32), index))

    def describe(self) -> str:
        return "float32 " + " ".join(step.op for step in self.steps) + ", round half even"

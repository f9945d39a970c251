"""Running an imported QNN's model in onnxruntime, on the QNN's integer grid.

This is the independent side of every bit-exactness check: the model file runs in a session
with default options (so onnxruntime fuses QDQ into its integer kernels, the meaning
bitqnn verifies), fed the real values input_scale * (x - zero) in float32. Those are checked
to quantize back to x under onnxruntime's QuantizeLinear arithmetic before the run.

A model whose output is a DequantizeLinear returns floats; the integers are recovered by
inverting it, which is exact: q -> float32(q - zero) * scale is strictly increasing on the
256 stored values (consecutive images are a whole scale apart, far more than one float32
rounding), so rint(y / scale) + zero is its inverse, and re-dequantizing must reproduce y
bit for bit or the run is rejected. A model whose output is its last accumulator (a float
acc * scale, `quant_linear`) inverts the same way: the scale is a power of two and |acc| <
2**24, so y is exactly acc * scale, y / scale is acc exactly in float64, and float32(acc) *
scale gives y back.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import onnxruntime as ort

from bitqnn.onnx_io import ort_kernels
from bitqnn.qnn import QNN, check_input

INTEGER_TYPES = {"tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


def run_onnxruntime(qnn: QNN, x_int: np.ndarray) -> np.ndarray:
    """onnxruntime's integer outputs for integer inputs, flat int64 [B, n_out] like `execute`."""
    if qnn.onnx_path is None:
        raise ValueError(f"{qnn.name} was not imported from an ONNX file")
    x = check_input(qnn, x_int)
    session = _session(qnn.onnx_path, os.stat(qnn.onnx_path).st_mtime_ns)
    info = session.get_inputs()[0]
    feed = _feed(qnn, x, info.type)
    batch = info.shape[0] if isinstance(info.shape[0], int) and info.shape[0] > 0 else max(len(x), 1)
    chunks = [session.run(None, {info.name: feed[i:i + batch]})[0] for i in range(0, len(x), batch)]
    y = np.concatenate(chunks).reshape(len(x), -1) if chunks else np.zeros((0, qnn.output_size), np.float32)
    if y.dtype in (np.int8, np.uint8):
        return y.astype(np.int64)
    return _invert_output(qnn, y)


@lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int) -> ort.InferenceSession:
    """One default session per model file version (mtime_ns is the cache key for edits)."""
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _feed(qnn: QNN, x: np.ndarray, input_type: str) -> np.ndarray:
    shape = (len(x), *qnn.input_shape)
    if input_type in INTEGER_TYPES:
        return x.astype(INTEGER_TYPES[input_type]).reshape(shape)
    scale = np.float32(qnn.input_scale)
    real = (x - qnn.input_zero).astype(np.float32) * scale
    back = ort_kernels.quantize(real, scale, qnn.input_zero, qnn.input_lo, qnn.input_hi)
    if not np.array_equal(back, x):
        raise ValueError(f"{qnn.name}: float inputs do not quantize back to the integer grid")
    return real.reshape(shape)


def _invert_output(qnn: QNN, y: np.ndarray) -> np.ndarray:
    scale = np.asarray(qnn.output_scale, dtype=np.float32).reshape(-1)
    if scale.size > 1:
        scale = scale[qnn.output_channels()]
    q = ort_kernels.rint_to_int(y.astype(np.float64) / scale.astype(np.float64)) + qnn.output_zero
    if not np.array_equal(ort_kernels.dequantize(q, scale, qnn.output_zero), y.astype(np.float32)):
        raise ValueError(f"{qnn.name}: onnxruntime's outputs are not the dequantized integers the model declares")
    return q

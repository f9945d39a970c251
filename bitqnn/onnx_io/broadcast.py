"""Constants of elementwise ops, broadcast over one sample as the IR sees it.

ONNX broadcasts a constant against the whole batch tensor; the IR has no batch axis. These
helpers align a constant with one sample's shape (a leading batch axis must be 1) and, where
a layer wants one value per output channel (a bias, a rescale), check that it is one.
"""

from __future__ import annotations

import numpy as np
import onnx

from bitqnn.onnx_io.graph import Graph


def per_element(graph: Graph, node: onnx.NodeProto, constant: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A constant broadcast over one sample of `shape`, flat (one value if scalar); a batch axis of 1 is dropped."""
    value = np.asarray(constant)
    if value.ndim == len(shape) + 1:
        if value.shape[0] != 1:
            raise graph.fail(f"has a constant of shape {value.shape} that differs across the batch", node)
        value = value[0]
    if value.size == 1:
        return value.reshape(1)
    try:
        broadcast = np.broadcast_shapes(value.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(shape):
        raise graph.fail(f"has a constant of shape {value.shape} that does not broadcast to {shape}", node)
    return np.broadcast_to(value, shape).reshape(-1).copy()


def channel_values(flat: np.ndarray, channels: int) -> np.ndarray | None:
    """A flat per-element constant as one value per axis-0 channel, or None if it varies inside one."""
    if flat.size == 1:
        return flat.reshape(1)
    rows = flat.reshape(channels, -1)
    return None if np.any(rows != rows[:, :1]) else rows[:, 0].copy()

"""Attributes of the shape-bearing ONNX ops, turned into the IR's per-sample geometry.

Float and quantized graphs share Conv, MaxPool, Flatten and Reshape semantics; reading them
in one place keeps the two importers from drifting apart. Tensors in the IR carry no batch
dimension, so every op here must act on each sample separately, and one that would mix or
fix the batch dimension is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bitqnn.onnx_io.graph import Graph
from bitqnn.qnn import MaxPool2d, Reshape


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry of a 2-D Conv or MaxPool, in the IR's conventions."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]


def window(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...], kernel: tuple[int, ...] | None) -> Window:
    """Read kernel_shape, strides, pads, auto_pad and dilations of a 2-D windowed op on (C, H, W)."""
    if len(shape) != 3:
        raise graph.fail(f"needs a (C, H, W) input, gets {shape}", node)
    attrs = graph.attributes(node)
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", kernel or ()))
    if len(kernel) != 2:
        raise graph.fail("only 2-D windows are supported", node)
    strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad == "NOTSET":
        pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(shape[1:], kernel, strides, dilations, upper=auto_pad == "SAME_UPPER")
    else:
        raise graph.fail(f"has an unknown auto_pad '{auto_pad}'", node)
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise graph.fail("only 2-D windows are supported", node)
    return Window(kernel, strides, pads, dilations)


def _same_pads(size, kernel, strides, dilations, upper: bool) -> tuple[int, int, int, int]:
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small = total // 2
        begins.append(small if upper else total - small)
        ends.append(total - begins[-1])
    return (begins[0], begins[1], ends[0], ends[1])


def max_pool(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...]) -> MaxPool2d:
    attrs = graph.attributes(node)
    if len(node.output) > 1 and node.output[1]:
        raise graph.fail("with an Indices output is not supported", node)
    geometry = window(graph, node, shape, None)
    if geometry.dilations != (1, 1):
        raise graph.fail("with dilations is not supported", node)
    layer = MaxPool2d(geometry.kernel, geometry.strides, geometry.pads)
    if attrs.get("ceil_mode", 0):
        floor_shape = _pool_output(shape, layer, ceil=False)
        if floor_shape != _pool_output(shape, layer, ceil=True):
            raise graph.fail("with ceil_mode=1 changes the output size; not supported", node)
    return layer


def _pool_output(shape, layer: MaxPool2d, ceil: bool) -> tuple[int, int]:
    sizes = []
    for n, k, s, a, b in zip(shape[1:], layer.kernel, layer.strides, layer.pads[:2], layer.pads[2:], strict=True):
        span = n + a + b - k
        sizes.append((-(-span // s) if ceil else span // s) + 1)
    return tuple(sizes)


def flatten(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...]) -> Reshape:
    axis = int(graph.attributes(node).get("axis", 1))
    if axis % (len(shape) + 1) != 1:
        raise graph.fail(f"with axis={axis} mixes samples of a batch; only axis=1 is supported", node)
    return Reshape((int(np.prod(shape)),))


def reshape(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...]) -> Reshape:
    """ONNX Reshape whose first target dimension is the batch (0 or -1)."""
    target = [int(v) for v in graph.require_constant(node, 1, "shape").ravel()]
    allow_zero = int(graph.attributes(node).get("allowzero", 0))
    if not target or target[0] not in (0, -1) or (target[0] == 0 and allow_zero):
        raise graph.fail(f"to {target} fixes the batch size; the first dimension must be 0 or -1", node)
    rest = [shape[i] if v == 0 and i < len(shape) else v for i, v in enumerate(target[1:])]
    size = int(np.prod(shape))
    if target[0] == -1:
        if any(v <= 0 for v in rest) or int(np.prod(rest)) != size:
            raise graph.fail(f"to {target} does not keep each sample's {size} values together", node)
    elif rest.count(-1) == 1:
        known = int(np.prod([v for v in rest if v != -1]))
        rest = [size // known if v == -1 else v for v in rest]
    if any(v <= 0 for v in rest) or int(np.prod(rest)) != size:
        raise graph.fail(f"cannot reshape {shape} to {target}", node)
    return Reshape(tuple(rest))

"""Float ONNX models (Gemm, MatMul + Add, Conv, Relu, Clip, MaxPool, Flatten, Reshape) as a FloatNetwork.

The FloatNetwork has no free-standing activation or bias layer, so the walk folds them into
the linear layer before: an Add of a constant becomes its bias, and Relu/Clip become its clip
interval. Relu and Clip commute with MaxPool and Reshape (both are monotone and elementwise),
so they may also sit after those; an Add may not, and is then rejected.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from bitqnn.floatnet import FloatConv2d, FloatDense, FloatLayer, FloatNetwork
from bitqnn.onnx_io import layout
from bitqnn.onnx_io.broadcast import channel_values, per_element
from bitqnn.onnx_io.graph import Graph
from bitqnn.qnn import MaxPool2d, Reshape

PASS_THROUGH = ("Identity", "Dropout")


def import_float(graph: Graph) -> FloatNetwork:
    input_shape, _ = graph.input_dims()
    shape = input_shape
    layers: list[FloatLayer] = []
    tensor = graph.input_name
    node = graph.next_node(tensor)
    while node is not None:
        if node.input[0] != tensor and node.op_type != "Add":
            raise graph.fail(f"must take '{tensor}' as its first input", node)
        if node.op_type in PASS_THROUGH:
            pass
        elif node.op_type in ("Relu", "Clip"):
            _fold_clip(graph, node, layers, _clip_interval(graph, node))
        elif node.op_type == "Add":
            _fold_bias(graph, node, layers, shape, tensor)
        else:
            layer = _layer(graph, node, shape)
            layers.append(layer)
            shape = _float_shape(graph, node, layer, shape)
        tensor = node.output[0]
        node = graph.next_node(tensor)
    return FloatNetwork(input_shape, tuple(layers), name=Path(graph.label).stem)


def _layer(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...]) -> FloatLayer:
    op = node.op_type
    if op == "Gemm":
        return _gemm(graph, node, shape)
    if op == "MatMul":
        weight = _matrix(graph, node, shape, transposed=False)
        return FloatDense(weight, np.zeros(weight.shape[0]))
    if op == "Conv":
        weight = graph.require_constant(node, 1, "weight").astype(np.float64)
        if weight.ndim != 4:
            raise graph.fail(f"needs a 4-D weight, has shape {weight.shape}", node)
        geometry = layout.window(graph, node, shape, weight.shape[2:])
        group = int(graph.attributes(node).get("group", 1))
        bias = _bias(graph, node, graph.optional_constant(node, 2, "bias"), weight.shape[0])
        return FloatConv2d(weight, bias, geometry.strides, geometry.pads, geometry.dilations, group)
    if op == "MaxPool":
        return layout.max_pool(graph, node, shape)
    if op == "Flatten":
        return layout.flatten(graph, node, shape)
    if op == "Reshape":
        return layout.reshape(graph, node, shape)
    raise graph.fail("is not supported", node)


def _gemm(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...]) -> FloatDense:
    attrs = graph.attributes(node)
    if attrs.get("transA", 0):
        raise graph.fail("with transA=1 is not supported", node)
    weight = _matrix(graph, node, shape, transposed=bool(attrs.get("transB", 0)))
    bias = _bias(graph, node, graph.optional_constant(node, 2, "bias"), weight.shape[0])
    return FloatDense(float(attrs.get("alpha", 1.0)) * weight, float(attrs.get("beta", 1.0)) * bias)


def _matrix(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...], transposed: bool) -> np.ndarray:
    """The constant weight of Gemm / MatMul as float64 [out, in], checked against the flat input."""
    weight = graph.require_constant(node, 1, "weight").astype(np.float64)
    if weight.ndim != 2:
        raise graph.fail(f"needs a 2-D weight, has shape {weight.shape}", node)
    weight = weight if transposed else weight.T.copy()
    if len(shape) != 1 or shape[0] != weight.shape[1]:
        raise graph.fail(f"expects a flat input of {weight.shape[1]} values, gets shape {shape}", node)
    return weight


def _bias(graph: Graph, node: onnx.NodeProto, bias: np.ndarray | None, channels: int) -> np.ndarray:
    return np.zeros(channels) if bias is None else _channel_vector(graph, node, bias, (channels,))


def _channel_vector(graph: Graph, node: onnx.NodeProto, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A constant that adds one value per output channel (axis 0 of `shape`), as float64 [channels]."""
    flat = per_element(graph, node, value, shape).astype(np.float64)
    channels = channel_values(flat, shape[0])
    if channels is None:
        raise graph.fail(f"has a constant of shape {np.shape(value)} that is not a per-channel bias", node)
    return np.broadcast_to(channels, (shape[0],)).copy()


def _fold_bias(graph: Graph, node: onnx.NodeProto, layers: list[FloatLayer], shape: tuple[int, ...],
               tensor: str) -> None:
    """Add(x, c) right after a linear layer without clip: c joins its bias."""
    other = [name for name in node.input if name != tensor]
    if len(other) != 1 or graph.constant(other[0]) is None:
        raise graph.fail("adds two varying tensors; only a constant bias is supported", node)
    last = layers[-1] if layers else None
    if not isinstance(last, FloatDense | FloatConv2d) or last.clip is not None:
        raise graph.fail("adds a constant that does not directly follow a linear layer", node)
    layers[-1] = replace(last, bias=last.bias + _channel_vector(graph, node, graph.constant(other[0]), shape))


def _clip_interval(graph: Graph, node: onnx.NodeProto) -> tuple[float, float]:
    if node.op_type == "Relu":
        return (0.0, float("inf"))
    attrs = graph.attributes(node)
    lo = graph.optional_constant(node, 1, "min")
    hi = graph.optional_constant(node, 2, "max")
    lo = float(attrs.get("min", -np.inf)) if lo is None else float(lo)
    hi = float(attrs.get("max", np.inf)) if hi is None else float(hi)
    return (lo, hi)


def _fold_clip(graph: Graph, node: onnx.NodeProto, layers: list[FloatLayer], interval: tuple[float, float]) -> None:
    """Clip commutes with MaxPool and Reshape, so it joins the nearest linear layer before them."""
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if isinstance(layer, FloatDense | FloatConv2d):
            layers[index] = replace(layer, clip=compose_clips(layer.clip, interval))
            return
        if not isinstance(layer, MaxPool2d | Reshape):
            break
    raise graph.fail("does not follow a linear layer", node)


def compose_clips(first: tuple[float, float] | None, second: tuple[float, float]) -> tuple[float, float]:
    """clip(clip(x, a, b), c, d) == clip(x, clip(a, c, d), clip(b, c, d))."""
    if first is None:
        return second
    lo, hi = second
    return (min(max(first[0], lo), hi), min(max(first[1], lo), hi))


def _float_shape(graph: Graph, node: onnx.NodeProto, layer: FloatLayer, shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return FloatNetwork(shape, (layer,)).shapes[-1]
    except ValueError as exc:
        raise graph.fail(str(exc), node) from exc

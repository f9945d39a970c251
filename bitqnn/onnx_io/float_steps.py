"""Elementwise float32 ops with constants that onnxruntime runs between integer tensors.

Where onnxruntime does not fuse a node into an integer kernel -- a DequantizeLinear -> Add ->
QuantizeLinear island, or the Cast -> Mul -> Add -> QuantizeLinear tail of MatMulInteger --
it runs plain IEEE float32 arithmetic, which numpy float32 reproduces bit for bit. A chain of
such steps, read here from the graph, is an exact per-element function of its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bitqnn.onnx_io.graph import Graph

F32 = np.float32
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min"}


@dataclass(frozen=True, eq=False)
class FloatStep:
    """x <- x (op) constant[index], in float32; the constant is indexed per element or per channel."""

    op: str  # add, sub, mul, div, max, min, rsub (constant - x)
    constant: np.ndarray  # float32, flat

    def __call__(self, values: np.ndarray, index: np.ndarray) -> np.ndarray:
        c = self.constant[0] if self.constant.size == 1 else self.constant[index]
        c = np.asarray(c, dtype=F32)
        if self.op == "add":
            return values + c
        if self.op == "sub":
            return values - c
        if self.op == "rsub":
            return c - values
        if self.op == "mul":
            return values * c
        if self.op == "div":
            return values / c
        if self.op == "max":
            return np.maximum(values, c)
        return np.minimum(values, c)

    @property
    def monotone(self) -> bool:
        """Non-decreasing in x, as requantization must be."""
        if self.op in ("mul", "div"):
            return bool(np.all(self.constant > 0))
        return self.op != "rsub"

    def per_channel(self, channels: int) -> FloatStep | None:
        """The same step with one constant per axis-0 channel, or None if it varies inside one."""
        if self.constant.size == 1:
            return self
        rows = self.constant.reshape(channels, -1)
        if np.any(rows != rows[:, :1]):
            return None
        return FloatStep(self.op, rows[:, 0].copy())


def apply_steps(steps: tuple[FloatStep, ...], values: np.ndarray, index: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=F32)
    for step in steps:
        values = step(values, index)
    return values


def read_steps(graph: Graph, tensor: str, shape: tuple[int, ...]) -> tuple[tuple[FloatStep, ...], onnx.NodeProto]:
    """Follow elementwise float nodes from `tensor` up to the QuantizeLinear that ends them.

    Any other node means onnxruntime computes something in float that has no exact integer
    meaning here, and is rejected by name.
    """
    steps: list[FloatStep] = []
    node = graph.next_node(tensor)
    while node is not None and node.op_type != "QuantizeLinear":
        steps.extend(_node_steps(graph, node, tensor, shape))
        tensor = node.output[0]
        node = graph.next_node(tensor)
    if node is None:
        raise graph.fail(f"float tensor '{tensor}' reaches the graph output without a QuantizeLinear")
    return tuple(steps), node


def _node_steps(graph: Graph, node: onnx.NodeProto, tensor: str, shape: tuple[int, ...]) -> list[FloatStep]:
    op = node.op_type
    if op == "Relu":
        return [FloatStep("max", np.zeros(1, F32))]
    if op == "Clip":
        attrs = graph.attributes(node)
        bounds = [graph.optional_constant(node, i, name) for i, name in ((1, "min"), (2, "max"))]
        lo = np.float32(attrs.get("min", -np.inf)) if bounds[0] is None else bounds[0]
        hi = np.float32(attrs.get("max", np.inf)) if bounds[1] is None else bounds[1]
        return [FloatStep("max", per_element(graph, node, lo, shape)), FloatStep("min", per_element(graph, node, hi, shape))]
    if op in ("Identity", "Dropout"):
        return []
    if op not in BINARY or len(node.input) != 2:
        raise graph.fail("is not supported here: onnxruntime runs it in floating point, outside an integer kernel",
                         node)
    first = node.input[0] == tensor
    other = node.input[1] if first else node.input[0]
    constant = graph.constant(other)
    if constant is None or (node.input[0] == node.input[1]):
        raise graph.fail("combines two varying tensors; only a constant operand is supported", node)
    name = BINARY[op]
    if op == "Sub" and not first:
        name = "rsub"
    elif op == "Div" and not first:
        raise graph.fail("divides a constant by a varying tensor; not supported", node)
    return [FloatStep(name, per_element(graph, node, constant, shape))]


def per_element(graph: Graph, node: onnx.NodeProto, constant: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A constant broadcast over one sample of `shape`, flat float32; a leading batch axis of 1 is dropped."""
    value = np.asarray(constant, dtype=F32)
    if value.ndim == len(shape) + 1:
        if value.shape[0] != 1:
            raise graph.fail(f"has a constant of shape {value.shape} that differs across the batch", node)
        value = value[0]
    if value.size == 1:
        return value.reshape(1)
    try:
        if np.broadcast_shapes(value.shape, shape) != tuple(shape):
            raise ValueError
        return np.broadcast_to(value, shape).reshape(-1).copy()
    except ValueError:
        raise graph.fail(f"has a constant of shape {value.shape} that does not broadcast to {shape}", node) from None

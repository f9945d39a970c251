"""Elementwise float32 ops with constants that onnxruntime runs between integer tensors.

Where onnxruntime does not fuse a node into an integer kernel -- a DequantizeLinear -> Add ->
QuantizeLinear island, or the Cast -> Mul -> Add -> QuantizeLinear tail of MatMulInteger --
it runs plain IEEE float32 arithmetic, which numpy float32 reproduces bit for bit. A chain of
such steps, read here from the graph, is an exact per-element function of its input. The tail
of a last MatMulInteger may also end at the graph output itself (`quant_linear`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bitqnn.onnx_io.broadcast import channel_values, per_element
from bitqnn.onnx_io.graph import Graph

F32 = np.float32
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min"}
OPERATIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
              "min": np.minimum, "rsub": lambda values, c: c - values}


@dataclass(frozen=True, eq=False)
class FloatStep:
    """x <- x (op) constant[index], in float32; the constant is indexed per element or per channel."""

    op: str  # add, sub, mul, div, max, min, rsub (constant - x)
    constant: np.ndarray  # float32, flat

    def __call__(self, values: np.ndarray, index: np.ndarray) -> np.ndarray:
        c = self.constant[0] if self.constant.size == 1 else self.constant[index]
        return OPERATIONS[self.op](values, np.asarray(c, dtype=F32))

    @property
    def monotone(self) -> bool:
        """Non-decreasing in x, as requantization must be."""
        if self.op in ("mul", "div"):
            return bool(np.all(self.constant > 0))
        return self.op != "rsub"

    def per_channel(self, channels: int) -> FloatStep | None:
        """The same step with one constant per axis-0 channel, or None if it varies inside one."""
        values = channel_values(self.constant, channels)
        return None if values is None else FloatStep(self.op, values)


def apply_steps(steps: tuple[FloatStep, ...], values: np.ndarray, index: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=F32)
    for step in steps:
        values = step(values, index)
    return values


def read_steps(graph: Graph, tensor: str, shape: tuple[int, ...],
               to_output: bool = False) -> tuple[tuple[FloatStep, ...], onnx.NodeProto | None]:
    """Follow elementwise float nodes from `tensor` up to the QuantizeLinear that ends them.

    Any other node means onnxruntime computes something in float that has no exact integer
    meaning here, and is rejected by name. With `to_output`, the steps may instead reach the
    graph output (a float output), and the QuantizeLinear returned is None.
    """
    steps: list[FloatStep] = []
    node = graph.next_node(tensor)
    while node is not None and node.op_type != "QuantizeLinear":
        steps.extend(_node_steps(graph, node, tensor, shape))
        tensor = node.output[0]
        node = graph.next_node(tensor)
    if node is None and not to_output:
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
        return [FloatStep("max", per_element(graph, node, lo, shape).astype(F32)),
                FloatStep("min", per_element(graph, node, hi, shape).astype(F32))]
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
    return [FloatStep(name, per_element(graph, node, constant, shape).astype(F32))]

"""Elementwise ops on a quantized tensor as Lookup layers: QLinearAdd with a constant, float islands.

Whatever onnxruntime computes from one quantized element and constants is a function of that
element's integer alone, so it is tabulated over the tensor's whole storage range with the
exact kernel emulations of `ort_kernels` and `float_steps`. The table is kept as small as
the constants allow: one row when they are scalars, one per channel when they vary only
along axis 0, else one per element (between two Reshapes, since Lookup rows follow axis 0).
"""

from __future__ import annotations

import numpy as np
import onnx

from bitqnn.onnx_io import ort_kernels
from bitqnn.onnx_io.broadcast import per_element
from bitqnn.onnx_io.chain import Chain, quant_params
from bitqnn.onnx_io.float_steps import apply_steps, read_steps
from bitqnn.qnn import Layer, Lookup, Reshape


def qlinear_add(chain: Chain, node: onnx.NodeProto) -> str:
    """com.microsoft QLinearAdd(A, sA, zA, B, sB, zB, sC, zC) of the chain tensor and a constant."""
    graph = chain.graph
    if chain.tensor not in (node.input[0], node.input[3]) or node.input[0] == node.input[3]:
        raise graph.fail("must add the chain tensor and a constant", node)
    x_slot = 0 if node.input[0] == chain.tensor else 3
    c_slot = 3 - x_slot
    constant = graph.constant(node.input[c_slot])
    if constant is None:
        raise graph.fail("adds two varying tensors; only a constant operand is supported", node)
    x_params = quant_params(graph, node, x_slot + 1, x_slot + 2)
    c_params = quant_params(graph, node, c_slot + 1, c_slot + 2)
    out = quant_params(graph, node, 6, 7)
    chain.check_read(node, x_params)
    c_values = per_element(graph, node, constant, chain.shape).astype(np.int64)
    x_values = chain.values()[None, :]
    c_values = c_values[:, None]
    x_role = (x_values, float(x_params.scale[0]), x_params.zero)
    c_role = (c_values, float(c_params.scale[0]), c_params.zero)
    constant_is_b = ort_kernels.constant_plays_b(x_slot == 0, np.shape(constant), chain.shape)
    a, b = (x_role, c_role) if constant_is_b else (c_role, x_role)
    table = ort_kernels.qlinear_add(*a, *b, float(out.scale[0]), out.zero, out.lo, out.hi)
    table = np.broadcast_to(table, (int(np.prod(chain.shape)), x_values.size))
    return chain.push(node, table_layers(table, chain.shape, chain.quant.lo), node.output[0], out)


def float_island(chain: Chain, node: onnx.NodeProto) -> str:
    """DequantizeLinear -> elementwise float ops -> QuantizeLinear that onnxruntime left unfused."""
    graph = chain.graph
    params = quant_params(graph, node, 1, 2)
    chain.check_read(node, params)
    steps, quantize = read_steps(graph, node.output[0], chain.shape)
    out = quant_params(graph, quantize, 1, 2)
    size = int(np.prod(chain.shape))
    real = ort_kernels.dequantize(chain.values()[None, :], params.scale[0], params.zero)
    positions = np.arange(size)[:, None]
    values = apply_steps(steps, np.broadcast_to(real, (size, real.shape[1])), positions)
    table = ort_kernels.quantize(values, out.scale[0], out.zero, out.lo, out.hi)
    return chain.push(quantize, table_layers(table, chain.shape, chain.quant.lo), quantize.output[0], out)


def table_layers(table: np.ndarray, shape: tuple[int, ...], input_lo: int) -> list[Layer]:
    """The fewest-row Lookup for a per-element table [elements, values] over a tensor of `shape`."""
    table = np.asarray(table, dtype=np.int64)
    if np.all(table == table[:1]):
        return [Lookup(table[:1].copy(), input_lo)]
    by_channel = table.reshape(shape[0], -1, table.shape[1])
    if np.all(by_channel == by_channel[:, :1]):
        return [Lookup(by_channel[:, 0].copy(), input_lo)]
    size = table.shape[0]
    return [Reshape((size,)), Lookup(table.copy(), input_lo), Reshape(tuple(shape))]

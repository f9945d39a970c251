"""Quantized models (QDQ or QOperator) as the QNN that onnxruntime's integer kernels compute.

The walk runs over the graph onnxruntime executes (`ort_fusion`), from the QuantizeLinear on
the input to the DequantizeLinear on the output, one handler per op: the integer matrix
kernels become Dense/Conv2d (`quant_linear`), elementwise ops become Lookup tables
(`quant_elementwise`), and int8 MaxPool, Flatten and Reshape map one to one. ReLU and Clip
have already vanished into output clamps by then -- the quantizer drops them when the output
zero point is the type's minimum, and onnxruntime fuses the rest -- or sit in a float island.

onnxruntime may run int8 activations on a uint8 grid; `regrid` moves the network's two ends
back onto the grids the file declares, so inputs and outputs are the file's integers.

The output is the final DequantizeLinear's grid, or, for a last MatMulInteger or ConvInteger
whose float tail is the graph output (an accumulator output, `quant_linear`), the accumulator
itself on the scale of that tail. Its float32 tail computes the accumulator exactly only below
2**24 in magnitude, so interval bounds over the whole input box must show that it stays there.

The accumulators are int32 and wrap like the hardware's (overflow="wrap"). The semantics
string names the platform, because QLinearAdd's arithmetic differs between onnxruntime's
x86-64 and ARM kernels. One corner depends on the batch size: a QLinearAdd whose constant
has the full rank and one element, on a tensor of one element per sample, rounds like a
batch of more than one sample (`ort_kernels.constant_plays_b`).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from bitqnn.bounds import interval_bounds
from bitqnn.onnx_io import layout, quant_elementwise, quant_linear, regrid
from bitqnn.onnx_io.chain import Chain, Quant, quant_params, storage_range
from bitqnn.onnx_io.fold_clamps import fold_clamps
from bitqnn.onnx_io.graph import Graph
from bitqnn.onnx_io.ort_fusion import fused_graph
from bitqnn.onnx_io.quant_linear import FLOAT32_EXACT
from bitqnn.qnn import QNN, Conv2d, Dense
from bitqnn.query import Box
from bitqnn.requant import Rounding

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QGemm", "QLinearMatMul", "QLinearConv", "QLinearAdd",
                 "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
# float ops that onnxruntime fuses into integer kernels or that may stay in a float island
FUSABLE_OPS = {"Gemm", "MatMul", "Conv", "Add", "Sub", "Mul", "Div", "Max", "Min", "Relu", "Clip", "MaxPool",
               "Flatten", "Reshape", "Identity", "Dropout", "Cast"}
INTEGER_INPUTS = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}


def is_quantized(graph: Graph) -> bool:
    return bool(graph.op_types() & QUANTIZED_OPS)


def semantics() -> str:
    return f"onnxruntime {ort.__version__} integer kernels ({platform.machine()} CPU)"


def import_quantized(graph: Graph) -> QNN:
    for node in graph.nodes:
        if node.op_type in DYNAMIC_OPS:
            raise graph.fail("is dynamic quantization (its scale depends on the input); not supported", node)
        if node.op_type not in QUANTIZED_OPS | FUSABLE_OPS:
            raise graph.fail("is not supported", node)
    declared_input, declared_output = _input_quant(graph), _declared_output_quant(graph)
    fused = fused_graph(graph)
    executed_input = _input_quant(fused)
    chain = Chain(fused, _input_tensor(fused), fused.input_dims()[0], executed_input)
    executed_output = _walk(chain)
    declared_output = declared_output or executed_output
    layers, scales = fold_clamps(chain.layers, chain.scales)
    layers = _declared_grids(graph, layers, (executed_input, declared_input), (executed_output, declared_output))
    qnn = QNN(fused.input_dims()[0], declared_input.lo, declared_input.hi, tuple(layers),
              input_scale=float(declared_input.scale[0]), input_zero=declared_input.zero,
              output_scale=declared_output.scale.astype(np.float64), output_zero=declared_output.zero,
              accumulator_bits=32, overflow="wrap", input_rounding=Rounding.HALF_EVEN,
              semantics=semantics(), name=Path(graph.label).stem, layer_scales=tuple(scales),
              onnx_path=str(graph.path) if graph.path is not None else None)
    _check_accumulator_output(fused, qnn)
    return qnn


def _walk(chain: Chain) -> Quant:
    """Run the handlers from the input to the output; the quantization of the output integers."""
    graph = chain.graph
    output_quant = chain.quant
    node = graph.next_node(chain.tensor)
    while node is not None:
        if node.op_type == "DequantizeLinear" and node.output[0] == graph.output_name:
            output_quant = _dequantize_quant(graph, node, chain.shape)
            chain.check_read(node, output_quant)
            chain.tensor = node.output[0]
        else:
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise graph.fail("is not supported", node)
            if chain.tensor not in node.input:
                raise graph.fail(f"does not read the chain tensor '{chain.tensor}'", node)
            handler(chain, node)
            output_quant = chain.quant
        node = graph.next_node(chain.tensor)
    return output_quant


def _check_accumulator_output(graph: Graph, qnn: QNN) -> None:
    """An accumulator output (identity last stage) must stay float32-exact over the whole input box.

    The tail is Cast(A) -> + bias -> * 2**k with A the bias-free int32 product, so A, the bias
    and acc = A + bias must all stay below 2**24 in magnitude (the bias was checked on reading).
    """
    index = len(qnn.layers) - 1
    last = qnn.layers[index]
    if not isinstance(last, Dense | Conv2d) or last.output.requant is not None:
        return
    box = Box(np.full(qnn.input_size, qnn.input_lo, np.int64), np.full(qnn.input_size, qnn.input_hi, np.int64))
    bounds = interval_bounds(qnn, box).layers[index]
    bias = last.bias[qnn.linear_form(index).channels]
    reach = int(max(np.abs(bounds.acc_lo).max(), np.abs(bounds.acc_hi).max(),
                    np.abs(bounds.acc_lo - bias).max(), np.abs(bounds.acc_hi - bias).max()))
    if reach >= FLOAT32_EXACT:
        raise graph.fail(f"outputs its last accumulator through float32, which is exact only below 2**24, and the "
                         f"accumulators may reach magnitude {reach} over the input range",
                         graph.producer(graph.output_name))


def _input_tensor(graph: Graph) -> str:
    """The first integer tensor: the input itself, or the output of the QuantizeLinear reading it."""
    if graph.input_elem_type in INTEGER_INPUTS:
        return graph.input_name
    return graph.next_node(graph.input_name).output[0]


def _input_quant(graph: Graph) -> Quant:
    """The input grid: the QuantizeLinear that reads the float input, or the integer input's type."""
    if graph.input_elem_type in INTEGER_INPUTS:
        lo, hi = INTEGER_INPUTS[graph.input_elem_type]
        return Quant(np.ones(1, np.float32), 0, lo, hi)
    node = graph.next_node(graph.input_name)
    if node is None or node.op_type != "QuantizeLinear" or node.input[0] != graph.input_name:
        raise graph.fail(f"input '{graph.input_name}' must feed a QuantizeLinear (a statically quantized model)")
    return quant_params(graph, node, 1, 2)


def _declared_output_quant(graph: Graph) -> Quant | None:
    """The final DequantizeLinear's parameters as the file declares them (None for an integer or accumulator output)."""
    node = graph.producer(graph.output_name)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    return _dequantize_quant(graph, node, None)


def _dequantize_quant(graph: Graph, node: onnx.NodeProto, shape: tuple[int, ...] | None) -> Quant:
    """A final DequantizeLinear: real outputs = scale[channel] * (y - zero)."""
    scale = graph.require_constant(node, 1, "scale").astype(np.float32).reshape(-1)
    zero = graph.optional_constant(node, 2, "zero point")
    zero = np.zeros(1, np.uint8) if zero is None else zero.reshape(-1)
    if np.any(zero != zero[0]) or (shape is not None and scale.size not in (1, shape[0])):
        raise graph.fail("must dequantize per tensor or per axis-0 channel with one zero point", node)
    if scale.size > 1 and int(graph.attributes(node).get("axis", 1)) != 1:
        raise graph.fail("must dequantize along the channel axis", node)
    lo, hi = storage_range(graph, node, zero)
    return Quant(scale, int(zero[0]), lo, hi)


def _declared_grids(graph: Graph, layers: list, inputs: tuple[Quant, Quant], outputs: tuple[Quant, Quant]) -> list:
    """Undo onnxruntime's int8 -> uint8 rewrite at both ends (see `regrid`)."""
    for (executed, declared), move in ((inputs, regrid.shift_input), (outputs, regrid.shift_output)):
        shift = regrid.grid_shift(executed, declared)
        if shift is None:
            raise graph.fail("is executed by onnxruntime on a different quantization grid than it declares")
        if shift:
            try:
                layers = move(layers, shift)
            except ValueError as exc:
                raise graph.fail(f"cannot be moved back to its declared grid ({exc})") from exc
    return layers


def _same(layer_of: Callable | None) -> Callable[[Chain, onnx.NodeProto], str]:
    """A handler for an op that keeps the integers (and their quantization) as they are."""
    def handle(chain: Chain, node: onnx.NodeProto) -> str:
        layers = [] if layer_of is None else [layer_of(chain.graph, node, chain.shape)]
        return chain.push(node, layers, node.output[0])
    return handle


HANDLERS: dict[str, Callable[[Chain, onnx.NodeProto], str]] = {
    "QGemm": quant_linear.qgemm,
    "QLinearMatMul": quant_linear.qlinear_matmul,
    "QLinearConv": quant_linear.qlinear_conv,
    "MatMulInteger": quant_linear.matmul_integer,
    "ConvInteger": quant_linear.conv_integer,
    "QLinearAdd": quant_elementwise.qlinear_add,
    "DequantizeLinear": quant_elementwise.float_island,
    "MaxPool": _same(layout.max_pool),
    "Flatten": _same(layout.flatten),
    "Reshape": _same(layout.reshape),
    "Identity": _same(None),
}

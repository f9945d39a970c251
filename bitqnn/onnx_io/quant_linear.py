"""Integer matrix kernels as Dense / Conv2d layers: QGemm, QLinearMatMul, QLinearConv, MatMulInteger, ConvInteger.

The accumulator is exact int32 arithmetic in every one of them (with QGemm's and
QLinearConv's int32 bias inside it). They differ only in how the accumulator leaves:
QGemm, QLinearMatMul and QLinearConv requantize with one float32 multiplier per channel
(`ort_kernels.qlinear_multiplier`, `Float32Requant`); MatMulInteger and ConvInteger leave
through the float32 Cast -> Mul/Add/... -> QuantizeLinear nodes that follow them
(`Float32ChainRequant`), which needs their scales to be constants -- dynamic quantization,
whose scale depends on the input, has no such fixed meaning.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from bitqnn.onnx_io import layout
from bitqnn.onnx_io.chain import Chain, Quant, quant_params, scalar, storage_range
from bitqnn.onnx_io.float_steps import FloatStep, read_steps
from bitqnn.onnx_io.ort_kernels import qlinear_multiplier
from bitqnn.onnx_io.requant_ort import Float32ChainRequant
from bitqnn.qnn import Conv2d, Dense, output_shape, storage_of_dtype
from bitqnn.requant import Float32Requant, OutputStage


def qgemm(chain: Chain, node: onnx.NodeProto) -> str:
    """com.microsoft QGemm: A, a_scale, a_zp, B, b_scale, b_zp, C, y_scale, y_zp."""
    graph = chain.graph
    attrs = graph.attributes(node)
    if attrs.get("transA", 0):
        raise graph.fail("with transA=1 is not supported", node)
    if len(node.input) < 9 or not node.input[7]:
        raise graph.fail("with a float output is not supported", node)
    weight = _matrix(chain, node, 3, transposed=bool(attrs.get("transB", 0)))
    bias = graph.optional_constant(node, 6, "bias")
    return _dense(chain, node, weight, bias, y_index=7, alpha=float(attrs.get("alpha", 1.0)))


def qlinear_matmul(chain: Chain, node: onnx.NodeProto) -> str:
    """QLinearMatMul: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp; no bias."""
    weight = _matrix(chain, node, 3, transposed=False)
    return _dense(chain, node, weight, None, y_index=6, alpha=1.0)


def qlinear_conv(chain: Chain, node: onnx.NodeProto) -> str:
    """QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B."""
    graph = chain.graph
    if graph.attributes(node).get("channels_last", 0):
        raise graph.fail("with channels_last=1 is not supported", node)
    weight = graph.require_constant(node, 3, "weight")
    conv = _conv_geometry(chain, node, weight)
    channels = weight.shape[0]
    bias = graph.optional_constant(node, 8, "bias")
    stage, quant = _qlinear_stage(chain, node, channels, y_index=6, alpha=1.0)
    layer = Conv2d(weight.astype(np.int64), _weight_zero(chain, node, 5, channels), _input_zero(chain, node, 1, 2),
                   _bias(chain, node, bias, channels), stage, **conv, **_storage(weight, bias))
    return chain.push(node, [layer], node.output[0], quant)


def matmul_integer(chain: Chain, node: onnx.NodeProto) -> str:
    """MatMulInteger: a, b, a_zp, b_zp -> int32, then a float tail down to a QuantizeLinear."""
    weight = _matrix(chain, node, 1, transposed=False)
    stage, quant, tensor = _float_tail(chain, node, (weight.shape[0],))
    layer = Dense(weight.astype(np.int64), _weight_zero(chain, node, 3, weight.shape[0]),
                  _integer_input_zero(chain, node, 2), np.zeros(weight.shape[0], np.int64), stage,
                  **_storage(weight, None))
    return chain.push(node, [layer], tensor, quant)


def conv_integer(chain: Chain, node: onnx.NodeProto) -> str:
    """ConvInteger: x, w, x_zp, w_zp -> int32, then a float tail down to a QuantizeLinear."""
    graph = chain.graph
    weight = graph.require_constant(node, 1, "weight")
    conv = _conv_geometry(chain, node, weight)
    channels = weight.shape[0]
    probe = Conv2d(weight.astype(np.int64), np.zeros(1, np.int64), 0, np.zeros(channels, np.int64), None, **conv)
    out_shape = _shape_after(chain, node, probe)
    stage, quant, tensor = _float_tail(chain, node, out_shape)
    layer = Conv2d(weight.astype(np.int64), _weight_zero(chain, node, 3, channels), _integer_input_zero(chain, node, 2),
                   np.zeros(channels, np.int64), stage, **conv, **_storage(weight, None))
    return chain.push(node, [layer], tensor, quant)


def _matrix(chain: Chain, node: onnx.NodeProto, index: int, transposed: bool) -> np.ndarray:
    """The constant weight as [out, in], checked against the flat chain input."""
    graph = chain.graph
    weight = graph.require_constant(node, index, "weight")
    if weight.ndim != 2:
        raise graph.fail(f"needs a 2-D weight, has shape {weight.shape}", node)
    weight = weight if transposed else weight.T
    if len(chain.shape) != 1 or chain.shape[0] != weight.shape[1]:
        raise graph.fail(f"expects a flat input of {weight.shape[1]} values, gets shape {chain.shape}", node)
    return weight


def _conv_geometry(chain: Chain, node: onnx.NodeProto, weight: np.ndarray) -> dict:
    graph = chain.graph
    if weight.ndim != 4:
        raise graph.fail(f"needs a 4-D weight, has shape {weight.shape}", node)
    geometry = layout.window(graph, node, chain.shape, weight.shape[2:])
    return {"strides": geometry.strides, "pads": geometry.pads, "dilations": geometry.dilations,
            "group": int(graph.attributes(node).get("group", 1))}


def _dense(chain: Chain, node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None, y_index: int,
           alpha: float) -> str:
    channels = weight.shape[0]
    stage, quant = _qlinear_stage(chain, node, channels, y_index, alpha)
    layer = Dense(weight.astype(np.int64), _weight_zero(chain, node, 5, channels), _input_zero(chain, node, 1, 2),
                  _bias(chain, node, bias, channels), stage, **_storage(weight, bias))
    return chain.push(node, [layer], node.output[0], quant)


def _qlinear_stage(chain: Chain, node: onnx.NodeProto, channels: int, y_index: int, alpha: float):
    """clamp(rint(float32(acc) * M[c]) + y_zero) with M = (alpha * a_scale * b_scale[c]) / y_scale."""
    graph = chain.graph
    a_scale = scalar(graph, node, graph.require_constant(node, 1, "input scale"), "input scale")
    b_scale = _per_channel(chain, node, graph.require_constant(node, 4, "weight scale"), channels, "weight scale")
    out = quant_params(graph, node, y_index, y_index + 1)
    multiplier = qlinear_multiplier(float(a_scale), b_scale, float(out.scale[0]), alpha)
    return OutputStage(Float32Requant(multiplier), out.zero, out.lo, out.hi), out


def _float_tail(chain: Chain, node: onnx.NodeProto, out_shape: tuple[int, ...]):
    """Cast(float) -> elementwise float steps -> QuantizeLinear after an int32 accumulator."""
    graph = chain.graph
    cast = graph.next_node(node.output[0])
    if cast is None or cast.op_type != "Cast" or graph.attributes(cast).get("to") != TensorProto.FLOAT:
        raise graph.fail("must be followed by a Cast to float and a float rescale down to a QuantizeLinear", node)
    steps, quantize = read_steps(graph, cast.output[0], out_shape)
    out = quant_params(graph, quantize, 1, 2)
    steps = steps + (FloatStep("div", out.scale),)
    per_channel = [step.per_channel(out_shape[0]) for step in steps]
    if any(step is None for step in per_channel):
        raise graph.fail("is rescaled by a constant that varies inside an output channel", node)
    try:
        requant = Float32ChainRequant(tuple(per_channel))
    except ValueError:
        raise graph.fail("is rescaled by a decreasing float step (a negative or reversed operand)", node) from None
    return OutputStage(requant, out.zero, out.lo, out.hi), out, quantize.output[0]


def _shape_after(chain: Chain, node: onnx.NodeProto, layer: Conv2d) -> tuple[int, ...]:
    try:
        return output_shape(layer, chain.shape)
    except ValueError as exc:
        raise chain.graph.fail(str(exc), node) from exc


def _per_channel(chain: Chain, node: onnx.NodeProto, value: np.ndarray, channels: int, what: str) -> np.ndarray:
    if value.size not in (1, channels):
        raise chain.graph.fail(f"has a {what} of shape {value.shape}; expected one value or {channels}", node)
    return value.reshape(-1)


def _weight_zero(chain: Chain, node: onnx.NodeProto, index: int, channels: int) -> np.ndarray:
    zero = chain.graph.optional_constant(node, index, "weight zero point")
    if zero is None:
        return np.zeros(1, np.int64)
    return _per_channel(chain, node, zero, channels, "weight zero point").astype(np.int64)


def _input_zero(chain: Chain, node: onnx.NodeProto, scale_index: int, zero_index: int) -> int:
    """The kernel's own input zero point; it must describe the chain tensor's storage type."""
    params = quant_params(chain.graph, node, scale_index, zero_index)
    chain.check_read(node, params)
    return params.zero


def _integer_input_zero(chain: Chain, node: onnx.NodeProto, index: int) -> int:
    graph = chain.graph
    zero = graph.optional_constant(node, index, "input zero point")
    if zero is None:
        return 0
    zero = scalar(graph, node, zero, "input zero point")
    lo, hi = storage_range(graph, node, zero)
    chain.check_read(node, Quant(chain.quant.scale, int(zero), lo, hi))
    return int(zero)


def _storage(weight: np.ndarray, bias: np.ndarray | None) -> dict:
    """The stored types as the model file has them: what a bit flip in deployment acts on."""
    return {"weight_storage": storage_of_dtype(weight.dtype),
            "bias_storage": None if bias is None else storage_of_dtype(bias.dtype)}


def _bias(chain: Chain, node: onnx.NodeProto, bias: np.ndarray | None, channels: int) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, np.int64)
    squeezed = bias.reshape([d for d in bias.shape if d != 1] or [1])
    if squeezed.ndim != 1 or squeezed.size not in (1, channels):
        raise chain.graph.fail(f"has a bias of shape {bias.shape}; expected one value per output channel", node)
    return np.broadcast_to(squeezed.astype(np.int64), (channels,)).copy()

"""Integer matrix kernels as Dense / Conv2d layers: QGemm, QLinearMatMul, QLinearConv, MatMulInteger, ConvInteger.

The accumulator is exact int32 arithmetic in every one of them (with QGemm's and
QLinearConv's int32 bias inside it). They differ only in how the accumulator leaves:
QGemm, QLinearMatMul and QLinearConv requantize with one float32 multiplier per channel
(`ort_kernels.qlinear_multiplier`, `Float32Requant`); MatMulInteger and ConvInteger leave
through the float32 Cast -> Mul/Add/... -> QuantizeLinear nodes that follow them
(`Float32ChainRequant`), which needs their scales to be constants -- dynamic quantization,
whose scale depends on the input, has no such fixed meaning.

The one float tail that ends at the graph output instead is an accumulator output, and only in
the form Cast(float) -> [Add(integer bias)] -> [Mul(power-of-two scale)]: the graph's float output
is (acc + bias) * scale, with a per-tensor or per-channel bias and scale (0 and 1 where the node is
absent). It becomes the layer's integer bias, the identity output stage (the network outputs
the accumulator) and the output scale. That float32 arithmetic is exact only while the
accumulator, the bias and the bias-free product stay below 2**24 in magnitude, which depends
on the whole network; `quantized` proves it over the input box once the network is read.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from bitqnn.onnx_io import layout
from bitqnn.onnx_io.chain import Chain, Quant, quant_params, scalar, storage_range
from bitqnn.onnx_io.float_steps import FloatStep, read_steps
from bitqnn.onnx_io.fold_clamps import implied_clamp
from bitqnn.onnx_io.ort_kernels import qlinear_multiplier
from bitqnn.onnx_io.requant_ort import Float32ChainRequant
from bitqnn.qnn import Conv2d, Dense, output_shape, storage_of_dtype
from bitqnn.requant import Float32Requant, OutputStage

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # the accumulator's type, the range of an accumulator output
FLOAT32_EXACT = 2**24  # every integer of smaller magnitude is a float32


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
    """MatMulInteger: a, b, a_zp, b_zp -> int32, then a float tail down to a QuantizeLinear or the output."""
    weight = _matrix(chain, node, 1, transposed=False)
    stage, quant, tensor, bias = _float_tail(chain, node, (weight.shape[0],))
    layer = Dense(weight.astype(np.int64), _weight_zero(chain, node, 3, weight.shape[0]),
                  _integer_input_zero(chain, node, 2), bias, stage, **_storage(weight, None))
    return chain.push(node, [layer], tensor, quant)


def conv_integer(chain: Chain, node: onnx.NodeProto) -> str:
    """ConvInteger: x, w, x_zp, w_zp -> int32, then a float tail down to a QuantizeLinear or the output."""
    graph = chain.graph
    weight = graph.require_constant(node, 1, "weight")
    conv = _conv_geometry(chain, node, weight)
    channels = weight.shape[0]
    probe = Conv2d(weight.astype(np.int64), np.zeros(1, np.int64), 0, np.zeros(channels, np.int64), None, **conv)
    out_shape = _shape_after(chain, node, probe)
    stage, quant, tensor, bias = _float_tail(chain, node, out_shape)
    layer = Conv2d(weight.astype(np.int64), _weight_zero(chain, node, 3, channels), _integer_input_zero(chain, node, 2),
                   bias, stage, **conv, **_storage(weight, None))
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
    """Cast(float) -> elementwise float steps -> QuantizeLinear after an int32 accumulator, or the output.

    Returns the output stage, the output quantization, the tensor the chain goes on from, and
    the integer bias that the tail adds (zero unless it is an accumulator output).
    """
    graph = chain.graph
    cast = graph.next_node(node.output[0])
    if cast is None or cast.op_type != "Cast" or graph.attributes(cast).get("to") != TensorProto.FLOAT:
        raise graph.fail("must be followed by a Cast to float and a float rescale down to a QuantizeLinear", node)
    steps, quantize = read_steps(graph, cast.output[0], out_shape, to_output=True)
    if quantize is not None:
        out = quant_params(graph, quantize, 1, 2)
        steps = steps + (FloatStep("div", out.scale),)
    per_channel = [step.per_channel(out_shape[0]) for step in steps]
    if any(step is None for step in per_channel):
        raise graph.fail("is rescaled by a constant that varies inside an output channel", node)
    if quantize is None:
        return _accumulator_output(chain, node, tuple(per_channel), out_shape[0])
    try:
        requant = Float32ChainRequant(tuple(per_channel))
    except ValueError:
        raise graph.fail("is rescaled by a decreasing float step (a negative or reversed operand)", node) from None
    stage = implied_clamp(OutputStage(requant, out.zero, out.lo, out.hi), out_shape[0])
    return stage, out, quantize.output[0], np.zeros(out_shape[0], np.int64)


def _accumulator_output(chain: Chain, node: onnx.NodeProto, steps: tuple[FloatStep, ...], channels: int):
    """Cast -> [Add(integer bias)] -> [Mul(power of two)] as the graph output: the accumulator is the output."""
    graph = chain.graph
    ops = [step.op for step in steps]
    if ops not in ([], ["add"], ["mul"], ["add", "mul"]):
        raise graph.fail(f"reaches the graph output through float ops ({', '.join(ops)}); a float output must be "
                         "the accumulator plus an integer bias times a power of two (Cast -> Add -> Mul)", node)
    constants = {step.op: step.constant.astype(np.float64) for step in steps}
    bias = constants.get("add", np.zeros(1))
    scale = constants.get("mul", np.ones(1))
    if np.any(np.abs(bias) >= FLOAT32_EXACT) or np.any(bias != np.round(bias)):
        raise graph.fail("adds a bias to the accumulator that is not an integer below 2**24 in magnitude", node)
    mantissa, exponent = np.frexp(scale)  # scale = 2**(exponent - 1) exactly when the mantissa is 1/2
    if np.any(mantissa != 0.5) or np.any((exponent - 1 < -126) | (exponent - 1 > 103)):
        raise graph.fail(f"scales the accumulator by {scale.tolist()}; an accumulator output needs a power of two "
                         "in [2**-126, 2**103] (exact float32 products)", node)
    quant = Quant(scale.astype(np.float32), 0, INT32_MIN, INT32_MAX)
    bias = np.broadcast_to(bias.astype(np.int64), (channels,)).copy()
    return OutputStage(None), quant, graph.output_name, bias


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

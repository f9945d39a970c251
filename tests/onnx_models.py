"""ONNX models for the import tests, built at test time (no .onnx files are committed).

Float graphs are written with onnx.helper; quantized ones come from onnxruntime's own
quantize_static, in both formats, so the tests face what users' tools produce. A "stressed"
variant makes the rare cases common: weights twice as large, calibration on inputs of a
third of the test spread (so intermediate values saturate), and every scale snapped to a
power of two (so requantization multipliers are powers of two and ties are frequent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

OPSET = 17
SAMPLES = 10_000  # random grid inputs per bit-exactness check
ARCHITECTURES = ("mlp_gemm", "mlp_matmul", "cnn", "clip")
TYPES = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}
# (activations, weights) pairs that onnxruntime's integer kernels implement
TYPE_PAIRS = (("s8", "s8"), ("u8", "s8"), ("u8", "u8"))
SCALE_INPUTS = {"QuantizeLinear": (1,), "DequantizeLinear": (1,), "QGemm": (1, 4, 7), "QLinearMatMul": (1, 4, 6),
                "QLinearConv": (1, 4, 6), "QLinearAdd": (1, 4, 6)}


def _tensor(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def graph_model(nodes, initializers, input_shape, output_size, opset: int = OPSET, name: str = "model",
                domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A one-input, one-output model with a symbolic batch dimension."""
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", output_size])], initializers)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports, ir_version=9)
    onnx.checker.check_model(model)
    return model


def _dense_stack(rng, sizes, gain, use_matmul: bool, activation) -> tuple[list, list]:
    nodes, inits, source = [], [], "input"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight = rng.normal(0, gain / np.sqrt(n_in), (n_out, n_in))
        inits += [_tensor(f"w{i}", weight.T if use_matmul else weight), _tensor(f"b{i}", rng.normal(0, 0.3, n_out))]
        last = i == len(sizes) - 2
        out = "output" if last else f"h{i}"
        if use_matmul:
            nodes += [helper.make_node("MatMul", [source, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"m{i}", f"b{i}"], [out], name=f"add{i}")]
        else:
            nodes.append(helper.make_node("Gemm", [source, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=1))
        if not last:
            nodes += activation(i, out)
            source = f"a{i}"
    return nodes, inits


def _relu(i: int, tensor: str) -> list:
    return [helper.make_node("Relu", [tensor], [f"a{i}"], name=f"relu{i}")]


def float_model(architecture: str, rng: np.random.Generator, gain: float = 1.0) -> onnx.ModelProto:
    if architecture == "mlp_gemm":
        return graph_model(*_dense_stack(rng, (16, 12, 8, 5), gain, False, _relu), (16,), 5)
    if architecture == "mlp_matmul":
        return graph_model(*_dense_stack(rng, (16, 12, 5), gain, True, _relu), (16,), 5)
    if architecture == "clip":
        def clip(i, tensor):
            return [helper.make_node("Clip", [tensor, "clip_lo", "clip_hi"], [f"a{i}"], name=f"clip{i}")]
        nodes, inits = _dense_stack(rng, (16, 10, 4), gain, False, clip)
        return graph_model(nodes, inits + [_tensor("clip_lo", 0.0), _tensor("clip_hi", 1.0)], (16,), 4)
    if architecture == "cnn":
        inits = [_tensor("conv_w", rng.normal(0, 0.4 * gain, (3, 1, 3, 3))), _tensor("conv_b", rng.normal(0, 0.2, 3)),
                 _tensor("fc_w", rng.normal(0, 0.3 * gain, (5, 27))), _tensor("fc_b", rng.normal(0, 0.2, 5))]
        nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["r"], name="relu"),
                 helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
                 helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1)]
        return graph_model(nodes, inits, (1, 6, 6), 5)
    raise ValueError(architecture)


class _Reader(CalibrationDataReader):
    def __init__(self, samples: np.ndarray):
        self._items = iter({"input": sample[None]} for sample in samples)

    def get_next(self):
        return next(self._items, None)


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])


def quantized_model(folder: Path, architecture: str, fmt: str, activations: str, weights: str, per_channel: bool,
                    stressed: bool, seed: int = 0) -> Path:
    """quantize_static of a random float model; the file path of the quantized model."""
    rng = np.random.default_rng(seed)
    model = float_model(architecture, rng, gain=2.0 if stressed else 1.0)
    tag = f"{architecture}_{fmt}_{activations}{weights}_{'pc' if per_channel else 'pt'}{'_stress' if stressed else ''}"
    source, target = folder / f"{tag}_float.onnx", folder / f"{tag}.onnx"
    onnx.save(model, source)
    spread = 0.33 if stressed else 1.0
    calibration = rng.normal(0, spread, (32, *input_shape(model))).astype(np.float32)
    quantize_static(str(source), str(target), _Reader(calibration),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=TYPES[activations], weight_type=TYPES[weights])
    if stressed:
        onnx.save(snap_scales(onnx.load(target)), target)
    return target


def grid_inputs(qnn, seed: int = 0, count: int = SAMPLES) -> np.ndarray:
    """Uniform random integers over a QNN's input grid, the first two rows all-min and all-max."""
    x = np.random.default_rng(seed).integers(qnn.input_lo, qnn.input_hi + 1, (count, qnn.input_size))
    x[0], x[1] = qnn.input_lo, qnn.input_hi
    return x


def snap_scales(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every scale rounded to a power of two; int32 bias scales kept equal to input scale * weight scale."""
    inits = {t.name: t for t in model.graph.initializer}
    values = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    snapped = set()
    for node in model.graph.node:
        for index in SCALE_INPUTS.get(node.op_type, ()):
            name = node.input[index] if index < len(node.input) else ""
            if name in inits and name not in snapped and not _is_bias_dequantize(node, values):
                values[name] = np.exp2(np.round(np.log2(values[name]))).astype(np.float32)
                snapped.add(name)
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if _is_bias_dequantize(node, values):
            consumer = next(n for n in model.graph.node if node.output[0] in n.input)
            x_scale, w_scale = (values[producers[consumer.input[i]].input[1]] for i in (0, 1))
            values[node.input[1]] = (x_scale * w_scale).astype(np.float32)
    for name, tensor in inits.items():
        tensor.CopyFrom(numpy_helper.from_array(values[name], name))
    return model


def _is_bias_dequantize(node: onnx.NodeProto, values: dict) -> bool:
    return node.op_type == "DequantizeLinear" and values.get(node.input[0], np.zeros(0)).dtype == np.int32


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def float_extras_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Less common float spellings: SAME padding, strides, an Add bias, Relu after MaxPool, Reshape, Gemm attributes."""
    inits = [_tensor("conv_w", rng.normal(0, 0.5, (2, 1, 3, 3))), _tensor("conv_b", rng.normal(0, 0.3, (1, 2, 1, 1))),
             _tensor("fc_w", rng.normal(0, 0.3, (18, 3))), _tensor("fc_b", rng.normal(0, 0.3, 3)),
             numpy_helper.from_array(np.array([0, -1], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["input", "conv_w"], ["c"], name="conv", strides=[2, 2], auto_pad="SAME_UPPER"),
             helper.make_node("Add", ["c", "conv_b"], ["cb"], name="bias"),
             helper.make_node("MaxPool", ["cb"], ["p"], name="pool", kernel_shape=[2, 2]),
             helper.make_node("Relu", ["p"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "flat"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], name="fc", alpha=0.5, beta=2.0),
             helper.make_node("Identity", ["g"], ["output"], name="identity")]
    return graph_model(nodes, inits, (1, 8, 8), 3)


def cnn_with_add_model(rng: np.random.Generator, gain: float = 1.0) -> onnx.ModelProto:
    """Conv without bias, a per-channel Add, Relu, MaxPool and a Reshape: QLinearAdd on a feature map."""
    inits = [_tensor("conv_w", rng.normal(0, 0.4 * gain, (3, 1, 3, 3))),
             _tensor("conv_b", rng.normal(0, 0.3, (3, 1, 1))),
             _tensor("fc_w", rng.normal(0, 0.3 * gain, (5, 27))), _tensor("fc_b", rng.normal(0, 0.2, 5)),
             numpy_helper.from_array(np.array([-1, 27], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["input", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "conv_b"], ["cb"], name="bias"),
             helper.make_node("Relu", ["cb"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "flat"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc", transB=1)]
    return graph_model(nodes, inits, (1, 6, 6), 5)


def quantize_float(model: onnx.ModelProto, folder: Path, tag: str, fmt: str, activations: str, weights: str,
                   per_channel: bool, spread: float = 1.0, seed: int = 0) -> Path:
    source, target = folder / f"{tag}_float.onnx", folder / f"{tag}.onnx"
    onnx.save(model, source)
    calibration = np.random.default_rng(seed).normal(0, spread, (32, *input_shape(model))).astype(np.float32)
    quantize_static(str(source), str(target), _Reader(calibration),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=TYPES[activations], weight_type=TYPES[weights])
    return target


def _integer_tail(name: str, source: str, multiplier, bias, relu: bool, out_scale: float, out_zero: int,
                  dtype) -> tuple[list, list]:
    """Cast -> Mul(multiplier) [-> Add(bias)] [-> Relu] -> QuantizeLinear, after an int32 accumulator."""
    nodes = [helper.make_node("Cast", [source], [f"{name}_f"], name=f"{name}_cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", [f"{name}_f", f"{name}_m"], [f"{name}_scaled"], name=f"{name}_mul")]
    inits = [_tensor(f"{name}_m", multiplier), _tensor(f"{name}_ys", out_scale),
             numpy_helper.from_array(np.array(out_zero, dtype), f"{name}_yz")]
    tensor = f"{name}_scaled"
    if bias is not None:
        nodes.append(helper.make_node("Add", [tensor, f"{name}_b"], [f"{name}_biased"], name=f"{name}_add"))
        inits.append(_tensor(f"{name}_b", bias))
        tensor = f"{name}_biased"
    if relu:
        nodes.append(helper.make_node("Relu", [tensor], [f"{name}_relu"], name=f"{name}_relu"))
        tensor = f"{name}_relu"
    nodes.append(helper.make_node("QuantizeLinear", [tensor, f"{name}_ys", f"{name}_yz"], [f"{name}_q"],
                                  name=f"{name}_quantize"))
    return nodes, inits


def integer_ops_model(rng: np.random.Generator, conv: bool, tie_prone: bool) -> onnx.ModelProto:
    """Static QuantizeLinear -> (ConvInteger | MatMulInteger) -> float rescale -> QuantizeLinear chains."""
    def scale(low, high):
        value = rng.uniform(low, high)
        return float(2.0 ** np.round(np.log2(value))) if tie_prone else value

    x_scale, hidden_scale, out_scale = scale(0.01, 0.03), scale(0.02, 0.08), scale(0.05, 0.2)
    inits = [_tensor("x_scale", x_scale), numpy_helper.from_array(np.uint8(120), "x_zero"),
             numpy_helper.from_array(np.int8(0), "w_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["xq"], name="quantize_input")]
    if conv:
        w_scale = np.array([scale(0.005, 0.02) for _ in range(3)], np.float32)
        weight = rng.integers(-128, 128, (3, 1, 3, 3)).astype(np.int8)
        inits.append(numpy_helper.from_array(weight, "conv_w"))
        nodes.append(helper.make_node("ConvInteger", ["xq", "conv_w", "x_zero", "w_zero"], ["acc0"], name="conv",
                                      pads=[1, 1, 1, 1]))
        multiplier = (np.float32(x_scale) * w_scale).reshape(1, 3, 1, 1)
        tail, tail_inits = _integer_tail("l0", "acc0", multiplier, rng.normal(0, 0.5, (1, 3, 1, 1)), True,
                                         hidden_scale, 0, np.uint8)
        flat = [helper.make_node("MaxPool", ["l0_q"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("Flatten", ["pooled"], ["hidden"], name="flatten")]
        nodes += tail + flat
        inits += tail_inits
        shape, hidden = (1, 6, 6), 27
    else:
        w_scale = np.array([scale(0.005, 0.02) for _ in range(12)], np.float32)
        weight = rng.integers(-128, 128, (16, 12)).astype(np.int8)
        inits.append(numpy_helper.from_array(weight, "w0"))
        nodes.append(helper.make_node("MatMulInteger", ["xq", "w0", "x_zero", "w_zero"], ["acc0"], name="matmul0"))
        tail, tail_inits = _integer_tail("l0", "acc0", np.float32(x_scale) * w_scale, rng.normal(0, 0.5, 12), True,
                                         hidden_scale, 0, np.uint8)
        nodes += tail + [helper.make_node("Identity", ["l0_q"], ["hidden"], name="identity")]
        inits += tail_inits
        shape, hidden = (16,), 12
    weight = rng.integers(-128, 128, (hidden, 5)).astype(np.int8)
    w1_scale = np.float32(scale(0.005, 0.02))
    inits += [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(np.uint8(0), "h_zero")]
    nodes.append(helper.make_node("MatMulInteger", ["hidden", "w1", "h_zero", "w_zero"], ["acc1"], name="matmul1"))
    tail, tail_inits = _integer_tail("l1", "acc1", np.float32(hidden_scale) * w1_scale, None, False, out_scale, 128,
                                     np.uint8)
    nodes += tail + [helper.make_node("DequantizeLinear", ["l1_q", "l1_ys", "l1_yz"], ["output"], name="dequantize")]
    return graph_model(nodes, inits + tail_inits, shape, 5)


def island_model(op: str) -> onnx.ModelProto:
    """Q -> DQ -> (Relu | Clip) -> Q -> DQ with a zero point above the minimum, so onnxruntime keeps it float."""
    inits = [_tensor("s", 0.05), numpy_helper.from_array(np.uint8(100), "z"), _tensor("s2", 0.03),
             numpy_helper.from_array(np.uint8(90), "z2"), _tensor("lo", -0.7), _tensor("hi", 2.5)]
    inputs = ["dq", "lo", "hi"] if op == "Clip" else ["dq"]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q_in"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq_in"),
             helper.make_node(op, inputs, ["act"], name="act"),
             helper.make_node("QuantizeLinear", ["act", "s2", "z2"], ["q2"], name="q_out"),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["output"], name="dq_out")]
    return graph_model(nodes, inits, (6,), 6)


def integer_input_model(rng: np.random.Generator) -> onnx.ModelProto:
    """A QOperator graph with uint8 input and output: the integers are the interface."""
    weight = rng.integers(-128, 128, (10, 4)).astype(np.int8)
    inits = [_tensor("xs", 0.02), numpy_helper.from_array(np.uint8(128), "xz"), numpy_helper.from_array(weight, "w"),
             _tensor("ws", 0.01), numpy_helper.from_array(np.int8(0), "wz"), _tensor("ys", 0.05),
             numpy_helper.from_array(np.uint8(60), "yz")]
    node = helper.make_node("QLinearMatMul", ["input", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["output"], name="mm")
    graph = helper.make_graph([node], "integer", [helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", 10])],
                              [helper.make_tensor_value_info("output", TensorProto.UINT8, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)

"""Every model bitqnn cannot give an exact meaning to is refused with a one-line OnnxImportError."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from bitqnn.onnx_io import OnnxImportError, load_float, load_model, load_qnn
from tests.onnx_models import float_model, graph_model, quantized_model, save


def _error(path, loader=load_model) -> str:
    with pytest.raises(OnnxImportError) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def _with_tail(op: str, **attributes):
    """mlp_gemm with one more node after its output."""
    model = float_model("mlp_gemm", np.random.default_rng(0))
    model.graph.node[-1].output[0] = "logits"
    model.graph.node.append(helper.make_node(op, ["logits"], ["output"], name="tail", **attributes))
    return model


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid"])
def test_unsupported_float_op_is_named(tmp_path, op):
    path = save(_with_tail(op), tmp_path / "model.onnx")
    assert _error(path) == f"{path}: node 'tail' ({op}) is not supported"


def test_unsupported_op_in_quantized_model_is_named(tmp_path):
    path = quantized_model(tmp_path, "mlp_gemm", "qdq", "u8", "s8", False, False)
    model = onnx.load(path)
    model.graph.node[-1].output[0] = "dequantized"
    model.graph.node.append(helper.make_node("Softmax", ["dequantized"], ["output"], name="sm"))
    save(model, path)
    assert _error(path) == f"{path}: node 'sm' (Softmax) is not supported"


def test_missing_and_malformed_files(tmp_path):
    assert _error(tmp_path / "absent.onnx").endswith("no such file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe")
    assert "not a valid ONNX model" in _error(garbage)


def test_non_constant_weight(tmp_path):
    model = float_model("mlp_gemm", np.random.default_rng(0))
    gemm = model.graph.node[0]
    model.graph.node.insert(0, helper.make_node("Neg", [gemm.input[1]], ["negated"], name="neg"))
    gemm.input[1] = "negated"
    path = save(model, tmp_path / "m.onnx")
    assert _error(path) == f"{path}: node 'fc0' (Gemm) needs a constant weight (input 1)"


def test_shape_mismatch(tmp_path):
    model = float_model("mlp_gemm", np.random.default_rng(0))
    weight = next(t for t in model.graph.initializer if t.name == "w0")
    weight.CopyFrom(numpy_helper.from_array(np.zeros((12, 17), np.float32), "w0"))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert "node 'fc0' (Gemm) expects a flat input of 17 values, gets shape (16,)" in _error(path)


def test_dynamic_quantization_is_refused(tmp_path):
    source = save(float_model("mlp_matmul", np.random.default_rng(0)), tmp_path / "float.onnx")
    target = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    assert "(DynamicQuantizeLinear) is dynamic quantization" in _error(target)


def test_branching_graph_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "input"], ["output"], name="residual")]
    path = save(graph_model(nodes, [], (4,), 4), tmp_path / "m.onnx")
    assert "tensor 'input' feeds 2 nodes; only a chain of layers is supported" in _error(path)


def test_float_op_left_between_integer_kernels(tmp_path):
    """A MaxPool whose input and output scales differ is not fused; onnxruntime runs it in float."""
    params = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "z"),
              numpy_helper.from_array(np.float32(0.3), "s2")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q_in"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq_in"),
             helper.make_node("MaxPool", ["dq"], ["pooled"], name="pool", kernel_shape=[2, 2]),
             helper.make_node("QuantizeLinear", ["pooled", "s2", "z"], ["q2"], name="q_out"),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["output"], name="dq_out")]
    model = graph_model(nodes, params, (1, 4, 4), 9)
    model.graph.output[0].type.tensor_type.shape.Clear()
    path = save(model, tmp_path / "m.onnx")
    assert _error(path) == (f"{path}: node 'pool' (MaxPool) is not supported here: onnxruntime runs it in "
                            "floating point, outside an integer kernel")


def test_loaders_insist_on_their_kind(tmp_path):
    float_path = save(float_model("mlp_gemm", np.random.default_rng(0)), tmp_path / "float.onnx")
    quantized_path = quantized_model(tmp_path, "mlp_gemm", "qdq", "u8", "s8", False, False)
    assert "is a float model" in _error(float_path, load_qnn)
    assert "is a quantized model" in _error(quantized_path, load_float)

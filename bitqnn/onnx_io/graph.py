"""An ONNX file read into a chain of nodes that the importers walk from input to output.

Every problem with the file itself (missing, not a model, fails the ONNX checker, more than
one input or output) becomes an OnnxImportError here, so the importers only meet
well-formed graphs and can report unsupported nodes by name through `Graph.fail`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bitqnn.onnx_io import ort_kernels
from bitqnn.onnx_io.errors import OnnxImportError


def read_model(path: str | Path) -> onnx.ModelProto:
    """Load and check a model file; every failure is an OnnxImportError naming the file."""
    label = str(path)
    if not Path(path).is_file():
        raise OnnxImportError(f"{label}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf, checker and I/O errors all mean "not a usable model"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxImportError(f"{label}: not a valid ONNX model ({reason})") from exc
    return model


class Graph:
    """One graph with one input and one output; constants are initializers and Constant nodes."""

    def __init__(self, model: onnx.ModelProto, label: str, path: str | Path | None = None):
        self.model = model
        self.label = label
        self.path = Path(path) if path is not None else None
        graph = model.graph
        self._constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self._constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise self.fail(f"needs exactly one input and one output, has {len(inputs)} and {len(graph.output)}")
        self.input = inputs[0]
        self.output_name = graph.output[0].name
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self._constants[node.output[0]] = _constant_node_value(node)
            else:
                self.nodes.append(node)
        self._producer = {out: node for node in self.nodes for out in node.output}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self._consumers.setdefault(name, []).append(node)

    def fail(self, reason: str, node: onnx.NodeProto | None = None) -> OnnxImportError:
        """The error to raise: 'file: node 'name' (Op) reason' or 'file: reason'."""
        if node is None:
            return OnnxImportError(f"{self.label}: {reason}")
        return OnnxImportError(f"{self.label}: node '{node_name(node)}' ({node.op_type}) {reason}")

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def input_elem_type(self) -> int:
        return self.input.type.tensor_type.elem_type

    def input_dims(self) -> tuple[tuple[int, ...], int | None]:
        """(per-sample shape, fixed batch size or None): the first dimension is the batch."""
        dims = self.input.type.tensor_type.shape.dim
        if len(dims) < 2:
            raise self.fail(f"input '{self.input_name}' needs a batch dimension and a sample shape")
        sample = []
        for dim in dims[1:]:
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                raise self.fail(f"input '{self.input_name}' has a dynamic sample dimension")
            sample.append(int(dim.dim_value))
        batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
        return tuple(sample), batch

    def op_types(self) -> set[str]:
        return {node.op_type for node in self.nodes}

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self._producer.get(name)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a tensor fixed at load time, as onnxruntime computes it; None if it varies.

        Besides initializers this folds Identity and DequantizeLinear of constants, which
        QDQ graphs leave in front of biases that onnxruntime did not fuse.
        """
        if name in self._constants:
            return self._constants[name]
        node = self._producer.get(name)
        if node is None or node.op_type not in ("Identity", "DequantizeLinear"):
            return None
        values = [self.constant(i) if i else None for i in node.input]
        if any(value is None for value, i in zip(values, node.input, strict=True) if i):
            return None
        if node.op_type == "Identity":
            value = values[0]
        else:
            axis = int(self.attributes(node).get("axis", 1))
            zero = values[2] if len(values) > 2 and values[2] is not None else np.zeros_like(values[1], np.uint8)
            value = ort_kernels.dequantize(values[0], *_along_axis(values[1], zero, axis, values[0].ndim))
        self._constants[name] = value
        return value

    def require_constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        value = self.constant(node.input[index]) if index < len(node.input) and node.input[index] else None
        if value is None:
            raise self.fail(f"needs a constant {what} (input {index})", node)
        return value

    def optional_constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.require_constant(node, index, what)

    @staticmethod
    def attributes(node: onnx.NodeProto) -> dict:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def next_node(self, tensor: str) -> onnx.NodeProto | None:
        """The one node that reads `tensor`, or None at the graph output; branches are rejected."""
        consumers = self._consumers.get(tensor, [])
        if tensor == self.output_name:
            if consumers:
                reader = node_name(consumers[0])
                raise self.fail(f"tensor '{tensor}' is the graph output and also feeds node '{reader}'")
            return None
        if len(consumers) != 1:
            what = "is not used" if not consumers else f"feeds {len(consumers)} nodes"
            raise self.fail(f"tensor '{tensor}' {what}; only a chain of layers is supported")
        return consumers[0]


def node_name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    attribute = node.attribute[0]
    value = helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def _along_axis(scale: np.ndarray, zero: np.ndarray, axis: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis quantization parameters shaped to broadcast along `axis`."""
    if scale.size == 1:
        return scale.reshape(()), zero.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = scale.size
    return scale.reshape(shape), zero.reshape(shape)

"""The public entry points: a model file in, a FloatNetwork or a QNN out."""

from __future__ import annotations

from pathlib import Path

from bitqnn.floatnet import FloatNetwork
from bitqnn.onnx_io.errors import OnnxImportError
from bitqnn.onnx_io.float_import import import_float
from bitqnn.onnx_io.graph import Graph, read_model
from bitqnn.onnx_io.quantized import import_quantized, is_quantized
from bitqnn.qnn import QNN


def load_model(path: str | Path) -> QNN | FloatNetwork:
    """A quantized model (any QDQ or QOperator node) becomes a QNN, any other a FloatNetwork."""
    graph = _graph(path)
    return import_quantized(graph) if is_quantized(graph) else import_float(graph)


def load_float(path: str | Path) -> FloatNetwork:
    graph = _graph(path)
    if is_quantized(graph):
        raise OnnxImportError(f"{graph.label}: is a quantized model; load it with load_qnn")
    return import_float(graph)


def load_qnn(path: str | Path) -> QNN:
    graph = _graph(path)
    if not is_quantized(graph):
        raise OnnxImportError(f"{graph.label}: is a float model (no quantization nodes); load it with load_float")
    return import_quantized(graph)


def _graph(path: str | Path) -> Graph:
    return Graph(read_model(path), str(path), path)

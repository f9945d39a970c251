"""The graph onnxruntime actually executes for a model: its own QDQ fusions applied.

A QDQ model has no integer meaning by itself. onnxruntime's graph optimizer decides which
DequantizeLinear -> op -> QuantizeLinear groups become integer kernels (QGemm, QLinearConv,
QLinearMatMul, QLinearAdd, int8 MaxPool) and which stay float; the rules depend on types,
opsets and its version (an int8 Add in an opset-17 model, for one, stays float). Rather
than re-implement those rules, bitqnn asks onnxruntime for the optimized graph and imports
that. Level EXTENDED applies every QDQ fusion but none of the layout changes of level ALL
(NHWC transposes), which run the same kernels; the test suite checks the imported network
bit for bit against sessions with default options.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from bitqnn.onnx_io.graph import Graph


def fused_graph(graph: Graph) -> Graph:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "fused.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        options.log_severity_level = 3
        source = str(graph.path) if graph.path is not None else graph.model.SerializeToString()
        try:
            ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for unloadable models
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise graph.fail(f"onnxruntime cannot load the model ({reason})") from exc
        model = onnx.load(str(target))
    return Graph(model, graph.label, graph.path)

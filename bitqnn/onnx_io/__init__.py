"""ONNX front end: float and quantized (QDQ, QOperator) models in, bitqnn networks out.

A quantized model means what onnxruntime's CPU integer kernels compute for it: see
`quantized` for how the graph onnxruntime actually runs is read, `ort_kernels` for the
measured arithmetic of each kernel, and `replay` for running a model in onnxruntime on the
integer grid so that the two can be compared bit for bit; `export` writes a fixed-point QNN
as a model that onnxruntime and this importer both compute bit for bit.
"""

from bitqnn.onnx_io.errors import OnnxImportError
from bitqnn.onnx_io.export import ExportError, export_fixed_point
from bitqnn.onnx_io.loader import load_float, load_model, load_qnn
from bitqnn.onnx_io.replay import run_onnxruntime

__all__ = ["ExportError", "OnnxImportError", "export_fixed_point", "load_float", "load_model", "load_qnn",
           "run_onnxruntime"]

"""The state of a walk through a quantized graph: the current integer tensor and the layers so far.

Each node handler reads the chain tensor's shape and storage range, appends IR layers and
moves the chain on to the tensor it produced; this shared state is what lets the handlers
live in small modules of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from bitqnn.onnx_io.graph import Graph
from bitqnn.qnn import Layer, output_shape


@dataclass(frozen=True)
class Quant:
    """Quantization of an integer tensor: real = scale * (q - zero), q stored in [lo, hi]."""

    scale: np.ndarray  # float32, one value or one per channel
    zero: int
    lo: int
    hi: int


@dataclass
class Chain:
    graph: Graph
    tensor: str
    shape: tuple[int, ...]
    quant: Quant
    layers: list[Layer] = field(default_factory=list)
    scales: list[np.ndarray] = field(default_factory=list)  # the real step of each layer's output

    def push(self, node: onnx.NodeProto, layers: list[Layer], tensor: str, quant: Quant | None = None) -> str:
        """Append layers computed by `node`; the chain continues at `tensor`."""
        for layer in layers:
            try:
                self.shape = output_shape(layer, self.shape)
            except ValueError as exc:
                raise self.graph.fail(str(exc), node) from exc
            self.layers.append(layer)
        self.tensor = tensor
        if quant is not None:
            self.quant = quant
        self.scales.extend(self.quant.scale.astype(np.float64) for _ in layers)
        return tensor

    def check_read(self, node: onnx.NodeProto, params: Quant) -> None:
        """A node must read the chain tensor with the integer type it is stored in."""
        if (params.lo, params.hi) != (self.quant.lo, self.quant.hi):
            raise self.graph.fail(f"reads [{params.lo}, {params.hi}] integers from a tensor stored in "
                                  f"[{self.quant.lo}, {self.quant.hi}]", node)

    def values(self) -> np.ndarray:
        """Every integer the chain tensor can hold, in order."""
        return np.arange(self.quant.lo, self.quant.hi + 1, dtype=np.int64)


def storage_range(graph: Graph, node: onnx.NodeProto, zero: np.ndarray) -> tuple[int, int]:
    """The integer range of a quantized tensor, read off its zero point's type (8-bit only)."""
    if zero.dtype not in (np.int8, np.uint8):
        raise graph.fail(f"uses {zero.dtype} quantization; only int8 and uint8 are supported", node)
    info = np.iinfo(zero.dtype)
    return int(info.min), int(info.max)


def scalar(graph: Graph, node: onnx.NodeProto, value: np.ndarray, what: str) -> np.ndarray:
    """A per-tensor quantization parameter (one element), as a 0-d array of its own type."""
    if value.size != 1:
        raise graph.fail(f"needs a per-tensor {what}, has shape {value.shape}", node)
    return value.reshape(())


def quant_params(graph: Graph, node: onnx.NodeProto, scale_index: int, zero_index: int) -> Quant:
    """The per-tensor (scale, zero point) pair at two inputs of a node; a missing zero point is uint8 0."""
    scale = scalar(graph, node, graph.require_constant(node, scale_index, "scale"), "scale").astype(np.float32)
    zero = graph.optional_constant(node, zero_index, "zero point")
    zero = np.zeros((), np.uint8) if zero is None else scalar(graph, node, zero, "zero point")
    lo, hi = storage_range(graph, node, zero)
    return Quant(scale.reshape(1), int(zero), lo, hi)

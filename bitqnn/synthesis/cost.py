"""What a candidate costs: the objectives `minimize` names.

`bits` is the sum of per-layer widths (what per-layer bit-width searches usually count);
`memory` is the storage of the weights in bits (every weight at its layer's width);
`bitops` is the multiply-accumulate work, each MAC weighted by its two operand widths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bitqnn.floatnet import FloatConv2d, FloatDense, FloatNetwork
from bitqnn.synthesis.space import Candidate


@dataclass(frozen=True)
class LayerSize:
    weights: int  # parameters in the weight tensor
    macs: int  # multiply-accumulates per inference


def layer_sizes(net: FloatNetwork) -> list[LayerSize]:
    sizes = []
    for layer, out_shape in zip(net.layers, net.shapes[1:], strict=True):
        if isinstance(layer, FloatDense):
            sizes.append(LayerSize(layer.weight.size, layer.weight.size))
        elif isinstance(layer, FloatConv2d):  # one filter's worth of MACs per output element
            sizes.append(LayerSize(layer.weight.size, int(np.prod(out_shape)) * layer.weight[0].size))
    return sizes


def _bits(candidate: Candidate, sizes: list[LayerSize], input_bits: int) -> float:
    return float(sum(s.weights + (s.activations or 0) for s in candidate.layers))


def _memory(candidate: Candidate, sizes: list[LayerSize], input_bits: int) -> float:
    return float(sum(s.weights * size.weights for s, size in zip(candidate.layers, sizes, strict=True)))


def _bitops(candidate: Candidate, sizes: list[LayerSize], input_bits: int) -> float:
    total, incoming = 0, input_bits
    for setting, size in zip(candidate.layers, sizes, strict=True):
        total += size.macs * setting.weights * incoming
        incoming = setting.activations or incoming
    return float(total)


COSTS: dict[str, Callable[[Candidate, list[LayerSize], int], float]] = {
    "bits": _bits, "memory": _memory, "bitops": _bitops,
}

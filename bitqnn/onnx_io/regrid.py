"""Moving an imported network back onto the integer grids its model file declares.

On x86-64, onnxruntime's optimizer rewrites int8 activations to uint8 (QDQS8ToU8: every
stored value and zero point + 128) because its u8 x s8 kernels are the fast ones. The
arithmetic is the same -- only differences q - zero ever reach an accumulator or a table --
but the optimized graph's integers are shifted by 128 from the ones the file declares. The
user's inputs, counterexamples and outputs live on the declared grids, so the shift is
undone at the two ends: the first layer that reads values reads them shifted, and the last
layer that produces values produces them shifted back.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bitqnn.onnx_io.chain import Quant
from bitqnn.qnn import Conv2d, Dense, Layer, Lookup
from bitqnn.requant import OutputStage


def grid_shift(executed: Quant, declared: Quant) -> int | None:
    """How far the executed grid sits above the declared one, or None if they differ otherwise."""
    shift = executed.zero - declared.zero
    same_scale = np.array_equal(executed.scale, declared.scale)
    if not same_scale or (executed.lo - shift, executed.hi - shift) != (declared.lo, declared.hi):
        return None
    return shift


def shift_input(layers: list[Layer], shift: int) -> list[Layer]:
    """Layers reading x where the originals read x + shift (shape layers commute with the shift)."""
    layers = list(layers)
    for index, layer in enumerate(layers):
        if isinstance(layer, Dense | Conv2d):
            layers[index] = replace(layer, input_zero=layer.input_zero - shift)
            return layers
        if isinstance(layer, Lookup):
            layers[index] = replace(layer, input_lo=layer.input_lo - shift)
            return layers
    raise ValueError("no layer reads the input values")


def shift_output(layers: list[Layer], shift: int) -> list[Layer]:
    """Layers producing y - shift where the originals produce y."""
    layers = list(layers)
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if isinstance(layer, Dense | Conv2d):
            stage = layer.output
            moved = OutputStage(stage.requant, stage.zero - shift, stage.lo - shift, stage.hi - shift)
            layers[index] = replace(layer, output=moved)
            return layers
        if isinstance(layer, Lookup):
            layers[index] = replace(layer, table=layer.table - shift)
            return layers
    raise ValueError("no layer produces the output values")

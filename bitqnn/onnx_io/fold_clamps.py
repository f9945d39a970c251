"""Clamps written apart from the requantization fold back into the layer's own clamp.

A layer whose activations are narrower than their 8-bit storage (6-bit ReLU outputs kept in
uint8, say) is written as the integer kernel, saturating to the storage type, followed by
DequantizeLinear -> Clip -> QuantizeLinear on the same grid. The walk reads the island as a
Lookup. When that Lookup is exactly a clamp of every value the layer can output (after a
constant shift of the grid), the two are one layer with a narrower clamp: the IR the
quantizer itself builds, which is what lets a model be paired layer by layer with its float
network. The check is exhaustive over the layer's output range, so the fold never changes a
single output. A Clip inside a float requantization tail is the same clamp in another place;
`implied_clamp` moves it into the stage's bounds, which are then the layer's real output
range.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bitqnn.qnn import Conv2d, Dense, Layer, Lookup
from bitqnn.requant import INT32_MAX, INT32_MIN, OutputStage


def _shifted_clamp(layer: Dense | Conv2d, lookup: Lookup) -> tuple[int, int, int] | None:
    """(d, a, b) when lookup(v) == clip(v + d, a, b) for every output v of the layer, else None.

    d is nonzero when onnxruntime ran the layer on a uint8 grid (zero point 128) and the island
    quantizes back to the int8 grid the file declares.
    """
    stage = layer.output
    if stage.requant is None or stage.lo is None or stage.hi is None or lookup.table.shape[0] != 1:
        return None
    values = np.arange(stage.lo, stage.hi + 1, dtype=np.int64)
    positions = values - lookup.input_lo
    if positions.min() < 0 or positions.max() >= lookup.table.shape[1]:
        return None
    mapped = lookup.table[0, positions]
    low, high = int(mapped.min()), int(mapped.max())
    inside = (mapped > low) & (mapped < high)
    shift = int(mapped[inside][0] - values[inside][0]) if inside.any() else int(mapped[0] - values[0])
    return (shift, low, high) if np.array_equal(mapped, np.clip(values + shift, low, high)) else None


def fold_clamps(layers: list[Layer], scales: list[np.ndarray]) -> tuple[list[Layer], list[np.ndarray]]:
    """The layers with every clamp-only Lookup merged into the linear layer before it.

    `scales[i]` is the real step of layer i's output; a folded layer takes its Lookup's, the
    scale of the tensor the next layer reads.
    """
    folded: list[Layer] = []
    folded_scales: list[np.ndarray] = []
    index = 0
    while index < len(layers):
        layer = layers[index]
        following = layers[index + 1] if index + 1 < len(layers) else None
        fold = (_shifted_clamp(layer, following)
                if isinstance(layer, Dense | Conv2d) and isinstance(following, Lookup) else None)
        if fold is None:
            folded.append(layer)
            folded_scales.append(scales[index])
            index += 1
            continue
        # clip(clip(R + z, lo, hi) + d, a, b) == clip(R + z + d, max(lo + d, a), min(hi + d, b))
        shift, low, high = fold
        stage = layer.output
        folded.append(replace(layer, output=replace(stage, zero=stage.zero + shift, lo=max(stage.lo + shift, low),
                                                    hi=min(stage.hi + shift, high))))
        folded_scales.append(scales[index + 1])
        index += 2
    return folded, folded_scales


def implied_clamp(stage: OutputStage, channels: int) -> OutputStage:
    """The stage with its bounds narrowed to what its requantization can reach at all.

    Every requantization is non-decreasing in the accumulator, so over all int32 accumulators
    channel c reaches exactly [R_c(INT32_MIN), R_c(INT32_MAX)]; bounds no output ever passes
    change nothing.
    """
    every = np.arange(channels, dtype=np.int64)
    low = int(stage.requant(np.full(channels, INT32_MIN, dtype=np.int64), every).min()) + stage.zero
    high = int(stage.requant(np.full(channels, INT32_MAX, dtype=np.int64), every).max()) + stage.zero
    return replace(stage, lo=low if stage.lo is None else max(stage.lo, low),
                   hi=high if stage.hi is None else min(stage.hi, high))

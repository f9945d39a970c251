"""A float network, in float64: what post-training quantization starts from.

It reuses the shape-only layers of the integer IR (MaxPool2d, Reshape) so that both
networks share one notion of layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitqnn.qnn import Conv2d, MaxPool2d, Reshape, _window_indices, output_shape, pool_windows


@dataclass(frozen=True, eq=False)
class FloatDense:
    weight: np.ndarray  # float64 [out, in]
    bias: np.ndarray  # float64 [out]
    clip: tuple[float, float] | None = None  # (0, inf) is ReLU


@dataclass(frozen=True, eq=False)
class FloatConv2d:
    weight: np.ndarray  # float64 [oc, ic // group, kh, kw]
    bias: np.ndarray
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    clip: tuple[float, float] | None = None


FloatLayer = FloatDense | FloatConv2d | MaxPool2d | Reshape
RELU = (0.0, float("inf"))


@dataclass(frozen=True, eq=False)
class FloatNetwork:
    input_shape: tuple[int, ...]
    layers: tuple[FloatLayer, ...]
    name: str = "float network"

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        shapes = [tuple(self.input_shape)]
        for layer in self.layers:
            shapes.append(_float_output_shape(layer, shapes[-1]))
        return shapes

    def forward(self, x: np.ndarray, keep_all: bool = False) -> np.ndarray | list[np.ndarray]:
        """Flat float64 outputs [B, n_out]; with keep_all, every layer's output."""
        shapes = self.shapes
        values = np.asarray(x, dtype=np.float64).reshape(-1, int(np.prod(self.input_shape)))
        outputs = []
        for layer, shape in zip(self.layers, shapes, strict=False):
            values = _float_layer(layer, shape, values)
            outputs.append(values)
        return outputs if keep_all else values

    def forward_from(self, index: int, values: np.ndarray) -> np.ndarray:
        """Layers index.. on a flat batch of layer index's inputs."""
        shapes = self.shapes
        for position in range(index, len(self.layers)):
            values = _float_layer(self.layers[position], shapes[position], values)
        return values

    def pre_activation(self, index: int, values: np.ndarray) -> np.ndarray:
        """A Dense or Conv layer's affine part, before its clip."""
        return _float_affine(self.layers[index], self.shapes[index], np.asarray(values, dtype=np.float64))

    def activate(self, index: int, pre: np.ndarray) -> np.ndarray:
        """A Dense or Conv layer's output from its affine part."""
        clip = self.layers[index].clip
        return pre if clip is None else np.clip(pre, *clip)


def _float_output_shape(layer: FloatLayer, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layer, FloatDense):
        return (layer.weight.shape[0],)
    if isinstance(layer, FloatConv2d):
        probe = Conv2d(np.zeros(layer.weight.shape, np.int64), np.zeros(1, np.int64), 0,
                       np.zeros(layer.weight.shape[0], np.int64), None, layer.strides,
                       layer.pads, layer.dilations, layer.group)
        return output_shape(probe, shape)
    return output_shape(layer, shape)


def _float_conv(layer: FloatConv2d, shape: tuple[int, ...], x: np.ndarray) -> np.ndarray:
    c, h, w = shape
    oc, icg, kh, kw = layer.weight.shape
    rows, cols, valid = _window_indices(shape, (kh, kw), layer.strides, layer.pads, layer.dilations)
    oh, ow = rows.shape[:2]
    images = x.reshape(-1, c, h, w)
    padded = np.where(valid, images[:, :, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)], 0.0)
    per_group = oc // layer.group
    out = np.empty((images.shape[0], oc, oh, ow))
    for g in range(layer.group):
        patch = padded[:, g * icg:(g + 1) * icg]  # [B, icg, oh, ow, kh, kw]
        kernel = layer.weight[g * per_group:(g + 1) * per_group]
        out[:, g * per_group:(g + 1) * per_group] = np.einsum("bcyxrs,ocrs->boyx", patch, kernel)
    out += layer.bias[None, :, None, None]
    return out.reshape(images.shape[0], -1)


def _float_affine(layer: FloatDense | FloatConv2d, shape: tuple[int, ...], x: np.ndarray) -> np.ndarray:
    return x @ layer.weight.T + layer.bias if isinstance(layer, FloatDense) else _float_conv(layer, shape, x)


def _float_layer(layer: FloatLayer, shape: tuple[int, ...], x: np.ndarray) -> np.ndarray:
    if isinstance(layer, FloatDense | FloatConv2d):
        y = _float_affine(layer, shape, x)
        return y if layer.clip is None else np.clip(y, *layer.clip)
    if isinstance(layer, MaxPool2d):
        windows = pool_windows(layer, shape)
        padded = np.concatenate([x, np.full((x.shape[0], 1), -np.inf)], axis=1)
        return padded[:, windows].max(axis=2)
    return x

"""The IR: a quantized network as a chain of integer layers, and its exact executor.

Every tensor is handled as a flat int64 vector (C order) with its shape kept beside it,
so that one view of each layer (`linear_form`, `pool_windows`) serves the executor,
the bounds and every encoder alike. The executor is the oracle: every verdict's
witness is replayed here, and every other semantics is tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bitqnn.requant import OutputStage, Rounding, round_real


@dataclass(frozen=True)
class Storage:
    """How a parameter tensor sits in memory as deployed, which is what a bit flip acts on.

    The layer uses stored << shift (a fixed-point bias kept at fewer fraction bits than
    the accumulator is stored shifted right); the stored integer is `bits` wide, two's
    complement when signed.
    """

    bits: int
    signed: bool
    shift: int = 0

    def stored(self, used: np.ndarray) -> np.ndarray:
        return np.asarray(used, dtype=np.int64) >> self.shift

    def flip(self, used: np.ndarray, mask: np.ndarray | int) -> np.ndarray:
        """The values the layer uses after XOR-ing `mask` into the stored bit patterns."""
        width = (1 << self.bits) - 1
        raw = (self.stored(used) & width) ^ (np.asarray(mask, dtype=np.int64) & width)
        if self.signed:
            raw = raw - ((raw >> (self.bits - 1)) << self.bits)
        return raw << self.shift

    def bit_delta(self, used: np.ndarray, bit: int) -> np.ndarray:
        """What flipping one stored bit adds to the used value: +-2**(bit + shift)."""
        return self.flip(used, 1 << bit) - np.asarray(used, dtype=np.int64)


def storage_of_dtype(dtype: np.dtype) -> Storage:
    dtype = np.dtype(dtype)
    return Storage(8 * dtype.itemsize, np.issubdtype(dtype, np.signedinteger))


@dataclass(frozen=True, eq=False)
class Dense:
    """acc = sum((w - wz) * (x - xz)) + b over a flat input."""

    weight: np.ndarray  # int64 [out, in], the stored integers
    weight_zero: np.ndarray  # int64 [out] or [1]
    input_zero: int
    bias: np.ndarray  # int64 [out]
    output: OutputStage
    weight_storage: Storage | None = None  # None: the source does not say (no bit-flip analysis)
    bias_storage: Storage | None = None


@dataclass(frozen=True, eq=False)
class Conv2d:
    """Same accumulator as Dense over each window; padding contributes (x - xz) = 0."""

    weight: np.ndarray  # int64 [oc, ic // group, kh, kw]
    weight_zero: np.ndarray  # int64 [oc] or [1]
    input_zero: int
    bias: np.ndarray  # int64 [oc]
    output: OutputStage
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    weight_storage: Storage | None = None
    bias_storage: Storage | None = None


@dataclass(frozen=True, eq=False)
class MaxPool2d:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True, eq=False)
class Reshape:
    """Changes only the shape; values keep their C order (ONNX Flatten/Reshape)."""

    shape: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Lookup:
    """y = table[channel, x - input_lo]: any elementwise map of a quantized tensor.

    Channels run along axis 0 of the layer's input shape; a single-row table serves all.
    """

    table: np.ndarray  # int64 [channels or 1, input_hi - input_lo + 1]
    input_lo: int


Layer = Dense | Conv2d | MaxPool2d | Reshape | Lookup
LinearLayer = Dense | Conv2d


class AccumulatorOverflow(ArithmeticError):
    """An accumulator left its declared width under overflow='error'."""


@dataclass(frozen=True)
class LinearForm:
    """acc = matrix @ x + offset over the flat raw input integers (zero points folded in)."""

    matrix: np.ndarray  # int64 [n_out, n_in]
    offset: np.ndarray  # int64 [n_out]
    channels: np.ndarray  # int64 [n_out], the output channel of each neuron


@dataclass(frozen=True, eq=False)
class QNN:
    """A quantized network on an integer input grid.

    real input = input_scale * (x - input_zero) for x in [input_lo, input_hi];
    real output = output_scale[channel] * (y - output_zero).
    """

    input_shape: tuple[int, ...]
    input_lo: int
    input_hi: int
    layers: tuple[Layer, ...]
    input_scale: float = 1.0
    input_zero: int = 0
    output_scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    output_zero: int = 0
    accumulator_bits: int = 32
    overflow: Literal["wrap", "error"] = "error"
    input_rounding: Rounding = Rounding.HALF_EVEN
    semantics: str = "exact integer"
    name: str = "network"
    onnx_path: str | None = None  # set for imported models: witnesses are replayed there too
    # real value of one output step of each layer (one per channel, or a single value), so
    # hidden values can be compared with a float network's; None where no source states it
    layer_scales: tuple[np.ndarray, ...] | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """shapes[i] is the input shape of layer i; shapes[-1] is the output shape."""
        if "shapes" not in self._cache:
            shapes = [tuple(self.input_shape)]
            for layer in self.layers:
                shapes.append(output_shape(layer, shapes[-1]))
            self._cache["shapes"] = shapes
        return self._cache["shapes"]

    @property
    def output_size(self) -> int:
        return int(np.prod(self.shapes[-1]))

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    def linear_form(self, index: int) -> LinearForm:
        key = ("linear", index)
        if key not in self._cache:
            self._cache[key] = linear_form(self.layers[index], self.shapes[index])
        return self._cache[key]

    def pool_windows(self, index: int) -> np.ndarray:
        key = ("windows", index)
        if key not in self._cache:
            layer = self.layers[index]
            assert isinstance(layer, MaxPool2d)
            self._cache[key] = pool_windows(layer, self.shapes[index])
        return self._cache[key]

    def lookup_channels(self, index: int) -> np.ndarray:
        """Row of the table used by each flat input position of a Lookup layer."""
        layer = self.layers[index]
        assert isinstance(layer, Lookup)
        shape = self.shapes[index]
        if layer.table.shape[0] == 1:
            return np.zeros(int(np.prod(shape)), dtype=np.int64)
        per_channel = int(np.prod(shape[1:]))
        return np.repeat(np.arange(shape[0], dtype=np.int64), per_channel)

    def quantize_input(self, real: np.ndarray) -> np.ndarray:
        """Real inputs to the integer grid: round(real / scale) + zero, saturated.

        Monotone, so a real interval maps onto an integer interval end to end.
        """
        q = round_real(np.asarray(real, dtype=np.float64) / self.input_scale, self.input_rounding)
        return np.clip(q + self.input_zero, self.input_lo, self.input_hi)

    def dequantize_input(self, x: np.ndarray) -> np.ndarray:
        return self.input_scale * (np.asarray(x, dtype=np.float64) - self.input_zero)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        scale = np.asarray(self.output_scale, dtype=np.float64)
        if scale.size > 1:
            scale = scale[self.output_channels()]
        return scale * (np.asarray(y, dtype=np.float64) - self.output_zero)

    def output_channels(self) -> np.ndarray:
        shape = self.shapes[-1]
        return np.repeat(np.arange(shape[0]), int(np.prod(shape[1:])))

    def describe(self) -> str:
        return f"{self.name}: {len(self.layers)} layers; semantics: {self.semantics}"


def _conv_out(size: int, kernel: int, stride: int, pad_a: int, pad_b: int, dilation: int) -> int:
    return (size + pad_a + pad_b - dilation * (kernel - 1) - 1) // stride + 1


def output_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layer, Dense):
        n_in = int(np.prod(shape))
        if layer.weight.shape[1] != n_in:
            raise ValueError(f"dense layer expects {layer.weight.shape[1]} inputs, gets {n_in} {shape}")
        return (layer.weight.shape[0],)
    if isinstance(layer, Conv2d | MaxPool2d):
        if len(shape) != 3:
            raise ValueError(f"{type(layer).__name__} needs a (C, H, W) input, gets {shape}")
        kh, kw = layer.weight.shape[2:] if isinstance(layer, Conv2d) else layer.kernel
        dh, dw = layer.dilations if isinstance(layer, Conv2d) else (1, 1)
        t, left, b, r = layer.pads
        oh = _conv_out(shape[1], kh, layer.strides[0], t, b, dh)
        ow = _conv_out(shape[2], kw, layer.strides[1], left, r, dw)
        if isinstance(layer, Conv2d):
            if layer.weight.shape[1] * layer.group != shape[0]:
                raise ValueError(f"conv expects {layer.weight.shape[1] * layer.group} channels, gets {shape[0]}")
            return (layer.weight.shape[0], oh, ow)
        return (shape[0], oh, ow)
    if isinstance(layer, Reshape):
        if int(np.prod(layer.shape)) != int(np.prod(shape)):
            raise ValueError(f"cannot reshape {shape} to {layer.shape}")
        return tuple(layer.shape)
    if isinstance(layer, Lookup):
        return shape
    raise TypeError(f"unknown layer {layer!r}")


def _window_indices(shape: tuple[int, ...], kernel, strides, pads, dilations):
    """For each (oh, ow, kh, kw): the input row and column, and whether it is padding."""
    _, h, w = shape
    t, left, b, r = pads
    oh = _conv_out(h, kernel[0], strides[0], t, b, dilations[0])
    ow = _conv_out(w, kernel[1], strides[1], left, r, dilations[1])
    rows = (np.arange(oh)[:, None, None, None] * strides[0] - t
            + np.arange(kernel[0])[None, None, :, None] * dilations[0])
    cols = (np.arange(ow)[None, :, None, None] * strides[1] - left
            + np.arange(kernel[1])[None, None, None, :] * dilations[1])
    rows, cols = np.broadcast_arrays(rows, cols)
    valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return rows, cols, valid  # each [oh, ow, kh, kw]


def linear_form(layer: LinearLayer, shape: tuple[int, ...]) -> LinearForm:
    if isinstance(layer, Dense):
        w = layer.weight.astype(np.int64) - layer.weight_zero.reshape(-1, 1)
        offset = layer.bias.astype(np.int64) - layer.input_zero * w.sum(axis=1)
        return LinearForm(w, offset, np.arange(w.shape[0], dtype=np.int64))
    c, h, wdt = shape
    oc, icg, kh, kw = layer.weight.shape
    w = layer.weight.astype(np.int64) - layer.weight_zero.reshape(-1, 1, 1, 1)
    rows, cols, valid = _window_indices(shape, (kh, kw), layer.strides, layer.pads, layer.dilations)
    oh, ow = rows.shape[:2]
    matrix = np.zeros((oc, oh, ow, c * h * wdt), dtype=np.int64)
    per_group_out = oc // layer.group
    o_idx, y_idx, x_idx, r_idx, s_idx = np.nonzero(
        np.broadcast_to(valid[None, :, :, :, :], (oc, oh, ow, kh, kw)))
    for ic in range(icg):
        in_channel = (o_idx // per_group_out) * icg + ic
        flat_in = (in_channel * h + rows[y_idx, x_idx, r_idx, s_idx]) * wdt + cols[y_idx, x_idx, r_idx, s_idx]
        np.add.at(matrix, (o_idx, y_idx, x_idx, flat_in), w[o_idx, ic, r_idx, s_idx])
    matrix = matrix.reshape(oc * oh * ow, c * h * wdt)
    bias = np.repeat(layer.bias.astype(np.int64), oh * ow)
    offset = bias - layer.input_zero * matrix.sum(axis=1)
    channels = np.repeat(np.arange(oc, dtype=np.int64), oh * ow)
    return LinearForm(matrix, offset, channels)


def pool_windows(layer: MaxPool2d, shape: tuple[int, ...]) -> np.ndarray:
    """Flat input indices of each output's window, -1 for padding: int64 [n_out, kh*kw]."""
    c, h, w = shape
    rows, cols, valid = _window_indices(shape, layer.kernel, layer.strides, layer.pads, (1, 1))
    oh, ow, kh, kw = rows.shape
    base = (np.arange(c)[:, None, None, None, None] * h + rows[None]) * w + cols[None]
    base = np.where(valid[None], base, -1)
    return base.reshape(c * oh * ow, kh * kw).astype(np.int64)


def wrap_to_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wraparound to a signed width."""
    modulus = np.int64(1) << bits
    half = np.int64(1) << (bits - 1)
    return ((np.asarray(values, dtype=np.int64) + half) % modulus) - half


def apply_accumulator_policy(qnn: QNN, index: int, acc: np.ndarray) -> np.ndarray:
    if qnn.accumulator_bits >= 63:
        return acc
    if qnn.overflow == "wrap":
        return wrap_to_bits(acc, qnn.accumulator_bits)
    limit = np.int64(1) << (qnn.accumulator_bits - 1)
    bad = (acc < -limit) | (acc >= limit)
    if np.any(bad):
        sample, neuron = (int(i) for i in np.argwhere(bad)[0])
        raise AccumulatorOverflow(
            f"layer {index} neuron {neuron}: accumulator {int(acc[sample, neuron])} "
            f"exceeds int{qnn.accumulator_bits}")
    return acc


def run_layer(qnn: QNN, index: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One layer on a flat batch [B, n_in]; returns (output, accumulator or None)."""
    layer = qnn.layers[index]
    if isinstance(layer, Dense | Conv2d):
        form = qnn.linear_form(index)
        acc = apply_accumulator_policy(qnn, index, x @ form.matrix.T + form.offset)
        return layer.output(acc, form.channels[None, :]), acc
    if isinstance(layer, MaxPool2d):
        windows = qnn.pool_windows(index)
        floor = np.iinfo(np.int64).min
        padded = np.concatenate([x, np.full((x.shape[0], 1), floor, dtype=np.int64)], axis=1)
        return padded[:, windows].max(axis=2), None
    if isinstance(layer, Reshape):
        return x, None
    if isinstance(layer, Lookup):
        rows = qnn.lookup_channels(index)
        offset = x - layer.input_lo
        if np.any(offset < 0) or np.any(offset >= layer.table.shape[1]):
            raise ValueError(f"layer {index}: lookup input outside [{layer.input_lo}, "
                             f"{layer.input_lo + layer.table.shape[1] - 1}]")
        return layer.table[rows[None, :], offset], None
    raise TypeError(f"unknown layer {layer!r}")


def finish_layer(qnn: QNN, index: int, acc: np.ndarray) -> np.ndarray:
    """A Dense or Conv2d layer's output from its raw accumulators [B, n_out]."""
    acc = apply_accumulator_policy(qnn, index, acc)
    return qnn.layers[index].output(acc, qnn.linear_form(index).channels[None, :])


def run_from(qnn: QNN, index: int, values: np.ndarray) -> np.ndarray:
    """Layers index.. on a flat batch: the network's outputs from layer index's input."""
    for position in range(index, len(qnn.layers)):
        values, _ = run_layer(qnn, position, values)
    return values


def check_input(qnn: QNN, x: np.ndarray) -> np.ndarray:
    """Flat int64 batch [B, n]; rejects values outside the representable input range."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        rounded = np.rint(x)
        if not np.array_equal(rounded, x):
            raise ValueError("network inputs must be integers on the input grid")
        x = rounded
    x = x.astype(np.int64).reshape(-1, qnn.input_size)
    if np.any(x < qnn.input_lo) or np.any(x > qnn.input_hi):
        raise ValueError(f"input outside the representable range [{qnn.input_lo}, {qnn.input_hi}]")
    return x


def execute(qnn: QNN, x: np.ndarray) -> np.ndarray:
    """Exact outputs, flat: [B, n_out] for a batch of inputs of any shape [B, *input_shape]."""
    return run_from(qnn, 0, check_input(qnn, x))


@dataclass(frozen=True)
class TraceStep:
    layer: int
    kind: str
    accumulator: np.ndarray | None
    output: np.ndarray


def trace(qnn: QNN, x: np.ndarray) -> list[TraceStep]:
    """Per-layer accumulators and outputs for one input (for `bitqnn run`)."""
    values = check_input(qnn, x)[:1]
    steps = []
    for index, layer in enumerate(qnn.layers):
        values, acc = run_layer(qnn, index, values)
        steps.append(TraceStep(index, type(layer).__name__, None if acc is None else acc[0], values[0]))
    return steps

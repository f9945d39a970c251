"""Post-training quantization of a float network into power-of-two fixed point.

This is the family the prior QNN verifiers use: a value with F fraction bits is stored
as the integer round(v * 2**F) saturated to its bit width, so every rescaling is a shift.
Every choice is a field of the config so a spec can state a scheme exactly; the
defaults pick fraction bits that avoid saturation on the calibration data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from bitqnn.bounds import interval_product
from bitqnn.floatnet import FloatConv2d, FloatDense, FloatNetwork
from bitqnn.qnn import QNN, Conv2d, Dense, MaxPool2d, Reshape, Storage
from bitqnn.requant import OutputStage, Rounding, ShiftRequant, round_real


@dataclass(frozen=True)
class LayerConfig:
    """Overrides for one linear layer (counted over Dense/Conv layers only)."""

    index: int
    weights: int | None = None
    weight_frac: int | None = None
    activations: int | None = None
    activation_frac: int | None = None
    bias_bits: int | None = None
    bias_frac: int | None = None


@dataclass(frozen=True)
class FixedPointConfig:
    weights: int = 8
    weight_frac: int | None = None  # None: as many as fit the largest |weight|
    activations: int = 8
    activation_frac: int | None = None  # None: from calibration data, else from intervals
    input_bits: int = 8
    input_frac: int = 8
    input_signed: bool = False
    bias_bits: int | None = None  # None: 32 bits at the accumulator's scale
    bias_frac: int | None = None  # None: the accumulator's scale
    weight_rounding: Rounding = Rounding.HALF_EVEN  # for weights, biases and inputs
    rounding: Rounding = Rounding.HALF_UP  # for requantizing accumulators
    output: Literal["accumulator", "requantized"] = "accumulator"
    layers: tuple[LayerConfig, ...] = ()

    def for_layer(self, index: int) -> LayerConfig:
        """The effective settings of linear layer `index`: overrides over the defaults."""
        merged = LayerConfig(index, self.weights, self.weight_frac, self.activations,
                             self.activation_frac, self.bias_bits, self.bias_frac)
        for override in self.layers:
            if override.index == index:
                changes = {k: v for k, v in vars(override).items() if v is not None and k != "index"}
                merged = replace(merged, **changes)
        return merged

    def describe(self) -> str:
        return (f"fixed point: weights {self.weights} bits, activations {self.activations} bits, "
                f"input {self.input_bits} bits with {self.input_frac} fraction bits, "
                f"requantize {self.rounding.value}")


class QuantizationError(ValueError):
    """The float network or the config cannot be quantized as asked."""


def to_fixed(values: np.ndarray, frac: int, bits: int, signed: bool, rounding: Rounding) -> np.ndarray:
    """round(values * 2**frac), saturated; scaling by a power of two is exact in float64."""
    q = round_real(np.asarray(values, dtype=np.float64) * 2.0**frac, rounding)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return np.clip(q, lo, hi)


def fraction_bits_for(max_abs: float, bits: int, signed: bool) -> int:
    """The most fraction bits with which max_abs still fits in `bits` without saturating."""
    magnitude_bits = bits - 1 if signed else bits
    if max_abs <= 0:
        return magnitude_bits
    return magnitude_bits - max(math.ceil(math.log2(max_abs * (1 + 2**-20))), -64)


def weight_fraction_bits(weight: np.ndarray, bits: int, chosen: int | None) -> int:
    """The fraction bits a layer's weights get: the chosen ones, else the most that fit."""
    return fraction_bits_for(float(np.abs(weight).max()), bits, signed=True) if chosen is None else chosen


def _float_interval_maxima(net: FloatNetwork, lo: float, hi: float) -> list[float]:
    """Max |output| of every layer over the input box, by interval arithmetic (sound, loose)."""
    n = int(np.prod(net.input_shape))
    low, high = np.full(n, lo), np.full(n, hi)
    maxima = []
    for layer in net.layers:
        if isinstance(layer, FloatDense):
            low, high = interval_product(layer.weight, low, high)
            low, high = low + layer.bias, high + layer.bias
            if layer.clip is not None:
                low, high = np.clip(low, *layer.clip), np.clip(high, *layer.clip)
        elif isinstance(layer, FloatConv2d | MaxPool2d):
            raise QuantizationError("interval calibration covers dense networks only; pass calibration data")
        maxima.append(float(max(np.abs(low).max(), np.abs(high).max())))
    return maxima


def quantize_fixed_point(net: FloatNetwork, config: FixedPointConfig,
                         calibration: np.ndarray | None = None) -> QNN:
    """The fixed-point QNN of `net`; calibration inputs (real units) choose activation scales."""
    input_hi = 2 ** (config.input_bits - 1) - 1 if config.input_signed else 2**config.input_bits - 1
    input_lo = -(2 ** (config.input_bits - 1)) if config.input_signed else 0
    if calibration is not None:
        outputs = net.forward(calibration, keep_all=True)
        maxima = [float(np.abs(o).max()) for o in outputs]
    else:
        scale = 2.0**-config.input_frac
        maxima = _float_interval_maxima(net, input_lo * scale, input_hi * scale)
    linear_positions = [i for i, layer in enumerate(net.layers) if isinstance(layer, FloatDense | FloatConv2d)]
    if not linear_positions:
        raise QuantizationError("the network has no dense or convolution layer")
    frac_in = config.input_frac
    layers = []
    output_frac = frac_in
    scales = []
    for position, layer in enumerate(net.layers):
        scales.append(np.array([2.0**-output_frac]))  # shape-only layers keep their input's scale
        if not isinstance(layer, FloatDense | FloatConv2d):
            layers.append(layer)
            continue
        linear_index = linear_positions.index(position)
        settings = config.for_layer(linear_index)
        last = position == linear_positions[-1]
        qlayer, output_frac = _quantize_linear(layer, settings, config, frac_in, maxima[position], last)
        layers.append(qlayer)
        frac_in = output_frac
        scales[-1] = np.array([2.0**-output_frac])
    if any(not isinstance(layer, Dense | Conv2d | MaxPool2d | Reshape) for layer in layers):
        raise QuantizationError("unsupported layer in the float network")
    return QNN(
        input_shape=tuple(net.input_shape), input_lo=input_lo, input_hi=input_hi,
        layers=tuple(layers), input_scale=2.0**-config.input_frac, input_zero=0,
        output_scale=np.array([2.0**-output_frac]), output_zero=0,
        accumulator_bits=32, overflow="error", input_rounding=config.weight_rounding,
        semantics=config.describe(), name=f"{net.name} quantized", layer_scales=tuple(scales))


def _quantize_linear(layer: FloatDense | FloatConv2d, settings: LayerConfig, config: FixedPointConfig,
                     frac_in: int, max_out: float, last: bool) -> tuple[Dense | Conv2d, int]:
    w_frac = weight_fraction_bits(layer.weight, settings.weights, settings.weight_frac)
    weight = to_fixed(layer.weight, w_frac, settings.weights, True, config.weight_rounding)
    acc_frac = w_frac + frac_in
    bias_frac = acc_frac if settings.bias_frac is None else settings.bias_frac
    if bias_frac > acc_frac:
        raise QuantizationError(f"layer {settings.index}: bias fraction bits {bias_frac} exceed the "
                                f"accumulator's {acc_frac}")
    bias = to_fixed(layer.bias, bias_frac, settings.bias_bits or 32, True, config.weight_rounding)
    bias = bias << (acc_frac - bias_frac)
    relu_like = layer.clip is not None and layer.clip[0] >= 0
    if last and config.output == "accumulator":
        stage, out_frac = OutputStage(None), acc_frac
    else:
        a_bits = settings.activations
        signed = not relu_like
        out_frac = settings.activation_frac
        if out_frac is None:
            out_frac = fraction_bits_for(max_out, a_bits, signed)
        lo, hi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if signed else (0, 2**a_bits - 1)
        if layer.clip is not None:
            clip_lo = to_fixed(np.array(layer.clip[0]), out_frac, 64, True, Rounding.HALF_EVEN)
            lo = max(lo, int(clip_lo))
            if math.isfinite(layer.clip[1]):
                hi = min(hi, int(to_fixed(np.array(layer.clip[1]), out_frac, 64, True, Rounding.HALF_EVEN)))
        stage = OutputStage(ShiftRequant(np.array([acc_frac - out_frac], np.int64), config.rounding), 0, lo, hi)
    zero = np.zeros(1, np.int64)
    storage = {"weight_storage": Storage(settings.weights, True),
               "bias_storage": Storage(settings.bias_bits or 32, True, acc_frac - bias_frac)}
    if isinstance(layer, FloatDense):
        return Dense(weight, zero, 0, bias, stage, **storage), out_frac
    return Conv2d(weight, zero, 0, bias, stage, layer.strides, layer.pads, layer.dilations, layer.group,
                  **storage), out_frac

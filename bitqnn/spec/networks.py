"""Network statements: import an ONNX model, or quantize a float network to fixed point.

Every setting and file is checked here, with its position, before the quantizer runs,
so a typo in a bit width is reported as such rather than as a quantizer failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitqnn.floatnet import FloatConv2d, FloatDense, FloatNetwork
from bitqnn.onnx_io import OnnxImportError, load_model
from bitqnn.qnn import QNN
from bitqnn.quantize import FixedPointConfig, LayerConfig, quantize_fixed_point
from bitqnn.requant import Rounding
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError
from bitqnn.spec.files import existing_file, read_samples
from bitqnn.spec.options import FLAG, PATH, OptionKind, choice, read_options, whole

_ROUNDING_NAMES = choice(*(r.value for r in Rounding))
ROUNDINGS = OptionKind(_ROUNDING_NAMES.description, lambda value: Rounding(_ROUNDING_NAMES.convert(value)))

# spec name -> kind; the spec says input=8 and bias=16 where the config says input_bits, bias_bits.
# Fraction bits may be negative: a step of 2 is 2**-(-1).
LAYER_OPTIONS: dict[str, OptionKind] = {
    "weights": whole(1),
    "weight_frac": whole(),
    "activations": whole(1),
    "activation_frac": whole(),
    "bias": whole(1),
    "bias_frac": whole(),
}
FIXED_OPTIONS: dict[str, OptionKind] = {
    **LAYER_OPTIONS,
    "input": whole(1),
    "input_frac": whole(),
    "input_signed": FLAG,
    "weight_rounding": ROUNDINGS,
    "rounding": ROUNDINGS,
    "output": choice("accumulator", "requantized"),
    "calibrate": PATH,
}
_CONFIG_FIELDS = {"input": "input_bits", "bias": "bias_bits"}


def load_onnx(source: ast.Onnx, base_dir: Path) -> QNN | FloatNetwork:
    path = existing_file(source.path, base_dir)
    try:
        return load_model(path)
    except OnnxImportError as err:
        raise SpecError(f"cannot import {source.path.text}: {err}", source.path.pos) from err


def _config_fields(settings: dict[str, object]) -> dict[str, object]:
    return {_CONFIG_FIELDS.get(name, name): value for name, value in settings.items()}


def quantize(source: ast.Quantize, base: QNN | FloatNetwork, base_dir: Path) -> QNN:
    config, calibration = fixed_config(source, base, base_dir)
    try:
        return quantize_fixed_point(base, config, calibration)
    except ValueError as err:
        raise SpecError(f"cannot quantize '{source.base.name}': {err}", source.pos) from err


def fixed_config(source: ast.Quantize, base: QNN | FloatNetwork,
                 base_dir: Path) -> tuple[FixedPointConfig, np.ndarray | None]:
    """The checked settings of `fixed(...)` and the calibration inputs it names."""
    if not isinstance(base, FloatNetwork):
        raise SpecError(f"'{source.base.name}' is already quantized; quantize takes a float network",
                        source.base.pos)
    settings = read_options(source.options, FIXED_OPTIONS, "fixed(...)")
    calibrate = settings.pop("calibrate", None)
    calibration = None if calibrate is None else read_samples(calibrate, None, base_dir)
    n_linear = sum(isinstance(layer, FloatDense | FloatConv2d) for layer in base.layers)
    layers: dict[int, dict[str, object]] = {}
    for override in source.layers:
        index = override.index.value
        if index.denominator != 1 or not 0 <= index < n_linear:
            raise SpecError(f"'{source.base.name}' has linear layers 0 to {n_linear - 1}; there is no layer {index}",
                            override.index.pos)
        if int(index) in layers:
            raise SpecError(f"layer {index} is already configured in this fixed(...)", override.pos)
        layers[int(index)] = read_options(override.options, LAYER_OPTIONS, f"layer {index}")
    config = FixedPointConfig(
        **_config_fields(settings),
        layers=tuple(LayerConfig(index, **_config_fields(values)) for index, values in sorted(layers.items())),
    )
    return config, calibration

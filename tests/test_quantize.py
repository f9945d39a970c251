"""Fixed-point post-training quantization: exact parameter rounding and faithful inference."""

import numpy as np
import pytest

from bitqnn.floatnet import RELU, FloatDense, FloatNetwork
from bitqnn.qnn import Dense, execute
from bitqnn.quantize import FixedPointConfig, LayerConfig, QuantizationError, fraction_bits_for, quantize_fixed_point
from bitqnn.requant import Rounding, ShiftRequant


def small_net(seed: int = 0) -> FloatNetwork:
    rng = np.random.default_rng(seed)
    return FloatNetwork((6,), (FloatDense(rng.normal(0, 0.5, (5, 6)), rng.normal(0, 0.1, 5), RELU),
                               FloatDense(rng.normal(0, 0.5, (3, 5)), rng.normal(0, 0.1, 3))))


def test_weights_are_the_rounded_fixed_point_values():
    net = small_net()
    qnn = quantize_fixed_point(net, FixedPointConfig(weights=8, weight_frac=6, input_frac=8))
    first = qnn.layers[0]
    assert isinstance(first, Dense)
    expected = np.clip(np.round(net.layers[0].weight * 64), -128, 127)  # np.round is half-even
    assert np.array_equal(first.weight, expected)
    # biases live at the accumulator's scale: weight fraction + input fraction bits
    assert np.array_equal(first.bias, np.round(net.layers[0].bias * 2.0 ** 14))


def test_requantization_shift_and_clamp_follow_the_config():
    net = small_net()
    config = FixedPointConfig(weights=6, weight_frac=4, activations=5, activation_frac=3, input_frac=8,
                              rounding=Rounding.FLOOR)
    qnn = quantize_fixed_point(net, config)
    stage = qnn.layers[0].output
    assert isinstance(stage.requant, ShiftRequant)
    assert int(stage.requant.shift[0]) == 4 + 8 - 3 and stage.requant.rounding is Rounding.FLOOR
    assert (stage.lo, stage.hi) == (0, 31)  # ReLU folded into the unsigned clamp
    assert qnn.layers[1].output.requant is None  # output layer left as accumulator
    assert float(qnn.output_scale[0]) == 2.0 ** -(4 + 3)


def test_layer_overrides_apply_to_one_layer_only():
    config = FixedPointConfig(weights=8, layers=(LayerConfig(1, weights=4, weight_frac=2),))
    assert config.for_layer(0).weights == 8 and config.for_layer(1).weights == 4
    qnn = quantize_fixed_point(small_net(), config)
    assert np.abs(qnn.layers[1].weight).max() <= 8


def test_fraction_bits_avoid_saturation():
    assert fraction_bits_for(0.9, 8, signed=True) == 7
    assert fraction_bits_for(1.0, 8, signed=True) == 7 - 1
    assert fraction_bits_for(5.0, 6, signed=False) == 6 - 3


def test_quantized_network_tracks_the_float_network():
    net = small_net(3)
    rng = np.random.default_rng(5)
    x_real = rng.uniform(0, 1, (500, 6))
    qnn = quantize_fixed_point(net, FixedPointConfig(weights=10, activations=10, input_frac=10, input_bits=11),
                               calibration=x_real)
    got = qnn.dequantize_output(execute(qnn, qnn.quantize_input(x_real)))
    assert np.abs(got - net.forward(x_real)).max() < 0.05


def test_bias_finer_than_the_accumulator_is_rejected():
    with pytest.raises(QuantizationError, match="bias fraction bits"):
        quantize_fixed_point(small_net(), FixedPointConfig(weight_frac=4, input_frac=4, bias_frac=12))


def fraction_reference(net: FloatNetwork, qnn, x_real: np.ndarray, config: FixedPointConfig) -> list[int]:
    """The fixed-point semantics written out with Python Fractions, one neuron at a time."""
    from fractions import Fraction

    from tests.test_requant import reference_round

    values = [reference_round(Fraction(float(v)) * 2**config.input_frac, config.weight_rounding) for v in x_real]
    values = [min(max(v, 0), 2**config.input_bits - 1) for v in values]
    frac_in = config.input_frac
    for layer, qlayer in zip(net.layers, qnn.layers, strict=True):
        w_frac = int(np.log2(np.abs(qlayer.weight).max() / np.abs(layer.weight).max()) + 0.5)
        out = []
        for row, bias in zip(layer.weight, layer.bias, strict=True):
            weights = [min(max(reference_round(Fraction(float(w)) * 2**w_frac, config.weight_rounding),
                               -(2 ** (config.weights - 1))), 2 ** (config.weights - 1) - 1) for w in row]
            b = reference_round(Fraction(float(bias)) * 2 ** (w_frac + frac_in), config.weight_rounding)
            acc = sum(w * v for w, v in zip(weights, values, strict=True)) + b
            if qlayer.output.requant is None:
                out.append(acc)
                continue
            shift = int(qlayer.output.requant.shift[0])
            q = reference_round(Fraction(acc, 2**shift), config.rounding)
            out.append(min(max(q, qlayer.output.lo), qlayer.output.hi))
        values = out
        if qlayer.output.requant is not None:
            frac_in = w_frac + frac_in - int(qlayer.output.requant.shift[0])
    return values


@pytest.mark.parametrize("rounding", list(Rounding))
def test_fixed_point_executor_matches_a_fraction_reference(rounding):
    rng = np.random.default_rng(11)
    net = small_net(4)
    config = FixedPointConfig(weights=6, activations=5, input_bits=8, input_frac=8, rounding=rounding,
                              weight_rounding=rounding)
    calibration = rng.uniform(0, 1, (200, 6))
    qnn = quantize_fixed_point(net, config, calibration)
    for x_real in rng.uniform(0, 1, (150, 6)):
        got = execute(qnn, qnn.quantize_input(x_real))[0].tolist()
        assert got == fraction_reference(net, qnn, x_real, config)

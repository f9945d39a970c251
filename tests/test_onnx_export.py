"""Exported fixed-point models compute the QNN's integers bit for bit: in onnxruntime and re-imported.

Every round trip compares three independent things on the same integer inputs: the QNN's
exact executor, onnxruntime's default session on the file, and the QNN that bitqnn's
importer reads back from the file (executed, and replayed in onnxruntime).
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bitqnn.floatnet import RELU, FloatDense, FloatNetwork
from bitqnn.onnx_io import ExportError, export_fixed_point, load_float, load_qnn, run_onnxruntime
from bitqnn.qnn import QNN, Dense, Storage, execute
from bitqnn.quantize import FixedPointConfig, LayerConfig, quantize_fixed_point
from bitqnn.requant import OutputStage, Rounding, ShiftRequant
from bitqnn.samples import load_samples
from tests.netgen import random_conv_qnn

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
SAMPLES = 10_000


def mlp(seed: int, sizes: tuple[int, ...] = (12, 10, 8, 4), relu_output: bool = False) -> FloatNetwork:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        clip = RELU if not last or relu_output else None
        layers.append(FloatDense(rng.normal(0, 0.6, (n_out, n_in)), rng.normal(0, 0.2, n_out), clip))
    return FloatNetwork((sizes[0],), tuple(layers), name=f"mlp{seed}")


def quantized(net: FloatNetwork, seed: int = 1, **settings) -> QNN:
    config = FixedPointConfig(**{"output": "requantized", **settings})
    low = -1.0 if config.input_signed else 0.0
    calibration = np.random.default_rng(seed).uniform(low, 1.0, (300, int(np.prod(net.input_shape))))
    return quantize_fixed_point(net, config, calibration)


def integer_inputs(qnn: QNN, count: int = SAMPLES, seed: int = 7) -> np.ndarray:
    """Half uniform over the input box, half at its corners (where clamps and large accumulators live)."""
    rng = np.random.default_rng(seed)
    shape = (count // 2, qnn.input_size)
    uniform = rng.integers(qnn.input_lo, qnn.input_hi + 1, shape)
    corners = np.where(rng.random(shape) < 0.5, qnn.input_lo, qnn.input_hi)
    return np.concatenate([uniform, corners])


def onnxruntime_integers(path: Path, qnn: QNN, x: np.ndarray) -> np.ndarray:
    """The file run by a default onnxruntime session on the real inputs, mapped onto the output grid."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(None, {"input": (x * qnn.input_scale).astype(np.float32)})[0]
    steps = y.astype(np.float64) / float(qnn.output_scale[0])
    assert np.array_equal(steps, np.rint(steps)), "outputs off the output grid"
    return steps.astype(np.int64)


def assert_round_trip(qnn: QNN, path: Path, x: np.ndarray | None = None) -> QNN:
    export_fixed_point(qnn, path)
    x = integer_inputs(qnn) if x is None else x
    expected = execute(qnn, x)
    assert np.array_equal(onnxruntime_integers(path, qnn, x), expected)
    imported = load_qnn(path)
    assert (imported.input_scale, imported.input_zero, imported.output_zero) == (qnn.input_scale, 0, 0)
    assert np.array_equal(imported.output_scale, qnn.output_scale)
    assert imported.input_lo <= qnn.input_lo and qnn.input_hi <= imported.input_hi
    assert np.array_equal(execute(imported, x), expected)
    assert np.array_equal(run_onnxruntime(imported, x), expected)
    return imported


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


HALF_EVEN, HALF_UP, FLOOR = Rounding.HALF_EVEN, Rounding.HALF_UP, Rounding.FLOOR


@pytest.mark.parametrize(("settings", "ops", "absent"), [
    (dict(weights=8, activations=8, rounding=HALF_EVEN), {"Gemm"}, {"MatMulInteger", "Clip"}),
    (dict(weights=4, activations=4, rounding=HALF_EVEN), {"Gemm", "Clip"}, {"MatMulInteger"}),
    (dict(weights=6, activations=6, rounding=HALF_EVEN), {"Gemm", "Clip"}, {"MatMulInteger"}),
    (dict(weights=6, activations=6, rounding=HALF_UP), {"MatMulInteger", "Clip"}, {"Gemm"}),
    (dict(weights=8, activations=8, rounding=HALF_UP, input_signed=True), {"MatMulInteger"}, {"Gemm"}),
    (dict(weights=4, activations=6, rounding=FLOOR, input_bits=6, input_frac=6), {"MatMulInteger"}, {"Gemm"}),
    (dict(rounding=HALF_UP, layers=(LayerConfig(0, weights=4, activations=8), LayerConfig(1, weights=8, activations=6),
                                    LayerConfig(2, weights=6, activations=4))), {"MatMulInteger"}, set()),
    (dict(weights=5, activations=7, rounding=HALF_EVEN, weight_rounding=HALF_UP,
          layers=(LayerConfig(1, weights=8, weight_frac=5),)), {"Gemm"}, {"MatMulInteger"}),
], ids=["w8a8-half_even", "w4a4-half_even", "w6a6-half_even", "w6a6-half_up", "w8a8-half_up-signed-input",
        "w4a6-floor-6bit-input", "per-layer-half_up", "per-layer-half_even"])
def test_round_trip_is_bit_exact(tmp_path, settings, ops, absent):
    qnn = quantized(mlp(0), **settings)
    path = tmp_path / "model.onnx"
    assert_round_trip(qnn, path)
    assert ops <= op_types(path) and not absent & op_types(path)


def test_half_away_is_exported_where_a_relu_clamp_swallows_the_negative_ties(tmp_path):
    qnn = quantized(mlp(2, relu_output=True), weights=8, activations=8, rounding=Rounding.HALF_AWAY)
    assert_round_trip(qnn, tmp_path / "model.onnx")


def test_half_away_with_ties_on_both_signs_is_refused(tmp_path):
    qnn = quantized(mlp(2), weights=8, activations=8, rounding=Rounding.HALF_AWAY)
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"layer 2 requantizes with shift \d+ rounding half_away"):
        export_fixed_point(qnn, path)
    assert not path.exists()


def assert_accumulator_round_trip(qnn: QNN, path: Path, x: np.ndarray | None = None) -> QNN:
    """An accumulator output: the float "logits" are exactly the accumulators times the output scale."""
    assert qnn.layers[-1].output.requant is None
    x = integer_inputs(qnn) if x is None else x
    imported = assert_round_trip(qnn, path, x)
    stage = imported.layers[-1].output
    assert (stage.requant, stage.zero, stage.lo, stage.hi) == (None, 0, None, None)  # the identity
    graph = onnx.load(str(path)).graph
    assert [node.op_type for node in graph.node[-4:]] == ["MatMulInteger", "Cast", "Add", "Mul"]
    assert graph.node[-1].output[0] == graph.output[0].name == "logits"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": (x * qnn.input_scale).astype(np.float32)})[0]
    assert logits.dtype == np.float32
    assert np.array_equal(logits.astype(np.float64), imported.dequantize_output(execute(imported, x)))
    return imported


@pytest.mark.parametrize("settings", [
    dict(weights=6, activations=6, rounding=HALF_EVEN),
    dict(weights=6, activations=6, rounding=HALF_UP),
    dict(weights=8, activations=8, rounding=HALF_UP, input_signed=True),
    dict(weights=4, activations=6, rounding=FLOOR, input_bits=6, input_frac=6),
], ids=["w6a6-half_even", "w6a6-half_up", "w8a8-half_up-signed-input", "w4a6-floor-6bit-input"])
def test_an_accumulator_output_is_exported_as_float_logits(tmp_path, settings):
    qnn = quantized(mlp(0), output="accumulator", **settings)
    assert_accumulator_round_trip(qnn, tmp_path / "model.onnx")


def test_a_single_layer_accumulator_output_on_a_narrow_input(tmp_path):
    rng = np.random.default_rng(3)
    net = FloatNetwork((3,), (FloatDense(rng.normal(0, 1, (2, 3)), rng.normal(0, 0.2, 2)),))
    qnn = quantized(net, weights=3, input_bits=2, input_frac=2, output="accumulator")
    assert_accumulator_round_trip(qnn, tmp_path / "model.onnx")


def accumulator_output_qnn(input_hi: int) -> QNN:
    """One neuron summing 1040 inputs with weight 127: 127 * 127 * 1040 < 2**24 <= 255 * 127 * 1040."""
    n_in = 1040
    layer = Dense(np.full((1, n_in), 127), np.zeros(1, np.int64), 0, np.zeros(1, np.int64), OutputStage(None),
                  Storage(8, True))
    return QNN((n_in,), 0, input_hi, (layer,), input_scale=2.0**-8, output_scale=np.array([2.0**-15]),
               layer_scales=(np.array([2.0**-15]),))


@pytest.mark.parametrize(("input_hi", "message"), [
    (255, r"layer 0's accumulators may reach magnitude 33680400 .* 2\*\*24"),
    (127, r"layer 0 keeps its accumulator as the network output, .* exact only below 2\*\*24; .* may reach "
          r"magnitude 33680400 over the stored input range \[0, 255\]"),
], ids=["over-the-input-box", "over-the-stored-input-range"])
def test_accumulator_outputs_reaching_2_24_are_refused(tmp_path, input_hi, message):
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=message):
        export_fixed_point(accumulator_output_qnn(input_hi), path)
    assert not path.exists()


@pytest.mark.parametrize(("settings", "message"), [
    (dict(weights=10), r"layer 0 has 10-bit weights"),
    (dict(layers=(LayerConfig(1, activations=10),)), r"layer 1's activations: the range \[0, 1023\] is wider than 8"),
    (dict(input_bits=10, input_frac=10), r"the input: the range \[0, 1023\] is wider than 8 bits"),
])
def test_wider_than_8_bits_is_refused(tmp_path, settings, message):
    with pytest.raises(ExportError, match=message):
        export_fixed_point(quantized(mlp(0), **settings), tmp_path / "model.onnx")


def test_accumulators_beyond_float32_exactness_are_refused(tmp_path):
    n_in = 1040  # 255 * 127 * 1040 > 2**24
    stage = OutputStage(ShiftRequant(np.array([16]), Rounding.HALF_EVEN), 0, -128, 127)
    layer = Dense(np.full((1, n_in), 127), np.zeros(1, np.int64), 0, np.zeros(1, np.int64), stage, Storage(8, True))
    qnn = QNN((n_in,), 0, 255, (layer,), input_scale=2.0**-8, output_scale=np.array([2.0**-7]),
              layer_scales=(np.array([2.0**-7]),))
    with pytest.raises(ExportError, match=r"layer 0's accumulators may reach magnitude 33680400 .* 2\*\*24"):
        export_fixed_point(qnn, tmp_path / "model.onnx")


def test_per_channel_shifts_and_other_layers_are_refused(tmp_path):
    qnn = quantized(mlp(0))
    first = qnn.layers[0]
    shifts = np.arange(first.bias.size) % 2 + 8
    per_channel = Dense(first.weight, first.weight_zero, 0, first.bias,
                        OutputStage(ShiftRequant(shifts, Rounding.HALF_EVEN), 0, 0, 255))
    with pytest.raises(ExportError, match=r"layer 0 has per-channel shifts \[8, 9\]"):
        export_fixed_point(QNN(qnn.input_shape, 0, 255, (per_channel, *qnn.layers[1:]), qnn.input_scale,
                               layer_scales=qnn.layer_scales), tmp_path / "model.onnx")
    with pytest.raises(ExportError, match=r"layer 0 is Conv2d; only Dense layers"):
        export_fixed_point(random_conv_qnn(np.random.default_rng(0), "half_even"), tmp_path / "model.onnx")


DIGITS_CONFIG = dict(weights=6, activations=6, input_bits=8, input_frac=8)


def assert_same_layers(qnn, imported) -> None:
    """One imported layer per layer (clamp islands folded back), with the same clamps and scales,
    so the imported model pairs with its float network layer by layer."""
    assert len(imported.layers) == len(qnn.layers)
    for ours, theirs in zip(qnn.layers[:-1], imported.layers[:-1], strict=True):
        assert (theirs.output.lo, theirs.output.hi) == (ours.output.lo, ours.output.hi)
    for ours, theirs in zip(qnn.layer_scales, imported.layer_scales, strict=True):
        assert np.array_equal(ours, theirs)


@pytest.fixture(scope="module")
def digits() -> tuple[FloatNetwork, np.ndarray]:
    return load_float(DIGITS / "digits.onnx"), load_samples(DIGITS / "test.npz")


@pytest.mark.parametrize("rounding", [Rounding.HALF_EVEN, Rounding.HALF_UP])
def test_digits_round_trip_on_the_test_images(tmp_path, digits, rounding):
    net, images = digits
    qnn = quantize_fixed_point(net, FixedPointConfig(**DIGITS_CONFIG, rounding=rounding, output="requantized"),
                               images)
    x = np.concatenate([qnn.quantize_input(images), integer_inputs(qnn)])
    imported = assert_round_trip(qnn, tmp_path / "digits_fixed.onnx", x)
    assert_same_layers(qnn, imported)


@pytest.mark.parametrize("rounding", [Rounding.HALF_EVEN, Rounding.HALF_UP])
def test_digits_with_its_accumulator_output_round_trips(tmp_path, digits, rounding):
    net, images = digits
    config = FixedPointConfig(**DIGITS_CONFIG, rounding=rounding)
    assert config.output == "accumulator"  # the default
    qnn = quantize_fixed_point(net, config, images)
    x = np.concatenate([qnn.quantize_input(images), integer_inputs(qnn)])
    imported = assert_accumulator_round_trip(qnn, tmp_path / "digits_fixed.onnx", x)
    assert_same_layers(qnn, imported)

"""Export of a power-of-two fixed-point QNN as a quantized ONNX model that computes the same integers.

The file is only useful if it means what the QNN means: a verdict proved on the QNN must
hold for the model that is deployed. So nothing here is approximate. Every layer is written
in a form whose onnxruntime arithmetic is known exactly (`ort_kernels`, measured), that
arithmetic is compared with the layer's own requantization as exact step functions over every
accumulator the layer can reach, and a layer that differs anywhere is refused with an
ExportError instead of being written.

Two layer encodings (and a float output for a last layer kept as its accumulator, below), all
made of standard ONNX ops that onnxruntime runs and that `bitqnn.onnx_io.load_qnn` reads back:

* QDQ Gemm, the deployable form: DequantizeLinear on the input (scale 2**-in_frac), the int8
  weights (2**-w_frac) and the int32 bias (their product, zero 0) into Gemm, then
  QuantizeLinear onto the output grid (2**-out_frac). onnxruntime fuses the group into its
  integer QGemm kernel: rint_half_even(float32(acc) * M) with M = (s_in * s_w) / s_out in
  float32. With power-of-two scales M is exactly 2**-shift, and float32(acc) is exact while
  |acc| <= 2**24, so QGemm is ShiftRequant(shift, HALF_EVEN). A clamp narrower than the
  storage type (6-bit activations [0, 63] kept in uint8) follows as DequantizeLinear -> Clip
  -> QuantizeLinear, which onnxruntime runs in float32 and which is checked to be exactly the
  integer clamp on all 256 stored values; the importer reads it as a Lookup layer.

* Integer matmul with a float32 epilogue, for the roundings QGemm cannot do:
  MatMulInteger -> Cast(float) -> Add(bias + offset) -> Mul(2**-acc_frac) [-> Clip] ->
  QuantizeLinear. onnxruntime computes the int32 product exactly, then plain IEEE float32.
  No int32 bias can turn half-even into half-up: half-even's pieces alternate between
  2**s + 1 and 2**s - 1 accumulators, half-up's are all 2**s long. Half an accumulator unit,
  which int32 cannot hold and float32 can, does it. Write acc = q * 2**s + r, 0 <= r < 2**s,
  s >= 1. Then (acc + 1/2) / 2**s = q + (r + 1/2) / 2**s is never a tie (r + 1/2 is not the
  integer 2**(s-1)), and rounds up exactly when r >= 2**(s-1), so

      half_up(acc)  = floor((acc + 2**(s-1)) / 2**s) = rint((acc + 1/2) / 2**s),
      floor(acc)    = floor(acc / 2**s)              = rint((acc - 2**(s-1) + 1/2) / 2**s),

  the second because q + (r - 2**(s-1) + 1/2) / 2**s lies strictly inside (q - 1/2, q + 1/2).
  Every float32 step is exact while |acc| < 2**23 (one fraction bit), the power-of-two Mul
  and the QuantizeLinear division are exact, and Clip before rounding equals the integer
  clamp after it. Half away from zero is half-up for acc >= 0 and rint((acc - 1/2) / 2**s)
  for acc <= 0: one offset serves a neuron only when its reachable accumulators never need
  the other (a ReLU clamp swallows the negative ties, say), which the step comparison
  decides per neuron.

Each layer gets the QDQ form where it is exact (half-even shifts, and any shift that does not
round), the integer form where that one is, and an ExportError naming the layer, its shift and
rounding, and a neuron and accumulator where onnxruntime would differ, where neither is.

A last layer left as its accumulator (output="accumulator", OutputStage(None)) has no 8-bit
grid to land on, so the network's output is that accumulator's real value in float32:
MatMulInteger -> Cast(float) -> Add(bias) -> Mul(2**-acc_frac) is the graph output "logits".
Each step is exact while the bias-free product, the bias and their sum stay below 2**24 in
magnitude, and the power-of-two Mul is exact while its results stay normal floats (a scale
in [2**-126, 2**103]). The importer reads the tail back as the identity output stage with that
scale, after proving the same bounds over the imported network's input box -- the input's
storage type, which is wider than the original's when input_bits < 8 -- so the exporter
checks them over that box too.

Refused, with the layer named: layers other than Dense (Conv2d, pooling, reshapes, lookups),
zero points, per-channel shifts, weights or activations wider than 8 bits (ONNX's integer
kernels and the importer store 8-bit tensors), inputs wider than 8 bits, and accumulators
that may reach 2**24 in magnitude over the whole input box (interval bounds).

The re-imported QNN has the same input and output scales and zero points (0). Its input
range is the storage type's ([0, 255] for uint8), which is wider than the original's when
input_bits < 8; on the original's inputs the two agree bit for bit, as they do with
onnxruntime's default session. One platform caveat, as in `ort_kernels`: onnxruntime's u8 x s8
kernels are exact on CPUs with VNNI; without it MLAS's AVX2 kernel saturates pairs of products
to int16, which full-range 8-bit weights on 8-bit inputs can reach (7-bit weights cannot).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bitqnn.bounds import interval_bounds
from bitqnn.onnx_io import ort_kernels
from bitqnn.onnx_io.float_steps import FloatStep
from bitqnn.onnx_io.requant_ort import Float32ChainRequant
from bitqnn.qnn import QNN, Dense
from bitqnn.query import Box
from bitqnn.requant import Float32Requant, OutputStage, Requant, Rounding, ShiftRequant

OPSET = 19  # DequantizeLinear of int32 biases, Clip with tensor bounds; ReferenceEvaluator runs DQ from 19 on
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
FLOAT32_EXACT = 2**24  # every integer of smaller magnitude is a float32
STORAGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


class ExportError(ValueError):
    """A QNN (or one of its layers) that no ONNX model here computes exactly; the message says why."""


def export_fixed_point(qnn: QNN, path: str | Path) -> None:
    """Write `qnn` (from quantize_fixed_point) as an ONNX model with bit-identical integers.

    Raises ExportError, before anything is written, if some layer cannot be expressed exactly.
    """
    model = fixed_point_model(qnn)
    onnx.save(model, str(path))


def fixed_point_model(qnn: QNN) -> onnx.ModelProto:
    """The checked ONNX model of a fixed-point MLP: float input "input" [N, n_in], float output "logits".

    The float input is real-valued (x_int * input_scale), the output dequantized
    (y_int * output_scale); see the module notes for the encoding and why it is exact.
    """
    _check_network(qnn)
    n_in = qnn.input_size
    box = Box(np.full(n_in, qnn.input_lo, np.int64), np.full(n_in, qnn.input_hi, np.int64))
    bounds = interval_bounds(qnn, box)
    builder = _Builder()
    grid = _Grid(float(qnn.input_scale), *_storage_of(qnn.input_lo, qnn.input_hi, "the input"))
    tensor = builder.quantize(INPUT_NAME, grid, "input_q")
    plans = []
    for index, layer in enumerate(qnn.layers):
        acc_lo, acc_hi = bounds.layers[index].acc_lo, bounds.layers[index].acc_hi
        if index == len(qnn.layers) - 1 and layer.output.requant is None:
            plans.append(_plan_accumulator_output(qnn, index, layer, grid, acc_lo, acc_hi))
        else:
            plans.append(_plan_layer(qnn, index, layer, grid, acc_lo, acc_hi))
        grid = plans[-1].output
    for index in range(len(plans) - 1):  # see _unfused
        if _unfused(plans[index], plans[index + 1]):
            layer, bounds_here = qnn.layers[index], bounds.layers[index]
            plans[index] = _plan_layer(qnn, index, layer, plans[index].input, bounds_here.acc_lo, bounds_here.acc_hi,
                                       allow_qdq=False)
    encodings = []
    for plan in plans:
        tensor = plan.emit(builder, tensor)
        grid = plan.output
        encodings.append(f"layer {plan.index}: {plan.describe()}")
    if grid is not None:  # else the last layer wrote the float output itself
        builder.node("DequantizeLinear", [tensor, *builder.grid_params(grid)], [OUTPUT_NAME], "output_dq")
    graph = helper.make_graph(
        builder.nodes, _graph_name(qnn),
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", qnn.output_size])],
        builder.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="bitqnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    model.doc_string = (f"{qnn.name}, exported by bitqnn from {qnn.semantics}; integer outputs are bit-identical "
                        "under onnxruntime's CPU integer kernels. " + "; ".join(encodings))
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass(frozen=True)
class _Grid:
    """A quantized tensor: real = scale * q, q stored in dtype (zero point 0)."""

    scale: float
    dtype: np.dtype
    lo: int
    hi: int


def _check_network(qnn: QNN) -> None:
    for index, layer in enumerate(qnn.layers):
        if not isinstance(layer, Dense):
            raise ExportError(f"layer {index} is {type(layer).__name__}; only Dense layers (an MLP) are exported")
    if len(qnn.input_shape) != 1:
        raise ExportError(f"the input has shape {qnn.input_shape}; only a flat input is exported")
    if qnn.input_zero != 0:
        raise ExportError(f"the input has zero point {qnn.input_zero}; fixed point has 0")
    _check_scale(qnn.input_scale, "the input scale")
    if qnn.layer_scales is None:
        raise ExportError("the network does not state its layer scales (quantize_fixed_point does)")
    if not qnn.layers:
        raise ExportError("the network has no layers")


def _check_scale(scale: float, what: str) -> None:
    """A power of two in float32's normal range: then every product and ratio of scales is exact."""
    mantissa, exponent = math.frexp(float(scale))
    if mantissa != 0.5 or not -126 <= exponent - 1 <= 127:
        raise ExportError(f"{what} is {scale}; only powers of two (fixed point) are exported")


def _storage_of(lo: int, hi: int, what: str) -> tuple[np.dtype, int, int]:
    """The 8-bit type that holds [lo, hi]: uint8 when nothing is negative, else int8."""
    for dtype, (type_lo, type_hi) in STORAGE.items():
        if type_lo <= lo and hi <= type_hi:
            return dtype, type_lo, type_hi
    raise ExportError(f"{what}: the range [{lo}, {hi}] is wider than 8 bits, and ONNX's integer kernels and "
                      "bitqnn's importer hold 8-bit tensors")


class _Builder:
    """Nodes and initializers of the graph under construction, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._grids: dict[_Grid, tuple[str, str]] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def grid_params(self, grid: _Grid) -> tuple[str, str]:
        """The (scale, zero point) initializers of a grid, shared by its QuantizeLinear and DequantizeLinear."""
        if grid not in self._grids:
            k = len(self._grids)
            self._grids[grid] = (self.const(f"grid{k}_scale", np.float32(grid.scale)),
                                 self.const(f"grid{k}_zero", np.zeros((), grid.dtype)))
        return self._grids[grid]

    def quantize(self, tensor: str, grid: _Grid, name: str) -> str:
        return self.node("QuantizeLinear", [tensor, *self.grid_params(grid)], [name], name)

    def dequantize(self, tensor: str, grid: _Grid, name: str) -> str:
        return self.node("DequantizeLinear", [tensor, *self.grid_params(grid)], [name], name)


@dataclass(frozen=True, eq=False)
class _BiasFree:
    """A requant of the bias-free accumulator A (MatMulInteger's), seen as a function of acc = A + bias."""

    requant: Requant
    bias: np.ndarray  # int64 [channels]

    def __call__(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc, dtype=np.int64)
        return self.requant(acc - self.bias[np.broadcast_to(channels, acc.shape)], channels)

    def describe(self) -> str:
        return self.requant.describe()


@dataclass(frozen=True, eq=False)
class _LayerPlan:
    """One Dense layer's exact encoding, chosen and checked; `emit` writes its nodes."""

    index: int
    layer: Dense
    input: _Grid
    output: _Grid
    weight_scale: float
    clamp: tuple[int, int] | None  # a clamp narrower than the output storage type
    offsets: np.ndarray | None  # None: QDQ Gemm; else the integer matmul's float bias offsets
    note: str

    def describe(self) -> str:
        return self.note

    def emit(self, builder: _Builder, tensor: str) -> str:
        return self._emit_qdq(builder, tensor) if self.offsets is None else self._emit_integer(builder, tensor)

    def _emit_qdq(self, builder: _Builder, tensor: str) -> str:
        p = f"layer{self.index}"
        layer = self.layer
        x = builder.dequantize(tensor, self.input, f"{p}_x")
        w_q = builder.const(f"{p}_weight", layer.weight.astype(np.int8))
        w_scale = builder.const(f"{p}_weight_scale", np.float32(self.weight_scale))
        w_zero = builder.const(f"{p}_weight_zero", np.int8(0))
        w = builder.node("DequantizeLinear", [w_q, w_scale, w_zero], [f"{p}_w"], f"{p}_w")
        b_q = builder.const(f"{p}_bias", layer.bias.astype(np.int32))
        b_scale = builder.const(f"{p}_bias_scale", np.float32(self.input.scale * self.weight_scale))
        b_zero = builder.const(f"{p}_bias_zero", np.int32(0))
        b = builder.node("DequantizeLinear", [b_q, b_scale, b_zero], [f"{p}_b"], f"{p}_b")
        gemm = builder.node("Gemm", [x, w, b], [f"{p}_gemm"], f"{p}_gemm", transB=1)
        y = builder.quantize(gemm, self.output, f"{p}_y")
        if self.clamp is None:
            return y
        real = builder.dequantize(y, self.output, f"{p}_y_real")
        clipped = self._clip(builder, real)
        return builder.quantize(clipped, self.output, f"{p}_y_clamped")

    def _emit_integer(self, builder: _Builder, tensor: str) -> str:
        p = f"layer{self.index}"
        real = _emit_scaled_accumulator(builder, p, self.layer, tensor, self.input, self.float_bias(),
                                        self.input.scale * self.weight_scale, f"{p}_real")
        if self.clamp is not None:
            real = self._clip(builder, real)
        return builder.quantize(real, self.output, f"{p}_y")

    def float_bias(self) -> np.ndarray:
        """bias + offset per channel, in float32 (exact: the step comparison ran on these very values)."""
        return (self.layer.bias.astype(np.float64) + self.offsets).astype(np.float32)

    def _clip(self, builder: _Builder, real: str) -> str:
        p = f"layer{self.index}"
        lo, hi = (np.float32(v * self.output.scale) for v in self.clamp)
        bounds = [builder.const(f"{p}_clip_lo", lo), builder.const(f"{p}_clip_hi", hi)]
        return builder.node("Clip", [real, *bounds], [f"{p}_clipped"], f"{p}_clip")


@dataclass(frozen=True, eq=False)
class _AccumulatorPlan:
    """The last layer's accumulator as the float output: (acc + bias) * 2**-acc_frac, exact (module notes)."""

    index: int
    layer: Dense
    input: _Grid
    scale: float  # of one accumulator unit: the network's output scale
    output = None  # no output grid: the graph output is float

    def describe(self) -> str:
        return (f"MatMulInteger + float32 epilogue, the accumulator times 2**{int(math.log2(self.scale))} "
                f"as the float output (exact below 2**24)")

    def emit(self, builder: _Builder, tensor: str) -> str:
        return _emit_scaled_accumulator(builder, f"layer{self.index}", self.layer, tensor, self.input,
                                        self.layer.bias.astype(np.float32), self.scale, OUTPUT_NAME)


def _emit_scaled_accumulator(builder: _Builder, p: str, layer: Dense, tensor: str, grid: _Grid, bias: np.ndarray,
                             scale: float, output: str) -> str:
    """MatMulInteger -> Cast(float) -> Add(bias) -> Mul(scale): the accumulator's real value in float32."""
    weight = builder.const(f"{p}_weight", layer.weight.T.astype(np.int8))
    x_zero = builder.grid_params(grid)[1]
    w_zero = builder.const(f"{p}_weight_zero", np.int8(0))
    acc = builder.node("MatMulInteger", [tensor, weight, x_zero, w_zero], [f"{p}_acc"], f"{p}_matmul")
    acc = builder.node("Cast", [acc], [f"{p}_acc_float"], f"{p}_cast", to=TensorProto.FLOAT)
    acc = builder.node("Add", [acc, builder.const(f"{p}_bias_float", bias)], [f"{p}_acc_biased"], f"{p}_bias")
    return builder.node("Mul", [acc, builder.const(f"{p}_acc_scale", np.float32(scale))], [output], f"{p}_scale")


def _plan_accumulator_output(qnn: QNN, index: int, layer: Dense, grid: _Grid, acc_lo: np.ndarray,
                             acc_hi: np.ndarray) -> _AccumulatorPlan:
    """The last layer kept as its accumulator, checked exact over the original and the stored input box."""
    where = f"layer {index}"
    _check_dense(layer, where, acc_lo, acc_hi)
    if layer.output.lo is not None or layer.output.hi is not None:
        raise ExportError(f"{where} clamps its accumulator; not exported")
    scale = np.asarray(qnn.layer_scales[index], dtype=np.float64).reshape(-1)
    if scale.size != 1:
        raise ExportError(f"{where} has per-channel output scales; only one scale per layer is exported")
    scale = float(scale[0])
    _check_scale(scale, f"{where}'s output scale")
    if scale * FLOAT32_EXACT > 2.0**127:
        raise ExportError(f"{where}'s output scale is {scale}; a float32 holds the accumulator times it only "
                          "up to 2**103")
    if (grid.lo, grid.hi) != (qnn.input_lo, qnn.input_hi):  # the importer's box is wider: bound over it
        n_in = qnn.input_size
        stored = Box(np.full(n_in, grid.lo, np.int64), np.full(n_in, grid.hi, np.int64))
        wide = interval_bounds(qnn, stored).layers[index]
        acc_lo, acc_hi = wide.acc_lo, wide.acc_hi
    bias = layer.bias.astype(np.int64)
    reach = int(max(np.abs(acc_lo).max(), np.abs(acc_hi).max(), np.abs(acc_lo - bias).max(),
                    np.abs(acc_hi - bias).max(), np.abs(bias).max()))
    if reach >= FLOAT32_EXACT:
        raise ExportError(f"{where} keeps its accumulator as the network output, which leaves in float32, exact "
                          f"only below 2**24; its accumulator, bias or bias-free product may reach magnitude "
                          f"{reach} over the stored input range [{grid.lo}, {grid.hi}]")
    return _AccumulatorPlan(index, layer, grid, scale)


def _unfused(plan: _LayerPlan, following: _LayerPlan | _AccumulatorPlan) -> bool:
    """A QDQ Gemm whose signed 8-bit output an integer matmul reads directly (no Clip island in
    between) is left unfused by onnxruntime, which then runs that Gemm in float: such a layer
    takes the integer-matmul form too."""
    reads_integer = isinstance(following, _AccumulatorPlan) or following.offsets is not None
    return plan.offsets is None and plan.clamp is None and np.dtype(plan.output.dtype) == np.int8 and reads_integer


def _plan_layer(qnn: QNN, index: int, layer: Dense, grid: _Grid, acc_lo: np.ndarray,
                acc_hi: np.ndarray, allow_qdq: bool = True) -> _LayerPlan:
    """Choose the first encoding that is exact on every reachable accumulator, or raise ExportError."""
    where = f"layer {index}"
    _check_dense(layer, where, acc_lo, acc_hi)
    stage = layer.output
    requant = stage.requant
    if requant is not None and not isinstance(requant, ShiftRequant):
        raise ExportError(f"{where} requantizes with {requant.describe()}; only power-of-two shifts are exported")
    shifts = np.unique(np.asarray(requant.shift)) if requant is not None else np.zeros(1, np.int64)
    if shifts.size != 1:
        raise ExportError(f"{where} has per-channel shifts {shifts.tolist()}; only one shift per layer is exported")
    shift = int(shifts[0])
    out_scale = np.asarray(qnn.layer_scales[index], dtype=np.float64).reshape(-1)
    if out_scale.size != 1:
        raise ExportError(f"{where} has per-channel output scales; only one scale per layer is exported")
    _check_scale(float(out_scale[0]), f"{where}'s output scale")
    weight_scale = float(out_scale[0]) * 2.0**-shift / grid.scale
    _check_scale(weight_scale, f"{where}'s weight scale")
    if requant is None:  # a hidden layer passing its accumulator on (the last one is _plan_accumulator_output's)
        if stage.lo is not None or stage.hi is not None:
            raise ExportError(f"{where} clamps its accumulator; not exported")
        lo, hi = int(acc_lo.min()), int(acc_hi.max())
        dtype, type_lo, type_hi = _storage_of(lo, hi, f"{where} passes its accumulator on unrequantized")
    else:
        if stage.zero != 0:
            raise ExportError(f"{where} has output zero point {stage.zero}; fixed point has 0")
        lo = int(acc_lo.min()) if stage.lo is None else stage.lo
        hi = int(acc_hi.max()) if stage.hi is None else stage.hi
        dtype, type_lo, type_hi = _storage_of(lo, hi, f"{where}'s activations")
    output = _Grid(float(out_scale[0]), dtype, type_lo, type_hi)
    clamp = None if (lo, hi) == (type_lo, type_hi) or requant is None else (lo, hi)
    rounding = requant.rounding if requant is not None else Rounding.HALF_EVEN
    original = stage if requant is not None else OutputStage(ShiftRequant(np.zeros(1, np.int64), rounding))
    plan = _LayerPlan(index, layer, grid, output, weight_scale, clamp, None,
                      f"QDQ Gemm (onnxruntime QGemm, float32 multiplier 2**{-shift}, round half even)")
    mismatch = _first_mismatch(original, _qgemm_stage(plan), acc_lo, acc_hi)
    if allow_qdq and mismatch is None and _clip_island_is_exact(plan):
        return plan
    offsets = np.zeros(layer.bias.shape, np.float64)
    for channel in range(layer.bias.size):
        for offset in _offsets(rounding, shift):
            offsets[channel] = offset
            trial = _LayerPlan(index, layer, grid, output, weight_scale, clamp, offsets, "")
            if _channel_mismatch(original, _integer_stage(trial), channel, acc_lo[channel], acc_hi[channel]) is None:
                break
    plan = _LayerPlan(index, layer, grid, output, weight_scale, clamp, offsets.copy(),
                      f"MatMulInteger + float32 epilogue (bias offsets {sorted(set(offsets.tolist()))}, "
                      f"shift {shift}, QuantizeLinear round half even) for a {rounding.value} shift")
    failure = _first_mismatch(original, _integer_stage(plan), acc_lo, acc_hi)
    if failure is None:
        return plan
    neuron, acc, want, got = failure
    tried = ", ".join(f"{offset:+g}" for offset in _offsets(rounding, shift))
    raise ExportError(f"{where} requantizes with shift {shift} rounding {rounding.value}, which no exported form "
                      f"computes exactly: onnxruntime rounds half to even, and with the bias offset(s) {tried} "
                      f"neuron {neuron} at accumulator {acc} would give {got} instead of {want}")


def _check_dense(layer: Dense, where: str, acc_lo: np.ndarray, acc_hi: np.ndarray) -> None:
    if np.any(layer.weight_zero != 0) or layer.input_zero != 0:
        raise ExportError(f"{where} has zero points; fixed point has none")
    storage = layer.weight_storage
    if storage is not None and storage.bits > 8:
        raise ExportError(f"{where} has {storage.bits}-bit weights; ONNX's integer kernels take 8-bit weights")
    if layer.weight.min() < -128 or layer.weight.max() > 127:
        raise ExportError(f"{where} has weights outside int8; ONNX's integer kernels take 8-bit weights")
    if layer.bias.min() < -(2**31) or layer.bias.max() >= 2**31:
        raise ExportError(f"{where} has a bias outside int32")
    reach = int(max(-acc_lo.min(), acc_hi.max()))
    if reach >= FLOAT32_EXACT:
        raise ExportError(f"{where}'s accumulators may reach magnitude {reach} over the input range; onnxruntime "
                          f"requantizes them in float32, which is exact only below 2**24")


def _offsets(rounding: Rounding, shift: int) -> tuple[float, ...]:
    """Bias offsets under which round-half-even of the shifted sum is `rounding` (module notes)."""
    if shift <= 0 or rounding is Rounding.HALF_EVEN:
        return (0.0,)
    if rounding is Rounding.HALF_UP:
        return (0.5,)
    if rounding is Rounding.FLOOR:
        return (0.5 - 2.0 ** (shift - 1),)
    return (0.5, -0.5)  # half away: half-up above zero, half-down below


def _qgemm_stage(plan: _LayerPlan) -> OutputStage:
    """What the importer reads from the fused QGemm (and its clamp island): onnxruntime's arithmetic."""
    multiplier = ort_kernels.qlinear_multiplier(plan.input.scale, np.float32(plan.weight_scale), plan.output.scale)
    lo, hi = plan.clamp or (plan.output.lo, plan.output.hi)
    return OutputStage(Float32Requant(multiplier), 0, lo, hi)


def _integer_stage(plan: _LayerPlan) -> OutputStage:
    """What the importer reads from MatMulInteger -> Cast -> Add -> Mul -> [Clip] -> QuantizeLinear."""
    steps = [FloatStep("add", plan.float_bias()),
             FloatStep("mul", np.array([plan.input.scale * plan.weight_scale], np.float32))]
    if plan.clamp is not None:
        lo, hi = (np.array([v * plan.output.scale], np.float32) for v in plan.clamp)
        steps += [FloatStep("max", lo), FloatStep("min", hi)]
    steps.append(FloatStep("div", np.array([plan.output.scale], np.float32)))
    requant = _BiasFree(Float32ChainRequant(tuple(steps)), plan.layer.bias.astype(np.int64))
    return OutputStage(requant, 0, plan.output.lo, plan.output.hi)


def _clip_island_is_exact(plan: _LayerPlan) -> bool:
    """DequantizeLinear -> Clip -> QuantizeLinear in float32 is the integer clamp on every stored value."""
    if plan.clamp is None:
        return True
    grid = plan.output
    values = np.arange(grid.lo, grid.hi + 1, dtype=np.int64)
    real = ort_kernels.dequantize(values, grid.scale, 0)
    lo, hi = (np.float32(v * grid.scale) for v in plan.clamp)
    table = ort_kernels.quantize(np.clip(real, lo, hi), grid.scale, 0, grid.lo, grid.hi)
    return bool(np.array_equal(table, np.clip(values, *plan.clamp)))


Mismatch = tuple[int, int, int, int]  # neuron, accumulator, original output, exported output


def _first_mismatch(original: OutputStage, exported: OutputStage, acc_lo: np.ndarray,
                    acc_hi: np.ndarray) -> Mismatch | None:
    for channel in range(acc_lo.size):
        found = _channel_mismatch(original, exported, channel, int(acc_lo[channel]), int(acc_hi[channel]))
        if found is not None:
            return found
    return None


def _channel_mismatch(original: OutputStage, exported: OutputStage, channel: int, acc_lo: int,
                      acc_hi: int) -> Mismatch | None:
    """Where two monotone step functions differ on [acc_lo, acc_hi], or None if nowhere.

    Both are constant between consecutive breakpoints of either, so comparing them at the
    union of their breakpoints (exact, found by bisection in OutputStage.steps) covers
    every accumulator in the range.
    """
    points = np.union1d(original.steps(channel, acc_lo, acc_hi)[0], exported.steps(channel, acc_lo, acc_hi)[0])
    channels = np.full(points.shape, channel, np.int64)
    want, got = original(points, channels), exported(points, channels)
    differ = np.flatnonzero(want != got)
    if differ.size == 0:
        return None
    i = int(differ[0])
    return channel, int(points[i]), int(want[i]), int(got[i])


def _graph_name(qnn: QNN) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", qnn.name) or "network"

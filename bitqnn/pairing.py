"""A float network and its QNN, layer by layer, on one real scale.

Error bounds compare the two networks at every hidden layer, so each QNN layer is
restated in reals: its accumulator as an affine function of the previous layer's real
values, and its output stage as a real clamp plus a rounding error. The rounding error is
read off the exact step function (`OutputStage.steps`), never from a formula for the
requantization mode, so a wrong guess at the accumulator's scale costs precision only,
not soundness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bitqnn.floatnet import FloatDense, FloatNetwork
from bitqnn.onnx_io.requant_ort import Float32ChainRequant
from bitqnn.qnn import QNN, Dense, Reshape
from bitqnn.requant import FixedPointMultiplierRequant, Float32Requant, OutputStage, ShiftRequant
from bitqnn.symbolic import RELATIVE_MARGIN  # one float64 margin for every sound bound


class PairingError(ValueError):
    """The two networks do not line up layer by layer."""


@dataclass(frozen=True, eq=False)
class PairedLayer:
    """One dense layer of both networks, in reals.

    float: a_f = float_weight @ y_f + float_bias, y_f = clip(a_f, *float_clip)
    QNN:   acc = matrix @ y_int + offset (exact), a_q = acc_scale * acc + acc_shift
           y_q = out_scale * (stage(acc) - zero) = clamp(a_q, clamp_lo, clamp_hi) + rounding error
           and, in reals, a_q = q_weight @ y_q_prev + q_bias.
    """

    index: int  # position in both networks
    float_weight: np.ndarray
    float_bias: np.ndarray
    float_clip: tuple[float, float] | None
    q_weight: np.ndarray
    q_bias: np.ndarray
    acc_scale: np.ndarray  # per neuron
    acc_shift: np.ndarray  # a zero point of an accumulator output, or a float tail's added constants
    out_scale: np.ndarray  # per neuron
    clamp_lo: np.ndarray  # real, -inf where the stage has no lower clamp
    clamp_hi: np.ndarray
    stage: OutputStage
    channels: np.ndarray


def _affine(stage: OutputStage, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, (m, t) with stage(acc) - zero = m * acc + t up to rounding and clamping.

    Only the precision of the bounds rests on this: the rounding error is read off the exact
    steps around this line, whatever it is.
    """
    requant = stage.requant
    if requant is None:
        return np.ones(channels.shape), np.full(channels.shape, -float(stage.zero))
    none = np.zeros(channels.shape)
    if isinstance(requant, ShiftRequant):
        shift = np.asarray(requant.shift, dtype=np.float64).ravel()
        return np.exp2(-(shift if shift.size == 1 else shift[channels])), none
    if isinstance(requant, Float32Requant):
        return _per_neuron(requant.multiplier, channels), none
    if isinstance(requant, Float32ChainRequant):
        return _chain_affine(requant, channels)
    assert isinstance(requant, FixedPointMultiplierRequant)
    return _per_neuron(requant.multiplier * np.exp2(requant.shift - 31.0), channels), none


def _chain_affine(requant: Float32ChainRequant, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float tail's add/sub/mul/div steps composed in float64; its max/min steps are clamps."""
    m, t = np.ones(channels.shape), np.zeros(channels.shape)
    for step in requant.steps:
        c = _per_neuron(step.constant, channels)
        if step.op == "add":
            t = t + c
        elif step.op == "sub":
            t = t - c
        elif step.op == "mul":
            m, t = m * c, t * c
        elif step.op == "div":
            m, t = m / c, t / c
    return m, t


def _per_neuron(values: np.ndarray, channels: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return np.full(channels.shape, values[0]) if values.size == 1 else values[channels]


def pair_layers(float_net: FloatNetwork, qnn: QNN) -> list[PairedLayer]:
    """Line the networks up; dense and reshape layers only (the MLPs error bounds are asked of)."""
    if qnn.layer_scales is None:
        raise PairingError(f"{qnn.name} does not state the real scale of its hidden layers "
                           "(only `quantize` networks do so far)")
    if len(float_net.layers) != len(qnn.layers):
        raise PairingError(f"{float_net.name} has {len(float_net.layers)} layers, {qnn.name} has {len(qnn.layers)}")
    prev_scale = np.full(qnn.input_size, qnn.input_scale, dtype=np.float64)
    prev_zero = np.full(qnn.input_size, float(qnn.input_zero))
    paired = []
    for index, (f_layer, q_layer) in enumerate(zip(float_net.layers, qnn.layers, strict=True)):
        if isinstance(f_layer, Reshape) and isinstance(q_layer, Reshape):
            continue
        if not (isinstance(f_layer, FloatDense) and isinstance(q_layer, Dense)):
            raise PairingError(f"layer {index}: {type(f_layer).__name__} against {type(q_layer).__name__}; "
                               "error bounds support dense and reshape layers")
        form = qnn.linear_form(index)
        if form.matrix.shape != f_layer.weight.shape:
            raise PairingError(f"layer {index}: weight shapes {f_layer.weight.shape} and {form.matrix.shape} differ")
        stage, channels = q_layer.output, form.channels
        last = index == len(qnn.layers) - 1
        out_scale = _per_neuron(qnn.output_scale if last else qnn.layer_scales[index], channels)
        zero = float(qnn.output_zero if last and stage.requant is None else stage.zero)
        multiplier, offset = _affine(stage, channels)
        acc_scale, acc_shift = out_scale * multiplier, out_scale * offset
        matrix = form.matrix.astype(np.float64)
        q_weight = acc_scale[:, None] * matrix / prev_scale[None, :]
        q_bias = acc_scale * (matrix @ prev_zero + form.offset.astype(np.float64)) + acc_shift
        lo = -np.inf if stage.lo is None else stage.lo
        hi = np.inf if stage.hi is None else stage.hi
        clamp_lo = np.where(np.isfinite(lo), out_scale * (lo - zero), -np.inf) * np.ones(channels.shape)
        clamp_hi = np.where(np.isfinite(hi), out_scale * (hi - zero), np.inf) * np.ones(channels.shape)
        paired.append(PairedLayer(index, f_layer.weight, f_layer.bias, f_layer.clip, q_weight, q_bias,
                                  acc_scale, acc_shift, out_scale, clamp_lo, clamp_hi, stage, channels))
        prev_scale, prev_zero = out_scale, np.full(channels.shape, zero)
    return paired


def rounding_error(layer: PairedLayer, acc_lo: np.ndarray, acc_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on y_q - clamp(a_q) per neuron over the integer accumulator ranges, from the steps."""
    low = np.zeros(acc_lo.shape)
    high = np.zeros(acc_lo.shape)
    if layer.stage.requant is None and layer.stage.lo is None and layer.stage.hi is None:
        return low, high
    for n in range(acc_lo.size):
        starts, values = layer.stage.steps(int(layer.channels[n]), int(acc_lo[n]), int(acc_hi[n]))
        ends = np.append(starts[1:] - 1, acc_hi[n])
        y = layer.out_scale[n] * (values.astype(np.float64) - layer.stage.zero)
        clamp_start = np.clip(layer.acc_scale[n] * starts + layer.acc_shift[n], layer.clamp_lo[n], layer.clamp_hi[n])
        clamp_end = np.clip(layer.acc_scale[n] * ends + layer.acc_shift[n], layer.clamp_lo[n], layer.clamp_hi[n])
        pad = RELATIVE_MARGIN * (1.0 + float(np.max(np.abs(y))) + float(np.max(np.abs(clamp_end))))
        low[n] = float(np.min(y - clamp_end)) - pad
        high[n] = float(np.max(y - clamp_start)) + pad
    return low, high


def clip_gap(layer: PairedLayer, a_lo: np.ndarray, a_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on clamp_q(a) - clip_f(a) for a in [a_lo, a_hi]: the two activations differ only
    where one network clamps and the other does not. Piecewise linear, so its extremes lie at
    the ends or at a kink."""
    f_lo, f_hi = layer.float_clip if layer.float_clip is not None else (-math.inf, math.inf)
    kinks = [layer.clamp_lo, layer.clamp_hi, np.full(a_lo.shape, f_lo), np.full(a_lo.shape, f_hi)]
    points = [a_lo, a_hi] + [np.clip(k, a_lo, a_hi) for k in kinks]
    gaps = np.stack([np.clip(p, layer.clamp_lo, layer.clamp_hi) - np.clip(p, f_lo, f_hi) for p in points])
    gaps = np.where(np.isnan(gaps), 0.0, gaps)  # inf - inf where both are unclamped and a is unbounded
    return gaps.min(axis=0), gaps.max(axis=0)

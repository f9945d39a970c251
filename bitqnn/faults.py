"""Bit-flip fault models on a QNN's stored parameters.

A fault flips bits of the integers as they sit in memory (`qnn.Storage`): a flipped
weight keeps its layer's scale and zero point, and a flip of bit b adds +-2**b to the
stored value (the sign bit of a two's-complement integer: -+2**(bits-1)). Everything an
engine needs is the table of candidate single-bit flips with what each adds to its
parameter, so the encoders never look at bit patterns themselves.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np

from bitqnn.qnn import QNN, Dense, Storage
from bitqnn.query import Query

KINDS = ("weights", "biases")
SCOPES = ("one", "any")


class FaultModelError(ValueError):
    """The fault model does not fit the network (a layer or index that is not there)."""


@dataclass(frozen=True)
class ParamSelection:
    """Weights or biases of one weighted layer, all of them or the listed indices.

    `layer` counts weighted (Dense/Conv) layers only, as `q.layers[i]` does in a spec."""

    layer: int
    kind: str
    indices: tuple[tuple[int, ...], ...] | None = None

    def describe(self) -> str:
        picked = "" if self.indices is None else f"[{len(self.indices)} listed]"
        return f"layers[{self.layer}].{self.kind}{picked}"


@dataclass(frozen=True)
class BitSelection:
    """Which stored bit positions may flip: all, the sign bit, the top n, or a list (0 = LSB)."""

    kind: str = "all"
    count: int = 0
    positions: tuple[int, ...] = ()

    def positions_for(self, storage: Storage) -> tuple[int, ...]:
        if self.kind == "all":
            return tuple(range(storage.bits))
        if self.kind == "sign":
            return (storage.bits - 1,)
        if self.kind == "top":
            return tuple(range(max(storage.bits - self.count, 0), storage.bits))
        outside = [b for b in self.positions if not 0 <= b < storage.bits]
        if outside:
            raise FaultModelError(f"bit position {outside[0]} is outside a {storage.bits}-bit stored value")
        return tuple(sorted(set(self.positions)))

    def describe(self) -> str:
        if self.kind == "top":
            return f"top({self.count})"
        if self.kind == "list":
            return "[" + ", ".join(map(str, self.positions)) + "]"
        return self.kind


@dataclass(frozen=True)
class FaultModel:
    """At most k flipped bits over the selected parameters; scope "one" confines them to a
    single parameter (BFAVerifier's model), "any" lets them spread."""

    k: int
    params: tuple[ParamSelection, ...]
    bits: BitSelection = BitSelection()
    scope: str = "any"

    def describe(self) -> str:
        params = " + ".join(p.describe() for p in self.params)
        return f"bitflips(k={self.k}, params={params}, bits={self.bits.describe()}, scope={self.scope})"


@dataclass(frozen=True)
class Flip:
    """One flipped stored bit. `layer` indexes qnn.layers; `index` is the multi-index."""

    layer: int
    kind: str
    index: tuple[int, ...]
    bit: int

    def describe(self, qnn: QNN, original: int, flipped: int) -> str:
        linear = weighted_layers(qnn).index(self.layer)
        return (f"layers[{linear}].{self.kind}{list(self.index)} bit {self.bit}: "
                f"stored {original} -> {flipped}")


@dataclass(frozen=True)
class Candidates:
    """Every single-bit flip the fault model allows, as parallel arrays.

    Row j flips bit `bit[j]` of parameter (layer[j], kind[j], neuron[j], column[j]);
    column is -1 for a bias. `delta[j]` is what the flip adds to the value the layer uses.
    A parameter is identified by `param[j]`, equal for all rows of the same parameter.
    """

    layer: np.ndarray
    bias: np.ndarray  # bool
    neuron: np.ndarray
    column: np.ndarray
    bit: np.ndarray
    delta: np.ndarray
    param: np.ndarray

    def __len__(self) -> int:
        return int(self.layer.size)

    def subset(self, keep: np.ndarray) -> Candidates:
        return Candidates(*(getattr(self, f)[keep] for f in ("layer", "bias", "neuron", "column", "bit",
                                                               "delta", "param")))

    def flip(self, j: int) -> Flip:
        kind = "biases" if self.bias[j] else "weights"
        index = (int(self.neuron[j]),) if self.bias[j] else (int(self.neuron[j]), int(self.column[j]))
        return Flip(int(self.layer[j]), kind, index, int(self.bit[j]))

    @property
    def parameters(self) -> int:
        return int(np.unique(self.param).size)


def weighted_layers(qnn: QNN) -> list[int]:
    """qnn.layers indices of the weighted layers, in the order a spec counts them."""
    return [i for i, layer in enumerate(qnn.layers) if hasattr(layer, "weight")]


def candidates(qnn: QNN, model: FaultModel) -> Candidates:
    """The fault model's single-bit flips on this network, each parameter listed once."""
    weighted = weighted_layers(qnn)
    chosen: dict[tuple[int, bool], np.ndarray] = {}
    for selection in model.params:
        if not 0 <= selection.layer < len(weighted):
            raise FaultModelError(f"layers[{selection.layer}] does not exist: the network has "
                                  f"{len(weighted)} weighted layers")
        index = weighted[selection.layer]
        layer = qnn.layers[index]
        if not isinstance(layer, Dense):
            raise FaultModelError(f"layers[{selection.layer}] is a {type(layer).__name__}; bit flips are "
                                  "supported on dense layers")
        is_bias = selection.kind == "biases"
        values = layer.bias if is_bias else layer.weight
        mask = chosen.setdefault((index, is_bias), np.zeros(values.shape, dtype=bool))
        if selection.indices is None:
            mask[...] = True
            continue
        for multi in selection.indices:
            if len(multi) != values.ndim or any(not 0 <= i < n for i, n in zip(multi, values.shape, strict=True)):
                raise FaultModelError(f"{selection.kind}{list(multi)} is outside layers[{selection.layer}]'s "
                                      f"{selection.kind} of shape {list(values.shape)}")
            mask[multi] = True
    parts: list[dict[str, np.ndarray]] = []
    next_param = 0
    for (index, is_bias), mask in sorted(chosen.items()):
        layer = qnn.layers[index]
        storage = layer.bias_storage if is_bias else layer.weight_storage
        if storage is None:
            raise FaultModelError(f"layers[{weighted.index(index)}] does not state how its "
                                  f"{'biases' if is_bias else 'weights'} are stored, so flips cannot be modelled")
        values = layer.bias if is_bias else layer.weight
        check_storage(values[mask], storage, f"layers[{weighted.index(index)}] {'biases' if is_bias else 'weights'}")
        positions = model.bits.positions_for(storage)
        where = np.argwhere(mask)
        used = values[mask]
        for b in positions:
            parts.append({
                "layer": np.full(len(where), index), "bias": np.full(len(where), is_bias),
                "neuron": where[:, 0], "column": where[:, 1] if not is_bias else np.full(len(where), -1),
                "bit": np.full(len(where), b), "delta": storage.bit_delta(used, b),
                "param": next_param + np.arange(len(where)),
            })
        next_param += len(where)
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Candidates(empty, empty.astype(bool), empty, empty, empty, empty, empty)
    return Candidates(**{key: np.concatenate([p[key] for p in parts]).astype(bool if key == "bias" else np.int64)
                         for key in parts[0]})


def check_storage(used: np.ndarray, storage: Storage, what: str) -> None:
    """Flips are defined on stored bit patterns, so every value must be one its storage holds."""
    stored = storage.stored(used)
    top = 1 << storage.bits
    lo, hi = (-(top >> 1), (top >> 1) - 1) if storage.signed else (0, top - 1)
    bad = (stored < lo) | (stored > hi) | ((stored << storage.shift) != used)
    if np.any(bad):
        value = int(np.asarray(used)[bad][0])
        raise FaultModelError(f"{what}: the value {value} is not one a {storage.bits}-bit "
                              f"{'signed' if storage.signed else 'unsigned'} store (shift {storage.shift}) can hold")


def apply_flips(qnn: QNN, flips: list[Flip] | tuple[Flip, ...]) -> QNN:
    """The network with these stored bits flipped (bits of one parameter XOR together)."""
    masks: dict[tuple[int, str, tuple[int, ...]], int] = {}
    for flip in flips:
        key = (flip.layer, flip.kind, flip.index)
        masks[key] = masks.get(key, 0) ^ (1 << flip.bit)
    layers = list(qnn.layers)
    for (index, kind, multi), mask in masks.items():
        layer = layers[index]
        assert isinstance(layer, Dense)
        if kind == "biases":
            bias = layer.bias.copy()
            bias[multi] = layer.bias_storage.flip(bias[multi], mask)
            layers[index] = replace(layer, bias=bias)
        else:
            weight = layer.weight.copy()
            weight[multi] = layer.weight_storage.flip(weight[multi], mask)
            layers[index] = replace(layer, weight=weight)
    return replace(qnn, layers=tuple(layers), _cache={}, onnx_path=None)


def stored_values(qnn: QNN, flip: Flip, flips: tuple[Flip, ...]) -> tuple[int, int]:
    """(original, faulty) stored integer of the parameter `flip` hits, under all of `flips`."""
    layer = qnn.layers[flip.layer]
    storage = layer.bias_storage if flip.kind == "biases" else layer.weight_storage
    used = (layer.bias if flip.kind == "biases" else layer.weight)[flip.index]
    mask = 0
    for other in flips:
        if (other.layer, other.kind, other.index) == (flip.layer, flip.kind, flip.index):
            mask ^= 1 << other.bit
    return int(storage.stored(used)), int(storage.stored(storage.flip(used, mask)))


def patterns(cands: Candidates, model: FaultModel) -> itertools.chain:
    """Every non-empty set of candidate rows the budget allows, smallest first.

    Under scope "one" all rows of a set share one parameter. The count grows as
    rows**k, so this serves enumeration on small networks and pruned candidate lists."""
    rows = range(len(cands))
    sizes = range(1, model.k + 1)
    if model.scope == "any":
        return itertools.chain.from_iterable(itertools.combinations(rows, size) for size in sizes)
    by_param: dict[int, list[int]] = {}
    for j in rows:
        by_param.setdefault(int(cands.param[j]), []).append(j)
    return itertools.chain.from_iterable(itertools.combinations(group, size) for size in sizes
                                         for group in by_param.values())


@dataclass(frozen=True)
class FlippedValues:
    """One parameter: its candidate rows, each set of <= k of them, and what each set adds."""

    rows: list[int]
    combos: list[tuple[int, ...]]
    deltas: list[int]


def flipped_values(cands: Candidates, k: int) -> list[FlippedValues]:
    rows_of: dict[int, list[int]] = {}
    for j, p in enumerate(cands.param.tolist()):
        rows_of.setdefault(p, []).append(j)
    result = []
    for rows in rows_of.values():
        combos = [combo for size in range(1, k + 1) for combo in itertools.combinations(rows, size)]
        result.append(FlippedValues(rows, combos, [sum(int(cands.delta[j]) for j in combo) for combo in combos]))
    return result


@dataclass(frozen=True, eq=False)
class FaultQuery:
    """A robustness-style query that must hold for every fault the model allows as well."""

    query: Query
    model: FaultModel
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.query.label

    @property
    def network(self) -> QNN:
        return self.query.network

    @property
    def region(self):
        return self.query.region

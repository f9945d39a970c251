"""`under bitflips(...)`: a fault model's AST -> bitqnn.faults.FaultModel, checked against the network.

Every check is made here, in the spec's own terms and at the offending token, and it is
cheap: one look at each selected layer's kind, shape and storage. The table of candidate
flips (`bitqnn.faults.candidates`, millions of rows for k=1 on a large network) is left
to the engine, which can then assume the model fits the network.

`q.layers[i]` counts weighted (Dense/Conv) layers from 0, as `bitqnn.faults.weighted_layers`
does; a slice end is exclusive and either bound may be left out, as in Python, but every
index must lie inside the network (no clamping, no negative indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from bitqnn.faults import BitSelection, FaultModel, ParamSelection, weighted_layers
from bitqnn.qnn import QNN, Dense, Storage
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError

ITEMS = ("k", "params", "bits", "scope")
BIT_WORDS = ("all", "sign")
SCOPES = ("one", "any")
_BITS_FORMS = "all, sign, top(N) or a list of bit positions [b, ...]"
_INDEX_FORMS = {"weights": "[out, in]", "biases": "[out]"}


def fault_model(under: ast.Under, network: ast.Ident, qnn: QNN) -> FaultModel:
    """The FaultModel `under` writes, for the property's network `network` (the QNN `qnn`)."""
    model = under.model
    items = _items(model)
    for name, what in (("k", "k=N, the number of bits that flip"),
                       ("params", "params=..., the parameters whose bits may flip")):
        if name not in items:
            raise SpecError(f"bitflips needs {what}", model.pos)
    k = _k(items["k"].value)
    params, origins = _params(items["params"].value, network.name, qnn)
    bits = BitSelection()
    if "bits" in items:
        bits = _bits(items["bits"].value)
        _check_widths(bits, items["bits"].value, origins)
    scope = _scope(items["scope"].value) if "scope" in items else "any"
    return FaultModel(k, params, bits, scope)


def _items(model: ast.BitFlips) -> dict[str, ast.FaultItem]:
    items: dict[str, ast.FaultItem] = {}
    for item in model.items:
        if item.name not in ITEMS:
            raise SpecError(f"unknown item '{item.name}' for bitflips; expected one of {', '.join(ITEMS)}", item.pos)
        if item.name in items:
            raise SpecError(f"item '{item.name}' is already set on line {items[item.name].pos.line}", item.pos)
        items[item.name] = item
    return items


# ---- values ----


def _shown(value: ast.FaultValue | ast.Number) -> str:
    """A value as written (up to spacing), for messages."""
    if isinstance(value, ast.Number):
        number = value.value
        return str(number.numerator) if number.denominator == 1 else str(float(number))
    if isinstance(value, ast.Word):
        return value.text
    if isinstance(value, ast.Call):
        return f"{value.name}({_shown(value.argument)})"
    if isinstance(value, ast.Vector):
        return "[" + ", ".join(_shown(v) for v in value.values) + "]"
    return " + ".join(_shown_ref(ref) for ref in value.parts)


def _shown_ref(ref: ast.ParamRef) -> str:
    layers = ref.layers
    if isinstance(layers, ast.Number):
        picked = f".layers[{_shown(layers)}]"
    elif isinstance(layers, ast.LayerSlice):
        start = "" if layers.start is None else _shown(layers.start)
        stop = "" if layers.stop is None else _shown(layers.stop)
        picked = f".layers[{start}:{stop}]"
    else:
        picked = ""
    index = "" if ref.index is None else _shown(ref.index)
    return f"{ref.network.name}{picked}.{ref.kind.text}{index}"


def _whole(number: ast.Number) -> int | None:
    value: Fraction = number.value
    return int(value) if value.denominator == 1 else None


def _k(value: ast.FaultValue) -> int:
    k = _whole(value) if isinstance(value, ast.Number) else None
    if k is None or k < 1:
        raise SpecError(f"k must be a whole number >= 1, not {_shown(value)}", value.pos)
    return k


def _scope(value: ast.FaultValue) -> str:
    if not isinstance(value, ast.Word) or value.text not in SCOPES:
        raise SpecError(f"scope must be one of {', '.join(SCOPES)}, not {_shown(value)}", value.pos)
    return value.text


def _bits(value: ast.FaultValue) -> BitSelection:
    if isinstance(value, ast.Word) and value.text in BIT_WORDS:
        return BitSelection(value.text)
    if isinstance(value, ast.Call) and value.name == "top":
        count = _whole(value.argument)
        if count is None or count < 1:
            raise SpecError(f"top(N) takes a whole number N >= 1, not {_shown(value.argument)}", value.argument.pos)
        return BitSelection("top", count=count)
    if isinstance(value, ast.Vector):
        positions: list[int] = []
        for number in value.values:
            bit = _whole(number)
            if bit is None or bit < 0:
                raise SpecError(f"a bit position is a whole number >= 0 (0 is the least significant bit), "
                                f"not {_shown(number)}", number.pos)
            if bit in positions:
                raise SpecError(f"bit {bit} is already listed", number.pos)
            positions.append(bit)
        return BitSelection("list", positions=tuple(positions))
    raise SpecError(f"bits must be {_BITS_FORMS}, not {_shown(value)}", value.pos)


# ---- parameters ----


@dataclass(frozen=True)
class _Origin:
    """One selected (layer, kind) and how it is stored: for messages about bit widths."""

    layer: int
    kind: str
    storage: Storage


def _params(value: ast.FaultValue, network: str, qnn: QNN) -> tuple[tuple[ParamSelection, ...], list[_Origin]]:
    """The selections, one per (layer, kind) in order of first mention, and the storage of each.

    Parts that pick the same layer's weights (or biases) are merged: all of them, or the
    union of the listed indices."""
    if not isinstance(value, ast.ParamSum):
        raise SpecError(f"params must name parameters, as in {network}.weights or {network}.layers[0].biases, "
                        f"not {_shown(value)}", value.pos)
    weighted = weighted_layers(qnn)
    chosen: dict[tuple[int, str], list[tuple[int, ...]] | None] = {}
    origins: dict[tuple[int, str], _Origin] = {}
    for ref in value.parts:
        if ref.network.name != network:
            raise SpecError(f"params must name the property's network '{network}', not '{ref.network.name}'",
                            ref.network.pos)
        kind = ref.kind.text
        for linear, pos in _layers(ref, len(weighted), network):
            layer = qnn.layers[weighted[linear]]
            if not isinstance(layer, Dense):
                raise SpecError(f"layers[{linear}] of '{network}' is a {type(layer).__name__}; bit flips are "
                                "supported on dense layers only", pos)
            storage = layer.bias_storage if kind == "biases" else layer.weight_storage
            if storage is None:
                raise SpecError(f"layers[{linear}] of '{network}' does not say how its {kind} are stored, "
                                "so their bits cannot flip", ref.kind.pos)
            key = (linear, kind)
            origins.setdefault(key, _Origin(linear, kind, storage))
            if ref.index is None:
                chosen[key] = None
                continue
            index = _index(ref, linear, layer.bias if kind == "biases" else layer.weight, network)
            picked = chosen.setdefault(key, [])
            if picked is not None and index not in picked:
                picked.append(index)
    params = tuple(ParamSelection(layer, kind, None if indices is None else tuple(indices))
                   for (layer, kind), indices in chosen.items())
    return params, list(origins.values())


def _layers(ref: ast.ParamRef, count: int, network: str) -> list[tuple[int, ast.Pos]]:
    """The weighted-layer indices a reference picks, each with the position to blame for it."""
    if count == 0:
        raise SpecError(f"'{network}' has no weighted layers, so it has no {ref.kind.text}", ref.pos)
    span = f"'{network}' has weighted layers 0 to {count - 1}"
    picked = ref.layers
    if picked is None:
        return [(i, ref.pos) for i in range(count)]
    if isinstance(picked, ast.Number):
        index = _whole(picked)
        if index is None or not 0 <= index < count:
            raise SpecError(f"{span}; there is no layers[{_shown(picked)}]", picked.pos)
        return [(index, picked.pos)]
    bounds = []
    for number, default in ((picked.start, 0), (picked.stop, count)):
        if number is None:
            bounds.append(default)
            continue
        bound = _whole(number)
        if bound is None or not 0 <= bound <= count:
            raise SpecError(f"{span}; a slice bound is a whole number from 0 to {count}, not {_shown(number)}",
                            number.pos)
        bounds.append(bound)
    start, stop = bounds
    if start >= stop:
        raise SpecError(f"the slice layers[{start}:{stop}] picks no layer", picked.pos)
    return [(i, picked.pos) for i in range(start, stop)]


def _index(ref: ast.ParamRef, linear: int, values, network: str) -> tuple[int, ...]:
    kind, index = ref.kind.text, ref.index
    assert index is not None
    if not isinstance(ref.layers, ast.Number):
        raise SpecError(f"an index picks one parameter of one layer: write "
                        f"{network}.layers[I].{kind}{_INDEX_FORMS[kind]}", index.pos)
    if len(index.values) != values.ndim:
        raise SpecError(f"{kind} take an index {_INDEX_FORMS[kind]}; got {len(index.values)} "
                        f"value{'s' if len(index.values) != 1 else ''}", index.pos)
    picked = []
    for number, size in zip(index.values, values.shape, strict=True):
        value = _whole(number)
        if value is None or not 0 <= value < size:
            raise SpecError(f"layers[{linear}].{kind} of '{network}' has shape {list(values.shape)}; "
                            f"{_shown(number)} is not an index from 0 to {size - 1}", number.pos)
        picked.append(value)
    return tuple(picked)


def _check_widths(bits: BitSelection, value: ast.FaultValue, origins: list[_Origin]) -> None:
    """Every listed bit position, and top(N), must fit every selected stored value."""
    for origin in origins:
        width = origin.storage.bits
        where = f"the {width}-bit stored {origin.kind} of layers[{origin.layer}]"
        if bits.kind == "top" and bits.count > width:
            assert isinstance(value, ast.Call)
            raise SpecError(f"top({bits.count}) asks for more bits than {where} have", value.argument.pos)
        if bits.kind == "list":
            assert isinstance(value, ast.Vector)
            for number, bit in zip(value.values, bits.positions, strict=True):
                if bit >= width:
                    raise SpecError(f"bit {bit} is outside {where}; positions run from 0 to {width - 1}",
                                    number.pos)

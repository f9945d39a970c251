"""`backdoor_free(...)`: its items -> bitqnn.backdoor.BackdoorQuery, checked against the network.

Every check is made here, before solving, at the offending token: the item names, the
image shape the patch is laid on, the patch size and location, and the value range.
Values follow the rule of regions for a mark: whole input steps (integers on the
network's input grid) unless followed by `real`, in which case they are real inputs
placed on the grid by the network's own input quantizer. Either way they must lie in
the network's input range: a trigger that needs saturation to exist is a typo.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bitqnn.backdoor import BackdoorQuery, ImageLayout
from bitqnn.properties import TieBreak, targeted_violation
from bitqnn.qnn import QNN
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError
from bitqnn.spec.regions import grid

ITEMS = ("target", "size", "values", "image", "at")


def backdoor_query(prop: ast.BackdoorFree, qnn: QNN, base: np.ndarray, target_class: Callable[[ast.Number], int],
                   tiebreak: TieBreak, label: str, options: dict) -> BackdoorQuery:
    """The query `prop` states about `qnn` at the real base input `base`.

    `target_class` checks a class index against the network, as for `targeted`."""
    name = prop.network.name
    items = _items(prop)
    for item, what in (("target", "target=T, the class no trigger may produce"),
                       ("size", "size=[h, w], the patch's height and width in pixels")):
        if item not in items:
            raise SpecError(f"backdoor_free needs {what}", prop.pos)
    if qnn.output_size < 2:
        raise SpecError(f"'{name}' has one output; backdoor_free needs classes to compare", prop.pos)
    target = target_class(_scalar(items["target"]))
    if base.size != qnn.input_size:
        raise SpecError(f"the base input has {base.size} values but network '{name}' takes {qnn.input_size} inputs",
                        prop.base.pos)
    layout = _layout(qnn, items.get("image"), name, prop.pos)
    height, width = _pair(items["size"], minimum=1)
    if height > layout.height or width > layout.width:
        raise SpecError(f"a {height} x {width} patch does not fit the {layout.height} x {layout.width} image",
                        items["size"].value.pos)
    locations = layout.locations((height, width))
    if "at" in items:
        at = _pair(items["at"], minimum=None)
        if at not in locations:
            raise SpecError(f"a {height} x {width} patch on the {layout.height} x {layout.width} image has its "
                            f"top-left corner at rows 0 to {layout.height - height} and columns 0 to "
                            f"{layout.width - width}; there is no [{at[0]}, {at[1]}]", items["at"].value.pos)
        locations = (at,)
    values = _values(items.get("values"), qnn, name)
    violation = targeted_violation(target, qnn.output_size, tiebreak)
    return BackdoorQuery(qnn, qnn.quantize_input(base), layout, (height, width), values, locations, target,
                         violation, label, options)


def _items(prop: ast.BackdoorFree) -> dict[str, ast.PatchItem]:
    items: dict[str, ast.PatchItem] = {}
    for item in prop.items:
        if item.name not in ITEMS:
            raise SpecError(f"unknown item '{item.name}' for backdoor_free; expected one of {', '.join(ITEMS)}",
                            item.pos)
        if item.name in items:
            raise SpecError(f"item '{item.name}' is already set on line {items[item.name].pos.line}", item.pos)
        if item.value.real and item.name != "values":
            raise SpecError(f"'real' applies to values only; {item.name} is a whole number of "
                            f"{'classes' if item.name == 'target' else 'pixels'}", item.value.pos)
        items[item.name] = item
    return items


def _scalar(item: ast.PatchItem) -> ast.Number:
    if not isinstance(item.value.value, ast.Number):
        raise SpecError(f"{item.name} takes one number", item.value.pos)
    return item.value.value


def _whole(numbers: tuple[ast.Number, ...], minimum: int | None, what: str, hint: str = "") -> tuple[int, ...]:
    for number in numbers:
        if number.value.denominator != 1 or (minimum is not None and number.value < minimum):
            raise SpecError(f"{what} must be whole numbers" + ("" if minimum is None else f" >= {minimum}") + hint,
                            number.pos)
    return tuple(int(number.value) for number in numbers)


def _vector(item: ast.PatchItem, lengths: tuple[int, ...], form: str) -> tuple[ast.Number, ...]:
    value = item.value.value
    if not isinstance(value, ast.Vector) or len(value.values) not in lengths:
        raise SpecError(f"{item.name} takes {form}", item.value.pos)
    return value.values


def _pair(item: ast.PatchItem, minimum: int | None) -> tuple[int, int]:
    """size=[h, w] or at=[row, column]."""
    form = "[h, w]" if item.name == "size" else "[row, column]"
    row, col = _whole(_vector(item, (2,), form), minimum, f"the values of {item.name}")
    return row, col


def _layout(qnn: QNN, image: ast.PatchItem | None, network: str, pos: ast.Pos) -> ImageLayout:
    """The input as channels x height x width: its own shape when it is [C, H, W] (leading 1s
    allowed, as in [1, C, H, W]); otherwise the flat input laid out as image=[H, W] or [C, H, W]."""
    shape = tuple(qnn.input_shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if image is None:
        if len(shape) == 3:
            return ImageLayout(*shape)
        side = math.isqrt(qnn.input_size)
        example = f"[{side}, {side}]" if side * side == qnn.input_size else "[H, W]"
        raise SpecError(f"network '{network}' takes a flat input of {qnn.input_size} values; give the image shape "
                        f"it stands for, as in image={example}", pos)
    dims = _whole(_vector(image, (2, 3), "[H, W] or [C, H, W]"), 1, "the values of image")
    given = "[" + ", ".join(map(str, dims)) + "]"
    if len(shape) == 3:
        if dims not in (shape, shape[1:]):
            raise SpecError(f"image={given} does not match network '{network}', whose input is an image of shape "
                            f"[{', '.join(map(str, shape))}] (channels, height, width)", image.value.pos)
        return ImageLayout(*shape)
    if math.prod(dims) != qnn.input_size:
        raise SpecError(f"image={given} has {math.prod(dims)} values but network '{network}' takes "
                        f"{qnn.input_size} inputs", image.value.pos)
    return ImageLayout(*((1,) * (3 - len(dims)) + dims))


def _values(item: ast.PatchItem | None, qnn: QNN, network: str) -> tuple[int, int]:
    """The inclusive integer range of a patch pixel; the whole input range when not given."""
    if item is None:
        return qnn.input_lo, qnn.input_hi
    lo, hi = _vector(item, (2,), "[lo, hi]" + (" real" if item.value.real else ""))
    if lo.value > hi.value:
        raise SpecError(f"the value range [{_shown(lo)}, {_shown(hi)}] is empty", item.value.pos)
    if item.value.real:
        grid_lo, grid_hi = (int(v) for v in grid(qnn, np.array([float(lo.value), float(hi.value)])))
    else:
        grid_lo, grid_hi = _whole((lo, hi), None, "values in input steps", "; add 'real' for real units")
    if grid_lo < qnn.input_lo or grid_hi > qnn.input_hi:
        real_lo, real_hi = qnn.dequantize_input(np.array([qnn.input_lo, qnn.input_hi]))
        raise SpecError(f"values [{_shown(lo)}, {_shown(hi)}]{' real' if item.value.real else ''} leave the input "
                        f"range of network '{network}': integers {qnn.input_lo} to {qnn.input_hi}, real "
                        f"{real_lo:g} to {real_hi:g}", item.value.pos)
    return grid_lo, grid_hi


def _shown(number: ast.Number) -> str:
    value = number.value
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"

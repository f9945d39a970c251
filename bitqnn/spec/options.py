"""name=value option lists, checked against a schema of option kinds.

Spec-wide options, per-statement `with` options and the settings of `fixed(...)` all
read through here, so every option error has the same shape: the option's name, what
it must be, and a caret under the offending value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError


@dataclass(frozen=True)
class OptionKind:
    """What values an option takes: `convert` raises TypeError or ValueError for anything else."""

    description: str
    convert: Callable[[ast.Value], object]


def _shown(value: ast.Value) -> str:
    if isinstance(value, ast.Number):
        number = value.value
        return str(number.numerator) if number.denominator == 1 else str(float(number))
    if isinstance(value, ast.String):
        return f'"{value.text}"'
    if isinstance(value, ast.Vector):
        return "[" + ", ".join(_shown(number) for number in value.values) + "]"
    return value.text


def whole(minimum: int | None = None) -> OptionKind:
    def convert(value: ast.Value) -> int:
        if not isinstance(value, ast.Number):
            raise TypeError
        if value.value.denominator != 1 or (minimum is not None and value.value < minimum):
            raise ValueError
        return int(value.value)

    return OptionKind("a whole number" + ("" if minimum is None else f" >= {minimum}"), convert)


def _positive(value: ast.Value) -> float:
    if not isinstance(value, ast.Number):
        raise TypeError
    if value.value <= 0:
        raise ValueError
    return float(value.value)


def choice(*words: str) -> OptionKind:
    def convert(value: ast.Value) -> str:
        if not isinstance(value, ast.Word):
            raise TypeError
        if value.text not in words:
            raise ValueError
        return value.text

    return OptionKind("one of " + ", ".join(words), convert)


def _any_word(value: ast.Value) -> str:
    if not isinstance(value, ast.Word):
        raise TypeError
    return value.text


def _path(value: ast.Value) -> ast.String:
    """Kept as the String node: a path is resolved later, and its errors need its position."""
    if not isinstance(value, ast.String):
        raise TypeError
    return value


_TRUE_FALSE = choice("true", "false")
POSITIVE = OptionKind("a number > 0", _positive)
FLAG = OptionKind(_TRUE_FALSE.description, lambda value: _TRUE_FALSE.convert(value) == "true")
WORD = OptionKind("a name", _any_word)
PATH = OptionKind("a quoted file path", _path)


def read_options(options: Iterable[ast.Option], schema: Mapping[str, OptionKind], owner: str) -> dict[str, object]:
    """Converted values by name; unknown names, repeats and bad values are SpecErrors."""
    values: dict[str, object] = {}
    seen: dict[str, ast.Option] = {}
    for option in options:
        kind = schema.get(option.name)
        if kind is None:
            raise SpecError(f"unknown option '{option.name}' for {owner}; expected one of {', '.join(schema)}",
                            option.pos)
        if option.name in seen:
            raise SpecError(f"option '{option.name}' is already set on line {seen[option.name].pos.line}",
                            option.pos)
        try:
            values[option.name] = kind.convert(option.value)
        except (TypeError, ValueError):
            raise SpecError(f"{option.name} must be {kind.description}, not {_shown(option.value)}",
                            option.value.pos) from None
        seen[option.name] = option
    return values

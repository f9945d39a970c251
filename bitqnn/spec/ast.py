"""The .qspec AST: typed, frozen, and free of Lark.

Every node carries the position it was written at, so that any later stage (name
resolution, region checks, output indices) can point its error at the exact token
without going back to the parse tree. Values stay as written (numbers are exact
Fractions): interpretation, units and ranges are the compiler's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal


@dataclass(frozen=True)
class Pos:
    """Where a node starts: 1-based line and column in a named file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# ---- atoms ----


@dataclass(frozen=True)
class Ident:
    """A use or definition of a name (network, point or region)."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Number:
    """A decimal literal, kept exact: 0.1 is 1/10, not the nearest float."""

    value: Fraction
    pos: Pos


@dataclass(frozen=True)
class Word:
    """A bare word used as an option value, e.g. half_even or cpsat."""

    text: str
    pos: Pos


@dataclass(frozen=True)
class String:
    """A double-quoted string without its quotes (file paths, npz keys)."""

    text: str
    pos: Pos


Value = Number | Word | String


@dataclass(frozen=True)
class Option:
    name: str
    value: Value
    pos: Pos


# ---- points and regions ----


@dataclass(frozen=True)
class Vector:
    values: tuple[Number, ...]
    pos: Pos


@dataclass(frozen=True)
class Sample:
    """One row of a sample file; index None means the file holds exactly one sample."""

    path: String
    key: String | None
    index: Number | None
    pos: Pos


Point = Ident | Vector | Sample


@dataclass(frozen=True)
class Quantity:
    """A scalar or per-dimension amount; `real` marks real input units instead of grid steps."""

    value: Number | Vector
    real: bool
    pos: Pos


@dataclass(frozen=True)
class Linf:
    center: Point
    radius: Quantity
    pos: Pos


@dataclass(frozen=True)
class BoxRegion:
    """Absolute real bounds (center None) or offsets around a centre point."""

    center: Point | None
    lo: Quantity
    hi: Quantity
    pos: Pos


RegionExpr = Linf | BoxRegion
RegionUse = Ident | Linf | BoxRegion


# ---- linear formulas over real outputs ----


@dataclass(frozen=True)
class Output:
    """y[index]: one flat output of the network, in real (dequantized) units."""

    index: Number
    pos: Pos


@dataclass(frozen=True)
class Term:
    """coeff * y[i], or the constant coeff when output is None; the sign is folded in."""

    coeff: Fraction
    output: Output | None
    pos: Pos


@dataclass(frozen=True)
class Comparison:
    left: tuple[Term, ...]
    op: Literal[">=", ">", "<=", "<"]
    right: tuple[Term, ...]
    pos: Pos


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Formula, ...]
    pos: Pos


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Formula, ...]
    pos: Pos


Formula = Comparison | AllOf | AnyOf


# ---- properties ----


@dataclass(frozen=True)
class Robust:
    network: Ident
    region: RegionUse
    label: Number | None
    pos: Pos


@dataclass(frozen=True)
class Targeted:
    network: Ident
    region: RegionUse
    target: Number
    pos: Pos


@dataclass(frozen=True)
class LinearProperty:
    network: Ident
    region: RegionUse
    formula: Formula
    pos: Pos


@dataclass(frozen=True)
class ErrorTerm:
    """error(f, q, region[, output=j]): |q(x) - f(x)| on output j, or on all outputs (L-inf)."""

    float_net: Ident
    network: Ident  # the QNN, named `network` like every property's subject
    region: RegionUse
    output: Number | None
    pos: Pos


@dataclass(frozen=True)
class ErrorBound:
    term: ErrorTerm
    eps: Number
    pos: Pos

    @property
    def network(self) -> Ident:
        return self.term.network


@dataclass(frozen=True)
class PatchItem:
    """One name=amount of backdoor_free(...); names and units are checked by the compiler."""

    name: str
    value: Quantity
    pos: Pos


@dataclass(frozen=True)
class BackdoorFree:
    """backdoor_free(NET, POINT, target=T, size=[h, w], ...): no trigger patch on POINT makes T win."""

    network: Ident
    base: Point
    items: tuple[PatchItem, ...]
    pos: Pos


Property = Robust | Targeted | LinearProperty | ErrorBound | BackdoorFree


# ---- fault models ----


@dataclass(frozen=True)
class LayerSlice:
    """start:stop over the weighted layers; a bound left out is None (from the first, to the last)."""

    start: Number | None
    stop: Number | None
    pos: Pos


@dataclass(frozen=True)
class ParamRef:
    """NET.weights, NET.layers[i].biases, NET.layers[i:j].weights, with an optional index.

    `layers` None means every weighted layer; `kind` is the word weights or biases;
    `index` ([out, in] for weights, [out] for biases) picks one parameter."""

    network: Ident
    layers: Number | LayerSlice | None
    kind: Word
    index: Vector | None
    pos: Pos


@dataclass(frozen=True)
class ParamSum:
    """Parameter sets joined by '+': their union."""

    parts: tuple[ParamRef, ...]
    pos: Pos


@dataclass(frozen=True)
class Call:
    """NAME(N) as an item value, e.g. top(2)."""

    name: str
    argument: Number
    pos: Pos


FaultValue = Number | Word | Call | Vector | ParamSum


@dataclass(frozen=True)
class FaultItem:
    """One name=value of a fault model; the names are checked by the compiler."""

    name: str
    value: FaultValue
    pos: Pos


@dataclass(frozen=True)
class BitFlips:
    """bitflips(k=..., params=..., bits=..., scope=...); `pos` is the word bitflips."""

    items: tuple[FaultItem, ...]
    pos: Pos


@dataclass(frozen=True)
class Under:
    """`under MODEL` after a property; `pos` is the word under."""

    model: BitFlips
    pos: Pos


# ---- networks ----


@dataclass(frozen=True)
class Onnx:
    path: String
    pos: Pos


@dataclass(frozen=True)
class LayerOverride:
    """layer N (...): options for the N-th linear layer only."""

    index: Number
    options: tuple[Option, ...]
    pos: Pos


@dataclass(frozen=True)
class Quantize:
    """quantize BASE with fixed(...): post-training fixed-point quantization."""

    base: Ident
    options: tuple[Option, ...]
    layers: tuple[LayerOverride, ...]
    pos: Pos


# ---- statements ----


@dataclass(frozen=True)
class OptionsStmt:
    options: tuple[Option, ...]
    pos: Pos


@dataclass(frozen=True)
class NetworkStmt:
    name: Ident
    source: Onnx | Quantize
    pos: Pos


@dataclass(frozen=True)
class LetStmt:
    name: Ident
    point: Point
    pos: Pos


@dataclass(frozen=True)
class RegionStmt:
    name: Ident
    region: RegionExpr
    pos: Pos


@dataclass(frozen=True)
class ProveStmt:
    """`text` is the property as written (comments dropped, spaces collapsed), for labels;
    `under` is the fault model the property must also hold under, if any."""

    prop: Property
    options: tuple[Option, ...]
    text: str
    pos: Pos
    under: Under | None = None


@dataclass(frozen=True)
class BoundStmt:
    """bound error(...): report the tightest error bound found, proven and witnessed."""

    term: ErrorTerm
    options: tuple[Option, ...]
    text: str
    pos: Pos


@dataclass(frozen=True)
class SampleRange:
    """sample "FILE" [key "ARRAY"] index A..B: rows A to B of a sample file, both included."""

    path: String
    key: String | None
    first: Number
    last: Number
    pos: Pos


@dataclass(frozen=True)
class AuditStmt:
    """audit robust(NET, radius=R) over SAMPLES under bitflips(...): run by `bitqnn audit`.

    `text` is the statement as written (comments dropped, spaces collapsed), for reports."""

    network: Ident
    radius: Quantity
    samples: SampleRange
    under: Under
    options: tuple[Option, ...]
    text: str
    pos: Pos


@dataclass(frozen=True)
class Search:
    """search [layer N] weights in [...], ...: the widths (or fraction bits) a layer may take."""

    layer: Number | None  # None: every linear layer
    choices: tuple[Option, ...]  # each value is a Vector
    pos: Pos


@dataclass(frozen=True)
class SynthStmt:
    """synthesize NAME from FLOAT with fixed(...) { search / minimize / keep / write } [with ...].

    `fixed` is the quantization every candidate shares; the searches say which per-layer widths
    vary. Each keep is a ProveStmt about NAME, compiled again for every candidate.
    """

    name: Ident
    fixed: Quantize
    searches: tuple[Search, ...]
    costs: tuple[Word, ...]  # the compiler takes at most one
    keeps: tuple[ProveStmt, ...]
    writes: tuple[String, ...]  # the compiler takes at most one
    options: tuple[Option, ...]
    pos: Pos


Statement = OptionsStmt | NetworkStmt | LetStmt | RegionStmt | ProveStmt | BoundStmt | AuditStmt | SynthStmt


@dataclass(frozen=True)
class Spec:
    """A parsed spec; `source` is kept so that later errors can show the offending line."""

    file: str
    statements: tuple[Statement, ...]
    source: str

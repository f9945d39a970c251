"""`synthesize` statements -> a synthesis problem whose kept properties compile per candidate.

Inside the braces the statement's name stands for the candidate QNN, so each `keep` is an
ordinary `prove` compiled again, by the same compiler, for every candidate the search
visits. Everything that can be wrong with a keep is found now, by compiling every keep once
for the largest candidate. A robust keep without a label keeps the float network's decision
at the region's centre: a candidate must not get to keep a wrong decision of its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from bitqnn.fault_verify import FAULT_ENGINES
from bitqnn.faults import FaultQuery
from bitqnn.floatnet import FloatConv2d, FloatDense, FloatNetwork
from bitqnn.qnn import QNN
from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError, strip_comments
from bitqnn.spec.networks import fixed_config
from bitqnn.spec.options import POSITIVE, OptionKind, read_options
from bitqnn.synthesis.cost import COSTS
from bitqnn.synthesis.search import Problem
from bitqnn.synthesis.space import LayerChoices, SearchSpace

MAX_WIDTH = 8  # what the written ONNX model stores (int8/uint8 tensors)
MAX_FRACTION = 32
DEFAULT_BUDGET = 600.0


def _numbers(value: ast.Value, low: int, high: int) -> tuple[int, ...]:
    """The listed whole numbers, each once, in the order written."""
    if not isinstance(value, ast.Vector):
        raise TypeError
    numbers = [n.value for n in value.values]
    if any(n.denominator != 1 or not low <= n <= high for n in numbers):
        raise ValueError
    return tuple(dict.fromkeys(int(n) for n in numbers))


WIDTHS = OptionKind(f"a list of widths between 2 and {MAX_WIDTH}, as in [4, 6, 8]",
                    lambda value: tuple(sorted(_numbers(value, 2, MAX_WIDTH))))
FRACTIONS = OptionKind(f"a list of whole numbers of fraction bits between -{MAX_FRACTION} and {MAX_FRACTION}, "
                       "as in [3, 4]", lambda value: _numbers(value, -MAX_FRACTION, MAX_FRACTION))
SEARCH_FIELDS = {"weights": WIDTHS, "activations": WIDTHS, "weight_frac": FRACTIONS, "activation_frac": FRACTIONS}


@dataclass(frozen=True, eq=False)
class SynthesisSpec:
    """One compiled `synthesize` statement: the problem, and what a certificate needs."""

    name: str
    text: str
    pos: ast.Pos
    problem: Problem
    keep_texts: tuple[str, ...]
    keep_options: dict  # timeout, engine and tiebreak every keep starts from (its own `with` wins)
    write: Path | None  # the statement's output directory, resolved next to the spec
    definitions: str  # the spec's earlier option/network/let/region statements, as written
    spec_dir: Path


def compile_synthesis(compiler, statement: ast.SynthStmt, defaults: dict[str, object]) -> SynthesisSpec:
    """`compiler` is the spec compiler: its scope and its prove/error/backdoor compilers."""
    base = compiler.scope.get(statement.fixed.base, "network")
    config, calibration = fixed_config(statement.fixed, base, compiler.base_dir)
    float_net: FloatNetwork = base
    own = read_options(statement.options, {**compiler.schema, "budget": POSITIVE}, "synthesize")
    budget = float(own.pop("budget", DEFAULT_BUDGET))
    keep_defaults = {**defaults, **own}
    for extra, what in ((statement.costs[1:], "minimize"), (statement.writes[1:], "write")):
        if extra:
            raise SpecError(f"a synthesize block takes one {what}", extra[0].pos)
    cost = statement.costs[0].text if statement.costs else "bits"
    if cost not in COSTS:
        raise SpecError(f"unknown cost '{cost}'; minimize one of {', '.join(COSTS)}", statement.costs[0].pos)
    if not statement.keeps:
        raise SpecError("a synthesize block needs at least one keep: the properties every candidate must keep",
                        statement.pos)
    if config.input_bits != 8:
        raise SpecError(f"synthesis writes an ONNX model with 8-bit inputs; set input=8 (not {config.input_bits})",
                        statement.fixed.pos)
    space = _space(statement, float_net, config)
    problem = Problem(float_net, config, calibration, space, cost, lambda qnn: [], budget)
    try:
        reference = problem.quantize(space.largest())
    except (ValueError, ArithmeticError) as err:
        raise SpecError(f"cannot quantize '{statement.fixed.base.name}': {err}", statement.pos) from err
    keeps = tuple(_with_float_label(compiler, keep, float_net, reference) for keep in statement.keeps)

    def obligations_for(qnn: QNN) -> list:
        with compiler.scope.bound(statement.name, "network", qnn):
            return [compiler.compile_prove(keep, keep_defaults) for keep in keeps]

    for keep, obligation in zip(keeps, obligations_for(reference), strict=True):  # errors now, with positions
        engine = obligation.options["engine"]
        if isinstance(obligation.query, FaultQuery) and engine not in FAULT_ENGINES:
            raise SpecError(f"engine {engine} does not analyse bit flips; give this keep `with engine=E` for E in "
                            f"{', '.join(FAULT_ENGINES)}", keep.pos)
    problem = replace(problem, obligations_for=obligations_for)
    undeliverable = problem.undeliverable(reference)
    if undeliverable is not None:
        raise SpecError(f"the widest candidate cannot be written as an ONNX model bitqnn re-proves: {undeliverable}",
                        statement.pos)
    compiler.scope.reserve(statement.name, f"the candidates of the synthesize statement on line {statement.pos.line}")
    write = None if not statement.writes else compiler.base_dir / statement.writes[0].text
    text = f"synthesize {statement.name.name} from {statement.fixed.base.name}"
    return SynthesisSpec(statement.name.name, text, statement.pos, problem, tuple(k.text for k in statement.keeps),
                         keep_defaults, write, _definitions(compiler.spec, statement), compiler.base_dir)


def _space(statement: ast.SynthStmt, float_net: FloatNetwork, config) -> SearchSpace:
    n_linear = sum(isinstance(layer, FloatDense | FloatConv2d) for layer in float_net.layers)
    every: dict[str, tuple] = {}
    per_layer: dict[int, dict[str, tuple]] = {}
    for search in statement.searches:
        settings = read_options(search.choices, SEARCH_FIELDS, "search")
        if search.layer is None:
            target = every
        else:
            index = search.layer.value
            if index.denominator != 1 or not 0 <= index < n_linear:
                raise SpecError(f"'{statement.fixed.base.name}' has linear layers 0 to {n_linear - 1}; "
                                f"there is no layer {index}", search.layer.pos)
            target = per_layer.setdefault(int(index), {})
        for option in search.choices:
            if option.name in target:
                raise SpecError(f"{option.name} is already searched {'' if search.layer is None else 'for this layer '}"
                                "in an earlier search line", option.pos)
            if option.name == "activations" and _accumulator_output(config, search, n_linear):
                raise SpecError(f"layer {n_linear - 1} outputs its accumulator (output=accumulator); it has no "
                                "activation width to search", option.pos)
        target.update(settings)
    layers = []
    for index in range(n_linear):
        fixed = config.for_layer(index)
        chosen = {**every, **per_layer.get(index, {})}
        last_raw = index == n_linear - 1 and config.output == "accumulator"
        layers.append(LayerChoices(
            weights=chosen.get("weights", (fixed.weights,)),
            activations=() if last_raw else chosen.get("activations", (fixed.activations,)),
            weight_frac=chosen.get("weight_frac", (fixed.weight_frac,)),
            activation_frac=(None,) if last_raw else chosen.get("activation_frac", (fixed.activation_frac,))))
    return SearchSpace(tuple(layers))


def _accumulator_output(config, search: ast.Search, n_linear: int) -> bool:
    """Only a layer-specific search of the raw last layer is an error; a global one skips it."""
    return (config.output == "accumulator" and search.layer is not None
            and int(search.layer.value) == n_linear - 1)


def _with_float_label(compiler, keep: ast.ProveStmt, float_net: FloatNetwork, reference: QNN) -> ast.ProveStmt:
    prop = keep.prop
    if not isinstance(prop, ast.Robust) or prop.label is not None:
        return keep
    region = compiler.region_of(prop.region)
    region.box(reference, prop.network.name, keep.pos)  # a malformed region is reported as such first
    center = region.center_on(reference)
    if center is None:
        raise SpecError("this region has no centre point to take the float network's label from; give label=N",
                        prop.pos)
    label = int(np.argmax(float_net.forward(reference.dequantize_input(center))[0]))
    return replace(keep, prop=replace(prop, label=ast.Number(Fraction(label), prop.pos)))


def _definitions(spec: ast.Spec, statement: ast.SynthStmt) -> str:
    """The source of every network/let/region statement before this one, comments dropped (the
    options every keep starts from are written out whole, wherever the spec set them)."""
    lines = spec.source.splitlines(keepends=True)
    offsets = np.cumsum([0] + [len(line) for line in lines])
    starts = [int(offsets[s.pos.line - 1]) + s.pos.column - 1 for s in spec.statements] + [len(spec.source)]
    kept = []
    for index, s in enumerate(spec.statements):
        if s is statement:
            break
        if isinstance(s, ast.NetworkStmt | ast.LetStmt | ast.RegionStmt):
            kept.append(" ".join(strip_comments(spec.source[starts[index]:starts[index + 1]]).split()))
    return "\n".join(kept)


_STRING = re.compile(r'"([^"\n]*)"')


def relocate_paths(text: str, spec_dir: Path, out_dir: Path) -> str:
    """Rewrite quoted paths that name files next to the spec so they resolve from `out_dir`."""
    def moved(match: re.Match) -> str:
        path = spec_dir / match.group(1)
        if not path.exists():
            return match.group(0)
        return '"' + os.path.relpath(path.resolve(), out_dir.resolve()).replace(os.sep, "/") + '"'

    return _STRING.sub(moved, text)

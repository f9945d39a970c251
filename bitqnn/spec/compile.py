"""Spec -> proof obligations: names resolved, files read, every check done before solving.

Statements are compiled in order, so a name must be defined before it is used; the
`options` statements are the exception, applying to the whole spec wherever they stand.
Each `prove` becomes one Obligation: a Query (network, integer input box, violation in
DNF) plus the engine options that apply to it; `prove ... under bitflips(...)` wraps that
Query, unchanged, in a FaultQuery with the fault model (compiled in spec/faults.py);
`prove backdoor_free(...)` becomes a BackdoorQuery, one Query per patch location
(compiled in spec/backdoor.py).
Each `audit` becomes an Audit: one such FaultQuery per sample, for `bitqnn audit`.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from bitqnn.backdoor import BackdoorQuery
from bitqnn.error_query import ErrorQuery
from bitqnn.error_verify import ERROR_ENGINES
from bitqnn.fault_verify import FAULT_ENGINES
from bitqnn.faults import FaultQuery
from bitqnn.floatnet import FloatNetwork
from bitqnn.pairing import PairingError, pair_layers
from bitqnn.properties import robust_violation, targeted_violation
from bitqnn.qnn import QNN, execute
from bitqnn.query import Query, Violation
from bitqnn.spec import ast
from bitqnn.spec.backdoor import backdoor_query
from bitqnn.spec.errors import SpecError
from bitqnn.spec.faults import fault_model
from bitqnn.spec.files import read_sample, read_samples, sample_index
from bitqnn.spec.linear import linear_violation
from bitqnn.spec.networks import load_onnx, quantize
from bitqnn.spec.options import POSITIVE, WORD, OptionKind, choice, read_options
from bitqnn.spec.parser import parse_spec
from bitqnn.spec.regions import Region, resolve
from bitqnn.spec.synth import SynthesisSpec, compile_synthesis

DEFAULT_OPTIONS: dict[str, object] = {"timeout": 60.0, "engine": "auto", "tiebreak": "strict"}
ENGINE_OPTIONS = ("timeout", "engine")  # what travels with the query; tiebreak is part of the property

Kind = Literal["robust", "targeted", "linear", "error", "bound", "backdoor"]


@dataclass(frozen=True, eq=False)
class Obligation:
    """One `prove` statement, ready for an engine.

    `text` is the property as written (without its `under` clause), `options` holds timeout
    (seconds) and engine. A property proved under a fault model keeps its kind and has a
    FaultQuery, whose `query` is the Query it would have without faults.
    """

    text: str
    pos: ast.Pos
    kind: Kind
    query: Query | ErrorQuery | FaultQuery | BackdoorQuery  # ErrorQuery for error and bound, BackdoorQuery for backdoor
    options: dict


@dataclass(frozen=True, eq=False)
class Audit:
    """One `audit` statement, ready for `bitqnn audit`.

    `queries[i]` asks whether sample `samples[i]` keeps the network's own decision on it under
    the fault model at its largest budget K; the runner asks it again for every k = 1..K, so
    the statement is compiled and checked once. `options` holds timeout and engine.
    """

    text: str
    pos: ast.Pos
    samples: tuple[int, ...]
    queries: tuple[FaultQuery, ...]
    options: dict


@dataclass(frozen=True, eq=False)
class Compiled:
    """A whole spec: `prove`/`bound` obligations for `bitqnn prove`, audits for `bitqnn audit`,
    syntheses for `bitqnn synthesize`."""

    obligations: list[Obligation]
    audits: list[Audit]
    syntheses: list[SynthesisSpec] = field(default_factory=list)


def compile_spec(path: str | Path, *, engines: Collection[str] | None = None) -> list[Obligation]:
    """Compile a spec file's obligations; its audits are checked too (see `compile_file`)."""
    return compile_file(path, engines=engines).obligations


def compile_file(path: str | Path, *, engines: Collection[str] | None = None) -> Compiled:
    """Compile a spec file; `engines`, when given, is the set of valid engine names."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read the spec: {err}", ast.Pos(str(path), 0, 0)) from err
    return compile_source(text, str(path), engines)


def compile_text(text: str, filename: str, *, engines: Collection[str] | None = None) -> list[Obligation]:
    """Compile spec text as if it were the file `filename` (paths resolve next to it)."""
    return compile_source(text, filename, engines).obligations


def compile_source(text: str, filename: str, engines: Collection[str] | None) -> Compiled:
    spec = parse_spec(text, filename)
    try:
        return _Compiler(spec, Path(filename).parent, engines).run()
    except SpecError as err:
        err.with_source(text)
        raise


class _Scope:
    """One namespace for networks, points and regions, so a name means one thing."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, object, ast.Pos]] = {}
        self._reserved: dict[str, str] = {}  # names no statement may define, and what they stand for

    def reserve(self, name: ast.Ident, meaning: str) -> None:
        """Keep `name` for a synthesize statement's candidates, which are bound to it only later."""
        if name.name in self._reserved:
            raise SpecError(f"'{name.name}' already names {self._reserved[name.name]}", name.pos)
        self._reserved[name.name] = meaning

    def define(self, name: ast.Ident, kind: str, value: object) -> None:
        if name.name in self._reserved:
            raise SpecError(f"'{name.name}' names {self._reserved[name.name]}; choose another name", name.pos)
        if name.name in self._entries:
            other, _, pos = self._entries[name.name]
            raise SpecError(f"'{name.name}' is already defined as a {other} on line {pos.line}", name.pos)
        self._entries[name.name] = (kind, value, name.pos)

    @contextmanager
    def bound(self, name: ast.Ident, kind: str, value: object):
        """`name` defined only inside the block: a synthesize statement's candidate network."""
        reserved = self._reserved.pop(name.name, None)
        self.define(name, kind, value)
        try:
            yield
        finally:
            del self._entries[name.name]
            if reserved is not None:
                self._reserved[name.name] = reserved

    def get(self, name: ast.Ident, kind: str) -> object:
        entry = self._entries.get(name.name)
        if entry is None:
            raise SpecError(f"unknown {kind} '{name.name}'; {self._known(name.name, kind)}", name.pos)
        if entry[0] != kind:
            raise SpecError(f"'{name.name}' is a {entry[0]}, not a {kind}", name.pos)
        return entry[1]

    def _known(self, name: str, kind: str) -> str:
        same_kind = [n for n, (k, _, _) in self._entries.items() if k == kind]
        close = difflib.get_close_matches(name, same_kind, n=1, cutoff=0.5)
        if close:
            return f"did you mean '{close[0]}'?"
        if same_kind:
            return f"the {kind}s defined above are {', '.join(same_kind)}"
        return f"no {kind} is defined above"


class _Compiler:
    def __init__(self, spec: ast.Spec, base_dir: Path, engines: Collection[str] | None) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.scope = _Scope()
        self.schema: dict[str, OptionKind] = {
            "timeout": POSITIVE,
            "engine": WORD if engines is None else choice(*engines),
            "tiebreak": choice("strict", "lowest_index"),
        }

    def run(self) -> Compiled:
        statements = self.spec.statements
        spec_options = [o for s in statements if isinstance(s, ast.OptionsStmt) for o in s.options]
        defaults = {**DEFAULT_OPTIONS, **read_options(spec_options, self.schema, "options")}
        obligations, audits, syntheses = [], [], []
        for statement in statements:
            if isinstance(statement, ast.NetworkStmt):
                self.scope.define(statement.name, "network", self._network(statement.source))
            elif isinstance(statement, ast.LetStmt):
                self.scope.define(statement.name, "point", self._point(statement.point))
            elif isinstance(statement, ast.RegionStmt):
                self.scope.define(statement.name, "region", self.region_of(statement.region))
            elif isinstance(statement, ast.ProveStmt):
                obligations.append(self.compile_prove(statement, defaults))
            elif isinstance(statement, ast.BoundStmt):
                obligations.append(self._error(statement.term, None, statement, "bound", defaults))
            elif isinstance(statement, ast.AuditStmt):
                audits.append(self._audit(statement, defaults))
            elif isinstance(statement, ast.SynthStmt):
                syntheses.append(compile_synthesis(self, statement, defaults))
        return Compiled(obligations, audits, syntheses)

    def compile_prove(self, statement: ast.ProveStmt, defaults: dict[str, object]) -> Obligation:
        """Any `prove` (or a synthesize block's `keep`) as its obligation."""
        if isinstance(statement.prop, ast.ErrorBound):
            if statement.under is not None:
                raise SpecError("bit flips apply to robust, targeted and linear properties, not to an error "
                                "bound", statement.under.pos)
            return self._error(statement.prop.term, statement.prop.eps, statement, "error", defaults)
        if isinstance(statement.prop, ast.BackdoorFree):
            return self._backdoor(statement, defaults)
        return self._prove(statement, defaults)

    def _network(self, source: ast.Onnx | ast.Quantize) -> QNN | FloatNetwork:
        if isinstance(source, ast.Onnx):
            return load_onnx(source, self.base_dir)
        return quantize(source, self.scope.get(source.base, "network"), self.base_dir)

    def _point(self, point: ast.Point) -> np.ndarray:
        if isinstance(point, ast.Ident):
            return self.scope.get(point, "point")
        if isinstance(point, ast.Vector):
            return np.array([float(n.value) for n in point.values], dtype=np.float64)
        return read_sample(point, self.base_dir)

    def region_of(self, region: ast.RegionUse) -> Region:
        if isinstance(region, ast.Ident):
            return self.scope.get(region, "region")
        return resolve(region, None if region.center is None else self._point(region.center))

    def _quantized(self, name: ast.Ident, statement: str) -> QNN:
        network = self.scope.get(name, "network")
        if not isinstance(network, QNN):
            raise SpecError(f"'{name.name}' is a float network; {statement} needs a quantized one "
                            f"(network p = quantize {name.name} with fixed(...))", name.pos)
        return network

    def _prove(self, statement: ast.ProveStmt, defaults: dict[str, object]) -> Obligation:
        prop = statement.prop
        network = self._quantized(prop.network, "prove")
        region = self.region_of(prop.region)
        box = region.box(network, prop.network.name, statement.pos)
        own = read_options(statement.options, self.schema, "prove")
        if isinstance(prop, ast.LinearProperty) and "tiebreak" in own:
            tiebreak = next(o for o in statement.options if o.name == "tiebreak")
            raise SpecError("tiebreak applies to robust and targeted only", tiebreak.pos)
        options = {**defaults, **own}
        kind, violation = self._violation(prop, network, region, options["tiebreak"])
        engine_options = {name: options[name] for name in ENGINE_OPTIONS}
        label = f"{statement.text} @ {statement.pos.file}:{statement.pos.line}"
        query: Query | FaultQuery = Query(network, box, violation, label, engine_options)
        if statement.under is not None:
            query = FaultQuery(query, fault_model(statement.under, prop.network, network), engine_options)
        return Obligation(statement.text, statement.pos, kind, query, engine_options)

    def _backdoor(self, statement: ast.ProveStmt, defaults: dict[str, object]) -> Obligation:
        """backdoor_free(...): the query per patch location, checked and built in spec/backdoor.py."""
        prop = statement.prop
        if statement.under is not None:
            raise SpecError("bit flips apply to robust, targeted and linear properties, not to backdoor_free",
                            statement.under.pos)
        network = self._quantized(prop.network, "prove")
        options = {**defaults, **read_options(statement.options, self.schema, "prove")}
        engine_options = {name: options[name] for name in ENGINE_OPTIONS}
        label = f"{statement.text} @ {statement.pos.file}:{statement.pos.line}"
        query = backdoor_query(prop, network, self._point(prop.base),
                               lambda number: _class(number, network.output_size, prop.network.name),
                               options["tiebreak"], label, engine_options)
        return Obligation(statement.text, statement.pos, "backdoor", query, engine_options)

    def _error(self, term: ast.ErrorTerm, eps: ast.Number | None, statement: ast.ProveStmt | ast.BoundStmt,
               kind: Kind, defaults: dict[str, object]) -> Obligation:
        float_net = self.scope.get(term.float_net, "network")
        qnn = self.scope.get(term.network, "network")
        if not isinstance(float_net, FloatNetwork):
            raise SpecError(f"'{term.float_net.name}' is quantized; error(f, q, ...) takes the float network first",
                            term.float_net.pos)
        if not isinstance(qnn, QNN):
            raise SpecError(f"'{term.network.name}' is a float network; error(f, q, ...) takes a quantized one "
                            "second", term.network.pos)
        try:
            pair_layers(float_net, qnn)
        except PairingError as error:
            raise SpecError(f"cannot compare '{term.network.name}' with '{term.float_net.name}': {error}",
                            term.pos) from None
        box = self.region_of(term.region).box(qnn, term.network.name, statement.pos)
        outputs = tuple(range(qnn.output_size))
        if term.output is not None:
            outputs = (_class(term.output, qnn.output_size, term.network.name),)
        if eps is not None and eps.value < 0:
            raise SpecError(f"an error bound is at least 0; got {float(eps.value):g}", eps.pos)
        schema = {**self.schema, "engine": choice(*ERROR_ENGINES)}
        own = read_options(statement.options, {k: v for k, v in schema.items() if k != "tiebreak"},
                           "bound" if kind == "bound" else "prove")
        options = {name: {**defaults, **own}[name] for name in ENGINE_OPTIONS}
        if options["engine"] not in ERROR_ENGINES:
            raise SpecError(f"engine {options['engine']} does not bound errors; give this statement "
                            f"`with engine=E` for E in {', '.join(ERROR_ENGINES)}", statement.pos)
        text = statement.text
        label = f"{text} @ {statement.pos.file}:{statement.pos.line}"
        query = ErrorQuery(float_net, qnn, box, float(eps.value) if eps is not None else float("inf"), outputs, label)
        return Obligation(text, statement.pos, kind, query, options)

    def _audit(self, statement: ast.AuditStmt, defaults: dict[str, object]) -> Audit:
        """Per sample, the query `prove robust(NET, linf(sample, R)) under bitflips(...)` would make."""
        name, rows = statement.network, statement.samples
        network = self._quantized(name, "audit")
        samples = read_samples(rows.path, rows.key, self.base_dir)
        first, last = (sample_index(number, len(samples), rows.path) for number in (rows.first, rows.last))
        if first > last:
            raise SpecError(f"the index range {first}..{last} holds no sample; write A..B with A <= B", rows.last.pos)
        own = read_options(statement.options, {**self.schema, "engine": choice(*FAULT_ENGINES)}, "audit")
        options = {**defaults, **own}
        if options["engine"] not in FAULT_ENGINES:
            raise SpecError(f"engine {options['engine']} does not analyse bit flips; give this statement "
                            f"`with engine=E` for E in {', '.join(FAULT_ENGINES)}", statement.pos)
        model = fault_model(statement.under, name, network)
        engine_options = {option: options[option] for option in ENGINE_OPTIONS}
        queries = []
        for index in range(first, last + 1):
            center = ast.Sample(rows.path, rows.key, ast.Number(Fraction(index), rows.pos), rows.pos)
            prop = ast.Robust(name, ast.Linf(center, statement.radius, statement.pos), None, statement.pos)
            region = resolve(prop.region, samples[index])
            box = region.box(network, name.name, statement.pos)
            try:
                _, violation = self._violation(prop, network, region, options["tiebreak"])
            except SpecError as err:
                raise SpecError(f"sample {index}: {err.message}", err.pos) from None
            label = f"robust({name.name}) on sample {index} @ {statement.pos.file}:{statement.pos.line}"
            queries.append(FaultQuery(Query(network, box, violation, label, engine_options), model, engine_options))
        return Audit(statement.text, statement.pos, tuple(range(first, last + 1)), tuple(queries), engine_options)

    def _violation(self, prop: ast.Property, network: QNN, region: Region, tiebreak: str) -> tuple[Kind, Violation]:
        name = prop.network.name
        if isinstance(prop, ast.LinearProperty):
            return "linear", linear_violation(prop.formula, network, name)
        n_outputs = network.output_size
        if n_outputs < 2:
            raise SpecError(f"'{name}' has one output; {type(prop).__name__.lower()} needs classes to compare",
                            prop.pos)
        if isinstance(prop, ast.Targeted):
            return "targeted", targeted_violation(_class(prop.target, n_outputs, name), n_outputs, tiebreak)
        if prop.label is not None:
            label = _class(prop.label, n_outputs, name)
        else:
            label = _predicted(network, region, prop, tiebreak)
        return "robust", robust_violation(label, n_outputs, tiebreak)


def _class(number: ast.Number, n_outputs: int, network: str) -> int:
    value = number.value
    if value.denominator != 1 or not 0 <= value < n_outputs:
        raise SpecError(f"'{network}' has classes 0 to {n_outputs - 1}; there is no class {value}", number.pos)
    return int(value)


def _predicted(network: QNN, region: Region, prop: ast.Robust, tiebreak: str) -> int:
    """The network's own decision at the region's centre: the default robustness label."""
    center = region.center_on(network)
    if center is None:
        raise SpecError("this region has no centre point to take the label from; give label=N", prop.pos)
    outputs = execute(network, center)[0]
    winners = np.flatnonzero(outputs == outputs.max())
    if tiebreak == "strict" and winners.size > 1:
        raise SpecError(f"'{prop.network.name}' ties classes {', '.join(map(str, winners))} at the centre; "
                        "give label=N or tiebreak=lowest_index", prop.pos)
    return int(winners[0])

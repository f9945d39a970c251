"""Source text -> AST, the one place where Lark trees exist.

The transformer only rebuilds structure and attaches positions; it judges no values
(a radius of 0.5 steps, an unknown option) because the compiler can say more about
them, in context, than a grammar can.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedToken
from lark.tree import Meta

from bitqnn.spec import ast
from bitqnn.spec.errors import from_lark, strip_comments
from bitqnn.spec.grammar import qspec_parser


def parse_spec(text: str, filename: str) -> ast.Spec:
    """Parse a whole spec; raises SpecError with the position and what was expected."""
    try:
        tree = qspec_parser().parse(text)
    except (UnexpectedCharacters, UnexpectedToken) as err:
        raise from_lark(err, text, filename) from None
    statements = _ToAst(text, filename).transform(tree)
    return ast.Spec(filename, statements, text)


@v_args(meta=True)
class _ToAst(Transformer):
    """One method per grammar rule; each returns the AST node of the same name."""

    def __init__(self, source: str, filename: str) -> None:
        super().__init__()
        self._source = source
        self._file = filename

    def _pos(self, meta: Meta) -> ast.Pos:
        return ast.Pos(self._file, meta.line, meta.column)

    def _token_pos(self, token: Token) -> ast.Pos:
        return ast.Pos(self._file, token.line, token.column)

    def start(self, meta: Meta, statements: list) -> tuple[ast.Statement, ...]:
        return tuple(statements)

    # ---- atoms ----

    def ident(self, meta: Meta, children: list) -> ast.Ident:
        return ast.Ident(str(children[0]), self._pos(meta))

    def word(self, meta: Meta, children: list) -> ast.Word:
        return ast.Word(str(children[0]), self._pos(meta))

    def string(self, meta: Meta, children: list) -> ast.String:
        return ast.String(str(children[0])[1:-1], self._pos(meta))

    def number(self, meta: Meta, children: list) -> ast.Number:
        value = Fraction(str(children[-1]))
        return ast.Number(-value if len(children) == 2 else value, self._pos(meta))

    def option(self, meta: Meta, children: list) -> ast.Option:
        name, value = children
        return ast.Option(str(name), value, self._pos(meta))

    def options_stmt(self, meta: Meta, options: list) -> ast.OptionsStmt:
        return ast.OptionsStmt(tuple(options), self._pos(meta))

    # ---- networks ----

    def network_stmt(self, meta: Meta, children: list) -> ast.NetworkStmt:
        name, source = children
        return ast.NetworkStmt(name, source, self._pos(meta))

    def onnx(self, meta: Meta, children: list) -> ast.Onnx:
        return ast.Onnx(children[0], self._pos(meta))

    def quantize(self, meta: Meta, children: list) -> ast.Quantize:
        base, *items = children
        options = tuple(i for i in items if isinstance(i, ast.Option))
        layers = tuple(i for i in items if isinstance(i, ast.LayerOverride))
        return ast.Quantize(base, options, layers, self._pos(meta))

    def layer(self, meta: Meta, children: list) -> ast.LayerOverride:
        index, *options = children
        return ast.LayerOverride(index, tuple(options), self._pos(meta))

    # ---- points and regions ----

    def let_stmt(self, meta: Meta, children: list) -> ast.LetStmt:
        name, point = children
        return ast.LetStmt(name, point, self._pos(meta))

    def sample(self, meta: Meta, children: list) -> ast.Sample:
        path, key, index = children
        return ast.Sample(path, key, index, self._pos(meta))

    def vector(self, meta: Meta, numbers: list) -> ast.Vector:
        return ast.Vector(tuple(numbers), self._pos(meta))

    def region_stmt(self, meta: Meta, children: list) -> ast.RegionStmt:
        name, region = children
        return ast.RegionStmt(name, region, self._pos(meta))

    def linf(self, meta: Meta, children: list) -> ast.Linf:
        center, radius = children
        return ast.Linf(center, radius, self._pos(meta))

    def box(self, meta: Meta, children: list) -> ast.BoxRegion:
        *center, lo, hi = children
        return ast.BoxRegion(center[0] if center else None, lo, hi, self._pos(meta))

    def quantity(self, meta: Meta, children: list) -> ast.Quantity:
        return ast.Quantity(children[0], len(children) == 2, self._pos(meta))

    # ---- properties ----

    def prove_stmt(self, meta: Meta, children: list) -> ast.ProveStmt:
        (prop, text), under, *options = children
        return ast.ProveStmt(prop, tuple(o for o in options if o is not None), text, self._pos(meta), under)

    def property(self, meta: Meta, children: list) -> tuple[ast.Property, str]:
        """The property and its text as written, for the obligation's label."""
        written = strip_comments(self._source[meta.start_pos:meta.end_pos])
        return children[0], " ".join(written.split())

    def robust(self, meta: Meta, children: list) -> ast.Robust:
        network, region, label = children
        return ast.Robust(network, region, label, self._pos(meta))

    def targeted(self, meta: Meta, children: list) -> ast.Targeted:
        network, region, target = children
        return ast.Targeted(network, region, target, self._pos(meta))

    def linear(self, meta: Meta, children: list) -> ast.LinearProperty:
        network, region, formula = children
        return ast.LinearProperty(network, region, formula, self._pos(meta))

    def error_term(self, meta: Meta, children: list) -> ast.ErrorTerm:
        float_net, network, region, output = children
        return ast.ErrorTerm(float_net, network, region, output, self._pos(meta))

    def error_bound(self, meta: Meta, children: list) -> ast.ErrorBound:
        term, eps = children
        return ast.ErrorBound(term, eps, self._pos(meta))

    def backdoor_free(self, meta: Meta, children: list) -> ast.BackdoorFree:
        network, base, *items = children
        return ast.BackdoorFree(network, base, tuple(items), self._pos(meta))

    def patch_item(self, meta: Meta, children: list) -> ast.PatchItem:
        name, value = children
        return ast.PatchItem(str(name), value, self._pos(meta))

    def bound_stmt(self, meta: Meta, children: list) -> ast.BoundStmt:
        term, *options = children
        written = strip_comments(self._source[meta.start_pos:meta.end_pos])
        return ast.BoundStmt(term, tuple(o for o in options if o is not None), " ".join(written.split()),
                             self._pos(meta))

    # ---- audits ----

    def audit_stmt(self, meta: Meta, children: list) -> ast.AuditStmt:
        (network, radius), samples, under, *options = children
        written = strip_comments(self._source[meta.start_pos:meta.end_pos])
        return ast.AuditStmt(network, radius, samples, under, tuple(o for o in options if o is not None),
                             " ".join(written.split()), self._pos(meta))

    def audit_robust(self, meta: Meta, children: list) -> tuple[ast.Ident, ast.Quantity]:
        network, radius = children
        return network, radius

    def sample_range(self, meta: Meta, children: list) -> ast.SampleRange:
        path, key, first, last = children
        return ast.SampleRange(path, key, first, last, self._pos(meta))

    # ---- synthesis ----

    def synth_stmt(self, meta: Meta, children: list) -> ast.SynthStmt:
        name, base, fixed, *rest = children
        options = tuple(c for c in rest if isinstance(c, ast.Option))
        items = [c for c in rest if c is not None and not isinstance(c, ast.Option)]
        layers = tuple(i for i in fixed if isinstance(i, ast.LayerOverride))
        quantize = ast.Quantize(base, tuple(i for i in fixed if isinstance(i, ast.Option)), layers, base.pos)
        return ast.SynthStmt(name, quantize, tuple(c for c in items if isinstance(c, ast.Search)),
                             tuple(c for c in items if isinstance(c, ast.Word)),
                             tuple(c for c in items if isinstance(c, ast.ProveStmt)),
                             tuple(c for c in items if isinstance(c, ast.String)), options, self._pos(meta))

    def synth_fixed(self, meta: Meta, items: list) -> list:
        return items

    def search(self, meta: Meta, children: list) -> ast.Search:
        layer, *choices = children
        return ast.Search(layer, tuple(choices), self._pos(meta))

    def search_choice(self, meta: Meta, children: list) -> ast.Option:
        name, values = children
        return ast.Option(str(name), values, self._token_pos(name))

    def minimize(self, meta: Meta, children: list) -> ast.Word:
        return children[0]

    def keep(self, meta: Meta, children: list) -> ast.ProveStmt:
        """A `prove` of the candidate; its text keeps the `under` and `with` clauses for certificates."""
        statement = self.prove_stmt(meta, children)
        written = strip_comments(self._source[meta.start_pos:meta.end_pos]).strip()
        return replace(statement, text=" ".join(written.removeprefix("keep").split()))

    def write(self, meta: Meta, children: list) -> ast.String:
        return children[0]

    # ---- fault models ----

    def under(self, meta: Meta, children: list) -> ast.Under:
        return ast.Under(children[0], self._pos(meta))

    def bitflips(self, meta: Meta, items: list) -> ast.BitFlips:
        return ast.BitFlips(tuple(items), self._pos(meta))

    def fault_item(self, meta: Meta, children: list) -> ast.FaultItem:
        name, value = children
        return ast.FaultItem(str(name), value, self._pos(meta))

    def call(self, meta: Meta, children: list) -> ast.Call:
        name, argument = children
        return ast.Call(str(name), argument, self._pos(meta))

    def param_sum(self, meta: Meta, parts: list) -> ast.ParamSum:
        return ast.ParamSum(tuple(parts), self._pos(meta))

    def param_ref(self, meta: Meta, children: list) -> ast.ParamRef:
        network, layers, kind, index = children
        return ast.ParamRef(network, layers, ast.Word(str(kind), self._token_pos(kind)), index, self._pos(meta))

    def layers(self, meta: Meta, children: list) -> ast.Number | ast.LayerSlice:
        return children[0]

    def layer_slice(self, meta: Meta, children: list) -> ast.LayerSlice:
        start, stop = children
        return ast.LayerSlice(start, stop, self._pos(meta))

    # ---- linear formulas ----

    def any_of(self, meta: Meta, parts: list) -> ast.AnyOf:
        return ast.AnyOf(tuple(parts), self._pos(meta))

    def all_of(self, meta: Meta, parts: list) -> ast.AllOf:
        return ast.AllOf(tuple(parts), self._pos(meta))

    def comparison(self, meta: Meta, children: list) -> ast.Comparison:
        left, op, right = children
        return ast.Comparison(left, str(op), right, self._pos(meta))

    def sum(self, meta: Meta, children: list) -> tuple[ast.Term, ...]:
        """Fold each '+'/'-' into the sign of the term after it."""
        terms, negate = [], False
        for child in children:
            if isinstance(child, Token):
                negate = child.type == "MINUS"
            else:
                terms.append(replace(child, coeff=-child.coeff) if negate else child)
                negate = False
        return tuple(terms)

    def term(self, meta: Meta, children: list) -> ast.Term:
        coeff = Fraction(str(children[0])) if isinstance(children[0], Token) else Fraction(1)
        output = children[-1] if isinstance(children[-1], ast.Output) else None
        return ast.Term(coeff, output, self._pos(meta))

    def output(self, meta: Meta, children: list) -> ast.Output:
        index = ast.Number(Fraction(str(children[0])), self._token_pos(children[0]))
        return ast.Output(index, self._pos(meta))

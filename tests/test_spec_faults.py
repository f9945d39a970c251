"""`prove ... under bitflips(...)`: the grammar, the AST, the compiled FaultModel, and every
fault-model error at the token it blames."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bitqnn.faults import BitSelection, FaultModel, FaultQuery, ParamSelection, candidates
from bitqnn.onnx_io import OnnxImportError
from bitqnn.qnn import QNN, Conv2d, Dense, Reshape, Storage
from bitqnn.query import Query
from bitqnn.requant import OutputStage
from bitqnn.spec import ast, networks
from bitqnn.spec.compile import compile_spec, compile_text
from bitqnn.spec.errors import SpecError
from bitqnn.spec.parser import parse_spec
from tests.test_spec_compile import compile_error

REPO = Path(__file__).resolve().parents[1]
P = ast.Pos


def parse(text: str) -> tuple[ast.Statement, ...]:
    return parse_spec(text, "t.qspec").statements


def syntax_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "t.qspec")
    return caught.value


# ---- networks with known shapes and storage ----


def dense(out: int, n_in: int, weight_storage: Storage | None, bias_storage: Storage | None, seed: int) -> Dense:
    rng = np.random.default_rng(seed)
    return Dense(rng.integers(-7, 8, (out, n_in)), np.zeros(1, np.int64), 0, rng.integers(-20, 21, out),
                 OutputStage(None), weight_storage, bias_storage)


def two_layer_qnn() -> QNN:
    """4 inputs -> dense 5x4 (8-bit weights, 16-bit biases) -> reshape -> dense 3x5 (4-bit weights,
    biases of unknown storage). The reshape between them is not a weighted layer."""
    first = dense(5, 4, Storage(8, True), Storage(16, True), 0)
    second = dense(3, 5, Storage(4, True), None, 1)
    return QNN((4,), 0, 15, (first, Reshape((5,)), second), input_scale=1 / 16, output_scale=np.ones(3))


def bare_qnn() -> QNN:
    """One dense layer whose source does not say how its weights are stored."""
    return QNN((4,), 0, 15, (dense(3, 4, None, Storage(32, True), 2),), input_scale=1 / 16, output_scale=np.ones(3))


def conv_qnn() -> QNN:
    """(1, 2, 2) input -> 1x1 conv to 2 channels -> flatten -> dense 3x8."""
    conv = Conv2d(np.ones((2, 1, 1, 1), np.int64), np.zeros(1, np.int64), 0, np.zeros(2, np.int64),
                  OutputStage(None), weight_storage=Storage(8, True), bias_storage=Storage(32, True))
    return QNN((1, 2, 2), 0, 15, (conv, Reshape((8,)), dense(3, 8, Storage(8, True), Storage(32, True), 3)),
               input_scale=1 / 16, output_scale=np.ones(3))


@pytest.fixture
def spec(tmp_path, monkeypatch):
    """Writes a spec beside model files whose import is served by the networks above."""
    registry = {"net.onnx": two_layer_qnn(), "bare.onnx": bare_qnn(), "conv.onnx": conv_qnn()}

    def stand_in(path: Path):
        if path.name not in registry:
            raise OnnxImportError(f"{path.name}: not an ONNX model")
        return registry[path.name]

    monkeypatch.setattr(networks, "load_model", stand_in)
    for name in registry:
        (tmp_path / name).write_bytes(b"stand-in")

    def write(text: str) -> Path:
        path = tmp_path / "spec.qspec"
        path.write_text(text, encoding="utf-8")
        return path

    return write


HEADER = 'network q = onnx "net.onnx"\nlet c = [0.5, 0.25, 0.125, 0]\nregion r = linf(c, 1)\n'
PROVE = "prove robust(q, r, label=0) under "


def model_of(spec, clause: str) -> FaultModel:
    (obligation,) = compile_spec(spec(HEADER + PROVE + clause + "\n"))
    assert isinstance(obligation.query, FaultQuery)
    return obligation.query.model


# ---- grammar and AST ----


def test_the_four_forms_parse():
    first, second, third, fourth = parse(
        "prove robust(q, r) under bitflips(k=2, params=q.layers[0:2].weights, bits=all, scope=one)\n"
        "prove robust(q, r) under bitflips(k=1, params=q.layers[1].biases + q.layers[0].weights[3, 17], "
        "bits=top(2)) with timeout=30\n"
        "prove targeted(q, r, target=3) under bitflips(k=1, params=q.weights, bits=sign)\n"
        "prove robust(q, r) under bitflips(k=1, params=q.layers[2].weights, bits=[0, 7])\n")
    under = first.under
    assert under.pos == P("t.qspec", 1, 20) and under.model.pos == P("t.qspec", 1, 26)
    assert [(i.name, i.pos.column) for i in under.model.items] == [("k", 35), ("params", 40), ("bits", 70),
                                                                   ("scope", 80)]
    k, params, bits, scope = (i.value for i in under.model.items)
    assert k == ast.Number(Fraction(2), P("t.qspec", 1, 37))
    (ref,) = params.parts
    assert ref.network == ast.Ident("q", P("t.qspec", 1, 47))
    assert ref.layers == ast.LayerSlice(ast.Number(Fraction(0), P("t.qspec", 1, 56)),
                                        ast.Number(Fraction(2), P("t.qspec", 1, 58)), P("t.qspec", 1, 56))
    assert ref.kind == ast.Word("weights", P("t.qspec", 1, 61)) and ref.index is None
    assert bits == ast.Word("all", P("t.qspec", 1, 75)) and scope == ast.Word("one", P("t.qspec", 1, 86))
    assert first.text == "robust(q, r)" and first.options == ()

    biases, weight = second.under.model.items[1].value.parts
    assert biases.layers.value == 1 and biases.kind.text == "biases" and biases.index is None
    assert weight.kind.text == "weights" and [n.value for n in weight.index.values] == [3, 17]
    assert weight.index.pos.column == 87
    top = second.under.model.items[2].value
    assert top == ast.Call("top", ast.Number(Fraction(2), P("t.qspec", 2, 105)), P("t.qspec", 2, 101))
    assert [(o.name, o.value.value) for o in second.options] == [("timeout", 30)]

    assert isinstance(third.prop, ast.Targeted) and third.under.model.items[1].value.parts[0].layers is None
    assert third.under.model.items[2].value.text == "sign"
    positions = fourth.under.model.items[2].value
    assert isinstance(positions, ast.Vector) and [n.value for n in positions.values] == [0, 7]


def test_slices_may_leave_out_either_bound_and_linear_properties_take_faults_too():
    second = "  under bitflips(params=q.layers[:2].weights + q.layers[1:].biases + q.layers[:].weights, k=1)"
    (statement,) = parse("prove q(r): y[0] >= y[1]\n" + second)
    assert isinstance(statement.prop, ast.LinearProperty) and statement.text == "q(r): y[0] >= y[1]"
    assert statement.under.pos == P("t.qspec", 2, 3)
    slices = [ref.layers for ref in statement.under.model.items[0].value.parts]
    assert [(s.start and s.start.value, s.stop and s.stop.value) for s in slices] == [(None, 2), (1, None),
                                                                                      (None, None)]
    starts = [second.index("[:2]") + 2, second.index("[1:]") + 2, second.index("[:]") + 2]
    assert [(s.pos.line, s.pos.column) for s in slices] == [(2, column) for column in starts]


def test_a_prove_without_faults_has_none():
    (statement,) = parse("prove robust(q, r) with timeout=3")
    assert statement.under is None


NAMES = ("k", "params", "bits", "scope", "top", "one", "any", "all", "sign",
         "under", "bitflips", "layers", "weights", "biases")


@pytest.mark.parametrize("name", NAMES)
def test_fault_words_stay_names_elsewhere(name):
    statements = parse(f'network {name} = onnx "m.onnx"\n'
                       f"let {name}_x = [0]\n"
                       f"region {name}_r = linf({name}_x, 1)\n"
                       f"prove robust({name}, {name}_r)\n"
                       f"prove {name}({name}_r): y[0] >= 0\n"
                       f"options {name}=1\n")
    assert statements[0].name.name == name and statements[3].prop.network.name == name
    assert statements[4].prop.network.name == name and statements[5].options[0].name == name
    for other in NAMES:
        assert parse(f"let {other} = [0]\nregion {other}_r = linf({other}, 1)")[0].name.name == other


def test_fault_words_name_the_network_inside_a_fault_model():
    (statement,) = parse("prove robust(top, bits) under bitflips(scope=one, bits=top(1), k=1,\n"
                         "    params=top.layers[0].weights + top.biases)")
    refs = statement.under.model.items[3].value.parts
    assert [r.network.name for r in refs] == ["top", "top"]
    (weights,) = parse("prove weights(layers) : y[0] >= 0 under bitflips(k=1, params=weights.weights, bits=all)")
    assert weights.under.model.items[1].value.parts[0].network.name == "weights"


@pytest.mark.parametrize("text, line, column, expected", [
    ("prove robust(q, r) under bitflips(k=1", 1, 38, "unexpected end of file; expected ')' or ','"),
    ("prove robust(q, r) under bitflips(k 1)", 1, 37, "unexpected number 1; expected '='"),
    ("prove robust(q, r) under bitflips()", 1, 35, "unexpected ')'; expected a name"),
    ("prove robust(q, r) under", 1, 25, "unexpected end of file; expected 'bitflips'"),
    ("prove robust(q, r) under bitflips(k=1, params=q.)", 1, 49,
     "unexpected ')'; expected 'biases', 'layers' or 'weights'"),
    ("prove robust(q, r) under bitflips(k=1, params=q.layers[0])", 1, 58, "unexpected ')'; expected '.'"),
    ("prove robust(q, r) under bitflips(k=1, params=q.layers[0].weights.)", 1, 66,
     "unexpected character '.'; expected ')', '+', ',' or '['"),
    ("prove robust(q, r) undr bitflips(k=1)", 1, 20,
     "unexpected name 'undr'; expected 'with', a statement (options, network, let, region, prove, bound) or the "
     "end of the file (a fault model follows 'under', as in: under bitflips(k=1, params=q.weights))"),
    ("prove robust(q, r) with timeout=1 under bitflips(k=1)", 1, 35,
     "unexpected 'under'; expected ',', a statement (options, network, let, region, prove, bound) or the end "
     "of the file"),
    ("bound error(f, q, r) under bitflips(k=1)", 1, 22,
     "unexpected 'under'; expected 'with', a statement (options, network, let, region, prove, bound) or the "
     "end of the file"),
])
def test_fault_syntax_errors_in_words(text, line, column, expected):
    err = syntax_error(text)
    assert (err.line, err.column, err.message) == (line, column, expected)
    assert "ANON" not in err.message and not re.search(r"\b(DOT|LAYERS|WEIGHTS|BIASES|UNDER)\b", err.message)


# ---- compiled fault models ----


def test_a_fault_obligation_wraps_the_query_it_would_have_without_faults(spec):
    path = spec(HEADER + "prove robust(q, r, label=1)\n"
                "prove robust(q, r, label=1) under bitflips(k=2, params=q.layers[0].weights, scope=one) "
                "with timeout=7\n")
    plain, faulty = compile_spec(path)
    assert isinstance(plain.query, Query) and isinstance(faulty.query, FaultQuery)
    assert faulty.kind == plain.kind == "robust" and faulty.text == plain.text == "robust(q, r, label=1)"
    inner = faulty.query.query
    assert isinstance(inner, Query) and inner.network is plain.query.network
    assert np.array_equal(inner.region.lo, plain.query.region.lo)
    assert np.array_equal(inner.region.hi, plain.query.region.hi)
    assert inner.violation == plain.query.violation
    assert inner.label == faulty.query.label == f"robust(q, r, label=1) @ {path}:5"
    assert faulty.options == inner.options == faulty.query.options == {"timeout": 7.0, "engine": "auto"}
    assert faulty.query.model == FaultModel(2, (ParamSelection(0, "weights"),), BitSelection("all"), "one")


def test_targeted_and_linear_keep_their_kind(spec):
    targeted, linear = compile_spec(spec(HEADER + "prove targeted(q, r, target=2) under bitflips(k=1, "
                                         "params=q.weights)\nprove q(r): y[0] >= y[1] under bitflips(k=3, "
                                         "params=q.layers[1].weights[2, 4], bits=sign)\n"))
    assert (targeted.kind, linear.kind) == ("targeted", "linear")
    assert targeted.query.model == FaultModel(1, (ParamSelection(0, "weights"), ParamSelection(1, "weights")))
    assert linear.query.model == FaultModel(3, (ParamSelection(1, "weights", ((2, 4),)),), BitSelection("sign"))


@pytest.mark.parametrize("clause, model", [
    ("bitflips(k=1, params=q.weights)", FaultModel(1, (ParamSelection(0, "weights"), ParamSelection(1, "weights")),
                                                   BitSelection("all"), "any")),
    ("bitflips(scope=any, bits=top(3), params=q.layers[0:1].biases, k=4)",
     FaultModel(4, (ParamSelection(0, "biases"),), BitSelection("top", count=3), "any")),
    ("bitflips(k=1, params=q.layers[1:].weights + q.layers[:1].biases, bits=[3, 0])",
     FaultModel(1, (ParamSelection(1, "weights"), ParamSelection(0, "biases")),
                BitSelection("list", positions=(3, 0)))),
    # parts on the same layer and kind merge: listed indices unite, a whole set absorbs them
    ("bitflips(k=1, params=q.layers[0].weights[1, 2] + q.layers[0].weights[0, 3] + q.layers[0].weights[1, 2]"
     " + q.layers[0].biases[4])",
     FaultModel(1, (ParamSelection(0, "weights", ((1, 2), (0, 3))), ParamSelection(0, "biases", ((4,),))))),
    ("bitflips(k=1, params=q.layers[0].weights[1, 2] + q.weights + q.layers[1].weights[0, 0])",
     FaultModel(1, (ParamSelection(0, "weights"), ParamSelection(1, "weights")))),
    ("bitflips(k=1, params=q.layers[:].weights, bits=[0, 1, 2, 3])",
     FaultModel(1, (ParamSelection(0, "weights"), ParamSelection(1, "weights")),
                BitSelection("list", positions=(0, 1, 2, 3)))),
])
def test_compiled_models(spec, clause, model):
    assert model_of(spec, clause) == model


def test_compiled_models_are_accepted_by_the_candidate_table(spec):
    model = model_of(spec, "bitflips(k=1, params=q.layers[0].weights[1, 2] + q.layers[0].biases + "
                           "q.layers[1].weights, bits=[0, 3])")
    cands = candidates(two_layer_qnn(), model)
    assert cands.parameters == 1 + 5 + 15 and len(cands) == 2 * 21
    assert sorted(set(cands.layer.tolist())) == [0, 2]  # qnn.layers indices: the reshape is skipped
    top = candidates(two_layer_qnn(), model_of(spec, "bitflips(k=1, params=q.weights, bits=top(4))"))
    assert len(top) == 4 * (20 + 15)


def test_a_network_named_like_a_fault_word_compiles(spec):
    path = spec('network top = onnx "net.onnx"\nlet sign = [0.5, 0.25, 0.125, 0]\nregion bits = linf(sign, 1)\n'
                "prove robust(top, bits, label=0) under bitflips(k=1, params=top.layers[1].weights, bits=top(1),"
                " scope=one)\n")
    (obligation,) = compile_spec(path)
    assert obligation.query.model == FaultModel(1, (ParamSelection(1, "weights"),), BitSelection("top", count=1),
                                                "one")


# ---- errors, each at the token it blames ----

FAULT_ERRORS = [
    # (clause, the text the error points at: its first occurrence in the clause, message)
    ("bitflips(k=1, params=q.weights, flips=2)", "flips=",
     "unknown item 'flips' for bitflips; expected one of k, params, bits, scope"),
    ("bitflips(k=1, params=q.weights, k=2)", "k=2", "item 'k' is already set on line 4"),
    ("bitflips(params=q.weights, bits=sign, scope=one, bits=all)", "bits=all", "item 'bits' is already set on line 4"),
    ("bitflips(params=q.weights)", "bitflips", "bitflips needs k=N, the number of bits that flip"),
    ("bitflips(k=1, bits=sign)", "bitflips", "bitflips needs params=..., the parameters whose bits may flip"),
    ("bitflips(k=0, params=q.weights)", "0,", "k must be a whole number >= 1, not 0"),
    ("bitflips(k=1.5, params=q.weights)", "1.5", "k must be a whole number >= 1, not 1.5"),
    ("bitflips(k=all, params=q.weights)", "all", "k must be a whole number >= 1, not all"),
    ("bitflips(k=1, params=3)", "3", "params must name parameters, as in q.weights or q.layers[0].biases, not 3"),
    ("bitflips(k=1, params=sign)", "sign", ("params must name parameters, as in q.weights or q.layers[0].biases, "
                                            "not sign")),
    ("bitflips(k=1, params=p.weights)", "p.", "params must name the property's network 'q', not 'p'"),
    ("bitflips(k=1, params=q.weights + c.layers[0].biases)", "c.",
     "params must name the property's network 'q', not 'c'"),
    ("bitflips(k=1, params=q.layers[2].weights)", "2]", "'q' has weighted layers 0 to 1; there is no layers[2]"),
    ("bitflips(k=1, params=q.layers[-1].weights)", "-1", "'q' has weighted layers 0 to 1; there is no layers[-1]"),
    ("bitflips(k=1, params=q.layers[0.5].weights)", "0.5",
     "'q' has weighted layers 0 to 1; there is no layers[0.5]"),
    ("bitflips(k=1, params=q.layers[1:1].weights)", "1:1", "the slice layers[1:1] picks no layer"),
    ("bitflips(k=1, params=q.layers[2:].weights)", "2:", "the slice layers[2:2] picks no layer"),
    ("bitflips(k=1, params=q.layers[:0].weights)", ":0", "the slice layers[0:0] picks no layer"),
    ("bitflips(k=1, params=q.layers[0:3].weights)", "3]",
     "'q' has weighted layers 0 to 1; a slice bound is a whole number from 0 to 2, not 3"),
    ("bitflips(k=1, params=q.layers[-1:].weights)", "-1",
     "'q' has weighted layers 0 to 1; a slice bound is a whole number from 0 to 2, not -1"),
    ("bitflips(k=1, params=q.layers[0].weights[5, 0])", "5,",
     "layers[0].weights of 'q' has shape [5, 4]; 5 is not an index from 0 to 4"),
    ("bitflips(k=1, params=q.layers[0].weights[0, 4])", "4]",
     "layers[0].weights of 'q' has shape [5, 4]; 4 is not an index from 0 to 3"),
    ("bitflips(k=1, params=q.layers[0].weights[0, -1])", "-1",
     "layers[0].weights of 'q' has shape [5, 4]; -1 is not an index from 0 to 3"),
    ("bitflips(k=1, params=q.layers[0].biases[5])", "5]",
     "layers[0].biases of 'q' has shape [5]; 5 is not an index from 0 to 4"),
    ("bitflips(k=1, params=q.layers[0].weights[2])", "[2]", "weights take an index [out, in]; got 1 value"),
    ("bitflips(k=1, params=q.layers[0].biases[1, 2])", "[1, 2]", "biases take an index [out]; got 2 values"),
    ("bitflips(k=1, params=q.weights[0, 0])", "[0, 0]",
     "an index picks one parameter of one layer: write q.layers[I].weights[out, in]"),
    ("bitflips(k=1, params=q.layers[0:1].biases[0])", "[0]",
     "an index picks one parameter of one layer: write q.layers[I].biases[out]"),
    ("bitflips(k=1, params=q.layers[1].biases)", "biases",
     "layers[1] of 'q' does not say how its biases are stored, so their bits cannot flip"),
    ("bitflips(k=1, params=q.weights + q.biases)", "biases",
     "layers[1] of 'q' does not say how its biases are stored, so their bits cannot flip"),
    ("bitflips(k=1, params=q.layers[1].weights, bits=[0, 4])", "4]",
     "bit 4 is outside the 4-bit stored weights of layers[1]; positions run from 0 to 3"),
    ("bitflips(k=1, params=q.layers[0].biases + q.layers[1].weights, bits=[3, 9])", "9",
     "bit 9 is outside the 4-bit stored weights of layers[1]; positions run from 0 to 3"),
    ("bitflips(k=1, params=q.layers[0].weights, bits=[0, 8])", "8",
     "bit 8 is outside the 8-bit stored weights of layers[0]; positions run from 0 to 7"),
    ("bitflips(k=1, params=q.weights, bits=top(5))", "5",
     "top(5) asks for more bits than the 4-bit stored weights of layers[1] have"),
    ("bitflips(k=1, params=q.weights, bits=top(0))", "0)", "top(N) takes a whole number N >= 1, not 0"),
    ("bitflips(k=1, params=q.weights, bits=most)", "most",
     "bits must be all, sign, top(N) or a list of bit positions [b, ...], not most"),
    ("bitflips(k=1, params=q.weights, bits=bottom(2))", "bottom",
     "bits must be all, sign, top(N) or a list of bit positions [b, ...], not bottom(2)"),
    ("bitflips(k=1, params=q.weights, bits=3)", "3)",
     "bits must be all, sign, top(N) or a list of bit positions [b, ...], not 3"),
    ("bitflips(k=1, params=q.weights, bits=[1, 2, 1])", "1])", "bit 1 is already listed"),
    ("bitflips(k=1, params=q.weights, bits=[-1])", "-1",
     "a bit position is a whole number >= 0 (0 is the least significant bit), not -1"),
    ("bitflips(k=1, params=q.weights, scope=all)", "all", "scope must be one of one, any, not all"),
    ("bitflips(k=1, params=q.weights, scope=[1])", "[1]", "scope must be one of one, any, not [1]"),
]


@pytest.mark.parametrize("clause, blamed, message", FAULT_ERRORS)
def test_fault_model_errors_point_at_the_offending_token(spec, clause, blamed, message):
    line = PROVE + clause
    err = compile_error(spec(HEADER + line + "\n"))
    assert (err.line, err.column, err.message) == (4, line.index(blamed, len(PROVE)) + 1, message)
    assert err.source_line == line
    assert str(err) == f"{err.file}:4:{err.column}: error: {message}"


def test_an_error_on_a_later_line_of_a_long_statement(spec):
    err = compile_error(spec(HEADER + "prove robust(q, r, label=0)\n  under bitflips(k=1,\n"
                             "    params=q.layers[0].weights[0, 9])\n"))
    assert (err.line, err.column) == (6, len("    params=q.layers[0].weights[0, ") + 1)
    assert err.source_line == "    params=q.layers[0].weights[0, 9])"


def test_a_layer_whose_weight_storage_is_unknown(spec):
    line = "prove robust(b, linf([0, 0, 0, 0], 1), label=0) under bitflips(k=1, params=b.weights)"
    err = compile_error(spec('network b = onnx "bare.onnx"\n' + line + "\n"))
    assert (err.line, err.column) == (2, line.index("weights") + 1)
    assert err.message == "layers[0] of 'b' does not say how its weights are stored, so their bits cannot flip"
    (ok,) = compile_spec(spec('network b = onnx "bare.onnx"\n'
                              "prove robust(b, linf([0, 0, 0, 0], 1), label=0) under bitflips(k=1, "
                              "params=b.biases, bits=[31])\n"))
    assert ok.query.model.bits.positions == (31,)


@pytest.mark.parametrize("params, blamed", [
    ("v.layers[0].weights", "0]"),  # the layer index
    ("v.weights", "v.weights"),  # the whole reference: it names every layer
    ("v.layers[:].biases", ":]"),  # the slice
])
def test_a_convolutional_layer_is_refused(spec, params, blamed):
    line = f"prove robust(v, linf([0, 0, 0, 0], 1), label=0) under bitflips(k=1, params={params})"
    err = compile_error(spec('network v = onnx "conv.onnx"\n' + line + "\n"))
    assert (err.line, err.column) == (2, line.index(blamed, line.index("params=")) + 1)
    assert err.message == "layers[0] of 'v' is a Conv2d; bit flips are supported on dense layers only"
    # the dense layer after it is weighted layer 1
    (ok,) = compile_spec(spec('network v = onnx "conv.onnx"\n'
                              "prove robust(v, linf([0, 0, 0, 0], 1), label=0) under bitflips(k=1, "
                              "params=v.layers[1].weights[2, 7])\n"))
    assert ok.query.model.params == (ParamSelection(1, "weights", ((2, 7),)),)


def test_an_error_bound_takes_no_fault_model(spec):
    line = "prove error(f, q, r) <= 1 under bitflips(k=1, params=q.weights)"
    err = compile_error(spec(HEADER + line + "\n"))
    assert (err.line, err.column) == (4, line.index("under") + 1)
    assert err.message == "bit flips apply to robust, targeted and linear properties, not to an error bound"


# ---- the digits model and the documentation ----

DIGITS_HEADER = ('network q = onnx "../examples/digits/digits_q8.onnx"\n'
                 'let x = sample "../examples/digits/test.npz" index 3\n'
                 "region r = linf(x, 2)\n")


def compile_digits(body: str):
    return compile_text(DIGITS_HEADER + body, str(REPO / "specs" / "faults.qspec"))


def test_the_four_forms_on_digits_q8():
    obligations = compile_digits(
        "prove robust(q, r) under bitflips(k=2, params=q.layers[0:2].weights, bits=all, scope=one)\n"
        "prove robust(q, r) under bitflips(k=1, params=q.layers[1].biases + q.layers[0].weights[3, 17], "
        "bits=top(2)) with timeout=30\n"
        "prove targeted(q, r, target=3) under bitflips(k=1, params=q.weights, bits=sign)\n"
        "prove robust(q, r) under bitflips(k=1, params=q.layers[2].weights, bits=[0, 7])\n")
    assert [o.kind for o in obligations] == ["robust", "robust", "targeted", "robust"]
    assert all(isinstance(o.query, FaultQuery) for o in obligations)
    assert [o.query.model for o in obligations] == [
        FaultModel(2, (ParamSelection(0, "weights"), ParamSelection(1, "weights")), BitSelection("all"), "one"),
        FaultModel(1, (ParamSelection(1, "biases"), ParamSelection(0, "weights", ((3, 17),))),
                   BitSelection("top", count=2), "any"),
        FaultModel(1, tuple(ParamSelection(i, "weights") for i in range(3)), BitSelection("sign"), "any"),
        FaultModel(1, (ParamSelection(2, "weights"),), BitSelection("list", positions=(0, 7)), "any"),
    ]
    assert obligations[1].options == {"timeout": 30.0, "engine": "auto"}
    assert len(candidates(obligations[3].query.query.network, obligations[3].query.model)) == 2 * 10 * 16


@pytest.mark.parametrize("clause, blamed, message", [
    ("params=q.layers[3].weights", "3", "'q' has weighted layers 0 to 2; there is no layers[3]"),
    ("params=q.layers[0].weights[32, 0]", "32", "layers[0].weights of 'q' has shape [32, 64]; 32 is not an index "
                                               "from 0 to 31"),
    ("params=q.weights + q.biases, bits=[8]", "8", "bit 8 is outside the 8-bit stored weights of layers[0]; "
                                                   "positions run from 0 to 7"),
])
def test_digits_errors(clause, blamed, message):
    line = f"prove robust(q, r) under bitflips(k=1, {clause})"
    with pytest.raises(SpecError) as caught:
        compile_digits(line + "\n")
    assert (caught.value.line, caught.value.column) == (4, line.index(blamed, 30) + 1)
    assert caught.value.message == message


def test_documented_fault_examples_compile_to_models_the_candidate_table_accepts(monkeypatch):
    monkeypatch.chdir(REPO)
    text = (REPO / "docs" / "qspec.md").read_text(encoding="utf-8")
    examples = [e for e in re.findall(r"```qspec\n(.*?)```", text, flags=re.DOTALL) if "under bitflips" in e]
    assert examples
    faulty = [o for e in examples for o in compile_text(e, "specs/example.qspec") if isinstance(o.query, FaultQuery)]
    assert len(faulty) >= 6
    for obligation in faulty:
        assert len(candidates(obligation.query.query.network, obligation.query.model)) > 0
    assert faulty[0].query.label == "robust(q, r) @ specs/example.qspec:5"  # as the documentation says

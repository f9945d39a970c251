"""The .qspec grammar and parser: every construct to its AST node, every syntax error in words."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from bitqnn.spec import ast
from bitqnn.spec.errors import SpecError, describe_terminal
from bitqnn.spec.grammar import grammar_text, qspec_parser
from bitqnn.spec.parser import parse_spec

REPO = Path(__file__).resolve().parents[1]


def parse(text: str) -> tuple[ast.Statement, ...]:
    return parse_spec(text, "t.qspec").statements


def only(text: str) -> ast.Statement:
    (statement,) = parse(text)
    return statement


def prop(text: str) -> ast.Property:
    statement = only(text)
    assert isinstance(statement, ast.ProveStmt)
    return statement.prop


def syntax_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "t.qspec")
    return caught.value


# ---- the grammar file ----


def test_grammar_is_found_in_the_checkout_and_builds_strictly():
    assert grammar_text() == (REPO / "grammar" / "qspec.lark").read_text(encoding="utf-8")
    assert qspec_parser().options.strict


def test_an_installed_package_reads_its_own_copy_of_the_grammar(tmp_path):
    # the layout of the wheel: bitqnn/grammar/qspec.lark beside the code, no checkout around it
    package = tmp_path / "bitqnn"
    (package / "spec").mkdir(parents=True)
    (package / "grammar").mkdir()
    (package / "__init__.py").write_text("")
    (package / "spec" / "__init__.py").write_text("")
    shutil.copy(REPO / "bitqnn" / "spec" / "grammar.py", package / "spec" / "grammar.py")
    packaged = "// packaged copy\n" + grammar_text()
    (package / "grammar" / "qspec.lark").write_text(packaged, encoding="utf-8")
    probe = ("from bitqnn.spec.grammar import grammar_text, qspec_parser; "
             "qspec_parser(); print(grammar_text()[:17], end='')")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                            capture_output=True, text=True, check=True)
    assert result.stdout == "// packaged copy\n"


def test_every_terminal_has_words():
    for terminal in qspec_parser().terminals:
        if terminal.name not in ("WS", "COMMENT"):
            words = describe_terminal(terminal.name)
            assert words and not re.search(r"[A-Z_]{2,}", words), (terminal.name, words)


# ---- constructs ----


def test_empty_spec_and_comments():
    assert parse("") == ()
    assert parse("# only a comment\n\n   # another\n") == ()


def test_options_statement():
    statement = only("options timeout=60, engine=auto, tiebreak=strict, note=\"x\"")
    assert isinstance(statement, ast.OptionsStmt)
    names = [o.name for o in statement.options]
    assert names == ["timeout", "engine", "tiebreak", "note"]
    timeout, engine, _, note = (o.value for o in statement.options)
    assert timeout == ast.Number(Fraction(60), ast.Pos("t.qspec", 1, 17))
    assert engine == ast.Word("auto", ast.Pos("t.qspec", 1, 28))
    assert note.text == "x"
    assert statement.options[1].pos == ast.Pos("t.qspec", 1, 21)


def test_onnx_network():
    statement = only('network q = onnx "../models/m.onnx"')
    assert isinstance(statement, ast.NetworkStmt)
    assert statement.name == ast.Ident("q", ast.Pos("t.qspec", 1, 9))
    assert isinstance(statement.source, ast.Onnx)
    assert statement.source.path == ast.String("../models/m.onnx", ast.Pos("t.qspec", 1, 18))


def test_quantized_network_with_layer_overrides_over_several_lines():
    statement = only("network p = quantize f with fixed(weights=6, rounding=half_up,\n"
                     '    calibrate="cal.npz",   # comment inside\n'
                     "    layer 0 (weights=8, weight_frac=6), layer 2 (bias=16))")
    source = statement.source
    assert isinstance(source, ast.Quantize)
    assert source.base.name == "f"
    assert [(o.name, o.value) for o in source.options][:1] == [("weights", ast.Number(6, ast.Pos("t.qspec", 1, 43)))]
    assert source.options[1].value == ast.Word("half_up", ast.Pos("t.qspec", 1, 55))
    assert source.options[2].value.text == "cal.npz"
    assert [o.index.value for o in source.layers] == [0, 2]
    assert [o.name for o in source.layers[0].options] == ["weights", "weight_frac"]
    assert source.layers[1].pos == ast.Pos("t.qspec", 3, 41)


def test_quantize_with_all_defaults():
    source = only("network p = quantize f with fixed()").source
    assert source.options == () and source.layers == ()


def test_points():
    sample, keyed, whole_file, vector, alias = parse(
        'let a = sample "t.npz" index 3\n'
        'let b = sample "t.npz" key "x" index 0\n'
        'let c = sample "s.npy"\n'
        "let d = [0, -0.5, 1e-3, 2.25]\n"
        "let e = d\n")
    assert sample.point == ast.Sample(ast.String("t.npz", ast.Pos("t.qspec", 1, 16)), None,
                                      ast.Number(3, ast.Pos("t.qspec", 1, 30)), ast.Pos("t.qspec", 1, 9))
    assert keyed.point.key.text == "x"
    assert whole_file.point.index is None and whole_file.point.key is None
    assert [n.value for n in vector.point.values] == [0, Fraction(-1, 2), Fraction(1, 1000), Fraction(9, 4)]
    assert alias.point == ast.Ident("d", ast.Pos("t.qspec", 5, 9))


def test_regions():
    steps, real, absolute, around, around_real = (s.region for s in parse(
        "region r1 = linf(x0, 2)\n"
        "region r2 = linf(x0, 0.05 real)\n"
        "region r3 = box(lo=[0, 0.5], hi=1)\n"
        "region r4 = box(x0, lo=-1, hi=[2, 3])\n"
        "region r5 = box([0.5, 0.5], lo=-0.1 real, hi=0.1 real)\n"))
    assert isinstance(steps, ast.Linf) and steps.center.name == "x0"
    assert steps.radius.value.value == 2 and not steps.radius.real
    assert real.radius.real and real.radius.value.value == Fraction(1, 20)
    assert isinstance(absolute, ast.BoxRegion) and absolute.center is None
    assert [n.value for n in absolute.lo.value.values] == [0, Fraction(1, 2)]
    assert around.center.name == "x0" and around.lo.value.value == -1
    assert isinstance(around.hi.value, ast.Vector)
    assert isinstance(around_real.center, ast.Vector) and around_real.lo.real and around_real.hi.real


def test_keywords_are_names_where_only_a_name_fits():
    statements = parse("network y = onnx \"m.onnx\"\nregion lo = linf(x, 1)\nprove y(lo): y[0] >= 0")
    assert statements[0].name.name == "y"
    assert statements[2].prop.network.name == "y" and statements[2].prop.region.name == "lo"


def test_robust_and_targeted():
    plain = prop("prove robust(q, r1)")
    assert plain == ast.Robust(ast.Ident("q", ast.Pos("t.qspec", 1, 14)), ast.Ident("r1", ast.Pos("t.qspec", 1, 17)),
                               None, ast.Pos("t.qspec", 1, 7))
    labelled = prop("prove robust(q, linf(x0, 1), label=3)")
    assert isinstance(labelled.region, ast.Linf) and labelled.label.value == 3
    targeted = prop("prove targeted(q, r1, target=7)")
    assert isinstance(targeted, ast.Targeted) and targeted.target.value == 7


def test_prove_options_and_text():
    statement = only("prove robust(q, r1, label=3)   # why\n   with timeout=10, engine=cpsat")
    assert statement.text == "robust(q, r1, label=3)"
    assert [(o.name, o.value.pos.column) for o in statement.options] == [("timeout", 17), ("engine", 28)]
    assert statement.pos == ast.Pos("t.qspec", 1, 1)
    multi = only("prove q(r):\n  y[0] >= 1   # first\n  and y[1] >= 2")
    assert multi.text == "q(r): y[0] >= 1 and y[1] >= 2"


def test_sums_fold_signs_and_coefficients():
    comparison = prop("prove q(r): -y[3] + 2*y[5] - 0.5 - 3 * y[1] > -1.25").formula
    assert isinstance(comparison, ast.Comparison) and comparison.op == ">"
    left = [(t.coeff, None if t.output is None else t.output.index.value) for t in comparison.left]
    assert left == [(-1, 3), (2, 5), (Fraction(-1, 2), None), (-3, 1)]
    assert [(t.coeff, t.output) for t in comparison.right] == [(Fraction(-5, 4), None)]
    assert comparison.left[1].output.index.pos == ast.Pos("t.qspec", 1, 25)


@pytest.mark.parametrize("op", [">=", ">", "<=", "<"])
def test_every_comparison_operator(op):
    assert prop(f"prove q(r): y[0] {op} y[1]").formula.op == op


def test_and_binds_tighter_than_or_and_parentheses_group():
    formula = prop("prove q(r): y[0] >= 0 or y[1] >= 0 and y[2] >= 0").formula
    assert isinstance(formula, ast.AnyOf)
    assert isinstance(formula.parts[0], ast.Comparison) and isinstance(formula.parts[1], ast.AllOf)
    grouped = prop("prove q(r): (y[0] >= 0 or y[1] >= 0) and y[2] >= 0 and y[3] >= 0").formula
    assert isinstance(grouped, ast.AllOf) and len(grouped.parts) == 3
    assert isinstance(grouped.parts[0], ast.AnyOf)


def test_hash_inside_a_string_is_not_a_comment():
    assert only('network q = onnx "a#b.onnx"  # real comment').source.path.text == "a#b.onnx"


# ---- syntax errors ----


@pytest.mark.parametrize("text, line, column, expected", [
    ("region r = linf(x0, 2\nprove robust(q, r)", 1, 22,
     "unexpected end of line; expected ')' or 'real'"),
    ('let x = sample "a.npz" 3', 1, 24, ("unexpected number 3; expected 'index', 'key', a statement "
     "(options, network, let, region, prove, bound) or the end of the file (pick a row with: index N)")),
    ("prove robust(q, r) label=3", 1, 20, ("unexpected 'label'; expected 'with', a statement (options, network, "
     "let, region, prove, bound) or the end of the file "
     "(it goes inside the parentheses, as in robust(q, r, label=3))")),
    ("prove robust(q, r, 3)", 1, 20, "unexpected number 3; expected 'label' (name it: label=N)"),
    ("prove targeted(q, r, 3)", 1, 22, "unexpected number 3; expected 'target' (name it: target=N)"),
    ("prove q(r): y[0] = 1", 1, 18, ("unexpected '='; expected '+', '-' or a comparison (>=, >, <=, <) "
     "(there is no '=': write a >= b and a <= b)")),
    ("prove q(r): y[0] >=\n\n# trailing comment\n", 1, 20, "unexpected end of file; expected 'y' or a number"),
    ('network q = "a.onnx"', 1, 13,
     "unexpected string \"a.onnx\"; expected 'onnx' or 'quantize' (load a model with: onnx \"model.onnx\")"),
    ("region r = linf(x0, 2 steps)", 1, 23,
     "unexpected name 'steps'; expected ')' or 'real' (amounts are in input steps unless followed by 'real')"),
    ("let x = [1, 2,\n]", 1, 15, "unexpected end of line; expected a number"),
    ("let x = [.5]", 1, 10, ("unexpected character '.'; expected a number "
     "(write decimals with digits on both sides of the point, as in 0.5)")),
    ('let x = sample "abc\n', 1, 16,
     "unexpected character '\"'; expected a quoted string (a string ends with \" on the same line)"),
    ("regoin r = linf(x0, 1)", 1, 1,
     "unexpected name 'regoin'; expected a statement (options, network, let, region, prove, bound) "
     "or the end of the file"),
    ("network p = quantize f with fixed(weights=6\n  activations=6)", 1, 44,
     "unexpected end of line; expected ')' or ','"),
    ("prove q(r): y[0] >= 1 @", 1, 23, ("unexpected character '@'; expected '*', '+', '-', 'and', 'or', 'with', "
     "a statement (options, network, let, region, prove, bound) or the end of the file")),
    ("options timeout=", 1, 17, "unexpected end of file; expected a name, a number or a quoted string"),
    ("prove q(r): y[-1] >= 0", 1, 15, "unexpected '-'; expected a number"),
    ("network q = onnx \"m.onnx\"\n\nprove robust(q r)", 3, 16, "unexpected name 'r'; expected ','"),
])
def test_syntax_errors_in_words(text, line, column, expected):
    err = syntax_error(text)
    assert (err.file, err.line, err.column) == ("t.qspec", line, column)
    assert err.message == expected
    assert str(err) == f"t.qspec:{line}:{column}: error: {expected}"
    assert "ANON" not in err.message and not re.search(r"\b(RPAR|LPAR|COMMA|NUMBER|NAME|\$END)\b", err.message)


def test_an_unfinished_line_does_not_blame_a_new_statement():
    # the previous statement may end here, so the unknown word itself is the error
    err = syntax_error('let x = sample "f.npz"\nregoin r = 1')
    assert (err.line, err.column) == (2, 1)
    assert err.message.startswith("unexpected name 'regoin'; expected 'index', 'key', a statement")


def test_render_shows_the_line_and_a_caret():
    err = syntax_error("# header\nregion r = linf(x0 2)\n")
    assert err.render().split("\n") == [
        "t.qspec:2:20: error: unexpected number 2; expected ','",
        "region r = linf(x0 2)",
        "                   ^",
    ]
    assert err.source_line == "region r = linf(x0 2)"


def test_caret_keeps_tabs_aligned():
    err = syntax_error("\tlet x = [1 2]")
    assert err.caret == "\t" + " " * 11 + "^"
    assert len(err.caret[:-1].expandtabs()) == len(err.source_line[: err.column - 1].expandtabs())


# ---- documentation ----


def doc_examples() -> list[str]:
    text = (REPO / "docs" / "qspec.md").read_text(encoding="utf-8")
    return re.findall(r"```qspec\n(.*?)```", text, flags=re.DOTALL)


def test_every_documented_example_parses():
    examples = doc_examples()
    assert len(examples) >= 8
    for example in examples:
        parse_spec(example, "docs/qspec.md")

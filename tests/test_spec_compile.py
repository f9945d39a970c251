"""Spec -> obligations: regions on the integer grid, properties, options, names, files, exactness."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bitqnn import quantize
from bitqnn.floatnet import FloatDense, FloatNetwork
from bitqnn.onnx_io import OnnxImportError, load_model
from bitqnn.properties import robust_violation, targeted_violation
from bitqnn.qnn import QNN, Dense, execute
from bitqnn.requant import OutputStage, Rounding
from bitqnn.spec import ast, networks
from bitqnn.spec.compile import compile_source, compile_spec, compile_text
from bitqnn.spec.errors import SpecError
from bitqnn.spec.linear import comparison_atom, linear_violation
from bitqnn.spec.parser import parse_spec

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


def identity_qnn(output_scale=(1.0,), output_zero: int = 0) -> QNN:
    """4 inputs on the grid 0..15 with step 1/16; outputs are the first three inputs."""
    weight = np.eye(3, 4, dtype=np.int64)
    dense = Dense(weight, np.zeros(1, np.int64), 0, np.zeros(3, np.int64), OutputStage(None))
    return QNN((4,), 0, 15, (dense,), input_scale=1 / 16, output_scale=np.array(output_scale, dtype=np.float64),
               output_zero=output_zero, name="identity")


def float_net() -> FloatNetwork:
    rng = np.random.default_rng(0)
    return FloatNetwork((4,), (FloatDense(rng.normal(size=(5, 4)), rng.normal(size=5), (0.0, np.inf)),
                               FloatDense(rng.normal(size=(3, 5)), rng.normal(size=3))), name="float")


@pytest.fixture
def spec(tmp_path, monkeypatch):
    """Writes a spec into tmp_path beside model files whose import is served by hand-built networks.

    The stand-in for the ONNX importer maps a model file's name to a network, so these
    tests exercise the compiler on networks whose every output is known by hand.
    """
    registry = {"tiny.onnx": identity_qnn(), "float.onnx": float_net()}

    def stand_in(path: Path):
        if path.name not in registry:
            raise OnnxImportError(f"{path.name}: not an ONNX model")
        return registry[path.name]

    monkeypatch.setattr(networks, "load_model", stand_in)
    for name in (*registry, "broken.onnx"):
        (tmp_path / name).write_bytes(b"stand-in")

    def write(text: str, **more: QNN | FloatNetwork):
        for name, network in more.items():
            registry[f"{name}.onnx"] = network
            (tmp_path / f"{name}.onnx").write_bytes(b"stand-in")
        path = tmp_path / "spec.qspec"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def compile_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as caught:
        compile_spec(path)
    return caught.value


HEADER = 'network q = onnx "tiny.onnx"\nlet c = [0.5, 0.25, 0.125, 0]\n'  # c is [8, 4, 2, 0] on q's grid


def boxes(obligations) -> list[tuple[list[int], list[int]]]:
    return [(o.query.region.lo.tolist(), o.query.region.hi.tolist()) for o in obligations]


def expected_real_box(center, lo_offset: str, hi_offset: str) -> tuple[list[int], list[int]]:
    """Independent oracle: exact rationals, Python's round-half-even, then the input range."""
    def grid(value: Fraction) -> int:
        return min(max(round(value * 16), 0), 15)
    lo = [grid(Fraction(c) + Fraction(lo_offset)) for c in center]
    hi = [grid(Fraction(c) + Fraction(hi_offset)) for c in center]
    return lo, hi


# ---- regions ----


def test_regions_resolve_on_the_grid_and_are_cut_to_the_input_range(spec):
    path = spec(HEADER + "region r1 = linf(c, 2)\n"
                "region r2 = linf(c, 0.07 real)\n"
                "region r3 = box(lo=0.1, hi=[0.2, 0.3, 0.4, 2])\n"
                "region r4 = box(c, lo=[-1, 0, 0, 0], hi=3)\n"
                "region r5 = box(c, lo=-0.05 real, hi=0.05 real)\n"
                "prove robust(q, r1)\nprove robust(q, r2)\nprove robust(q, r3, label=0)\n"
                "prove robust(q, r4)\nprove robust(q, r5)\n"
                "prove robust(q, linf([0.9, 0.9, 0.9, 0.9], 1), label=0)\n")
    center = ["0.5", "0.25", "0.125", "0"]
    assert boxes(compile_spec(path)) == [
        ([6, 2, 0, 0], [10, 6, 4, 2]),
        expected_real_box(center, "-0.07", "0.07"),
        ([2, 2, 2, 2], [3, 5, 6, 15]),
        ([7, 4, 2, 0], [11, 7, 5, 3]),
        expected_real_box(center, "-0.05", "0.05"),
        ([13, 13, 13, 13], [15, 15, 15, 15]),
    ]
    assert expected_real_box(center, "-0.07", "0.07") == ([7, 3, 1, 0], [9, 5, 3, 1])


def test_a_region_is_resolved_per_network(spec):
    coarse = QNN((2,), -2, 2, (Dense(np.eye(2, dtype=np.int64), np.zeros(1, np.int64), 0, np.zeros(2, np.int64),
                                     OutputStage(None)),), input_scale=0.5)
    fine = QNN((2,), -100, 100, coarse.layers, input_scale=0.01)
    path = spec('network a = onnx "coarse.onnx"\nnetwork b = onnx "fine.onnx"\n'
                "region r = box(lo=[-0.3, 0], hi=[0.3, 0.26])\n"
                "prove robust(a, r, label=0)\nprove robust(b, r, label=0)\n", coarse=coarse, fine=fine)
    assert boxes(compile_spec(path)) == [([-1, 0], [1, 1]), ([-30, 0], [30, 26])]


def test_a_centre_far_outside_the_range_is_placed_exactly(spec):
    # the centre 5.0 is grid step 80, far above the range 0..15: radius 70 reaches down to step 10
    path = spec(HEADER + "prove robust(q, linf([5, 5, 5, 5], 70), label=0)\n")
    assert boxes(compile_spec(path)) == [([10, 10, 10, 10], [15, 15, 15, 15])]


@pytest.mark.parametrize("region, line, column, message", [
    ("box(lo=2, hi=3)", 3, 12, ("the region misses the input range [0, 0.9375] of network 'q' (used on line 4) "
     "in input 0")),
    ("linf([5, 5, 5, 5], 60)", 3, 12, ("the region misses the input range [0, 0.9375] of network 'q' "
     "(used on line 4) in input 0")),
    ("linf([0.5, 0.5], 1)", 3, 17, "the centre point has 2 values but network 'q' (used on line 4) takes 4 inputs"),
    ("box(c, lo=[-1, -1], hi=1)", 3, 22, "2 bounds given but network 'q' (used on line 4) takes 4 inputs"),
    ("linf(c, 0.5)", 3, 20, "the radius in input steps must be a whole number; add 'real' for real units"),
    ("box(c, lo=[-1, 0.5, 0, 0], hi=1)", 3, 27, "lo in input steps must be a whole number; add 'real' for real units"),
    ("linf(c, -1)", 3, 20, "the radius must not be negative"),
    ("linf(c, [1, 2, 3, 4])", 3, 20, "linf takes one radius; use box(x, lo=..., hi=...) for per-input bounds"),
    ("box(lo=[0, 0.5, 0, 0], hi=0.25)", 3, 12, "lo exceeds hi at input 1"),
    ("box(lo=[0, 0], hi=[1, 1, 1])", 3, 30, "lo has 2 values but hi has 3"),
    ("box(c, lo=-1 real, hi=1)", 3, 34, "lo and hi must be in the same units: mark both 'real' or neither"),
])
def test_region_errors_point_into_the_region(spec, region, line, column, message):
    err = compile_error(spec(HEADER + f"region r = {region}\nprove robust(q, r, label=0)\n"))
    assert (err.line, err.column, err.message) == (line, column, message)
    assert err.source_line == f"region r = {region}"


# ---- robust and targeted ----


def test_robust_label_defaults_to_the_prediction_at_the_centre(spec):
    path = spec(HEADER + "region r = linf(c, 1)\nprove robust(q, r)\nprove robust(q, r, label=2)\n"
                "prove targeted(q, r, target=1)\n")
    default, labelled, targeted = compile_spec(path)
    assert execute(identity_qnn(), np.array([8, 4, 2, 0])).tolist() == [[8, 4, 2]]
    assert default.kind == "robust" and default.query.violation == robust_violation(0, 3, "strict")
    assert labelled.query.violation == robust_violation(2, 3, "strict")
    assert targeted.kind == "targeted" and targeted.query.violation == targeted_violation(1, 3, "strict")


def test_a_tie_at_the_centre_needs_a_label_under_strict_tiebreak(spec):
    tie = "let t = [0.5, 0.5, 0, 0]\n"
    err = compile_error(spec(HEADER + tie + "prove robust(q, linf(t, 1))\n"))
    assert (err.line, err.column) == (4, 7)
    assert err.message == "'q' ties classes 0, 1 at the centre; give label=N or tiebreak=lowest_index"
    (obligation,) = compile_spec(spec(HEADER + tie + "prove robust(q, linf(t, 1)) with tiebreak=lowest_index\n"))
    assert obligation.query.violation == robust_violation(0, 3, "lowest_index")


@pytest.mark.parametrize("statement, column, message", [
    ("prove robust(q, linf(c, 1), label=3)", 35, "'q' has classes 0 to 2; there is no class 3"),
    ("prove robust(q, linf(c, 1), label=1.5)", 35, "'q' has classes 0 to 2; there is no class 3/2"),
    ("prove targeted(q, linf(c, 1), target=-1)", 38, "'q' has classes 0 to 2; there is no class -1"),
    ("prove robust(q, box(lo=0, hi=0.5))", 7, "this region has no centre point to take the label from; give label=N"),
    ("prove robust(f, linf(c, 1))", 14, ("'f' is a float network; prove needs a quantized one "
     "(network p = quantize f with fixed(...))")),
])
def test_property_errors(spec, statement, column, message):
    err = compile_error(spec(HEADER + 'network f = onnx "float.onnx"\n' + statement + "\n"))
    assert (err.line, err.column, err.message) == (4, column, message)


# ---- linear properties: exact over integers ----


def random_qnn(rng: np.random.Generator, dyadic: bool) -> QNN:
    """Three outputs with per-channel scales and a zero point.

    Dyadic scales (1/2, 1/4, 1/8) make the real comparisons land exactly on equality
    often, which is where an epsilon or a lost strictness would show; float32 scales
    such as 0.0372... test that the float is used exactly.
    """
    if dyadic:
        scales = rng.choice([0.5, 0.25, 0.125], 3)
    else:
        scales = rng.uniform(0.001, 0.3, 3).astype(np.float32).astype(np.float64)
    return identity_qnn(tuple(scales), int(rng.integers(-5, 6)))


def real_outputs(qnn: QNN, outputs: np.ndarray) -> list[Fraction]:
    return [Fraction(float(s)) * (int(y) - qnn.output_zero) for s, y in zip(qnn.output_scale, outputs, strict=True)]


def sides(comparison: ast.Comparison, real: list[Fraction]) -> tuple[Fraction, Fraction]:
    def side(terms: tuple[ast.Term, ...]) -> Fraction:
        return sum((t.coeff * (1 if t.output is None else real[int(t.output.index.value)]) for t in terms),
                   Fraction(0))
    return side(comparison.left), side(comparison.right)


COMPARE = {">=": Fraction.__ge__, ">": Fraction.__gt__, "<=": Fraction.__le__, "<": Fraction.__lt__}


def holds(formula: ast.Formula, real: list[Fraction]) -> bool:
    """The property itself, evaluated in exact rationals: the oracle for the integer DNF."""
    if isinstance(formula, ast.AllOf):
        return all(holds(part, real) for part in formula.parts)
    if isinstance(formula, ast.AnyOf):
        return any(holds(part, real) for part in formula.parts)
    return COMPARE[formula.op](*sides(formula, real))


def random_comparison(rng: np.random.Generator, dyadic: bool) -> str:
    step = 2 if dyadic else 10

    def term() -> str:
        return f"{rng.integers(-3 * step, 3 * step + 1) / step:g}*y[{rng.integers(0, 3)}]"
    left = " + ".join(term() for _ in range(rng.integers(1, 4)))
    constant = f"{rng.integers(-20, 21) / 4:g}" if dyadic else f"{rng.integers(-200, 201) / 100:g}"
    right = f"{term()} + {constant}" if rng.random() < 0.5 else constant
    op = rng.choice([">=", ">", "<=", "<"])
    return f"{left} {op} {right}".replace("+ -", "- ")


def formula_of(text: str) -> ast.Formula:
    return parse_spec(f"prove q(r): {text}", "t.qspec").statements[0].prop.formula


@pytest.mark.parametrize("dyadic", [True, False])
def test_integer_atoms_hold_exactly_when_the_real_comparison_holds(dyadic):
    rng = np.random.default_rng(1)
    ties = 0
    for _ in range(100):
        qnn = random_qnn(rng, dyadic)
        comparison = formula_of(random_comparison(rng, dyadic))
        atom = comparison_atom(comparison, qnn, "q")
        assert all(isinstance(c, int) for _, c in atom.terms) and isinstance(atom.bound, int)
        outputs = rng.integers(-12, 13, (100, 3)) if dyadic else rng.integers(-60, 61, (100, 3))
        both = [sides(comparison, real_outputs(qnn, y)) for y in outputs]
        assert atom.holds(outputs).tolist() == [COMPARE[comparison.op](left, right) for left, right in both]
        ties += sum(left == right for left, right in both)
    assert ties > 100 or not dyadic  # the boundary itself, where an epsilon would fail, was hit many times


def test_boundaries_are_exact_without_epsilon():
    qnn = identity_qnn((0.1, 0.25, 0.5), output_zero=2)  # 0.1 is not a binary fraction: the float is used exactly
    atom = comparison_atom(formula_of("y[1] - y[2] >= 0.5"), qnn, "q")
    # 0.25*(a-2) - 0.5*(b-2) >= 0.5  <=>  a - 2b >= 0
    assert atom.terms == ((1, 1), (2, -2)) and atom.bound == 0
    strict = comparison_atom(formula_of("y[1] - y[2] > 0.5"), qnn, "q")
    assert strict.terms == ((1, 1), (2, -2)) and strict.bound == 1
    # the stored scale float(0.1) is a little above one tenth, so one step above the zero
    # point is NOT <= 0.1 in exact arithmetic, although float arithmetic says it is
    at_most_a_tenth = comparison_atom(formula_of("y[0] <= 0.1"), qnn, "q")
    assert 0.1 * (3 - 2) <= 0.1 and Fraction(0.1) > Fraction(1, 10)
    assert at_most_a_tenth.holds(np.array([[3, 0, 0], [2, 0, 0]])).tolist() == [False, True]


def test_violations_are_the_exact_negation_of_the_formula():
    rng = np.random.default_rng(2)
    for _ in range(60):
        dyadic = bool(rng.random() < 0.5)
        qnn = random_qnn(rng, dyadic)
        a, b, c, d = (random_comparison(rng, dyadic) for _ in range(4))
        text = rng.choice([f"{a} and {b}", f"{a} or {b}", f"({a} or {b}) and ({c} or {d})",
                           f"{a} and {b} or {c}", f"{a}"])
        formula = formula_of(text)
        violation = linear_violation(formula, qnn, "q")
        outputs = rng.integers(-60, 61, (150, 3))
        want = [not holds(formula, real_outputs(qnn, y)) for y in outputs]
        assert violation.holds(outputs).tolist() == want


def test_linear_obligation_and_output_index_errors(spec):
    (obligation,) = compile_spec(spec(HEADER + "region r = linf(c, 1)\nprove q(r): y[0] - y[1] >= 0.25 or y[2] < 0\n"))
    assert obligation.kind == "linear"
    assert obligation.query.violation.describe() == "(- y[0] + y[1] >= 0 and y[2] >= 0)"
    err = compile_error(spec(HEADER + "region r = linf(c, 1)\nprove q(r): y[0] >= y[3]\n"))
    assert (err.line, err.column, err.message) == (4, 23, "network 'q' has outputs y[0] to y[2]; there is no y[3]")


def test_the_negation_size_is_bounded(spec):
    clause = "(y[0] >= 1 and y[1] >= 1 and y[2] >= 1 and y[0] <= -1)"  # negated: 4 cases each
    err = compile_error(spec(HEADER + "prove q(linf(c, 1)): " + " or ".join([clause] * 7) + "\n"))
    assert err.message == "the property's negation has more than 4096 cases; split it into several proves"


# ---- options ----


def test_options_resolve_from_defaults_spec_and_statement(spec):
    default, = compile_spec(spec(HEADER + "prove robust(q, linf(c, 1))\n"))
    assert default.options == {"timeout": 60.0, "engine": "auto"} and default.query.options == default.options
    path = spec(HEADER + "prove robust(q, linf(c, 1))\n"
                "prove robust(q, linf(c, 1)) with timeout=1.5, engine=enumerate, tiebreak=lowest_index\n"
                "options timeout=5, engine=cpsat  # spec-wide wherever it stands\n")
    spec_wide, own = compile_spec(path)
    assert spec_wide.options == {"timeout": 5.0, "engine": "cpsat"}
    assert own.options == {"timeout": 1.5, "engine": "enumerate"}
    assert own.query.violation == robust_violation(0, 3, "lowest_index")


@pytest.mark.parametrize("statement, line, column, message", [
    ("options timeout=0", 3, 17, "timeout must be a number > 0, not 0"),
    ("options timeout=fast", 3, 17, "timeout must be a number > 0, not fast"),
    ("options tiebreak=maybe", 3, 18, "tiebreak must be one of strict, lowest_index, not maybe"),
    ('options engine="cpsat"', 3, 16, 'engine must be a name, not "cpsat"'),
    ("options timeout=1, timeout=2", 3, 20, "option 'timeout' is already set on line 3"),
    ("options solver=cpsat", 3, 9, "unknown option 'solver' for options; expected one of timeout, engine, tiebreak"),
    ("prove robust(q, linf(c, 1)) with depth=3", 3, 34,
     "unknown option 'depth' for prove; expected one of timeout, engine, tiebreak"),
    ("prove q(linf(c, 1)): y[0] >= 0 with tiebreak=strict", 3, 37, "tiebreak applies to robust and targeted only"),
])
def test_option_errors(spec, statement, line, column, message):
    err = compile_error(spec(HEADER + statement + "\n"))
    assert (err.line, err.column, err.message) == (line, column, message)


def test_engine_names_can_be_checked(spec):
    path = spec(HEADER + "prove robust(q, linf(c, 1)) with engine=gurobi\n")
    with pytest.raises(SpecError, match="engine must be one of auto, cpsat, not gurobi"):
        compile_spec(path, engines=("auto", "cpsat"))
    assert compile_spec(path)[0].options["engine"] == "gurobi"


# ---- names ----


@pytest.mark.parametrize("text, line, column, message", [
    ("region r1 = linf(c, 1)\nprove robust(q, r9)", 4, 17, "unknown region 'r9'; did you mean 'r1'?"),
    ("prove robust(p, linf(c, 1))", 3, 14, "unknown network 'p'; the networks defined above are q"),
    ("prove robust(q, linf(x, 1))", 3, 22, "unknown point 'x'; the points defined above are c"),
    ("prove robust(q, c)", 3, 17, "'c' is a point, not a region"),
    ("region c = linf(c, 1)", 3, 8, "'c' is already defined as a point on line 2"),
    ('network q = onnx "tiny.onnx"', 3, 9, "'q' is already defined as a network on line 1"),
    ("prove robust(q, r)\nregion r = linf(c, 1)", 3, 17, "unknown region 'r'; no region is defined above"),
])
def test_name_errors(spec, text, line, column, message):
    err = compile_error(spec(HEADER + text + "\n"))
    assert (err.line, err.column, err.message) == (line, column, message)


# ---- files ----


@pytest.fixture
def samples(tmp_path):
    rows = np.arange(12, dtype=np.float32).reshape(3, 4) / 16
    np.savez(tmp_path / "named.npz", first=rows[::-1], x=rows, y=np.arange(3))
    np.savez(tmp_path / "plain.npz", rows[::-1])
    np.save(tmp_path / "one.npy", rows[1])
    np.save(tmp_path / "many.npy", rows.reshape(3, 2, 2))
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",")
    (tmp_path / "bad.csv").write_text("0.1,0.2,abc,0.4\n")
    (tmp_path / "notes.txt").write_text("1,2,3,4\n")
    return rows


def test_samples_from_every_format(spec, samples):
    path = spec('let a = sample "named.npz" index 1\n'
                'let b = sample "named.npz" key "first" index 0\n'
                'let c = sample "plain.npz" index 2\n'
                'let d = sample "one.npy"\n'
                'let e = sample "many.npy" index 2\n'
                'let f = sample "rows.csv" index 1\n'
                'network q = onnx "tiny.onnx"\n'
                + "".join(f"prove robust(q, linf({name}, 0), label=0)\n" for name in "abcdef"))
    grid = [o.query.region.lo.tolist() for o in compile_spec(path)]
    assert grid == [[4, 5, 6, 7], [8, 9, 10, 11], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [4, 5, 6, 7]]


@pytest.mark.parametrize("point, column, message", [
    ('sample "missing.npz" index 0', 16, "no such file: missing.npz (looked for {dir}/missing.npz)"),
    ('sample "named.npz" key "z" index 0', 32, "named.npz has no array 'z'; it has first, x, y"),
    ('sample "named.npz" index 3', 34, "named.npz holds 3 samples, so index must be a whole number from 0 to 2"),
    ('sample "named.npz" index 0.5', 34, "named.npz holds 3 samples, so index must be a whole number from 0 to 2"),
    ('sample "named.npz"', 9, "named.npz holds 3 samples; pick one with 'index N'"),
    ('sample "one.npy" key "x"', 30, "a key names an array inside an .npz file only"),
    ('sample "notes.txt"', 16, "cannot read samples from '.txt' files; use .npz, .npy, .csv"),
])
def test_sample_errors(spec, samples, tmp_path, point, column, message):
    err = compile_error(spec(f"let a = {point}\n"))
    assert (err.line, err.column) == (1, column)
    assert err.message == message.format(dir=tmp_path.resolve())


def test_unreadable_csv_is_reported_at_the_path(spec, samples):
    err = compile_error(spec('let a = sample "bad.csv" index 0\n'))
    assert (err.line, err.column) == (1, 16) and err.message.startswith("cannot read bad.csv: ")


def test_model_file_errors(spec, tmp_path):
    err = compile_error(spec('network q = onnx "nope.onnx"\n'))
    assert (err.line, err.column, err.message) == (1, 18, (f"no such file: nope.onnx (looked for {tmp_path.resolve()}"
                                                   "/nope.onnx)"))
    err = compile_error(spec('\nnetwork q = onnx "broken.onnx"\n'))
    assert (err.line, err.column, err.message) == (2, 18, "cannot import broken.onnx: broken.onnx: not an ONNX model")
    assert err.render().endswith('network q = onnx "broken.onnx"\n                 ^')


def test_an_unreadable_spec_is_one_line(tmp_path):
    with pytest.raises(SpecError) as caught:
        compile_spec(tmp_path / "absent.qspec")
    assert str(caught.value).startswith(f"{tmp_path / 'absent.qspec'}: error: cannot read the spec: ")
    assert caught.value.render() == str(caught.value)


# ---- obligations ----


def test_obligations_carry_text_position_and_label(spec):
    path = spec(HEADER + "region r1 = linf(c, 2)\n\nprove robust(q, r1)   # note\nprove targeted(q, r1, target=2)"
                " with timeout=3\n")
    first, second = compile_spec(path)
    assert (first.text, first.pos.line, first.pos.column) == ("robust(q, r1)", 5, 1)
    assert first.query.label == f"robust(q, r1) @ {path}:5"
    assert second.query.label == f"targeted(q, r1, target=2) @ {path}:6"
    assert first.query.network is second.query.network


def test_paths_resolve_next_to_the_spec_not_the_working_directory(spec, tmp_path, monkeypatch):
    path = spec(HEADER + "prove robust(q, linf(c, 1))\n")
    monkeypatch.chdir(REPO)
    assert len(compile_text(path.read_text(), str(path))) == 1


# ---- quantize ----


def test_quantize_statement_runs_the_fixed_point_quantizer(spec, samples):
    path = spec('network f = onnx "float.onnx"\n'
                "network p = quantize f with fixed(weights=6, activations=7, input=8, input_frac=4, "
                "input_signed=true,\n"
                '    rounding=half_even, weight_rounding=floor, output=requantized, calibrate="rows.csv",\n'
                "    bias=16, layer 1 (weights=8, weight_frac=5))\n"
                "prove robust(p, linf([0.5, 0.25, 0.125, 0], 1), label=0)\n")
    (obligation,) = compile_spec(path)
    config = quantize.FixedPointConfig(weights=6, activations=7, input_bits=8, input_frac=4, input_signed=True,
                                       rounding=Rounding.HALF_EVEN, weight_rounding=Rounding.FLOOR,
                                       output="requantized", bias_bits=16,
                                       layers=(quantize.LayerConfig(1, weights=8, weight_frac=5),))
    expected = quantize.quantize_fixed_point(float_net(), config, samples)
    got = obligation.query.network
    assert got.semantics == expected.semantics and (got.input_lo, got.input_hi) == (-128, 127)
    for mine, theirs in zip(got.layers, expected.layers, strict=True):
        assert np.array_equal(mine.weight, theirs.weight) and np.array_equal(mine.bias, theirs.bias)
    assert obligation.query.region.lo.tolist() == [7, 3, 1, -1]  # a signed grid reaches below 0


@pytest.mark.parametrize("fixed, line, column, message", [
    ("fixed(weights=6.5)", 2, 43, "weights must be a whole number >= 1, not 6.5"),
    ("fixed(rounding=nearest)", 2, 44, "rounding must be one of floor, half_up, half_even, half_away, not nearest"),
    ("fixed(bits=4)", 2, 35, ("unknown option 'bits' for fixed(...); expected one of weights, weight_frac, "
     "activations, activation_frac, bias, bias_frac, input, input_frac, input_signed, weight_rounding, rounding, "
     "output, calibrate")),
    ("fixed(input_signed=yes)", 2, 48, "input_signed must be one of true, false, not yes"),
    ("fixed(layer 2 (weights=4))", 2, 41, "'f' has linear layers 0 to 1; there is no layer 2"),
    ("fixed(layer 0 (weights=4), layer 0 (activations=4))", 2, 56, "layer 0 is already configured in this fixed(...)"),
    ("fixed(layer 0 (rounding=floor))", 2, 44, ("unknown option 'rounding' for layer 0; expected one of weights, "
     "weight_frac, activations, activation_frac, bias, bias_frac")),
    ('fixed(calibrate="none.csv")', 2, 45, "no such file: none.csv (looked for {dir}/none.csv)"),
])
def test_quantize_errors(spec, tmp_path, fixed, line, column, message):
    err = compile_error(spec(f'network f = onnx "float.onnx"\nnetwork p = quantize f with {fixed}\n'))
    assert (err.line, err.column, err.message) == (line, column, message.format(dir=tmp_path.resolve()))


def test_quantize_needs_a_float_network(spec):
    err = compile_error(spec('network q = onnx "tiny.onnx"\nnetwork p = quantize q with fixed()\n'))
    assert (err.line, err.column, err.message) == (2, 22, "'q' is already quantized; quantize takes a float network")


# ---- the real digits models and the documentation ----


def test_digits_q8_robustness_obligation():
    text = ('network q = onnx "../examples/digits/digits_q8.onnx"\n'
            'let x = sample "../examples/digits/test.npz" index 3\n'
            "region r = linf(x, 2)\n"
            "prove robust(q, r)\n"
            "prove q(r): y[0] - y[1] >= 0.5 or y[2] < 1\n")
    robust, linear = compile_text(text, str(REPO / "specs" / "digits.qspec"))
    qnn = load_model(DIGITS / "digits_q8.onnx")
    x = np.load(DIGITS / "test.npz")["x"][3]
    center = qnn.quantize_input(x)
    box = robust.query.region
    assert box.lo.shape == (64,)
    assert np.array_equal(box.lo, np.maximum(center - 2, qnn.input_lo))
    assert np.array_equal(box.hi, np.minimum(center + 2, qnn.input_hi))
    label = int(np.argmax(execute(robust.query.network, center)[0]))
    assert robust.query.violation == robust_violation(label, 10, "strict")
    outputs = np.random.default_rng(3).integers(-128, 128, (300, 10))
    formula = parse_spec(text, "d").statements[-1].prop.formula
    want = [not holds(formula, [Fraction(float(s)) for s in qnn.dequantize_output(y)]) for y in outputs]
    assert linear.query.violation.holds(outputs).tolist() == want


DOC_SPEC = "specs/example.qspec"  # where the documentation asks readers to save its examples


def test_every_documented_example_compiles(monkeypatch):
    monkeypatch.chdir(REPO)
    text = (REPO / "docs" / "qspec.md").read_text(encoding="utf-8")
    examples = re.findall(r"```qspec\n(.*?)```", text, flags=re.DOTALL)
    assert len(examples) >= 8
    for example in examples:
        compiled = compile_source(example, DOC_SPEC, None)
        assert compiled.obligations or compiled.audits or compiled.syntheses


def test_documented_errors_are_the_real_ones(monkeypatch):
    monkeypatch.chdir(REPO)
    text = (REPO / "docs" / "qspec.md").read_text(encoding="utf-8")
    pairs = re.findall(r"```qspec-error\n(.*?)```.*?```text\n(.*?)\n```", text, flags=re.DOTALL)
    assert len(pairs) == 3
    for example, shown in pairs:
        with pytest.raises(SpecError) as caught:
            compile_text(example, DOC_SPEC)
        assert caught.value.render() == shown

"""backdoor_free: exact against brute force, replayed patches, the CLI end to end, and every spec error."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from bitqnn import backdoor_verify
from bitqnn.backdoor import BackdoorQuery, ImageLayout
from bitqnn.backdoor_verify import verify_backdoor
from bitqnn.cli import EXIT_FALSIFIED, EXIT_INPUT
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.input_split import InputSplitEngine
from bitqnn.engines.registry import make_engine
from bitqnn.outcome import Outcome, Verdict
from bitqnn.properties import targeted_violation
from bitqnn.qnn import QNN, execute
from bitqnn.spec.compile import compile_spec, compile_text
from bitqnn.spec.errors import SpecError
from tests.netgen import REQUANT_KINDS, random_conv_qnn, random_dense_qnn, random_query
from tests.test_cli import ROOT, SPECS, run
from tests.test_spec_compile import spec  # noqa: F401 - the fixture serving hand-built networks

DIGITS = ROOT / "examples" / "digits"


def target_wins(outputs: np.ndarray, target: int, tiebreak: str) -> bool:
    """The oracle, written independently of properties.py: `strict` lets the target win every tie."""
    return bool(outputs[target] == outputs.max() if tiebreak == "strict" else np.argmax(outputs) == target)


def triggering_locations(qnn: QNN, base: np.ndarray, shape: tuple[int, int, int], size: tuple[int, int],
                         values: tuple[int, int], target: int, tiebreak: str) -> set[tuple[int, int]]:
    """Every location where some patch makes the target win, by trying every patch at every location."""
    channels, height, width = shape
    h, w = size
    found = set()
    for row, col in itertools.product(range(height - h + 1), range(width - w + 1)):
        cells = [c * height * width + (row + r) * width + (col + k)
                 for c in range(channels) for r in range(h) for k in range(w)]
        patches = np.array(list(itertools.product(range(values[0], values[1] + 1), repeat=len(cells))))
        inputs = np.repeat(base[None, :], len(patches), axis=0)
        inputs[:, cells] = patches
        if any(target_wins(y, target, tiebreak) for y in execute(qnn, inputs)):
            found.add((row, col))
    return found


def random_case(rng: np.random.Generator) -> tuple[BackdoorQuery, tuple[int, int, int], str]:
    """A tiny network on a 3x3 image (one or two channels, dense or conv), a 2x2 or smaller patch, 2-4 values."""
    kind = REQUANT_KINDS[rng.integers(len(REQUANT_KINDS))]
    pick = rng.integers(3)
    if pick == 0:
        qnn, shape = random_conv_qnn(rng, kind), (1, 3, 3)
    else:
        shape = (int(pick), 3, 3)
        qnn = random_dense_qnn(rng, kind, sizes=(9 * int(pick), 4, 3))
    size = (2, 2) if pick < 2 else tuple(int(s) for s in rng.integers(1, 3, 2))
    lo = int(rng.integers(qnn.input_lo, qnn.input_hi))
    values = (lo, min(lo + int(rng.integers(1, 4 if pick < 2 else 2)), qnn.input_hi))
    base = rng.integers(qnn.input_lo, qnn.input_hi + 1, qnn.input_size)
    target, tiebreak = int(rng.integers(qnn.output_size)), ("strict", "lowest_index")[rng.integers(2)]
    layout = ImageLayout(*shape)
    locations = layout.locations(size)
    if rng.random() < 0.2:
        locations = (locations[rng.integers(len(locations))],)
    bq = BackdoorQuery(qnn, base, layout, size, values, locations, target,
                       targeted_violation(target, qnn.output_size, tiebreak), f"case {kind}")
    return bq, shape, tiebreak


def check_patch(bq: BackdoorQuery, result, tiebreak: str) -> None:
    """The reported patch is the witness's, lies in the range, and makes the target win when stamped on the base."""
    patch = result.patch
    assert tuple(patch["at"]) in bq.locations and tuple(patch["size"]) == bq.size
    pixels = np.array(patch["values"])
    assert pixels.shape == (bq.layout.channels, *bq.size)
    assert pixels.min() >= bq.values[0] and pixels.max() <= bq.values[1]
    stamped = bq.stamp(tuple(patch["at"]), pixels)
    assert stamped.tolist() == result.witness
    assert np.allclose(patch["values_real"], bq.network.dequantize_input(pixels))
    assert target_wins(execute(bq.network, stamped)[0], bq.target, tiebreak)


@pytest.mark.parametrize("engine, screen", [("cpsat", False), ("smt", False), ("auto", False), ("cpsat", True)])
def test_verdicts_match_brute_force_over_every_location_and_patch(engine, screen, monkeypatch):
    """Without the screen the solver meets every location, the falsified ones included."""
    if not screen:
        monkeypatch.setattr(backdoor_verify, "_screen", lambda bq: (list(bq.locations), None))
    rng = np.random.default_rng({"cpsat": 11, "smt": 12, "auto": 13}[engine] + 10 * screen)
    solver = make_engine(engine, workers=1)
    verdicts = []
    for _ in range(60):
        bq, shape, tiebreak = random_case(rng)
        truth = triggering_locations(bq.network, bq.base, shape, bq.size, bq.values, bq.target, tiebreak)
        truth &= set(bq.locations)
        result = verify_backdoor(bq, solver, timeout=60)
        verdicts.append(result.verdict)
        assert result.verdict is (Verdict.FALSIFIED if truth else Verdict.PROVED), (bq.label, truth)
        if truth:
            assert tuple(result.patch["at"]) in truth
            check_patch(bq, result, tiebreak)
        assert screen or result.engine != "screen"
    assert verdicts.count(Verdict.PROVED) >= 10 and verdicts.count(Verdict.FALSIFIED) >= 10


def test_input_splitting_matches_enumeration():
    """The splitting stage alone, on the shared random queries: complete, and exact at every point."""
    rng = np.random.default_rng(5)
    splitting, enumeration = InputSplitEngine(), EnumerationEngine()
    verdicts = []
    for case in range(100):
        kind = REQUANT_KINDS[case % len(REQUANT_KINDS)]
        qnn = random_conv_qnn(rng, kind) if case % 10 == 0 else random_dense_qnn(rng, kind)
        query = random_query(rng, qnn, radius=1)
        truth = enumeration.solve(query, 60).verdict
        outcome = splitting.solve(query, 60)
        assert outcome.verdict is truth, query.label
        if truth is Verdict.FALSIFIED:
            assert query.check_witness(outcome.witness, execute(qnn, outcome.witness)[0])
        verdicts.append(truth)
    assert verdicts.count(Verdict.PROVED) >= 10 and verdicts.count(Verdict.FALSIFIED) >= 10


# ---- the merge and the budget, with stand-in engines ----


class StandIn:
    """An engine that answers from a table by patch location and records the time it was given."""

    name = "stand-in"

    def __init__(self, answers: dict, sleep: bool = False) -> None:
        self.answers, self.sleep, self.given = answers, sleep, []

    def solve(self, query, timeout):
        self.given.append(timeout)
        if self.sleep:
            time.sleep(timeout)
        verdict, witness = self.answers.get(query.label.rsplit(" at ", 1)[1], (Verdict.UNKNOWN, None))
        return Outcome(verdict, self.name, timeout if self.sleep else 0.0, "stand-in", witness)


@pytest.fixture
def unscreened(monkeypatch) -> BackdoorQuery:
    """A 3x3 one-channel case with 2x2 patches (4 locations), the screen switched off."""
    monkeypatch.setattr(backdoor_verify, "_screen", lambda bq: (list(bq.locations), None))
    qnn = random_dense_qnn(np.random.default_rng(1), "floor", sizes=(9, 4, 3))
    layout = ImageLayout(1, 3, 3)
    return BackdoorQuery(qnn, np.zeros(9, np.int64), layout, (2, 2), (0, 1), layout.locations((2, 2)), 0,
                         targeted_violation(0, 3, "strict"), "bq")


def test_proved_needs_every_location_and_unknown_says_how_many_are_open(unscreened):
    proved = {f"[{r}, {c}]": (Verdict.PROVED, None) for r in range(2) for c in range(2)}
    assert verify_backdoor(unscreened, StandIn(proved), 10).verdict is Verdict.PROVED
    result = verify_backdoor(unscreened, StandIn({**proved, "[1, 0]": (Verdict.UNKNOWN, None)}), 10)
    assert result.verdict is Verdict.UNKNOWN and result.witness is None
    assert result.reason.startswith("1 of 4 patch locations undecided within 10s (at [1, 0]: stand-in)")
    assert result.stats["proved_locations"] == 3


def test_the_statement_timeout_is_shared_by_its_locations(unscreened):
    engine = StandIn({}, sleep=True)
    start = time.perf_counter()
    result = verify_backdoor(unscreened, engine, 0.4)
    assert time.perf_counter() - start < 0.6 and sum(engine.given) <= 0.4 + 1e-9
    assert engine.given[0] == pytest.approx(0.1, abs=0.01)  # an equal share of the whole budget first
    assert result.verdict is Verdict.UNKNOWN and result.reason.startswith("4 of 4 patch locations undecided")


def test_a_counterexample_that_does_not_replay_is_never_a_verdict(unscreened):
    from bitqnn.replay import ReplayMismatch

    outside = unscreened.stamp((0, 0), np.ones((1, 2, 2)))
    outside[8] = 1  # the bottom-right pixel is not under a 2x2 patch at [0, 0]
    with pytest.raises(ReplayMismatch, match="outside the region"):
        verify_backdoor(unscreened, StandIn({"[0, 0]": (Verdict.FALSIFIED, outside)}), 10)


# ---- the spec and the CLI on the digits model ----


def quantized_sample(qnn: QNN, index: int) -> np.ndarray:
    return qnn.quantize_input(np.load(DIGITS / "test.npz")["x"][index])


def test_digits_spec_proves_one_statement_and_shows_the_patch_that_breaks_the_other(capsys):
    code, out, _ = run(capsys, "prove", SPECS / "digits_backdoor.qspec", "--json")
    assert code == EXIT_FALSIFIED
    proved, falsified = json.loads(out)["results"]
    assert proved["verdict"] == "proved" and proved["stats"]["proved_locations"] == proved["stats"]["locations"] == 49
    assert falsified["verdict"] == "falsified" and falsified["onnxruntime_checked"] is True
    patch = falsified["patch"]
    assert patch["size"] == [2, 2] and min(patch["at"]) >= 0 and max(patch["at"]) <= 6
    (_, obligation) = compile_spec(SPECS / "digits_backdoor.qspec")
    bq = obligation.query
    assert bq.base.tolist() == quantized_sample(bq.network, 0).tolist()
    stamped = bq.stamp(tuple(patch["at"]), np.array(patch["values"]))
    assert stamped.tolist() == falsified["witness"]
    assert np.flatnonzero(stamped != bq.base).size <= 4  # only pixels under the patch changed
    outputs = execute(bq.network, stamped)[0]
    assert outputs.tolist() == falsified["outputs"] and target_wins(outputs, 3, "strict")
    assert all(0 <= v <= 1 + 1e-6 for channel in patch["values_real"] for row in channel for v in row)


def test_the_table_shows_where_the_patch_sits_and_its_pixels(capsys, tmp_path):
    path = tmp_path / "one.qspec"
    path.write_text(f'network q = onnx "{DIGITS}/digits_q8.onnx"\nlet x0 = sample "{DIGITS}/test.npz" index 0\n'
                    "prove backdoor_free(q, x0, target=3, size=[2, 2], values=[0, 1] real, image=[8, 8])\n")
    code, out, _ = run(capsys, "prove", path)
    assert code == EXIT_FALSIFIED and "FALSIFIED" in out and "trigger patch replayed on the reference" in out
    line = next(line for line in out.splitlines() if "trigger patch 2 x 2 at [row, column]" in line)
    assert "pixels [channel][row][column]: integers [[[" in line and "real [[[" in line
    code, out, _ = run(capsys, "check", path)
    assert "backdoor, digits_q8, 49 patch location(s) x 4294967296 patches" in out


def test_values_units_locations_and_tiebreak_compile_as_documented():
    header = f'network q = onnx "{DIGITS}/digits_q8.onnx"\nlet x0 = sample "{DIGITS}/test.npz" index 0\n'
    steps, real, whole, one = compile_text(
        header + "prove backdoor_free(q, x0, target=3, size=[2, 3], values=[0, 16], image=[8, 8])\n"
        "prove backdoor_free(q, x0, target=3, size=[1, 1], values=[0.25, 0.5] real, image=[8, 8])\n"
        "prove backdoor_free(q, x0, target=3, size=[8, 8], image=[8, 8])\n"
        "prove backdoor_free(q, x0, target=3, size=[2, 2], image=[2, 4, 8], at=[1, 6]) with tiebreak=lowest_index\n",
        "x.qspec")
    assert steps.query.values == (0, 16) and len(steps.query.locations) == 7 * 6
    qnn = real.query.network
    assert real.query.values == tuple(int(v) for v in qnn.quantize_input(np.array([0.25, 0.5])))
    assert whole.query.values == (qnn.input_lo, qnn.input_hi) and whole.query.locations == ((0, 0),)
    assert one.query.layout == ImageLayout(2, 4, 8) and one.query.locations == ((1, 6),)
    assert one.query.violation == targeted_violation(3, 10, "lowest_index")
    assert one.query.layout.patch_indices((1, 6), (2, 2)).tolist() == [14, 15, 22, 23, 46, 47, 54, 55]


def test_an_image_input_needs_no_shape_and_a_wrong_one_is_named(spec):  # noqa: F811 - the fixture
    conv = random_conv_qnn(np.random.default_rng(0), "floor")
    point = "[" + ", ".join(["0"] * 9) + "]"
    (obligation,) = compile_spec(spec(f'network c = onnx "conv.onnx"\nprove backdoor_free(c, {point}, target=1, '
                                      "size=[2, 2], values=[0, 0.5] real)\n", conv=conv))
    assert obligation.query.layout == ImageLayout(1, 3, 3) and len(obligation.query.locations) == 4
    statement = f"prove backdoor_free(c, {point}, target=1, size=[2, 2], image=[4, 4])"
    with pytest.raises(SpecError) as caught:
        compile_spec(spec(f'network c = onnx "conv.onnx"\n{statement}\n', conv=conv))
    assert (caught.value.line, caught.value.column) == (2, statement.index("[4, 4]") + 1)
    assert caught.value.message == ("image=[4, 4] does not match network 'c', whose input is an image of shape "
                                    "[1, 3, 3] (channels, height, width)")


ARGS = "target=3, size=[2, 2], values=[0, 1] real, image=[8, 8]"


@pytest.mark.parametrize("statement, marker, message", [
    ("prove backdoor_free(q, x0, target=10, size=[2, 2], image=[8, 8])", "10",
     "'q' has classes 0 to 9; there is no class 10"),
    ("prove backdoor_free(q, x0, target=3, size=[9, 2], image=[8, 8])", "[9, 2]",
     "a 9 x 2 patch does not fit the 8 x 8 image"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2], image=[8, 8], at=[7, 0])", "[7, 0]",
     "a 2 x 2 patch on the 8 x 8 image has its top-left corner at rows 0 to 6 and columns 0 to 6; there is no [7, 0]"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2], values=[1, 0.5] real, image=[8, 8])", "[1, 0.5]",
     "the value range [1, 0.5] is empty"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2], values=[0, 200], image=[8, 8])", "[0, 200]",
     "values [0, 200] leave the input range of network 'q': integers -128 to 127, real 0 to 1"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2], values=[-0.5, 1] real, image=[8, 8])", "[-0.5",
     "values [-0.5, 1] real leave the input range of network 'q': integers -128 to 127, real 0 to 1"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2], values=[0, 0.5], image=[8, 8])", "0.5",
     "values in input steps must be whole numbers; add 'real' for real units"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2], image=[8, 7])", "[8, 7]",
     "image=[8, 7] has 56 values but network 'q' takes 64 inputs"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2])", "backdoor_free",
     "network 'q' takes a flat input of 64 values; give the image shape it stands for, as in image=[8, 8]"),
    ("prove backdoor_free(q, [0.5, 0.5], " + ARGS + ")", "[0.5",
     "the base input has 2 values but network 'q' takes 64 inputs"),
    ("prove backdoor_free(q, x0, size=[2, 2], image=[8, 8])", "backdoor_free",
     "backdoor_free needs target=T, the class no trigger may produce"),
    ("prove backdoor_free(q, x0, target=3, image=[8, 8])", "backdoor_free",
     "backdoor_free needs size=[h, w], the patch's height and width in pixels"),
    ("prove backdoor_free(q, x0, " + ARGS + ", label=3)", "label",
     "unknown item 'label' for backdoor_free; expected one of target, size, values, image, at"),
    ("prove backdoor_free(q, x0, " + ARGS + ", target=4)", "target=4", "item 'target' is already set on line 3"),
    ("prove backdoor_free(q, x0, target=3, size=[2, 2] real, image=[8, 8])", "[2, 2] real",
     "'real' applies to values only; size is a whole number of pixels"),
    ("prove backdoor_free(q, x0, target=3, size=[0, 2], image=[8, 8])", "0, 2",
     "the values of size must be whole numbers >= 1"),
    ("prove backdoor_free(q, x0, target=3, size=2, image=[8, 8])", "2, image", "size takes [h, w]"),
    ("prove backdoor_free(q, x0, " + ARGS + ") under bitflips(k=1, params=q.weights)", "under",
     "bit flips apply to robust, targeted and linear properties, not to backdoor_free"),
])
def test_spec_errors_point_at_the_offending_item(statement, marker, message):
    header = f'network q = onnx "{DIGITS}/digits_q8.onnx"\nlet x0 = sample "{DIGITS}/test.npz" index 0\n'
    with pytest.raises(SpecError) as caught:
        compile_text(header + statement + "\n", "specs/example.qspec")
    error = caught.value
    assert (error.line, error.column, error.message) == (3, statement.index(marker) + 1, message)
    assert str(error) == f"specs/example.qspec:3:{error.column}: error: {message}"


def test_a_bad_statement_is_exit_code_2_with_its_position(capsys, tmp_path):
    path = tmp_path / "bad.qspec"
    statement = "prove backdoor_free(q, x0, target=3, size=[2, 2], image=[8, 8], at=[0, 7])"
    path.write_text(f'network q = onnx "{DIGITS}/digits_q8.onnx"\nlet x0 = sample "{DIGITS}/test.npz" index 0\n'
                    f"{statement}\n")
    code, _, err = run(capsys, "prove", path)
    column = statement.index("[0, 7]") + 1
    assert code == EXIT_INPUT and f"{path}:3:{column}: error: a 2 x 2 patch on the 8 x 8 image" in err
    assert err.rstrip().endswith(statement + "\n" + " " * (column - 1) + "^")

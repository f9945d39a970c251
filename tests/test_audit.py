"""`bitqnn audit`: the shipped example end to end (store, summary, HTML report), resuming,
parallel workers, fingerprints that reject stale rows, and errors in the audit statement."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bitqnn import audit as audit_module
from bitqnn.audit import plan
from bitqnn.audit_report import heat_map
from bitqnn.audit_store import load_rows
from bitqnn.audit_summary import parse_flip
from bitqnn.cli import main
from bitqnn.spec import SpecError, compile_file, compile_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "digits_audit.qspec"
SAMPLES, BUDGET = range(12), 3  # as the example spec says: index 0..11, k=3
MODEL = (REPO / "examples" / "digits" / "digits_q8.onnx").as_posix()
DATA = (REPO / "examples" / "digits" / "test.npz").as_posix()


def run(*args: str) -> tuple[int, str, str]:
    """The command's exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def audit(folder: Path, *extra: str) -> tuple[int, str, str]:
    """The example audited with its store and report in `folder`."""
    return run("audit", str(SPEC), "--store", str(folder / "audit.jsonl"), "--html", str(folder / "audit.html"),
               *extra)


def stored(folder: Path) -> dict[tuple[int, int], dict]:
    """The store's rows by (sample, k), read as plain JSON."""
    lines = (folder / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return {(row["sample"], row["k"]): row for row in rows}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Path, int, str]:
    """The example audited once, in this process (--jobs 1)."""
    folder = tmp_path_factory.mktemp("audit")
    code, out, _ = audit(folder, "--jobs", "1")
    return folder, code, out


def without_times(summary: str) -> str:
    return re.sub(r"\d+\.\d+s", "-", summary)


def count_calls(monkeypatch) -> list[str]:
    """Every verification the runner makes from now on, by label (in this process)."""
    calls: list[str] = []
    real = audit_module.verify_fault

    def counted(fq, engine, timeout):
        calls.append(fq.label)
        return real(fq, engine, timeout)

    monkeypatch.setattr(audit_module, "verify_fault", counted)
    return calls


# ---- the example, end to end ----


def test_store_has_one_line_per_sample_and_k(done):
    folder, _, _ = done
    lines = (folder / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(SAMPLES) * BUDGET
    assert set(stored(folder)) == {(s, k) for s in SAMPLES for k in range(1, BUDGET + 1)}
    assert len({json.loads(line)["key"] for line in lines}) == len(lines)


def test_verdicts_are_monotone_in_k_and_counterexamples_fit_the_fault_model(done):
    folder, code, _ = done
    rows = stored(folder)
    verdicts = {row["verdict"] for row in rows.values()}
    assert verdicts <= {"proved", "falsified"} and "falsified" in verdicts
    assert code == 10  # some sample is vulnerable
    for sample in SAMPLES:
        broken = [rows[sample, k]["verdict"] == "falsified" for k in range(1, BUDGET + 1)]
        assert broken == sorted(broken)  # a fault within budget k is within every larger budget
        for k in range(1, BUDGET + 1):
            flips = [parse_flip(text) for text in rows[sample, k]["flips"]]
            assert bool(flips) == broken[k - 1]  # radius 0 at the network's own decision: clean is robust
            assert len(flips) <= k and len({f.parameter for f in flips}) <= 1  # scope=one
            assert all(f.kind == "weights" and 0 <= f.bit <= 5 for f in flips)
            if k > 1 and broken[k - 2]:  # answered from k - 1 without solving
                before, row = rows[sample, k - 1], rows[sample, k]
                assert (row["engine"], row["seconds"], row["flips"]) == ("inferred", 0.0, before["flips"])
            else:
                assert rows[sample, k]["engine"].startswith("faults-")


def test_summary_counts_each_k(done):
    folder, _, out = done
    rows = stored(folder)
    time = r"([\d.]+s|-)"
    table = re.findall(rf"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+{time}\s+{time}$", out, flags=re.MULTILINE)
    assert [int(line[0]) for line in table] == [1, 2, 3]
    for line in table:
        k, samples, resilient, vulnerable, unknown = map(int, line[:5])
        verdicts = [rows[s, k]["verdict"] for s in SAMPLES]
        assert (samples, resilient, vulnerable, unknown) == (
            len(SAMPLES), verdicts.count("proved"), verdicts.count("falsified"), 0)
        solved = [rows[s, k]["seconds"] for s in SAMPLES if rows[s, k]["engine"] != "inferred"]
        assert line[6] == f"{max(solved):.2f}s"  # an inferred row is no query: it has no time to count
    assert "most vulnerable parameters" in out and "layers[" in out


def test_report_has_three_plots_and_a_row_per_sample_and_k(done):
    folder, _, _ = done
    page = (folder / "audit.html").read_text(encoding="utf-8")
    images = re.findall(r'<img class="(\w+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert [name for name, _ in images] == ["resilience", "heatmap", "times"]
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for _, data in images)
    rows = re.findall(r'<tr class="(\w+)" data-sample="(\d+)" data-k="(\d+)">', page)
    assert sorted((int(s), int(k)) for _, s, k in rows) == [(s, k) for s in SAMPLES for k in range(1, BUDGET + 1)]
    want = {(s, k): {"proved": "resilient", "falsified": "vulnerable"}[row["verdict"]]
            for (s, k), row in stored(folder).items()}
    assert {(int(s), int(k)): word for word, s, k in rows} == want


def test_heat_map_counts_the_flipped_bits_of_each_layer(done):
    folder, _, _ = done
    (audit_stmt,) = compile_file(SPEC).audits
    tasks, (run_,) = plan([audit_stmt], load_rows(folder / "audit.jsonl"), None)
    assert not tasks
    names, counts = heat_map(run_)
    assert names == ["layers[0].weights", "layers[1].weights", "layers[2].weights"]
    assert counts.shape == (3, 6)  # bits=[0, 1, 2, 3, 4, 5]
    want = {}
    for row in stored(folder).values():
        if row["engine"] == "inferred":
            continue  # the counterexample of a smaller k again
        for layer, bit in {(f.layer, f.bit) for f in map(parse_flip, row["flips"])}:
            want[layer, bit] = want.get((layer, bit), 0) + 1
    assert {(r, b): int(v) for (r, b), v in np.ndenumerate(counts) if v} == want


# ---- resuming ----


def test_a_finished_audit_reruns_without_solving(done, monkeypatch, tmp_path):
    folder, code, out = done
    shutil.copy(folder / "audit.jsonl", tmp_path / "audit.jsonl")
    calls = count_calls(monkeypatch)
    again = audit(tmp_path)  # default --jobs: nothing is left to ask, so no worker starts either
    assert calls == []
    assert again[:2] == (code, out)
    assert f"{len(SAMPLES) * BUDGET} from the store" in again[2]


def test_an_interrupted_audit_resumes_where_it_stopped(done, monkeypatch, tmp_path):
    folder, code, out = done
    lines = (folder / "audit.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "audit.jsonl").write_text("".join(lines[:5]) + lines[5][:30], encoding="utf-8")  # cut mid-line
    calls = count_calls(monkeypatch)
    again, summary, _ = audit(tmp_path, "--jobs", "1")
    assert (again, without_times(summary)) == (code, without_times(out))  # the new answers took their own time
    assert len(calls) == sum(json.loads(line)["engine"] != "inferred" for line in lines[5:])
    verdicts = {(row.sample, row.k): row.verdict for row in load_rows(tmp_path / "audit.jsonl").values()}
    assert verdicts == {key: row["verdict"] for key, row in stored(folder).items()}


def test_parallel_workers_give_the_same_verdicts(done, tmp_path):
    folder, code, _ = done
    assert audit(tmp_path, "--jobs", "2")[0] == code
    serial, parallel = stored(folder), stored(tmp_path)
    assert {key: (row["verdict"], row["key"]) for key, row in parallel.items()} == {
        key: (row["verdict"], row["key"]) for key, row in serial.items()}


# ---- fingerprints ----


def write_spec(folder: Path, body: str, model: str = MODEL) -> Path:
    """A spec in `folder` whose first line loads `model` as q."""
    path = folder / "a.qspec"
    path.write_text(f'network q = onnx "{model}"\n{body}', encoding="utf-8")
    return path


AUDIT = (f'audit robust(q, radius=0) over sample "{DATA}" index 0..11\n'
         "    under bitflips(k=3, params=q.weights, bits=[0, 1, 2, 3, 4, 5], scope=one)\n    with timeout=60\n")


@pytest.mark.parametrize(("body", "new"), [
    ("# a comment moves the statement down a line\n" + AUDIT, 0),
    (AUDIT.replace("index 0..11", "index 0..12"), 3),  # one more sample, at k = 1, 2, 3
    (AUDIT.replace("radius=0", "radius=1"), 36),
    (AUDIT.replace("bits=[0, 1, 2, 3, 4, 5]", "bits=[0, 1, 2, 3, 4]"), 36),
    (AUDIT.replace("scope=one", "scope=any"), 36),
    (AUDIT.replace("timeout=60", "timeout=30"), 36),
    (AUDIT.replace("timeout=60", "timeout=60, engine=cpsat"), 36),
])
def test_only_answers_to_the_same_question_are_reused(done, tmp_path, body, new):
    folder, _, _ = done
    (audit_stmt,) = compile_file(write_spec(tmp_path, body)).audits
    tasks, _ = plan([audit_stmt], load_rows(folder / "audit.jsonl"), None)
    assert len(tasks) == new


def test_the_timeout_flag_and_the_network_are_part_of_the_fingerprint(done, tmp_path):
    folder, _, _ = done
    rows = load_rows(folder / "audit.jsonl")
    (audit_stmt,) = compile_file(SPEC).audits
    assert len(plan([audit_stmt], rows, 30)[0]) == 36
    small = (REPO / "examples" / "digits" / "digits_small_q8.onnx").as_posix()
    (other,) = compile_file(write_spec(tmp_path, AUDIT, small)).audits
    assert len(plan([other], rows, None)[0]) == 36


# ---- the language and the command line ----


def test_prove_skips_audits_and_check_lists_them(tmp_path):
    path = write_spec(tmp_path, f'let x = sample "{DATA}" index 3\nprove robust(q, linf(x, 0))\n' + AUDIT)
    (obligation,) = compile_spec(path)
    assert obligation.kind == "robust"
    code, out, _ = run("check", str(path))
    assert code == 0
    assert "ok  audit @ " in out and "12 samples, k = 1..3, engine auto, timeout 60s" in out
    assert out.strip().endswith("1 property, 1 audit checked")
    code, out, err = run("prove", str(path))
    assert code == 0 and "1 proved, 0 falsified, 0 unknown" in out
    assert f"skipping 1 audit statement: run bitqnn audit {path}" in err


def test_the_documented_audit_runs(tmp_path):
    """Saved as specs/example.qspec, as docs/qspec.md asks, and run with bitqnn audit."""
    text = (REPO / "docs" / "qspec.md").read_text(encoding="utf-8")
    (example,) = [e for e in re.findall(r"```qspec\n(.*?)```", text, flags=re.DOTALL) if "\naudit " in e]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "example.qspec"
    spec.write_text(example, encoding="utf-8")
    code, out, _ = run("audit", str(spec), "--jobs", "1")
    assert code == 10  # bits=all: flipping a weight's sign bit changes some decision
    assert re.search(r"^\s+2\s+6\s+\d+\s+\d+\s+0\s", out, flags=re.MULTILINE)
    assert len(spec.with_suffix(".audit.jsonl").read_text(encoding="utf-8").splitlines()) == 6 * 2
    assert spec.with_suffix(".audit.html").read_text(encoding="utf-8").count("data:image/png;base64,") == 3


def test_audit_needs_an_audit_statement_and_sane_flags(tmp_path):
    path = write_spec(tmp_path, f'prove robust(q, linf(sample "{DATA}" index 3, 0))\n')
    code, _, err = run("audit", str(path))
    assert code == 2 and "no audit statement" in err
    assert run("audit", str(SPEC), "--jobs", "0")[0] == 2
    assert run("audit", str(SPEC), "--timeout", "0")[0] == 2


INDEX = f'audit robust(q, radius=0) over sample "{DATA}" index '


@pytest.mark.parametrize(("line", "blamed", "message"), [
    (INDEX + "0..500 under bitflips(k=1, params=q.weights)", "500",
     "holds 397 samples, so index must be a whole number from 0 to 396"),
    (INDEX + "5..2 under bitflips(k=1, params=q.weights)", "2 under",
     "the index range 5..2 holds no sample; write A..B with A <= B"),
    (INDEX + "0..2 under bitflips(k=0, params=q.weights)", "0, params",
     "k must be a whole number >= 1, not 0"),
    (INDEX + "0..2 under bitflips(k=1, params=q.layers[3].weights)", "3]",
     "'q' has weighted layers 0 to 2; there is no layers[3]"),
    (INDEX.replace("radius=0", "radius=-1") + "0..2 under bitflips(k=1, params=q.weights)", "-1",
     "the radius must not be negative"),
    (INDEX + "0..2 under bitflips(k=1, params=q.weights) with engine=bounds", "bounds",
     "engine must be one of auto, cpsat, milp, smt, enumerate, not bounds"),
    (INDEX + "0..2 under bitflips(k=1, params=q.weights) with label=3", "label",
     "unknown option 'label' for audit; expected one of timeout, engine, tiebreak"),
    (INDEX.replace("robust(q", "robust(f") + "0..2 under bitflips(k=1, params=f.weights)", "f,",
     "'f' is a float network; audit needs a quantized one"),
    (INDEX + "0 under bitflips(k=1, params=q.weights)", "under", "unexpected 'under'; expected '..'"),
])
def test_audit_errors_name_file_line_and_column(tmp_path, line, blamed, message):
    digits = (REPO / "examples" / "digits" / "digits.onnx").as_posix()
    path = write_spec(tmp_path, f'network f = onnx "{digits}"\n{line}\n')
    with pytest.raises(SpecError) as caught:
        compile_file(path)
    error = caught.value
    assert (error.file, error.line, error.column) == (str(path), 3, line.index(blamed) + 1)
    assert message in error.message

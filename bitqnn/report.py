"""Rendering results: a table for people, JSON for programs, VNN-COMP files for tools."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bitqnn.outcome import Verdict
from bitqnn.verify import Result, summarize

VERDICT_WORDS = {Verdict.PROVED: "PROVED", Verdict.FALSIFIED: "FALSIFIED", Verdict.UNKNOWN: "UNKNOWN"}


def _detail(result: Result) -> str:
    if "proven" in result.stats or "witnessed" in result.stats:  # an error bound: the numbers are the answer
        return result.reason
    if result.verdict is Verdict.FALSIFIED:
        where = "reference executor" + (" and onnxruntime" if result.onnxruntime_checked else "")
        found = "trigger patch" if result.patch is not None else "counterexample"
        return f"{found} replayed on the {where}; outputs {result.outputs}"
    if result.verdict is Verdict.UNKNOWN:
        return result.reason
    stats = result.stats
    if "locations" in stats:
        return f"every patch location ({stats['locations']}) proved, {stats['patches_per_location']} patches each"
    if "candidate_flips" in stats:
        pruned = stats["candidate_flips"] - stats["remaining_flips"]
        return (f"{stats['fault_model']}: {pruned} of {stats['candidate_flips']} candidate flips pruned, "
                f"{stats['remaining_flips']} decided exactly")
    if "terms_after_bounds" in stats:
        by_bounds = f"{stats['terms'] - stats['terms_after_bounds']} of {stats['terms']} cases by bounds"
        # a proof from SCIP is not bit-exact: say what it rests on
        if stats.get("tolerance") and stats["terms_after_bounds"]:
            return f"{by_bounds}; the rest by {stats['tolerance']}"
        return by_bounds
    return ""


def table(results: list[Result], semantics: list[str]) -> str:
    rows = [("property", "verdict", "time", "engine", "detail")]
    for result in results:
        rows.append((result.label, VERDICT_WORDS[result.verdict], f"{result.seconds:.2f}s",
                     result.engine, _detail(result)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
    counts = summarize(results)
    lines.append("")
    lines.append(", ".join(f"{n} {word.lower()}" for word, n in counts.items()))
    for line in sorted(set(semantics)):
        lines.append(f"semantics: {line}")
    for result in results:
        if result.witness is not None and (result.verdict is Verdict.FALSIFIED or "witnessed" in result.stats):
            lines.append(f"{'counterexample' if result.verdict is Verdict.FALSIFIED else 'largest error'} "
                         f"for {result.label}:")
            lines.append(f"  input (integers): {result.witness}")
            if result.patch is not None:
                patch, (h, w) = result.patch, result.patch["size"]
                real = [[[round(v, 6) for v in row] for row in channel] for channel in patch["values_real"]]
                lines.append(f"  trigger patch {h} x {w} at [row, column] {patch['at']}, "
                             f"pixels [channel][row][column]: integers {patch['values']}, real {real}")
            if result.flips is not None:
                lines.append("  flipped bits: " + ("; ".join(result.flips) or "none (fails on the clean network)"))
            if "witnessed" in result.stats:
                lines.append(f"  error per output (QNN - float, replayed in float64): {result.outputs_real}")
    return "\n".join(lines)


def to_json(results: list[Result], semantics: list[str]) -> str:
    payload = {"summary": summarize(results), "semantics": sorted(set(semantics)),
               "results": [dict(asdict(r), verdict=r.verdict.value) for r in results]}
    return json.dumps(payload, indent=2)


def write_vnncomp(results: list[Result], folder: Path) -> list[Path]:
    """One file per property: 'sat' with ((X_i v) ... (Y_j v)), 'unsat', or 'unknown'/'timeout'."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, result in enumerate(results, start=1):
        if result.verdict is Verdict.PROVED:
            text = "unsat\n"
        elif result.verdict is Verdict.UNKNOWN:
            text = ("timeout" if "timeout" in result.reason else "unknown") + "\n"
        else:
            pairs = [f"(X_{i} {v!r})" for i, v in enumerate(result.witness_real)]
            pairs += [f"(Y_{j} {v!r})" for j, v in enumerate(result.outputs_real)]
            text = "sat\n(" + "\n".join(pairs) + ")\n"
        path = folder / f"property_{number}.txt"
        path.write_text(text)
        written.append(path)
    return written

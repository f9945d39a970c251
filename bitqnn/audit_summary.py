"""Reading audit answers back: per-k verdict counts and times, and the parameters whose
flipped bits the counterexamples share.

Kept apart from planning and running so that the terminal summary and the HTML report
(`audit_report`) read stored rows the same way, without depending on how they were answered.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bitqnn.audit_store import INFERRED, Row
from bitqnn.outcome import Verdict

if TYPE_CHECKING:  # bitqnn.audit imports this module to print the summary
    from bitqnn.audit import AuditRun

# what a verdict means for one sample under one budget k
WORDS = {Verdict.PROVED.value: "resilient", Verdict.FALSIFIED.value: "vulnerable", Verdict.UNKNOWN.value: "unknown"}


# ---- flipped bits, as `Flip.describe` writes them ----

_FLIP = re.compile(r"layers\[(\d+)\]\.(weights|biases)(\[[\d, ]+\]) bit (\d+):")


@dataclass(frozen=True)
class FlipRef:
    """One flipped bit of a counterexample: weighted layer, weights or biases, index, bit."""

    layer: int
    kind: str
    index: str
    bit: int

    @property
    def parameter(self) -> str:
        return f"layers[{self.layer}].{self.kind}{self.index}"


def parse_flip(text: str) -> FlipRef:
    """Read back `Result.flips` text such as 'layers[1].weights[15, 6] bit 7: stored -9 -> 119'."""
    match = _FLIP.match(text)
    if match is None:
        raise ValueError(f"not a flipped bit: {text!r}")
    layer, kind, index, bit = match.groups()
    return FlipRef(int(layer), kind, index, int(bit))


# ---- the summary ----


@dataclass(frozen=True)
class BudgetLine:
    """One budget k over all samples: how many are resilient, vulnerable and unknown, and the
    times of the queries solved for it (an inferred row took none, and is no query)."""

    k: int
    counts: Counter
    seconds: tuple[float, ...]

    def times(self) -> tuple[str, str]:
        """The median and the longest time as printed; '-' when every row was inferred."""
        if not self.seconds:
            return "-", "-"
        return f"{statistics.median(self.seconds):.2f}s", f"{max(self.seconds):.2f}s"


def by_budget(run: AuditRun) -> list[BudgetLine]:
    lines = []
    for k in range(1, run.budget + 1):
        rows = [run.rows[sample, k] for sample in run.audit.samples]
        seconds = tuple(row.seconds for row in rows if row.engine != INFERRED)
        lines.append(BudgetLine(k, Counter(WORDS[row.verdict] for row in rows), seconds))
    return lines


def found(rows: Iterable[Row]) -> list[list[FlipRef]]:
    """The flips of each counterexample found by an engine; an inferred row repeats one of
    them, so counting it again would weigh a sample by how many budgets follow its first."""
    return [[parse_flip(text) for text in row.flips] for row in rows if row.flips and row.engine != INFERRED]


def vulnerable_parameters(rows: Iterable[Row]) -> list[tuple[str, int, list[int]]]:
    """(parameter, counterexamples that flip it, its flipped bit positions), most often flipped first."""
    counts: Counter = Counter()
    bits: dict[str, set[int]] = {}
    for flips in found(rows):
        for parameter in {flip.parameter for flip in flips}:
            counts[parameter] += 1
        for flip in flips:
            bits.setdefault(flip.parameter, set()).add(flip.bit)
    return [(parameter, count, sorted(bits[parameter])) for parameter, count in counts.most_common()]


def summary(run: AuditRun, top: int = 5) -> str:
    """The terminal table: per k, the verdict counts and times; then the weakest parameters."""
    header = ("k", "samples", "resilient", "vulnerable", "unknown", "median time", "max time")
    table = [header] + [(str(line.k), str(sum(line.counts.values())), str(line.counts["resilient"]),
                         str(line.counts["vulnerable"]), str(line.counts["unknown"]), *line.times())
                        for line in by_budget(run)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"{run.audit.text} @ {run.where}"]
    lines += ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in table]
    weakest = vulnerable_parameters(run.rows.values())[:top]
    if weakest:
        lines.append("most vulnerable parameters (counterexamples that flip them; bits flipped):")
        lines += [f"  {parameter}  {count}; bits {', '.join(map(str, bits))}" for parameter, count, bits in weakest]
    clean = sorted({row.sample for row in run.rows.values() if row.verdict == Verdict.FALSIFIED.value
                    and not row.flips})
    if clean:
        lines.append(f"not robust without any flip: sample{'s' if len(clean) > 1 else ''} {', '.join(map(str, clean))}")
    return "\n".join(lines)

"""Splitting a query into pieces that can be solved apart, and merging their answers soundly.

A robustness query is a disjunction: some competing class beats the label. Each class is
a query of its own on the same box, and the query holds exactly when every one of them
does, so the pieces run in parallel and a counterexample to any piece refutes the whole.
The box can be cut too: halving the inputs whose ranges move the symbolic bounds most
gives sub-boxes that together cover the box. Measured on the Fashion-MNIST benchmark,
cutting a 784-input box barely moves the bounds (40 s of best-first halving took image
0's radius-2 bound from 55.2 to 54.2), so region pieces are for boxes with few inputs
that matter; competing classes are the default split.

The merge is the one place soundness lives: PROVED only when every piece is PROVED,
FALSIFIED when any piece is (its witness lies in the piece's box, inside the query's
box, and violates one of the query's own terms), UNKNOWN otherwise.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Box, Query, Violation
from bitqnn.symbolic import SymbolicAnalysis

SPLITS = ("class", "none")


@dataclass(frozen=True)
class Plan:
    """A query's pieces, or the outcome the bounds already give (no piece left to solve)."""

    pieces: tuple[Query, ...]
    settled: Outcome | None = None


def plan_pieces(query: Query, split: str = "class", region_pieces: int = 1) -> Plan:
    """Pieces for `query`: one per competing class the bounds leave open (split="class"),
    each cut into up to `region_pieces` sub-boxes; bounds-proved pieces are dropped."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    analysis = SymbolicAnalysis(query.network, query.region)
    violation, trivially_violated = analysis.prune(query.violation)
    if trivially_violated:  # any point is a witness; the engine finds and replays one
        return Plan((query,))
    if not violation.terms:
        return Plan((), Outcome(Verdict.PROVED, "bounds", 0.0, stats={"pieces": 0}))
    if split == "class":
        bases = [Query(query.network, query.region, Violation((term,)), f"{query.label} [{_class_name(term)}]",
                       query.options) for term in violation.terms]
    else:
        bases = [Query(query.network, query.region, violation, query.label, query.options)]
    pieces = [piece for base in bases
              for piece in (_cut_region(base, analysis, region_pieces) if region_pieces > 1 else [base])]
    if not pieces:  # every sub-box was proved by its own bounds
        return Plan((), Outcome(Verdict.PROVED, "bounds", 0.0, stats={"pieces": 0}))
    return Plan(tuple(pieces))


def _class_name(term) -> str:
    return " and ".join(atom.describe() for atom in term)


def _cut_region(query: Query, analysis: SymbolicAnalysis, count: int) -> list[Query]:
    """Best-first halving of the open sub-box with the highest bound, across its most
    influential input, until `count` sub-boxes exist; sub-boxes the bounds prove are dropped."""
    if len(query.violation.terms) != 1 or len(query.violation.terms[0]) != 1:
        return [query]  # one atom's bounds guide the cuts
    atom = query.violation.terms[0][0]
    influence = analysis.input_influence(atom.terms)
    if influence is None:
        return [query]
    heap: list[tuple[int, int, Box, np.ndarray]] = [(0, 0, query.region, influence)]
    points: list[tuple[int, int, Box, np.ndarray]] = []  # single points: nothing left to cut
    counter = 1
    while heap and len(heap) + len(points) < count:
        entry = heapq.heappop(heap)
        box, weights = entry[2], entry[3]
        widths = box.hi - box.lo
        if not np.any(widths > 0):
            points.append(entry)
            continue
        dim = int(np.argmax(np.where(widths > 0, weights + 1e-12, -1.0)))
        middle = (box.lo[dim] + box.hi[dim]) // 2
        lower_hi, upper_lo = box.hi.copy(), box.lo.copy()
        lower_hi[dim], upper_lo[dim] = middle, middle + 1
        for half in (Box(box.lo, lower_hi), Box(upper_lo, box.hi)):
            sub = SymbolicAnalysis(query.network, half)
            _, high = sub.output_range(atom.terms)
            if high < atom.bound:
                continue  # this half is proved by its bounds alone
            counter += 1
            heapq.heappush(heap, (-high, counter, half, sub.input_influence(atom.terms)))
    kept = sorted(heap + points, key=lambda item: item[1])
    return [Query(query.network, box, query.violation, f"{query.label} (box {n + 1})", query.options)
            for n, (_, _, box, _) in enumerate(kept)]


def merge(engine: str, outcomes: list[Outcome], seconds: float) -> Outcome:
    """One outcome for a query from its pieces' outcomes (in piece order)."""
    stats = {"pieces": len(outcomes)}
    for outcome in outcomes:
        if outcome.verdict is Verdict.FALSIFIED:
            return Outcome(Verdict.FALSIFIED, outcome.engine, seconds, witness=outcome.witness,
                           stats={**stats, **outcome.stats})
    open_reasons = [o.reason for o in outcomes if o.verdict is Verdict.UNKNOWN]
    if open_reasons:
        return Outcome.unknown(engine, seconds, f"{len(open_reasons)} of {len(outcomes)} pieces open: "
                               f"{open_reasons[0]}", **stats)
    if len({o.engine for o in outcomes}) == 1:
        return Outcome(Verdict.PROVED, outcomes[0].engine, seconds, stats=stats)
    deciders = sorted({o.engine.split(":")[-1] for o in outcomes})
    return Outcome(Verdict.PROVED, f"{engine}:{'+'.join(deciders)}", seconds, stats=stats)

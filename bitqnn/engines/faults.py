"""Deciding a property under bit flips: clean proof, pruning, then an exact stage.

The order matters for speed and for what a verdict means. A property that fails with
no flip at all fails under every fault model, so the clean network is decided first
(and a clean UNKNOWN leaves nothing to prove). Pruning then removes the flips that
provably cannot matter, and only the rest reach an exact stage:

* a single input point under scope "one": every remaining flipped value is evaluated on
  the exact executor, grouped by the neuron output it produces, which is complete (and
  cheaper than pruning's symbolic pass, so that pass is skipped there);
* up to a few hundred remaining flip sets: first the symbolic bounds of each faulty
  network on its own (`fault_prune.screen`), which settle most of them;
* a handful of remaining flip sets: each faulty network as a plain query, full pipeline;
* otherwise exact models with a boolean per remaining flip, one per neuron when a fault
  can only touch one parameter: CP-SAT's (`encode/cpsat_faults.py`) and SCIP's
  (`encode/milp_faults.py`) race on each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from ortools.sat.python import cp_model

from bitqnn.bounds import NetworkBounds
from bitqnn.encode.cpsat_faults import encode_fault_term
from bitqnn.engines.attack import AttackEngine
from bitqnn.engines.cpsat import input_values, solve_model
from bitqnn.engines.milp_faults import milp_group_term
from bitqnn.engines.portfolio import race
from bitqnn.engines.registry import make_engine
from bitqnn.engines.stop import StopSignal
from bitqnn.fault_perturb import PruningTimeout
from bitqnn.fault_prune import Pruning, group_bounds, prune, screen
from bitqnn.faults import (
    Candidates,
    FaultModel,
    FaultQuery,
    Flip,
    candidates,
    flipped_values,
)
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, AccumulatorOverflow, Dense, apply_accumulator_policy, run_layer
from bitqnn.query import Query, Violation
from bitqnn.symbolic import analysis_of

CLEAN_SHARE = 0.5  # at most this part of the timeout goes to the clean network
PER_PATTERN_LIMIT = 32  # up to this many remaining flip sets are decided one faulty network at a time
SCREEN_LIMIT = 256  # up to this many remaining flip sets are each screened by their own symbolic bounds ...
SCREEN_SHARE = 0.5  # ... in at most this part of the time left
ATTACK_SECONDS = 0.5  # a gradient attack on each faulty network before the first long proof
# seconds of CP-SAT alone (both workers) on a group's term before CP-SAT and SCIP race on it:
# racing from the start built two models per term and, on 3x100 MNIST (image 8, radius 2,
# k = 1, 120 s), settled 16 of 91 groups where CP-SAT alone settled 28 and SCIP alone 26
GROUP_FIRST_TRY = 2.0


@dataclass(frozen=True)
class FaultOutcome:
    """An engine's answer under faults; a FALSIFIED one names its input and its flips
    (no flips: the property fails on the clean network already)."""

    verdict: Verdict
    engine: str
    seconds: float
    reason: str = ""
    witness: np.ndarray | None = None
    flips: tuple[Flip, ...] = ()
    stats: dict = field(default_factory=dict)


GroupAnswer = tuple[Verdict, np.ndarray | None, tuple[Flip, ...]]  # with the witness and its flips


class FaultEngine:
    """`auto`: the staged pipeline above, with CP-SAT's and SCIP's encodings racing on each
    group; `cpsat` and `milp`: clean proof and pruning, then always that solver's integer
    encoding, so that each encoding itself is what the cross-checks test."""

    GROUP_SOLVERS = {"auto": "race", "cpsat": "cpsat", "milp": "milp"}

    def __init__(self, name: str = "auto") -> None:
        self.name = f"faults-{name}"
        self.shortcuts = name == "auto"  # point evaluation and per-flip queries; the others are the pure encodings
        self.group_solver = self.GROUP_SOLVERS[name]
        self.clean = make_engine("auto" if name == "auto" else name)
        # its own seed: `auto` runs a gradient attack of the same length with the default one
        self.attack = AttackEngine(budget=ATTACK_SECONDS, phases=("gradient",), seed=1)

    def solve(self, fq: FaultQuery, timeout: float) -> FaultOutcome:
        start = time.perf_counter()
        query = fq.query
        clean = self.clean.solve(query, timeout * CLEAN_SHARE)
        stats: dict = {"clean": clean.verdict.value}
        if clean.verdict is Verdict.FALSIFIED:
            return FaultOutcome(Verdict.FALSIFIED, f"{self.name}:{clean.engine}", time.perf_counter() - start,
                                "fails without any flip", clean.witness, (), stats)
        if clean.verdict is Verdict.UNKNOWN:
            return FaultOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start,
                                f"not proved even without flips ({clean.reason})", stats=stats)
        cands = candidates(query.network, fq.model)
        blocker = _unsupported_after_fault(query.network, cands)
        if blocker:
            return FaultOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start, blocker, stats=stats)
        region = query.region
        at_point = self.shortcuts and fq.model.scope == "one" and np.array_equal(region.lo, region.hi)
        pruning_began = time.perf_counter()
        try:  # at a point the search below is complete and cheaper than the symbolic pass
            pruning = prune(query, analysis_of(query), cands, fq.model, deadline=start + timeout,
                            symbolic=not at_point)
        except PruningTimeout as late:
            return FaultOutcome(Verdict.UNKNOWN, f"{self.name}:pruning", time.perf_counter() - start, str(late),
                                stats=stats)
        stats.update(candidate_flips=pruning.rows, parameters=pruning.parameters,
                     pruned_invariant=pruning.pruned_invariant, pruned_tolerance=pruning.pruned_tolerance,
                     pruned_symbolic=pruning.pruned_symbolic,
                     remaining_flips=len(pruning.remaining), remaining_parameters=pruning.remaining.parameters,
                     pruning_seconds=round(time.perf_counter() - pruning_began, 1))
        if len(pruning.remaining) == 0:
            return FaultOutcome(Verdict.PROVED, f"{self.name}:pruning", time.perf_counter() - start, stats=stats)
        if at_point:
            engine = f"{self.name}:point"
            try:
                found = point_search(query.network, region.lo, query.violation, pruning.remaining, fq.model)
            except AccumulatorOverflow as overflow:
                return FaultOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start, str(overflow), stats=stats)
            if found is None:
                return FaultOutcome(Verdict.PROVED, engine, time.perf_counter() - start, stats=stats)
            return FaultOutcome(Verdict.FALSIFIED, engine, time.perf_counter() - start, "", region.lo.copy(),
                                found, stats)
        if self.shortcuts:  # screening lists the flip sets only where there are few of them
            left = timeout - (time.perf_counter() - start)
            pruning, unsettled = self._screen(query, fq.model, pruning, time.perf_counter() + left * SCREEN_SHARE,
                                              stats)
            if unsettled == []:
                return FaultOutcome(Verdict.PROVED, f"{self.name}:screen", time.perf_counter() - start, stats=stats)
            if unsettled is not None and len(unsettled) <= PER_PATTERN_LIMIT:
                return self._per_pattern(unsettled, timeout - (time.perf_counter() - start), start, stats)
        return self._groups(query, fq.model, pruning, timeout - (time.perf_counter() - start), start, stats)

    def _screen(self, query: Query, model: FaultModel, pruning: Pruning, deadline: float,
                stats: dict) -> tuple[Pruning, list[tuple[tuple[Flip, ...], Query]] | None]:
        """Each remaining flip set's own symbolic bounds, where there are few sets: the
        candidates left and the sets not settled with their faulty networks' queries
        (None: too many sets, none screened)."""
        screening = screen(query, pruning.remaining, model, SCREEN_LIMIT, deadline)
        if screening is None:
            return pruning, None
        unsettled = [(tuple(pruning.remaining.flip(j) for j in rows), faulty)
                     for rows, faulty in zip(screening.open_sets, screening.open_queries, strict=True)]
        reduced = pruning.remaining.subset(screening.keep)
        stats.update(screened_sets=screening.screened, pruned_screen=len(pruning.remaining) - len(reduced),
                     remaining_flips=len(reduced), remaining_parameters=reduced.parameters)
        return replace(pruning, remaining=reduced), unsettled

    def _per_pattern(self, faults: list[tuple[tuple[Flip, ...], Query]], seconds: float, start: float,
                     stats: dict) -> FaultOutcome:
        """A handful of flip sets: each is a plain query on its faulty network, so it gets the
        full pipeline, symbolic bounds of that very network included. Every network gets a
        short attack first: the sets are decided in turn, and one hard proof early in the
        list would otherwise use up the time of a set that is easy to falsify."""
        engine = f"{self.name}:per-flip"
        deadline = time.perf_counter() + seconds
        stats["exact_groups"] = len(faults)
        for flips, faulty in faults:
            try:
                attacked = self.attack.solve(faulty, min(ATTACK_SECONDS, deadline - time.perf_counter()))
            except AccumulatorOverflow:
                continue  # the full pipeline below reports it
            if attacked.verdict is Verdict.FALSIFIED:
                return FaultOutcome(Verdict.FALSIFIED, f"{engine}:attack", time.perf_counter() - start, "",
                                    attacked.witness, flips, stats)
        for number, (flips, faulty) in enumerate(faults):
            try:
                outcome = self.clean.solve(faulty, deadline - time.perf_counter())
            except AccumulatorOverflow as overflow:
                return FaultOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start, str(overflow), stats=stats)
            if outcome.verdict is Verdict.FALSIFIED:
                return FaultOutcome(Verdict.FALSIFIED, engine, time.perf_counter() - start, "", outcome.witness,
                                    flips, stats)
            if outcome.verdict is Verdict.UNKNOWN:
                return FaultOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start,
                                    f"{outcome.reason} after {number} of {len(faults)} flip sets", stats=stats)
        return FaultOutcome(Verdict.PROVED, engine, time.perf_counter() - start, stats=stats)

    def _groups(self, query: Query, model: FaultModel, pruning: Pruning, seconds: float, start: float,
                stats: dict) -> FaultOutcome:
        """One exact model per group of flips that can act together. With one flipped
        parameter (scope "one", or k = 1) a fault changes one neuron only, so each neuron's
        flips form a separate, much smaller model; under scope "any" all flips share one."""
        engine = f"{self.name}:{self.group_solver}"
        deadline = time.perf_counter() + seconds
        cands = pruning.remaining
        if model.scope == "one" or model.k == 1:
            keys = cands.layer * (1 + int(cands.neuron.max())) + cands.neuron
            groups = [np.flatnonzero(keys == key) for key in np.unique(keys)]
        else:
            groups = [np.arange(len(cands))]
        stats["exact_groups"] = len(groups)
        for number, rows in enumerate(groups):
            part = cands.subset(rows)
            bounds = group_bounds(analysis_of(query), part, model.k)
            overflow = [i for i, b in enumerate(bounds.layers) if b.may_overflow is not None
                        and bool(np.any(b.may_overflow))]
            if overflow:
                return FaultOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start,
                                    f"a flip may overflow an accumulator of layer {overflow[0]}", stats=stats)
            verdict, witness, flips = self._solve_group(query, model, part, bounds, deadline)
            if verdict is Verdict.FALSIFIED:
                return FaultOutcome(Verdict.FALSIFIED, engine, time.perf_counter() - start, "", witness, flips, stats)
            if verdict is Verdict.UNKNOWN:
                return FaultOutcome(Verdict.UNKNOWN, engine, time.perf_counter() - start,
                                    f"timeout after {number} of {len(groups)} flip groups", stats=stats)
        return FaultOutcome(Verdict.PROVED, engine, time.perf_counter() - start, stats=stats)

    def _solve_group(self, query: Query, model: FaultModel, part: Candidates, bounds: NetworkBounds,
                     deadline: float) -> GroupAnswer:
        """Every violation term of one group: CP-SAT's encoding, SCIP's, or (`auto`) a short try
        of CP-SAT's and then the two racing."""
        for term in query.violation.terms:
            left = deadline - time.perf_counter()
            if left <= 0:
                return Verdict.UNKNOWN, None, ()
            if self.group_solver == "race":  # CP-SAT alone first: most terms fall to it at once
                first = cpsat_group_term(query, model, part, bounds, term, min(GROUP_FIRST_TRY, left), workers=2,
                                         stop=StopSignal())
                left = deadline - time.perf_counter()
                answers = [first] if first[0] is not Verdict.UNKNOWN or left <= 0 else race(
                    [partial(cpsat_group_term, query, model, part, bounds, term, left, workers=1),
                     partial(milp_group_term, query, model, part, bounds, term, left)],
                    lambda answer: answer[0] is not Verdict.UNKNOWN)
            elif self.group_solver == "cpsat":
                answers = [cpsat_group_term(query, model, part, bounds, term, left, workers=2, stop=StopSignal())]
            else:
                answers = [milp_group_term(query, model, part, bounds, term, left, StopSignal())]
            decided = [a for a in answers if a is not None and a[0] is not Verdict.UNKNOWN]
            if not decided:
                return Verdict.UNKNOWN, None, ()
            falsified = [a for a in decided if a[0] is Verdict.FALSIFIED]  # a witness outranks a proof
            if falsified:
                return falsified[0]
        return Verdict.PROVED, None, ()


def cpsat_group_term(query: Query, model: FaultModel, part: Candidates, bounds: NetworkBounds,
                     term: tuple, seconds: float, workers: int, stop: StopSignal) -> GroupAnswer:
    """One group and one violation term in CP-SAT (`encode/cpsat_faults.py`)."""
    encoding = encode_fault_term(query.network, bounds, part, model, term)
    objective = sum(c * encoding.outputs[i] for i, c in term[0].terms)
    status, solver = solve_model(encoding.model, seconds, workers=workers, objective=objective, stop=stop)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        flips = tuple(part.flip(j) for j, f in enumerate(encoding.flags) if solver.value(f))
        return Verdict.FALSIFIED, input_values(solver, encoding.inputs), flips
    return (Verdict.PROVED if status == cp_model.INFEASIBLE else Verdict.UNKNOWN), None, ()


def point_search(qnn: QNN, x: np.ndarray, violation: Violation, cands: Candidates,
                 model: FaultModel) -> tuple[Flip, ...] | None:
    """Scope "one" at one input: every flipped value of every candidate parameter, exactly.

    A parameter changes only its own neuron, so each flipped value is summarised by the
    neuron output it produces; each distinct (layer, neuron, output) runs the rest of the
    network once, batched per layer."""
    outputs, accs = [], []
    values = np.asarray(x, dtype=np.int64).reshape(1, -1)
    for index in range(len(qnn.layers)):
        values, acc = run_layer(qnn, index, values)
        outputs.append(values[0])
        accs.append(None if acc is None else acc[0])
    first: dict[tuple[int, int, int], tuple[int, ...]] = {}
    for value_set in flipped_values(cands, model.k):
        rows, deltas, combos = value_set.rows, value_set.deltas, value_set.combos
        j = rows[0]
        index, neuron = int(cands.layer[j]), int(cands.neuron[j])
        layer = qnn.layers[index]
        factor = 1 if cands.bias[j] else int(outputs[index - 1][cands.column[j]] if index else x[cands.column[j]]) \
            - layer.input_zero
        form = qnn.linear_form(index)
        raw = accs[index][neuron] + np.asarray(deltas, dtype=np.int64) * factor
        moved = apply_accumulator_policy(qnn, index, raw[:, None])[:, 0]  # raises where a flip overflows
        new = layer.output(moved, np.full(moved.shape, form.channels[neuron]))
        for value, combo in zip(new.tolist(), combos, strict=True):
            first.setdefault((index, neuron, value), combo)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for index, neuron, value in first:
        if value != outputs[index][neuron]:
            by_layer.setdefault(index, []).append((neuron, value))
    for index, changes in sorted(by_layer.items()):
        batch = np.repeat(outputs[index][None, :], len(changes), axis=0)
        for row, (neuron, value) in enumerate(changes):
            batch[row, neuron] = value
        for later in range(index + 1, len(qnn.layers)):
            batch, _ = run_layer(qnn, later, batch)
        hit = np.flatnonzero(violation.holds(batch))
        if hit.size:
            neuron, value = changes[int(hit[0])]
            return tuple(cands.flip(j) for j in first[(index, neuron, value)])
    return None


def _unsupported_after_fault(qnn: QNN, cands: Candidates) -> str:
    """The fault analyses push differences through dense layers only."""
    if len(cands) == 0:
        return ""
    first = int(cands.layer.min())
    for index in range(first + 1, len(qnn.layers)):
        if not isinstance(qnn.layers[index], Dense):
            return (f"bit flips before a {type(qnn.layers[index]).__name__} layer (layer {index}) are not "
                    "analysed yet: every layer after a faulty one must be dense")
    return ""

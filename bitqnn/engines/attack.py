"""Cheap falsification: search for a counterexample before any exact solving.

Exact engines are slowest exactly where a counterexample exists, and a local search
finds most of those in milliseconds. Four phases, all scored on the exact executor:

1. Gradient: sign steps on the straight-through Jacobian (each requantization treated as
   its local slope, clamps as cut-offs), then greedy single-coordinate moves.
2. LP-guided: the optimum of the network's LP relaxation for one violation term (exact
   per-neuron hulls, `encode.lp`), rounded several ways, then a random walk of small
   moves that accepts ties. The walk is what crosses the plateaus of a quantized network,
   where single moves change nothing; the LP point is what puts it near the steps that
   matter.
3. Neighbourhood (only when asked for): SCIP on small boxes around the best point the
   phases before reached (`engines.neighbourhood`), for counterexamples that no walk
   reaches and that the exact engines find only late.
4. Climb (only when asked for): SCIP maximising the best term's atom over the whole box,
   with the best point reached so far as its first incumbent (`engines.climb`), for the
   counterexamples where the neighbourhoods stall.

It can only ever answer FALSIFIED (with a witness checked on the executor) or UNKNOWN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bitqnn.encode.lp import relaxation_point
from bitqnn.engines.climb import climb
from bitqnn.engines.neighbourhood import atom_value, neighbourhood_search
from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import QNN, Conv2d, Dense, Lookup, MaxPool2d, execute, run_layer
from bitqnn.query import LinearAtom, Query, Violation
from bitqnn.symbolic import analysis_of


def violation_score(violation: Violation, outputs: np.ndarray) -> np.ndarray:
    """How close each output row is to violating: >= 0 exactly when the violation holds."""
    outputs = np.atleast_2d(outputs).astype(np.float64)
    best = np.full(outputs.shape[0], -np.inf)
    for term in violation.terms:
        worst = np.full(outputs.shape[0], np.inf)
        for atom in term:
            lhs = sum(c * outputs[:, i] for i, c in atom.terms)
            worst = np.minimum(worst, lhs - atom.bound)
        best = np.maximum(best, worst)
    return best


def straight_through_jacobian(qnn: QNN, x: np.ndarray) -> np.ndarray:
    """d(outputs)/d(input) at x, with each layer replaced by its local linear behaviour."""
    values = x.reshape(1, -1).astype(np.int64)
    jac = np.eye(values.shape[1])
    for index, layer in enumerate(qnn.layers):
        out, acc = run_layer(qnn, index, values)
        if isinstance(layer, Dense | Conv2d):
            form = qnn.linear_form(index)
            probe = layer.output(acc + 256, form.channels[None, :])
            slope = (probe - out).astype(np.float64)[0] / 256.0
            jac = (form.matrix * slope[:, None]) @ jac
        elif isinstance(layer, MaxPool2d):
            windows = qnn.pool_windows(index)
            padded = np.append(values[0], np.iinfo(np.int64).min)
            jac = jac[windows[np.arange(len(windows)), padded[windows].argmax(axis=1)]]
        elif isinstance(layer, Lookup):
            nxt, _ = run_layer(qnn, index, np.minimum(values + 1, layer.input_lo + layer.table.shape[1] - 1))
            jac = jac * (nxt - out).astype(np.float64)[0][:, None]
        values = out
    return jac


PHASES = ("gradient", "lp", "neighbourhood", "climb")
EARLY_SHARE = 1 / 3  # the share of the budget a phase may use when another phase comes after it


@dataclass
class _Allowance:
    """What a phase may still spend: the query's wall time, this thread's CPU budget, and
    nothing once the race is over. Calling it asks whether the phase is out of time."""

    wall_end: float
    cpu_end: float
    stop: StopSignal

    def left(self) -> float:
        if self.stop.stopped:
            return 0.0
        return min(self.wall_end - time.perf_counter(), self.cpu_end - time.thread_time())

    def __call__(self) -> bool:
        return self.left() <= 0


@dataclass
class _Best:
    """The highest-scoring point any phase has reached, and the term it was scored on:
    where the neighbourhood search starts."""

    score: float = -np.inf
    point: np.ndarray | None = None
    term: Violation | None = None

    def offer(self, score: float, point: np.ndarray, term: Violation) -> None:
        if score > self.score:
            self.score, self.point, self.term = score, point, term


def atom_gradient(atom: LinearAtom, jac: np.ndarray) -> np.ndarray:
    """d(atom's left-hand side)/d(input) from the straight-through Jacobian."""
    return sum(c * jac[i] for i, c in atom.terms)


class AttackEngine:
    name = "attack"

    def __init__(self, budget: float = 2.0, restarts: int = 4, seed: int = 0,
                 phases: tuple[str, ...] = ("gradient", "lp")) -> None:
        unknown = set(phases) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown attack phase {sorted(unknown)[0]!r}")
        self.budget = budget  # CPU seconds of this thread: neither a loaded machine nor racing engines starve it
        self.restarts = restarts
        self.seed = seed
        self.phases = phases

    def solve(self, query: Query, timeout: float, stop: StopSignal | None = None) -> Outcome:
        start = time.perf_counter()
        stop = stop or StopSignal()
        cpu_end = time.thread_time() + self.budget
        rng = np.random.default_rng(self.seed)
        best = _Best()
        evaluations = 0
        for position, name in enumerate(self.phases):
            share = 1.0 if position == len(self.phases) - 1 else EARLY_SHARE  # later phases must get their turn
            allowance = _Allowance(start + timeout, min(cpu_end, time.thread_time() + self.budget * share), stop)
            witness, used = getattr(self, f"_{name}_phase")(query, rng, allowance, best)
            evaluations += used
            if witness is not None:
                return Outcome(Verdict.FALSIFIED, self.name, time.perf_counter() - start,
                               witness=witness, stats={"evaluations": evaluations, "phase": name})
            if stop.stopped or time.perf_counter() - start > timeout or time.thread_time() > cpu_end:
                break
        return Outcome.unknown(self.name, time.perf_counter() - start,
                               "stopped" if stop.stopped else "no counterexample found", evaluations=evaluations)

    def _gradient_phase(self, query: Query, rng: np.random.Generator, out_of_time: _Allowance, best: _Best):
        lo, hi = query.region.lo, query.region.hi
        starts = [np.clip((lo + hi) // 2, lo, hi)] + [rng.integers(lo, hi + 1) for _ in range(self.restarts - 1)]
        evaluations = 0
        for point in starts:
            for term in query.violation.terms:
                witness, used = self._descend(query, Violation((term,)), point, out_of_time, best)
                evaluations += used
                if witness is not None or out_of_time():
                    return witness, evaluations
        return None, evaluations

    def _lp_phase(self, query: Query, rng: np.random.Generator, out_of_time: _Allowance, best: _Best):
        """Walk from rounded LP optima, one violation term at a time, most promising first."""
        analysis = analysis_of(query)
        violation, _ = analysis.prune(query.violation)
        evaluations = 0
        lo, hi = query.region.lo, query.region.hi
        for term in violation.terms:
            if len(term) != 1 or out_of_time():
                continue  # a conjunction of atoms has no single objective to aim at
            point = relaxation_point(query.network, analysis.bounds, term[0].terms, self.budget, out_of_time.stop)
            if point is None:
                continue
            for rounding in range(self.restarts):
                jitter = 0.5 if rounding == 0 else rng.random(point.shape)  # nearest, then randomized
                start = np.clip(np.floor(point + jitter).astype(np.int64), lo, hi)
                witness, used = self._walk(query, Violation((term,)), start, rng, out_of_time, best)
                evaluations += used
                if witness is not None or out_of_time():
                    return witness, evaluations
        return None, evaluations

    def _neighbourhood_phase(self, query: Query, rng: np.random.Generator, allowance: _Allowance, best: _Best):
        """SCIP around the best point the phases before reached (`engines.neighbourhood`)."""
        if best.point is None or len(best.term.terms[0]) != 1:
            return None, 0
        atom = best.term.terms[0][0]

        def gradient_at(x: np.ndarray) -> np.ndarray:
            return atom_gradient(atom, straight_through_jacobian(query.network, x))

        return neighbourhood_search(query, atom, best.point, gradient_at, allowance.left, allowance.stop), 0

    def _climb_phase(self, query: Query, rng: np.random.Generator, allowance: _Allowance, best: _Best):
        """SCIP maximising the best term's atom over the whole box from the best point (`engines.climb`)."""
        if best.point is None or len(best.term.terms[0]) != 1:
            return None, 0
        return climb(query, best.term.terms[0][0], best.point, allowance.left, allowance.stop), 0

    def _walk(self, query: Query, term: Violation, x: np.ndarray, rng: np.random.Generator, out_of_time,
              best: _Best, batch: int = 256, patience: int = 40):
        """Batches of 1-3 coordinate moves; the best is taken if it is no worse (ties cross plateaus)."""
        qnn, lo, hi = query.network, query.region.lo, query.region.hi
        score = violation_score(term, execute(qnn, x))[0]
        evaluations, stale = 1, 0
        while score < 0 and stale < patience and not out_of_time():
            moves = np.tile(x, (batch, 1))
            rows = np.repeat(np.arange(batch), 3)
            cols = rng.integers(0, x.size, rows.size)
            keep = rng.random(rows.size) < np.tile([1.0, 0.5, 0.25], batch)
            rows, cols = rows[keep], cols[keep]
            moves[rows, cols] = rng.integers(lo[cols], hi[cols] + 1)
            scores = violation_score(term, execute(qnn, moves))
            evaluations += batch
            top = int(np.argmax(scores))
            stale = 0 if scores[top] > score else stale + 1
            if scores[top] >= score:
                x, score = moves[top], scores[top]
        best.offer(score, x, term)
        return (x if score >= 0 else None), evaluations

    def _descend(self, query: Query, term: Violation, point: np.ndarray, out_of_time, best: _Best):
        qnn, lo, hi = query.network, query.region.lo, query.region.hi
        x = point.copy()
        evaluations = 0
        # sign-gradient steps towards the box corner the surrogate prefers
        for _ in range(3):
            jac = straight_through_jacobian(qnn, x)
            gradient = self._score_gradient(term, jac, execute(qnn, x)[0])
            candidate = np.where(gradient > 0, hi, np.where(gradient < 0, lo, x))
            if violation_score(term, execute(qnn, candidate))[0] >= violation_score(term, execute(qnn, x))[0]:
                x = candidate
            evaluations += 2
        score = violation_score(term, execute(qnn, x))[0]
        # greedy coordinate moves on the exact executor
        while score < 0 and not out_of_time():
            moves = np.concatenate([np.tile(x, (x.size, 1)), np.tile(x, (x.size, 1))])
            moves[np.arange(x.size), np.arange(x.size)] = lo
            moves[x.size + np.arange(x.size), np.arange(x.size)] = hi
            scores = violation_score(term, execute(qnn, moves))
            evaluations += len(moves)
            top = int(np.argmax(scores))
            if scores[top] <= score:
                break
            x, score = moves[top], scores[top]
        best.offer(score, x, term)
        if score >= 0:
            return x, evaluations
        return None, evaluations

    @staticmethod
    def _score_gradient(term: Violation, jac: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Gradient of the left-hand side of the atom furthest from holding."""
        atom = min(term.terms[0], key=lambda a: atom_value(a, outputs) - a.bound)
        return atom_gradient(atom, jac)

"""The search: the cheapest uniform width that certifies, a per-layer proposal, then greedy reductions.

Guarantees, stated exactly: every candidate reported as certified had every kept property
PROVED by an exact engine (replayed counterexamples reject, UNKNOWN rejects too). The
answer is the cheapest certified candidate the search visited. It is a local minimum --
every neighbour one change away (one layer's width one choice lower, or another fraction
choice) was refuted or left unknown -- unless the time budget ran out first, which the
result says. It is not a claim that no cheaper certified quantization exists elsewhere in
the space.

Counterexamples are shared across candidates: a witness found while refuting one candidate
is replayed on every later one before any solver runs, which rejects most hopeless
candidates in milliseconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bitqnn.backdoor import BackdoorQuery
from bitqnn.error_query import ErrorQuery
from bitqnn.floatnet import FloatNetwork
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, execute
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point
from bitqnn.query import Query
from bitqnn.synthesis.cost import COSTS, layer_sizes
from bitqnn.synthesis.deploy import delivery_problem
from bitqnn.synthesis.propose import open_cases, per_layer_proposal
from bitqnn.synthesis.space import Candidate, SearchSpace
from bitqnn.verify import Result


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything the search needs; `obligations_for` compiles the kept properties for one QNN."""

    float_net: FloatNetwork
    base: FixedPointConfig
    calibration: np.ndarray | None
    space: SearchSpace
    cost: str
    obligations_for: Callable[[QNN], list]
    budget: float  # seconds for the whole search
    deliverable: bool = True  # certified candidates must also export and re-import (`deploy`)

    def undeliverable(self, qnn: QNN) -> str | None:
        return delivery_problem(qnn, self.obligations_for) if self.deliverable else None

    def quantize(self, candidate: Candidate) -> QNN:
        return quantize_fixed_point(self.float_net, candidate.config(self.base), self.calibration)

    def cost_of(self, candidate: Candidate) -> float:
        return COSTS[self.cost](candidate, layer_sizes(self.float_net), self.base.input_bits)


@dataclass
class Attempt:
    """One candidate's certification: `status` is certified, refuted, unknown or invalid."""

    candidate: Candidate
    cost: float
    stage: str  # "uniform", "proposal" or "descent"
    status: str = "unknown"
    reason: str = ""
    results: dict[int, Result] = field(default_factory=dict)  # kept property index -> its answer
    seconds: float = 0.0
    solver_runs: int = 0
    finished_at: float = 0.0  # seconds since the search began


@dataclass
class Synthesis:
    attempts: list[Attempt]
    best: Attempt | None
    best_uniform: Attempt | None
    stopped: str  # "local minimum", "budget" (time ran out first) or "nothing certified"
    seconds: float

    @property
    def first_certified(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status == "certified"), None)


def refutes(obligation, witness: np.ndarray) -> bool:
    """Whether an input that broke some candidate also breaks this obligation (exact replay)."""
    query = obligation.query
    if isinstance(query, Query):
        x = witness.reshape(1, -1)
        return query.region.contains(x) and query.check_witness(x, execute(query.network, x))
    if isinstance(query, ErrorQuery):
        errors = np.abs(query.errors(witness.reshape(1, -1)))  # signed: QNN minus float
        return query.region.contains(witness) and float(np.max(errors)) > query.eps
    if isinstance(query, BackdoorQuery):  # the triggered input, tried at every patch location
        x = witness.reshape(1, -1)
        outputs = execute(query.network, x)
        return any(query.query(location).check_witness(x, outputs) for location in query.locations)
    return False  # a bit-flip witness names flips of one candidate's parameters: not transferable


class Synthesizer:
    def __init__(self, problem: Problem, answer: Callable[[object, str, float], Result], label: str = "synthesize",
                 log=None) -> None:
        self.problem = problem
        self.answer = answer
        self.label = label
        self.log = log if log is not None else (lambda line: print(line, file=sys.stderr, flush=True))
        self.witnesses: dict[int, list[np.ndarray]] = {}  # kept property index -> inputs that broke one
        self.failures: dict[int, int] = {}  # kept property index -> candidates it rejected
        self.attempts: dict[Candidate, Attempt] = {}
        self.open_counts: dict[Candidate, int] = {}  # symbolic-bounds open cases, by candidate
        self.start = 0.0

    def remaining(self) -> float:
        return self.problem.budget - (time.perf_counter() - self.start)

    def run(self) -> Synthesis:
        self.start = time.perf_counter()
        space = self.problem.space
        self.log(f"[{self.label}] search space: {space.size()} candidates, cost {self.problem.cost}, "
                 f"budget {self.problem.budget:g}s")
        best_uniform = None
        uniform = sorted(space.uniform(), key=self.problem.cost_of)
        for candidate in uniform:
            if self.remaining() <= 0:
                break
            attempt = self.attempt(candidate, "uniform")
            if attempt.status == "certified":
                best_uniform = attempt
                break
        best = best_uniform
        proposal = per_layer_proposal(space, self._open_cases) if self.remaining() > 0 else None
        if proposal is not None and proposal not in self.attempts and (
                best is None or self.problem.cost_of(proposal) < best.cost):
            attempt = self.attempt(proposal, "proposal")
            best = attempt if attempt.status == "certified" else best
        if best is None and self.remaining() > 0 and space.largest() not in self.attempts:
            attempt = self.attempt(space.largest(), "descent")
            best = attempt if attempt.status == "certified" else None
        stopped = "nothing certified" if best is None and self.remaining() > 0 else "budget"
        while best is not None and self.remaining() > 0:
            improved = self._improve(best)
            if improved is None:
                stopped = "local minimum" if self.remaining() > 0 else "budget"
                break
            best = improved
        seconds = time.perf_counter() - self.start
        return Synthesis(list(self.attempts.values()), best, best_uniform, stopped, seconds)

    def _improve(self, best: Attempt) -> Attempt | None:
        """The first certified neighbour, cheapest first; None when none certifies (or time is up)."""
        moves = [c for c in self.problem.space.neighbours(best.candidate)
                 if self.problem.cost_of(c) < best.cost and c not in self.attempts]
        for candidate in self._proposed(moves):
            if self.remaining() <= 0:
                return None
            attempt = self.attempt(candidate, "descent")
            if attempt.status == "certified":
                return attempt
        return None

    def _proposed(self, moves: list[Candidate]) -> list[Candidate]:
        """Cheapest first; among equally cheap moves, the one symbolic bounds leave fewest open cases.

        The bounds are a cheap proxy for how close a candidate is to certified: they cost one
        back-substitution per property and no solver, and they decide nothing on their own.
        """
        by_cost: dict[float, list[Candidate]] = {}
        for candidate in moves:
            by_cost.setdefault(self.problem.cost_of(candidate), []).append(candidate)
        ordered = []
        for cost in sorted(by_cost):
            tied = by_cost[cost]
            if len(tied) > 1:
                tied.sort(key=self._open_cases)
            ordered += tied
        return ordered

    def _open_cases(self, candidate: Candidate) -> int:
        if candidate not in self.open_counts:
            try:
                obligations = self.problem.obligations_for(self.problem.quantize(candidate))
            except (ValueError, ArithmeticError):  # as in _attempt_one: a setting this network cannot take
                self.open_counts[candidate] = sys.maxsize
            else:
                self.open_counts[candidate] = open_cases(obligations)
        return self.open_counts[candidate]

    def attempt(self, widths: Candidate, stage: str) -> Attempt:
        """These widths with their first fraction choices, then each other one, until one certifies."""
        first = self._attempt_one(widths, stage)
        if first.status == "certified":
            return first
        for candidate in self.problem.space.fraction_variants(widths):
            if candidate in self.attempts or self.remaining() <= 0:
                continue
            if (attempt := self._attempt_one(candidate, stage)).status == "certified":
                return attempt
        return first

    def _attempt_one(self, candidate: Candidate, stage: str) -> Attempt:
        attempt = Attempt(candidate, self.problem.cost_of(candidate), stage)
        self.attempts[candidate] = attempt
        began = time.perf_counter()
        try:
            qnn = self.problem.quantize(candidate)
            self._certify(attempt, self.problem.obligations_for(qnn))
            problem = self.problem.undeliverable(qnn) if attempt.status == "certified" else None
        except (ValueError, ArithmeticError) as error:  # a setting this network cannot take
            attempt.status, attempt.reason = "invalid", f"{type(error).__name__}: {error}"
        else:
            if problem is not None:
                attempt.status, attempt.reason = "invalid", f"certified, but cannot be delivered: {problem}"
        attempt.seconds = time.perf_counter() - began
        attempt.finished_at = time.perf_counter() - self.start
        why = f" -- {attempt.reason}" if attempt.reason else ""
        self.log(f"[{self.label}] {stage} {candidate.describe()} ({self.problem.cost} {attempt.cost:g}): "
                 f"{attempt.status.upper()} in {attempt.seconds:.2f}s{why}")
        return attempt

    def _certify(self, attempt: Attempt, obligations: list) -> None:
        for index, obligation in enumerate(obligations):
            for witness in self.witnesses.get(index, []):
                if refutes(obligation, witness):
                    self._reject(attempt, index, "refuted", f"property {index + 1} broken by a counterexample "
                                 "found on an earlier candidate (replayed, no solver run)")
                    return
        # properties that rejected candidates before go first: a refutation ends the attempt early
        order = sorted(range(len(obligations)), key=lambda i: -self.failures.get(i, 0))
        for index in order:
            obligation = obligations[index]
            if self.remaining() <= 0:
                attempt.status, attempt.reason = "unknown", "the search's time budget ran out"
                return
            timeout = min(obligation.options["timeout"], max(1.0, self.remaining()))
            result = self.answer(obligation, obligation.options["engine"], timeout)
            attempt.solver_runs += 1
            attempt.results[index] = result
            if result.verdict is Verdict.FALSIFIED:
                if result.witness is not None:
                    self.witnesses.setdefault(index, []).append(np.asarray(result.witness, dtype=np.int64))
                self._reject(attempt, index, "refuted", f"property {index + 1} falsified ({result.engine})")
                return
            if result.verdict is Verdict.UNKNOWN:
                self._reject(attempt, index, "unknown", f"property {index + 1} unknown: {result.reason}")
                return
        attempt.status = "certified"

    def _reject(self, attempt: Attempt, index: int, status: str, reason: str) -> None:
        self.failures[index] = self.failures.get(index, 0) + 1
        attempt.status, attempt.reason = status, reason

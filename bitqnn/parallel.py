"""Answering many obligations at once: pieces on an executor, merged soundly, on time.

Each plain query is planned into pieces (`bitqnn.pieces`); other obligations (error
bounds, bit flips, backdoors) run whole. Every piece may also be raced by other engines:
the first conclusive answer for a piece wins and its rivals are cancelled. An
obligation's clock starts when its first piece is dispatched, every piece gets what is
left of that obligation's time, and a piece still running a second past it is killed, so
a timeout is honoured within a second however many pieces there are. A counterexample
from any piece ends its obligation at once, cancels the rest, and is replayed on the
whole query before it is reported, exactly as in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bitqnn.answer import is_plain, wall_time_allowed
from bitqnn.outcome import Outcome, Verdict
from bitqnn.pieces import Plan, merge, plan_pieces
from bitqnn.tasks import ObligationTask, PieceTask, TaskFailure
from bitqnn.verify import Result, settle

GRACE = 1.0  # seconds past a task's limit before its worker is stopped


SPLIT_ENGINES = ("auto", "cpsat")  # engines that start from the symbolic bounds the planning uses


def splittable(obligation, engine: str) -> bool:
    """Plain queries for the bounds-first engines split into pieces. Other engines answer
    the query whole, so that asking for one (the bit-vector engine, say) gets its answer
    and not the planning's bounds; other kinds of statement have pipelines of their own."""
    return engine in SPLIT_ENGINES and is_plain(obligation)


@dataclass
class _Job:
    obligation: object
    engine: str
    timeout: float
    plan: Plan | None  # None: the obligation runs whole
    statement_timeout: float = 0.0
    started: float | None = None
    piece_outcomes: dict[int, Outcome] = field(default_factory=dict)
    rival_unknowns: dict[int, int] = field(default_factory=dict)
    result: Result | None = None

    @property
    def piece_count(self) -> int:
        return 1 if self.plan is None else len(self.plan.pieces)


class Scheduler:
    """Runs obligations on an executor (`bitqnn.executor`); see the module docstring."""

    def __init__(self, executor, workers: int, split: str = "class", region_pieces: int = 1,
                 race: tuple[str, ...] = (), progress: Callable[[int, Result], None] | None = None,
                 spread: bool = False) -> None:
        self.executor = executor
        self.workers = workers  # CP-SAT threads per task, at least
        self.spread = spread  # give a task the cores no waiting task needs (processes sharing one machine)
        self.split = split
        self.region_pieces = region_pieces
        self.race = race
        self.progress = progress
        self._running: dict[tuple[int, int, int], float] = {}  # (job, piece, rival) -> kill deadline
        self._threads: dict[tuple[int, int, int], int] = {}  # solver threads each running task uses

    def answer(self, items: list[tuple[object, str, float]]) -> list[Result]:
        """Results for (obligation, engine, timeout) items, in their order."""
        jobs = [self._plan(obligation, engine, timeout) for obligation, engine, timeout in items]
        pending = [(j, p, r) for j, job in enumerate(jobs) if job.result is None
                   for p in range(job.piece_count) for r in range(1 + (len(self.race) if job.plan else 0))]
        for number, job in enumerate(jobs):
            if job.result is not None:
                self._report(number, job)
        try:
            while pending or self._running:
                pending = self._dispatch(jobs, pending)
                now = time.perf_counter()
                soonest = min(self._running.values(), default=now + 0.5)
                for key, value in self.executor.wait(min(0.5, max(0.0, soonest - now))):
                    if self._running.pop(key, None) is not None:
                        self._threads.pop(key)
                        self._finish(jobs, key, value)
                self._stop_overdue(jobs)
        finally:
            for key in list(self._running):
                self.executor.cancel(key)
            self._running.clear()
            self._threads.clear()
        return [job.result for job in jobs]

    def _plan(self, obligation, engine: str, timeout: float) -> _Job:
        if not splittable(obligation, engine):
            return _Job(obligation, engine, wall_time_allowed(obligation, timeout), None, timeout)
        start = time.perf_counter()
        plan = plan_pieces(obligation.query, self.split, self.region_pieces)
        job = _Job(obligation, engine, timeout, plan)
        if plan.settled is not None:
            outcome = plan.settled
            job.result = settle(obligation.query, Outcome(outcome.verdict, f"{engine}:{outcome.engine}",
                                                          time.perf_counter() - start, stats=outcome.stats))
        return job

    def _dispatch(self, jobs: list[_Job], pending: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        left = []
        for position, key in enumerate(pending):
            job_index, piece, rival = key
            job = jobs[job_index]
            if job.result is not None or piece in job.piece_outcomes:
                continue
            now = time.perf_counter()
            if job.started is not None and job.started + job.timeout <= now:  # out of time: no worker needed
                self._finish(jobs, key, Outcome.unknown(self._engine_of(job, rival), 0.0, "timeout"))
                continue
            cores = self.executor.capacity - sum(self._threads.values())
            if self.executor.free <= 0 or (self._threads and cores < self.workers):  # an idle machine always takes one
                left.append(key)
                continue
            threads = self.workers
            if self.spread:  # the cores that the tasks still waiting will not need
                threads = max(self.workers, cores // (len(left) + len(pending) - position))
            if job.started is None:
                job.started = now
            seconds = job.started + job.timeout - now
            self.executor.submit(key, self._task(job, piece, rival, seconds, threads))
            self._running[key] = now + seconds + GRACE
            self._threads[key] = threads
        return left

    def _engine_of(self, job: _Job, rival: int) -> str:
        return job.engine if rival == 0 else self.race[rival - 1]

    def _task(self, job: _Job, piece: int, rival: int, seconds: float, threads: int):
        if job.plan is None:  # seconds is its whole allowance; the statement's own timeout goes in
            return ObligationTask(job.obligation, job.engine, threads, job.statement_timeout)
        return PieceTask(job.plan.pieces[piece], self._engine_of(job, rival), threads, seconds)

    def _stop_overdue(self, jobs: list[_Job]) -> None:
        now = time.perf_counter()
        for key, deadline in list(self._running.items()):
            if now > deadline:
                self.executor.cancel(key)
                del self._running[key], self._threads[key]
                job = jobs[key[0]]
                self._finish(jobs, key, Outcome.unknown(self._engine_of(job, key[2]), now - job.started,
                                                        "timeout (stopped after the time limit)"))

    def _finish(self, jobs: list[_Job], key: tuple[int, int, int], value) -> None:
        if isinstance(value, TaskFailure):
            value.raise_again()
        job_index, piece, rival = key
        job = jobs[job_index]
        if job.result is not None:
            return
        if job.plan is None:
            job.result = value if isinstance(value, Result) else self._unanswered(job, value)
        elif value.verdict is Verdict.FALSIFIED:
            job.result = settle(job.obligation.query, merge(job.engine, [value], self._elapsed(job)))
        elif value.verdict is Verdict.PROVED or self._last_rival(job, piece):
            job.piece_outcomes[piece] = value
            self._cancel(job_index, piece)
            if len(job.piece_outcomes) == job.piece_count:
                outcomes = [job.piece_outcomes[p] for p in range(job.piece_count)]
                job.result = settle(job.obligation.query, merge(job.engine, outcomes, self._elapsed(job)))
        else:
            job.rival_unknowns[piece] = job.rival_unknowns.get(piece, 0) + 1
        if job.result is not None:
            self._cancel(job_index, None)
            self._report(job_index, job)

    def _last_rival(self, job: _Job, piece: int) -> bool:
        """An UNKNOWN settles a piece only when every rival on it has given up too."""
        return job.rival_unknowns.get(piece, 0) >= len(self.race)

    def _unanswered(self, job: _Job, outcome: Outcome) -> Result:
        return Result(job.obligation.query.label, outcome.verdict, outcome.engine, outcome.seconds, outcome.reason)

    def _elapsed(self, job: _Job) -> float:
        return time.perf_counter() - (job.started or time.perf_counter())

    def _cancel(self, job_index: int, piece: int | None) -> None:
        for key in [k for k in self._running if k[0] == job_index and (piece is None or k[1] == piece)]:
            self.executor.cancel(key)
            del self._running[key], self._threads[key]

    def _report(self, number: int, job: _Job) -> None:
        if self.progress is not None:
            self.progress(number, job.result)

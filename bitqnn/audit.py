"""`bitqnn audit`: bit-flip resilience of a QNN over a range of samples, for k = 1..K.

An `audit` statement compiles to one FaultQuery per sample at the largest budget K
(`spec.compile.Audit`); here each (sample, k) pair becomes one query, asked on local
processes in parallel. Every answer is appended to a JSON-lines store as soon as it
arrives, keyed by a fingerprint of everything the answer depends on (the network's
parameters, the input box, the label, the fault model at that k, the engine and the
timeout). A rerun therefore asks only what is missing: an interrupted audit resumes, a
finished one reruns without solving, and a changed spec never reuses a stale answer.

The store and its keys are in `audit_store`, the summary read back from it in `audit_summary`;
this module plans the queries and answers them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TextIO

from bitqnn.audit_store import INFERRED, Row, Store, load_rows, network_digest, row_key
from bitqnn.audit_summary import summary
from bitqnn.fault_verify import make_fault_engine, verify_fault
from bitqnn.faults import FaultQuery
from bitqnn.outcome import Verdict
from bitqnn.spec.compile import Audit


@dataclass(frozen=True)
class Task:
    """One (sample, k) query to answer: `audit` and `position` say where its FaultQuery is."""

    audit: int
    position: int
    sample: int
    k: int
    engine: str
    timeout: float
    key: str
    where: str


@dataclass(frozen=True, eq=False)
class AuditRun:
    """An audit statement with an answer for every (sample, k)."""

    audit: Audit
    where: str
    rows: dict[tuple[int, int], Row]

    @property
    def budget(self) -> int:
        return self.audit.queries[0].model.k

    @property
    def verdicts(self) -> set[Verdict]:
        return {Verdict(row.verdict) for row in self.rows.values()}


# ---- answering queries, here or in worker processes ----


class _Solver:
    """Answers tasks from the audits' queries, making each engine once per process."""

    def __init__(self, queries: list[tuple[FaultQuery, ...]]) -> None:
        self.queries = queries
        self.engines: dict[str, object] = {}

    def __call__(self, task: Task) -> Row:
        fq = self.queries[task.audit][task.position]
        if task.engine not in self.engines:
            self.engines[task.engine] = make_fault_engine(task.engine)
        result = verify_fault(replace(fq, model=replace(fq.model, k=task.k)), self.engines[task.engine], task.timeout)
        return Row(task.key, task.where, task.sample, task.k, result.verdict.value, result.seconds, result.engine,
                   result.reason, tuple(result.flips or ()))


_worker: _Solver | None = None


def _start_worker(queries: list[tuple[FaultQuery, ...]]) -> None:
    """Runs once in each worker process: the queries travel once per worker, not per task.
    Ctrl-C is left to the parent, which then terminates the workers mid-query."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = _Solver(queries)


def _solve_in_worker(task: Task) -> tuple[Task, Row]:
    assert _worker is not None
    return task, _worker(task)


class Workers:
    """Answers tasks here (one job) or in a pool of worker processes kept for the whole audit.

    Workers are spawned, not forked, so that no thread state of this process (solvers,
    onnxruntime) is copied into them. A multiprocessing Pool rather than a
    ProcessPoolExecutor, because it can terminate its workers: an interrupted audit stops
    at once instead of waiting for the queries under way, which it would ask again anyway."""

    def __init__(self, queries: list[tuple[FaultQuery, ...]], processes: int) -> None:
        self.queries, self.processes = queries, processes
        self._local: _Solver | None = None
        self._pool: Pool | None = None

    def answer(self, tasks: list[Task]) -> Iterator[tuple[Task, Row]]:
        """Each task with its row, in the order they finish."""
        if self.processes <= 1:
            self._local = self._local or _Solver(self.queries)
            yield from ((task, self._local(task)) for task in tasks)
        elif tasks:
            if self._pool is None:
                self._pool = get_context("spawn").Pool(self.processes, _start_worker, (self.queries,))
            yield from self._pool.imap_unordered(_solve_in_worker, tasks)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.terminate()


def inferred(task: Task, before: Row) -> Row:
    """A sample vulnerable to at most k - 1 flips is vulnerable to at most k, by the same
    counterexample: the answer for k needs no solver (and cannot come out unknown)."""
    reason = before.reason if before.engine == INFERRED else f"the counterexample found for k={before.k}"
    return Row(task.key, task.where, task.sample, task.k, Verdict.FALSIFIED.value, 0.0, INFERRED, reason,
               before.flips)


class Progress:
    """A text bar on stderr: redrawn in place on a terminal, a line per tenth in a log."""

    WIDTH = 30

    def __init__(self, total: int, stored: int) -> None:
        self.total, self.stored, self.done = total, stored, stored
        self.stream: TextIO = sys.stderr  # looked up now, so that a redirected stderr is honoured
        self.live = self.stream.isatty()
        self._shown_tenth = -1
        self._draw()

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} (sample, k) queries, "
                f"{self.stored} from the store")
        tenth = 10 * self.done // max(self.total, 1)
        if self.live:
            print(f"\r{line}", end="\n" if self.done == self.total else "", file=self.stream, flush=True)
        elif tenth != self._shown_tenth:
            print(line, file=self.stream, flush=True)
        self._shown_tenth = tenth


# ---- the audit ----


def default_jobs() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan(audits: list[Audit], stored: dict[str, Row], timeout: float | None) -> tuple[list[Task], list[AuditRun]]:
    """The tasks still to answer, and each audit with the rows already stored."""
    tasks, runs = [], []
    for number, audit in enumerate(audits):
        where = f"{audit.pos.file}:{audit.pos.line}"
        engine, seconds = audit.options["engine"], float(timeout or audit.options["timeout"])
        run = AuditRun(audit, where, {})
        network = network_digest(audit.queries[0].network)
        for k in range(1, run.budget + 1):
            for position, (sample, fq) in enumerate(zip(audit.samples, audit.queries, strict=True)):
                key = row_key(fq, network, sample, k, engine, seconds)
                if key in stored:
                    run.rows[sample, k] = stored[key]
                else:
                    tasks.append(Task(number, position, sample, k, engine, seconds, key, where))
        runs.append(run)
    return tasks, runs


def run_audits(audits: list[Audit], store: Path, html: Path, jobs: int, timeout: float | None = None) -> list[AuditRun]:
    """Answer what the store lacks, print the summary on stdout and write the HTML report."""
    from bitqnn.audit_report import write_report  # it imports this module, and matplotlib

    tasks, runs = plan(audits, load_rows(store), timeout)
    total = sum(len(run.audit.samples) * run.budget for run in runs)
    progress = Progress(total, total - len(tasks))
    writer = Store(store)

    def finish(task: Task, row: Row) -> None:
        writer.add(row)
        runs[task.audit].rows[row.sample, row.k] = row
        progress.advance()

    try:
        with Workers([audit.queries for audit in audits], min(jobs, len(tasks))) as workers:
            for k in range(1, max(run.budget for run in runs) + 1):  # budget by budget, to infer from k - 1
                todo = []
                for task in (task for task in tasks if task.k == k):
                    before = runs[task.audit].rows.get((task.sample, k - 1))
                    if before is not None and before.verdict == Verdict.FALSIFIED.value:
                        finish(task, inferred(task, before))
                    else:
                        todo.append(task)
                for task, row in workers.answer(todo):
                    finish(task, row)
    finally:
        writer.close()
    for run in runs:
        print(summary(run))
    write_report(runs, html)
    print(f"store: {store} ({total} rows used, {len(tasks)} new); report: {html}", file=sys.stderr)
    return runs

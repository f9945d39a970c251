"""`auto`'s building blocks: engines in sequence, each given what is left of the deadline,
and engines racing in threads.

A portfolio is just another engine. The first conclusive answer wins; an engine that
can only falsify (the attack) gets a small slice so that proofs keep most of the time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Query


@dataclass(frozen=True)
class Stage:
    engine: object  # anything with .name and .solve(query, timeout)
    share: float = 1.0  # the fraction of the remaining time this stage may use
    cap: float | None = None  # and at most this many seconds


class SequentialPortfolio:
    def __init__(self, name: str, stages: list[Stage]) -> None:
        self.name = name
        self.stages = stages

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        reasons = []
        for stage in self.stages:
            remaining = timeout - (time.perf_counter() - start)
            if remaining <= 0:
                break
            allowed = remaining * stage.share if stage.cap is None else min(remaining * stage.share, stage.cap)
            outcome = stage.engine.solve(query, allowed)
            if outcome.verdict is not Verdict.UNKNOWN:
                stats = dict(outcome.stats, stage=stage.engine.name)
                return Outcome(outcome.verdict, f"{self.name}:{outcome.engine}",
                               time.perf_counter() - start, outcome.reason, outcome.witness, stats)
            reasons.append(f"{stage.engine.name}: {outcome.reason}")
        reason = "; ".join(reasons) if reasons else "timeout"
        return Outcome.unknown(self.name, time.perf_counter() - start, reason)


RESTOP_INTERVAL = 0.05  # seconds between repeated stops while a loser winds down
T = TypeVar("T")


def race(tasks: list[Callable[..., T]], decisive: Callable[[T], bool]) -> list[T | None]:
    """Each task, called with `stop=` a shared `StopSignal`, in a thread of its own; the
    first decisive result stops the others. Every task's result, in order (None for one
    that did not return); an exception in a task stops the rest and is raised here.

    The calling thread repeats the stop until every task has returned (`ThreadRace`)."""
    stop = StopSignal()
    results: list[T | None] = [None] * len(tasks)
    failures: list[BaseException] = []

    def run(position: int) -> None:
        try:
            result = tasks[position](stop=stop)
        except BaseException as error:  # re-raised in the caller's thread below
            failures.append(error)
            stop.stop()
            return
        results[position] = result
        if decisive(result):
            stop.stop()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(RESTOP_INTERVAL)
            if stop.stopped:
                stop.stop()
    if failures:
        raise failures[0]
    return results


class ThreadRace:
    """Engines side by side in threads of this process (`race`); the first conclusive
    answer wins and the others are stopped through a shared `StopSignal`.

    Threads, not processes, because CP-SAT and SCIP both release the GIL while they search
    and stop promptly when asked, and a piece already running in a worker process must not
    spawn more. Every engine raced must accept `stop=`. A loser stops at once inside a
    solver call and between LP rounds of step cuts.

    Every engine runs in a thread of its own and the calling thread repeats the stop
    until the losers have returned: a solver ignores an interrupt that comes before its
    search has started, so one stop that landed while a loser was still building its
    model would let it search to its time limit (`bitqnn.engines.stop`). Measured on the wide benchmark's image 8
    at radius 4, split into pieces on 2 cores: SCIP proved each piece in 1-3 s while CP-SAT
    was still in its cut rounds, and every piece then took the full 60 s.
    """

    def __init__(self, name: str, engines: list) -> None:
        self.name = name
        self.engines = engines

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        outcomes = race([partial(engine.solve, query, timeout) for engine in self.engines],
                        lambda outcome: outcome.verdict is not Verdict.UNKNOWN)
        for outcome in outcomes:
            if outcome is not None and outcome.verdict is not Verdict.UNKNOWN:
                stats = dict(outcome.stats, stage=outcome.engine)
                return Outcome(outcome.verdict, outcome.engine, time.perf_counter() - start, outcome.reason,
                               outcome.witness, stats)
        reasons = "; ".join(f"{o.engine}: {o.reason}" for o in outcomes if o is not None)
        return Outcome.unknown(self.name, time.perf_counter() - start, reasons or "timeout")


class Handoff:
    """Two engines in one racing thread: `first` for at most `seconds`, then `then` with
    the time that is left, both stopped with the race.

    On 2 cores every thread of a race takes CPU from the others, so a new racer slows the
    proofs (the climb as a fourth thread cost the wide benchmark two queries). CP-SAT, on
    the other hand, wins its races early or not at all, so its thread is handed on."""

    def __init__(self, first, then, seconds: float) -> None:
        self.name = f"{first.name}>{then.name}"
        self.first, self.then, self.seconds = first, then, seconds

    def solve(self, query: Query, timeout: float, stop: StopSignal | None = None) -> Outcome:
        start = time.perf_counter()
        stop = stop or StopSignal()
        outcome = self.first.solve(query, min(timeout, self.seconds), stop=stop)
        left = timeout - (time.perf_counter() - start)
        if outcome.verdict is not Verdict.UNKNOWN or stop.stopped or left <= 0:
            return outcome
        return self.then.solve(query, left, stop=stop)

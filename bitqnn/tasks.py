"""What a worker runs, wherever it runs: a local process or a cluster node.

A task is plain picklable data (a query or an obligation, the engine's name and a time
limit), so the same task gives the same answer on any executor. Engines are built once
per worker process and kept, as `bitqnn prove` does in one process.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from bitqnn.outcome import Outcome
from bitqnn.query import Query
from bitqnn.verify import Result


@dataclass(frozen=True)
class PieceTask:
    """One piece of a query (`bitqnn.pieces`): answered by an engine, replayed by the caller."""

    query: Query
    engine: str
    workers: int
    seconds: float


@dataclass(frozen=True)
class ObligationTask:
    """A whole obligation of a kind that is not split (error bounds, bit flips, backdoors):
    answered and replayed in the worker, as `bitqnn prove` would."""

    obligation: object
    engine: str
    workers: int
    seconds: float


@dataclass(frozen=True)
class TaskFailure:
    """An exception inside a worker, carried back as data so the caller raises it again and
    the command line reports it as it would have in one process (a reachable accumulator
    overflow stays a user-facing error, anything else an internal one)."""

    message: str
    error: Exception | None = None

    def raise_again(self) -> None:
        raise self.error if self.error is not None else RuntimeError(self.message)


_ENGINES: dict[tuple[str, int], object] = {}
_ANSWERERS: dict[int, object] = {}


def run_task(task: PieceTask | ObligationTask) -> Outcome | Result | TaskFailure:
    try:
        if isinstance(task, PieceTask):
            return _engine(task.engine, task.workers).solve(task.query, task.seconds)
        return _answerer(task.workers)(task.obligation, task.engine, task.seconds)
    except Exception as error:  # noqa: BLE001 - a worker must answer, never die silently
        return TaskFailure(f"{type(error).__name__}: {error}", error if _picklable(error) else None)


def _picklable(error: Exception) -> bool:
    try:
        pickle.dumps(error)
    except Exception:  # noqa: BLE001 - whatever pickling raises, send the message only
        return False
    return True


def _engine(name: str, workers: int):
    if (name, workers) not in _ENGINES:
        from bitqnn.engines.registry import make_engine

        _ENGINES[(name, workers)] = make_engine(name, workers)
    return _ENGINES[(name, workers)]


def _answerer(workers: int):
    if workers not in _ANSWERERS:
        from bitqnn.answer import Answerer

        _ANSWERERS[workers] = Answerer(workers)
    return _ANSWERERS[workers]

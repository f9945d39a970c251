"""Pieces, their merge, and the scheduler on local worker processes, against enumeration."""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import dataclass

import numpy as np
import pytest

from bitqnn.cli import EXIT_FALSIFIED, EXIT_INPUT, main
from bitqnn.engines.enumeration import EnumerationEngine, box_points
from bitqnn.executor import LocalExecutor
from bitqnn.outcome import Outcome, Verdict
from bitqnn.parallel import GRACE, Scheduler
from bitqnn.pieces import merge, plan_pieces
from bitqnn.qnn import execute
from bitqnn.query import Query
from tests.test_engines_agree import random_case

SPECS = __import__("pathlib").Path(__file__).resolve().parents[1] / "specs"


@dataclass(frozen=True)
class Statement:
    """The two fields the scheduler reads of a compiled obligation."""

    query: Query
    kind: str = "robust"


class SlowStatement:
    """A statement whose kind takes 60 s to read inside a worker: a task that ignores its
    time limit, which the scheduler must stop."""

    def __init__(self, query: Query) -> None:
        self.query = query

    @property
    def kind(self) -> str:
        if multiprocessing.parent_process() is not None:
            time.sleep(60)
        return "backdoor"


def test_merge_proves_only_when_every_piece_is_proved():
    proved = Outcome(Verdict.PROVED, "cpsat", 1.0)
    open_piece = Outcome.unknown("cpsat", 1.0, "timeout")
    witness = Outcome(Verdict.FALSIFIED, "attack", 1.0, witness=np.zeros(3, dtype=np.int64))
    assert merge("auto", [proved, proved], 2.0).verdict is Verdict.PROVED
    assert merge("auto", [proved, open_piece], 2.0).verdict is Verdict.UNKNOWN
    assert "1 of 2 pieces open" in merge("auto", [proved, open_piece], 2.0).reason
    assert merge("auto", [open_piece, witness], 2.0).verdict is Verdict.FALSIFIED


def test_region_pieces_cover_every_violating_point():
    """Whatever planning drops (classes and sub-boxes the bounds prove) holds no
    violation: every violating point of the box lies in a piece that it violates."""
    checked = 0
    for seed in range(40):
        _, query = random_case(seed)
        plan = plan_pieces(query, "class", region_pieces=6)
        points = box_points(query.region.lo, query.region.hi, 0, query.region.points)
        outputs = execute(query.network, points)
        for x, y in zip(points[query.violation.holds(outputs)], outputs[query.violation.holds(outputs)], strict=True):
            assert any(p.region.contains(x) and p.violation.holds(y[None, :])[0] for p in plan.pieces), seed
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("region_pieces", [1, 4])
def test_scheduler_agrees_with_enumeration(region_pieces):
    cases = [random_case(seed)[1] for seed in range(60)]
    truth = [EnumerationEngine().solve(q, 60).verdict for q in cases]
    executor = LocalExecutor(2)
    try:
        results = Scheduler(executor, workers=1, region_pieces=region_pieces).answer(
            [(Statement(q), "cpsat", 60.0) for q in cases])
    finally:
        executor.close()
    assert [r.verdict for r in results] == truth  # a FALSIFIED result exists only after its replay
    assert {Verdict.PROVED, Verdict.FALSIFIED} <= set(truth)


def test_racing_engines_agree_with_enumeration_and_stop_the_losers():
    cases = [random_case(seed)[1] for seed in range(30)]
    truth = [EnumerationEngine().solve(q, 60).verdict for q in cases]
    executor = LocalExecutor(2)
    try:
        scheduler = Scheduler(executor, workers=1, race=("enumerate",))
        results = scheduler.answer([(Statement(q), "cpsat", 60.0) for q in cases])
        assert not scheduler._running  # every loser was cancelled, none is left running
    finally:
        executor.close()
    assert [r.verdict for r in results] == truth
    assert {r.engine.split(":")[0] for r in results} >= {"cpsat"}


def test_a_task_past_its_limit_is_stopped_within_a_second():
    _, query = random_case(1)
    executor = LocalExecutor(1)
    try:
        while not executor.free:  # the worker's start-up is not the task's time
            executor.wait(1.0)
        first = executor._workers[0].process
        start = time.perf_counter()
        [result] = Scheduler(executor, workers=1).answer([(SlowStatement(query), "auto", 1.0)])
        elapsed = time.perf_counter() - start
        assert not first.is_alive()  # the overdue worker was killed ...
        assert executor._workers and executor._workers[0].process is not first  # ... and replaced
    finally:
        executor.close()
    assert result.verdict is Verdict.UNKNOWN and "stopped after the time limit" in result.reason
    assert elapsed < 1.0 + GRACE + 1.0  # the limit, then one second of grace at most (and the kill itself)
    assert result.seconds < 1.0 + GRACE + 0.5


class _HangingExecutor:
    """One worker whose tasks never answer, and which, once killed, takes `restart`
    seconds to start again, as a real one does while it imports."""

    capacity = 1

    def __init__(self, restart: float) -> None:
        self.restart = restart
        self.busy = False
        self.back_at = 0.0

    @property
    def free(self) -> int:
        return int(not self.busy and time.perf_counter() >= self.back_at)

    def submit(self, key, task) -> None:
        self.busy = True

    def wait(self, timeout: float) -> list:
        time.sleep(timeout)
        return []

    def cancel(self, key) -> None:
        self.busy = False
        self.back_at = time.perf_counter() + self.restart


def test_pieces_left_when_time_runs_out_end_without_waiting_for_a_worker():
    _, query = random_case(1)  # two competing classes left by the bounds: two pieces, one worker
    assert len(plan_pieces(query, "class", 1).pieces) == 2
    start = time.perf_counter()
    [result] = Scheduler(_HangingExecutor(restart=10.0), workers=1).answer([(Statement(query), "auto", 0.5)])
    assert result.verdict is Verdict.UNKNOWN
    assert time.perf_counter() - start < 0.5 + GRACE + 1.0  # not after the worker's 10 s restart


def test_closing_the_executor_ends_its_workers():
    cases = [random_case(seed)[1] for seed in range(4)]
    executor = LocalExecutor(2)
    Scheduler(executor, workers=1).answer([(Statement(q), "cpsat", 30.0) for q in cases])
    processes = [w.process for w in executor._workers]
    assert len(processes) == 2 and all(p.is_alive() for p in processes)
    executor.close()
    assert not any(p.is_alive() for p in processes)


def test_prove_in_parallel_gives_the_verdicts_of_one_process(capsys):
    spec = SPECS / "digits_falsify.qspec"
    verdicts = []
    for flags in (["--jobs", "1"], ["--jobs", "2"], ["--jobs", "2", "--split", "none"],
                  ["--jobs", "1", "--workers", "2", "--split-region", "2"]):  # one process wanting two cores
        assert main(["prove", str(spec), "--json", *flags]) == EXIT_FALSIFIED
        payload = json.loads(capsys.readouterr().out)
        verdicts.append([r["verdict"] for r in payload["results"]])
        assert all(r["onnxruntime_checked"] for r in payload["results"])
    assert all(v == verdicts[0] for v in verdicts)


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--split-region", "0"], "--split-region must be at least 1"),
    (["--address", "127.0.0.1:6379"], "--address names a Ray cluster"),
    (["--race", "cpsat,nope"], "--race: unknown engine 'nope'"),
])
def test_bad_parallel_flags_are_input_errors(capsys, flags, message):
    assert main(["prove", str(SPECS / "digits_robust.qspec"), *flags]) == EXIT_INPUT
    assert message in capsys.readouterr().err

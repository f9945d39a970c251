"""Deciding a backdoor-freeness statement: one query per patch location, merged soundly.

PROVED needs every location's query PROVED; one replayed counterexample at any location
is FALSIFIED, with its patch; anything else is UNKNOWN, naming how many locations were
left open. Cheapest first:

1. A screen on the exact executor, one batch per location: the patch at both ends of the
   value range and a few random patches. It proves nothing, but it finds
   blatant triggers at once, and its scores order the locations for the next step, the
   most promising (the target closest to winning) first.
2. The statement's engine on each location's query. With `auto`, input splitting
   (`engines/input_split.py`) comes first and may use half of the location's time: a
   patch frees only a few inputs, which is where splitting beats one exact model of the
   whole box. The statement's timeout is the budget of the whole statement: each location
   gets an equal share of the time still left, so time that quick locations do not use
   goes to the later ones; locations still open at the end are tried once more, sharing
   whatever time remains.

Every counterexample, the screen's included, goes through `verify.settle` and so replays
on the reference executor (and onnxruntime) before it is reported.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from bitqnn.backdoor import BackdoorQuery, Location
from bitqnn.engines.attack import violation_score
from bitqnn.engines.input_split import InputSplitEngine
from bitqnn.engines.portfolio import SequentialPortfolio, Stage
from bitqnn.outcome import Outcome, Verdict
from bitqnn.qnn import execute
from bitqnn.verify import Result, settle, verify

SCREEN_EVALUATIONS = 20_000  # executor rows for the whole screen, at most
SCREEN_RANDOM = 16  # random patches per location, when the budget allows
SPLIT_SHARE = 0.5  # of a location's time, for input splitting before the rest of `auto`


def verify_backdoor(bq: BackdoorQuery, engine, timeout: float) -> Result:
    """The statement's verdict within about `timeout` seconds in total (see the module docstring)."""
    start = time.perf_counter()
    deadline = start + timeout
    order, hit = _screen(bq)
    if hit is not None:
        location, x = hit
        outcome = Outcome(Verdict.FALSIFIED, "screen", time.perf_counter() - start, witness=x)
        return _falsified(bq, location, settle(bq.query(location), outcome), start, proved=0)
    per_location = _with_splitting(engine)
    pending, proved, reasons = list(order), 0, {}
    for _ in range(2):
        still_open = []
        for done, location in enumerate(pending):
            left = deadline - time.perf_counter()
            if left <= 0:
                still_open.extend(pending[done:])
                break
            result = verify(bq.query(location), per_location, left / (len(pending) - done))
            if result.verdict is Verdict.FALSIFIED:
                return _falsified(bq, location, result, start, proved)
            if result.verdict is Verdict.PROVED:
                proved += 1
            else:
                still_open.append(location)
                reasons[location] = result.reason
        pending = still_open
        if not pending:
            break
    seconds = time.perf_counter() - start
    stats = {"locations": len(bq.locations), "proved_locations": proved, "patches_per_location": bq.patch_points}
    if not pending:
        return Result(bq.label, Verdict.PROVED, engine.name, seconds, stats=stats)
    first = pending[0]
    reason = (f"{len(pending)} of {len(bq.locations)} patch locations undecided within {timeout:g}s "
              f"(at {list(first)}: {reasons.get(first, 'no time left')})")
    return Result(bq.label, Verdict.UNKNOWN, engine.name, seconds, reason, stats=stats)


def _with_splitting(engine):
    """`auto` with input splitting as its first stage; any other engine as it is."""
    if isinstance(engine, SequentialPortfolio) and engine.name == "auto":
        return SequentialPortfolio(engine.name, [Stage(InputSplitEngine(), share=SPLIT_SHARE), *engine.stages])
    return engine


def _falsified(bq: BackdoorQuery, location: Location, result: Result, start: float, proved: int) -> Result:
    """The location's replayed counterexample as the statement's, with the patch it carries."""
    stats = dict(result.stats, locations=len(bq.locations), proved_locations=proved,
                 patches_per_location=bq.patch_points)
    return replace(result, label=bq.label, seconds=time.perf_counter() - start, stats=stats,
                   patch=bq.describe_patch(location, np.asarray(result.witness)))


def _screen(bq: BackdoorQuery) -> tuple[list[Location], tuple[Location, np.ndarray] | None]:
    """Locations ordered by the best score the screen saw there, and a triggering input if one was seen."""
    rng = np.random.default_rng(0)
    lo, hi = bq.values
    cells = bq.layout.channels * bq.size[0] * bq.size[1]
    randoms = min(SCREEN_RANDOM, max(SCREEN_EVALUATIONS // len(bq.locations) - 2, 0))
    patches = np.vstack([np.full((1, cells), lo), np.full((1, cells), hi),
                         rng.integers(lo, hi + 1, (randoms, cells))])
    best = {}
    for location in bq.locations:
        inputs = np.repeat(bq.base[None, :], len(patches), axis=0)
        inputs[:, bq.layout.patch_indices(location, bq.size)] = patches
        scores = violation_score(bq.violation, execute(bq.network, inputs))
        top = int(np.argmax(scores))
        if scores[top] >= 0:
            return [location], (location, inputs[top])
        best[location] = float(scores[top])
    return sorted(bq.locations, key=lambda location: -best[location]), None

"""Searching for a large quantization error: iterated steepest ascent over single pixels.

Between the DRA bound and the true maximum sits a gap that only a point closes, and the
error of a QNN against its float network is mostly the sum of many neurons' rounding
residues, which a random point aligns badly. Moving one input coordinate at a time
and keeping the move that raises the error most climbs that landscape; when no single
move helps, part of the best point is re-randomised and the climb starts again.

Every neighbour of a point differs from it in one coordinate, so where both networks
open with an affine layer the neighbours' first-layer values are the point's plus one
column times the step: a whole neighbourhood costs about one forward pass of the
layers after the first. The score of every returned point is recomputed with
`ErrorQuery.errors`, the reference executor and the float64 forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bitqnn.error_query import ErrorQuery
from bitqnn.floatnet import FloatConv2d, FloatDense
from bitqnn.qnn import Conv2d, Dense, finish_layer, run_from

PROBES = 512  # random grid points scored before the climb starts
KICK = 30  # coordinates re-randomised when the climb is stuck


class Neighbourhood:
    """Errors of every single-coordinate move from a point, by first-layer updates."""

    def __init__(self, query: ErrorQuery) -> None:
        self.query = query
        qnn, float_net = query.qnn, query.float_net
        lo, hi = query.region.lo, query.region.hi
        counts = hi - lo + 1
        self.coords = np.repeat(np.arange(lo.size), counts)
        self.values = np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]).astype(np.int64)
        self.fast = (isinstance(qnn.layers[0], Dense | Conv2d) and bool(float_net.layers)
                     and isinstance(float_net.layers[0], FloatDense | FloatConv2d))
        if self.fast:
            form = qnn.linear_form(0)
            self.q_matrix, self.q_offset = form.matrix, form.offset
            # the float first layer's affine map in the integer input, read off by probing
            basis = np.vstack([np.zeros(qnn.input_size, dtype=np.int64), np.eye(qnn.input_size, dtype=np.int64)])
            pre = float_net.pre_activation(0, query.real_inputs(basis))
            self.f_offset, self.f_matrix = pre[0], (pre[1:] - pre[0]).T

    @property
    def size(self) -> int:
        """How many (coordinate, value) moves there are, counting those to a coordinate's own value."""
        return self.values.size

    def errors(self, x: np.ndarray, moves: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coordinate, new value, signed errors on the query's outputs) per move from x:
        every move, or the listed ones (indices below `size`); moves that change nothing are dropped."""
        coords, values = (self.coords, self.values) if moves is None else (self.coords[moves], self.values[moves])
        step = values - x[coords]
        moved = step != 0
        coords, values, step = coords[moved], values[moved], step[moved]
        if not self.fast:
            points = np.repeat(x[None, :], len(coords), axis=0)
            points[np.arange(len(coords)), coords] = values
            return coords, values, self.query.errors(points)
        query = self.query
        acc = (self.q_matrix @ x + self.q_offset)[None, :] + step[:, None] * self.q_matrix[:, coords].T
        pre = (self.f_matrix @ x + self.f_offset)[None, :] + step[:, None] * self.f_matrix[:, coords].T
        q_out = run_from(query.qnn, 1, finish_layer(query.qnn, 0, acc))
        f_out = query.float_net.forward_from(1, query.float_net.activate(0, pre))
        return coords, values, query.errors_of(q_out, f_out)


def search_error(query: ErrorQuery, budget: float, seed: int = 0,
                 start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The point with the largest |error| found in `budget` seconds, and that error.

    Starts from `start` when given, else from the best of the box's corners, its centre
    and random grid points."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    lo, hi = query.region.lo, query.region.hi
    probes = query.probe_points(PROBES, rng)
    if start is not None:
        probes = np.vstack([np.asarray(start, dtype=np.int64)[None, :], probes])
    scores = np.abs(query.errors(probes)).max(axis=1)
    best_x = probes[int(np.argmax(scores))].copy()
    best = current = float(scores.max())
    x = best_x.copy()
    neighbourhood = Neighbourhood(query)
    kick = min(KICK, lo.size)
    while time.perf_counter() - began < budget and neighbourhood.values.size > lo.size:
        coords, values, errors = neighbourhood.errors(x)
        move_scores = np.abs(errors).max(axis=1)
        top = int(np.argmax(move_scores))
        if move_scores[top] > current:
            x[coords[top]] = values[top]
            current = float(move_scores[top])
            if current > best:
                best, best_x = current, x.copy()
            continue
        x = best_x.copy()
        chosen = rng.choice(lo.size, kick, replace=False)
        x[chosen] = rng.integers(lo[chosen], hi[chosen] + 1)
        current = float(np.abs(query.errors(x)).max())
    # the reported error is the reference executor's, never the incremental one
    return best_x, float(np.abs(query.errors(best_x)).max())


ANNEAL_MOVES = 256  # random moves scored per annealing step
ANNEAL_TEMPERATURE = 0.01  # the starting temperature, as a share of the best error so far
ANNEAL_CYCLE = 30_000  # steps from that temperature down to zero, then again from the best point


def anneal(query: ErrorQuery, start: np.ndarray, budget: float, seed: int = 0,
           enough: float = np.inf, stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, float]:
    """The point with the largest |error| found by annealing from `start` for `budget`
    seconds (or until an error above `enough` is found, or `stop()`), and that error.

    Why annealing after the climb: the climb stops at points where no single move helps,
    and the rounding residues make such points dense. A heat-bath step instead samples one
    of ANNEAL_MOVES random moves (or staying put) with weight exp(score / T), so it also
    takes moves that lose a little. T falls linearly to zero over a cycle of steps, not of
    seconds, so a seed gives the same walk on any machine; each cycle restarts from the
    best point. Measured on Fashion-MNIST at radius 3: 10 s from the climb's 1 s point
    (the climb alone for those 10 s in brackets), 1x100 at Q=6, image 0, 1.61 -> 2.33
    (2.02); 2x100 at Q=8, image 4, 0.715 -> 0.881 (0.767); 3x100 at Q=8, image 0,
    0.597 -> 0.682 (0.679). On six tasks that the complete pipeline had left open (1x100
    and 2x100, Q = 6 to 10), 30 s from the climb's point crossed eps on 5 with these
    settings; on 3 or 4 with T0 = 0.005 or 0.01 and 10,000-step cycles, 3 with T0 = 0.02
    and 30,000 steps, 1 to 3 with 2,000-step cycles.
    """
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = np.asarray(start, dtype=np.int64).copy()
    current = best = float(np.abs(query.errors(x)).max())
    best_x = x.copy()
    neighbourhood = Neighbourhood(query)
    step = 0
    while best <= enough and time.perf_counter() - began < budget and not (stop and stop()):
        cooling = 1.0 - (step % ANNEAL_CYCLE) / ANNEAL_CYCLE
        if cooling == 1.0:
            x, current = best_x.copy(), best
        step += 1
        coords, values, moved = neighbourhood.errors(x, rng.integers(0, neighbourhood.size, ANNEAL_MOVES))
        scores = np.append(np.abs(moved).max(axis=1), current)
        weights = np.exp((scores - scores.max()) / (ANNEAL_TEMPERATURE * max(best, 1e-300) * cooling))
        choice = int(rng.choice(scores.size, p=weights / weights.sum()))
        if choice < coords.size:
            x[coords[choice]] = values[choice]
            current = float(scores[choice])
            if current > best:
                best, best_x = current, x.copy()
    # the reported error is the reference executor's, never the incremental one
    return best_x, float(np.abs(query.errors(best_x)).max())

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

    def errors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coordinate, new value, signed errors on the query's outputs) per move from x."""
        step = self.values - x[self.coords]
        moved = step != 0
        coords, values, step = self.coords[moved], self.values[moved], step[moved]
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

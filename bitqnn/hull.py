"""The exact convex hull of one neuron's output stage, as integer lines.

A requantize-and-clamp stage is a monotone staircase over the accumulator's range. Its
convex hull is the tightest relaxation any single-neuron method can use: the upper side
runs through the first point of each step, the lower side through the last. A relaxation
that only knows `y ~ acc / 2**shift +- 1/2` is looser wherever the range starts just
past a step or ends just before one, which is most neurons at small radii. Edges are
kept as integer point pairs so the CP-SAT encoding can state them without rounding, and
the symbolic bounds take their slopes as candidate lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Point = tuple[int, int]


@dataclass(frozen=True)
class Edge:
    """The line through (x0, y0) and (x1, y1), x0 < x1, all integers."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def slope(self) -> float:
        return (self.y1 - self.y0) / (self.x1 - self.x0)


@dataclass(frozen=True)
class HullRow:
    """y_coeff * y + acc_coeff * acc <= bound (upper side) or >= bound (lower side), integers."""

    y_coeff: int
    acc_coeff: int
    bound: int
    upper: bool


@dataclass(frozen=True)
class StageHull:
    upper: tuple[Edge, ...]  # y <= each line, over the whole range
    lower: tuple[Edge, ...]  # y >= each line

    def rows(self) -> list[HullRow]:
        """Every sloped edge as an integer row, for any solver: (x1-x0)(y-y0) <= (y1-y0)(acc-x0)
        above, >= below. Flat edges are skipped; they only restate y's own bounds."""
        return [HullRow(e.x1 - e.x0, -(e.y1 - e.y0), (e.x1 - e.x0) * e.y0 - (e.y1 - e.y0) * e.x0, upper)
                for edges, upper in ((self.upper, True), (self.lower, False)) for e in edges if e.y1 != e.y0]


def _turn(o: Point, a: Point, b: Point) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _chain(points: list[Point], upper: bool) -> tuple[Edge, ...]:
    """Andrew's monotone chain over points sorted by x: the upper or the lower hull."""
    kept: list[Point] = []
    for p in points:
        while len(kept) >= 2 and (_turn(kept[-2], kept[-1], p) >= 0 if upper else _turn(kept[-2], kept[-1], p) <= 0):
            kept.pop()
        kept.append(p)
    return tuple(Edge(a[0], a[1], b[0], b[1]) for a, b in zip(kept, kept[1:], strict=False) if b[0] > a[0])


def stage_hull(starts: np.ndarray, values: np.ndarray, acc_hi: int) -> StageHull:
    """Hull of the staircase `OutputStage.steps` returns: piece i spans starts[i]..next start - 1."""
    firsts = [(int(s), int(v)) for s, v in zip(starts, values, strict=True)]
    lasts = [(int(s) - 1, int(v)) for s, v in zip(starts[1:], values[:-1], strict=True)]
    lasts.append((int(acc_hi), int(values[-1])))
    upper_points = firsts + [(int(acc_hi), int(values[-1]))]
    lower_points = [firsts[0]] + lasts
    return StageHull(_chain(upper_points, upper=True), _chain(lower_points, upper=False))

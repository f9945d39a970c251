"""Exact neighbourhood search: SCIP on a small box around the attack's best point.

Some counterexamples lie where neither walk of the attack reaches, while the exact solvers,
searching the whole box, take most of a minute to find them (the core benchmark's image 4 at
radius 4: SCIP alone, one thread, 20 to 52 s over seeds). Fixing every input but the few
that the straight-through gradient says move the violated atom most leaves a box small
enough for SCIP to search in about a second. SCIP then either returns a strictly better
point, which becomes the next centre, or proves that the neighbourhood has none, and the
neighbourhood grows. Every point is scored on the exact executor; this search only ever
returns points, so it can falsify and never proves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bitqnn.engines.milp import MilpEngine
from bitqnn.engines.stop import StopSignal
from bitqnn.outcome import Verdict
from bitqnn.qnn import execute
from bitqnn.query import Box, LinearAtom, Query, Violation

FIRST_FREE = 150  # inputs left free in the first neighbourhood
GROWTH = 1.5  # how much a neighbourhood grows once SCIP proves it holds no better point
STEP_SECONDS = 8.0  # a neighbourhood SCIP has not settled by then is a stall (core image 20 at radius 3)


def atom_value(atom: LinearAtom, outputs: np.ndarray) -> int:
    return sum(c * int(outputs[i]) for i, c in atom.terms)


def neighbourhood_search(query: Query, atom: LinearAtom, start: np.ndarray, gradient_at: Callable,
                         seconds_left: Callable[[], float], stop: StopSignal) -> np.ndarray | None:
    """A point of `query`'s box where `atom` holds, searched from `start`; None when the
    time runs out, a neighbourhood stays open for STEP_SECONDS, or the neighbourhood has
    grown to the whole box.

    `gradient_at(x)` is the atom's straight-through gradient at x (the attack's surrogate)."""
    qnn, lo, hi = query.network, query.region.lo, query.region.hi
    movable = np.flatnonzero(hi > lo)
    free = min(FIRST_FREE, movable.size)
    solver = MilpEngine()
    x = start.copy()
    while seconds_left() > 0 and not stop.stopped:
        value = atom_value(atom, execute(qnn, x)[0])
        if value >= atom.bound:
            return x
        reach = np.abs(gradient_at(x))[movable] * (hi - lo)[movable]
        chosen = movable[np.argsort(-reach, kind="stable")[:free]]
        sub_lo, sub_hi = x.copy(), x.copy()
        sub_lo[chosen], sub_hi[chosen] = lo[chosen], hi[chosen]
        better = Violation(((LinearAtom(atom.terms, value + 1),),))
        step = min(seconds_left(), STEP_SECONDS)
        outcome = solver.solve(Query(qnn, Box(sub_lo, sub_hi), better, query.label), step, stop=stop)
        if outcome.verdict is Verdict.FALSIFIED:
            x = outcome.witness
        elif outcome.verdict is Verdict.PROVED and math.ceil(free * GROWTH) < movable.size:
            free = math.ceil(free * GROWTH)  # the whole box is the exact engines' search, not this one's
        else:
            return None
    return None

"""Hinted climb: SCIP maximising the violated atom over the whole box, from the attack's best point.

Some counterexamples lie beyond both the attack's walks and its neighbourhood search, while
SCIP, asked for any violating point of the whole box, takes many minutes to find them. The
core benchmark's image 20 at radius 3 is one: SCIP's feasibility search needs 888 s, and the
neighbourhood search stalls after one step (its second 150-input neighbourhood was still
open after 32 s). Asked instead to *maximise* the atom's left-hand side, with the attack's
best point as its first incumbent, SCIP reached a violating point in 5 to 27 s over four
of five seeds (one thread; the fifth needed more than 60 s): its improvement heuristics
search around the incumbent with every input free. As a proof this mode is 5 to 30 times
slower than the feasibility search, whose violation row prunes, so it runs only here,
where it can falsify and never proves. Every point is replayed on the exact executor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bitqnn.encode.milp import Lin, UnsupportedEncoding
from bitqnn.engines.error_milp import SCIP_NUMERICS, hint_at, solver_parameters
from bitqnn.engines.milp import NO_CUTS, SOLVED, qnn_model, solved_input, unsupported_layer
from bitqnn.engines.quiet import quiet_native_output
from bitqnn.engines.stop import StopSignal
from bitqnn.qnn import execute
from bitqnn.query import LinearAtom, Query
from bitqnn.symbolic import analysis_of

HINT_SECONDS = 5.0  # the solve with the input pinned, which only propagates


def climb(query: Query, atom: LinearAtom, start: np.ndarray, seconds_left: Callable[[], float],
          stop: StopSignal) -> np.ndarray | None:
    """A point of `query`'s box where `atom` holds, or None when SCIP's time runs out first."""
    lo, hi = query.region.lo, query.region.hi
    if unsupported_layer(query.network) or stop.stopped:
        return None
    try:
        milp, inputs, outputs = qnn_model(query, analysis_of(query).bounds, threads=1)
    except UnsupportedEncoding:  # accumulators that may overflow: not this search's to model
        return None
    solver = milp.solver
    side = Lin()
    for output, coefficient in atom.terms:
        side = side.add(outputs[output], float(coefficient))
    fix_rows = [None if x.is_constant() else milp.row(x) for x in inputs]
    if side.is_constant():  # the bounds fix the atom's outputs: it holds everywhere or nowhere
        return start if atom.holds(execute(query.network, start))[0] else None
    with stop.hook(solver.InterruptSolve):  # a stopped race must not wait for this solve either
        hint = hint_at(solver, fix_rows, start, min(HINT_SECONDS, seconds_left()), SCIP_NUMERICS + NO_CUTS)
    if hint is None or seconds_left() <= 0 or stop.stopped:
        return None
    goal = solver.Objective()
    for var, coefficient in side.terms.values():
        goal.SetCoefficient(var, coefficient)
    goal.SetMaximization()
    solver.SetHint(*hint)
    solver.SetTimeLimit(max(int(seconds_left() * 1000), 1))
    # the objective is an integer: SCIP may stop at the first point whose value reaches the bound
    reached = f"limits/primal = {atom.bound - side.const - 0.5!r}\n"
    solver.SetSolverSpecificParametersAsString(SCIP_NUMERICS + NO_CUTS + reached)
    with stop.hook(solver.InterruptSolve), quiet_native_output():
        status = solver.Solve(solver_parameters())
    if status not in SOLVED:
        return None
    point = solved_input(inputs, lo, hi)
    return point if atom.holds(execute(query.network, point))[0] else None

"""One group of candidate flips and one violation term, decided by SCIP (`encode.milp_faults`).

What each answer rests on, as for `engines.milp`: a point SCIP returns is rounded to the
integer grid, its flips are read off the binaries, and the input is replayed on the
executor with those flips applied; a point that does not replay is no witness (the term
stays open). INFEASIBLE rests on SCIP's floating-point LP with the tight tolerances of
`error_milp.SCIP_NUMERICS`; the tests cross-check it against CP-SAT's encoding and against
enumeration of every flip and input.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.bounds import NetworkBounds
from bitqnn.encode.milp import UnsupportedEncoding, var_of
from bitqnn.encode.milp_faults import encode_fault_milp
from bitqnn.engines.milp import SOLVED, search_violating_point, solved_input
from bitqnn.engines.stop import StopSignal
from bitqnn.faults import Candidates, FaultModel, Flip, apply_flips
from bitqnn.outcome import Verdict
from bitqnn.qnn import execute
from bitqnn.query import LinearAtom, Query, Violation


def milp_group_term(query: Query, fault: FaultModel, part: Candidates, bounds: NetworkBounds,
                    term: tuple[LinearAtom, ...], seconds: float,
                    stop: StopSignal) -> tuple[Verdict, np.ndarray | None, tuple[Flip, ...]]:
    """(PROVED: no flip of `part` and no input satisfy `term`; FALSIFIED with the replayed
    input and flips; UNKNOWN) within `seconds`, building the model included."""
    began = time.perf_counter()
    try:
        model = encode_fault_milp(query.network, bounds, part, fault, term)
    except UnsupportedEncoding:  # a step table too large to state: CP-SAT's encoding may still decide
        return Verdict.UNKNOWN, None, ()
    left = seconds - (time.perf_counter() - began)
    if left <= 0:
        return Verdict.UNKNOWN, None, ()
    status = search_violating_point(model.milp, model.sides, left, stop)
    if status == pywraplp.Solver.INFEASIBLE:
        return Verdict.PROVED, None, ()
    if status not in SOLVED:
        return Verdict.UNKNOWN, None, ()
    point = solved_input(model.inputs, query.region.lo, query.region.hi)
    flips = tuple(part.flip(j) for j, flag in enumerate(model.flags) if var_of(flag).solution_value() > 0.5)
    outputs = execute(apply_flips(query.network, flips), point)
    if bool(Violation((term,)).holds(outputs)[0]):
        return Verdict.FALSIFIED, point, flips
    return Verdict.UNKNOWN, None, ()

"""Quantization error by MILP: the QNN exactly in integers beside its float network in reals.

The error question (is |QNN_real(x)_j - f(x)_j| <= eps on every grid point of a box, and
how large can it get?) needs real variables for the float network, so it goes to a MILP
solver: SCIP through OR-Tools' `pywraplp` (the `highspy` wheel clashes with OR-Tools).

The model itself (the QNN exactly in integers, the float network with big-M binaries,
difference rows from the DRA) is built by `bitqnn.encode.milp`.

One MILP serves every (output j, sign s): its objective is s * (QNN_real_j - f_j), and a
pair the DRA already bounds well enough is never solved. Two kinds of answer, with
different footing:
- a witness is the integer input read from a solver point and replayed with
  `ErrorQuery.errors` (the executor and a float64 forward pass); a solver point that does
  not replay is ignored, so FALSIFIED never rests on the solver's arithmetic;
- a bound rests on SCIP's floating-point LP. Tolerances are set tight explicitly, and a
  bound counts only after adding a stated margin; `stats["tolerance"]` and the reason say
  so. A run's numbers are discarded when SCIP's own point violates the model (checked
  with `VerifySolution`; its points are still replayed) or its bound falls below an
  error already replayed; SCIP 10.0.0 did return such a point once (see SCIP_NUMERICS),
  which is why both checks exist. Coefficients too small for SCIP to keep are moved into
  their rows' bounds when the model is built (`bitqnn.encode.milp.Milp.row`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.dra import analysis_for
from bitqnn.encode.milp import ErrorModel, UnsupportedEncoding, build_model, var_of
from bitqnn.engines.quiet import quiet_native_output
from bitqnn.engines.stop import StopSignal
from bitqnn.error_query import ErrorOutcome, ErrorQuery
from bitqnn.outcome import Verdict
from bitqnn.pairing import PairingError

FEASIBILITY_TOLERANCE = 1e-9  # SCIP numerics/feastol (also its integrality tolerance)
DUAL_TOLERANCE = 1e-9  # SCIP numerics/dualfeastol
RELATIVE_MARGIN = 1e-6  # a bound must clear eps by this times (1 + |eps|) ...
BIG_M_MARGIN = FEASIBILITY_TOLERANCE  # ... plus this times the largest big-M in the model
POOL_REPLAYS = 20  # solver points replayed per MILP run
MIN_RUN_SECONDS = 0.05
VERIFY_TOLERANCE = 1e-6  # a solver point off the model by more than this discredits its run
VIOLATED = -100  # run status: SCIP's point violates the model (a solver fault, not a tolerance)

SCIP_NUMERICS = (f"numerics/feastol = {FEASIBILITY_TOLERANCE}\n"
                 f"numerics/dualfeastol = {DUAL_TOLERANCE}\n"
                 "numerics/lpfeastolfactor = 1\n"
                 # SCIP 10.0.0 returned an "optimal" point violating a row by 7 units on a
                 # 5-row model of rounding and difference rows; not upgrading two-variable
                 # rows to varbound constraints avoided it (see the tests)
                 "constraints/linear/upgrade/varbound = FALSE\n")
SCIP_SETTINGS = (SCIP_NUMERICS
                 + "limits/gap = 0\n"
                 "limits/absgap = 0\n"
                 # root cut rounds beyond a few cost seconds on tiny models and moved the
                 # bound little on a 784-100-100 one
                 "separating/maxroundsroot = 3\n")



# ---- running it ----

@dataclass
class Pair:
    """One MILP objective: sign * (QNN_real_j - f_j)."""

    output: int
    sign: int
    dra_bound: float  # the DRA's bound on sign * difference
    bound: float | None = None  # the best sound bound established so far


@dataclass
class RunResult:
    """What one SCIP run established, and the points it offers for replay."""

    status: int
    bound: float  # SCIP's dual bound on the objective (inf when none)
    objective: float | None
    points: list[np.ndarray]
    seconds: float
    nodes: int


class Search:
    """Witness bookkeeping shared by both entry points: only replayed errors count."""

    def __init__(self, query: ErrorQuery) -> None:
        self.query = query
        self.witness: np.ndarray | None = None
        self.witnessed: float | None = None
        self.replays = self.rejected = 0
        # per (output, sign): the largest sign * error replayed, which every bound must reach
        self.signed: dict[tuple[int, int], float] = {}

    def offer(self, points: np.ndarray, claimed: float | None = None) -> float:
        """Replay points; keep the worst. Returns the largest |error| among them."""
        points = np.atleast_2d(points)
        box = self.query.region
        points = np.clip(points, box.lo, box.hi).astype(np.int64)
        signed = self.query.errors(points)
        for column, j in enumerate(self.query.outputs):
            for sign in (1, -1):
                value = float(np.max(sign * signed[:, column]))
                self.signed[(j, sign)] = max(self.signed.get((j, sign), -math.inf), value)
        errors = np.abs(signed).max(axis=1)
        self.replays += len(points)
        best = int(np.argmax(errors))
        if claimed is not None and float(errors[best]) < claimed - 1e-6 * (1 + abs(claimed)):
            self.rejected += 1
        if self.witnessed is None or errors[best] > self.witnessed:
            # replayed alone: a batched float64 product may round differently in the last bit
            self.witness = points[best].copy()
            self.witnessed = float(np.abs(self.query.errors(self.witness)).max())
        return float(errors[best])

    def sample(self, count: int, seed: int = 0) -> None:
        """Corners, the centre and random grid points: a cheap first witness."""
        self.offer(self.query.probe_points(max(count, 0), np.random.default_rng(seed)))


def set_objective(model: ErrorModel, pair: Pair) -> None:
    """Maximise sign * (QNN_real_j - f_j)."""
    objective = model.milp.solver.Objective()
    objective.Clear()
    diff = model.differences[pair.output]
    for var, coef in diff.terms.values():
        objective.SetCoefficient(var, pair.sign * coef)
    objective.SetOffset(pair.sign * diff.const)
    objective.SetMaximization()


def set_cut(model: ErrorModel, pair: Pair, cut: float | None) -> None:
    """Only points with sign * difference >= cut matter; None restores the DRA bounds alone."""
    j = pair.output
    lo, hi = float(model.dra_lo[j]), float(model.dra_hi[j])
    if cut is not None:
        if pair.sign > 0:
            lo = max(lo, cut)
        else:
            hi = min(hi, -cut)
    model.milp.set_row_bounds(model.rows[j], lo, hi)


def solver_parameters() -> pywraplp.MPSolverParameters:
    """OR-Tools applies these before the SCIP string, so both say the same tight tolerances."""
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, 0.0)
    params.SetDoubleParam(pywraplp.MPSolverParameters.PRIMAL_TOLERANCE, FEASIBILITY_TOLERANCE)
    params.SetDoubleParam(pywraplp.MPSolverParameters.DUAL_TOLERANCE, DUAL_TOLERANCE)
    return params


Hint = tuple[list, list]


def run_milp(model: ErrorModel, pair: Pair, seconds: float, extra: str, hint: Hint | None,
             stop: StopSignal | None = None) -> RunResult:
    """Maximise sign * difference; the bound is SCIP's dual bound where it reports one.

    OR-Tools reports a dual bound only with a solution (OPTIMAL or FEASIBLE); otherwise it
    returns a placeholder (0 or -inf for a maximisation), so every other status counts as
    no bound at all (inf), except INFEASIBLE (-inf: no point at all)."""
    solver = model.milp.solver
    set_objective(model, pair)
    solver.SetTimeLimit(max(int(seconds * 1000), 1))
    solver.SetSolverSpecificParametersAsString(SCIP_SETTINGS + extra)
    solver.SetHint(*(hint or ([], [])))
    start = time.perf_counter()
    with (stop or StopSignal()).hook(solver.InterruptSolve), quiet_native_output():
        status = solver.Solve(solver_parameters())
    elapsed = time.perf_counter() - start
    points, objective, bound = [], None, math.inf
    if status in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        if solver.VerifySolution(VERIFY_TOLERANCE, False):
            objective = solver.Objective().Value()
            best = solver.Objective().BestBound()
            bound = max(best, objective) if not math.isnan(best) else math.inf
        else:
            status = VIOLATED  # the solver's own point breaks the model: trust no number from this run
        # its inputs are still worth a replay, which is all a witness rests on
        points.append(read_point(model))
        while len(points) < POOL_REPLAYS and solver.NextSolution():
            points.append(read_point(model))
    elif status == pywraplp.Solver.INFEASIBLE:
        bound = -math.inf
    return RunResult(status, bound, objective, points, elapsed, int(solver.nodes()))


def full_hint(model: ErrorModel, point: np.ndarray, seconds: float, extra: str = "") -> Hint | None:
    """Every variable's value at one input (`hint_at`)."""
    return hint_at(model.milp.solver, model.fix_rows, point, seconds, SCIP_SETTINGS + extra)


def hint_at(solver: pywraplp.Solver, fix_rows: list, point: np.ndarray, seconds: float, settings: str) -> Hint | None:
    """Every variable's value at one input, from a solve with the input pinned by its
    `fix_rows` (free rows x_i, one per input; None for a constant input).

    A complete hint becomes SCIP's first incumbent, and with an incumbent OR-Tools reports
    the dual bound even at a timeout. (A partial hint goes through a SCIP store that fills
    up over repeated solves of one model and then fails.)"""
    # pinned through rows, not bounds: SCIP turns an integer variable created with bounds
    # inside [0, 1] into a binary one and then refuses to widen them again
    fixed = [(row, float(v)) for row, v in zip(fix_rows, point, strict=True) if row is not None]
    for row, value in fixed:
        row.SetBounds(value, value)
    solver.Objective().Clear()
    solver.SetHint([], [])
    solver.SetTimeLimit(max(int(seconds * 1000), 1))
    solver.SetSolverSpecificParametersAsString(settings)
    try:
        with quiet_native_output():
            status = solver.Solve(solver_parameters())
        if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return None
        variables = solver.variables()
        return variables, [var.solution_value() for var in variables]
    finally:
        for row, _ in fixed:
            row.SetBounds(-math.inf, math.inf)


def read_point(model: ErrorModel) -> np.ndarray:
    """The integer input of the solver's current point (rounded: integrality is within feastol)."""
    return np.array([round(x.const) if x.is_constant() else round(var_of(x).solution_value())
                     for x in model.inputs], dtype=np.int64)


STATUS_NAMES = {pywraplp.Solver.OPTIMAL: "optimal", pywraplp.Solver.FEASIBLE: "feasible",
                pywraplp.Solver.INFEASIBLE: "infeasible", pywraplp.Solver.UNBOUNDED: "unbounded",
                pywraplp.Solver.ABNORMAL: "abnormal", pywraplp.Solver.NOT_SOLVED: "not solved",
                VIOLATED: "solver point violates the model"}


def margin_of(query: ErrorQuery, model: ErrorModel) -> float:
    """What a solver bound must clear eps by: a relative term for LP round-off plus the
    feasibility tolerance times the largest big-M (what a binary within tolerance can shift)."""
    return RELATIVE_MARGIN * (1.0 + abs(query.eps)) + BIG_M_MARGIN * model.milp.big_m


@dataclass
class Setup:
    """Everything both entry points need before their first MILP."""

    start: float
    pairs: list[Pair]
    search: Search
    model: ErrorModel
    margin: float
    stats: dict
    scip_extra: str = ""
    stop: StopSignal = field(default_factory=StopSignal)  # a race's: stops the runs, keeps what they found
    hint: Hint | None = None
    hint_point: np.ndarray | None = None

    def contradicts(self, pair: Pair, bound: float) -> bool:
        """A replayed point beats this solver bound: note it and distrust the bound."""
        seen = self.search.signed.get((pair.output, pair.sign), -math.inf)
        if seen <= bound:
            return False
        self.stats["contradicted"] = self.stats.get("contradicted", 0) + 1
        return True

    def current_hint(self, seconds: float) -> Hint | None:
        """The complete hint at the best witness, recomputed when the witness changes."""
        witness = self.search.witness
        if witness is None:
            return None
        if self.hint_point is None or not np.array_equal(witness, self.hint_point):
            self.hint_point = witness.copy()
            with self.stop.hook(self.model.milp.solver.InterruptSolve):
                self.hint = full_hint(self.model, witness, seconds, self.scip_extra)
        return self.hint


class ErrorMilpEngine:
    """Exact QNN and big-M float network in one SCIP MILP per (output, sign).

    `samples` random grid points are replayed first (a cheap first witness, and the hint
    SCIP starts from); `coupling` adds the DRA's per-neuron difference rows.
    """

    name = "milp"

    def __init__(self, threads: int = 1, samples: int = 256, coupling: bool = True, scip_extra: str = "",
                 yield_at_root: bool = False) -> None:
        self.threads = threads
        self.samples = samples
        self.coupling = coupling
        self.scip_extra = scip_extra  # more SCIP parameters, "name = value" per line
        # `solve` returns UNKNOWN at once when SCIP cannot finish the root node of the easiest
        # open pair in its share: then no proof comes in the time left, and a racer beside
        # it (the annealing in `auto`) is better off with the core
        self.yield_at_root = yield_at_root

    def prepare(self, query: ErrorQuery, known: np.ndarray | None, stop: StopSignal | None) -> Setup | ErrorOutcome:
        """The DRA, a sampled witness (or a better one `known` from an earlier search) and the
        model; an outcome where the query cannot be stated."""
        start = time.perf_counter()
        try:
            analysis = analysis_for(query)
        except PairingError as error:
            return ErrorOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start, str(error))
        sites = analysis.q_bounds.overflow_sites()
        if sites:
            return ErrorOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start,
                                f"bounds do not exclude accumulator overflow at (layer, neuron) {sites[0]}")
        dra = analysis.run("symbolic")
        pairs = [Pair(j, sign, float(dra.hi[j] if sign > 0 else -dra.lo[j]))
                 for j in query.outputs for sign in (1, -1)]
        pairs.sort(key=lambda p: -p.dra_bound)  # the likeliest to matter first
        search = Search(query)
        search.sample(self.samples)
        if known is not None:
            search.offer(known)
        try:
            model = build_model(query, analysis, dra.lo, dra.hi, self.threads, self.coupling)
        except UnsupportedEncoding as error:
            outcome = ErrorOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start,
                                   f"MILP encoding: {error}; DRA bound only", search.witness, search.witnessed,
                                   max(p.dra_bound for p in pairs), {"replays": search.replays})
            if outcome.witnessed is not None and outcome.witnessed > query.eps:
                return replace(outcome, verdict=Verdict.FALSIFIED)
            return replace(outcome, verdict=Verdict.PROVED) if outcome.proven <= query.eps else outcome
        margin = margin_of(query, model)
        stats = {"model": model.stats(), "tolerance": margin, "feastol": FEASIBILITY_TOLERANCE, "runs": []}
        return Setup(start, pairs, search, model, margin, stats, self.scip_extra, stop or StopSignal())

    def _outcome(self, setup: Setup, verdict: Verdict, reason: str, proven: float | None) -> ErrorOutcome:
        search = setup.search
        stats = dict(setup.stats, replays=search.replays, unreplayed=search.rejected)
        return ErrorOutcome(verdict, self.name, time.perf_counter() - setup.start, reason, search.witness,
                            search.witnessed, proven, stats)

    def _tolerance_note(self, setup: Setup) -> str:
        return (f"SCIP bounds count after a margin of {setup.margin:.3g} "
                f"(feastol {FEASIBILITY_TOLERANCE:g}; floating-point LP, not an exact certificate)")

    # -- the eps question --

    def solve(self, query: ErrorQuery, timeout: float, known: np.ndarray | None = None,
              stop: StopSignal | None = None) -> ErrorOutcome:
        """PROVED when every (output, sign) is bounded by eps, FALSIFIED at the first replayed
        witness above eps, UNKNOWN otherwise (also when `stop` is called)."""
        setup = self.prepare(query, known, stop)
        if isinstance(setup, ErrorOutcome):
            return setup
        eps, search = query.eps, setup.search
        if search.witnessed is not None and search.witnessed > eps:
            return self._outcome(setup, Verdict.FALSIFIED, "a sampled grid point exceeds eps", None)
        open_pairs = []
        for pair in setup.pairs:
            if pair.dra_bound <= eps:
                pair.bound = pair.dra_bound
            else:
                open_pairs.append(pair)
        setup.stats["dra_decided"] = len(setup.pairs) - len(open_pairs)
        deadline = setup.start + timeout
        # the pairs closest to eps first: they settle fastest, and each pair's share of the
        # time is what is left divided by the pairs still waiting, so the hard ones get the rest
        pending = sorted(open_pairs, key=lambda p: p.dra_bound)
        first = True
        while pending:  # rounds: time a pair left unused goes to the pairs that ran out of it
            cut_short = []
            for position, pair in enumerate(pending):
                if setup.stop.stopped:
                    break
                if self._decide_pair(setup, pair, deadline, len(pending) - position, eps):
                    cut_short.append(pair)
                if search.witnessed is not None and search.witnessed > eps:
                    return self._outcome(setup, Verdict.FALSIFIED, "a MILP point, replayed, exceeds eps", None)
                if first and cut_short and self.yield_at_root and setup.stats["runs"][-1]["nodes"] <= 1:
                    seconds = setup.stats["runs"][-1]["seconds"]
                    return self._outcome(setup, Verdict.UNKNOWN, "SCIP did not finish the root node of the easiest "
                                         f"open (output, sign) pair in its {seconds:.1f} s", None)
                first = False
            if len(cut_short) == len(pending):
                break  # nothing settled, so no time was freed for another round
            pending = cut_short
        undecided = [p for p in setup.pairs if p.bound is None or p.bound > eps]
        if not undecided:
            reason = (f"every (output, sign) bounded by eps; {self._tolerance_note(setup)}" if open_pairs
                      else "the DRA bounds every (output, sign) by eps")
            return self._outcome(setup, Verdict.PROVED, reason, max(p.bound for p in setup.pairs))
        timed_out = time.perf_counter() >= deadline - MIN_RUN_SECONDS
        reason = f"{len(undecided)} of {len(setup.pairs)} (output, sign) pairs undecided"
        return self._outcome(setup, Verdict.UNKNOWN, reason + (" (timeout)" if timed_out else ""), None)

    def _decide_pair(self, setup: Setup, pair: Pair, deadline: float, left: int, eps: float) -> bool:
        """One objective: stop at a point clearly above eps or a dual bound clearly below it.
        True when the pair stays open for want of time alone, so more time may settle it.

        Only points above eps - margin are kept (a cut row), so infeasibility is a proof. A
        stop at the primal limit whose point does not replay above eps is retried without it.
        """
        margin = setup.margin
        for extra in (f"limits/primal = {eps + margin!r}\n", ""):
            share = (deadline - time.perf_counter()) / left
            if share < MIN_RUN_SECONDS:
                return False
            result = self._run(setup, pair, share, eps - margin, extra, None)
            if result.bound <= eps - margin:
                if not setup.contradicts(pair, eps - margin):
                    pair.bound = eps  # nothing above eps - margin, up to the margin
                return False
            if setup.search.witnessed is not None and setup.search.witnessed > eps:
                return False
            if result.objective is None:
                return result.status == pywraplp.Solver.NOT_SOLVED  # a timeout, not a solver failure
            if result.objective < eps + margin:
                return False  # an optimum too close to eps to call
        return False

    def _run(self, setup: Setup, pair: Pair, seconds: float, cut: float | None, extra: str,
             hint: Hint | None) -> RunResult:
        """One SCIP run on sign * difference_j with only points above `cut`; replays its pool."""
        model = setup.model
        set_cut(model, pair, cut)
        try:
            result = run_milp(model, pair, seconds, setup.scip_extra + extra, hint, setup.stop)
        finally:
            set_cut(model, pair, None)
        found = setup.search.offer(np.array(result.points), result.objective) if result.points else None
        setup.stats["runs"].append(run_stats(pair, result, found))
        return result

    # -- the tightest bound --

    def maximize(self, query: ErrorQuery, timeout: float, known: np.ndarray | None = None,
                 stop: StopSignal | None = None) -> ErrorOutcome:
        """The largest replayed |error| (witnessed) and a bound on every |error| (proven);
        after `stop`, the pairs not yet run keep their DRA bounds."""
        setup = self.prepare(query, known, stop)
        if isinstance(setup, ErrorOutcome):
            return setup
        search, pairs = setup.search, setup.pairs
        deadline = setup.start + timeout
        for position, pair in enumerate(pairs):
            floor = search.witnessed if search.witnessed is not None else -math.inf
            # the time left goes to the pairs that can still beat the witness, not to all of
            # them: where 1 of 20 pairs could, it used to get a twentieth of the time
            contenders = sum(p.dra_bound > floor for p in pairs[position:])
            share = (deadline - time.perf_counter()) / max(contenders, 1)
            if pair.dra_bound <= floor or share < MIN_RUN_SECONDS or setup.stop.stopped:
                pair.bound = pair.dra_bound  # cannot beat the witness, or no time left
                continue
            hint = setup.current_hint(share / 4)
            share = (deadline - time.perf_counter()) / contenders
            # below the witness a pair cannot raise the answer: stop once SCIP's bound is there
            extra = f"limits/dual = {floor!r}\n" if math.isfinite(floor) else ""
            result = self._run(setup, pair, max(share, MIN_RUN_SECONDS), None, extra, hint)
            bound = result.bound + setup.margin
            # without a cut, "no point at all" (-inf) is a solver failure, as is a bound
            # below a point already replayed
            trusted = result.bound > -math.inf and not setup.contradicts(pair, bound)
            pair.bound = min(pair.dra_bound, bound) if trusted else pair.dra_bound
            setup.stats["runs"][-1]["bound"] = pair.bound
        proven = max(p.bound for p in pairs)
        witnessed = search.witnessed if search.witnessed is not None else -math.inf
        if witnessed > proven:  # a replayed point beat a solver bound: fall back on the DRA
            setup.stats["inconsistent"] = True
            proven = max(p.dra_bound for p in pairs)
        verdict = Verdict.UNKNOWN
        if proven <= query.eps:
            verdict = Verdict.PROVED
        elif witnessed > query.eps:
            verdict = Verdict.FALSIFIED
        return self._outcome(setup, verdict, f"largest replayed error and a bound; {self._tolerance_note(setup)}",
                             proven)


def run_stats(pair: Pair, result: RunResult, found: float | None) -> dict:
    """One run, for reports: status, time, nodes, SCIP's bound, the replayed error."""
    return {"output": pair.output, "sign": pair.sign, "status": STATUS_NAMES.get(result.status, str(result.status)),
            "seconds": round(result.seconds, 3), "nodes": result.nodes, "dual_bound": result.bound,
            "objective": result.objective, "replayed": found, "dra_bound": pair.dra_bound, "bound": pair.bound}


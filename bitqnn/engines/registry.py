"""Engines by name: the one place the CLI, the spec checker and the benchmark look them up."""

from __future__ import annotations

from collections.abc import Callable

from bitqnn.engines.attack import AttackEngine
from bitqnn.engines.bounds_only import BoundsEngine
from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.milp import MilpEngine
from bitqnn.engines.portfolio import Handoff, SequentialPortfolio, Stage, ThreadRace


def _smt(backend: str = "z3"):
    from bitqnn.engines.smt import SmtEngine  # z3 loads only when asked for

    return SmtEngine(backend=backend)


# CPU seconds of the attack in `auto`'s race: its LP walks, then SCIP around their best point
NEIGHBOURHOOD_BUDGET = 15.0
CPSAT_SECONDS = 5.0  # CP-SAT's turn in its racing thread (10 s measured too: core 124 s against 118 s)
CLIMB_BUDGET = 60.0  # CPU seconds of the climb's thread: the rest of the query's minute


def _auto(workers: int):
    """Cheapest first: bounds and a gradient attack; then, with all that is left, a race of
    CP-SAT (a short try, then step cuts), SCIP on the same exact integer model, and the
    LP-guided attack for the counterexamples both searches miss.

    One race rather than stages, because every stage before SCIP delayed the hard proofs and
    a stage cut short loses its search. Measured on the core benchmark's slowest queries
    (one thread each, per term): SCIP proved in 0.1-0.9 s what CP-SAT needed 5-18 s for or
    left open at 60 s; on the terms CP-SAT proves in 0.4 s with two workers SCIP took
    0.1-0.24 s; the LP attack spent 1.6-4.9 s on queries it could not falsify. CP-SAT stays
    in the race: it finds some counterexamples sooner (image 24 at radius 2: 1.2 s against
    SCIP's 2.5 s). But it wins early or not at all (on the core and wide benchmarks, alone
    in at most 1.6 s), so after CPSAT_SECONDS its thread goes to the climb (`engines.climb`),
    which falsifies the core benchmark's last open query (image 20 at radius 3) in 27 to
    30 s. As a fourth thread the climb took CPU from SCIP's proofs instead: the wide
    benchmark lost two queries."""
    cpsat_then_climb = Handoff(CpSatEngine(workers=max(1, workers - 1)),
                               AttackEngine(budget=CLIMB_BUDGET, phases=("lp", "climb")), CPSAT_SECONDS)
    race = ThreadRace("race", [cpsat_then_climb, MilpEngine(),
                               AttackEngine(budget=NEIGHBOURHOOD_BUDGET, phases=("lp", "neighbourhood"))])
    return SequentialPortfolio("auto", [Stage(BoundsEngine()),
                                        Stage(AttackEngine(budget=0.5, phases=("gradient",)), share=0.1),
                                        Stage(race)])


FACTORIES: dict[str, Callable[[int], object]] = {
    "auto": _auto,
    "cpsat": lambda workers: CpSatEngine(workers=workers),
    "milp": lambda workers: MilpEngine(),
    "smt": lambda workers: _smt(),
    "yices": lambda workers: _smt("yices"),
    "attack": lambda workers: AttackEngine(),
    "bounds": lambda workers: BoundsEngine(),
    "enumerate": lambda workers: EnumerationEngine(),
}

ENGINE_NAMES = tuple(FACTORIES)


def make_engine(name: str, workers: int = 2):
    if name not in FACTORIES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    return FACTORIES[name](workers)

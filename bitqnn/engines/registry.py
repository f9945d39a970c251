"""Engines by name: the one place the CLI, the spec checker and the benchmark look them up."""

from __future__ import annotations

from collections.abc import Callable

from bitqnn.engines.attack import AttackEngine
from bitqnn.engines.bounds_only import BoundsEngine
from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.engines.enumeration import EnumerationEngine
from bitqnn.engines.milp import MilpEngine
from bitqnn.engines.portfolio import SequentialPortfolio, Stage, ThreadRace


def _smt(backend: str = "z3"):
    from bitqnn.engines.smt import SmtEngine  # z3 loads only when asked for

    return SmtEngine(backend=backend)


def _auto(workers: int):
    """Cheapest first: bounds; a gradient attack; CP-SAT alone for the quick proofs; the
    LP-guided attack for counterexamples CP-SAT's search misses; then, with all that is
    left, step cuts and CP-SAT raced against SCIP on the same exact integer model (one
    core each: on the core benchmark SCIP decides most of what CP-SAT leaves open)."""
    final = ThreadRace("cpsat+milp", [CpSatEngine(workers=max(1, workers - 1), first_try=False), MilpEngine()])
    return SequentialPortfolio("auto", [Stage(BoundsEngine()),
                                        Stage(AttackEngine(budget=0.5, phases=("gradient",)), share=0.1),
                                        Stage(CpSatEngine(workers=workers, cuts=False), cap=5.0),
                                        Stage(AttackEngine(budget=5.0, phases=("lp",)), share=0.2),
                                        Stage(final)])


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

"""What an engine is asked: a network, an input box, and the violation to search for.

Every property compiles to a violation in disjunctive normal form over the network's
integer outputs: the property fails exactly when, for some input in the box, all atoms
of some term hold. Engines only ever see this form, so a new property kind never
touches an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitqnn.qnn import QNN


@dataclass(frozen=True)
class LinearAtom:
    """sum(c * y[i] for i, c in terms) >= bound, over flat integer outputs."""

    terms: tuple[tuple[int, int], ...]
    bound: int

    def holds(self, outputs: np.ndarray) -> np.ndarray:
        outputs = np.atleast_2d(outputs)
        total = np.zeros(outputs.shape[0], dtype=object)
        for index, coeff in self.terms:
            total = total + outputs[:, index].astype(object) * coeff
        return np.asarray(total >= self.bound, dtype=bool)

    def describe(self) -> str:
        parts = []
        for index, coeff in self.terms:
            sign = "-" if coeff < 0 else "+"
            mag = "" if abs(coeff) == 1 else f"{abs(coeff)}*"
            parts.append(f"{sign} {mag}y[{index}]")
        text = " ".join(parts).lstrip("+ ") or "0"
        return f"{text} >= {self.bound}"


@dataclass(frozen=True)
class Violation:
    """The negated property as a DNF: a tuple of terms, each a conjunction of atoms."""

    terms: tuple[tuple[LinearAtom, ...], ...]

    def holds(self, outputs: np.ndarray) -> np.ndarray:
        outputs = np.atleast_2d(outputs)
        result = np.zeros(outputs.shape[0], dtype=bool)
        for term in self.terms:
            conj = np.ones(outputs.shape[0], dtype=bool)
            for atom in term:
                conj &= atom.holds(outputs)
            result |= conj
        return result

    def describe(self) -> str:
        return " or ".join("(" + " and ".join(a.describe() for a in t) + ")" for t in self.terms)


@dataclass(frozen=True, eq=False)
class Box:
    """Per-dimension integer bounds on the flat network input, both ends inclusive."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        if self.lo.shape != self.hi.shape:
            raise ValueError("box bounds differ in shape")
        if np.any(self.lo > self.hi):
            raise ValueError("box is empty: some lower bound exceeds its upper bound")

    @property
    def points(self) -> int:
        return int(np.prod((self.hi - self.lo + 1).astype(object)))

    def contains(self, x: np.ndarray) -> bool:
        x = np.asarray(x).reshape(-1)
        return x.shape == self.lo.shape and bool(np.all(x >= self.lo) and np.all(x <= self.hi))


@dataclass(frozen=True, eq=False)
class Query:
    """One proof obligation. `label` names it in reports (the statement and its line)."""

    network: QNN
    region: Box
    violation: Violation
    label: str = "query"
    options: dict = field(default_factory=dict)

    def check_witness(self, x: np.ndarray, outputs: np.ndarray) -> bool:
        return self.region.contains(x) and bool(self.violation.holds(outputs)[0])

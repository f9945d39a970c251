"""Properties as violations: the DNF an engine searches for.

Tie-breaking is part of the property, never an engine detail: `strict` counts a tie as
a violation (the safe reading), `lowest_index` follows numpy's argmax.
"""

from __future__ import annotations

from typing import Literal

from bitqnn.query import LinearAtom, Violation

TieBreak = Literal["strict", "lowest_index"]


def beats(winner: int, loser: int, tiebreak: TieBreak) -> LinearAtom:
    """The atom 'winner is at least as good as loser', i.e. loser is not the argmax over winner."""
    wins_ties = tiebreak == "lowest_index" and winner < loser
    # y[winner] - y[loser] >= 0 when a tie favours winner or ties count against the label
    bound = 0 if (tiebreak == "strict" or wins_ties) else 1
    return LinearAtom(((winner, 1), (loser, -1)), bound)


def robust_violation(label: int, n_outputs: int, tiebreak: TieBreak) -> Violation:
    """Some other class j displaces the label: one term per competitor."""
    return Violation(tuple((beats(j, label, tiebreak),) for j in range(n_outputs) if j != label))


def targeted_violation(target: int, n_outputs: int, tiebreak: TieBreak) -> Violation:
    """The target becomes the argmax: it beats every other class at once."""
    return Violation((tuple(beats(target, j, tiebreak) for j in range(n_outputs) if j != target),))

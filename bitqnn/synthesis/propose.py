"""Cheap bounds that steer the search: per-layer proposals and tie-breaks, never verdicts.

In the spirit of Quadapter's per-layer analysis, each layer's widths are first judged
alone: every other layer stays at its widest, this one is narrowed, and symbolic bounds
(one back-substitution per property, no solver) count the property cases they leave open.
The narrowest width of each field that leaves no more open cases than the widest network
does is a guess that the layer tolerates it; the guesses combined are one proposed
candidate, which the search then certifies or refutes exactly like any other. Only the
robust, targeted and linear keeps inform the count; error-bound, bit-flip and backdoor
keeps must still hold, but do not steer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bitqnn.query import Query
from bitqnn.symbolic import analysis_of
from bitqnn.synthesis.space import Candidate, SearchSpace


def open_cases(obligations) -> int:
    """Cases of the plain robustness/targeted/linear properties that symbolic bounds do not close."""
    total = 0
    for obligation in obligations:
        query = obligation.query
        if isinstance(query, Query):
            remaining, _ = analysis_of(query).prune(query.violation)
            total += len(remaining.terms)
    return total


def per_layer_proposal(space: SearchSpace, open_cases_of: Callable[[Candidate], int]) -> Candidate:
    """Each layer's width fields set, one at a time, to the narrowest choice bounds accept."""
    widest = space.largest()
    reference = open_cases_of(widest)
    settings = list(widest.layers)
    for index, choices in enumerate(space.layers):
        for field in ("weights", "activations"):
            options = getattr(choices, field)
            if not options:
                continue
            for width in options:  # ascending: the first accepted is the narrowest
                alone = list(widest.layers)
                alone[index] = replace(alone[index], **{field: width})
                if width == options[-1] or open_cases_of(Candidate(tuple(alone))) <= reference:
                    settings[index] = replace(settings[index], **{field: width})
                    break
    return Candidate(tuple(settings))

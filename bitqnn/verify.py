"""The pipeline for one obligation: engine -> outcome -> replay -> result.

Results are plain data so that every report format (table, JSON, VNN-COMP) renders the
same facts. A FALSIFIED result exists only after its witness has replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Query
from bitqnn.replay import replay


@dataclass(frozen=True)
class Result:
    label: str
    verdict: Verdict
    engine: str
    seconds: float
    reason: str = ""
    witness: list[int] | None = None
    witness_real: list[float] | None = None
    outputs: list[int] | None = None
    outputs_real: list[float] | None = None
    onnxruntime_checked: bool = False
    stats: dict = field(default_factory=dict)
    flips: list[str] | None = None  # a bit-flip counterexample's flipped bits, described
    patch: dict | None = None  # a backdoor counterexample's trigger patch (bitqnn.backdoor), described


def verify(query: Query, engine, timeout: float) -> Result:
    """Solve with an engine object (see `engines.registry.make_engine`) and replay any witness."""
    return settle(query, engine.solve(query, timeout))


def settle(query: Query, outcome: Outcome) -> Result:
    """An outcome as a Result; a witness, whoever found it, replays first or raises ReplayMismatch."""
    stats = {k: v for k, v in outcome.stats.items() if isinstance(v, int | float | str)}
    if outcome.verdict is not Verdict.FALSIFIED:
        return Result(query.label, outcome.verdict, outcome.engine, outcome.seconds, outcome.reason, stats=stats)
    checked = replay(query, outcome.witness, outcome.engine)
    qnn = query.network
    return Result(
        query.label, outcome.verdict, outcome.engine, outcome.seconds, outcome.reason,
        witness=checked.input.tolist(),
        witness_real=[float(v) for v in qnn.dequantize_input(checked.input)],
        outputs=checked.outputs.tolist(),
        outputs_real=[float(v) for v in qnn.dequantize_output(checked.outputs)],
        onnxruntime_checked=checked.onnxruntime_checked, stats=stats)


def summarize(results: list[Result]) -> dict[str, int]:
    counts = {v.value: 0 for v in Verdict}
    for result in results:
        counts[result.verdict.value] += 1
    return counts


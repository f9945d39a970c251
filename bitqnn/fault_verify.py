"""The pipeline for a property under bit flips: engine -> outcome -> replay -> result.

A counterexample names an input and the flipped bits. Before it is reported, the flips
are checked against the fault model (budget, scope, selected parameters and bits), put
into a copy of the network, and the input is replayed on the exact executor with those
faulty parameters.
"""

from __future__ import annotations

from dataclasses import replace

from bitqnn.faults import FaultQuery, Flip, apply_flips, stored_values, weighted_layers
from bitqnn.outcome import Verdict
from bitqnn.replay import ReplayMismatch, check_on_executor, replay
from bitqnn.verify import Result

FAULT_ENGINES = ("auto", "cpsat", "milp", "smt", "enumerate")


def make_fault_engine(name: str):
    if name in ("auto", "cpsat", "milp"):
        from bitqnn.engines.faults import FaultEngine

        return FaultEngine(name)
    if name == "smt":
        from bitqnn.engines.smt_faults import SmtFaultEngine

        return SmtFaultEngine()
    if name == "enumerate":
        from bitqnn.engines.fault_enumeration import FaultEnumerationEngine

        return FaultEnumerationEngine()
    raise ValueError(f"engine {name!r} does not analyse bit flips; choose one of {', '.join(FAULT_ENGINES)}")


def check_flips(fq: FaultQuery, flips: tuple[Flip, ...], engine: str) -> None:
    """The flips must be ones the fault model allows; anything else is an engine bug."""
    model, qnn = fq.model, fq.query.network
    weighted = weighted_layers(qnn)
    problem = ""
    if len(set(flips)) != len(flips) or len(flips) > model.k:
        problem = f"{len(flips)} flips for a budget of {model.k}"
    elif model.scope == "one" and len({(f.layer, f.kind, f.index) for f in flips}) > 1:
        problem = "flips in more than one parameter under scope one"
    for flip in flips:
        if problem:
            break
        layer = qnn.layers[flip.layer]
        storage = layer.bias_storage if flip.kind == "biases" else layer.weight_storage
        chosen = [s for s in model.params if weighted[s.layer] == flip.layer and s.kind == flip.kind
                  and (s.indices is None or flip.index in s.indices)]
        if not chosen or flip.bit not in model.bits.positions_for(storage):
            problem = f"flip {flip} is outside the fault model"
    if problem:
        raise ReplayMismatch(f"{fq.label}: engine {engine} returned {problem}")


def verify_fault(fq: FaultQuery, engine, timeout: float) -> Result:
    outcome = engine.solve(fq, timeout)
    stats = {k: v for k, v in outcome.stats.items() if isinstance(v, int | float | str)}
    stats["fault_model"] = fq.model.describe()
    if outcome.verdict is not Verdict.FALSIFIED:
        return Result(fq.label, outcome.verdict, outcome.engine, outcome.seconds, outcome.reason, stats=stats)
    query = fq.query
    check_flips(fq, outcome.flips, outcome.engine)
    if not outcome.flips:
        checked = replay(query, outcome.witness, outcome.engine)
        inputs, outputs, runtime = checked.input, checked.outputs, checked.onnxruntime_checked
    else:
        faulty = replace(query, network=apply_flips(query.network, outcome.flips))
        outputs = check_on_executor(faulty, outcome.witness, outcome.engine)
        inputs, runtime = outcome.witness, False
    qnn = query.network
    described = [flip.describe(qnn, *stored_values(qnn, flip, outcome.flips)) for flip in outcome.flips]
    return Result(fq.label, outcome.verdict, outcome.engine, outcome.seconds, outcome.reason,
                  witness=inputs.tolist(), witness_real=[float(v) for v in qnn.dequantize_input(inputs)],
                  outputs=outputs.tolist(), outputs_real=[float(v) for v in qnn.dequantize_output(outputs)],
                  onnxruntime_checked=runtime, stats=stats, flips=described)

"""The deliverable of a synthesis: a quantized ONNX model, a spec that re-proves it, and a certificate.

The search certifies candidates in bitqnn's fixed-point semantics. What gets deployed is the
ONNX file, so the certificate's verdicts are not copied from the search: every kept property
is proved again, by the exact engine, on the model imported back from the written file
(onnxruntime's integer-kernel semantics). The generated spec states the same properties of
that file, so `bitqnn prove` on it reproduces the certificate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitqnn.floatnet import FloatConv2d, FloatDense
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, Conv2d, Dense
from bitqnn.quantize import weight_fraction_bits
from bitqnn.spec.synth import SynthesisSpec, relocate_paths
from bitqnn.synthesis.deploy import deliver
from bitqnn.synthesis.search import Attempt, Synthesis
from bitqnn.verify import Result


@dataclass(frozen=True)
class Certificate:
    data: dict  # what certificate.json holds
    reverified: bool  # every kept property PROVED again on the written ONNX model
    files: tuple[Path, ...]


def layer_table(spec: SynthesisSpec, attempt: Attempt, qnn: QNN) -> list[dict]:
    """Per linear layer, the widths and the fraction bits in effect (the quantizer's own when unset)."""
    rows = []
    dense = [layer for layer in spec.problem.float_net.layers if isinstance(layer, FloatDense | FloatConv2d)]
    scales = qnn.layer_scales or ()
    linear_positions = [i for i, layer in enumerate(qnn.layers) if isinstance(layer, Dense | Conv2d)]
    for index, (setting, layer) in enumerate(zip(attempt.candidate.layers, dense, strict=True)):
        weight_frac = weight_fraction_bits(layer.weight, setting.weights, setting.weight_frac)
        activation_frac = None
        if setting.activations is not None and scales:
            activation_frac = int(round(-np.log2(float(scales[linear_positions[index]][0]))))
        rows.append({"layer": index, "weights": setting.weights, "weight_frac": weight_frac,
                     "activations": setting.activations, "activation_frac": activation_frac})
    return rows


def search_summary(synthesis: Synthesis) -> dict:
    attempts = synthesis.attempts
    reused = sum(1 for a in attempts if a.solver_runs == 0 and a.status == "refuted")
    first = synthesis.first_certified
    return {
        "candidates_tried": len(attempts),
        "certified": sum(a.status == "certified" for a in attempts),
        "refuted": sum(a.status == "refuted" for a in attempts),
        "refuted_by_reused_counterexample": reused,
        "unknown": sum(a.status == "unknown" for a in attempts),
        "invalid": sum(a.status == "invalid" for a in attempts),
        "solver_runs": sum(a.solver_runs for a in attempts),
        "seconds": round(synthesis.seconds, 3),
        "first_certified_after_seconds": None if first is None else round(first.finished_at, 3),
        "final_certified_after_seconds": None if synthesis.best is None else round(synthesis.best.finished_at, 3),
        "stopped": synthesis.stopped,
    }


def write_certificate(spec: SynthesisSpec, synthesis: Synthesis, out_dir: Path, answer) -> Certificate:
    """Export the best candidate, re-prove every kept property on the file, write everything down."""
    out_dir.mkdir(parents=True, exist_ok=True)
    best, uniform = synthesis.best, synthesis.best_uniform
    data: dict = {
        "synthesize": spec.text, "at": f"{spec.pos.file}:{spec.pos.line}", "cost": spec.problem.cost,
        "search_space": spec.problem.space.size(), "budget_seconds": spec.problem.budget,
        "search": search_summary(synthesis),
        "uniform_baseline": None if uniform is None else {
            "width": uniform.candidate.uniform_width(), "cost": uniform.cost},
        "result": "certified" if best is not None else "no candidate certified",
    }
    files: list[Path] = []
    reverified = False
    if best is not None:
        qnn = spec.problem.quantize(best.candidate)
        onnx_path = out_dir / f"{spec.name}.onnx"
        deployed, obligations = deliver(qnn, onnx_path, spec.problem.obligations_for)
        results = [answer(o, o.options["engine"], o.options["timeout"]) for o in obligations]
        reverified = all(r.verdict is Verdict.PROVED for r in results)
        spec_path = out_dir / f"{spec.name}.qspec"
        spec_path.write_text(certificate_spec(spec, out_dir, onnx_path), encoding="utf-8")
        files += [onnx_path, spec_path]
        data.update({
            "candidate": {"describe": best.candidate.describe(), "cost": best.cost,
                          "layers": layer_table(spec, best, qnn)},
            "semantics": {"search": qnn.describe(), "onnx": deployed.describe()},
            "properties": [_property_row(text, best.results[index], onnx)
                           for index, (text, onnx) in enumerate(zip(spec.keep_texts, results, strict=True))],
            "reverified_on_onnx": reverified,
            "files": {"onnx": onnx_path.name, "spec": spec_path.name},
        })
    json_path, md_path = out_dir / "certificate.json", out_dir / "certificate.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(data), encoding="utf-8")
    return Certificate(data, reverified, (*files, json_path, md_path))


def _property_row(text: str, search: Result, onnx: Result) -> dict:
    return {"property": text, "search": {"verdict": search.verdict.value, "engine": search.engine,
                                         "seconds": round(search.seconds, 3)},
            "onnx": {"verdict": onnx.verdict.value, "engine": onnx.engine, "seconds": round(onnx.seconds, 3),
                     "reason": onnx.reason}}


def certificate_spec(spec: SynthesisSpec, out_dir: Path, onnx_path: Path) -> str:
    """The spec's definitions (paths moved to resolve from out_dir), the file as the network, the keeps."""
    options = ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                        for name, value in spec.keep_options.items())
    lines = [f"# Generated by bitqnn synthesize from {spec.pos.file}:{spec.pos.line}. `bitqnn prove` on this",
             "# file re-proves every property the synthesized quantization was certified for.",
             f"options {options}",
             relocate_paths(spec.definitions, spec.spec_dir, out_dir),
             f'network {spec.name} = onnx "{onnx_path.name}"']
    lines += [f"prove {relocate_paths(text, spec.spec_dir, out_dir)}" for text in spec.keep_texts]
    return "\n".join(lines) + "\n"


def markdown(data: dict) -> str:
    lines = [f"# Certificate: {data['synthesize']}", "", f"Statement at `{data['at']}`; cost `{data['cost']}`; "
             f"{data['search_space']} candidates in the search space.", "", f"**Result: {data['result']}.**", ""]
    if "candidate" in data:
        candidate = data["candidate"]
        lines += [f"Chosen: `{candidate['describe']}` (cost {candidate['cost']:g}).", "",
                  "| layer | weight bits | weight fraction bits | activation bits | activation fraction bits |",
                  "|---|---|---|---|---|"]
        for row in candidate["layers"]:
            lines.append(f"| {row['layer']} | {row['weights']} | {row['weight_frac']} | "
                         f"{row['activations'] if row['activations'] is not None else 'accumulator'} | "
                         f"{row['activation_frac'] if row['activation_frac'] is not None else '-'} |")
        lines += ["", f"Re-verified on the written ONNX model: **{'yes' if data['reverified_on_onnx'] else 'NO'}**.",
                  "", "| property | search verdict | ONNX verdict | engine | seconds |", "|---|---|---|---|---|"]
        for row in data["properties"]:
            onnx = row["onnx"]
            lines.append(f"| `{row['property']}` | {row['search']['verdict']} | {onnx['verdict']} | "
                         f"{onnx['engine']} | {onnx['seconds']:.2f} |")
    baseline = data["uniform_baseline"]
    lines += ["", "Cheapest certified uniform width: " + ("none" if baseline is None else
                                                          f"{baseline['width']} bits (cost {baseline['cost']:g})")]
    search = data["search"]
    lines += ["", "| search | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in search.items()]
    return "\n".join(lines) + "\n"

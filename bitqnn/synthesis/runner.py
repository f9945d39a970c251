"""`bitqnn synthesize`: run each synthesize statement, write its certificate, summarise.

Exit codes follow `bitqnn prove`: 0 when every statement produced a quantization that was
re-proved on its written ONNX model, 20 when some statement certified nothing (or its
re-verification did not finish), 3 when a written model failed a property its candidate
was certified for -- a semantics mismatch, never a verdict.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from bitqnn.answer import Answerer
from bitqnn.cli import EXIT_PROVED, EXIT_UNKNOWN
from bitqnn.outcome import Verdict
from bitqnn.spec.synth import SynthesisSpec
from bitqnn.synthesis.certificate import Certificate, write_certificate
from bitqnn.synthesis.search import Synthesizer


class CertificateMismatch(RuntimeError):
    """The written ONNX model failed a property its candidate was certified for."""


def output_dir(spec: SynthesisSpec, out: Path | None, several: bool) -> Path:
    if out is not None:
        return out / spec.name if several else out
    return spec.write if spec.write is not None else spec.spec_dir / f"{spec.name}.synth"


def run_syntheses(syntheses: list[SynthesisSpec], out: Path | None, budget: float | None, workers: int,
                  as_json: bool) -> int:
    answer = Answerer(workers)
    certificates: list[Certificate] = []
    for spec in syntheses:
        if budget is not None:
            spec = replace(spec, problem=replace(spec.problem, budget=budget))
        synthesis = Synthesizer(spec.problem, answer, label=spec.text).run()
        target = output_dir(spec, out, len(syntheses) > 1)
        print(f"[{spec.text}] writing the certificate into {target} (re-proving every property on the ONNX model)",
              file=sys.stderr, flush=True)
        certificate = write_certificate(spec, synthesis, target, answer)
        _check_agreement(certificate)
        certificates.append(certificate)
        if not as_json:
            print(_summary(certificate))
    if as_json:
        print(json.dumps([c.data for c in certificates], indent=2))
    # a mismatch has raised by now, and the CLI turns it into exit code 3
    return EXIT_PROVED if all(c.reverified for c in certificates) else EXIT_UNKNOWN


def _check_agreement(certificate: Certificate) -> None:
    for row in certificate.data.get("properties", []):
        if row["onnx"]["verdict"] == Verdict.FALSIFIED.value:
            raise CertificateMismatch(f"the written model fails '{row['property']}', which its candidate was "
                                      f"certified for: {row['onnx']['reason']}")


def _summary(certificate: Certificate) -> str:
    data = certificate.data
    search = data["search"]
    lines = [f"{data['synthesize']} ({data['at']}): {data['result']}"]
    if "candidate" in data:
        lines.append(f"  chosen      {data['candidate']['describe']}  ({data['cost']} {data['candidate']['cost']:g})")
    baseline = data["uniform_baseline"]
    lines.append("  uniform     " + ("none certified" if baseline is None
                                     else f"{baseline['width']} bits ({data['cost']} {baseline['cost']:g})"))
    lines.append(f"  search      {search['candidates_tried']} candidates ({search['certified']} certified, "
                 f"{search['refuted']} refuted, {search['refuted_by_reused_counterexample']} of them by reused "
                 f"counterexamples, {search['unknown']} unknown) in {search['seconds']:.1f}s; "
                 f"stopped at: {search['stopped']}")
    if "candidate" in data:
        lines.append(f"  re-proved   on the written ONNX model: {'yes' if data['reverified_on_onnx'] else 'NO'}")
    lines.append("  files       " + ", ".join(str(path) for path in certificate.files))
    return "\n".join(lines)

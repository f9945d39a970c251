"""`bitqnn bench bitflip`: resilience to bit flips in stored weights, BFAVerifier's setting.

Models: float ReLU MLPs trained on MNIST (benchmarks/train_bitflip.py: trained on the
first 8000 images of the shared MNIST test set, since that is the MNIST data at hand),
quantized into 8-bit fixed point (weights and activations 8 bits, 8-bit input with 8
fraction bits). Queries: --images correctly classified held-out images (index 8000 on,
after the first --first-image of them), L-inf radius r pixel steps, and robustness of
the true label under at most k flipped bits of one stored weight anywhere in the network
(scope "one", every bit position: BFAVerifier's fault model). Reported per model, radius and k: decided
counts, median and maximum time, and the share of candidate flips pruned before any
exact solving. Reads ../shared/data, so it is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bitqnn.bench import image_range_error, make_queries
from bitqnn.engines.faults import FaultEngine
from bitqnn.fault_verify import verify_fault
from bitqnn.faults import BitSelection, FaultModel, FaultQuery, ParamSelection, weighted_layers
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, execute
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point

CONFIG = FixedPointConfig(weights=8, activations=8, input_bits=8, input_frac=8)
HELD_OUT = 8000  # images before this index trained the models
DEFAULT_MODELS = ("benchmarks/models/mnist_784_100.onnx,benchmarks/models/mnist_784_100x3.onnx,"
                  "benchmarks/models/mnist_784_512x3.onnx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated float ONNX models")
    parser.add_argument("--data", default="../shared/data/mnist_test.npz")
    parser.add_argument("--images", type=int, default=20, help="correctly classified held-out images per setting")
    parser.add_argument("--first-image", type=int, default=0,
                        help="skip this many of them (to extend or split a run; labels keep their numbers)")
    parser.add_argument("--radii", default="0,1,2")
    parser.add_argument("--k", default="1,2", help="comma-separated flip budgets")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per query")
    parser.add_argument("--out", default="bench-results/bitflip.json")


def weight_faults(qnn: QNN, k: int) -> FaultModel:
    layers = len(weighted_layers(qnn))
    return FaultModel(k, tuple(ParamSelection(i, "weights") for i in range(layers)), BitSelection("all"), "one")


def run_bitflip_benchmark(args: argparse.Namespace) -> int:
    models = [m for m in args.models.split(",") if m]
    try:
        radii = [int(r) for r in args.radii.split(",")]
        budgets = [int(k) for k in args.k.split(",")]
    except ValueError:
        print(f"bitqnn: error: --radii and --k take comma-separated integers, got {args.radii!r}, {args.k!r}",
              file=sys.stderr)
        return 2
    complaint = image_range_error(args.images, args.first_image)
    if complaint:
        print(f"bitqnn: error: {complaint}", file=sys.stderr)
        return 2
    for path in [*models, args.data]:
        if not Path(path).exists():
            print(f"bitqnn: error: {path} does not exist (run from the repository root, or pass --models/--data)",
                  file=sys.stderr)
            return 2
    from bitqnn.onnx_io import load_float

    archive = np.load(args.data)
    x_all = archive["x_test"].reshape(len(archive["x_test"]), -1).astype(np.int64)
    y_all = archive["y_test"].astype(np.int64)
    engine = FaultEngine("auto")
    rows, summaries = [], []
    for model in models:
        qnn = quantize_fixed_point(load_float(model), CONFIG, x_all[:2000] / 256.0)
        predicted = execute(qnn, x_all[HELD_OUT:]).argmax(axis=1)
        correct = np.flatnonzero(predicted == y_all[HELD_OUT:])
        accuracy = len(correct) / len(predicted)
        chosen = HELD_OUT + correct[args.first_image:args.first_image + args.images]
        name = Path(model).stem
        print(f"{name}: {CONFIG.describe()}; held-out accuracy {accuracy:.4f}", flush=True)
        for k in budgets:
            faults = weight_faults(qnn, k)
            for query in make_queries(qnn, x_all[chosen], y_all[chosen], radii, args.first_image):
                result = verify_fault(FaultQuery(query, faults), engine, args.timeout)
                stats = result.stats
                pruned = (stats["candidate_flips"] - stats["remaining_flips"]) / stats["candidate_flips"] \
                    if "candidate_flips" in stats else None
                radius = int(query.label.rsplit(" ", 1)[1])
                rows.append({"model": name, "k": k, "radius": radius, "query": query.label,
                             "verdict": result.verdict.value, "engine": result.engine, "seconds": result.seconds,
                             "reason": result.reason, "pruned_share": pruned, "flips": result.flips,
                             "stats": stats})
                print(f"  [{name} k={k}] {query.label}: {result.verdict.value} {result.seconds:.1f}s "
                      f"{result.engine}" + (f" pruned {pruned:.4%}" if pruned is not None else "")
                      + (f" ({result.reason})" if result.reason else ""), flush=True)
                _write(args, summaries, rows)  # after every query, so a long run can be read (or cut) midway
            for radius in radii:
                summaries.append(_summary(name, accuracy, k, radius,
                                          [r for r in rows if (r["model"], r["k"], r["radius"]) == (name, k, radius)]))
    _print_table(summaries)
    print(f"wrote {_write(args, summaries, rows)}")
    return 0


def _write(args: argparse.Namespace, summaries: list[dict], rows: list[dict]) -> Path:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": CONFIG.describe(), "timeout_s": args.timeout, "fault_model":
                               "scope one, all weights, all bits", "summary": summaries, "per_query": rows},
                              indent=2))
    return out


def _summary(model: str, accuracy: float, k: int, radius: int, rows: list[dict]) -> dict:
    times = [r["seconds"] for r in rows]
    pruned = [r["pruned_share"] for r in rows if r["pruned_share"] is not None]
    counts = {v.value: sum(r["verdict"] == v.value for r in rows) for v in Verdict}
    return {"model": model, "accuracy": accuracy, "k": k, "radius": radius, "queries": len(rows), **counts,
            "median_s": statistics.median(times) if times else 0.0, "max_s": max(times, default=0.0),
            "mean_pruned_share": float(np.mean(pruned)) if pruned else None,
            "decided_by": {e: sum(r["engine"] == e for r in rows) for e in sorted({r["engine"] for r in rows})}}


def _print_table(summaries: list[dict]) -> None:
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"\nbit-flip benchmark ({started}): scope one, every bit of every weight")
    print(f"{'model':<18} {'k':>2} {'r':>2} {'n':>3} {'proved':>6} {'falsif':>6} {'unknown':>7} "
          f"{'median':>8} {'max':>8} {'pruned':>8}")
    for s in summaries:
        share = "-" if s["mean_pruned_share"] is None else f"{s['mean_pruned_share']:.2%}"
        print(f"{s['model']:<18} {s['k']:>2} {s['radius']:>2} {s['queries']:>3} {s['proved']:>6} "
              f"{s['falsified']:>6} {s['unknown']:>7} {s['median_s']:>7.1f}s {s['max_s']:>7.1f}s {share:>8}")

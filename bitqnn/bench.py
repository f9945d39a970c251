"""`bitqnn bench robustness`: the core benchmark, every engine on the same queries in one process.

Model: a float MLP from benchmarks/models quantized into 6-bit fixed point (8-bit input
with 8 fraction bits, so one input step is one pixel level of x/256 inputs). Queries:
L-inf robustness of the true label around correctly classified test images. Reads the
data from ../shared/data, so it is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bitqnn.bounds import interval_bounds
from bitqnn.engines.registry import ENGINE_NAMES, make_engine
from bitqnn.outcome import Verdict
from bitqnn.properties import robust_violation
from bitqnn.qnn import QNN, execute
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point
from bitqnn.query import Box, Query
from bitqnn.symbolic import SymbolicAnalysis
from bitqnn.verify import Result, verify

CONFIG = FixedPointConfig(weights=6, activations=6, input_bits=8, input_frac=8)


class BenchInputError(Exception):
    pass


def image_range_error(images: int, first_image: int) -> str | None:
    """The one-line complaint about an --images/--first-image pair, checked before any file is read."""
    if images < 1 or first_image < 0:
        return f"--images must be >= 1 and --first-image >= 0, got {images}, {first_image}"
    return None


def load_benchmark(model: str, data: str, images: int) -> tuple[QNN, np.ndarray, np.ndarray, int]:
    from bitqnn.onnx_io import load_float

    for path in (model, data):
        if not Path(path).exists():
            raise BenchInputError(f"{path} does not exist (run from the repository root, or pass --model/--data)")
    net = load_float(model)
    archive = np.load(data)
    calibration = archive["x_train"][:2000].reshape(2000, -1) / 256.0
    qnn = quantize_fixed_point(net, CONFIG, calibration)
    x_test = archive["x_test"].reshape(len(archive["x_test"]), -1).astype(np.int64)
    y_test = archive["y_test"].astype(np.int64)
    predictions = execute(qnn, x_test[:1000]).argmax(axis=1)
    accuracy = float((predictions == y_test[:1000]).mean())
    chosen = [i for i in range(len(predictions)) if predictions[i] == y_test[i]][:images]
    skipped = chosen[-1] + 1 - len(chosen) if chosen else 0
    print(f"model {model}: {CONFIG.describe()}; test accuracy {accuracy:.4f} on 1000 images; "
          f"{len(chosen)} correctly classified images used ({skipped} misclassified skipped)", flush=True)
    return qnn, x_test[chosen], y_test[chosen], skipped


def make_queries(qnn: QNN, images: np.ndarray, labels: np.ndarray, radii: list[int],
                 first: int = 0) -> list[Query]:
    """Robustness of each label on each radius's box; `first` numbers the images from there
    (a run over later images keeps the labels of a run over all of them)."""
    queries = []
    for radius in radii:
        for number, (x, label) in enumerate(zip(images, labels, strict=True), start=first):
            box = Box(np.maximum(x - radius, qnn.input_lo), np.minimum(x + radius, qnn.input_hi))
            queries.append(Query(qnn, box, robust_violation(int(label), qnn.output_size, "strict"),
                                 label=f"image {number} radius {radius}"))
    return queries


def summarize_engine(results: list[Result]) -> dict:
    times = sorted(r.seconds for r in results)
    counts = {v.value: sum(r.verdict is v for r in results) for v in Verdict}
    decided = counts["proved"] + counts["falsified"]
    stages: dict[str, dict[str, int]] = {}
    for r in results:
        if r.verdict is not Verdict.UNKNOWN:
            stage = stages.setdefault(r.engine.split(":")[-1], {"proved": 0, "falsified": 0})
            stage[r.verdict.value] += 1
    return {**counts, "decided_share": decided / len(results), "median_s": statistics.median(times),
            "p95_s": times[min(len(times) - 1, int(0.95 * len(times)))],
            "total_s": sum(times), "max_s": max(times), "decided_by": stages}


def measure_bounds(queries: list[Query], radii: list[int]) -> dict:
    """Mean unstable neurons per radius under interval and symbolic bounds: what the
    symbolic analysis buys before any solver runs."""
    per_radius: dict[int, dict[str, float]] = {}
    for radius in radii:
        chosen = [q for q in queries if q.label.endswith(f"radius {radius}")]
        interval = [interval_bounds(q.network, q.region).unstable_neurons(q.network)[0] for q in chosen]
        symbolic = [SymbolicAnalysis(q.network, q.region).bounds.unstable_neurons(q.network)[0] for q in chosen]
        per_radius[radius] = {"interval_unstable": float(np.mean(interval)),
                              "symbolic_unstable": float(np.mean(symbolic))}
    return per_radius


def run_benchmark(args: argparse.Namespace) -> int:
    engines = args.engines.split(",")
    unknown = [name for name in engines if name not in ENGINE_NAMES]
    if unknown:
        print(f"bitqnn: error: unknown engine {unknown[0]!r}; choose from {', '.join(ENGINE_NAMES)}", file=sys.stderr)
        return 2
    solvers = {name: make_engine(name) for name in engines}  # every engine loads before the first query
    try:
        qnn, images, labels, _ = load_benchmark(args.model, args.data, args.images)
    except BenchInputError as error:
        print(f"bitqnn: error: {error}", file=sys.stderr)
        return 2
    radii = [int(r) for r in args.radii.split(",")]
    queries = make_queries(qnn, images, labels, radii)
    _, total = interval_bounds(qnn, queries[0].region).unstable_neurons(qnn)
    report: dict = {"model": args.model, "config": CONFIG.describe(), "queries": len(queries),
                    "radii": radii, "hidden_neurons": total, "bounds": measure_bounds(queries, radii),
                    "engines": {}}
    per_query: dict[str, list[dict]] = {}
    for position, engine in enumerate(engines):
        timeout = args.timeout if position == 0 or args.smt_timeout is None else args.smt_timeout
        results = []
        started = time.perf_counter()
        for number, query in enumerate(queries, start=1):
            result = verify(query, solvers[engine], timeout)
            results.append(result)
            print(f"  [{engine} {number}/{len(queries)}] {query.label}: {result.verdict.value} "
                  f"{result.seconds:.2f}s {result.engine}", flush=True)
        summary = summarize_engine(results)
        summary["timeout_s"] = timeout
        summary["wall_s"] = time.perf_counter() - started
        summary["by_radius"] = by_radius(results, queries, radii)
        report["engines"][engine] = summary
        per_query[engine] = query_rows(queries, results)
    _print_table(report, engines)
    _check_agreement(per_query)
    write_report(args.out, report, per_query)
    return 0


def by_radius(results: list[Result], queries: list[Query], radii: list[int]) -> dict:
    return {r: summarize_engine([res for res, q in zip(results, queries, strict=True)
                                 if q.label.endswith(f"radius {r}")]) for r in radii}


def query_rows(queries: list[Query], results: list[Result]) -> list[dict]:
    return [{"query": q.label, "verdict": r.verdict.value, "seconds": r.seconds, "decided_by": r.engine}
            for q, r in zip(queries, results, strict=True)]


def write_report(path: str, report: dict, per_query: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "per_query": per_query}, indent=2))
    print(f"wrote {out}")


def _print_table(report: dict, engines: list[str]) -> None:
    print(f"\n{report['queries']} queries, radii {report['radii']}")
    print(f"{'engine':<10} {'timeout':>7} {'proved':>7} {'falsif.':>7} {'unknown':>7} {'decided':>8} "
          f"{'median':>8} {'total':>9}")
    for engine in engines:
        s = report["engines"][engine]
        print(f"{engine:<10} {s['timeout_s']:>6.0f}s {s['proved']:>7} {s['falsified']:>7} {s['unknown']:>7} "
              f"{s['decided_share']:>7.1%} {s['median_s']:>7.2f}s {s['total_s']:>8.1f}s")
    base = report["engines"][engines[0]]
    for engine in engines[1:]:
        other = report["engines"][engine]
        print(f"ratio {engine}/{engines[0]}: total time x{other['total_s'] / max(base['total_s'], 1e-9):.1f}, "
              f"median x{other['median_s'] / max(base['median_s'], 1e-9):.1f}")
    for engine in engines:
        for radius, s in report["engines"][engine]["by_radius"].items():
            print(f"  {engine} radius {radius}: {s['proved']} proved, {s['falsified']} falsified, "
                  f"{s['unknown']} unknown, median {s['median_s']:.2f}s, decided by {s['decided_by']}")
    for radius, b in report["bounds"].items():
        print(f"  radius {radius}: unstable neurons of {report['hidden_neurons']}, mean: "
              f"{b['interval_unstable']:.1f} with intervals, {b['symbolic_unstable']:.1f} with symbolic bounds")


def _check_agreement(per_query: dict[str, list[dict]]) -> None:
    """Two exact engines must never contradict each other; say so loudly if they do."""
    engines = list(per_query)
    conflicts = 0
    for i, rows in enumerate(zip(*per_query.values(), strict=True)):
        decided = {r["verdict"] for r in rows if r["verdict"] != "unknown"}
        if len(decided) > 1:
            conflicts += 1
            print(f"CONFLICT on query {i}: {dict(zip(engines, [r['verdict'] for r in rows], strict=True))}")
    queries = len(next(iter(per_query.values()), []))
    print(f"engine agreement: {conflicts} conflicts over {queries} queries")

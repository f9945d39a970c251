"""`bitqnn bench errorbound`: QEBVerif's quantization error-bound benchmark on Fashion-MNIST.

Models: float ReLU MLPs with 1, 2 and 3 hidden layers of 100 neurons
(benchmarks/train_errorbound.py and benchmarks/train_fashion.py), each quantized into
Q-bit fixed point (weights and activations Q bits, 8-bit input with 8 fraction bits, so
one input step is one pixel level of the x/256 inputs) for every Q of --bits. A "model"
below is one such float model at one Q: the error scale moves by orders of magnitude with
Q, so nothing is shared across Q.

Queries: the first --images test images (not only the correctly classified ones: an error
bound says nothing about the label), the L-inf box of --radius pixel steps around each
(clipped to 0..255), and the question max_x |QNN(x) - f(x)| <= eps over all 10 outputs.

The eps grid, one per model and shared by all its images, is chosen so that it spans the
proved/falsified boundary instead of being fixed in advance (a fixed grid such as
QEBVerif's 1..8 is all-falsified at Q=4 and all-proved at Q=10). Per image i the
symbolic DRA bound U_i (sound: max error <= U_i) and the largest error L_i that
`search_error` finds in --search-budget seconds (a replayed point: max error >= L_i) are
computed. With L = median L_i and U = median U_i, the grid is --eps-count values spaced
geometrically from L/2 to 1.2*U, both ends included, rounded to 3 significant digits.
So the smallest values are below nearly every image's found error (falsified), the largest
are above nearly every image's DRA bound (proved by DRA alone), and the middle ones lie in
the gap that only a complete engine closes. The search runs for wall-clock seconds, so
two runs choose grids a few percent apart; --eps-from takes every grid from an earlier
run's report instead, so that two versions of the pipeline answer the same tasks.

Reported per model: DRA-only decided counts (DRA can only prove: proved iff U_i <= eps);
the pipeline's proved/falsified/unknown counts and median/total seconds per task, where
the pipeline is `verify_error(engine="auto")` (DRA, search, then the complete MILP engine
with annealing beside it, --timeout seconds per task) or, with --no-milp, DRA plus
`verify_error(engine="search")`;
and the mean DRA interval width (hi - lo over all outputs and images) in each of the
naive, concrete and symbolic modes, with the ratio naive/symbolic. U_i is read off the
same symbolic analysis that gives the widths (it is exactly what `dra_bound` computes for
all outputs), so each image pays for one analysis, not two.

Reads the data from ../shared/data, so it is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitqnn.dra import MODES, DifferentialAnalysis
from bitqnn.error_query import ErrorOutcome, ErrorQuery
from bitqnn.error_search import search_error
from bitqnn.error_verify import verify_error
from bitqnn.floatnet import FloatDense, FloatNetwork
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, execute
from bitqnn.quantize import FixedPointConfig, quantize_fixed_point
from bitqnn.query import Box

DEFAULT_MODELS = ("benchmarks/models/fashion_784_100.onnx,benchmarks/models/fashion_784_100_100.onnx,"
                  "benchmarks/models/fashion_784_100x3.onnx")
CALIBRATION_IMAGES = 2000
LOW_FACTOR, HIGH_FACTOR = 0.5, 1.2  # the eps grid runs from LOW_FACTOR * L to HIGH_FACTOR * U


class BenchInputError(Exception):
    pass


@dataclass
class ImageFacts:
    """What one image's box tells before any eps is chosen."""

    index: int
    label: int
    widths: dict[str, float]  # mean hi - lo over the outputs, per DRA mode
    dra_bound: float  # U_i: max |error| <= U_i, from the symbolic mode
    dra_seconds: float  # building the analysis plus its symbolic run
    found: float  # L_i: an input with |error| = L_i exists (replayed)
    search_seconds: float


@dataclass
class ModelRun:
    """One float model at one Q: its images, its eps grid and its task rows."""

    model: str
    bits: int
    hidden_layers: int
    accuracy: float
    images: list[ImageFacts] = field(default_factory=list)
    eps: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options, attached by the CLI to its `bench` parser."""
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help="comma-separated float ONNX models (default: the 1x100, 2x100 and 3x100 MLPs)")
    parser.add_argument("--bits", default="4,6,8,10", help="comma-separated Q values (default 4,6,8,10)")
    parser.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    parser.add_argument("--images", type=int, default=30, help="first N test images (default 30)")
    parser.add_argument("--radius", type=int, default=3, help="L-inf radius in pixel steps (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per task for the pipeline")
    parser.add_argument("--eps-count", type=int, default=5, help="error bounds per model (default 5)")
    parser.add_argument("--search-budget", type=float, default=1.0,
                        help="seconds of error search per image for the eps grid and per task (default 1)")
    parser.add_argument("--eps-from", default=None, metavar="REPORT",
                        help="take each model's eps grid from an earlier run's JSON report instead of "
                             "choosing it, so that two runs answer the same tasks")
    parser.add_argument("--no-milp", action="store_true",
                        help="skip the complete MILP engine: DRA and search only")
    parser.add_argument("--out", default="bench-results/errorbound.json")


def run_error_benchmark(args: argparse.Namespace) -> int:
    try:
        models, bits = _parse_lists(args)
        _check_files([*models, args.data])
        if not args.no_milp:
            _load_milp()  # the complete engine loads before the first query, and a missing one fails now
        x_train, x_test, y_test = _load_data(args.data, args.images)
        grids = read_grids(args.eps_from, models, bits) if args.eps_from else None
    except BenchInputError as error:
        print(f"bitqnn: error: {error}", file=sys.stderr)
        return 2
    from bitqnn.onnx_io import load_float

    calibration = x_train.reshape(len(x_train), -1) / 256.0
    pipeline = "dra+search" if args.no_milp else "auto"
    started = time.perf_counter()
    runs: list[ModelRun] = []
    for model in models:
        float_net = load_float(model)
        for q in bits:
            config = FixedPointConfig(weights=q, activations=q, input_bits=8, input_frac=8)
            qnn = quantize_fixed_point(float_net, config, calibration)
            run = _prepare(model, q, float_net, qnn, x_test, y_test, args)
            if grids is not None:
                run.eps = grids[(model, q)]
                print(f"  {Path(model).stem} Q={q}: eps grid {run.eps} from {args.eps_from}", flush=True)
            _run_tasks(run, float_net, qnn, x_test, args, pipeline)
            runs.append(run)
    report = _report(runs, args, pipeline, time.perf_counter() - started)
    _print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


def _parse_lists(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    models = [m for m in args.models.split(",") if m]
    try:
        bits = [int(b) for b in args.bits.split(",") if b]
    except ValueError as error:
        raise BenchInputError(f"--bits must be comma-separated integers, got {args.bits!r}") from error
    if not models or not bits:
        raise BenchInputError("--models and --bits must each name at least one value")
    if any(not 2 <= b <= 16 for b in bits):
        raise BenchInputError(f"--bits values must lie in 2..16, got {args.bits!r}")
    for name in ("images", "eps_count"):
        if getattr(args, name) < 1:
            raise BenchInputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.radius < 0 or args.timeout <= 0 or args.search_budget <= 0:
        raise BenchInputError("--radius must be >= 0, --timeout and --search-budget > 0")
    return models, bits


def _check_files(paths: list[str]) -> None:
    for path in paths:
        if not Path(path).exists():
            raise BenchInputError(f"{path} does not exist (run from the repository root, or pass --models/--data)")


def _load_milp() -> None:
    try:
        importlib.import_module("bitqnn.engines.error_milp")
    except ImportError as error:
        raise BenchInputError(f"the complete error-bound engine is unavailable ({error}); "
                              "pass --no-milp for DRA and search only") from error


def _load_data(path: str, images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    archive = np.load(path)
    missing = [k for k in ("x_train", "x_test", "y_test") if k not in archive]
    if missing:
        raise BenchInputError(f"{path}: missing array {missing[0]!r}")
    x_test = archive["x_test"].reshape(len(archive["x_test"]), -1).astype(np.int64)
    if images > len(x_test):
        raise BenchInputError(f"--images {images} exceeds the {len(x_test)} test images in {path}")
    return archive["x_train"][:CALIBRATION_IMAGES], x_test, archive["y_test"].astype(np.int64)


def _box(x: np.ndarray, radius: int) -> Box:
    return Box(np.clip(x - radius, 0, 255), np.clip(x + radius, 0, 255))


def _query(float_net: FloatNetwork, qnn: QNN, x: np.ndarray, radius: int, eps: float, label: str) -> ErrorQuery:
    return ErrorQuery(float_net, qnn, _box(x, radius), eps, outputs=tuple(range(qnn.output_size)), label=label)


def _prepare(model: str, q: int, float_net: FloatNetwork, qnn: QNN, x_test: np.ndarray, y_test: np.ndarray,
             args: argparse.Namespace) -> ModelRun:
    """Per image: DRA widths in every mode, U_i and L_i; then the model's eps grid."""
    hidden = sum(isinstance(layer, FloatDense) for layer in float_net.layers) - 1
    sample = min(len(x_test), 1000)
    accuracy = float((execute(qnn, x_test[:sample]).argmax(axis=1) == y_test[:sample]).mean())
    run = ModelRun(model, q, hidden, accuracy)
    name = Path(model).stem
    print(f"{name} Q={q}: {qnn.semantics}; test accuracy {accuracy:.4f} on {sample} images", flush=True)
    for i in range(args.images):
        query = _query(float_net, qnn, x_test[i], args.radius, 0.0, f"image {i}")
        start = time.perf_counter()
        analysis = DifferentialAnalysis(float_net, qnn, query.region)
        base = time.perf_counter() - start
        bounds, widths, mode_seconds = {}, {}, {}
        for mode in MODES:
            start = time.perf_counter()
            bounds[mode] = analysis.run(mode)
            mode_seconds[mode] = time.perf_counter() - start
            widths[mode] = float(bounds[mode].width.mean())
        upper = bounds["symbolic"].max_abs()  # = error_verify.dra_bound(query): all outputs
        start = time.perf_counter()
        _, found = search_error(query, args.search_budget)
        facts = ImageFacts(i, int(y_test[i]), widths, upper, base + mode_seconds["symbolic"], float(found),
                           time.perf_counter() - start)
        run.images.append(facts)
        print(f"  [{name} Q={q} image {i + 1}/{args.images}] DRA widths "
              + ", ".join(f"{m} {w:.4g}" for m, w in widths.items())
              + f"; error in [{facts.found:.4g}, {facts.dra_bound:.4g}]", flush=True)
    run.eps = eps_grid([f.found for f in run.images], [f.dra_bound for f in run.images], args.eps_count)
    print(f"  {name} Q={q}: eps grid {run.eps}", flush=True)
    return run


def eps_grid(found: list[float], upper: list[float], count: int) -> list[float]:
    """`count` values spaced geometrically from LOW_FACTOR * median(found) to HIGH_FACTOR * median(upper).

    Each found error is at most the true maximum, which is at most the DRA bound, so the
    low end lies below the high end; a zero found error (QNN and float agree everywhere the
    search looked) falls back to a thousandth of the high end so the geometric spacing exists.
    """
    high = HIGH_FACTOR * statistics.median(upper)
    low = LOW_FACTOR * statistics.median(found)
    if not low > 0:
        low = high / 1000
    values = np.geomspace(low, high, count) if count > 1 else [np.sqrt(low * high)]
    return sorted({float(f"{v:.3g}") for v in values})


def read_grids(path: str, models: list[str], bits: list[int]) -> dict[tuple[str, int], list[float]]:
    """(model, Q) -> eps grid, from a report this benchmark wrote; every model and Q of this
    run must have one, checked before any work starts."""
    try:
        report = json.loads(Path(path).read_text())
        grids = {(m["model"], int(m["bits"])): [float(e) for e in m["eps"]] for m in report["models"]}
    except OSError as error:
        raise BenchInputError(f"--eps-from {path}: {error.strerror}") from error
    except (ValueError, KeyError, TypeError) as error:
        raise BenchInputError(f"--eps-from {path}: not an errorbound report ({error!r})") from error
    for model in models:
        for q in bits:
            if (model, q) not in grids:
                raise BenchInputError(f"--eps-from {path} has no eps grid for {model} at Q={q}")
    return grids


def _run_tasks(run: ModelRun, float_net: FloatNetwork, qnn: QNN, x_test: np.ndarray, args: argparse.Namespace,
               pipeline: str) -> None:
    name = Path(run.model).stem
    total = len(run.images) * len(run.eps)
    number = 0
    for facts in run.images:
        for eps in run.eps:
            number += 1
            label = f"image {facts.index} eps {eps:g}"
            query = _query(float_net, qnn, x_test[facts.index], args.radius, eps, label)
            dra_proved = facts.dra_bound <= eps
            outcome = _pipeline(query, facts, dra_proved, args, pipeline)
            run.rows.append({
                "model": run.model, "bits": run.bits, "image": facts.index, "label": facts.label, "eps": eps,
                "dra_bound": facts.dra_bound, "found_error": facts.found,
                "dra_only": "proved" if dra_proved else "unknown",
                "verdict": outcome.verdict.value, "engine": outcome.engine, "seconds": outcome.seconds,
                "reason": outcome.reason, "witnessed": outcome.witnessed, "proven": outcome.proven,
            })
            print(f"  [{name} Q={run.bits} {number}/{total}] {label}: DRA {'proved' if dra_proved else 'unknown'}, "
                  f"{pipeline} {outcome.verdict.value} {outcome.seconds:.2f}s {outcome.engine}", flush=True)


def _pipeline(query: ErrorQuery, facts: ImageFacts, dra_proved: bool, args: argparse.Namespace,
              pipeline: str) -> ErrorOutcome:
    """The complete pipeline, or without the MILP: DRA's verdict (already known for this
    image's box, the same as verify_error(engine="dra") would return) and then the search."""
    if pipeline == "auto":
        return verify_error(query, args.timeout, engine="auto", search_budget=args.search_budget)
    if dra_proved:
        return ErrorOutcome(Verdict.PROVED, "dra", facts.dra_seconds, proven=facts.dra_bound)
    searched = verify_error(query, args.timeout, engine="search", search_budget=args.search_budget)
    return ErrorOutcome(searched.verdict, searched.engine, facts.dra_seconds + searched.seconds,
                        searched.reason, searched.witness, searched.witnessed, facts.dra_bound)


def _summarize(run: ModelRun) -> dict:
    times = [r["seconds"] for r in run.rows]
    counts = {v.value: sum(r["verdict"] == v.value for r in run.rows) for v in Verdict}
    decided_by: dict[str, dict[str, int]] = {}
    for r in run.rows:
        if r["verdict"] != "unknown":
            stage = decided_by.setdefault(r["engine"].split(":")[-1], {"proved": 0, "falsified": 0})
            stage[r["verdict"]] += 1
    widths = {m: float(np.mean([f.widths[m] for f in run.images])) for m in MODES}
    return {
        "model": run.model, "bits": run.bits, "hidden_layers": run.hidden_layers, "accuracy": run.accuracy,
        "eps": run.eps, "tasks": len(run.rows),
        "median_found_error": statistics.median(f.found for f in run.images),
        "median_dra_bound": statistics.median(f.dra_bound for f in run.images),
        "dra_only_proved": sum(r["dra_only"] == "proved" for r in run.rows), **counts,
        "undecided_share": counts["unknown"] / max(len(run.rows), 1), "decided_by": decided_by,
        "median_s": statistics.median(times) if times else 0.0, "total_s": sum(times),
        "mean_width": widths, "naive_over_symbolic": widths["naive"] / max(widths["symbolic"], 1e-300),
        "images": [vars(f) for f in run.images],
    }


def _report(runs: list[ModelRun], args: argparse.Namespace, pipeline: str, wall: float) -> dict:
    summaries = [_summarize(run) for run in runs]
    by_depth: dict[int, dict[str, float]] = {}
    for depth in sorted({s["hidden_layers"] for s in summaries}):
        chosen = [s for s in summaries if s["hidden_layers"] == depth]
        naive = float(np.mean([s["mean_width"]["naive"] for s in chosen]))
        symbolic = float(np.mean([s["mean_width"]["symbolic"] for s in chosen]))
        by_depth[depth] = {"naive": naive, "symbolic": symbolic, "ratio": naive / max(symbolic, 1e-300),
                           "min_ratio": min(s["naive_over_symbolic"] for s in chosen)}
    tasks = sum(s["tasks"] for s in summaries)
    unknown = sum(s["unknown"] for s in summaries)
    return {
        "pipeline": pipeline, "timeout_s": args.timeout, "radius": args.radius, "images": args.images,
        "eps_count": args.eps_count, "search_budget_s": args.search_budget,
        "eps_rule": (f"taken from {args.eps_from}" if args.eps_from else
                     f"geometric, {LOW_FACTOR} * median found error to {HIGH_FACTOR} * median symbolic DRA bound"),
        "wall_s": wall, "tasks": tasks, "unknown": unknown, "undecided_share": unknown / max(tasks, 1),
        "ratio_by_hidden_layers": by_depth, "models": [{k: v for k, v in s.items() if k != "images"}
                                                       for s in summaries],
        "per_image": [{"model": s["model"], "bits": s["bits"], **image} for s in summaries
                      for image in s["images"]],
        "per_task": [row for run in runs for row in run.rows],
    }


def _print_table(report: dict) -> None:
    print(f"\n{report['tasks']} tasks, radius {report['radius']}, {report['images']} images, "
          f"pipeline {report['pipeline']} (timeout {report['timeout_s']:g}s), wall {report['wall_s']:.0f}s")
    print(f"{'model':<20} {'Q':>2} {'tasks':>5} {'DRA':>4} {'proved':>6} {'falsif':>6} {'unknown':>7} "
          f"{'median':>7} {'total':>7} {'naive':>9} {'concrete':>9} {'symbolic':>9} {'n/s':>6}  eps")
    for s in report["models"]:
        w = s["mean_width"]
        print(f"{Path(s['model']).stem:<20} {s['bits']:>2} {s['tasks']:>5} {s['dra_only_proved']:>4} "
              f"{s['proved']:>6} {s['falsified']:>6} {s['unknown']:>7} {s['median_s']:>6.2f}s {s['total_s']:>6.0f}s "
              f"{w['naive']:>9.4g} {w['concrete']:>9.4g} {w['symbolic']:>9.4g} {s['naive_over_symbolic']:>6.1f}  "
              f"{', '.join(f'{e:g}' for e in s['eps'])}")
    print(f"undecided: {report['unknown']} of {report['tasks']} ({report['undecided_share']:.1%})")
    for depth, r in report["ratio_by_hidden_layers"].items():
        print(f"models with {depth} hidden layers: mean width naive {r['naive']:.4g}, symbolic {r['symbolic']:.4g}, "
              f"ratio naive/symbolic {r['ratio']:.1f} (lowest per Q {r['min_ratio']:.1f})")

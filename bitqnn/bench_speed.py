"""`bitqnn bench speed`: each speed step against the core's baseline pipeline, in one run.

Queries: the core benchmark's (784-64-32-10 on Fashion-MNIST, radii 1 to 4) and a
784-100-100-10 model at radii 1 to 6, both in the core's 6-bit fixed point. Every
configuration answers every query one at a time, so a query's time is its wall time and
the totals compare directly. Configurations, each adding one step to the one before:

- baseline: interval bounds, then CP-SAT (the core's first exact pipeline);
- symbolic: symbolic bounds instead of intervals (fewer unstable neurons to encode);
- falsify: a gradient attack and the LP-guided attack before CP-SAT;
- auto: the `auto` engine, whose race adds step cuts, SCIP and the attack's exact
  neighbourhood search and climb;
- split: `auto` on one piece per open competing class, the pieces in parallel on local
  processes (`bitqnn.parallel`), each with the cores no other piece is waiting for;
- race: as split, with the attack engine racing `auto` on every piece (not in the default
  list: on 2 cores every racer takes a core from a proof).

Reads ../shared/data, so it is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from dataclasses import dataclass

from bitqnn.bench import (
    BenchInputError,
    by_radius,
    image_range_error,
    load_benchmark,
    make_queries,
    measure_bounds,
    query_rows,
    summarize_engine,
    write_report,
)
from bitqnn.engines.attack import AttackEngine
from bitqnn.engines.bounds_only import BoundsEngine
from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.engines.portfolio import SequentialPortfolio, Stage
from bitqnn.engines.registry import make_engine
from bitqnn.outcome import Verdict
from bitqnn.query import Query
from bitqnn.verify import Result, verify

CONFIGS = ("baseline", "symbolic", "falsify", "auto", "split", "race")
# the sparse models (benchmarks/train_sparse.py) are the core benchmark's; "-plain" ones are trained plainly
SUITES = {"core": ("benchmarks/models/fashion_784_64_32_l1.onnx", "1,2,3,4"),
          "wide": ("benchmarks/models/fashion_784_100_100_l1.onnx", "1,2,3,4,5,6"),
          "core-plain": ("benchmarks/models/fashion_784_64_32.onnx", "1,2,3,4"),
          "wide-plain": ("benchmarks/models/fashion_784_100_100.onnx", "1,2,3,4,5,6")}
FALSIFIERS = ("attack",)  # stage names that find counterexamples without a solver


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suites", default="core,wide", help=f"comma-separated, from {', '.join(SUITES)}")
    parser.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    parser.add_argument("--images", type=int, default=25, help="correctly classified test images per suite")
    parser.add_argument("--first-image", type=int, default=0,
                        help="skip this many correctly classified images first (extends an earlier run)")
    parser.add_argument("--configs", default=",".join(CONFIGS[:-1]),
                        help=f"comma-separated configurations, in order, from {', '.join(CONFIGS)}")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per query")
    parser.add_argument("--jobs", type=int, default=2, help="local processes for the split configuration")
    parser.add_argument("--out", default="bench-results/speed.json")


@dataclass(frozen=True)
class _Obligation:
    """What the scheduler needs of a statement: its kind and query."""

    query: Query
    kind: str = "robust"


def _sequential_engine(config: str):
    if config == "baseline":
        return CpSatEngine(bounds="interval", cuts=False)
    if config == "symbolic":
        return CpSatEngine(cuts=False)
    if config == "falsify":
        return SequentialPortfolio("falsify", [Stage(BoundsEngine()),
                                               Stage(AttackEngine(budget=0.5, phases=("gradient",)), share=0.1),
                                               Stage(AttackEngine(budget=5.0, phases=("lp",)), share=0.2),
                                               Stage(CpSatEngine(cuts=False))])
    return make_engine("auto")


def run_config(config: str, queries: list[Query], timeout: float, jobs: int, log) -> list[Result]:
    if config not in ("split", "race"):
        engine = _sequential_engine(config)
        results = []
        for number, query in enumerate(queries, start=1):
            results.append(verify(query, engine, timeout))
            log(config, number, len(queries), query, results[-1])
        return results
    from bitqnn.executor import LocalExecutor
    from bitqnn.parallel import Scheduler

    executor = LocalExecutor(jobs)
    try:
        scheduler = Scheduler(executor, workers=1, race=("attack",) if config == "race" else (), spread=True)
        scheduler.answer([(_Obligation(queries[0]), "auto", 1.0)])  # warm the workers: imports, not timed
        results = []
        for number, query in enumerate(queries, start=1):
            results.extend(scheduler.answer([(_Obligation(query), "auto", timeout)]))
            log(config, number, len(queries), query, results[-1])
        return results
    finally:
        executor.close()


def summarize(results: list[Result], baseline: dict | None) -> dict:
    summary = summarize_engine(results)
    falsified = [r for r in results if r.verdict is Verdict.FALSIFIED]
    summary["falsified_without_solver"] = sum(r.engine.split(":")[-1] in FALSIFIERS for r in falsified)
    if baseline is not None:
        summary["total_ratio_to_baseline"] = baseline["total_s"] / max(summary["total_s"], 1e-9)
    return summary


def run_speed_benchmark(args: argparse.Namespace) -> int:
    suites = [s for s in args.suites.split(",") if s]
    configs = [c for c in args.configs.split(",") if c]
    bad = [s for s in suites if s not in SUITES] + [c for c in configs if c not in CONFIGS]
    complaint = image_range_error(args.images, args.first_image)
    if complaint:
        print(f"bitqnn: error: {complaint}", file=sys.stderr)
        return 2
    if bad:
        print(f"bitqnn: error: unknown suite or configuration {bad[0]!r}; suites: {', '.join(SUITES)}; "
              f"configurations: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    report: dict = {"timeout_s": args.timeout, "jobs": args.jobs, "configs": configs, "suites": {}}
    per_query: dict = {}

    def log(config, number, total, query, result):
        print(f"  [{config} {number}/{total}] {query.label}: {result.verdict.value} {result.seconds:.2f}s "
              f"{result.engine}", flush=True)

    for suite in suites:
        model, radii_text = SUITES[suite]
        radii = [int(r) for r in radii_text.split(",")]
        try:
            with contextlib.redirect_stdout(io.StringIO()) as described:
                qnn, images, labels, _ = load_benchmark(model, args.data, args.first_image + args.images)
        except BenchInputError as error:
            print(f"bitqnn: error: {error}", file=sys.stderr)
            return 2
        print(f"{suite}: {described.getvalue().strip()}", flush=True)
        first = args.first_image
        queries = make_queries(qnn, images[first:], labels[first:], radii, first)
        entry: dict = {"model": model, "queries": len(queries), "radii": radii,
                       "bounds": measure_bounds(queries, radii), "configs": {}}
        baseline = None
        for config in configs:
            started = time.perf_counter()
            results = run_config(config, queries, args.timeout, args.jobs, log)
            summary = summarize(results, baseline)
            summary["wall_s"] = time.perf_counter() - started
            summary["by_radius"] = by_radius(results, queries, radii)
            if config == "baseline":
                baseline = summary
            entry["configs"][config] = summary
            per_query[f"{suite}/{config}"] = query_rows(queries, results)
        report["suites"][suite] = entry
        _print_table(suite, entry)
    _check_agreement(per_query)
    write_report(args.out, report, per_query)
    return 0


def _print_table(suite: str, entry: dict) -> None:
    print(f"\n{suite}: {entry['model']}, {entry['queries']} queries")
    print("| config | proved | falsified | unknown | decided | median | p95 | total | baseline/total |"
          " falsified without solver |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config, s in entry["configs"].items():
        ratio = s.get("total_ratio_to_baseline")
        print(f"| {config} | {s['proved']} | {s['falsified']} | {s['unknown']} | "
              f"{s['proved'] + s['falsified']}/{entry['queries']} | {s['median_s']:.2f} s | {s['p95_s']:.2f} s | "
              f"{s['total_s']:.0f} s | {'-' if ratio is None else f'x{ratio:.2f}'} | "
              f"{s['falsified_without_solver']}/{s['falsified']} |")
    for radius, b in entry["bounds"].items():
        print(f"  radius {radius}: unstable hidden neurons, intervals {b['interval_unstable']:.1f}, "
              f"symbolic {b['symbolic_unstable']:.1f}")


def _check_agreement(per_query: dict[str, list[dict]]) -> None:
    """Configurations must never contradict each other on a query (one PROVED, one FALSIFIED)."""
    by_query: dict[tuple[str, str], set[str]] = {}
    for key, rows in per_query.items():
        suite = key.split("/")[0]
        for row in rows:
            by_query.setdefault((suite, row["query"]), set()).add(row["verdict"])
    conflicts = [q for q, verdicts in by_query.items() if {"proved", "falsified"} <= verdicts]
    if conflicts:
        raise RuntimeError(f"configurations disagree on {len(conflicts)} queries, first {conflicts[0]}")
    print(f"agreement: no configuration contradicts another on {len(by_query)} queries")

"""The `bitqnn` command: prove, check, audit, run, bench.

Exit codes (documented in the README): 0 every property proved; 10 some property
falsified; 20 none falsified but some unknown; 2 bad input (spec, model, sample, flags);
3 internal error, including a counterexample that failed replay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bitqnn.answer import ERROR_KINDS, is_plain
from bitqnn.bench_bitflip import add_arguments as add_bitflip_arguments
from bitqnn.bench_error import add_arguments as add_error_arguments
from bitqnn.bench_speed import add_arguments as add_speed_arguments
from bitqnn.bench_synth import add_arguments as add_synth_arguments
from bitqnn.engines.registry import ENGINE_NAMES
from bitqnn.error_verify import ERROR_ENGINES
from bitqnn.executor import EXECUTORS, default_jobs
from bitqnn.fault_verify import FAULT_ENGINES
from bitqnn.faults import FaultQuery
from bitqnn.outcome import Verdict
from bitqnn.pieces import SPLITS
from bitqnn.qnn import AccumulatorOverflow

EXIT_PROVED, EXIT_FALSIFIED, EXIT_UNKNOWN, EXIT_INPUT, EXIT_INTERNAL = 0, 10, 20, 2, 3


class InputError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _compile(path: str):
    """The spec's obligations and audits (`spec.Compiled`)."""
    from bitqnn.spec import SpecError, compile_file

    try:
        return compile_file(path, engines=ENGINE_NAMES)
    except SpecError as error:
        raise InputError(error.render()) from error


def cmd_prove(args: argparse.Namespace) -> int:
    from bitqnn import report
    from bitqnn.answer import Answerer

    compiled = _compile(args.spec)
    obligations = compiled.obligations
    for count, kind, command in ((len(compiled.audits), "audit", "audit"),
                                 (len(compiled.syntheses), "synthesize", "synthesize")):
        if count:  # checked with everything else; answering them is another command's job
            print(f"skipping {count} {kind} statement{'s' if count > 1 else ''}: run bitqnn {command} {args.spec}",
                  file=sys.stderr)
    _check_statement_engines(obligations)
    if args.engine:
        _check_engine_fits(obligations, args.engine)
    # one query per statement: --smtlib exports these (a backdoor statement has one per patch location)
    plain = [o for o in obligations if is_plain(o)]
    if args.smtlib:
        _export_smtlib(plain, Path(args.smtlib))
    for flag, value in (("--jobs", args.jobs), ("--workers", args.workers), ("--split-region", args.split_region)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    race = tuple(name for name in args.race.split(",") if name)
    for name in race:
        if name not in ENGINE_NAMES:
            raise InputError(f"--race: unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")
    if args.address and args.executor != "ray":
        raise InputError("--address names a Ray cluster: use it with --executor ray")
    items = [(o, args.engine or o.options["engine"], args.timeout or o.options["timeout"]) for o in obligations]
    jobs = args.jobs or (default_jobs() if args.executor == "local" else None)
    if args.executor == "local" and jobs == 1 and args.split_region == 1 and not race:
        answer = Answerer(args.workers or 2)
        results = []
        for number, (obligation, engine, timeout) in enumerate(items, start=1):
            print(f"[{number}/{len(items)}] {obligation.query.label} ({engine}, {timeout:g}s) ...",
                  file=sys.stderr, flush=True)
            results.append(answer(obligation, engine, timeout))
    else:
        results = _prove_in_parallel(args, items, jobs, race)
    semantics = [o.query.network.describe() for o in obligations]
    if args.json:
        print(report.to_json(results, semantics))
    else:
        print(report.table(results, semantics))
    if args.vnncomp:
        for path in report.write_vnncomp(results, Path(args.vnncomp)):
            print(f"wrote {path}", file=sys.stderr)
    return _exit_code({r.verdict for r in results})


def _prove_in_parallel(args: argparse.Namespace, items: list, jobs: int | None, race: tuple[str, ...]) -> list:
    """Pieces of every statement on local processes or a Ray cluster (`bitqnn.parallel`)."""
    from bitqnn.executor import ExecutorError, make_executor
    from bitqnn.parallel import Scheduler

    try:
        executor = make_executor(args.executor, jobs, args.address)
    except ExecutorError as error:
        raise InputError(str(error)) from error
    # on this machine, a piece gets the cores that no waiting piece needs, unless --workers fixes it
    spread = args.workers is None and args.executor == "local"
    workers = args.workers or max(1, default_jobs() // executor.capacity)
    boxes = f" x {args.split_region} sub-boxes" if args.split_region > 1 else ""
    raced = f", raced by {'/'.join(race)}" if race else ""
    print(f"{len(items)} statement(s) on {executor.capacity} {args.executor} worker(s), split by {args.split}"
          f"{boxes}{raced}, CP-SAT workers {workers}{' or more when cores are idle' if spread else ''}",
          file=sys.stderr, flush=True)
    done = [0]

    def progress(number: int, result) -> None:
        done[0] += 1
        print(f"[{done[0]}/{len(items)}] {result.label}: {result.verdict.value} ({result.seconds:.1f}s)",
              file=sys.stderr, flush=True)

    try:
        return Scheduler(executor, workers, args.split, args.split_region, race, progress, spread).answer(items)
    finally:
        executor.close()


def _exit_code(verdicts: set[Verdict]) -> int:
    if Verdict.FALSIFIED in verdicts:
        return EXIT_FALSIFIED
    return EXIT_UNKNOWN if Verdict.UNKNOWN in verdicts else EXIT_PROVED


def _check_engine_fits(obligations, engine: str) -> None:
    """--engine applies to every statement, so it must be one each kind of statement accepts."""
    for obligation in obligations:
        accepted = _engines_for(obligation)
        if engine not in accepted:
            raise InputError(f"--engine {engine} cannot answer {obligation.query.label}; "
                             f"that statement takes one of {', '.join(accepted)}")


def _engines_for(obligation) -> tuple[str, ...]:
    if obligation.kind in ERROR_KINDS:
        return ERROR_ENGINES
    return FAULT_ENGINES if isinstance(obligation.query, FaultQuery) else ENGINE_NAMES


def _check_statement_engines(obligations) -> None:
    """A spec's engine= is checked against the generic engine list when it is parsed; a
    statement under bit flips takes only the engines that model them."""
    for obligation in obligations:
        engine = obligation.options["engine"]
        if isinstance(obligation.query, FaultQuery) and engine not in FAULT_ENGINES:
            raise InputError(f"{obligation.pos.file}:{obligation.pos.line}:{obligation.pos.column}: engine {engine} "
                             f"does not analyse bit flips; use one of {', '.join(FAULT_ENGINES)}")


def _export_smtlib(obligations, target: Path) -> None:
    from bitqnn.encode.bitvector import export_smtlib

    for number, obligation in enumerate(obligations, start=1):
        path = target if len(obligations) == 1 else target.with_suffix(f".{number}{target.suffix}")
        export_smtlib(obligation.query, path)
        print(f"wrote {path}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    compiled = _compile(args.spec)
    obligations = compiled.obligations
    _check_statement_engines(obligations)
    for obligation in obligations:
        query = obligation.query
        cases = (f"{len(query.outputs)} output(s)" if obligation.kind in ERROR_KINDS
                 else f"{len(query.query.violation.terms)} case(s) under {query.model.describe()}"
                 if isinstance(query, FaultQuery) else f"{len(query.violation.terms)} case(s)")
        points = (f"{len(query.locations)} patch location(s) x {query.patch_points} patches"
                  if obligation.kind == "backdoor" else f"{query.region.points} input points")
        print(f"ok  {query.label}: {obligation.kind}, {query.network.name}, {points}, {cases}, "
              f"engine {obligation.options['engine']}, timeout {obligation.options['timeout']:g}s")
    for audit in compiled.audits:
        print(f"ok  audit @ {audit.pos.file}:{audit.pos.line}: {len(audit.samples)} samples, k = 1.."
              f"{audit.queries[0].model.k}, engine {audit.options['engine']}, timeout {audit.options['timeout']:g}s")
    for synthesis in compiled.syntheses:
        print(f"ok  {synthesis.text} @ {synthesis.pos.file}:{synthesis.pos.line}: {synthesis.problem.space.size()} "
              f"candidates, {len(synthesis.keep_texts)} kept properties, minimize {synthesis.problem.cost}, "
              f"budget {synthesis.problem.budget:g}s")
    audits = f", {len(compiled.audits)} audit{'' if len(compiled.audits) == 1 else 's'}" if compiled.audits else ""
    syntheses = f", {len(compiled.syntheses)} synthesize" if compiled.syntheses else ""
    print(f"{args.spec}: {len(obligations)} propert{'y' if len(obligations) == 1 else 'ies'}{audits}{syntheses} "
          "checked")
    return EXIT_PROVED


def cmd_audit(args: argparse.Namespace) -> int:
    from bitqnn.audit import default_jobs, run_audits

    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, not {args.jobs}")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout must be more than 0, not {args.timeout:g}")
    audits = _compile(args.spec).audits
    if not audits:
        raise InputError(f"{args.spec}: no audit statement; bitqnn audit runs `audit robust(...) over sample ...`")
    spec = Path(args.spec)
    runs = run_audits(audits, Path(args.store) if args.store else spec.with_suffix(".audit.jsonl"),
                      Path(args.html) if args.html else spec.with_suffix(".audit.html"),
                      args.jobs or default_jobs(), args.timeout)
    return _exit_code(set().union(*(run.verdicts for run in runs)))


def cmd_synthesize(args: argparse.Namespace) -> int:
    from bitqnn.synthesis.runner import run_syntheses

    compiled = _compile(args.spec)
    if not compiled.syntheses:
        raise InputError(f"{args.spec} has no synthesize statement")
    return run_syntheses(compiled.syntheses, Path(args.out) if args.out else None, args.budget, args.workers,
                         args.json)


def cmd_run(args: argparse.Namespace) -> int:
    from bitqnn.onnx_io import OnnxImportError, load_qnn
    from bitqnn.qnn import trace
    from bitqnn.samples import SampleError, load_samples

    try:
        qnn = load_qnn(args.model)
    except OnnxImportError as error:
        raise InputError(str(error)) from error
    try:
        samples = load_samples(Path(args.sample), key=args.key)
    except SampleError as error:
        raise InputError(f"{args.sample}: {error}") from error
    index = 0 if args.index is None else args.index
    if not 0 <= index < len(samples):
        raise InputError(f"{args.sample}: index {index} is out of range; the file holds {len(samples)} samples")
    real = samples[index]
    if real.size != qnn.input_size:
        raise InputError(f"{args.sample}: sample has {real.size} values, {args.model} expects {qnn.input_size}")
    x = qnn.quantize_input(real.reshape(-1))
    np.set_printoptions(linewidth=120, threshold=64)
    print(f"{qnn.describe()}")
    print(f"input (integers, scale {qnn.input_scale:g}, zero {qnn.input_zero}): {x}")
    for step in trace(qnn, x):
        print(f"layer {step.layer} {step.kind}:")
        if step.accumulator is not None:
            print(f"  accumulator: {step.accumulator}")
        print(f"  output:      {step.output}")
    outputs = step.output
    print(f"real outputs: {np.round(qnn.dequantize_output(outputs), 6)}  argmax {int(np.argmax(outputs))}")
    return EXIT_PROVED


def cmd_bench(args: argparse.Namespace) -> int:
    from bitqnn.bench import run_benchmark

    return run_benchmark(args)


def cmd_bench_bitflip(args: argparse.Namespace) -> int:
    from bitqnn.bench_bitflip import run_bitflip_benchmark

    return run_bitflip_benchmark(args)


def cmd_bench_synth(args: argparse.Namespace) -> int:
    from bitqnn.bench_synth import run_synth_benchmark

    return run_synth_benchmark(args)


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from bitqnn.bench_speed import run_speed_benchmark

    return run_speed_benchmark(args)


def cmd_bench_error(args: argparse.Namespace) -> int:
    from bitqnn.bench_error import run_error_benchmark

    return run_error_benchmark(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitqnn")
    except PackageNotFoundError:
        return "(source checkout)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitqnn", description="Bit-precise verification of quantized networks.")
    parser.add_argument("--version", action="version", version=f"bitqnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    prove = sub.add_parser("prove", help="prove or refute every property in a .qspec file")
    prove.add_argument("spec")
    prove.add_argument("--engine", choices=ENGINE_NAMES + tuple(e for e in ERROR_ENGINES if e not in ENGINE_NAMES),
                       help="override the spec's engine (error statements take auto, dra, search, milp)")
    prove.add_argument("--timeout", type=float, help="seconds per property, overriding the spec")
    prove.add_argument("--workers", type=int, help="CP-SAT search workers per piece (default: the cores "
                       "shared out among the jobs; 2 with --jobs 1)")
    prove.add_argument("--jobs", type=int, help="pieces solved at once on local processes (default: every core; "
                       "1 answers statements one by one in this process)")
    prove.add_argument("--split", choices=SPLITS, default="class",
                       help="pieces per statement: one per competing class the bounds leave open, or none")
    prove.add_argument("--split-region", type=int, default=1, metavar="N",
                       help="also cut each piece's box into up to N sub-boxes across its most influential inputs")
    prove.add_argument("--race", default="", metavar="ENGINES",
                       help="comma-separated engines run beside the statement's engine on every piece; the first "
                            "conclusive answer wins and the others are cancelled")
    prove.add_argument("--executor", choices=EXECUTORS, default="local", help="where pieces run (default local)")
    prove.add_argument("--address", help="Ray cluster address for --executor ray (default: start a local instance)")
    prove.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    prove.add_argument("--vnncomp", metavar="DIR", help="write VNN-COMP result files into DIR")
    prove.add_argument("--smtlib", metavar="FILE", help="also export each query as SMT-LIB2 (QF_BV)")
    prove.set_defaults(run=cmd_prove)
    check = sub.add_parser("check", help="parse and validate a spec without solving")
    check.add_argument("spec")
    check.set_defaults(run=cmd_check)
    audit = sub.add_parser("audit", help="run a spec's audit statements: bit-flip resilience over samples")
    audit.add_argument("spec")
    audit.add_argument("--jobs", type=int, help="worker processes (default: every core)")
    audit.add_argument("--store", metavar="PATH", help="JSON-lines results, read to resume (default SPEC.audit.jsonl)")
    audit.add_argument("--html", metavar="PATH", help="the HTML report (default SPEC.audit.html)")
    audit.add_argument("--timeout", type=float, help="seconds per (sample, k) query, overriding the spec")
    audit.set_defaults(run=cmd_audit)
    synthesize = sub.add_parser("synthesize", help="find the cheapest certified quantization (synthesize statements)")
    synthesize.add_argument("spec")
    synthesize.add_argument("--out", metavar="DIR", help="where to write the ONNX model, spec and certificate "
                            "(default: the statement's write path, else SPEC_DIR/NAME.synth)")
    synthesize.add_argument("--budget", type=float, help="seconds for each search, overriding the spec")
    synthesize.add_argument("--workers", type=int, default=2, help="CP-SAT search workers (default 2)")
    synthesize.add_argument("--json", action="store_true", help="the certificates as JSON on stdout")
    synthesize.set_defaults(run=cmd_synthesize)
    run = sub.add_parser("run", help="run a quantized ONNX model on a sample and print the integer trace")
    run.add_argument("model")
    run.add_argument("--sample", required=True, help="npz, npy or csv file")
    run.add_argument("--index", type=int, default=None)
    run.add_argument("--key", default=None, help="array name inside an npz file")
    run.set_defaults(run=cmd_run)
    bench = sub.add_parser("bench", help="run a benchmark (reads ../shared/data)")
    suites = bench.add_subparsers(dest="suite", required=True)
    robustness = suites.add_parser("robustness", help="the core robustness benchmark, every engine")
    robustness.add_argument("--model", default="benchmarks/models/fashion_784_64_32_l1.onnx",
                            help="default: the sparse model of benchmarks/train_sparse.py; "
                                 "benchmarks/models/fashion_784_64_32.onnx is the plainly trained one")
    robustness.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    robustness.add_argument("--images", type=int, default=25)
    robustness.add_argument("--radii", default="1,2,3,4")
    robustness.add_argument("--engines", default="auto,smt")
    robustness.add_argument("--timeout", type=float, default=60.0)
    robustness.add_argument("--smt-timeout", type=float, default=None,
                            help="per-query timeout for engines other than the first (default: --timeout)")
    robustness.add_argument("--out", default="bench-results/robustness.json")
    robustness.set_defaults(run=cmd_bench)
    errorbound = suites.add_parser("errorbound", help="quantization error bounds: DRA modes and the pipeline")
    add_error_arguments(errorbound)
    errorbound.set_defaults(run=cmd_bench_error)
    bitflip = suites.add_parser("bitflip", help="resilience to bit flips in stored weights (BFAVerifier's setting)")
    add_bitflip_arguments(bitflip)
    bitflip.set_defaults(run=cmd_bench_bitflip)
    synth = suites.add_parser("synth", help="certified bit-width synthesis on Fashion-MNIST MLPs")
    add_synth_arguments(synth)
    synth.set_defaults(run=cmd_bench_synth)
    speed = suites.add_parser("speed", help="each speed step against the baseline pipeline, on two models")
    add_speed_arguments(speed)
    speed.set_defaults(run=cmd_bench_speed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        print(f"bitqnn: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except AccumulatorOverflow as error:
        print(f"bitqnn: error: accumulator overflow: {error}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("bitqnn: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place every failure becomes one line
        from bitqnn.replay import ReplayMismatch

        kind = "replay mismatch" if isinstance(error, ReplayMismatch) else f"internal error ({type(error).__name__})"
        print(f"bitqnn: {kind}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

"""`bitqnn bench synth`: certified bit-width synthesis on Fashion-MNIST MLPs.

Per model and radius, the kept properties are L-inf robustness of 20 test images. An image
qualifies when the float network classifies it correctly and the 8-bit uniform quantization
is proved robust on it: the synthesis then has a certified starting point, and the figure of
merit is how far below uniform widths it certifies. The run goes through the same path as
`bitqnn synthesize` (a generated spec, compiled and searched), reads ../shared/data, and so
is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bitqnn.answer import Answerer
from bitqnn.outcome import Verdict
from bitqnn.qnn import execute
from bitqnn.spec.compile import compile_file
from bitqnn.synthesis.certificate import search_summary
from bitqnn.synthesis.search import Synthesis, Synthesizer

DEFAULT_MODELS = ",".join(f"benchmarks/models/fashion_784_{name}.onnx" for name in ("100", "100_100", "100x3"))
SCAN_FACTOR = 3  # look at up to this many times --images candidates for qualifying images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated float ONNX models")
    parser.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    parser.add_argument("--images", type=int, default=20, help="qualifying test images per model and radius")
    parser.add_argument("--radii", default="1,2,3")
    parser.add_argument("--widths", default="2,3,4,5,6,7,8", help="the widths every layer may take")
    parser.add_argument("--cost", default="bits", choices=("bits", "memory", "bitops"))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per property")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per synthesis")
    parser.add_argument("--out", default="bench-results/synth.json")


def synth_spec(model: Path, radius: int, labels: list[int], widths: str, args: argparse.Namespace) -> str:
    keeps = "\n".join(f"  keep robust(q, linf(x{i}, {radius}), label={label})" for i, label in enumerate(labels))
    lets = "\n".join(f'let x{i} = sample "images.npz" index {i}' for i in range(len(labels)))
    return (f'network f = onnx "{model.resolve()}"\n{lets}\n'
            f'synthesize q from f with fixed(input=8, input_frac=8, rounding=half_even, output=accumulator,\n'
            f'                               calibrate="calibration.npz") {{\n'
            f"  search weights in [{widths}], activations in [{widths}]\n  minimize {args.cost}\n{keeps}\n"
            f"}} with timeout={args.timeout:g}, budget={args.budget:g}\n")


def compiled_synthesis(work: Path, model: Path, radius: int, images: np.ndarray, labels: list[int],
                       args: argparse.Namespace):
    np.savez(work / "images.npz", x=images)
    spec = work / "synth.qspec"
    spec.write_text(synth_spec(model, radius, labels, args.widths, args), encoding="utf-8")
    return compile_file(spec).syntheses[0]


def qualifying(work: Path, model: Path, radius: int, x_test: np.ndarray, y_test: np.ndarray, float_net,
               answer: Answerer, args: argparse.Namespace) -> tuple[list[int], int]:
    """Indices of test images the float net gets right and the 8-bit uniform QNN is proved robust on."""
    predictions = float_net.forward(x_test[: args.images * SCAN_FACTOR]).argmax(axis=1)
    right = [i for i in range(len(predictions)) if predictions[i] == y_test[i]]
    spec = compiled_synthesis(work, model, radius, x_test[right], [int(y_test[i]) for i in right], args)
    largest = spec.problem.quantize(spec.problem.space.largest())
    chosen = []
    for index, obligation in zip(right, spec.problem.obligations_for(largest), strict=True):
        if answer(obligation, obligation.options["engine"], args.timeout).verdict is Verdict.PROVED:
            chosen.append(index)
        if len(chosen) == args.images:
            break
    return chosen, len(right)


def mean_width(candidate) -> float:
    """The average of every searched width: comparable with a uniform width."""
    widths = [w for s in candidate.layers for w in (s.weights, s.activations) if w is not None]
    return sum(widths) / len(widths)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def one_setting(model: Path, radius: int, data: dict, answer: Answerer, args: argparse.Namespace,
                work: Path) -> dict:
    from bitqnn.onnx_io import load_float

    float_net = load_float(model)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "calibration.npz", x=data["calibration"])
    chosen, scanned = qualifying(work, model, radius, data["x_test"], data["y_test"], float_net, answer, args)
    spec = compiled_synthesis(work, model, radius, data["x_test"][chosen], [int(data["y_test"][i]) for i in chosen],
                              args)
    synthesis: Synthesis = Synthesizer(spec.problem, answer, label=f"{model.stem} r{radius}").run()
    x_int = np.rint(data["x_test"] * 256).astype(np.int64)

    def qnn_accuracy(attempt) -> float | None:
        if attempt is None:
            return None
        return accuracy(execute(spec.problem.quantize(attempt.candidate), x_int).argmax(axis=1), data["y_test"])

    best, uniform = synthesis.best, synthesis.best_uniform
    return {
        "model": model.stem, "radius": radius, "images": len(chosen), "images_scanned": scanned,
        "image_indices": chosen, "search_space": spec.problem.space.size(),
        "best": None if best is None else {"candidate": best.candidate.describe(), "cost": best.cost,
                                           "mean_width": mean_width(best.candidate)},
        "uniform": None if uniform is None else {"width": uniform.candidate.uniform_width(), "cost": uniform.cost},
        "cost_ratio_to_uniform": None if best is None or uniform is None else best.cost / uniform.cost,
        "accuracy": {"float": accuracy(float_net.forward(data["x_test"]).argmax(axis=1), data["y_test"]),
                     "best": qnn_accuracy(best), "uniform": qnn_accuracy(uniform),
                     "uniform_8bit": accuracy(execute(spec.problem.quantize(spec.problem.space.largest()), x_int)
                                              .argmax(axis=1), data["y_test"])},
        "search": search_summary(synthesis),
    }


def run_synth_benchmark(args: argparse.Namespace) -> int:
    models = [Path(m) for m in args.models.split(",") if m]
    try:
        radii = [int(r) for r in args.radii.split(",")]
        [int(w) for w in args.widths.split(",")]
    except ValueError:
        print(f"bitqnn: error: --radii and --widths take comma-separated integers, got {args.radii!r}, "
              f"{args.widths!r}", file=sys.stderr)
        return 2
    for path in [*models, Path(args.data)]:
        if not path.exists():
            print(f"bitqnn: error: {path} does not exist (run from the repository root, or pass --models/--data)",
                  file=sys.stderr)
            return 2
    with np.load(args.data) as archive:
        data = {"x_test": archive["x_test"].reshape(len(archive["x_test"]), -1) / 256.0,
                "y_test": archive["y_test"].astype(np.int64),
                "calibration": archive["x_train"][:2000].reshape(2000, -1) / 256.0}
    out = Path(args.out)
    answer = Answerer(2)
    rows = []
    started = time.perf_counter()
    for model in models:
        for radius in radii:
            row = one_setting(model, radius, data, answer, args, out.parent / "synth-work" / f"{model.stem}-r{radius}")
            rows.append(row)
            print(_line(row), flush=True)
    report = {"cost": args.cost, "widths": args.widths, "timeout_s": args.timeout, "budget_s": args.budget,
              "images": args.images, "seconds": time.perf_counter() - started, "settings": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


def _line(row: dict) -> str:
    best, uniform, search, acc = row["best"], row["uniform"], row["search"], row["accuracy"]
    found = "nothing certified" if best is None else f"{best['candidate']} (mean {best['mean_width']:.2f} bits)"
    base = "none" if uniform is None else f"w{uniform['width']} ({uniform['cost']:g})"
    first, final = search["first_certified_after_seconds"], search["final_certified_after_seconds"]
    return (f"{row['model']} r{row['radius']} ({row['images']} images): best {found}; uniform {base}; "
            f"first certified {first}s, final {final}s, total {search['seconds']:.0f}s; "
            f"accuracy float {acc['float']:.4f}, best {acc['best']}, uniform {acc['uniform']}, "
            f"8-bit {acc['uniform_8bit']:.4f}")

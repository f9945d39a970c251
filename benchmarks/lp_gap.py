"""How much an optimised choice of per-neuron relaxations could add to the symbolic bounds.

The symbolic bounds (`bitqnn.symbolic`) pick one lower and one upper line per neuron,
by area, for every objective alike. alpha-CROWN-style optimisation tunes those lines to
the objective. With the intermediate bounds held fixed, nothing it picks can beat the LP
whose every neuron is constrained by the exact convex hull of its step function (all hull
facets at once, every objective its own optimum). This script solves that LP (OR-Tools'
GLOP) for every violation term the symbolic bounds leave open, with the symbolic bounds'
own accumulator ranges, and counts the queries it would close on top of them. It measures
a ceiling, not a verdict: GLOP's floating-point optimum is read as is, so nothing here
may be reported as PROVED.

    PYTHONPATH=. python benchmarks/lp_gap.py --model benchmarks/models/fashion_784_64_32.onnx \
        --images 10 --radii 1,2,3,4
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from ortools.linear_solver import pywraplp

from bitqnn.bench import BenchInputError, load_benchmark, make_queries
from bitqnn.bounds import NetworkBounds
from bitqnn.hull import stage_hull
from bitqnn.qnn import QNN, Dense
from bitqnn.query import Box
from bitqnn.symbolic import SymbolicAnalysis


def hull_lp_maximum(qnn: QNN, box: Box, bounds: NetworkBounds, terms: tuple[tuple[int, int], ...]) -> float:
    """max sum(c * output[i]) over the box, every neuron relaxed to its exact step hull on
    the accumulator range `bounds` gives it."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    values: list = [solver.NumVar(float(lo), float(hi), "") for lo, hi in zip(box.lo, box.hi, strict=True)]
    for index, layer in enumerate(qnn.layers):
        if not isinstance(layer, Dense):
            raise SystemExit(f"layer {index}: this measurement handles dense networks only")
        form, layer_bounds = qnn.linear_form(index), bounds.layers[index]
        outputs = []
        for n, row in enumerate(form.matrix):
            lo, hi = int(layer_bounds.acc_lo[n]), int(layer_bounds.acc_hi[n])
            starts, steps = layer.output.steps(int(form.channels[n]), lo, hi)
            if len(starts) == 1:
                outputs.append(float(steps[0]))
                continue
            acc = solver.NumVar(float(lo), float(hi), "")
            linear = solver.Sum([float(row[i]) * values[i] for i in np.flatnonzero(row)])
            solver.Add(acc == linear + float(form.offset[n]))
            out = solver.NumVar(float(steps[0]), float(steps[-1]), "")
            for facet in stage_hull(starts, steps, hi).rows():
                side = facet.y_coeff * out + facet.acc_coeff * acc
                solver.Add(side <= facet.bound if facet.upper else side >= facet.bound)
            outputs.append(out)
        values = outputs
    solver.Maximize(solver.Sum([c * values[i] for i, c in terms]))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        raise RuntimeError("the hull LP did not solve to optimality")
    return solver.Objective().Value()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="benchmarks/models/fashion_784_64_32.onnx")
    parser.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--radii", default="1,2,3,4")
    args = parser.parse_args()
    try:
        radii = [int(r) for r in args.radii.split(",")]
    except ValueError:
        sys.exit(f"lp_gap: error: --radii takes comma-separated integers, got {args.radii!r}")
    try:
        qnn, images, labels, _ = load_benchmark(args.model, args.data, args.images)
    except BenchInputError as error:
        sys.exit(f"lp_gap: error: {error}")
    per_radius: dict[str, list[int]] = {}
    for query in make_queries(qnn, images, labels, radii):
        start = time.perf_counter()
        analysis = SymbolicAnalysis(qnn, query.region)
        left, _ = analysis.prune(query.violation)
        closed = sum(hull_lp_maximum(qnn, query.region, analysis.bounds, term[0].terms) < term[0].bound
                     for term in left.terms)
        radius = query.label.rsplit(" ", 1)[1]
        tally = per_radius.setdefault(radius, [0, 0, 0, 0, 0])
        tally[0] += 1
        tally[1] += not left.terms
        tally[2] += bool(left.terms) and closed == len(left.terms)
        tally[3] += len(left.terms)
        tally[4] += closed
        print(f"{query.label}: {len(left.terms)} terms left by symbolic bounds, {closed} closed by the hull LP "
              f"({time.perf_counter() - start:.2f}s)", flush=True)
    print("radius  queries  symbolic proves  hull LP would add  terms left  terms the LP closes")
    for radius, (queries, proved, added, terms, closed) in per_radius.items():
        print(f"{radius:>6}  {queries:>7}  {proved:>15}  {added:>17}  {terms:>10}  {closed:>19}")


if __name__ == "__main__":
    main()

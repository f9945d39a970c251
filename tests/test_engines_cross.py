"""The two exact engines against each other on networks too large to enumerate.

Enumeration grounds both engines on tiny boxes (test_engines_agree, test_engine_smt);
here the boxes have up to 7**10 points, so agreement between two encodings that share
no arithmetic (linear integer constraints vs bit-vector terms) is the check.
"""

import numpy as np
import pytest

from bitqnn.engines.cpsat import CpSatEngine
from bitqnn.outcome import Verdict
from bitqnn.properties import robust_violation
from bitqnn.qnn import execute
from bitqnn.query import Box, Query
from tests.netgen import REQUANT_KINDS, random_dense_qnn


def wide_query(seed: int) -> Query:
    rng = np.random.default_rng(1000 + seed)
    kind = REQUANT_KINDS[seed % len(REQUANT_KINDS)]
    qnn = random_dense_qnn(rng, kind, sizes=(10, 8, 6, 4))
    center = rng.integers(qnn.input_lo, qnn.input_hi + 1, qnn.input_size)
    radius = int(rng.integers(1, 4))
    box = Box(np.maximum(center - radius, qnn.input_lo), np.minimum(center + radius, qnn.input_hi))
    label = int(np.argmax(execute(qnn, center)[0]))
    return Query(qnn, box, robust_violation(label, qnn.output_size, "lowest_index"), label=f"wide {seed} {kind}")


def test_cpsat_and_bitvector_engines_agree_beyond_enumeration():
    smt_module = pytest.importorskip("bitqnn.engines.smt")
    cpsat, smt = CpSatEngine(), smt_module.SmtEngine()
    verdicts = []
    for seed in range(48):
        query = wide_query(seed)
        a, b = cpsat.solve(query, 60), smt.solve(query, 60)
        assert Verdict.UNKNOWN not in (a.verdict, b.verdict), (seed, a.reason, b.reason)
        assert a.verdict is b.verdict, (seed, a.verdict, b.verdict)
        for outcome in (a, b):
            if outcome.witness is not None:
                assert query.check_witness(outcome.witness, execute(query.network, outcome.witness))
        verdicts.append(a.verdict)
    assert verdicts.count(Verdict.PROVED) >= 5 and verdicts.count(Verdict.FALSIFIED) >= 5

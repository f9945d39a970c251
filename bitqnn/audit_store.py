"""The audit store: answered (sample, k) queries as JSON lines, keyed by a fingerprint.

A module of its own because the rows and their keys are what a rerun trusts: the key holds
everything an answer depends on (the network's parameters, the input box, the label, the
fault model at that k, the engine and the timeout), so a stored row is reused exactly when
asking again would ask the same question, and a line cut short by an interruption is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from bitqnn.faults import FaultQuery
from bitqnn.qnn import QNN

INFERRED = "inferred"  # the engine of a row answered from the row for k - 1, without solving


@dataclass(frozen=True)
class Row:
    """One answered (sample, k) query as stored: `audit` is the statement's file:line, and
    `flips` the flipped bits of a counterexample (empty when the sample is not robust even
    without flips, or when there is no counterexample)."""

    key: str
    audit: str
    sample: int
    k: int
    verdict: str
    seconds: float
    engine: str
    reason: str
    flips: tuple[str, ...]


def network_digest(qnn: QNN) -> str:
    """The network's parameters and semantics, not where it was loaded from: a model file
    with new contents, or a new quantization setting, gives a new digest."""
    return hashlib.sha256(pickle.dumps(replace(qnn, _cache={}, onnx_path=None))).hexdigest()


def row_key(fq: FaultQuery, network: str, sample: int, k: int, engine: str, timeout: float) -> str:
    """Everything an answer depends on; the label and line of the statement are left out."""
    digest = hashlib.sha256()
    query = fq.query
    for part in (network, sample, k, repr(replace(fq.model, k=k)), repr(query.violation), engine, float(timeout)):
        digest.update(repr(part).encode() + b"\0")
    digest.update(query.region.lo.tobytes() + b"\0" + query.region.hi.tobytes())
    return digest.hexdigest()[:32]


def load_rows(path: Path) -> dict[str, Row]:
    """Stored rows by key; a line cut short by an interruption is skipped (asked again)."""
    rows: dict[str, Row] = {}
    if not path.exists():
        return rows
    names = {f.name for f in fields(Row)}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and set(data) == names:
            rows[data["key"]] = Row(**{**data, "flips": tuple(data["flips"])})
    return rows


class Store:
    """Appends each row as one JSON line and flushes it, so that an interruption loses at
    most the queries still running."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cut = False
        if path.exists() and path.stat().st_size:
            with path.open("rb") as existing:
                existing.seek(-1, os.SEEK_END)
                cut = existing.read(1) != b"\n"
        self._file = path.open("a", encoding="utf-8")
        if cut:
            self._file.write("\n")  # end the cut line, so the next row starts a line of its own

    def add(self, row: Row) -> None:
        self._file.write(json.dumps(asdict(row)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

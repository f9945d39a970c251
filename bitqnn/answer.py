"""One obligation -> one Result, whatever kind of statement it came from.

`bitqnn prove` and `bitqnn synthesize` both answer compiled obligations; keeping the
dispatch on the obligation's kind in one place means a new kind of property is answered
the same way by both.
"""

from __future__ import annotations

from bitqnn.faults import FaultQuery
from bitqnn.verify import Result, verify

ERROR_KINDS = ("error", "bound")  # statements about quantization error, answered by error_verify


def is_plain(obligation) -> bool:
    """A plain query (robust, targeted, linear): one Query that any engine answers whole."""
    return obligation.kind not in (*ERROR_KINDS, "backdoor") and not isinstance(obligation.query, FaultQuery)


def wall_time_allowed(obligation, timeout: float) -> float:
    """How long answering may take: an `error` statement that does not prove goes on to
    compute its tightest bound with the same timeout again (`error_verify.error_result`)."""
    return 2 * timeout if obligation.kind == "error" else timeout


class Answerer:
    """Answers obligations, building each query engine once and reusing it."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._engines: dict[str, object] = {}

    def __call__(self, obligation, engine: str, timeout: float) -> Result:
        if obligation.kind in ERROR_KINDS:
            from bitqnn.error_verify import error_result

            return error_result(obligation.query, obligation.kind, timeout, engine)
        if isinstance(obligation.query, FaultQuery):
            from bitqnn.fault_verify import make_fault_engine, verify_fault

            return verify_fault(obligation.query, make_fault_engine(engine), timeout)
        if engine not in self._engines:
            from bitqnn.engines.registry import make_engine

            self._engines[engine] = make_engine(engine, self.workers)
        if obligation.kind == "backdoor":  # one query per patch location, within the one timeout
            from bitqnn.backdoor_verify import verify_backdoor

            return verify_backdoor(obligation.query, self._engines[engine], timeout)
        return verify(obligation.query, self._engines[engine], timeout)

"""Quantization-error questions: is |QNN(x) - f(x)| <= eps on a box, and how large can it get?

Both networks see the same real input: an integer grid point x of the box stands for the
real input qnn.input_scale * (x - qnn.input_zero), which is what the float network is fed
(in float64) and what the QNN quantizes exactly. The error of output j is
qnn.output_scale * (QNN(x)_j - qnn.output_zero) - f(x)_j, in the outputs' real units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitqnn.floatnet import FloatNetwork
from bitqnn.outcome import Verdict
from bitqnn.qnn import QNN, execute
from bitqnn.query import Box


@dataclass(frozen=True, eq=False)
class ErrorQuery:
    float_net: FloatNetwork
    qnn: QNN
    region: Box
    eps: float
    outputs: tuple[int, ...]  # the outputs bounded (all of them for the L-inf error)
    label: str = "error query"

    @property
    def network(self) -> QNN:
        """The QNN, under the name every query uses for its subject network."""
        return self.qnn

    def real_inputs(self, points: np.ndarray) -> np.ndarray:
        points = np.atleast_2d(np.asarray(points, dtype=np.int64))
        return self.qnn.input_scale * (points - self.qnn.input_zero).astype(np.float64)

    def probe_points(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Both corners, the centre and `count` random grid points: where a search for a
        large error starts, since extremes of a near-linear difference sit at corners."""
        lo, hi = self.region.lo, self.region.hi
        return np.vstack([lo, hi, (lo + hi) // 2, rng.integers(lo, hi + 1, (count, lo.size))]).astype(np.int64)

    def errors(self, points: np.ndarray) -> np.ndarray:
        """QNN minus float network on the chosen outputs, per point: [B, len(outputs)]."""
        points = np.atleast_2d(np.asarray(points, dtype=np.int64))
        return self.errors_of(execute(self.qnn, points), self.float_net.forward(self.real_inputs(points)))

    def errors_of(self, q_out: np.ndarray, f_out: np.ndarray) -> np.ndarray:
        """The same difference from the two networks' raw outputs (QNN integers, float reals)."""
        scale = np.broadcast_to(np.asarray(self.qnn.output_scale, dtype=np.float64).ravel(),
                                (self.qnn.output_size,))
        q_real = scale * (q_out - self.qnn.output_zero).astype(np.float64)
        columns = list(self.outputs)
        return q_real[:, columns] - f_out[:, columns]


@dataclass(frozen=True)
class ErrorOutcome:
    """An answer about max |error| over the box.

    `witness` (an integer input in the box) and `witnessed` (its largest |error| on the
    chosen outputs, replayed on the executor and in float64) are set whenever a point was
    found; `proven` is an upper bound on the error when one was established.
    """

    verdict: Verdict
    engine: str
    seconds: float
    reason: str = ""
    witness: np.ndarray | None = None
    witnessed: float | None = None
    proven: float | None = None
    stats: dict = field(default_factory=dict)

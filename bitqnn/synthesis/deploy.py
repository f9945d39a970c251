"""Whether a candidate can be delivered: written as ONNX, read back, its keeps stated on the file.

A certified candidate is only an answer if the written model is one bitqnn can re-prove:
the exporter refuses anything it cannot express exactly, and the importer must read the
file back into a network the kept properties compile on (an error-bound keep needs it to
pair with the float network layer by layer). The search asks this of every candidate it
certifies, so the best one is always deliverable; a refusal makes the candidate invalid,
with the reason, instead of ending the run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from bitqnn.onnx_io import ExportError, OnnxImportError, export_fixed_point, load_model
from bitqnn.qnn import QNN
from bitqnn.spec.errors import SpecError


def deliver(qnn: QNN, path: Path, obligations_for: Callable[[QNN], list]) -> tuple[QNN, list]:
    """Write the model, read it back, compile the keeps on it; raises DeliveryError if any step refuses."""
    try:
        export_fixed_point(qnn, path)
        deployed = load_model(path)
        return deployed, obligations_for(deployed)
    except (ExportError, OnnxImportError) as error:
        raise DeliveryError(str(error)) from error
    except SpecError as error:
        raise DeliveryError(f"the written model does not take the kept properties: {error.message}") from error


class DeliveryError(ValueError):
    """The candidate cannot be written as an ONNX model that bitqnn re-proves."""


def delivery_problem(qnn: QNN, obligations_for: Callable[[QNN], list]) -> str | None:
    """None when the candidate can be delivered, else why not (checked in a scratch folder)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            deliver(qnn, Path(folder) / "candidate.onnx", obligations_for)
        except DeliveryError as error:
            return str(error)
    return None

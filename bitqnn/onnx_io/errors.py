"""The one exception the ONNX front end raises.

Anything wrong with a model file -- missing, malformed, an operator we cannot give an exact
meaning to -- surfaces as a one-line OnnxImportError that names the file (and the node),
so the CLI can print it as is instead of a traceback.
"""

from __future__ import annotations


class OnnxImportError(Exception):
    """A model file that bitqnn cannot import, with a one-line reason."""

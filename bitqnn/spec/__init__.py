"""The .qspec language: text -> AST (parser) -> proof obligations (compile).

Each stage has its own module; these are the entry points the CLI and tests use.
"""

from bitqnn.spec.compile import Audit, Compiled, Obligation, compile_file, compile_spec, compile_text
from bitqnn.spec.errors import SpecError
from bitqnn.spec.parser import parse_spec

__all__ = ["Audit", "Compiled", "Obligation", "SpecError", "compile_file", "compile_spec", "compile_text",
           "parse_spec"]

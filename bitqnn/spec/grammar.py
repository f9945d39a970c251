"""The .qspec grammar, a data file, and the one LALR parser built from it.

The grammar lives at grammar/qspec.lark in the repository; the wheel carries it as
bitqnn/grammar/qspec.lark. It is found as package data first, so an installed bitqnn
never depends on a source checkout, and in the checkout second, so tests and editable
installs work without building anything.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from lark import Lark
from lark.lexer import PatternStr

GRAMMAR_NAME = "qspec.lark"


def grammar_text() -> str:
    packaged = resources.files("bitqnn") / "grammar" / GRAMMAR_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_NAME
    return checkout.read_text(encoding="utf-8")


@cache
def qspec_parser() -> Lark:
    """strict=True turns any grammar conflict or terminal collision into a build error."""
    return Lark(grammar_text(), parser="lalr", strict=True, propagate_positions=True, maybe_placeholders=True)


@cache
def terminal_literals() -> dict[str, str]:
    """Terminal name -> fixed text, for the terminals that are plain strings (keywords, punctuation)."""
    return {t.name: t.pattern.value for t in qspec_parser().terminals if isinstance(t.pattern, PatternStr)}

"""Spec errors: one line of location and message, plus the source line and a caret.

Parse errors come from Lark in terms of terminal names (RPAR, __ANON_3); this module is
where they become words a user can act on ("expected ',' or ')'"), with a short hint
for the usual slips. Every later stage raises SpecError with a node's position, and
the compiler attaches the source line at its boundary.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection

from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from bitqnn.spec.ast import Pos
from bitqnn.spec.grammar import qspec_parser, terminal_literals


class SpecError(Exception):
    """A problem in a spec, found before any solving.

    str(error) is the one-line `file:line:col: error: message`; `render()` adds the
    offending source line and a caret under the column, for display.
    """

    def __init__(self, message: str, pos: Pos, source_line: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.source_line = source_line

    @property
    def file(self) -> str:
        return self.pos.file

    @property
    def line(self) -> int:
        return self.pos.line

    @property
    def column(self) -> int:
        return self.pos.column

    @property
    def headline(self) -> str:
        where = str(self.pos) if self.pos.line > 0 else self.pos.file
        return f"{where}: error: {self.message}"

    @property
    def caret(self) -> str:
        """Spaces (tabs kept, so the caret lines up) then '^' under the column."""
        if self.source_line is None:
            return ""
        lead = self.source_line[: self.column - 1]
        return "".join("\t" if ch == "\t" else " " for ch in lead) + "^"

    def render(self) -> str:
        if self.source_line is None:
            return self.headline
        return f"{self.headline}\n{self.source_line}\n{self.caret}"

    def with_source(self, source: str) -> SpecError:
        """Attach the line this error points at, taken from the spec's text."""
        lines = source.split("\n")
        if self.source_line is None and 0 < self.line <= len(lines):
            self.source_line = lines[self.line - 1].rstrip("\r")
        return self

    def __str__(self) -> str:
        return self.headline


_STRING_OR_COMMENT = re.compile(r'("[^"\n]*")|#[^\n]*')


def strip_comments(text: str) -> str:
    """Drop '#' comments; a '#' inside a quoted string is kept."""
    return _STRING_OR_COMMENT.sub(lambda m: m.group(1) or "", text)


# ---- Lark errors in words ----

_PATTERN_TERMINALS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a quoted string",
    "COMPARE": "a comparison (>=, >, <=, <)",
}
_END = "$END"
_TOKEN_FORMATS = {"NAME": "name '{}'", "NUMBER": "number {}", "STRING": "string {}", _END: "end of file"}
_STATEMENT_KEYWORDS = ("options", "network", "let", "region", "prove", "bound")
# keywords that are named in an expectation only when nothing else would do: after every
# property 'under' may follow, and before every statement 'audit' and 'synthesize' (run by
# `bitqnn audit` and `bitqnn synthesize`, not `prove`) may stand; listing them there would only
# lengthen each message. A misspelt one gets its hint instead.
_QUIET_HINTS = {
    "under": "a fault model follows 'under', as in: under bitflips(k=1, params=q.weights)",
    "audit": 'an audit reads: audit robust(q, radius=R) over sample "FILE" index A..B under bitflips(...)',
    "synthesize": "a synthesis reads: synthesize q from f with fixed(...) { search ... keep ... }",
}
_QUIET_KEYWORDS = tuple(_QUIET_HINTS)

# (unexpected token values or types, something that was expected, hint)
_HINTS: tuple[tuple[frozenset[str], str, str], ...] = (
    (frozenset({"="}), "COMPARE", "there is no '=': write a >= b and a <= b"),
    (frozenset({"NUMBER"}), "index", "pick a row with: index N"),
    (frozenset({"NUMBER"}), "label", "name it: label=N"),
    (frozenset({"NUMBER"}), "target", "name it: target=N"),
    (frozenset({"label", "target"}), "with", "it goes inside the parentheses, as in robust(q, r, label=3)"),
    (frozenset({"STRING"}), "onnx", 'load a model with: onnx "model.onnx"'),
    (frozenset({"steps"}), "real", "amounts are in input steps unless followed by 'real'"),
)
# character -> (what must be expected for the hint to apply, or None; hint)
_CHARACTER_HINTS = {
    '"': (None, 'a string ends with " on the same line'),
    ".": ("NUMBER", "write decimals with digits on both sides of the point, as in 0.5"),
}


def describe_terminal(name: str) -> str:
    """Human words for one terminal: its fixed text, or what a pattern terminal stands for."""
    if name == _END:
        return "the end of the file"
    literal = terminal_literals().get(name)
    return f"'{literal}'" if literal is not None else _PATTERN_TERMINALS[name]


def describe_expected(names: Collection[str]) -> str:
    """'a, b or c': punctuation, keywords, descriptions, with the statement keywords as one phrase."""
    literals = terminal_literals()
    names = set(names)
    if "NUMBER" in names:
        names.discard("MINUS")  # "a number" already covers a sign
    quiet = {n for n in names if literals.get(n) in _QUIET_KEYWORDS}
    if quiet != names:
        names -= quiet
    statements = {n for n in names if literals.get(n) in _STATEMENT_KEYWORDS}
    folded = len(statements) == len(_STATEMENT_KEYWORDS)
    if folded:
        names -= statements
    ordered = sorted((n for n in names if n in literals), key=lambda n: (literals[n].isalpha(), literals[n]))
    ordered += sorted(n for n in names if n not in literals and n != _END)
    parts = [describe_terminal(n) for n in ordered]
    if folded:
        parts.append("a statement (" + ", ".join(_STATEMENT_KEYWORDS) + ")")
    if _END in names:
        parts.append(describe_terminal(_END))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _describe_token(token_type: str, value: str) -> str:
    return _TOKEN_FORMATS.get(token_type, "'{}'").format(value)


def _hint(token_type: str, value: str, expected: Collection[str]) -> str | None:
    literals = terminal_literals()
    expected_words = set(expected) | {literals[n] for n in expected if n in literals}
    for unexpected, wanted, hint in _HINTS:
        if (token_type in unexpected or value in unexpected) and wanted in expected_words:
            return hint
    if token_type == "NAME":
        for keyword, hint in _QUIET_HINTS.items():
            if keyword in expected_words and difflib.get_close_matches(value, [keyword]):
                return hint
    return None


def _end_of_code_before(source: str, offset: int) -> tuple[int, int] | None:
    """(line, column) just after the last non-comment character before offset."""
    lines = source[:offset].split("\n")
    for index in range(len(lines) - 1, -1, -1):
        code = strip_comments(lines[index]).rstrip()
        if code:
            return index + 1, len(code) + 1
    return None


def _accepted_before(source: str, offset: int) -> set[str]:
    """What the parser accepts after source[:offset]; the lexer's own list is coarser."""
    interactive = qspec_parser().parse_interactive(source[:offset])
    interactive.exhaust_lexer()
    return interactive.accepts()


def _unexpected_character(char: str, offset: int, pos: Pos, source: str) -> SpecError:
    accepted = _accepted_before(source, offset)
    message = f"unexpected character '{char}'; expected {describe_expected(accepted)}"
    wanted, hint = _CHARACTER_HINTS.get(char, (None, None))
    message += f" ({hint})" if hint and (wanted is None or wanted in accepted) else ""
    return SpecError(message, pos).with_source(source)


def from_lark(err: UnexpectedCharacters | UnexpectedToken, source: str, file: str) -> SpecError:
    """Translate a Lark parse error into a SpecError in words.

    When a statement is left unfinished at the end of a line, Lark only notices at the
    next line's first token; the error then points just after the unfinished line.
    """
    if isinstance(err, UnexpectedCharacters):
        return _unexpected_character(err.char, err.pos_in_stream, Pos(file, err.line, err.column), source)
    token = err.token
    if token.type != _END and str(token) in _CHARACTER_HINTS:
        # punctuation of another construct ('.' in q.layers[0].weights) is a stray character here
        return _unexpected_character(str(token), token.start_pos, Pos(file, token.line, token.column), source)
    expected = err.accepts or err.expected
    at_end = token.type == _END
    what = _describe_token(token.type, str(token))
    hint = _hint(token.type, str(token), expected)
    line, column = err.line, err.column
    statement_may_end = any(terminal_literals().get(n) in _STATEMENT_KEYWORDS for n in expected)
    previous = _end_of_code_before(source, len(source) if at_end else token.start_pos)
    if previous is not None and (at_end or (previous[0] < line and not statement_may_end)):
        what = what if at_end else "end of line"
        hint = None  # a hint about the next line's first token would mislead here
        line, column = previous
    message = f"unexpected {what}; expected {describe_expected(expected)}"
    message += f" ({hint})" if hint else ""
    return SpecError(message, Pos(file, line, column)).with_source(source)

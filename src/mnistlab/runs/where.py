"""`ls --where EXPR`: a small expression language over the keys of `ls --json`, parsed into an AST and
evaluated in Python on each run's row; the text is never pasted into SQL.

    EXPR    := OR
    OR      := AND ("or" AND)*
    AND     := NOT ("and" NOT)*
    NOT     := "not" NOT | "(" OR ")" | FIELD OP VALUE
    OP      := == | = | != | < | <= | > | >=
    VALUE   := a number (0.99, 10, 1e-3, -2) | a quoted string ('completed' or "completed") | null

Field names are the keys of `ls --json` (``FIELDS`` says each one's kind); strings must be quoted. A
missing value (null) satisfies only ``== null`` and ``!= <anything else>``, as SQL's NULL would not
be ordered. A list field (tags) with ``==`` / ``!=`` asks whether the value is / is not among its
items. Anything else, a stray ``;``, ``--`` or quote included, is one line naming the column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from mnistlab.errors import MnistlabError, did_you_mean

__all__ = ["Comparison", "Logical", "Not", "WhereError", "compile_where", "parse_where"]

MAX_LENGTH = 2000
MAX_DEPTH = 50  # nested parentheses / nots: deeper is refused before Python's recursion limit

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b, "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}
KEYWORDS = ("and", "or", "not", "null")

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_0-9.]))
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<paren>[()])
""", re.VERBOSE)


class WhereError(MnistlabError):
    """A --where expression that cannot be read: one line naming the column."""


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: float | str | None


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


Node = Union[Comparison, Not, Logical]


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    found, position = [], 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            rest = text[position:]
            what = "an unterminated string" if rest[0] in "'\"" else repr(rest[0])
            raise WhereError(f"--where: {what} at column {position + 1} is not part of the language "
                             "(fields, comparisons, and/or/not, parentheses, numbers, quoted strings)")
        kind = match.lastgroup or ""
        if kind != "space":
            token_text = match.group()
            if kind == "name" and token_text.lower() in KEYWORDS:
                kind, token_text = token_text.lower(), token_text.lower()
            found.append(_Token(kind, token_text, position + 1))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, str]) -> None:
        self.tokens, self.fields, self.index = _tokens(text), fields, 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise WhereError("--where: the expression ends too early")
        self.index += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise WhereError("--where: the expression is empty")
        node = self.logical("or", 0)
        extra = self.peek()
        if extra is not None:
            raise WhereError(f"--where: unexpected {extra.text!r} at column {extra.column}")
        return node

    def logical(self, op: str, depth: int) -> Node:
        lower = (lambda: self.logical("and", depth)) if op == "or" else (lambda: self.negation(depth))
        operands = [lower()]
        while (token := self.peek()) is not None and token.kind == op:
            self.take()
            operands.append(lower())
        return operands[0] if len(operands) == 1 else Logical(op, tuple(operands))

    def negation(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise WhereError(f"--where: nested more than {MAX_DEPTH} deep")
        token = self.take()
        if token.kind == "not":
            return Not(self.negation(depth + 1))
        if token.kind == "paren" and token.text == "(":
            node = self.logical("or", depth + 1)
            close = self.take()
            if close.text != ")":
                raise WhereError(f"--where: expected ')' at column {close.column}, found {close.text!r}")
            return node
        return self.comparison(token)

    def comparison(self, field: _Token) -> Comparison:
        if field.kind != "name":
            raise WhereError(f"--where: expected a field name at column {field.column}, found {field.text!r} "
                             f"(fields: {', '.join(self.fields)})")
        if field.text not in self.fields:
            raise WhereError(f"--where: unknown field '{field.text}' at column {field.column}"
                             f"{did_you_mean(field.text, self.fields)} (fields: {', '.join(self.fields)})")
        op = self.take()
        if op.kind != "op":
            raise WhereError(f"--where: expected a comparison (== != < <= > >=) after '{field.text}' at column "
                             f"{op.column}, found {op.text!r}")
        value_token = self.take()
        value = self.value(value_token, field.text)
        kind = self.fields[field.text]
        if value is None and op.text not in ("=", "==", "!="):
            raise WhereError(f"--where: null can only be compared with == or != (column {value_token.column})")
        if kind == "list" and op.text not in ("=", "==", "!="):
            raise WhereError(f"--where: '{field.text}' is a list: ask == or != (whether it holds a value)")
        return Comparison(field.text, "==" if op.text == "=" else op.text, value)

    def value(self, token: _Token, field: str) -> float | str | None:
        kind = self.fields[field]
        if token.kind == "null":
            return None
        if token.kind == "number":
            if kind != "number":
                raise WhereError(f"--where: '{field}' holds text; quote the value at column {token.column}")
            return float(token.text)
        if token.kind == "string":
            if kind == "number":
                raise WhereError(f"--where: '{field}' holds numbers; {token.text} at column {token.column} is text")
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        hint = " (quote text values: status == 'completed')" if token.kind == "name" else ""
        raise WhereError(f"--where: expected a value after '{field}' at column {token.column}, found "
                         f"{token.text!r}{hint}")


def parse_where(text: str, fields: Mapping[str, str]) -> Node:
    """The AST of ``text``; ``fields``: each field's kind ("number", "text" or "list")."""
    if len(text) > MAX_LENGTH:
        raise WhereError(f"--where: longer than {MAX_LENGTH} characters")
    return _Parser(text, fields).parse()


def _holds(node: Node, row: Mapping[str, Any]) -> bool:
    if isinstance(node, Logical):
        results = (_holds(operand, row) for operand in node.operands)
        return all(results) if node.op == "and" else any(results)
    if isinstance(node, Not):
        return not _holds(node.operand, row)
    actual = row.get(node.field)
    if isinstance(actual, (list, tuple)):
        inside = node.value in actual
        return inside if node.op == "==" else not inside
    if actual is None or node.value is None:
        same = actual is None and node.value is None
        return same if node.op == "==" else (not same if node.op == "!=" else False)
    return OPERATORS[node.op](actual, node.value)


def compile_where(text: str, fields: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over `ls --json` rows that holds where ``text`` does."""
    tree = parse_where(text, fields)
    return lambda row: _holds(tree, row)

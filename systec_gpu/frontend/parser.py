"""Parser for the expression language: `C[i,j] += A[i,k] * (B[k,j] + D[k,j])`.

Grammar (whitespace ignored):
    stmt   := access ("+=" | "min=" | "max=") expr
    expr   := term ("+" term)*
    term   := factor ("*" factor)*
    factor := access | number | "(" expr ")" | ("min" | "max") "(" expr ("," expr)+ ")"
    access := NAME "[" [NAME ("," NAME)*] "]"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..algebra import INFIX, REDUCTIONS
from ..ir.einsum import Access, Call, Einsum, Expr, Index, Literal


class ParseError(ValueError):
    """A syntax error; the message shows the expression with a caret under the position."""

    def __init__(self, text: str, position: int, reason: str):
        self.text, self.position, self.reason = text, position, reason
        super().__init__(f"{reason} at position {position}:\n  {text}\n  {' ' * position}^")


_TOKEN = re.compile(
    r"\s*(?:(?P<reduce>\+=|min=|max=)|(?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?"
    r"|\.\d+(?:[eE][-+]?\d+)?)|(?P<assign>(?:[A-Za-z_][A-Za-z0-9_]*|[-*/])?=)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[\[\](),*+]))"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "reduce", "number", "name", "punct", "end"
    text: str
    position: int


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            tokens.append(_Token("end", "", position))
            return tokens
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ParseError(text, position, f"unexpected character {text[position]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        position = match.end()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.at = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def fail(self, reason: str, token: _Token | None = None) -> ParseError:
        token = token or self.token
        found = "end of input" if token.kind == "end" else repr(token.text)
        return ParseError(self.text, token.position, f"{reason}, found {found}")

    def take(self, text: str) -> _Token:
        if self.token.text != text or self.token.kind not in ("punct", "reduce"):
            raise self.fail(f"expected {text!r}")
        token = self.token
        self.at += 1
        return token

    def peek(self, text: str) -> bool:
        return self.token.kind == "punct" and self.token.text == text

    def statement(self) -> Einsum:
        output = self.access(what="output")
        if self.token.kind == "assign":
            raise self.fail(f"unknown reduction: expected one of {', '.join(REDUCTIONS)}")
        if self.token.kind != "reduce":
            raise self.fail(f"expected one of {', '.join(REDUCTIONS)} after the output")
        reduce = self.token.text
        self.at += 1
        rhs = self.expr()
        if self.token.kind != "end":
            raise self.fail("expected an operator or the end of the expression")
        return Einsum(output, reduce, rhs)

    def expr(self) -> Expr:
        return self.infix("+", self.term)

    def term(self) -> Expr:
        return self.infix("*", self.factor)

    def infix(self, symbol: str, operand) -> Expr:
        args = [operand()]
        while self.peek(symbol):
            self.at += 1
            args.append(operand())
        return args[0] if len(args) == 1 else Call(INFIX[symbol], tuple(args))

    def factor(self) -> Expr:
        token = self.token
        if token.kind == "number":
            self.at += 1
            return Literal(float(token.text))
        if self.peek("("):
            self.at += 1
            inner = self.expr()
            self.take(")")
            return inner
        if token.kind == "name" and token.text in ("min", "max") and self.tokens[self.at + 1].text == "(":
            self.at += 2
            args = [self.expr()]
            while self.peek(","):
                self.at += 1
                args.append(self.expr())
            self.take(")")
            if len(args) < 2:
                raise ParseError(self.text, token.position, f"{token.text}() needs two arguments")
            return Call(token.text, tuple(args))
        if token.kind == "name":
            return self.access(what="operand")
        raise self.fail("expected a tensor access, a number or '('")

    def access(self, what: str) -> Access:
        name = self.token
        if name.kind != "name":
            raise self.fail(f"expected the {what} tensor name")
        self.at += 1
        if not self.peek("["):
            raise self.fail(f"expected '[' after {name.text} (write {name.text}[] for a scalar)")
        self.at += 1
        indices: list[Index] = []
        if not self.peek("]"):
            while True:
                if self.token.kind != "name":
                    raise self.fail(f"expected an index name in {name.text}[...]")
                indices.append(Index(self.token.text))
                self.at += 1
                if not self.peek(","):
                    break
                self.at += 1
        self.take("]")
        return Access(name.text, tuple(indices))


def parse(text: str) -> Einsum:
    """Parse one einsum statement; raise ParseError naming the position and the reason."""
    if not isinstance(text, str):
        raise TypeError(f"expression must be a string, got {type(text).__name__}")
    return _Parser(text).statement()

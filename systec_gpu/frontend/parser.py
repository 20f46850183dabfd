"""Parser for the expression language: `C[i,j] += A[i,k] * (B[k,j] + D[k,j])`.

Grammar (whitespace ignored, except that a line break may end a statement):
    program := stmt ((";" | line break) stmt)* [";"]
    stmt   := access REDUCTION expr
    expr   := term ("+" term)*
    term   := factor ("*" factor)*
    factor := access | number | "(" expr ")" | FUNCTION "(" expr ("," expr)+ ")"
    access := NAME "[" [NAME ("," NAME)*] "]"

The tokens come from the algebra table: REDUCTION is one of `algebra.REDUCTIONS` ("+=", "min=",
"max=", ...), FUNCTION one of `algebra.FUNCTIONS` ("min", "max"); `+` and `*` are `algebra.INFIX`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..algebra import FUNCTIONS, INFIX, REDUCTIONS
from ..ir.einsum import Access, Call, Einsum, Expr, Index, Literal


class ParseError(ValueError):
    """A syntax error; the message shows the expression with a caret under the position (for a
    text of several lines: the line of the position, with its number)."""

    def __init__(self, text: str, position: int, reason: str):
        self.text, self.position, self.reason = text, position, reason
        super().__init__(f"{reason} {caret(text, position)}")


def caret(text: str, position: int) -> str:
    """`at position P:` and the text with a caret under P (the line holding P when there are several)."""
    if "\n" not in text:
        return f"at position {position}:\n  {text}\n  {' ' * position}^"
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    line = text[start:end if end >= 0 else len(text)]
    number = text.count("\n", 0, position) + 1
    return f"at line {number}, column {position - start + 1}:\n  {line}\n  {' ' * (position - start)}^"


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # longest first


_TOKEN = re.compile(
    rf"\s*(?:(?P<reduce>{_alternatives(REDUCTIONS)})|(?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?"
    r"|\.\d+(?:[eE][-+]?\d+)?)|(?P<assign>(?:[A-Za-z_][A-Za-z0-9_]*|[-*/])?=)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    rf"|(?P<punct>[\[\](),;]|{_alternatives(INFIX)}))"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "reduce", "number", "name", "punct", "end"
    text: str
    position: int
    after_line_break: bool = False  # a line break lies between the previous token and this one


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while True:
        start = position
        while position < len(text) and text[position].isspace():
            position += 1
        broken = "\n" in text[start:position]
        if position == len(text):
            tokens.append(_Token("end", "", position, broken))
            return tokens
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ParseError(text, position, f"unexpected character {text[position]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(_Token(kind, match.group(kind), match.start(kind), broken))
        position = match.end()


@dataclass(frozen=True)
class ParsedStatement:
    """One statement of a program: its einsum, where it lies in the text (`start` .. `end`), and
    where its output and each tensor it reads are written (positions in the whole text)."""

    einsum: Einsum
    start: int
    end: int
    output_at: int
    reads: tuple[tuple[str, int], ...]  # (tensor, position) per right-hand-side access, in order


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.at = 0
        self.positions: list[tuple[str, int]] = []  # accesses parsed so far: (tensor, position)

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
        einsum = self.einsum()
        if self.token.kind != "end":
            if self.peek(";") or self.token.after_line_break:
                raise self.fail("expected the end of the expression (several statements are a program: "
                                "compile them with systec_gpu.compile)")
            raise self.fail("expected an operator or the end of the expression")
        return einsum

    def einsum(self) -> Einsum:
        output = self.access(what="output")
        if self.token.kind == "assign":
            raise self.fail(f"unknown reduction: expected one of {', '.join(REDUCTIONS)}")
        if self.token.kind != "reduce":
            raise self.fail(f"expected one of {', '.join(REDUCTIONS)} after the output")
        reduce = self.token.text
        self.at += 1
        rhs = self.expr()
        return Einsum(output, reduce, rhs)

    def statements(self) -> tuple[ParsedStatement, ...]:
        """Statements separated by ';' or by line breaks (a line break ends a statement only where
        the statement is complete and a new one begins: an expression may span lines)."""
        found = []
        while True:
            start, first = self.token.position, len(self.positions)
            einsum = self.einsum()
            end = self.tokens[self.at - 1].position + len(self.tokens[self.at - 1].text)
            accesses = self.positions[first:]
            found.append(ParsedStatement(einsum, start, end, accesses[0][1], tuple(accesses[1:])))
            if self.peek(";"):
                while self.peek(";"):
                    self.at += 1
                if self.token.kind == "end":
                    return tuple(found)
            elif self.token.kind == "end":
                return tuple(found)
            elif not self.token.after_line_break:
                raise self.fail("expected an operator, ';' or the end of the statement")

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
        if token.kind == "name" and token.text in FUNCTIONS and self.tokens[self.at + 1].text == "(":
            self.at += 2
            args = [self.expr()]
            while self.peek(","):
                self.at += 1
                args.append(self.expr())
            self.take(")")
            if len(args) < 2:
                raise ParseError(self.text, token.position, f"{token.text}() needs two arguments")
            return Call(FUNCTIONS[token.text], tuple(args))
        if token.kind == "name":
            return self.access(what="operand")
        raise self.fail("expected a tensor access, a number or '('")

    def access(self, what: str) -> Access:
        name = self.token
        if name.kind != "name":
            raise self.fail(f"expected the {what} tensor name")
        self.positions.append((name.text, name.position))
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


def parse_statements(text: str) -> tuple[ParsedStatement, ...]:
    """Parse a program: statements separated by ';' or line breaks (one statement is a program
    too); raise ParseError naming the position (and line) and the reason."""
    if not isinstance(text, str):
        raise TypeError(f"expression must be a string, got {type(text).__name__}")
    return _Parser(text).statements()

"""Frontend: expression text and declarations -> einsum IR."""

from .declare import build_program
from .parser import ParseError, parse, parse_statements

__all__ = ["ParseError", "build_program", "parse", "parse_statements"]

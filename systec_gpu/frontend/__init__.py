"""Frontend: expression text and declarations -> einsum IR."""

from .declare import build_program
from .parser import ParseError, parse

__all__ = ["ParseError", "build_program", "parse"]

"""Errors raised by the file readers and writers."""

from __future__ import annotations

import os


class FormatError(ValueError):
    """A malformed or inconsistent file; the message names the file and, if known, the line."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        where = f"{self.path}: line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

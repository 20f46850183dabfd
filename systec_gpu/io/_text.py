"""Vectorized helpers for line-oriented numeric text files (shared by the .tns and .mtx readers)."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np

from .errors import FormatError


def is_gzip(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(".gz")


def open_binary(path: str | os.PathLike[str], mode: str = "rb") -> IO[bytes]:
    """Open a plain or gzip-compressed file (chosen by the .gz suffix)."""
    if is_gzip(path):
        return gzip.open(path, mode, compresslevel=6) if "w" in mode else gzip.open(path, mode)
    return open(path, mode)  # noqa: SIM115 - returned to the caller, who closes it


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@contextmanager
def gzip_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Truncated or corrupt gzip data as a FormatError naming the file (not a bare EOFError)."""
    try:
        yield
    except _GZIP_ERRORS as e:
        if not is_gzip(path):
            raise
        raise FormatError(path, f"truncated or corrupt gzip data: {e}") from None


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    with gzip_errors(path), open_binary(path) as f:
        return f.read()


def line_counts(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens per line, plus the positions of all events (token starts and newlines) and which
    of them are newlines. Lines end at a newline or at the end of the buffer."""
    ws = buf <= 32
    start = ~ws
    start[1:] &= ws[:-1]
    start |= buf == 10
    pos = np.flatnonzero(start)  # events in file order: gaps between newlines = tokens per line
    is_nl = buf[pos] == 10
    nl = np.flatnonzero(is_nl)
    if buf.size and buf[-1] != 10:
        nl = np.append(nl, pos.size)
    return np.diff(nl, prepend=-1) - 1, pos, is_nl


def span_mask(n: int, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Boolean mask of the union of disjoint half-open byte spans [starts, stops)."""
    delta = np.zeros(n + 1, dtype=np.int8)
    delta[starts] += 1  # starts are distinct, and so are stops: plain fancy indexing is exact
    delta[stops] -= 1
    return np.cumsum(delta[:-1], dtype=np.int8) > 0


def has_any(data: bytes, chars: bytes) -> bool:
    return any(data.find(bytes([c])) >= 0 for c in chars)


_NON_WS = bytes(range(33, 256))


def regular_lines(block: bytes, k: int, keep: bytes = _NON_WS) -> int | None:
    """The number of lines if every line of the block is ``k`` tokens separated by single spaces
    (the usual layout) and only bytes of ``keep`` or spaces and newlines occur; None if the block
    needs the general, slower check. A few fast passes (``bytes.translate`` and numpy)."""
    n = block.count(b"\n")
    expect = (b" " * (k - 1) + b"\n") * n
    if block and not block.endswith(b"\n"):
        expect += b" " * (k - 1)
        n += 1
    if block.translate(None, keep) != expect:  # the whitespace layout, and no foreign bytes
        return None
    ws = np.frombuffer(block, dtype=np.uint8) <= 32
    if ws.size and (ws[0] or (ws[:-1] & ws[1:]).any()):  # leading or doubled whitespace
        return None
    return n

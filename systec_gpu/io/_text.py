"""Vectorized helpers for line-oriented numeric text files (shared by the .tns and .mtx readers)."""

from __future__ import annotations

import functools
import gzip
import os
from typing import IO

import numpy as np


def is_gzip(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(".gz")


def open_binary(path: str | os.PathLike[str], mode: str = "rb") -> IO[bytes]:
    """Open a plain or gzip-compressed file (chosen by the .gz suffix)."""
    if is_gzip(path):
        return gzip.open(path, mode, compresslevel=6) if "w" in mode else gzip.open(path, mode)
    return open(path, mode)  # noqa: SIM115 - returned to the caller, who closes it


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    with open_binary(path) as f:
        return f.read()


class Lines:
    """Line and token structure of a text buffer, computed with a few vectorized passes.

    Whitespace is any byte <= 32 (control characters are rejected separately by the readers).
    """

    def __init__(self, buf: np.ndarray):
        n = buf.size
        self._ws = ws = buf <= 32
        newline = buf == 10
        start = ~ws
        start[1:] &= ws[:-1]
        # events (token starts and newlines) in file order: tokens per line = gaps between newlines
        pos = np.flatnonzero(start | newline)
        is_nl = newline[pos]
        nl = np.flatnonzero(is_nl)
        ends = pos[nl]
        if n and buf[-1] != 10:  # last line without a trailing newline
            nl = np.append(nl, pos.size)
            ends = np.append(ends, n)
        self.ends = ends  # position of each line's newline (or n)
        self.starts_of_line = np.concatenate([[0], ends[:-1] + 1]) if ends.size else ends
        self.counts = np.diff(nl, prepend=-1) - 1
        self.first_tok = np.cumsum(self.counts) - self.counts  # valid where counts > 0
        self.tok_start = pos[~is_nl]

    @functools.cached_property
    def tok_end(self) -> np.ndarray:
        end = ~self._ws
        end[:-1] &= self._ws[1:]
        return np.flatnonzero(end) + 1  # exclusive


def span_mask(n: int, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Boolean mask of the union of disjoint half-open byte spans [starts, stops)."""
    delta = np.zeros(n + 1, dtype=np.int8)
    delta[starts] += 1  # starts are distinct, and so are stops: plain fancy indexing is exact
    delta[stops] -= 1
    return np.cumsum(delta[:-1], dtype=np.int8) > 0


def has_any(data: bytes, chars: bytes) -> bool:
    return any(data.find(bytes([c])) >= 0 for c in chars)

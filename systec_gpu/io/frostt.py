"""FROSTT ``.tns`` / ``.tns.gz``: one entry per line, 1-based coordinates, the value last.

Optional header, detected from the field counts of the first lines:

* a *dimensions line*: the first data line has one field fewer than the lines after it
  (``I J K`` above ``i j k v`` lines);
* a *ParTI header*: a line with the order ``N`` followed by a line of ``N`` dimensions.

Without a header each mode's size is its largest index (the largest over a symmetric group when
symmetry is declared). Blank lines and lines starting with ``#`` or ``%`` are skipped.

Parsing is vectorized: numpy finds lines and tokens; coordinates (and integer values) are read
with ``np.fromstring(sep=" ")`` and float values with the same routine (correctly rounded).
A file whose value fields are all integers loads with int64 values.

Writing: a SymmetricTensor writes its canonical entries only (read it back with
``symmetric=True`` or the same groups); a ParTI header is written only when the mode sizes
differ from what a reader would infer. Floats are written as ``repr`` (shortest exact).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..storage import (
    SparseTensor,
    SymmetricTensor,
    _agree,
    _Runs,
    _stabilizer,
    normalize_groups,
)
from ._common import declare, logger, wanted_groups
from ._text import Lines, has_any, open_binary, read_bytes, span_mask
from .errors import FormatError

_I64 = np.iinfo(np.int64)


def read_tns(path: str | os.PathLike[str], symmetric: object = None, *, check: bool = True,
             atol: float = 0.0, rtol: float = 0.0) -> SparseTensor:
    """Read a FROSTT file; ``symmetric=None`` detects full symmetry (logged on systec_gpu.io)."""
    raw = read_bytes(path)
    buf = np.frombuffer(raw, dtype=np.uint8)
    lines = Lines(buf)
    blank = lines.counts == 0
    skip = blank
    if has_any(raw, b"#%"):
        first_char = np.zeros(lines.counts.size, dtype=np.uint8)
        first_char[~blank] = buf[lines.tok_start[lines.first_tok[~blank]]]
        skip = blank | (first_char == ord("#")) | (first_char == ord("%"))
    data = np.flatnonzero(~skip)  # 0-based line numbers of header and entry lines
    counts = lines.counts[data]

    def tokens(j: int) -> list[bytes]:
        ln = data[j]
        return raw[lines.starts_of_line[ln]:lines.ends[ln]].split()

    def int_fields(j: int, what: str) -> list[int]:
        try:
            out = [int(t) for t in tokens(j)]
        except ValueError:
            raise FormatError(path, f"{what} must be integers", int(data[j]) + 1) from None
        if any(v < 1 for v in out):
            raise FormatError(path, f"{what} must be positive", int(data[j]) + 1)
        return out

    head, dims = 0, None
    parti = counts.size >= 2 and counts[0] == 1 and (counts.size == 2 or counts[2] == counts[1] + 1)
    if parti and int_fields(0, "the order line")[0] == counts[1]:
        head, dims = 2, int_fields(1, "dimensions")
    if head == 0 and counts.size >= 2 and counts[0] == counts[1] - 1:
        head, dims = 1, int_fields(0, "dimensions")
    if counts.size <= head:
        if dims is None:
            raise FormatError(path, "no entries and no dimensions line")
        k = len(dims) + 1
    else:
        k = int(counts[head])
    if k < 2:
        raise FormatError(path, "an entry needs at least one coordinate and a value",
                          int(data[head]) + 1)
    bad = np.flatnonzero(counts[head:] != k)
    if bad.size:
        j = head + int(bad[0])
        raise FormatError(path, f"expected {k} fields ({k - 1} coordinates and a value) as on "
                          f"line {int(data[head]) + 1}, found {int(counts[j])}", int(data[j]) + 1)
    entry_lines = data[head:]
    coords, vals = _parse_numbers(raw, buf, lines, skip, entry_lines, k, head, data, path)

    ndim = k - 1
    if coords.size and coords.min() < 1:
        j = int(np.argmax((coords < 1).any(axis=1)))
        raise FormatError(path, "coordinates are 1-based: found an index below 1",
                          int(entry_lines[j]) + 1)
    if dims is not None:
        if len(dims) != ndim:
            raise FormatError(path, f"{len(dims)} dimensions but {ndim} coordinates per entry")
        over = coords > np.array(dims, dtype=np.int64)
        if over.any():
            j = int(np.argmax(over.any(axis=1)))
            raise FormatError(path, f"index past the declared dimensions {tuple(dims)}",
                              int(entry_lines[j]) + 1)
    idx = np.ascontiguousarray(coords.T) - 1
    groups = wanted_groups(symmetric, ndim)
    shape = _shape(idx, dims, groups, path)

    def line_of(pos: int) -> int:
        return int(entry_lines[pos]) + 1

    if groups is not None:
        return declare(path, idx, vals, shape, groups, check=check, atol=atol, rtol=rtol,
                       line_of=line_of)
    sym, why = _detect_full(idx, vals, shape, atol, rtol)
    if sym is not None:
        logger.info("%s: every entry's permutations are present with equal values: loaded as a "
                    "SymmetricTensor with groups %s", os.fspath(path), sym.groups)
        return sym
    logger.info("%s: not fully symmetric (%s): loaded as a SparseTensor", os.fspath(path), why)
    return declare(path, idx, vals, shape, (), check=check, atol=atol, rtol=rtol,
                   line_of=line_of)


def _parse_numbers(raw: bytes, buf: np.ndarray, lines: Lines, skip: np.ndarray,
                   entry_lines: np.ndarray, k: int, head: int, data: np.ndarray,
                   path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates [n, k-1] (int64) and values [n] of the entry lines."""
    n = entry_lines.size
    if n == 0:
        return np.zeros((0, k - 1), dtype=np.int64), np.zeros(0, dtype=np.float64)
    blank_lines = np.concatenate([np.flatnonzero(skip), data[:head]])
    work = buf
    if blank_lines.size:  # blank out comments and the header so that only entries remain
        work = buf.copy()
        work[span_mask(buf.size, lines.starts_of_line[blank_lines], lines.ends[blank_lines])] = 32
    try:
        body = work.tobytes() if work is not buf else raw
        if not has_any(body, b".eEnNiI"):
            arr = np.fromstring(body, dtype=np.int64, sep=" ")
            if arr.size == n * k:
                if (arr == _I64.max).any() or (arr == _I64.min).any():  # clamped on overflow?
                    _locate_bad_field(raw, lines, entry_lines, k, path)
                arr = arr.reshape(n, k)
                return arr[:, :-1], arr[:, -1].copy()
        else:
            vt = lines.first_tok[entry_lines] + (k - 1)
            vmask = span_mask(buf.size, lines.tok_start[vt], lines.tok_end[vt])
            coords = np.fromstring(np.where(vmask, np.uint8(32), work).tobytes(), dtype=np.int64,
                                   sep=" ")
            vals = np.fromstring(np.where(vmask, buf, np.uint8(32)).tobytes(), dtype=np.float64,
                                 sep=" ")
            if coords.size == n * (k - 1) and vals.size == n and coords.max(initial=0) < _I64.max:
                return coords.reshape(n, k - 1), vals
    except ValueError:
        pass
    _locate_bad_field(raw, lines, entry_lines, k, path)
    raise FormatError(path, "could not parse the entries")


def _locate_bad_field(raw: bytes, lines: Lines, entry_lines: np.ndarray, k: int,
                      path: str | os.PathLike[str]) -> None:
    """Slow path, on errors only: find the first field that is not a number."""
    for ln in entry_lines:
        for t, tok in enumerate(raw[lines.starts_of_line[ln]:lines.ends[ln]].split()):
            coord = t < k - 1
            text = tok.decode(errors="replace")
            try:
                v = int(tok) if coord or tok.strip(b"+-").isdigit() else float(tok)
            except ValueError:
                v = None
            if v is None or b"_" in tok:
                kind = "coordinate" if coord else "value"
                raise FormatError(path, f"{kind} field {text!r} is not "
                                  f"{'an integer' if coord else 'a number'}", int(ln) + 1)
            if isinstance(v, int) and not _I64.min <= v <= _I64.max:
                raise FormatError(path, f"integer field {text} is outside the int64 range",
                                  int(ln) + 1)


def _shape(idx: np.ndarray, dims: list[int] | None, groups: object,
           path: str | os.PathLike[str]) -> tuple[int, ...]:
    if dims is not None:
        return tuple(dims)
    shape = [int(row.max()) + 1 if row.size else 0 for row in idx]
    if groups is not None:
        try:
            grp = normalize_groups(groups, (max(shape, default=0),) * len(shape))
        except ValueError as e:
            raise FormatError(path, str(e)) from None
        for g in grp:
            m = max(shape[p] for p in g)
            for p in g:
                shape[p] = m
    return tuple(shape)


def _detect_full(idx: np.ndarray, vals: np.ndarray, shape: tuple[int, ...], atol: float,
                 rtol: float) -> tuple[SymmetricTensor | None, str]:
    """The canonical tensor if the entries are closed under all permutations with equal values."""
    ndim = len(shape)
    if ndim < 2:
        return None, "order below 2"
    if len(set(shape)) != 1:
        return None, f"modes of different sizes {shape}"
    if idx.shape[1] == 0:
        return None, "no entries"
    grp = (tuple(range(ndim)),)
    r = _Runs(idx, vals, shape, grp)
    if r.same_orig.any():
        j = int(np.argmax(r.same_orig))
        return None, f"duplicate entries at {tuple(int(c) + 1 for c in r.osort[:, j])}"
    run_len = np.diff(np.append(r.starts, r.n))
    canon = r.canon[:, r.starts]
    expected = math.factorial(ndim) // _stabilizer(canon, grp)
    missing = np.flatnonzero(run_len != expected)
    if missing.size:
        c = tuple(int(x) + 1 for x in canon[:, missing[0]])
        return None, f"entry {c} has {run_len[missing[0]]} of its {expected[missing[0]]} " \
                     "permutations"
    differ = ~_agree(r.vals, r.vals[r.first], atol, rtol)
    if differ.any():
        j = int(np.argmax(differ))
        a, b = r.osort[:, r.first[j]] + 1, r.osort[:, j] + 1
        return None, f"{tuple(a.tolist())} and {tuple(b.tolist())} have different values"
    return SymmetricTensor(canon, r.vals[r.starts], shape, grp, check=False), ""


def write_tns(path: str | os.PathLike[str], t: SparseTensor) -> None:
    """Write entries (canonical ones for a SymmetricTensor), values in exact text form."""
    vals = np.asarray(t.values)
    if vals.dtype.kind == "c":
        raise FormatError(path, "FROSTT .tns cannot store complex values")
    if vals.dtype.kind == "b":
        vals = vals.astype(np.int64)
    inferred = [int(row.max()) + 1 if row.size else 0 for row in t.indices]
    for g in getattr(t, "groups", ()):
        m = max(inferred[p] for p in g)
        for p in g:
            inferred[p] = m
    with open_binary(path, "wb") as f:
        if tuple(inferred) != t.shape or t.nnz == 0:
            f.write(f"{t.ndim}\n{' '.join(map(str, t.shape))}\n".encode())
        row = " ".join(["%d"] * t.ndim) + (" %d\n" if vals.dtype.kind in "iu" else " %r\n")
        step = 1 << 18
        for s in range(0, t.nnz, step):  # chunks bound the memory of the text
            coords = (t.indices[:, s:s + step] + 1).T.tolist()
            v = vals[s:s + step].astype(np.float64) if vals.dtype.kind == "f" else vals[s:s + step]
            f.write("".join([row % (*c, x) for c, x in zip(coords, v.tolist(), strict=True)])
                    .encode())

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

Symmetric data: a file read with ``symmetric=...`` must store every permutation of each entry
(an entry without its mirror is an error naming both), unless it says otherwise: a
SymmetricTensor writes its canonical entries only, under a first comment line
``# systec_gpu: canonical entries, symmetric in modes ((0, 1, 2),)`` that the reader honours
(``symmetric=None`` then gives that SymmetricTensor back); a SparseTensor writes
``# systec_gpu: general entries, no symmetry`` (read back as a SparseTensor, no detection).
``stored="one"`` reads a foreign file that stores each symmetric entry once, in any arrangement.
A ParTI header is written only when the mode sizes differ from what a reader would infer. Floats
are written as ``repr`` (shortest exact).
"""

from __future__ import annotations

import ast
import math
import os
import re

import numpy as np

from ..storage import (
    SparseTensor,
    SymmetricTensor,
    _agree,
    _Runs,
    _stabilizer,
    _to_numpy,
    normalize_groups,
)
from ._common import declare, logger, wanted_groups
from ._text import has_any, line_counts, open_binary, read_bytes, regular_lines, span_mask
from .errors import FormatError

_I64 = np.iinfo(np.int64)


_BLOCK = 1 << 20  # blocks of lines: small temporaries, recycled heap memory


def _lines_from(raw: bytes, off: int):
    """Yield (line number, start, end) of the lines from byte offset ``off`` (short scans)."""
    n = raw.count(b"\n", 0, off)
    while off < len(raw):
        e = raw.find(b"\n", off)
        e = len(raw) if e < 0 else e
        n += 1
        yield n, off, e
        off = e + 1


def _is_entry(line: bytes) -> bool:
    s = line.lstrip()
    return bool(s) and s[:1] not in (b"#", b"%")


def _header(raw: bytes, path: str | os.PathLike[str]) -> tuple[int, list[int] | None, int, str]:
    """(byte offset where entries start, dimensions or None, the field count and its origin)."""
    first: list[tuple[int, int, list[bytes]]] = []  # (line number, end offset, fields)
    for n, a, b in _lines_from(raw, 0):
        if _is_entry(raw[a:b]):
            first.append((n, b, raw[a:b].split()))
            if len(first) == 3:
                break
    counts = [len(f[2]) for f in first]

    def ints(j: int, what: str) -> list[int]:
        try:
            out = [int(t) for t in first[j][2]]
        except ValueError:
            raise FormatError(path, f"{what} must be integers", first[j][0]) from None
        if any(v < 1 for v in out):
            raise FormatError(path, f"{what} must be positive", first[j][0])
        return out

    head, dims = 0, None
    if len(counts) >= 2 and counts[0] == 1 and (len(counts) == 2 or counts[2] == counts[1] + 1) \
            and ints(0, "the order line")[0] == counts[1]:
        head, dims = 2, ints(1, "dimensions")  # ParTI: order, then the dimensions
    elif len(counts) >= 2 and counts[0] == counts[1] - 1 and all(t.isdigit() for t in first[0][2]):
        head, dims = 1, ints(0, "dimensions")  # a dimensions line above the entries
    # (a first line with a value that is not an integer is an entry: the field counts disagree)
    if len(counts) > head:
        k = counts[head]
    elif dims is not None:
        k = len(dims) + 1
    else:
        raise FormatError(path, "no entries and no dimensions line")
    if k < 2:
        raise FormatError(path, "an entry needs at least one coordinate and a value",
                          first[head][0])
    if dims is not None and len(dims) != k - 1:
        raise FormatError(path, f"{len(dims)} dimensions but {k - 1} coordinates per entry",
                          first[head][0] if len(first) > head else None)
    body = first[head - 1][1] + 1 if head else 0
    origin = f"as on line {first[head][0]}" if len(first) > head else "for the dimensions"
    return body, dims, k, origin


_CANONICAL_MARK = b"# systec_gpu: canonical entries, symmetric in modes "


_GENERAL_MARK = b"# systec_gpu: general entries, no symmetry"


def _canonical_groups(raw: bytes, path: str | os.PathLike[str]) -> tuple | None:
    """The groups a file written by write_tns marks as holding canonical entries only (() for a
    file it marks as holding a tensor without symmetry), None for any other file."""
    if raw.startswith(_GENERAL_MARK):
        return ()
    if not raw.startswith(_CANONICAL_MARK):
        return None
    line = raw[len(_CANONICAL_MARK):raw.find(b"\n")].decode(errors="replace").strip()
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError):
        raise FormatError(path, f"unreadable symmetry groups {line!r} in the systec_gpu comment", 1) from None


def read_tns(path: str | os.PathLike[str], symmetric: object = None, *, check: bool = True,
             atol: float = 0.0, rtol: float = 0.0, stored: str | None = None) -> SparseTensor:
    """Read a FROSTT file; ``symmetric=None`` detects full symmetry (logged on systec_gpu.io).

    ``stored``: "full" (every permutation of each entry is in the file) or "one" (each entry
    once); None: "one" for a file marked as canonical by write_tns, else "full"."""
    raw = read_bytes(path)
    marked = _canonical_groups(raw, path)
    body, dims, k, origin = _header(raw, path)
    # integer values load as int64; comment lines do not count (header lines hold integers)
    text = re.sub(rb"(?m)^[ \t]*[#%].*$", b"", raw) if has_any(raw, b"#%") else raw
    is_int = not has_any(text, b".eEnNiI")
    del text
    ndim = k - 1
    # the entries are written straight into [ndim, nnz] arrays sized by the line count
    cap = raw.count(b"\n", body) + 1
    idx = np.empty((ndim, cap), dtype=np.int64)
    vals = np.empty(cap, dtype=np.int64 if is_int else np.float64)
    n, line0, pos = 0, raw.count(b"\n", 0, body), body
    body_line = line0  # lines before the entries
    while pos < len(raw):  # blocks of whole lines keep the temporaries small
        stop = raw.rfind(b"\n", pos, pos + _BLOCK) + 1 or raw.find(b"\n", pos) + 1 or len(raw)
        block = raw[pos:stop]
        c, v = _parse_block(block, k, origin, is_int, line0, path)
        idx[:, n:n + v.size] = c.T
        vals[n:n + v.size] = v
        n += v.size
        line0 += block.count(b"\n")
        pos = stop
    if n < cap:  # blank or comment lines: trim (one copy)
        idx, vals = np.ascontiguousarray(idx[:, :n]), vals[:n].copy()

    def line_of(p: int) -> int | None:  # error path only: rescans the file
        seen = -1
        for n, a, b in _lines_from(raw, body):
            seen += _is_entry(raw[a:b])
            if seen == p:
                return n
        return None

    if n and idx.min() < 1:
        j = int(np.argmax((idx < 1).any(axis=0)))
        raise FormatError(path, "coordinates are 1-based: found an index below 1", line_of(j))
    if dims is not None:
        over = idx > np.array(dims, dtype=np.int64)[:, None]
        if over.any():
            j = int(np.argmax(over.any(axis=0)))
            header = "line 1" if body_line == 1 else f"lines 1-{body_line}"
            raise FormatError(path, f"index past the dimensions {tuple(dims)} declared in the "
                              f"header ({header})", line_of(j))
    idx -= 1
    groups = wanted_groups(symmetric, ndim)
    if marked is not None:
        shape = _shape(idx, dims, marked, path)
        t = declare(path, idx, vals, shape, marked, check=check, atol=atol, rtol=rtol,
                    line_of=line_of, stored="one")
        if groups is None or normalize_groups(groups, shape) == getattr(t, "groups", ()):
            return t
        e = t.expanded() if isinstance(t, SymmetricTensor) else t
        return declare(path, e.indices, e.values, shape, groups, check=check, atol=atol,
                       rtol=rtol, line_of=lambda p: None)
    shape = _shape(idx, dims, groups, path)
    if groups is not None:
        return declare(path, idx, vals, shape, groups, check=check, atol=atol, rtol=rtol,
                       line_of=line_of, stored=stored or "full")
    sym, why = _detect_full(idx, vals, shape, atol, rtol)
    if sym is not None:
        logger.info("%s: every entry's permutations are present with equal values: loaded as a "
                    "SymmetricTensor with groups %s", os.fspath(path), sym.groups)
        return sym
    logger.info("%s: not fully symmetric (%s): loaded as a SparseTensor", os.fspath(path), why)
    return declare(path, idx, vals, shape, (), check=check, atol=atol, rtol=rtol,
                   line_of=line_of)


def _parse_block(block: bytes, k: int, origin: str, is_int: bool, line0: int,
                 path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates [n, k-1] (int64) and values [n] of the entry lines in a block of lines."""
    comments = has_any(block, b"#%")
    if is_int and not comments and (n := regular_lines(block, k)) is not None:
        return _parse_ints(block, n, k, line0, path)  # the usual layout: the cheap check
    buf = np.frombuffer(block, dtype=np.uint8)
    counts, pos, is_nl = line_counts(buf)
    ntok = counts  # tokens per line, comments included (to index the token arrays)
    work = buf
    if comments:  # comment lines: skipped, and blanked for the number parser
        tok_start = pos[~is_nl]
        first = tok_start[(np.cumsum(counts) - counts)[counts > 0]]
        comment = np.zeros(counts.size, dtype=bool)
        comment[counts > 0] = (buf[first] == ord("#")) | (buf[first] == ord("%"))
        if comment.any():
            ends = np.append(pos[is_nl], buf.size)[:counts.size]
            starts = np.concatenate([[0], ends[:-1] + 1])
            work = buf.copy()
            work[span_mask(buf.size, starts[comment], ends[comment])] = 32
            counts = np.where(comment, 0, counts)
    bad = np.flatnonzero((counts != 0) & (counts != k))
    if bad.size:
        j = int(bad[0])
        raise FormatError(path, f"expected {k} fields ({k - 1} coordinates and a value) {origin}, "
                          f"found {int(counts[j])}", line0 + j + 1)
    n = int(np.count_nonzero(counts))
    if n == 0:
        return np.zeros((0, k - 1), dtype=np.int64), np.zeros(0, dtype=np.int64)
    if is_int:
        return _parse_ints(work.tobytes() if work is not buf else block, n, k, line0, path, block)
    ws = buf <= 32
    end = ~ws
    end[:-1] &= ws[1:]
    last = (np.cumsum(ntok) - 1)[counts > 0]  # the value: each entry line's last token
    vmask = span_mask(buf.size, pos[~is_nl][last], np.flatnonzero(end)[last] + 1)
    try:
        coords = np.fromstring(np.where(vmask, np.uint8(32), work).tobytes(), dtype=np.int64,
                               sep=" ")
        vals = np.fromstring(np.where(vmask, buf, np.uint8(32)).tobytes(), dtype=np.float64,
                             sep=" ")
        if coords.size == n * (k - 1) and vals.size == n and coords.max(initial=0) < _I64.max:
            return coords.reshape(n, k - 1), vals
    except ValueError:
        pass
    _locate_bad_field(block, k, line0, path)
    raise FormatError(path, "could not parse the entries")


def _parse_ints(text: bytes, n: int, k: int, line0: int, path: str | os.PathLike[str],
                block: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer entries (coordinates and values) of a block of n entry lines."""
    try:
        arr = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        arr = None
    if arr is None or arr.size != n * k:
        _locate_bad_field(block or text, k, line0, path)
        raise FormatError(path, "could not parse the entries")
    if (arr == _I64.max).any() or (arr == _I64.min).any():  # clamped on overflow?
        _locate_bad_field(block or text, k, line0, path)
    arr = arr.reshape(n, k)
    return arr[:, :-1], arr[:, -1].copy()


def _locate_bad_field(block: bytes, k: int, line0: int, path: str | os.PathLike[str]) -> None:
    """Slow path, on errors only: find the first field that is not a number."""
    for ln, line in enumerate(block.split(b"\n"), start=line0 + 1):
        if not _is_entry(line):
            continue
        for t, tok in enumerate(line.split()):
            coord = t < k - 1
            text = tok.decode(errors="replace")
            try:
                v = int(tok) if coord or tok.strip(b"+-").isdigit() else float(tok)
            except ValueError:
                v = None
            if v is None or b"_" in tok:
                kind = "coordinate" if coord else "value"
                raise FormatError(path, f"{kind} field {text!r} is not "
                                  f"{'an integer' if coord else 'a number'}", ln)
            if isinstance(v, int) and not _I64.min <= v <= _I64.max:
                raise FormatError(path, f"integer field {text} is outside the int64 range", ln)


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
        return None, f"duplicate entries at {tuple(int(c) + 1 for c in r.orig(j))}"
    run_len = np.diff(np.append(r.starts, r.n))
    canon = r.canon_starts()
    expected = math.factorial(ndim) // _stabilizer(canon, grp)
    missing = np.flatnonzero(run_len != expected)
    if missing.size:
        c = tuple(int(x) + 1 for x in canon[:, missing[0]])
        return None, f"entry {c} has {run_len[missing[0]]} of its {expected[missing[0]]} " \
                     "permutations"
    differ = ~_agree(r.vals, r.vals[r.first], atol, rtol)
    if differ.any():
        j = int(np.argmax(differ))
        a, b = r.orig(r.first[j]) + 1, r.orig(j) + 1
        return None, f"{tuple(a.tolist())} and {tuple(b.tolist())} have different values"
    return SymmetricTensor(canon, r.vals[r.starts], shape, grp, check=False), ""


def write_tns(path: str | os.PathLike[str], t: SparseTensor) -> None:
    """Write entries (canonical ones for a SymmetricTensor), values in exact text form."""
    vals = _to_numpy(t.values)  # numpy, or torch values (e.g. from with_values)
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
        # what the tensor is, so that reading it back gives the same tensor (no detection)
        if getattr(t, "groups", ()):
            f.write(_CANONICAL_MARK + repr(tuple(t.groups)).encode() + b"\n")
        else:
            f.write(_GENERAL_MARK + b"\n")
        if tuple(inferred) != t.shape or t.nnz == 0:
            f.write(f"{t.ndim}\n{' '.join(map(str, t.shape))}\n".encode())
        row = " ".join(["%d"] * t.ndim) + (" %d\n" if vals.dtype.kind in "iu" else " %r\n")
        step = 1 << 18
        for s in range(0, t.nnz, step):  # chunks bound the memory of the text
            coords = (t.indices[:, s:s + step] + 1).T.tolist()
            v = vals[s:s + step].astype(np.float64) if vals.dtype.kind == "f" else vals[s:s + step]
            f.write("".join([row % (*c, x) for c, x in zip(coords, v.tolist(), strict=True)])
                    .encode())

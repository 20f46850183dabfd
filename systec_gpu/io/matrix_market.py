"""Matrix Market ``.mtx`` / ``.mtx.gz`` through fast_matrix_market (fmm).

A ``symmetric`` file becomes a SymmetricTensor straight from its stored triangle: fmm reads the
triangle without generalizing it, and the lower-triangle entries (i >= j) are flipped into the
canonical upper form (i <= j). Skew-symmetric and Hermitian files load as general tensors.

fmm is lenient with some malformed lines (it ignores extra fields and reads ``2 2.5`` as row 2,
column 2, value .5), so the text is checked as it streams into fmm: every entry line must have
exactly the header's number of fields, and only characters that can form numbers of the header's
field may appear. fmm's own errors are re-raised with the file name.
"""

from __future__ import annotations

import io
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import numpy as np
import scipy.sparse

from ..storage import EntryError, SparseTensor, SymmetricTensor, _to_numpy, normalize_groups
from ._common import declare, entry_error, wanted_groups
from ._text import gzip_errors, line_counts, open_binary, regular_lines
from .errors import FormatError


def _fmm():
    """fast_matrix_market, imported on first use: `systec_gpu.io` (FROSTT, binsparse, converters)
    works where it is not installed, and a Matrix Market call says what is missing."""
    try:
        import fast_matrix_market
    except ImportError as error:
        raise ImportError("reading or writing Matrix Market files needs fast_matrix_market "
                          "(pip install fast_matrix_market)") from error
    return fast_matrix_market


_DIGITS = b"0123456789"
_WS = b" \t\r\n"
_ALLOWED = {  # characters that may appear in the entry lines of each field
    "pattern": _DIGITS + _WS,
    "integer": _DIGITS + _WS + b"+-",
    "unsigned-integer": _DIGITS + _WS + b"+",
    "real": _DIGITS + _WS + b"+-.eEnaNAifIFtyTY",
    "double": _DIGITS + _WS + b"+-.eEnaNAifIFtyTY",
    "complex": _DIGITS + _WS + b"+-.eEnaNAifIFtyTY",
}
_VALUES_PER_FIELD = {"pattern": 0, "complex": 2}
_BLOCK = 1 << 18  # small blocks: the temporaries stay in recycled heap memory


class _CheckedStream(io.RawIOBase):
    """Feeds fmm the header, then the decompressed data as it comes; a worker thread (numpy and
    bytes methods release the GIL) checks it in blocks of whole lines, in order, meanwhile."""

    def __init__(self, src: IO[bytes], header: bytes, first_line: int, fields: int | None,
                 allowed: bytes | None):
        self.src, self.header = src, header
        self.fields, self.allowed = fields, allowed
        self.keep = allowed.translate(None, _WS) if allowed is not None else None
        self.pool = ThreadPoolExecutor(max_workers=1) if fields is not None else None
        self.checks: deque[Future] = deque()
        # worker state: the partial last line, the line number of the next block, the result
        self.tail, self.line = b"", first_line
        self.error: tuple[int, str] | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.header:
            out, self.header = self.header, b""
            return out
        chunk = self.src.read(max(size, _BLOCK))
        if self.pool is not None:
            while len(self.checks) >= 4:  # bounded memory if the checks fall behind
                self.checks.popleft().result()
            self.checks.append(self.pool.submit(self._feed, chunk))
        return chunk

    def finish(self) -> tuple[int, str] | None:
        """Check what is left; the first problem in file order (line, message), if any."""
        if self.pool is not None:
            self.checks.append(self.pool.submit(self._feed, b""))
            while self.checks:
                self.checks.popleft().result()
            self.pool.shutdown()
            self.pool = None
        return self.error

    def _feed(self, chunk: bytes) -> None:
        """Worker thread, in submission order: check the whole lines received so far."""
        if self.error is not None:
            return
        if chunk:
            data = self.tail + chunk
            cut = data.rfind(b"\n") + 1
            block, self.tail = data[:cut], data[cut:]
        else:
            block, self.tail = self.tail, b""
        if block:
            self.error = self._check(block, self.line)
            self.line += block.count(b"\n") + (not block.endswith(b"\n"))

    def _check(self, block: bytes, first_line: int) -> tuple[int, str] | None:
        if self.keep is not None and regular_lines(block, self.fields, self.keep) is not None:
            return None  # the common layout: exact and cheap
        buf = np.frombuffer(block, dtype=np.uint8)
        counts = line_counts(buf)[0]
        bad = np.flatnonzero((counts != 0) & (counts != self.fields))
        if self.allowed is not None and block.translate(None, self.allowed):
            ok = np.zeros(256, dtype=bool)
            ok[np.frombuffer(self.allowed, dtype=np.uint8)] = True
            pos = int(np.argmax(~ok[buf]))
            ln = block.count(b"\n", 0, pos)
            if not bad.size or ln < bad[0]:
                return first_line + ln, f"unexpected character {chr(buf[pos])!r}"
        if bad.size:
            return first_line + int(bad[0]), f"expected {self.fields} fields, found " \
                                             f"{int(counts[bad[0]])}"
        return None


def _read_header(src: IO[bytes]) -> tuple[bytes, int]:
    """The banner, comments and size line as bytes, and the number of lines they take."""
    parts, n = [], 0
    while True:
        line = src.readline()
        if not line:
            break
        parts.append(line)
        n += 1
        s = line.strip()
        if n > 1 and s and not s.startswith(b"%"):
            break
        if n == 1 and not s.startswith(b"%%"):
            break  # not a Matrix Market banner: fmm reports it
    return b"".join(parts), n


def _fmm_error(path: str | os.PathLike[str], err: Exception,
               ours: tuple[int, str] | None) -> FormatError:
    m = re.match(r"Line (\d+):\s*(.*)", str(err))
    line, msg = (int(m.group(1)), m.group(2)) if m else (None, str(err))
    if ours is not None and (line is None or ours[0] <= line):
        return FormatError(path, ours[1], ours[0])
    return FormatError(path, msg, line)


def read_mtx(path: str | os.PathLike[str], symmetric: object = None, *, check: bool = True,
             atol: float = 0.0, rtol: float = 0.0, stored: str | None = None) -> SparseTensor:
    """Read a Matrix Market file (``symmetric=None``: as its header says). A ``general`` file read
    as symmetric must store both triangles (``stored="one"``: it stores one)."""
    with gzip_errors(path):
        return _read_mtx(path, symmetric, check=check, atol=atol, rtol=rtol, stored=stored)


def _read_mtx(path: str | os.PathLike[str], symmetric: object, *, check: bool, atol: float,
              rtol: float, stored: str | None) -> SparseTensor:
    with open_binary(path) as src:
        header, nhead = _read_header(src)
        try:
            h = _fmm().read_header(io.BytesIO(header))
        except (ValueError, RuntimeError) as e:
            raise _fmm_error(path, e, None) from None
        field, sym, shape = h.field, h.symmetry, (int(h.nrows), int(h.ncols))
        if sym != "general" and shape[0] != shape[1]:
            raise FormatError(path, f"the header says {sym}, but the size line gives a "
                              f"{shape[0]} x {shape[1]} matrix, which is not square", nhead)
        groups = wanted_groups(symmetric, 2)
        if groups is not None:
            try:
                groups = normalize_groups(groups, shape)
            except ValueError as e:
                raise FormatError(path, str(e)) from None
        # a symmetric file read as symmetric: its triangle becomes the canonical entries
        canonical = h.format != "array" and sym == "symmetric" and groups in (None, ((0, 1),))
        coords = 0 if h.format == "array" else 2
        fields = coords + _VALUES_PER_FIELD.get(field, 1) if field in _ALLOWED else None
        stream = _CheckedStream(src, header, nhead + 1, fields, _ALLOWED.get(field))
        try:
            if h.format == "array":
                dense = _fmm().read_array(stream)
            else:
                idx, vals = _read_coo(stream, flip=canonical)
        except (ValueError, RuntimeError, OverflowError) as e:
            raise _fmm_error(path, e, stream.finish()) from None
        except BaseException:  # e.g. truncated gzip data: stop the checking thread first
            stream.finish()
            raise
        err = stream.finish()
        if err is not None:
            raise FormatError(path, err[1], err[0])
    if h.format == "array":
        if groups is None:
            groups = ((0, 1),) if sym == "symmetric" else ()
        t = SparseTensor.from_dense(dense)
        return declare(path, t.indices, t.values, t.shape, groups, check=check, atol=atol,
                       rtol=rtol, line_of=lambda p: None)

    def line_of(pos: int) -> int | None:
        return _entry_line(path, nhead, pos)

    if canonical:
        if not (idx[0] <= idx[1]).all():  # entries above the diagonal: they mean the same
            lo = np.minimum(idx[0], idx[1])
            np.maximum(idx[0], idx[1], out=idx[1])
            idx[0] = lo
        # files are usually sorted by column: then the flipped entries are sorted and unique,
        # fmm has checked the bounds, and no validation is left to do
        a, b = idx[:, :-1], idx[:, 1:]
        if ((b[0] > a[0]) | ((b[0] == a[0]) & (b[1] > a[1]))).all():
            return SymmetricTensor(idx, vals, shape, ((0, 1),), check=False)
        try:
            return SymmetricTensor.from_canonical(idx, vals, shape, ((0, 1),))
        except EntryError as e:
            raise entry_error(path, e, line_of) from None
    if sym != "general":  # expand the stored triangle: skew-symmetric negates, Hermitian conjugates
        off = idx[0] != idx[1]
        mirror = vals[off]
        if sym == "skew-symmetric":
            mirror = -mirror
        elif sym == "hermitian":
            mirror = np.conj(mirror)
        idx = np.concatenate([idx, idx[::-1, off]], axis=1)
        vals = np.concatenate([vals, mirror])
    # a general file's entries are what they are: stored="one" only where the caller says so
    return declare(path, idx, vals, shape, () if groups is None else groups, check=check,
                   atol=atol, rtol=rtol, line_of=line_of,
                   stored=(stored or "full") if sym == "general" else "full")


_DTYPES = {"integer": np.int64, "unsigned-integer": np.uint64, "real": np.float64,
           "double": np.float64, "complex": np.complex128, "pattern": np.float64}


def _core():
    """fmm's parser core (an internal module), or None in a version without it."""
    return getattr(_fmm(), "_fmm_core", None)


def _read_coo(stream: _CheckedStream, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Entries as an int64 [2, nnz] array (rows second if ``flip``) and their values.

    fmm's core parser writes straight into our arrays: no int32 copy and no int64 conversion
    (the peak memory and first-touch page faults of large loads). If that internal entry point
    is missing (another fmm version), the public reader is used.
    """
    fmm = _fmm()
    core = _core()
    try:
        cursor = core.open_read_stream(stream, getattr(fmm, "PARALLELISM", 0))
    except (AttributeError, TypeError):
        (vals, (r, c)), _ = fmm.read_coo(stream, generalize_symmetry=False)
        idx = np.stack([c, r] if flip else [r, c]).astype(np.int64)
        return idx, vals
    n = int(cursor.header.nnz)
    idx = np.empty((2, n), dtype=np.int64)
    vals = np.empty(n, dtype=_DTYPES[cursor.header.field])
    rows, cols = (idx[1], idx[0]) if flip else (idx[0], idx[1])
    core.read_body_coo(cursor, rows, cols, vals)
    return idx, vals


def _entry_line(path: str | os.PathLike[str], nhead: int, pos: int) -> int | None:
    """Line number of the pos-th entry (error path only: rereads the file)."""
    with open_binary(path) as f:
        for _ in range(nhead):
            f.readline()
        seen = -1
        for n, line in enumerate(f, start=nhead + 1):
            if line.strip():
                seen += 1
                if seen == pos:
                    return n
    return None


def write_mtx(path: str | os.PathLike[str], t: SparseTensor) -> None:
    """Write a matrix; a SymmetricTensor (groups (0, 1)) as ``symmetric`` with one triangle."""
    if t.ndim != 2:
        raise FormatError(path, f"Matrix Market stores matrices; this tensor has {t.ndim} modes "
                          "(use .tns or binsparse)")
    t = t.numpy()  # host arrays: views of CPU tensors, copies of device ones
    vals = _to_numpy(t.values)  # numpy, or torch values (e.g. from with_values)
    field = {"b": "integer", "i": "integer", "u": "integer", "f": "real", "c": "complex"}
    if vals.dtype.kind not in field:
        raise FormatError(path, f"cannot store values of dtype {vals.dtype}")
    if vals.dtype.kind == "b":
        vals = vals.astype(np.int64)
    symmetric = isinstance(t, SymmetricTensor) and t.groups == ((0, 1),)
    # canonical entries are the upper triangle; Matrix Market stores the lower one
    rows, cols = (t.indices[1], t.indices[0]) if symmetric else (t.indices[0], t.indices[1])
    m = scipy.sparse.coo_array((vals, (rows, cols)), shape=t.shape)
    with open_binary(path, "wb") as f:
        if t.nnz == 0:  # fmm writes an empty matrix as "real" whatever the field: keep the type
            f.write(f"%%MatrixMarket matrix coordinate {field[vals.dtype.kind]} "
                    f"{'symmetric' if symmetric else 'general'}\n%written by systec_gpu\n"
                    f"{t.shape[0]} {t.shape[1]} 0\n".encode())
            return
        _fmm().mmwrite(f, m, symmetry="symmetric" if symmetric else "general",
                    field=field[vals.dtype.kind], comment="written by systec_gpu")

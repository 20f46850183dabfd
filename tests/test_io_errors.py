"""Malformed and inconsistent files raise FormatError naming the file and the line; declared
symmetry that the data lacks names an offending pair; duplicates follow the format's rules."""

from __future__ import annotations

import gzip
import re
import sys

import numpy as np
import pytest

import systec_gpu.io as sio
from systec_gpu.io import FormatError
from systec_gpu.storage import SparseTensor, SymmetricTensor

MM = "%%MatrixMarket matrix coordinate {field} {sym}\n% a comment\n"


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as f:
            f.write(text)
    else:
        p.write_text(text)
    return p


def raises_at(path, line: int | None, pattern: str, **kw):
    where = re.escape(f"{path.name}: line {line}: ") if line else re.escape(f"{path.name}: ")
    with pytest.raises(FormatError, match=where + ".*" + pattern) as e:
        sio.load(path, **kw)
    assert e.value.line == line
    return e.value


# ----------------------------------------------------------------------------- Matrix Market
@pytest.mark.parametrize("suffix", [".mtx", ".mtx.gz"])
@pytest.mark.parametrize(
    ("body", "line", "pattern"),
    [
        ("%%MatrixMarket matrix coordinate reel general\n2 2 1\n1 1 1.0\n", 1, "reel"),
        ("2 2 1\n1 1 1.0\n", 1, "Missing banner"),
        (MM + "3 3 x\n1 1 1.0\n", None, "Invalid integer"),
        (MM + "3 3 3\n1 1 1.0\n2 2 2.0\n", None, "Truncated file"),
        (MM + "3 3 1\n1 1 1.0\n2 2 2.0\n", 5, "Too many lines"),
        (MM + "3 3 2\n1 1 1.0\n2 2 abc\n", 5, "unexpected character 'b'"),
        (MM + "3 3 2\n0 1 1.0\n2 2 2.0\n", 4, "Row index out of bounds"),
        (MM + "3 3 2\n1 1 1.0\n2 4 2.0\n", 5, "Column index out of bounds"),
        (MM + "3 3 2\n1 1 1.0\n2 2.5\n", 5, "expected 3 fields, found 2"),
        (MM + "3 3 2\n1 1 1.0 7\n2 2 2.5\n", 4, "expected 3 fields, found 4"),
    ],
)
def test_mtx_malformed(tmp_path, suffix, body, line, pattern):
    text = body.format(field="real", sym="general")
    raises_at(write(tmp_path, "m" + suffix, text), line, pattern)


@pytest.mark.parametrize("sym", ["symmetric", "skew-symmetric", "hermitian"])
def test_mtx_symmetric_header_on_a_non_square_matrix_names_the_file(tmp_path, sym):
    field = "complex" if sym == "hermitian" else "real"
    value = "1.0 0.0" if sym == "hermitian" else "1.0"
    p = write(tmp_path, "n.mtx", MM.format(field=field, sym=sym) + f"3 4 1\n1 1 {value}\n")
    raises_at(p, 3, rf"the header says {sym}, but the size line gives a 3 x 4 matrix, which is not square")


def _truncated_gzip(tmp_path, name: str, text: str, keep: float):
    data = gzip.compress(text.encode())
    p = tmp_path / name
    p.write_bytes(data[: int(len(data) * keep)])
    return p


@pytest.mark.parametrize("keep", [0.3, 0.9])  # inside the header, inside the entries
def test_truncated_gzip_names_the_file(tmp_path, keep):
    rng = np.random.default_rng(0)
    rows = rng.integers(1, 50, (2000, 3))
    mtx = MM.format(field="real", sym="general") + "50 50 2000\n"
    mtx += "".join(f"{a} {b} {c / 7!r}\n" for a, b, c in rows)
    tns = "".join(f"{a} {b} {c} {a / 3!r}\n" for a, b, c in rows)
    for name, text in (("t.mtx.gz", mtx), ("t.tns.gz", tns)):
        p = _truncated_gzip(tmp_path, name, text, keep)
        raises_at(p, None, "truncated or corrupt gzip data")


def test_corrupt_gzip_names_the_file(tmp_path):
    data = bytearray(gzip.compress(("1 1 1 1.0\n" * 5000).encode()))
    data[len(data) // 2] ^= 0xFF
    p = tmp_path / "c.tns.gz"
    p.write_bytes(bytes(data))
    raises_at(p, None, "truncated or corrupt gzip data")
    p = tmp_path / "plain.tns.gz"
    p.write_bytes(b"1 1 1 1.0\n")  # not gzip at all
    raises_at(p, None, "truncated or corrupt gzip data: Not a gzipped file")


def test_mtx_integer_field_rejects_fractions(tmp_path):
    p = write(tmp_path, "i.mtx", MM.format(field="integer", sym="general") + "2 2 2\n1 1 7\n"
              "2 2 7.5\n")
    raises_at(p, 5, r"unexpected character '\.'")
    q = write(tmp_path, "p.mtx", MM.format(field="pattern", sym="symmetric") + "2 2 1\n2 1 1\n")
    raises_at(q, 4, "expected 2 fields, found 3")


def test_mtx_declared_symmetry_names_pair_and_lines(tmp_path):
    p = write(tmp_path, "g.mtx", MM.format(field="real", sym="general")
              + "3 3 3\n1 2 1.5\n3 3 1.0\n2 1 2.0\n")
    assert type(sio.load(p)) is SparseTensor
    e = raises_at(p, 4, r"A is not symmetric in modes \(0, 1\): A\[0, 1\] = 1.5 but "
                  r"A\[1, 0\] = 2.0 \(0-based indices; file lines 4 and 6\)", symmetric=True)
    assert "g.mtx" in str(e)
    q = write(tmp_path, "ok.mtx", MM.format(field="real", sym="general")
              + "3 3 3\n1 2 1.5\n3 3 1.0\n2 1 1.5\n")
    s = sio.load(q, symmetric=True)
    assert isinstance(s, SymmetricTensor) and s.values.tolist() == [1.5, 1.0]


def test_mtx_duplicates(tmp_path):
    gen = write(tmp_path, "d.mtx", MM.format(field="real", sym="general")
                + "2 2 3\n1 2 1.0\n2 2 5.0\n1 2 2.0\n")
    t = sio.load(gen)  # general: summed
    assert t.indices.tolist() == [[0, 1], [1, 1]] and t.values.tolist() == [3.0, 5.0]
    sym = write(tmp_path, "s.mtx", MM.format(field="real", sym="symmetric")
                + "2 2 3\n2 1 1.0\n2 2 5.0\n2 1 2.0\n")
    raises_at(sym, 4, r"duplicate entries at A\[0, 1\] with different values 1.0 and 2.0 "
              r"\(0-based indices; file lines 4 and 6\)")
    same = write(tmp_path, "s2.mtx", MM.format(field="real", sym="symmetric")
                 + "2 2 2\n2 1 1.0\n1 2 1.0\n")
    t = sio.load(same)  # a symmetric file giving both triangles consistently: kept once
    assert t.indices.tolist() == [[0], [1]] and t.values.tolist() == [1.0]


def test_mtx_values_and_fields(tmp_path):
    p = write(tmp_path, "n.mtx", MM.format(field="real", sym="symmetric")
              + "3 3 3\n1 1 nan\n3 1 inf\n3 2 -inf\n")
    t = sio.load(p)
    assert isinstance(t, SymmetricTensor) and t.indices.tolist() == [[0, 0, 1], [0, 2, 2]]
    assert np.isnan(t.values[0]) and t.values[1:].tolist() == [np.inf, -np.inf]
    i = write(tmp_path, "i.mtx", MM.format(field="integer", sym="symmetric")
              + "3 3 2\n2 1 -7\n3 3 9223372036854775807\n")
    t = sio.load(i)
    assert t.dtype == np.int64 and t.values.tolist() == [-7, 2**63 - 1]
    skew = MM.format(field="real", sym="skew-symmetric")
    sk = write(tmp_path, "k.mtx", skew + "2 2 1\n2 1 3.0\n")
    t = sio.load(sk)
    assert type(t) is SparseTensor and t.to_dense().tolist() == [[0, -3.0], [3.0, 0]]
    big = write(tmp_path, "b.mtx", MM.format(field="real", sym="symmetric")
                + "3000000000 3000000000 2\n3000000000 1 2.5\n2999999999 2999999999 1\n")
    t = sio.load(big)
    assert t.shape == (3_000_000_000,) * 2
    assert t.indices.tolist() == [[0, 2_999_999_998], [2_999_999_999, 2_999_999_998]]


def test_mtx_array_format(tmp_path):
    p = write(tmp_path, "a.mtx", "%%MatrixMarket matrix array real symmetric\n2 2\n1.0\n2.0\n0\n")
    t = sio.load(p)
    assert isinstance(t, SymmetricTensor) and t.to_dense().tolist() == [[1.0, 2.0], [2.0, 0.0]]


def test_mtx_save_rejects_tensors(tmp_path):
    t = SparseTensor.from_dense(np.ones((2, 2, 2)))
    with pytest.raises(FormatError, match="Matrix Market stores matrices"):
        sio.save(tmp_path / "x.mtx", t)


# ----------------------------------------------------------------------------- FROSTT
@pytest.mark.parametrize("suffix", [".tns", ".tns.gz"])
@pytest.mark.parametrize(
    ("text", "line", "pattern"),
    [
        ("1 1 1 1.0\n2 2 2.0\n", 2, r"expected 4 fields \(3 coordinates and a value\) as on line "
                                    r"1, found 3"),
        # one field fewer on line 1, but its value is not an integer: an entry, not dimensions
        ("1 1 1.0\n1 2 3 4.0\n", 2, r"expected 3 fields \(2 coordinates and a value\) as on line "
                                  r"1, found 4"),
        ("1 1 1\n1 2 3 4\n", 2, r"index past the dimensions \(1, 1, 1\) declared in the header \(line 1\)"),
        ("3\n2 2 2\n1 3 1 1.0\n", 3, r"index past the dimensions \(2, 2, 2\) declared in the header \(lines 1-2\)"),
        ("1 1 1 1.0\n\n2 2 2 x\n", 3, "value field 'x' is not a number"),
        ("1 1 1 1.0\n2 2 2 1.5.5\n", 2, "value field '1.5.5' is not a number"),
        ("1 1 1 1\n2 2 2.5 1\n", 2, "coordinate field '2.5' is not an integer"),
        ("1 1 1 1.0\n2 0 2 2.0\n", 2, "1-based: found an index below 1"),
        ("1 1 1 1.0\n2 -1 2 2.0\n", 2, "1-based"),
        ("2 2 2\n1 1 1 1.0\n2 3 2 2.0\n", 3,
         r"index past the dimensions \(2, 2, 2\) declared in the header \(line 1\)"),
        ("1 1 1 99999999999999999999\n", 1, "outside the int64 range"),
        ("", None, "no entries and no dimensions line"),
        ("5\n", 1, "at least one coordinate and a value"),
    ],
)
def test_tns_malformed(tmp_path, suffix, text, line, pattern):
    raises_at(write(tmp_path, "t" + suffix, text), line, pattern)


def test_tns_headers_comments_and_values(tmp_path):
    dims = write(tmp_path, "d.tns", "# made by hand\n4 5 6\n1 2 3 1.5\n\n4 5 1 -2e-3\n")
    t = sio.load(dims)
    assert t.shape == (4, 5, 6) and t.indices.tolist() == [[0, 3], [1, 4], [2, 0]]
    assert t.values.tolist() == [1.5, -0.002]
    parti = write(tmp_path, "p.tns", "3\n4 5 6\n1 2 3 7\n")
    t = sio.load(parti)
    assert t.shape == (4, 5, 6) and t.dtype == np.int64 and t.values.tolist() == [7]
    empty = write(tmp_path, "e.tns", "2\n3 3\n")
    t = sio.load(empty)
    assert t.shape == (3, 3) and t.nnz == 0
    nan = write(tmp_path, "n.tns", "1 2 nan\n2 1 nan\n3 3 -inf\n")
    t = sio.load(nan)  # NaN agrees with NaN: detected as symmetric
    assert isinstance(t, SymmetricTensor) and np.isnan(t.values[0]) and t.values[1] == -np.inf
    big = write(tmp_path, "b.tns", "3000000000 1 2.0\n1 3000000000 2.0\n")
    t = sio.load(big)
    assert isinstance(t, SymmetricTensor) and t.shape == (3_000_000_000,) * 2


def test_tns_symmetry_detection_and_declaration(tmp_path, caplog):
    full = "1 2 3 4\n1 3 2 4\n2 1 3 4\n2 3 1 4\n3 1 2 4\n3 2 1 4\n2 2 2 5\n"
    t = sio.load(write(tmp_path, "f.tns", full))
    assert isinstance(t, SymmetricTensor) and t.indices.tolist() == [[0, 1], [1, 1], [2, 1]]
    missing = full.replace("3 2 1 4\n", "")
    with caplog.at_level("INFO", logger="systec_gpu.io"):
        t = sio.load(write(tmp_path, "m.tns", missing))
    assert type(t) is SparseTensor and "has 5 of its 6 permutations" in caplog.text
    one = "1 2 3 4\n2 2 2 5\n"  # one permutation per entry: says so, or it is an error
    s = sio.load(write(tmp_path, "o.tns", one), symmetric=True, stored="one")
    assert isinstance(s, SymmetricTensor) and s.n_expanded == 7
    raises_at(write(tmp_path, "o.tns", one), 1, r"stores A\[0, 1, 2\] = 4 without its mirror "
              r"A\[0, 2, 1\]", symmetric=True)
    assert sio.load(write(tmp_path, "o.tns", one), symmetric=True, check=False).nnz == 2
    bad = full.replace("3 2 1 4", "3 2 1 6")
    raises_at(write(tmp_path, "x.tns", bad), 1, r"A is not symmetric in modes \(0, 1, 2\): "
              r"A\[0, 1, 2\] = 4 but A\[2, 1, 0\] = 6 \(0-based indices; file lines 1 and 6\)",
              symmetric=True)
    dup = "1 2 3 4\n1 2 3 5\n"
    raises_at(write(tmp_path, "y.tns", dup), 1, r"duplicate entries at A\[0, 1, 2\] with "
              r"different values 4 and 5", symmetric=True)
    summed = sio.load(write(tmp_path, "z.tns", dup))  # not declared symmetric: summed
    assert type(summed) is SparseTensor and summed.values.tolist() == [9]
    groups = sio.load(write(tmp_path, "g.tns", "1 2 3 1.0\n2 1 3 1.0\n"), symmetric=[(0, 1)])
    assert groups.groups == ((0, 1),) and groups.shape == (2, 2, 3)


# ----------------------------------------------------------------------------- binsparse
def test_binsparse_errors_and_structures(tmp_path):
    import binsparse as bs

    np.savez(tmp_path / "junk.npz", a=np.arange(3))
    with pytest.raises(FormatError, match="junk.npz: invalid binsparse container"):
        sio.load(tmp_path / "junk.npz")
    lower = bs.COORMatrix((3, 3), 2, indices_0=np.array([1, 2]), indices_1=np.array([0, 2]),
                          values=np.array([4.0, 5.0]))
    bs.save_binsparse(lower, tmp_path / "l.npz", header={"structure": "symmetric_lower"})
    t = sio.load(tmp_path / "l.npz")
    assert isinstance(t, SymmetricTensor) and t.to_dense()[0, 1] == t.to_dense()[1, 0] == 4.0
    bs.save_binsparse(lower, tmp_path / "k.h5", header={"structure": "skew_symmetric_lower"})
    k = sio.load(tmp_path / "k.h5")
    assert type(k) is SparseTensor and k.to_dense()[0, 1] == -4.0 and k.to_dense()[1, 0] == 4.0
    filled = bs.COORMatrix((3, 3), 2, fill=True, fill_value=1.0, indices_0=np.array([1, 2]),
                           indices_1=np.array([0, 2]), values=np.array([4.0, 5.0]))
    bs.save_binsparse(filled, tmp_path / "f.npz")
    with pytest.raises(FormatError, match="f.npz: fill value 1.0 is not zero"):
        sio.load(tmp_path / "f.npz")
    both = bs.COORMatrix((3, 3), 2, indices_0=np.array([0, 1]), indices_1=np.array([1, 0]),
                         values=np.array([3.0, 4.0]))
    bs.save_binsparse(both, tmp_path / "a.npz")  # general: declared symmetry is checked
    with pytest.raises(FormatError, match=r"a.npz: A is not symmetric in modes \(0, 1\)"):
        sio.load(tmp_path / "a.npz", symmetric=True)


def test_unknown_suffix(tmp_path):
    with pytest.raises(FormatError, match=r"x.csv: unknown file type"):
        sio.load(tmp_path / "x.csv")


# ----------------------------------------------------------------------------- block boundaries
def test_tns_many_blocks(tmp_path, monkeypatch):
    from systec_gpu.io import frostt

    monkeypatch.setattr(frostt, "_BLOCK", 64)  # many blocks: state must carry across them
    lines = [f"{i} {i % 7 + 1} {0.25 * i!r}" for i in range(1, 60)]
    lines.insert(20, "# a comment in the middle")
    lines.insert(30, "")
    t = sio.load(write(tmp_path, "m.tns", "\n".join(lines) + "\n"))
    assert t.nnz == 59 and t.shape == (59, 7)
    assert t.values.tolist() == [0.25 * i for i in range(1, 60)]
    bad = lines + ["60 1 x"]
    raises_at(write(tmp_path, "b.tns", "\n".join(bad) + "\n"), 62, "value field 'x'")
    short = lines + ["60 1"]
    raises_at(write(tmp_path, "s.tns", "\n".join(short) + "\n"), 62, "expected 3 fields")
    ints = [f"{i} {i} 1" for i in range(1, 40)] + ["40 0 1"]
    raises_at(write(tmp_path, "z.tns", "\n".join(ints)), 40, "1-based")


def test_mtx_many_blocks(tmp_path, monkeypatch):
    from systec_gpu.io import matrix_market

    monkeypatch.setattr(matrix_market, "_BLOCK", 32)
    body = "".join(f"{i} {i} {i}.5\n" for i in range(1, 50))
    head = MM.format(field="real", sym="symmetric") + "60 60 50\n"
    t = sio.load(write(tmp_path, "m.mtx", head + body + "60 1 1e300\n"))
    assert t.nnz == 50 and t.indices[:, 1].tolist() == [0, 59] and t.values[1] == 1e300
    raises_at(write(tmp_path, "b.mtx", head + body + "60 1.5\n"), 53, "expected 3 fields")


def test_mtx_public_fmm_fallback(tmp_path, monkeypatch):
    from systec_gpu.io import matrix_market

    text = MM.format(field="real", sym="symmetric") + "3 3 3\n2 1 1.5\n3 3 2.0\n1 1 -1\n"
    p = write(tmp_path, "f.mtx", text)
    fast = sio.load(p)
    monkeypatch.setattr(matrix_market, "_core", lambda: None)  # as if fmm lacked its core API
    slow = sio.load(p)
    assert slow.indices.tolist() == fast.indices.tolist() == [[0, 0, 2], [0, 1, 2]]
    assert slow.values.tolist() == fast.values.tolist() == [-1.0, 1.5, 2.0]
    gen = MM.format(field="integer", sym="general")
    g = write(tmp_path, "g.mtx", gen + "3 3 2\n2 1 4\n1 3 5\n")
    t = sio.load(g)
    assert t.dtype == np.int64 and t.indices.tolist() == [[0, 1], [2, 0]]


def test_io_works_without_fast_matrix_market_and_mtx_says_what_is_missing(tmp_path, monkeypatch):
    # the GPU machines have no fast_matrix_market: FROSTT files still load, .mtx names the package
    monkeypatch.setitem(sys.modules, "fast_matrix_market", None)
    p = write(tmp_path, "t.tns", "1 2 3 1.5\n2 2 2 2.0\n")
    assert sio.load(p).nnz == 2
    q = write(tmp_path, "f.mtx", MM.format(field="real", sym="general") + "2 2 1\n1 1 1.0\n")
    with pytest.raises(ImportError, match="needs fast_matrix_market"):
        sio.load(q)

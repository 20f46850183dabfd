"""The vectorized .tns / .mtx text scanning agrees with a plain Python parse on randomly
formatted files (spaces, tabs, CRLF, blank and comment lines, block boundaries anywhere)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import systec_gpu.io as sio
from systec_gpu.io import frostt, matrix_market


@st.composite
def tns_text(draw):
    ndim = draw(st.integers(1, 4))
    n = draw(st.integers(1, 25))
    floats = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    coords = np.unique(rng.integers(1, 6, size=(n, ndim)), axis=0)  # distinct: exact sums
    coords = coords[rng.permutation(len(coords))]
    n = len(coords)
    vals = rng.standard_normal(n) if floats else rng.integers(-9, 10, n)
    sep = st.sampled_from([" ", "  ", "\t", " \t "])
    lines = []
    for c, v in zip(coords.tolist(), vals.tolist(), strict=True):
        fields = [str(x) for x in c] + [repr(v)]
        lead, trail = draw(st.sampled_from(["", " ", "\t"])), draw(st.sampled_from(["", " "]))
        lines.append(lead + "".join(f + draw(sep) for f in fields[:-1]) + fields[-1] + trail)
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["", "   ", "# note 1.5 e", "% x"])))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines) + draw(st.sampled_from(["", eol]))
    return text, coords, vals


@settings(max_examples=80, deadline=None)
@given(tns_text(), st.sampled_from([8, 16, 37, 1 << 22]))
def test_tns_parse_matches_python(tmp_path_factory, case, block):
    text, coords, vals = case
    p = tmp_path_factory.mktemp("t") / "x.tns"
    p.write_text(text)
    old = frostt._BLOCK
    frostt._BLOCK = block
    try:
        t = sio.load(p, symmetric=False)
    finally:
        frostt._BLOCK = old
    assert t.dtype == (np.float64 if vals.dtype.kind == "f" else np.int64)
    want = dict(zip(map(tuple, (coords - 1).tolist()), vals.tolist(), strict=True))
    got = dict(zip(map(tuple, t.indices.T.tolist()), t.values.tolist(), strict=True))
    assert got.keys() == want.keys()
    for c, v in want.items():
        assert got[c] == v
    assert t.shape == tuple(int(m) for m in coords.max(axis=0))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9), st.floats(-1e9, 1e9)),
                min_size=1, max_size=30, unique_by=lambda e: e[:2]),
       st.sampled_from([8, 23, 1 << 22]), st.sampled_from(["\n", "\r\n"]))
def test_mtx_parse_matches_python(tmp_path_factory, entries, block, eol):
    body = eol.join(f"{i}  {j}\t{v!r} " for i, j, v in entries)
    text = f"%%MatrixMarket matrix coordinate real general{eol}9 9 {len(entries)}{eol}{body}{eol}"
    p = tmp_path_factory.mktemp("m") / "x.mtx"
    p.write_bytes(text.encode())
    old = matrix_market._BLOCK
    matrix_market._BLOCK = block
    try:
        t = sio.load(p)
    finally:
        matrix_market._BLOCK = old
    want = {(i - 1, j - 1): v for i, j, v in entries}
    got = dict(zip(map(tuple, t.indices.T.tolist()), t.values.tolist(), strict=True))
    assert got == want


def test_regular_lines_fast_path_is_exact():
    from systec_gpu.io._text import regular_lines

    assert regular_lines(b"1 2 3\n4 5 6\n", 3) == 2
    assert regular_lines(b"1 2 3\n4 5 6", 3) == 2  # no final newline
    assert regular_lines(b"", 3) == 0
    for irregular in [
        b" 1 2\n",  # leading space hides a missing field
        b"1 2 \n",  # trailing space hides a missing field
        b"1  2\n",  # doubled space hides a missing field
        b"1 2 3\n\n4 5 6\n",  # blank line
        b"1 2 3\r\n",  # CRLF
        b"1\t2 3\n",  # tab
        b"1 2 3 4\n",  # a field too many
        b"1 2\n",  # a field too few
    ]:
        assert regular_lines(irregular, 3) is None, irregular
    assert regular_lines(b"1 2 x\n", 3, keep=b"0123456789") is None  # foreign byte
    assert regular_lines(b"1 2 3\n", 3, keep=b"0123456789") == 1

"""Every file of ../shared/data loads with the manifest's shape, nonzero count and symmetry, and
survives an exact save -> load round trip."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import scipy.sparse as sp

import systec_gpu.io as sio
from systec_gpu.storage import SparseTensor, SymmetricTensor

from .shared_data import DATA, require_data

MANIFEST = DATA / "manifest.tsv"


def _rows() -> list[dict[str, str]]:
    if not MANIFEST.is_file():
        return [{"gz_file": "<no manifest>"}]  # still collected: require_data() fails it
    with open(MANIFEST, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _rows()


@pytest.fixture(autouse=True)
def _data_present():
    """Missing data fails these tests (in CI the folder is there), unless a skip is asked for."""
    require_data()


def _load(row: dict[str, str]) -> SparseTensor:
    return sio.load(DATA / row["gz_file"])


def assert_same(a: SparseTensor, b: SparseTensor) -> None:
    assert type(a) is type(b)
    assert a.shape == b.shape
    assert getattr(a, "groups", None) == getattr(b, "groups", None)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)  # exact: NaN == NaN here


def test_manifest_lists_every_file():
    files = {p.name for p in DATA.iterdir() if p.name.endswith(".gz")}
    assert files == {r["gz_file"] for r in ROWS}
    assert len(files) == 72


@pytest.mark.parametrize("row", ROWS, ids=[r["gz_file"] for r in ROWS])
def test_load_matches_manifest(row, caplog):
    with caplog.at_level(logging.INFO, logger="systec_gpu.io"):
        t = _load(row)
    assert "x".join(map(str, t.shape)) == row["shape"]
    symmetric = row["symmetric"].startswith("yes")
    assert isinstance(t, SymmetricTensor) == symmetric
    expanded = t.n_expanded if isinstance(t, SymmetricTensor) else t.nnz
    assert expanded == int(row["nnz"])
    if symmetric:
        assert t.groups == (tuple(range(t.ndim)),)
        if row["gz_file"].endswith(".mtx.gz"):  # one triangle is stored: nnz = (expanded + diag)/2
            diag = int((t.indices[0] == t.indices[1]).sum())
            assert 2 * t.nnz - diag == expanded
    if row["gz_file"].endswith(".tns.gz"):  # detection is reported on the logger
        assert ("SymmetricTensor" if symmetric else "not fully symmetric") in caplog.text
    if "[hdr: pattern" in row["symmetric"]:
        assert (t.values == 1.0).all()
    if "[hdr: integer" in row["symmetric"] or "_sym" in row["gz_file"]:
        assert t.dtype == np.int64


@pytest.mark.parametrize("row", ROWS, ids=[r["gz_file"] for r in ROWS])
def test_roundtrip_exact(row, tmp_path):
    t = _load(row)
    native = ".mtx" if row["gz_file"].endswith(".mtx.gz") else ".tns"
    sym = t.groups if isinstance(t, SymmetricTensor) else None
    suffixes = [native, ".npz"]
    if t.nnz < 200_000:  # gzip compression of the largest files would dominate the test time
        suffixes.append(native + ".gz")
    for suffix in suffixes:
        p = tmp_path / f"t{suffix}"
        sio.save(p, t)
        # .tns stores canonical entries only: symmetry is declared when reading back
        back = sio.load(p, symmetric=sym) if suffix.startswith(".tns") else sio.load(p)
        assert_same(back, t)


def test_amino_is_not_symmetric_and_keeps_explicit_zeros():
    t = sio.load(DATA / "amino.tns.gz")
    assert type(t) is SparseTensor and t.nnz == 5 * 201 * 61
    assert int((t.values == 0).sum()) == 23
    # declared symmetric, all modes take the largest size (201), and the values disagree
    msg = r"amino.tns.gz: line 2: A is not symmetric in modes \(0, 1, 2\): A\[0, 0, 1\] = 1.868 "
    with pytest.raises(sio.FormatError, match=msg):
        sio.load(DATA / "amino.tns.gz", symmetric=True)


def test_general_files_symmetrize():
    a = sio.load(DATA / "sherman3.mtx.gz")
    assert type(a) is SparseTensor
    with pytest.raises(sio.FormatError, match=r"sherman3.mtx.gz: line \d+: A is not symmetric"):
        sio.load(DATA / "sherman3.mtx.gz", symmetric=True)
    s = sio.load(DATA / "sherman3.mtx.gz", symmetrize="sum")
    m = sio.to_scipy(a)
    assert abs(sio.to_scipy(s) - (m + m.T)).max() == 0
    u = sio.load(DATA / "sherman3.mtx.gz", symmetrize="upper")
    up = sp.triu(m, format="csr")
    assert abs(sio.to_scipy(u) - (up + sp.triu(m, 1).T)).max() == 0
    # a symmetric file is returned as it is
    b = sio.load(DATA / "bcsstk01.mtx.gz", symmetrize="sum")
    assert_same(b, sio.load(DATA / "bcsstk01.mtx.gz"))


def test_symmetric_file_expanded_on_request():
    s = sio.load(DATA / "bcsstk01.mtx.gz")
    g = sio.load(DATA / "bcsstk01.mtx.gz", symmetric=False)
    assert type(g) is SparseTensor and g.nnz == 400
    assert_same(g, s.expanded())
    t = sio.load(DATA / "contact-high-school_sym3.tns.gz")
    assert_same(sio.load(DATA / "contact-high-school_sym3.tns.gz", symmetric=True), t)
    plain = sio.load(DATA / "contact-high-school_sym3.tns.gz", symmetric=False)
    assert_same(plain, t.expanded())
    part = sio.load(DATA / "contact-high-school_sym3.tns.gz", symmetric=[(0, 1)])
    assert part.groups == ((0, 1),) and part.n_expanded == t.n_expanded

"""Work of the catalog programs on real data: chained (intermediates' symmetry passed on) against
the unchained composition (the same statements compiled as if alone), and against the
non-symmetric kernels. Counts, not timings: iteration points from `ProgramKernel.stats`.

    /work/main/.venv/bin/python perf/programs.py [--data ../shared/data]

Each result is checked against the numpy oracle first. Writes perf/results/programs-<host>-<date>.json
and prints a markdown table. Dense intermediates of order 3 grow as n³: the order-4 tensors are
restricted to their first 80 nodes (entries whose indices are all below 80), so that the
numpy oracle's dense copy fits in memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import systec_gpu as sg  # noqa: E402
from systec_gpu.api import _compile  # noqa: E402
from systec_gpu.catalog import PROGRAMS, compile_program_catalog  # noqa: E402
from systec_gpu.ir.einsum import Call, Literal  # noqa: E402
from systec_gpu.program import compile_program  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"


def restricted(tensor: SymmetricTensor, size: int) -> SymmetricTensor:
    keep = (tensor.indices < size).all(axis=0)
    return SymmetricTensor(tensor.indices[:, keep], np.asarray(tensor.values)[keep], (size,) * tensor.ndim,
                           tensor.groups, check=False)


def inputs_for(name: str, data: Path, rng) -> tuple[dict, str]:
    if name in ("gram_spmv", "gram_spmv_sparse"):
        a = sg.load(data / "bcsstk16.mtx.gz").expanded()
        rows = a.indices[0] < 1200
        a = sg.SparseTensor(a.indices[:, rows], np.asarray(a.values)[rows], (1200, a.shape[1]))
        if name == "gram_spmv":
            return {"A": a.to_dense(), "x": rng.uniform(-1, 1, 1200)}, "bcsstk16 rows 0..1199 (dense A)"
        return {"A": a, "x": rng.uniform(-1, 1, 1200)}, "bcsstk16 rows 0..1199"
    if name == "ssyrk_sparse":
        return {"A": sg.load(data / "bcsstk16.mtx.gz").expanded()}, "bcsstk16"
    if name == "quartic_hvp":
        a = restricted(sg.load(data / "email-Eu_sym4.tns.gz"), 80)
        return {"A": a, "x": rng.uniform(-1, 1, 80), "v": rng.uniform(-1, 1, 80)}, "email-Eu_sym4, nodes 0..79"
    if name == "ttv3_form":
        a = sg.load(data / "contact-high-school_sym3.tns.gz")
        return {"A": a, "x": rng.uniform(-1, 1, a.shape[0])}, "contact-high-school_sym3"
    if name == "ttv4_chain":
        a = restricted(sg.load(data / "email-Eu_sym4.tns.gz"), 80)
        return {"A": a, "x": rng.uniform(-1, 1, 80)}, "email-Eu_sym4, nodes 0..79"
    if name == "cp_als3":
        a = sg.load(data / "contact-high-school_sym3.tns.gz")
        return {"A": a, "B": rng.uniform(-1, 1, (a.shape[0], 8))}, "contact-high-school_sym3, rank 8"
    raise KeyError(name)


def oracle(einsum, values: dict) -> np.ndarray:
    """numpy.einsum of a product statement (the catalog programs' form): the interpreter's dense
    broadcast over every index would not fit in memory at these sizes."""
    factors = einsum.rhs.args if isinstance(einsum.rhs, Call) and einsum.rhs.op == "mul" else (einsum.rhs,)
    scale, operands, specs = 1.0, [], []
    letters = {}
    for factor in factors:
        if isinstance(factor, Literal):
            scale *= factor.value
            continue
        specs.append("".join(letters.setdefault(i.name, chr(97 + len(letters))) for i in factor.indices))
        operands.append(values[factor.tensor])
    out = "".join(letters[i.name] for i in einsum.output.indices)
    return scale * np.einsum(f"{','.join(specs)}->{out}", *operands, optimize=True)


def dense(value):
    if isinstance(value, sg.SparseTensor):
        return value.to_dense()
    return np.asarray(value, dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, entry in PROGRAMS.items():
        if "\n" not in entry.text:
            continue  # one statement: perf/spgemm.py
        inputs, source = inputs_for(name, args.data, rng)
        chained = compile_program_catalog(name, backend="numba")
        alone = compile_program(entry.text, compile_statement=_compile, symmetric=entry.symmetric or None,
                                formats=entry.formats or None, outputs=entry.outputs, backend="numba", chain=False)
        values = {n: dense(v) for n, v in inputs.items()}
        for statement in chained.flow.statements:
            values[statement.einsum.output.tensor] = oracle(statement.einsum, values)
        for kernel in (chained, alone):
            got = kernel(**inputs)
            got = list(got) if len(kernel.outputs) > 1 else [got]
            for tensor, g in zip(kernel.outputs, got, strict=True):
                want = values[tensor]
                scale = max(float(np.abs(want).max()), 1.0)
                assert np.allclose(dense(g), want, rtol=1e-9, atol=1e-9 * scale), (name, tensor)
        ours, theirs = chained.stats, alone.stats
        rows.append({
            "program": name, "data": source, "statements": len(chained.kernels),
            "chained": {k: ours[k] for k in ("visited_points", "baseline_points", "work_ratio")},
            "unchained": {k: theirs[k] for k in ("visited_points", "baseline_points", "work_ratio")},
            "per_statement_chained": [s["work_ratio"] for s in ours["statements"]],
            "per_statement_unchained": [s["work_ratio"] for s in theirs["statements"]],
        })
        print(f"{name}: chained {ours['work_ratio']:.3f}, unchained {theirs['work_ratio']:.3f}", file=sys.stderr)
    lines = ["| program | data | work ratio chained | unchained | per statement (chained / unchained) |",
             "|---|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["per_statement_chained"], r["per_statement_unchained"],
                                                            strict=True))
        lines.append(f"| {r['program']} | {r['data']} | {r['chained']['work_ratio']:.3f} | "
                     f"{r['unchained']['work_ratio']:.3f} | {per} |")
    out = {"benchmark": "work ratio of chained programs (points visited / points of the non-symmetric kernels)",
           "machine": {"host": platform.node(), "note": "counts, independent of the machine"},
           "date": datetime.date.today().isoformat(), "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"programs-{platform.node() or 'host'}-{out['date']}.json"
    target.write_text(json.dumps(out, indent=1))
    print("\n".join(lines))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()

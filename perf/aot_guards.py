"""Registers and spills of Triton kernels with membership guards (a sparse operand read densely,
its stored-entry mask loaded beside its values), compiled for sm_90 without a GPU (perf/aot.py):

    python perf/aot_guards.py [--json PATH]

No catalog kernel has such a read (their generated code does not change); these programs do:
a sparse operand read twice (A[i,j]*A[j,i], A[i,i]*A[i,j], sparse A*A^T into a dense output), a
second sparse tensor (B), and a sparse factor of one term of a sum (its term selected on the mask:
tl.where). Each is compiled symmetric and with symmetry=False at the schedule the
runtime chooses for a 4096 x 4096 operand with 30 nonzeros per row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

N = 4096
PROGRAMS = [  # (expression, symmetric, formats, index sizes)
    ("y[i] += A[i,j]*A[j,i]*x[j]", None, {"A": "csr"}, {"i": N, "j": N}),
    ("Y[] += A[i,j]*A[j,i]", None, {"A": "coo"}, {"i": N, "j": N}),
    ("y[] += A[i,i]*A[i,j]", {"A": "full"}, None, {"i": N, "j": N}),
    ("y[i] += A[i,j]*B[i,j]*x[j]", {"A": "full"}, {"B": "coo"}, {"i": N, "j": N}),
    ("C[i,j] += A[i,k]*A[j,k]", None, {"A": "csr"}, {"i": N, "j": N, "k": N}),
    ("Y[i,r] += A[i,j]*B[i,j]*X[j,r]", {"A": "full"}, {"B": "coo"}, {"i": N, "j": N, "r": 32}),
    # a sparse factor of a term, not of the update: a select (tl.where) on its mask
    ("y[i] += A[i,j]*x[j] + B[i,j]", None, {"A": "csr", "B": "coo"}, {"i": N, "j": N}),  # no driver
    ("y[i] += A[i,j]*(B[i,j]*x[j] + x[i])", {"A": "full"}, {"B": "coo"}, {"i": N, "j": N}),
    ("y[i] += A[i,j]*(A[j,i]*x[j] + x[i])", None, {"A": "csr"}, {"i": N, "j": N}),
    ("y[i] min= min(A[i,j] + x[j], B[i,j] + x[i])", {"A": "full"}, {"B": "coo"}, {"i": N, "j": N}),
]
FIELDS = ("compiled", "registers", "spill_bytes", "atomics", "fenced_atomics", "vector_atomics")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    options = parser.parse_args()
    import triton
    from aot import StatedInput, aot_kernel

    import systec_gpu as sg

    rows = []
    for text, symmetric, formats, sizes in PROGRAMS:
        for symmetry in (True, False):
            kernel = sg.compile(text, symmetric=symmetric, formats=formats, symmetry=symmetry, backend="triton")
            nnz = 30 * N
            stated = StatedInput(f"{N} x {N}, 30 nonzeros per row", sizes, nnz // 2 if symmetric else nnz, nnz)
            row = {"program": text, "symmetry": symmetry, "guarded": list(kernel.loops.stored_inputs),
                   **aot_kernel(kernel, stated)}
            rows.append(row)
            print(text, "sym" if symmetry else "nosym", {f: row.get(f) for f in FIELDS}, row.get("error", ""),
                  flush=True)
    path = Path(options.json or ROOT / "perf" / "results" /
                f"aot-sm_90-{datetime.date.today().isoformat()}-membership-guards.json")
    path.write_text(json.dumps({"arch": "sm_90", "triton": triton.__version__, "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

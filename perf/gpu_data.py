"""Convert real .mtx / .tns files to the .npz that `perf/gpu_check.py --data` reads on a machine
without fast_matrix_market (the device machines have none).

    python perf/gpu_data.py OUT_DIR FILE [FILE ...]

Each fully symmetric file becomes OUT_DIR/<name>.<mtx|tns>.npz holding its canonical indices,
values and shape; gpu_check picks files by size, smallest first, as it does the originals.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import systec_gpu as sg  # noqa: E402
from systec_gpu.storage import SymmetricTensor  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in argv[1:]:
        path = Path(name)
        t = sg.io.load(path)
        if not (isinstance(t, SymmetricTensor) and t.groups == (tuple(range(t.ndim)),)):
            print(f"skip {path.name}: not fully symmetric", file=sys.stderr)
            continue
        kind = "mtx" if ".mtx" in path.name else "tns"
        target = out / f"{path.name.split('.')[0]}.{kind}.npz"
        np.savez_compressed(target, indices=np.asarray(t.indices), values=np.asarray(t.values),
                            shape=np.asarray(t.shape))
        print(f"{target}: shape {t.shape}, {t.nnz} canonical nonzeros")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

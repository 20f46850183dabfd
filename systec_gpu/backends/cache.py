"""Generated kernels as real files named by a content hash, imported once per process.

Triton (and numba's on-disk cache) read the kernel's source file, so it must exist on disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from .. import __version__

_loaded: dict[Path, ModuleType] = {}


def cache_dir() -> Path:
    configured = os.environ.get("SYSTEC_CACHE_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "systec_gpu" / __version__
    root.mkdir(parents=True, exist_ok=True)
    return root


def source_path(source: str, prefix: str) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    return cache_dir() / f"{prefix}_{digest}.py"


def load_source(source: str, prefix: str) -> ModuleType:
    """Write `source` to its content-addressed file (once) and import it (once)."""
    path = source_path(source, prefix)
    if path in _loaded:
        return _loaded[path]
    if not path.exists() or path.read_text() != source:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(source)
        os.replace(tmp, path)  # atomic: concurrent writers of the same content agree
    name = f"systec_gpu_generated.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _loaded[path] = module
    return module

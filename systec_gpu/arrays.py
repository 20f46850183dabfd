"""One small array namespace over numpy and torch, so that storage algorithms are written once.

`namespace(*arrays)` gives `NUMPY` for host numpy inputs and a `TorchOps` for torch tensors (on
their device). Operators (`==`, `<`, `&`, `~`, `*=`, slicing, boolean and integer indexing) are
the same in both libraries and are used directly; this module holds only what differs: the
functions, dtypes and in-place forms the storage algorithms need, and the one host conversion
(`to_host`) through which every read of device data for an error message or a host consumer
passes.

Why not `array_api_compat`: the standard it implements has no bincount, no segmented sum
(`np.add.reduceat` / `index_add`), no lexsort, no running maximum, no `out=` arguments (the
construction decodes keys in place to keep its memory peak low) and no bit reinterpretation, so
half of these operations would be written here anyway, and the rest are one-line wrappers; it
would add a dependency and a Python call layer for the other half.

torch is imported only when a torch tensor is met.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    # isinstance, not the type's module name: torch.compile traces isinstance
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


class NumpyOps:
    """numpy on the host."""

    name = "numpy"
    chunk = 1 << 20  # entries per block of the blockwise passes: temporaries of a few MiB
    min_chunk = 1 << 12  # ... and at least this many (fewer, smaller blocks for small inputs)
    int64, int32, uint8, bool, float64 = (np.dtype(t) for t in (np.int64, np.int32, np.uint8, np.bool_, np.float64))
    device = None

    def owns(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    # construction -------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def zeros(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def ones(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.ones(shape, dtype=dtype)

    def empty(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def full(self, shape: Any, value: Any, dtype: Any = None) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    def arange(self, start: int, stop: int | None = None, dtype: Any = None) -> np.ndarray:
        return np.arange(start, stop, dtype=dtype or np.int64)

    # conversion ---------------------------------------------------------------------------
    def astype(self, x: np.ndarray, dtype: Any) -> np.ndarray:
        """`x` in `dtype`, contiguous; `x` itself when it already is."""
        return np.ascontiguousarray(x, dtype=dtype)

    def as_dtype(self, x: np.ndarray, dtype: Any) -> np.ndarray:
        """`x` in `dtype`, any strides; `x` itself when it already is (no copy of an input)."""
        return np.asarray(x, dtype=dtype)

    def copy(self, x: np.ndarray) -> np.ndarray:
        return x.copy()

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def host_view(self, x: np.ndarray) -> np.ndarray:
        return x

    def item(self, x: Any) -> Any:
        return x.item() if hasattr(x, "item") else x

    def dtype_name(self, dtype: Any) -> str:
        return str(np.dtype(dtype))

    def is_floating(self, dtype: Any) -> bool:
        return np.dtype(dtype).kind in "fc"

    def is_integer(self, dtype: Any) -> bool:
        return np.dtype(dtype).kind in "iu"

    def is_numeric(self, dtype: Any) -> bool:
        return np.dtype(dtype).kind in "fciu"

    def is_bool(self, dtype: Any) -> bool:
        return np.dtype(dtype).kind == "b"

    # computation --------------------------------------------------------------------------
    def concat(self, parts: list, axis: int = 0) -> np.ndarray:
        return np.concatenate(parts, axis=axis)

    def flatnonzero(self, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask)

    def cumsum(self, x: np.ndarray, dtype: Any = None) -> np.ndarray:
        return np.cumsum(x, dtype=dtype)

    def running_max(self, x: np.ndarray) -> np.ndarray:
        return np.maximum.accumulate(x)

    def bincount(self, x: np.ndarray, minlength: int) -> np.ndarray:
        return np.bincount(x, minlength=minlength)

    def searchsorted(self, sorted_: np.ndarray, x: Any, side: str = "left") -> np.ndarray:
        return np.searchsorted(sorted_, x, side=side)

    def where(self, cond: Any, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> np.ndarray:
        return np.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> np.ndarray:
        return np.maximum(a, b)

    def isnan(self, x: np.ndarray) -> np.ndarray:
        return np.isnan(x)

    def abs(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x)

    def swapaxes(self, x: np.ndarray, p: int, q: int) -> np.ndarray:
        return np.swapaxes(x, p, q)

    def first_true(self, mask: np.ndarray) -> int | None:
        """Flat position of the first True, or None: one scalar read."""
        if not mask.size:
            return None
        k = int(np.argmax(mask))
        return k if mask.reshape(-1)[k] else None

    def floor_divide_(self, x: np.ndarray, d: int) -> None:
        np.floor_divide(x, d, out=x)

    def remainder(self, x: np.ndarray, d: int, out: np.ndarray) -> None:
        np.remainder(x, d, out=out)

    def segment_sum(self, x: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Sums of `x` over the segments beginning at `starts` (sorted, starts[0] == 0), left to
        right within each segment."""
        return np.add.reduceat(x, starts, dtype=x.dtype)

    def sort_with_order(self, key: np.ndarray, bound: int, unique: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys, order) of nonnegative int64 keys below `bound`, ties in input order
        (`unique`: the keys have no ties; the result is the same). `key` is the caller's scratch
        and may be overwritten.

        numpy's value sort of int64 is several times faster than any of its argsorts and needs
        no index buffer, so the positions ride along in the low bits of one int64: the key and
        its position sort as one number (stable by construction). A key too wide for that is
        sorted digit by digit, least significant first (a radix sort whose passes are such
        packed sorts)."""
        n = key.shape[0]
        pos_bits = max(n - 1, 0).bit_length()
        key_bits = max(bound - 1, 0).bit_length()
        index = np.int32 if n <= 2**31 else np.int64  # positions are small: half the memory
        if key_bits + pos_bits <= 63:
            key <<= pos_bits
            self._add_positions(key)
            key.sort()
            order = np.empty(n, dtype=index)
            np.bitwise_and(key, (1 << pos_bits) - 1, out=order, casting="unsafe")
            key >>= pos_bits
            return key, order
        room = 63 - pos_bits
        if room < 16:  # billions of entries: the digits would be too many
            order = np.argsort(key, kind="stable")
            return key[order], order
        order = None
        for shift in range(0, key_bits, room):  # least significant digit first
            digit = key >> shift if order is None else key[order] >> shift
            digit &= (1 << room) - 1
            digit <<= pos_bits
            self._add_positions(digit)
            digit.sort()
            step = np.empty(n, dtype=index)
            np.bitwise_and(digit, (1 << pos_bits) - 1, out=step, casting="unsafe")
            del digit
            order = step if order is None else order[step]
        return key[order], order

    def _add_positions(self, packed: np.ndarray) -> None:
        """packed |= arange(n), block by block (no n-long temporary)."""
        n = packed.shape[0]
        for a in range(0, n, self.chunk):
            packed[a:a + self.chunk] |= np.arange(a, min(n, a + self.chunk), dtype=np.int64)

    def lexsort(self, keys: list) -> np.ndarray:
        """Stable order sorting by `keys[0]`, then `keys[1]`, ... (major first)."""
        return np.lexsort(keys[::-1])

    def errstate(self):
        return np.errstate(invalid="ignore", over="ignore")


class TorchOps(NumpyOps):
    """torch, on one device (CPU or an accelerator); results stay there."""

    name = "torch"
    chunk = 1 << 22

    def __init__(self, device: Any):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.int64, self.int32, self.uint8, self.bool, self.float64 = (
            torch.int64, torch.int32, torch.uint8, torch.bool, torch.float64)

    def owns(self, x: Any) -> bool:
        return isinstance(x, self.torch.Tensor)

    def _dtype(self, dtype: Any):
        if dtype is None or isinstance(dtype, self.torch.dtype):
            return dtype
        return {np.dtype(np.int64): self.torch.int64, np.dtype(np.int32): self.torch.int32,
                np.dtype(np.uint8): self.torch.uint8, np.dtype(np.bool_): self.torch.bool,
                np.dtype(np.float64): self.torch.float64, np.dtype(np.float32): self.torch.float32}[np.dtype(dtype)]

    def asarray(self, x: Any, dtype: Any = None):
        if is_cupy(x):
            x = self.torch.from_dlpack(x)
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()  # torch wants writable memory; ours is never written
        return self.torch.as_tensor(x, dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape: Any, dtype: Any):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def ones(self, shape: Any, dtype: Any):
        return self.torch.ones(shape, dtype=self._dtype(dtype), device=self.device)

    def empty(self, shape: Any, dtype: Any):
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def full(self, shape: Any, value: Any, dtype: Any = None):
        if isinstance(value, self.torch.Tensor):
            return value.expand(shape).clone()
        return self.torch.full(shape if isinstance(shape, tuple) else (shape,), value, dtype=self._dtype(dtype),
                               device=self.device)

    def arange(self, start: int, stop: int | None = None, dtype: Any = None):
        if stop is None:
            start, stop = 0, start
        return self.torch.arange(start, stop, dtype=self._dtype(dtype) or self.torch.int64, device=self.device)

    def astype(self, x, dtype: Any):
        return x.to(self._dtype(dtype)).contiguous()

    def as_dtype(self, x, dtype: Any):
        return x.to(self._dtype(dtype))

    def copy(self, x):
        return x.clone()

    def to_host(self, x: Any) -> np.ndarray:
        """A numpy array of `x`: a view of a CPU tensor, a copy of a device one (the one place
        where device data comes to the host)."""
        if not isinstance(x, self.torch.Tensor):
            return np.asarray(x)
        x = x.detach()
        if x.dtype == self.torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        return x.cpu().resolve_conj().numpy()

    def host_view(self, x):
        """The numpy view of a CPU tensor (no copy)."""
        return x.detach().numpy()

    def item(self, x: Any) -> Any:
        return x.item() if hasattr(x, "item") else x

    def dtype_name(self, dtype: Any) -> str:
        return str(dtype).removeprefix("torch.")

    def is_floating(self, dtype: Any) -> bool:
        return dtype.is_floating_point or dtype.is_complex

    def is_integer(self, dtype: Any) -> bool:
        return not (dtype.is_floating_point or dtype.is_complex or dtype == self.torch.bool)

    def is_numeric(self, dtype: Any) -> bool:
        return dtype != self.torch.bool

    def is_bool(self, dtype: Any) -> bool:
        return dtype == self.torch.bool

    def concat(self, parts: list, axis: int = 0):
        return self.torch.cat([self.asarray(p) for p in parts], dim=axis)

    def flatnonzero(self, mask):
        return self.torch.flatten(mask).nonzero().reshape(-1)

    def cumsum(self, x, dtype: Any = None):
        return self.torch.cumsum(x, dim=0, dtype=self._dtype(dtype))

    def running_max(self, x):
        return self.torch.cummax(x, dim=0).values

    def bincount(self, x, minlength: int):
        return self.torch.bincount(x, minlength=minlength)

    def searchsorted(self, sorted_, x: Any, side: str = "left"):
        return self.torch.searchsorted(sorted_, self.asarray(x), side=side)

    def where(self, cond: Any, a: Any, b: Any):
        return self.torch.where(cond, a, b)

    def minimum(self, a: Any, b: Any):
        return self.torch.minimum(a, b)

    def maximum(self, a: Any, b: Any):
        return self.torch.maximum(a, b)

    def isnan(self, x):
        return self.torch.isnan(x)

    def abs(self, x):
        return self.torch.abs(x)

    def swapaxes(self, x, p: int, q: int):
        return x.transpose(p, q)

    def first_true(self, mask) -> int | None:
        if mask.numel() == 0:
            return None
        k = int(self.torch.argmax(mask.to(self.torch.uint8)))
        return k if bool(mask.reshape(-1)[k]) else None

    def floor_divide_(self, x, d: int) -> None:
        x.div_(d, rounding_mode="floor")

    def remainder(self, x, d: int, out) -> None:
        self.torch.remainder(x, d, out=out)

    def segment_sum(self, x, starts):
        segment = self.zeros(x.shape[0], self.int64)
        segment[starts[1:]] = 1
        segment = segment.cumsum(0)
        if x.dtype == self.torch.bool:
            return self.zeros(starts.shape[0], self.int64).index_add(0, segment, x.long()) != 0
        return self.zeros(starts.shape[0], x.dtype).index_add(0, segment, x)

    def sort_with_order(self, key, bound: int, unique: bool = False):
        return self.torch.sort(key, stable=not unique)

    def lexsort(self, keys: list):
        order = self.arange(keys[0].shape[0])
        for key in reversed(keys):  # minor key first; each stable sort keeps the previous order
            order = order[self.torch.sort(key[order], stable=True).indices]
        return order

    def errstate(self):
        return contextlib.nullcontext()


NUMPY = NumpyOps()
_TORCH: dict[str, TorchOps] = {}


def torch_ops(device: Any) -> TorchOps:
    key = str(device)
    if key not in _TORCH:
        _TORCH[key] = TorchOps(device)
    return _TORCH[key]


def namespace(*arrays: Any) -> NumpyOps:
    """The namespace of the first torch (or CuPy) array among `arrays`, on its device; numpy when
    there is none (lists, scalars and numpy arrays)."""
    for x in arrays:
        if is_torch(x) and hasattr(x, "device"):
            return torch_ops(x.device)
        if is_cupy(x):
            import torch

            return torch_ops(torch.from_dlpack(x).device)
    return NUMPY


def fits_int64(sizes: list[int]) -> bool:
    return math.prod(sizes) <= 2**63 - 1

"""Declarations (`symmetric=`, `formats=`, `values=`) checked against a parsed einsum -> einsum Program."""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Mapping, Sequence

from .. import algebra
from .. import formats as storage_formats
from ..ir.einsum import Einsum, Program, Symmetry, accesses

FORMATS = storage_formats.SPELLINGS


class DeclarationError(ValueError):
    """The expression and its declarations disagree; the message names the operand."""


def _where(text: str, tensor: str) -> str:
    match = re.search(rf"\b{re.escape(tensor)}\s*\[", text)
    return f" (position {match.start()})" if match else ""


def _check_arity(einsum: Einsum, text: str) -> dict[str, int]:
    arity: dict[str, int] = {}
    for access in (einsum.output, *accesses(einsum.rhs)):
        known = arity.setdefault(access.tensor, len(access.indices))
        if known != len(access.indices):
            raise DeclarationError(
                f"tensor {access.tensor} is used with {known} and with {len(access.indices)} "
                f"indices{_where(text, access.tensor)}: {access}"
            )
    return arity


def _check_indices(einsum: Einsum, text: str) -> None:
    inputs = {a.tensor for a in accesses(einsum.rhs)}
    if einsum.output.tensor in inputs:
        raise DeclarationError(
            f"output {einsum.output.tensor} also appears on the right-hand side; "
            "write the result to a new tensor"
        )
    rhs_indices = {i for a in accesses(einsum.rhs) for i in a.indices}
    for index in einsum.output.indices:
        if index not in rhs_indices:
            raise DeclarationError(
                f"output index {index} of {einsum.output} appears in no input{_where(text, einsum.output.tensor)}"
            )
    seen = set()
    for index in einsum.output.indices:
        if index in seen:
            raise DeclarationError(f"output {einsum.output} repeats index {index}")
        seen.add(index)


def _mode_number(tensor: str, group, mode) -> int:
    if isinstance(mode, bool) or not isinstance(mode, numbers.Integral):
        raise DeclarationError(
            f"symmetric {tensor!r}: group {group!r} holds {mode!r}, which is not a mode number "
            "(0-based integers, e.g. [(0, 1)])"
        )
    return int(mode)


def normalize_groups(tensor: str, spec, ndim: int) -> tuple[tuple[int, ...], ...]:
    """`"full"` or a list of mode groups -> sorted disjoint groups of size >= 2."""
    if isinstance(spec, str) and spec == "full" or spec is True:
        if ndim < 2:
            raise DeclarationError(f"symmetric {tensor!r}: 'full' needs at least 2 modes, {tensor} has {ndim}")
        return (tuple(range(ndim)),)
    if spec is None or spec is False or (isinstance(spec, Sequence) and not isinstance(spec, str) and not spec):
        return ()
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise DeclarationError(
            f"symmetric {tensor!r}: expected 'full' or a list of mode groups like [(0, 1)], got {spec!r}"
        )
    if all(not isinstance(m, Sequence) or isinstance(m, str) for m in spec):
        spec = [spec]  # a single group written flat: (0, 1)
    groups, used = [], set()
    for group in spec:
        if isinstance(group, str) or not isinstance(group, Sequence):
            raise DeclarationError(
                f"symmetric {tensor!r}: {group!r} is not a group of modes; "
                "write groups as tuples, e.g. [(0, 1), (2, 3)]"
            )
        modes = tuple(sorted(_mode_number(tensor, tuple(group), m) for m in group))
        if len(modes) < 2:
            raise DeclarationError(f"symmetric {tensor!r}: group {tuple(group)} needs at least 2 modes")
        for mode in modes:
            if not 0 <= mode < ndim:
                raise DeclarationError(
                    f"symmetric {tensor!r}: mode {mode} of group {tuple(group)} is out of range "
                    f"({tensor} has {ndim} modes: 0..{ndim - 1})"
                )
            if mode in used:
                raise DeclarationError(f"symmetric {tensor!r}: mode {mode} is in two groups")
            used.add(mode)
        groups.append(modes)
    return tuple(sorted(groups))


def _by_tensor(keyword: str, given, einsum: Einsum) -> dict:
    """`symmetric=` / `formats=` as a dict from tensor names; a clear error for anything else
    (a name or a list of names is the usual slip: the message shows the mapping meant)."""
    if given is None:
        return {}
    if isinstance(given, Mapping):
        for key in given:
            if not isinstance(key, str):
                raise DeclarationError(f"{keyword}= keys are tensor names (strings), got {key!r}")
        return dict(given)
    arity = {a.tensor: len(a.indices) for a in accesses(einsum.rhs)}  # inputs: the examples
    if keyword == "symmetric":
        what, value, fits = "'full' or a list of mode groups", "full", lambda n: arity.get(n, 0) >= 2
    else:
        what, value, fits = f"one of {', '.join(map(repr, FORMATS))}", "coo", lambda n: n in arity
    names = [given] if isinstance(given, str) else list(given) if isinstance(given, list | tuple) else []
    names = [n for n in names if isinstance(n, str) and fits(n)] or [n for n in arity if fits(n)][:1]
    example = "{" + ", ".join(f"{n!r}: {value!r}" for n in names) + "}" if names else f"{{'A': {value!r}}}"
    raise DeclarationError(
        f"{keyword}= must map tensor names to {what}, e.g. {keyword}={example}; got {given!r}"
    )


def build_program(
    einsum: Einsum,
    text: str = "",
    symmetric: Mapping[str, object] | None = None,
    formats: Mapping[str, str] | None = None,
    values: str | None = None,
) -> Program:
    """Check the declarations against the einsum and fold them into a Program."""
    if values is not None:
        if values not in algebra.DOMAINS:
            raise DeclarationError(f"values={values!r}: unknown; known: {', '.join(map(repr, algebra.DOMAINS))}")
        einsum = dataclasses.replace(einsum, values=values)
    arity = _check_arity(einsum, text)
    _check_indices(einsum, text)
    symmetric = _by_tensor("symmetric", symmetric, einsum)
    formats = _by_tensor("formats", formats, einsum)
    symmetries = []
    for tensor, spec in sorted(symmetric.items()):
        if tensor not in arity:
            raise DeclarationError(
                f"symmetric= names {tensor!r}, which the expression does not use "
                f"(tensors: {', '.join(sorted(arity))})"
            )
        groups = normalize_groups(tensor, spec, arity[tensor])
        if groups:
            symmetries.append(Symmetry(tensor, groups))
    declared = {s.tensor for s in symmetries}
    fmt: dict[str, storage_formats.StorageFormat] = {}
    for tensor, value in formats.items():
        if tensor not in arity:
            raise DeclarationError(f"formats= names {tensor!r}, which the expression does not use")
        resolved = storage_formats.resolve(value)
        if resolved is None:
            raise DeclarationError(f"formats[{tensor!r}] = {value!r}: unknown format; known: {', '.join(FORMATS)}")
        if tensor == einsum.output.tensor and resolved.sparse:
            raise DeclarationError(f"formats[{tensor!r}]: the output is always dense")
        problem = resolved.modes_error(tensor, arity[tensor])
        if problem is not None:
            raise DeclarationError(problem)
        fmt[tensor] = resolved
    for tensor in arity:
        if tensor not in fmt:
            # Sparse and symmetric is the point of this library: symmetric inputs default to sparse.
            is_input = tensor != einsum.output.tensor
            sparse = storage_formats.default_sparse(arity[tensor])
            fmt[tensor] = sparse if tensor in declared and is_input else storage_formats.DENSE
    return Program(einsum, tuple(symmetries), tuple(sorted(fmt.items())))

"""Programs of several statements, with symmetric intermediates (DESIGN section 9).

    T[i,j] += A[i,k]*A[j,k]
    y[i] += T[i,j]*x[j]

Each statement is compiled as its own kernel (symmetrized as a single statement is). The symmetry
proved for a statement's output (declared, visible in a symmetric operand, or invisible as in
the Gram product above) is declared on that tensor where later statements read it: the producer
computes and stores only the canonical part of T, its consumers visit their canonical triangle
and read only that part. How each intermediate is stored is chosen by STORAGE_RULE, and said by
`explain()`.

Statement kernels are made by the compiler of single statements, which the API passes in
(`compile_statement`): this module sits below the API and does not import it.
"""

from __future__ import annotations

import collections
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .dense_symmetry import check_symmetric, mirror_in_place
from .frontend.declare import DeclarationError, normalize_groups
from .frontend.parser import ParseError, parse, parse_statements
from .frontend.program import ProgramText, analyze
from .inputs import check_tensor_names, is_sparse_input, mirror_tensor, to_numpy, to_storage
from .ir.einsum import Program, accesses, format_einsum
from .passes.identify_symmetry import proved_output_groups
from .pipeline import front, symmetrize
from .spgemm import SPARSE_FORMATS, SparseOutputError, SparseOutputKernel, compile_sparse_output, gram_form
from .storage import SparseTensor

STORAGE_RULE = (
    "an intermediate is stored sparse, as its canonical nonzeros (a SymmetricTensor; csr for a matrix), when "
    "its producer's output is sparse: a Gram product A[i,k]*A[j,k] of a sparse A, the form with a sparse-output "
    "kernel; otherwise dense, its producer writing only the canonical part of its symmetric modes (the rest "
    "holds the reduction's identity: the producer never writes the mirror) and its consumers visiting only "
    "that part. formats={name: 'dense' | 'coo' | 'csr'} overrides the rule."
)


def is_program(expr: str, formats: Mapping | None, outputs) -> bool:
    """Whether `expr` needs this module: several statements, `outputs=`, or a sparse output."""
    if outputs is not None:
        return True
    if not isinstance(expr, str):
        return False  # the single-statement compiler names the type
    try:
        statements = parse_statements(expr)
    except ParseError as program_error:
        try:
            parse(expr)
        except ParseError as single_error:
            if program_error.position > single_error.position:
                raise program_error from None  # a program, wrong past its first statement
        return False  # wrong within its first statement: the single-statement compiler's error
    if len(statements) > 1:
        return True
    output = statements[0].einsum.output.tensor
    return isinstance(formats, Mapping) and formats.get(output) in SPARSE_FORMATS


@dataclass(frozen=True)
class Intermediate:
    """A tensor written by one statement and read by later ones."""

    tensor: str
    producer: int  # statement number, 0-based
    consumers: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]  # symmetry declared where it is read
    reasons: tuple[str, ...]  # why, one per group
    storage: str  # "dense" | "coo" | "csr"
    storage_reason: str
    canonical: bool  # the producer writes only the canonical part of (some of) its groups


def _merge(groups: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Overlapping mode groups merged (symmetric in (0, 1) and (1, 2) is symmetric in (0, 1, 2))."""
    merged: list[set[int]] = []
    for group in groups:
        joined = set(group)
        for other in [m for m in merged if m & joined]:
            joined |= other
            merged.remove(other)
        merged.append(joined)
    return tuple(sorted(tuple(sorted(m)) for m in merged))


def _why_proved(program: Program, group: tuple[int, ...]) -> str:
    """Visible (the output's indices lie in one symmetric group of an operand) or invisible."""
    output = program.einsum.output
    indices = {output.indices[m] for m in group}
    for access in accesses(program.einsum.rhs):
        for operand_group in program.groups_of(access.tensor):
            if indices <= {access.indices[m] for m in operand_group}:
                return f"visible: {access} is symmetric in modes {operand_group}"
    names = ", ".join(output.indices[m].name for m in group)
    return f"invisible: the right-hand side is invariant under permuting {names} (reduction indices renamed)"


def _by_tensor(keyword: str, given, tensors: Sequence[str]) -> dict:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise DeclarationError(f"{keyword}= must map tensor names to declarations, e.g. {keyword}={{'A': ...}}; "
                               f"got {given!r}")
    for key in given:
        if key not in tensors:
            raise DeclarationError(f"{keyword}= names {key!r}, which the program does not use "
                                   f"(tensors: {', '.join(tensors)})")
    return dict(given)


class ProgramKernel:
    """A compiled program: one kernel per statement, run in order. Called with the program's
    inputs by name, it returns the result (the last statement's output), or a named tuple of the
    tensors named by `outputs=`."""

    def __init__(self, text: str, flow: ProgramText, kernels: tuple, intermediates: dict[str, Intermediate],
                 declared: dict[str, tuple], output_reasons: dict[str, tuple], backend: str, exploit: bool,
                 chained: bool):
        self.expression = text
        self.flow = flow
        self.kernels = kernels
        self.intermediates = intermediates
        self.declared = declared  # program input -> its declared groups
        self.output_reasons = output_reasons  # tensor -> ((group, why), ...) of each statement's output
        self.backend = backend
        self.exploit = exploit
        self.chained = chained
        self.inputs = flow.inputs
        self.outputs = flow.outputs
        self._result = collections.namedtuple("ProgramResult", flow.outputs) if len(flow.outputs) > 1 else None
        self._unchained: Callable[[], ProgramKernel] | None = None  # set by compile_program when needed

    def __repr__(self) -> str:
        return (f"ProgramKernel({self.expression!r}, statements={len(self.kernels)}, outputs={self.outputs}, "
                f"backend={self.backend!r})")

    def _reads(self, number: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t, _ in self.flow.statements[number].reads))

    def _checked(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """The inputs declared symmetric, checked once for all the statements that read them:
        sparse ones converted to checked storage, dense ones verified."""
        checked = {}
        for name, groups in self.declared.items():
            obj = tensors[name]
            if isinstance(obj, SparseTensor) or is_sparse_input(obj):
                checked[name] = to_storage(name, obj, groups, True)
            else:
                check_symmetric(name, to_numpy(obj), groups)
        return checked

    def __call__(self, *, check: bool = True, canonical_output: bool = False, **tensors: Any):
        """Run the statements in order. `check` verifies the declared symmetry of the inputs (once,
        before the first statement); `canonical_output`: the results hold only the canonical part
        of their symmetric modes (sparse results always do)."""
        check_tensor_names(self.inputs, tensors, "the program")
        traced = False
        if "torch" in sys.modules:
            from .torch_ops import needs_op

            traced = needs_op(tensors)
        if traced and self._unchained is not None:
            # Under autograd or tracing: the statements that read an intermediate as symmetric have
            # no derivative w.r.t. a dense symmetric operand yet; the unchained program does the same
            # arithmetic on full intermediates and has them all.
            return self._unchained()(check=check, canonical_output=canonical_output, **tensors)
        values = dict(tensors)
        if check and not traced:
            values.update(self._checked(tensors))
        for number, kernel in enumerate(self.kernels):
            output = self.flow.statements[number].einsum.output.tensor
            args = {t: values[t] for t in self._reads(number)}
            if isinstance(kernel, SparseOutputKernel):
                values[output] = kernel(check=check and traced, **args)
                continue
            intermediate = self.intermediates.get(output)
            # an intermediate's consumers read its canonical part; a result is canonical when asked
            canonical = intermediate.canonical and not traced if intermediate is not None else canonical_output
            values[output] = kernel(check=check and traced, canonical_output=canonical, **args)
        results = []
        for name in self.outputs:
            value = values[name]
            intermediate = self.intermediates.get(name)
            if intermediate is not None and intermediate.canonical and not traced and not canonical_output \
                    and intermediate.storage == "dense":
                value = _mirrored(value, self.kernels[intermediate.producer].loops.output_groups)
            results.append(value)
        return self._result(*results) if self._result is not None else results[0]

    @property
    def stats(self) -> dict:
        """Work of the last call: per statement (`Kernel.stats`), and for the program the sums of
        points visited and of points of the non-symmetric kernels; `work_ratio` = their ratio."""
        per = [kernel.stats for kernel in self.kernels]
        visited = sum(s["visited_points"] for s in per)
        baseline = sum(s["baseline_points"] for s in per)
        return {"statements": per, "visited_points": visited, "baseline_points": baseline,
                "work_ratio": visited / baseline if baseline else 1.0}

    def explain(self) -> str:
        """The whole program: its statements, the symmetry and storage of each intermediate and
        why, then each statement's symmetrized kernel."""
        flow = self.flow
        results = ", ".join(self.outputs)
        lines = [f"program: {len(flow.statements)} statement{'s' if len(flow.statements) > 1 else ''}; "
                 f"inputs {', '.join(flow.inputs)}; result{'s' if len(self.outputs) > 1 else ''} {results}"]
        for number in range(len(flow.statements)):
            lines.append(f"  {number + 1}. {flow.statement_text(number)}")
        if not self.exploit:
            lines.append("symmetry: not exploited (symmetry=False)")
        elif not self.chained:
            lines.append("symmetry of intermediates: not passed on (each statement compiled alone)")
        for name, found in self.output_reasons.items():
            for group, why in found:
                lines.append(f"{name} symmetric in modes {group}: {why}")
        for item in self.intermediates.values():
            consumers = ", ".join(str(c + 1) for c in item.consumers)
            lines.append(f"intermediate {item.tensor}: written by statement {item.producer + 1}, read by {consumers}")
            if item.groups:
                groups = ", ".join(map(str, item.groups))
                lines.append(f"  read as symmetric in modes {groups}: consumers visit their canonical triangle")
                if item.canonical:
                    lines.append(f"  statement {item.producer + 1} computes and stores only its canonical part")
            else:
                lines.append("  no symmetry known: read in full")
            lines.append(f"  storage: {item.storage} ({item.storage_reason})")
        if self.intermediates:
            lines.append(f"storage rule: {STORAGE_RULE}")
        for number, kernel in enumerate(self.kernels):
            lines.append(f"statement {number + 1}:")
            lines += [f"  {line}" for line in kernel.explain().splitlines()]
        return "\n".join(lines) + "\n"

    def source(self, backend: str = "numba") -> str:
        """The generated source of every statement on `backend`, in order."""
        parts = []
        for number, kernel in enumerate(self.kernels):
            parts.append(f"# ---- statement {number + 1}: {self.flow.statement_text(number)}\n{kernel.source(backend)}")
        return "\n".join(parts)


def _mirrored(value, groups):
    """A dense result whose canonical part was computed, mirrored in place (its consumers are done)."""
    import torch

    tensor = value if isinstance(value, torch.Tensor) else None
    if tensor is None:  # CuPy: a torch view through DLPack, writes reach the array
        tensor = torch.from_dlpack(value)
    if tensor.device.type == "cpu":
        mirror_in_place(tensor.numpy(), groups)
    else:
        mirror_tensor(tensor, groups)
    return value


def compile_program(
    expr: str,
    *,
    compile_statement: Callable[..., Any],
    symmetric: Mapping | None = None,
    formats: Mapping | None = None,
    symmetry: bool = True,
    backend: str = "auto",
    loop_order: Sequence[str] | None = None,
    name: str | None = None,
    outputs: Sequence[str] | str | None = None,
    chain: bool = True,
):
    """Compile a program (or one statement with a sparse output: a SparseOutputKernel).

    `compile_statement(text, symmetric=, formats=, symmetry=, backend=, name=)` compiles one
    statement with a dense output (the API's compiler). `chain=False` compiles each statement as
    if alone, without the symmetry proved for the intermediates it reads (same statements, same
    storage): the unchained composition that work ratios are compared against."""
    flow = analyze(expr, outputs)
    if loop_order is not None:
        raise DeclarationError("loop_order= orders the loops of one statement; a program has several "
                               "(compile a statement alone to choose its loop order)")
    tensors = list(dict.fromkeys([*flow.inputs, *(s.einsum.output.tensor for s in flow.statements)]))
    symmetric = _by_tensor("symmetric", symmetric, tensors)
    formats = _by_tensor("formats", formats, tensors)
    arity = {a.tensor: len(a.indices) for s in flow.statements for a in (s.einsum.output, *accesses(s.einsum.rhs))}
    known = {t: normalize_groups(t, spec, arity[t]) for t, spec in symmetric.items()}
    known_declared = dict(known)
    declared_inputs = {t: g for t, g in known.items() if t in flow.inputs and g}

    single = len(flow.statements) == 1 and outputs is None
    kernels: list = []
    intermediates: dict[str, Intermediate] = {}
    output_reasons: dict[str, tuple] = {}
    for number, statement in enumerate(flow.statements):
        text = expr[statement.start:statement.end].strip()
        einsum = statement.einsum
        out = einsum.output.tensor
        reads = list(dict.fromkeys(a.tensor for a in accesses(einsum.rhs)))
        sym = {t: known[t] for t in (*reads, out) if known.get(t)}
        fmt = {t: formats[t] for t in reads if t in formats and t in flow.inputs}
        for t in reads:
            if t in intermediates:
                fmt[t] = intermediates[t].storage
        is_intermediate = out in flow.intermediates
        try:
            if is_intermediate:
                storage, storage_reason = _choose_storage(out, text, sym, fmt, formats)
            else:
                storage, storage_reason = formats.get(out, "dense"), ""
            if storage in SPARSE_FORMATS:
                kernel = _sparse_statement(text, sym, fmt, storage, symmetry, backend,
                                           name if single else f"{name}_{number + 1}" if name else None)
            else:
                fmt_dense = {**fmt, out: "dense"} if out in formats else fmt
                kernel = compile_statement(text, symmetric=sym or None, formats=fmt_dense or None, symmetry=symmetry,
                                           backend=backend, name=f"{name}_{number + 1}" if name else None)
        except DeclarationError as error:
            if single:
                raise
            raise type(error)(f"statement {number + 1}, {format_einsum(einsum)}: {error}") from error
        if single:
            return kernel

        # the output's symmetry: declared, and proved by the statement (when symmetry is exploited)
        program = kernel.program
        declared = known.get(out, ())
        proved = [tuple(g) for g in proved_output_groups(program)] if symmetry else []
        groups = _merge([*declared, *proved])
        reasons = []
        for group in groups:
            if any(set(group) <= set(d) for d in declared):
                reasons.append((group, "declared (symmetric=)"))
            else:
                reasons.append((group, f"found by statement {number + 1}, {_why_proved(program, group)}"))
        if reasons:
            output_reasons[out] = tuple(reasons)
        if is_intermediate:
            passed = groups if chain else declared
            if passed:
                known[out] = passed
            canonical = isinstance(kernel, SparseOutputKernel) or bool(
                chain and symmetry and kernel.loops.output_groups)
            intermediates[out] = Intermediate(out, number, flow.consumers(out), tuple(passed),
                                              tuple(why for g, why in reasons if g in passed), storage,
                                              storage_reason, canonical)
        kernels.append(kernel)
    program = ProgramKernel(expr, flow, tuple(kernels), intermediates, declared_inputs, output_reasons, backend,
                            symmetry, chain)
    if chain and any(i.groups and i.storage == "dense" and i.groups != known_declared.get(i.tensor, ())
                     for i in intermediates.values()):
        options = {"compile_statement": compile_statement, "symmetric": symmetric or None, "formats": formats or None,
                   "symmetry": symmetry, "backend": backend, "name": f"{name}_unchained" if name else None,
                   "outputs": outputs, "chain": False}
        program._unchained = functools.cache(lambda: compile_program(expr, **options))
    return program


def _choose_storage(tensor: str, text: str, sym: dict, fmt: dict, formats: Mapping) -> tuple[str, str]:
    """STORAGE_RULE for the intermediate `tensor` written by statement `text`."""
    if tensor in formats:
        return formats[tensor], "formats= declares it"
    program = front(text, sym or None, fmt or None)
    try:
        form = gram_form(program)
    except SparseOutputError:
        return "dense", "its producer's output is dense"
    if not program.format_of(form.tensor).sparse:
        return "dense", (f"its producer is a Gram product of {form.tensor}, declared dense (formats="
                         f"{{{form.tensor!r}: 'csr'}} makes the product sparse)")
    return "csr", f"its producer's output is sparse: a Gram product of the sparse {form.tensor}"


def _sparse_statement(text: str, sym: dict, fmt: dict, storage: str, symmetry: bool, backend: str,
                      name: str | None) -> SparseOutputKernel:
    if not symmetry:
        raise SparseOutputError("a sparse output is computed as its canonical part: it needs symmetry=True "
                                "(declare the output dense for the non-symmetric baseline)")
    program = front(text, sym or None, fmt or None)
    out = parse(text).output.tensor
    return compile_sparse_output(text, program, symmetrize(program), storage, backend, name or f"{out}_sparse")

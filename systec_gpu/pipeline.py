"""The compiler's table of contents: text -> einsum IR -> symmetrized -> loop IR."""

from __future__ import annotations

from .frontend import build_program, parse
from .ir.einsum import Program, verify
from .ir.loop import LoopProgram, verify_loops
from .ir.symmetrized import Symmetrized
from .passes.canonical_triangle import restrict_to_canonical_triangle
from .passes.class_updates import enumerate_class_updates
from .passes.concordize import concordize
from .passes.consolidate import consolidate
from .passes.diagonal_classes import enumerate_diagonal_classes
from .passes.identify_symmetry import identify_symmetry
from .passes.lower_loops import lower_to_loops
from .passes.output_symmetry import keep_canonical_outputs
from .passes.read_once import read_once

SYMMETRY_PASSES = (
    identify_symmetry,  # 1. permutable index sets, output symmetry
    restrict_to_canonical_triangle,  # 2. i1 <= i2 <= ... within each set
    enumerate_diagonal_classes,  # 3. which neighbours are equal
    enumerate_class_updates,  # 4. updates of each class, with counts
    keep_canonical_outputs,  # 6. symmetric output: canonical part only
    consolidate,  # 5. base updates + lookup table of factors
)


def front(text: str, symmetric=None, formats=None, values: str | None = None) -> Program:
    return verify(build_program(parse(text), text, symmetric, formats, values))


def symmetrize(program: Program, exploit: bool = True) -> Symmetrized:
    sym = Symmetrized(program, exploit)
    for symmetry_pass in SYMMETRY_PASSES:
        sym = symmetry_pass(sym)
    return sym


def lower_and_optimize(sym: Symmetrized, loop_order=None) -> LoopProgram:
    loops = lower_to_loops(sym, loop_order)  # schedule: sparse driver, loop order, bounds
    loops = read_once(loops)  # 7. read once, share partial products
    loops = concordize(loops)  # 8. contiguous innermost reads
    return verify_loops(loops)


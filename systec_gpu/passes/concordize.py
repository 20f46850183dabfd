"""Step 8: concordize: choose dense layouts so that the innermost loop reads contiguously.

For each dense operand (and the output) whose accesses all agree, order its modes by the depth
of the loop binding each mode's index (outer first). A layout is changed only when the index of
the innermost loop it is read under is not already its last mode. The runtime permutes the
operand once before the kernel (and the output back after it).
"""

from __future__ import annotations

import dataclasses

from ..ir.einsum import Access
from ..ir.loop import Block, DenseLoop, Let, LoopProgram, SparseLoop, Update
from ..ir.traverse import postwalk, walk
from .loop_nest import unnest


def _depths(program: LoopProgram) -> dict:
    depths, depth = {}, 0
    for level in unnest(program.body):
        header = level.header
        if isinstance(header, SparseLoop):
            depth += 1
            for index in header.indices:
                depths.setdefault(index, depth)
        elif isinstance(header, DenseLoop):
            depth += 1
            depths[header.index] = depth
    return depths


def _accesses_by_tensor(program: LoopProgram) -> dict[str, list[Access]]:
    found: dict[str, list[Access]] = {}
    for node in walk(program.body):
        if isinstance(node, Update):
            found.setdefault(node.output.tensor, []).append(node.output)
        if isinstance(node, Let | Update):
            value = node.value
            for sub in walk(value):
                if isinstance(sub, Access):
                    found.setdefault(sub.tensor, []).append(sub)
    return found


def _wanted(access: Access, depths: dict) -> tuple[int, ...]:
    return tuple(sorted(range(len(access.indices)), key=lambda m: (depths[access.indices[m]], m)))


def concordize(program: LoopProgram) -> LoopProgram:
    depths = _depths(program)
    layouts: dict[str, tuple[int, ...]] = {}
    for tensor, accs in _accesses_by_tensor(program).items():
        wanted = {_wanted(a, depths) for a in accs}
        if len(wanted) != 1:
            continue  # accesses disagree: keep the user's layout
        perm = wanted.pop()
        if perm == tuple(range(len(perm))):
            continue
        innermost = max(accs[0].indices, key=lambda i: depths[i])
        if accs[0].indices[-1] == innermost:
            continue  # already contiguous along the innermost loop
        layouts[tensor] = perm
    if not layouts:
        return program

    def permute(node):
        # A[i,k] with layout (1, 0) => A[k,i]
        if isinstance(node, Access) and node.tensor in layouts:
            perm = layouts[node.tensor]
            return Access(node.tensor, tuple(node.indices[m] for m in perm))
        return None

    body = postwalk(program.body, permute)
    assert isinstance(body, Block)
    output = permute(program.output) or program.output
    return dataclasses.replace(
        program, body=body, output=output, layouts=tuple(sorted(layouts.items()))
    )




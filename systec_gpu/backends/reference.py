"""Backend "reference": the loop-IR interpreter, one chunk, in Python."""

from __future__ import annotations

from ..formats.choice import read_as
from ..ir.loop import LoopProgram, format_loop_program
from ..ir.loop_interpreter import interpret_loops
from .arguments import KernelArgs, allocate


def run_reference(program: LoopProgram, args: KernelArgs) -> None:
    program = read_as(program, args.driver)  # a COO driver read as CSF where that reads fewer bytes
    allocate(args, program, chunks=1)
    interpret_loops(program, args)


def reference_source(program: LoopProgram) -> str:
    return format_loop_program(program)

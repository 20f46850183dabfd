"""Command line: `systec-gpu demo | bench | aot | explain`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="systec-gpu", description="Symmetric sparse tensor kernels")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the catalog on shipped real data, checked against numpy")
    demo.add_argument("--show", default="mttkrp3", help="catalog kernel whose program and source to print")
    commands.add_parser("bench", help="benchmarks against the peers (see perf/)", add_help=False)
    commands.add_parser("aot", help="compile every catalog kernel for a GPU arch without a GPU (perf/aot.py: "
                        "registers, spills, atomics; --arch sm_90)", add_help=False)
    explain = commands.add_parser("explain", help="print the symmetrized program of an expression")
    explain.add_argument("expression")
    explain.add_argument("--symmetric", action="append", default=[], metavar="TENSOR",
                         help="a fully symmetric tensor (repeatable)")
    explain.add_argument("--source", choices=("numba", "triton"), help="also print generated source")
    if argv[:1] in (["bench"], ["aot"]):
        from .cli_bench import perf_main

        return perf_main(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.show)
    if args.command == "explain":
        from .api import compile as compile_kernel

        kernel = compile_kernel(args.expression, symmetric={t: "full" for t in args.symmetric})
        print(kernel.explain())
        if args.source:
            print(kernel.source(args.source))
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

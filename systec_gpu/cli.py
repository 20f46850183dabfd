"""Command line: `systec-gpu demo | bench | aot | explain`."""

from __future__ import annotations

import argparse
import re
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
    explain.add_argument("--symmetric", action="append", default=[], metavar="TENSOR[=GROUP]",
                         help="a symmetric tensor: A or A=full (all modes), A=0,1 (one group of "
                              "0-based modes; repeat for more groups)")
    explain.add_argument("--source", choices=("numba", "triton"), help="also print generated source")
    if argv[:1] in (["bench"], ["aot"]):
        from .cli_bench import perf_main

        return perf_main(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.show)
    if args.command == "explain":
        return _explain(explain, args)
    return 2


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def symmetric_option(values: list[str]) -> dict[str, object]:
    """`--symmetric` values -> the `symmetric=` mapping: `A` and `A=full` declare all modes,
    `A=0,1` one group (repeat the option for more groups of the same tensor)."""
    declared: dict[str, object] = {}
    for value in values:
        name, _, spec = value.partition("=")
        name, spec = name.strip(), spec.strip()
        if not _NAME.fullmatch(name):
            raise ValueError(f"--symmetric {value!r}: expected a tensor name, as in A, A=full or A=0,1")
        if spec in ("", "full"):
            group = "full"
        elif re.fullmatch(r"\d+(\s*,\s*\d+)+", spec):
            group = tuple(int(m) for m in spec.split(","))
        else:
            raise ValueError(
                f"--symmetric {value!r}: {spec!r} is neither 'full' nor a group of two or more 0-based "
                "modes such as 0,1"
            )
        known = declared.get(name)
        if known is not None and (known == "full" or group == "full"):
            raise ValueError(f"--symmetric {name}: 'full' and other declarations of {name} cannot be combined")
        declared[name] = "full" if group == "full" else [*(known or []), group]
    return declared


def _explain(parser: argparse.ArgumentParser, args) -> int:
    from .api import compile as compile_kernel

    try:
        symmetric = symmetric_option(args.symmetric)
    except ValueError as error:
        parser.error(str(error))  # usage and the reason on stderr, exit status 2
    try:
        kernel = compile_kernel(args.expression, symmetric=symmetric)
        text = kernel.explain()
        source = kernel.source(args.source) if args.source else None
    except ValueError as error:  # parse, declaration and limit errors say what is wrong and where
        print(f"systec-gpu explain: {error}", file=sys.stderr)
        return 2
    print(text)
    if source is not None:
        print(source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

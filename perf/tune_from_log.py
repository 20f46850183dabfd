"""Rebuild perf/tune.py's table entries from its log (a run that ended before writing its table).

    python perf/tune_from_log.py LOG --device NAME --arch sm_90 --date YYYY-MM-DD [--table PATH]

The log names each section ("<kernel> <input> symmetry=<bool>") and, where a candidate beat the
heuristic by more than 3%, the chosen schedule with both timings ("table: {...} (a -> b ms)").
The table key (program digest, shape class) is recomputed here from the same catalog kernel and
the same inputs tune.py builds (perf/tune.py `tuning_inputs`, made on the CPU: the shape class
depends on sizes only). Registers are not in the log: the entries say so.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tune  # noqa: E402

from systec_gpu import schedule_table  # noqa: E402
from systec_gpu.backends.triton_launch import problem_shape  # noqa: E402
from systec_gpu.catalog import compile_catalog  # noqa: E402
from systec_gpu.runtime import bind  # noqa: E402

SECTION = re.compile(r"^\[\s*[\d.]+s\] (\w+) (.+) symmetry=(True|False)$")
CHOSEN = re.compile(r"^\[\s*[\d.]+s\]\s+table: (\{.*\}) \(([\d.]+) -> ([\d.]+) ms\)$")


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--device", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--date", required=True)
    parser.add_argument("--table", default=str(schedule_table.TABLE))
    options = parser.parse_args(argv)
    inputs = {(name, label): given for name, label, given in tune.tuning_inputs(False, torch.device("cpu"))}
    path = Path(options.table)
    table = json.loads(path.read_text()) if path.exists() else {"version": 1, "entries": []}
    entries = {(e["arch"], e["program"], e["shape_class"]): e for e in table["entries"]}
    section = None
    for line in Path(options.log).read_text().splitlines():
        if match := SECTION.match(line):
            section = match.group(1), match.group(2), match.group(3) == "True"
        elif (match := CHOSEN.match(line)) and section is not None:
            name, label, symmetry = section
            kernel = compile_catalog(name, backend="triton", symmetry=symmetry)
            given = inputs[(name, label)]
            given = given if symmetry else tune.expanded_inputs(given)
            shape = problem_shape(kernel.loops, bind(kernel.loops, kernel.program, given, check=False))
            schedule = ast.literal_eval(match.group(1))
            schedule_table.schedule_from_json(schedule)  # a legal schedule, or this raises
            entry = {"arch": options.arch, "program": schedule_table.program_key(kernel.loops),
                     "shape_class": schedule_table.shape_class(shape), "kernel": kernel.expression,
                     "symmetry": kernel.symmetrized.exploit, "schedule": schedule,
                     "ms": float(match.group(3)), "heuristic_ms": float(match.group(2)), "registers": None,
                     "device": options.device, "date": options.date, "input": label,
                     "source": f"{Path(options.log).name} (tune.py ended before writing its table)"}
            entries[(entry["arch"], entry["program"], entry["shape_class"])] = entry
            print(f"{name} {label} symmetry={symmetry}: {entry['shape_class']} {schedule}")
    tune.write_table(path, table, entries)
    print(f"wrote {len(table['entries'])} entries to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

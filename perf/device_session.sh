#!/usr/bin/env bash
# Everything a lent GPU should run, as one `run` call of the device tool (its $OUT comes back):
#
#   bash perf/device_session.sh [DATA_DIR]      # DATA_DIR: .npz files from perf/gpu_data.py (default .gpu_data)
#
# 1. perf/gpu_check.py: correctness of every catalog kernel vs the fp64 oracle, then the timings
#    (about 2-3 minutes on an H200; budget 240 s of sections);
# 2. the CUDA-only tests (pytest -m cuda; skipped on machines without a GPU);
# 3. perf/tune.py from the shipped table into $OUT/schedules.json (budget 150 s): copy it over
#    systec_gpu/data/schedules.json after reading its log.
# Give the call a timeout of about 600 s; each step has its own, so a hang costs one step only.
set -u
OUT=${OUT:?set OUT to the folder that comes back}
DATA=${1:-.gpu_data}
export PYTHONPATH=$PWD TRITON_DEFAULT_FP_FUSION=1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv | tee "$OUT/device.txt"
timeout 330 python perf/gpu_check.py --data "$DATA" --out "$OUT" --budget-s 240 2>&1 | tee "$OUT/gpu_check.log" | tail -60
timeout 90 python -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_cuda.log" | tail -5
cp systec_gpu/data/schedules.json "$OUT/schedules.json"
timeout 200 python perf/tune.py --table "$OUT/schedules.json" --budget-s 150 2>&1 | tee "$OUT/tune.log" | grep -v "^\[.*ms  " | tail -40

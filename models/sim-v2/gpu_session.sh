#!/usr/bin/env bash
# One GPU session for sim-v2, in one `device run` (timeout_s 600, carry [".whl"]; make .whl first,
# here, with models/fetch_wheels.sh):
#   1. models/sim-v1/gpu_train.sh with MODEL=sim-v2: simulate the data on every core, probe the
#      faster activation layout, fine-tune the bundled sim-v1 weights (train.yaml says so) until DEADLINE;
#   2. a full `casparks detect` of a 500 x 64 x 512 movie on the GPU, 3 times
#      (benchmarks/bench_detect.py: process start, model loading, I/O, post-processing included).
# Files in $OUT: weights.ckpt, run.tar.gz, last.ckpt.part-*, session.txt, train_console.txt,
# bench_detect_gpu.txt (7 of the 8 a call brings back). Then, here: models/sim-v2/README.md.
set -uo pipefail
export OUT=${OUT:-out} PYTHONUNBUFFERED=1
MODEL=sim-v2 MEMORY_FORMAT=${MEMORY_FORMAT:-probe} DEADLINE=${DEADLINE:-490} STEP_S=${STEP_S:-0.62} \
  bash models/sim-v1/gpu_train.sh
python3 -c "import monai" 2>/dev/null || export PYTHONPATH=/tmp/site
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
echo "== casparks detect on the GPU (bundled sim-v1: the same network as sim-v2) =="
timeout 75 python3 benchmarks/bench_detect.py --device cuda --repeats 3 2>&1 | grep -v Warning | tee "$OUT/bench_detect_gpu.txt"

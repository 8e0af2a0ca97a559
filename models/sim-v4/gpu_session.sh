#!/usr/bin/env bash
# One GPU session for sim-v4, in one `device run` (timeout_s 600, carry [".whl"]; make .whl first,
# here, with models/fetch_wheels.sh). It fits a drawn task's 15 minutes of device time with the
# machine's start (1-2 min):
#   1. models/sim-v1/gpu_train.sh with MODEL=sim-v4: simulate sim-v2's train, train-faint,
#      train-puffs and val sets on every core, then fine-tune the bundled sim-v3 with
#      models/sim-v4/train.yaml until DEADLINE (s from the start; training steps of ~STEP_S s);
#   2. the GPU speed of the default model: a full `casparks detect` of one 500 x 64 x 512 movie,
#      3 times, then of 5 movies in one command (benchmarks/bench_detect.py; process start, model
#      loading, I/O, post-processing and measurements included).
# Files in $OUT: weights.ckpt, run.tar.gz, last.ckpt.part-*, session.txt, train_console.txt,
# bench_detect_gpu.txt (7 of the 8 a call brings back). Then, here (models/sim-v4/README.md):
# calibrate weights.ckpt on the 29 validation movies, then the two test sets, against sim-v3.
set -uo pipefail
export OUT=${OUT:-out} PYTHONUNBUFFERED=1
MODEL=sim-v4 DATA=sim-v2 SETS="train train-faint train-puffs train-texture val" MEMORY_FORMAT=${MEMORY_FORMAT:-auto} \
  DEADLINE=${DEADLINE:-450} STEP_S=${STEP_S:-0.62} PROBE_DEVICE=${PROBE_DEVICE:-cuda} \
  bash models/sim-v1/gpu_train.sh
python3 -c "import monai" 2>/dev/null || export PYTHONPATH=/tmp/site
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
BENCH_DEVICE=${BENCH_DEVICE:-cuda}
echo "== casparks detect on $BENCH_DEVICE (the default model, sim-v3) =="
{ timeout 60 python3 benchmarks/bench_detect.py --device "$BENCH_DEVICE" --repeats 3
  timeout 60 python3 benchmarks/bench_detect.py --device "$BENCH_DEVICE" --repeats 1 --movies 5
} 2>&1 | grep -v Warning | tee "$OUT/bench_detect_gpu.txt"

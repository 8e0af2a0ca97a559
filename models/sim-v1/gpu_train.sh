#!/usr/bin/env bash
# Train the bundled model sim-v1 on a GPU machine, from scratch, in one go (about 9 minutes on one H100):
# simulate its data (models/sim-v1/data.yaml), time a training step, set run.train_epochs to fit
# TRAIN_SECONDS, train (models/sim-v1/train.yaml), test on the held-out set, and put the results in
# ${OUT:-out}/. MONAI is taken from .whl/ when it is not installed (machines with no network).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out}; mkdir -p "$OUT"
TRAIN_SECONDS=${TRAIN_SECONDS:-330}
if ! python3 -c "import monai" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c "import torch, monai, pytorch_lightning as pl; print('torch', torch.__version__, 'monai', monai.__version__, 'lightning', pl.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/machine.txt"
start=$(date +%s)
OMP_NUM_THREADS=1 python3 models/sim-v1/make_data.py --out data/sim-v1 --workers "$(nproc)"
echo "data: $(( $(date +%s) - start )) s"
python3 benchmarks/bench_train.py --config models/sim-v1/train.yaml --device cuda --bf16 --frames 128 --height 64 \
  --width 512 --batch 8 --steps 10 --mode step | tee "$OUT/bench_train_gpu.txt"
step_s=$(awk '$1 == "step" {print $2}' "$OUT/bench_train_gpu.txt")
steps=$(python3 -c "print(int($TRAIN_SECONDS / (1.25 * $step_s)) // 50 * 50)")
echo "GPU step ${step_s} s -> run.train_epochs ${steps}"
python3 -m casparks train models/sim-v1/train.yaml --set run.train_epochs="$steps" --set run.testing=true \
  ${EXTRA_SETS:-} 2>&1 | grep -v "it/s\]" | tee "$OUT/train_console.txt" || true
run=runs/sim-v1
python3 - "$run" "$OUT" <<'PY'
import sys, torch, pathlib
run, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
torch.save({"state_dict": ckpt["state_dict"], "casparks": ckpt["casparks"]}, out / "weights.ckpt")
print("step", ckpt["casparks"].get("step"), "weights-only checkpoint:", (out / "weights.ckpt").stat().st_size, "bytes")
PY
tar czf "$OUT/run.tar.gz" -C "$run" config.yaml metrics.csv logs/train.log $(cd "$run" && ls test_metrics.json 2>/dev/null)
split -b 15m "$run/checkpoints/last.ckpt" "$OUT/last.ckpt.part-"
echo "total: $(( $(date +%s) - start )) s"

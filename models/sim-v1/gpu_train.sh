#!/usr/bin/env bash
# Train a bundled model (MODEL, default sim-v1) on a GPU machine within DEADLINE seconds (default
# 540): simulate its data (models/$MODEL/data.yaml), train (models/$MODEL/train.yaml) with
# run.train_epochs = the training time left / STEP_S (the expected seconds per step) and
# run.max_minutes as a hard stop, and put the results in ${OUT:-out}/: weights.ckpt (weights
# only), run.tar.gz (config, metrics, log), last.ckpt.part-* (full checkpoint), session.txt (GPU,
# versions, probe) and train_console.txt: 6 files, so a device call's 8 files leave 2 for more.
#
#   INIT=sim-v1         start from these weights (a bundled model, a .ckpt file or a run folder:
#                       run.load_run_name with run.load_mode=finetune) instead of from scratch,
#                       so that short GPU sessions add up
#   MEMORY_FORMAT=probe time 3 training steps in each activation layout (contiguous,
#                       channels_last; benchmarks/bench_train.py, forward/loss/backward split) and
#                       train in the faster one; or contiguous, channels_last, auto (the default)
#   EXTRA_SETS="--set KEY=VALUE ..."  more overrides for casparks train
#   DATA=sim-v2         the data recipe (models/$DATA/data.yaml) and folder (data/$DATA) when
#                       they are another model's (default: $MODEL's own)
#   SETS="train val"    the recipe's sets to make (train.yaml's data_dir and val_dir must be among them)
#
# MONAI is taken from .whl/ when it is not installed (make it with models/fetch_wheels.sh here,
# carry .whl). The data sets are made on all cores, each once (data/$DATA/SET/.complete).
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
start=$(date +%s)
OUT=${OUT:-out}; mkdir -p "$OUT"
DEADLINE=${DEADLINE:-540}; STEP_S=${STEP_S:-0.55}; MODEL=${MODEL:-sim-v1}; DATA=${DATA:-$MODEL}; SETS=${SETS:-train val}
MEMORY_FORMAT=${MEMORY_FORMAT:-auto}; PROBE_DEVICE=${PROBE_DEVICE:-cuda}; EXTRA_SETS=${EXTRA_SETS:-}
if ! python3 -c "import monai" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"; } | tee "$OUT/session.txt"
python3 -c "import torch, monai, pytorch_lightning as pl; print('torch', torch.__version__, 'monai', monai.__version__, 'lightning', pl.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/session.txt"
missing=$(for set in $SETS; do [ -f "data/$DATA/$set/.complete" ] || echo "$set"; done)
if [ -n "$missing" ]; then
  OMP_NUM_THREADS=1 python3 models/sim-v1/make_data.py --recipe "models/$DATA/data.yaml" --out "data/$DATA" \
    --workers "$(nproc)" --sets $missing || exit 1
  for set in $missing; do touch "data/$DATA/$set/.complete"; done
fi
echo "data ready after $(( $(date +%s) - start )) s"

if [ "$MEMORY_FORMAT" = probe ]; then
  read -r frames height width batch < <(python3 -c "
from casparks.config import load_config
d = load_config('models/$MODEL/train.yaml').data
print(d.data_duration, 64, 512, d.batch_size)")
  best=auto; best_s=1e9
  for format in contiguous channels_last; do
    seconds=$(timeout 120 python3 benchmarks/bench_train.py --config "models/$MODEL/train.yaml" --mode step --bf16 \
      --device "$PROBE_DEVICE" --frames "$frames" --height "$height" --width "$width" --batch "$batch" --steps 3 \
      --memory-format "$format" 2>&1 | tee -a "$OUT/session.txt" | awk '/^step /{print $2}')
    echo "probe: $format ${seconds:-failed} s/step"
    if [ -n "$seconds" ] && python3 -c "import sys; sys.exit(0 if $seconds < $best_s else 1)"; then
      best=$format; best_s=$seconds; STEP_S=$seconds
    fi
  done
  MEMORY_FORMAT=$best
  echo "probe done after $(( $(date +%s) - start )) s: training with memory_format $MEMORY_FORMAT, ~$STEP_S s/step"
fi
[ -n "${INIT:-}" ] && EXTRA_SETS="--set run.load_run_name=$INIT --set run.load_mode=finetune $EXTRA_SETS"

elapsed=$(( $(date +%s) - start ))
left=$(( DEADLINE - elapsed - 25 ))                      # seconds for the training command
# 75 s of the training command go to start-up (label preparation, resampling) and the last save
read -r steps minutes < <(python3 -c "t=$left-75; print(max(int(t/$STEP_S)//50*50, 50), round(t/60, 2))")
echo "training for at most ${minutes} min, run.train_epochs ${steps}"
timeout "$left" python3 -m casparks train "models/$MODEL/train.yaml" --set run.train_epochs="$steps" \
  --set run.max_minutes="$minutes" --set run.testing=false --set run.save_every=100 --set run.test_every=100000 \
  --set run.memory_format="$MEMORY_FORMAT" $EXTRA_SETS > "$OUT/train_console.txt" 2>&1
echo "train exit $? after $(( $(date +%s) - start )) s"
run=${RUN_DIR:-runs/$MODEL}
python3 - "$run" "$OUT" <<'PY'
import sys, torch, pathlib
run, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ckpts = sorted((run / "checkpoints").glob("step_*.ckpt"))
ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
torch.save({"state_dict": ckpt["state_dict"], "casparks": ckpt["casparks"]}, out / "weights.ckpt")
print("step", ckpt["casparks"].get("step"), "from", ckpts[-1].name, (out / "weights.ckpt").stat().st_size, "bytes")
PY
tar czf "$OUT/run.tar.gz" -C "$run" config.yaml $(cd "$run" && ls metrics.csv logs/train.log 2>/dev/null)
last=$(ls "$run"/checkpoints/step_*.ckpt | tail -1); split -b 15m "$last" "$OUT/last.ckpt.part-"
grep -E "validation|step .*loss" "$OUT/train_console.txt" | tail -5
echo "total: $(( $(date +%s) - start )) s"

"""Accuracy after a fixed training budget on held-out simulated movies, per network candidate.

    python benchmarks/bench_accuracy.py [--steps 150] [--frames 64] [--width 256] [--batch 2]
                                        [--precision 32|bf16-mixed]
                                        [--candidates d3f8 d4f8t2 d4f16] [--work DIR]

For each candidate network (overrides of configs/default.yaml) the script trains with
``casparks.train`` on simulated movies (presets default, noisy, dense; seeds 1..), validates on
two other movies, and scores three held-out movies (new seeds) with whole-movie inference and the
one-to-one and reference metrics. It prints and returns, per candidate: parameters, seconds per
step, and per-class one-to-one F1 / voxel IoU on the test movies. Same data, seed and budget for
every candidate, so differences come from the network (within the noise of one seed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CANDIDATES = {
    # name: network overrides of configs/default.yaml
    "d3f8": {"network.unet_steps": 3, "network.first_layer_channels": 8},
    "d4f8": {"network.unet_steps": 4, "network.first_layer_channels": 8},  # the default since 2026-12-04
    "d4f8t2": {"network.unet_steps": 4, "network.first_layer_channels": 8, "network.time_pooling_steps": 2},
    "d4f16": {"network.unet_steps": 4, "network.first_layer_channels": 16},
    "d5f8": {"network.unet_steps": 5, "network.first_layer_channels": 8},
}


def simulate(folder: Path, presets: list[str], first_seed: int, frames: int, width: int) -> None:
    from casparks.simulate import load_simulation_config, simulate_dataset

    for i, preset in enumerate(presets):
        config = load_simulation_config(preset, {"n_frames": frames * 3, "height_px": 64, "width_px": width})
        simulate_dataset(folder, n_movies=1, seed=first_seed + i, config=config, first_id=i + 1, previews=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--frames", type=int, default=64, help="chunk length (movies are 3× as long)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--candidates", nargs="+", default=["d3f8", "d4f8t2", "d4f16"], choices=sorted(CANDIDATES))
    parser.add_argument("--precision", default="32", choices=("32", "bf16-mixed"), help="run.precision")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()

    import torch

    from casparks.config import load_config
    from casparks.nn import build_network, count_parameters
    from casparks.training import train

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    work = args.work or Path(tempfile.mkdtemp(prefix="casparks-accuracy-"))
    data = {name: work / name for name in ("train", "val", "test")}
    if not data["train"].exists():
        simulate(data["train"], ["default", "noisy", "dense", "default", "waves", "default"], 100, args.frames, args.width)
        simulate(data["val"], ["default", "dense"], 200, args.frames, args.width)
        simulate(data["test"], ["default", "noisy", "dense"], 300, args.frames, args.width)
    results = {}
    for name in args.candidates:
        overrides = {
            **CANDIDATES[name],
            "run.run_name": name, "run.output_dir": str(work / "runs"), "run.train_epochs": args.steps,
            "run.save_every": args.steps, "run.test_every": args.steps, "run.print_every": 10,
            "run.testing": True, "run.device": "cpu", "run.precision": args.precision,
            "data.data_dir": [str(data["train"])], "data.val_dir": [str(data["val"])],
            "data.test_dir": [str(data["test"])], "data.data_duration": args.frames, "data.data_step": args.frames // 2,
            "data.batch_size": args.batch, "data.num_workers": 0, "data.ignore_frames_loss": 4,
        }
        config = load_config(REPO / "configs" / "default.yaml", list(overrides.items()))
        start = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - start
        scores = result.test_metrics or {}
        classes = scores.get("classes", {})
        results[name] = {
            "parameters": count_parameters(build_network(config.network)),
            "seconds_per_step": seconds / args.steps,
            "f1_one_to_one": {c: v["one_to_one"]["f1"] for c, v in classes.items()},
            "f1_reference": {c: v["reference"]["f1"] for c, v in classes.items()},
            "voxel_iou": {c: v["voxel_iou"] for c, v in classes.items()},
        }
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

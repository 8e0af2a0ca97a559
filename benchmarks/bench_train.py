"""Training throughput on this machine: chunks/s and frames/s of the default config's network.

    python benchmarks/bench_train.py [--config configs/default.yaml] [--set KEY=VALUE ...] [--frames 64] [--height 64]
                                     [--width 512] [--batch 1] [--steps 4] [--mode both|step|engine]
                                     [--memory-format contiguous|channels_last]

Two measurements, both with the network, loss and optimiser of ``--config`` (Adam, its criterion,
class weights 1), on chunks of ``--frames`` × ``--height`` × ``--width`` voxels, ``--batch`` chunks
per step, on ``--device`` (cpu or cuda), in float32 or with ``--bf16`` autocast, with activations
in ``--memory-format`` (default contiguous; ``channels_last`` = channels-last 3-D, what
``run.memory_format: auto`` picks on the CPU):

* ``step``: one optimisation step (forward, loss, backward, Adam) on a random chunk, without data
  loading: the median of ``--steps`` steps after one warm-up step, and the median time of each
  part (forward, loss, backward + Adam; the device is synchronised between parts).
* ``engine``: ``casparks.training.train`` end to end (Lightning trainer, data loading from
  memory-mapped simulated movies, pre-processing, augmentation, logging) on two
  simulated training movies (a third validates once, after the timed steps) of 2 × ``--frames`` frames; the time per step is taken from the time stamps of
  the per-step lines of the run's ``logs/train.log`` (first step excluded: warm-up), so movie
  simulation, label preparation and start-up are not counted.

Prints one line per measurement with seconds per step, chunks/s and frames/s
(frames/s = batch × frames / seconds per step).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def report(name: str, seconds: float, batch: int, frames: int) -> None:
    print(f"{name:8s} {seconds:8.2f} s/step  {batch / seconds:8.4f} chunks/s  {batch * frames / seconds:8.2f} frames/s",
          flush=True)


def bench_step(config, frames: int, height: int, width: int, batch: int, steps: int, bf16: bool = False,
               device: str = "cpu", channels_last: bool = False) -> tuple[float, dict[str, float]]:
    """Median seconds per step, and the median seconds of its parts (forward, loss, backward +
    Adam), each part timed after the device finished the previous one."""
    from casparks.losses import build_loss
    from casparks.nn import build_network

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device != "cpu"  # as training does on a GPU
    network = build_network(config.network).to(device)
    criterion = build_loss(config.loss, torch.ones(4)).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.loss.lr_start)
    x = torch.randn(batch, 1, frames, height, width, device=device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 4, (batch, frames, height, width), device=device)

    def now() -> float:
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter()

    times, parts = [], {"forward": [], "loss": [], "backward+adam": []}
    for i in range(steps + 1):
        start = now()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = network(x)
        forward = now()
        loss = criterion(logits.float(), y)
        lossed = now()
        loss.backward()
        optimizer.step()
        end = now()
        if i:  # the first step is a warm-up
            times.append(end - start)
            for name, seconds in zip(parts, (forward - start, lossed - forward, end - lossed)):
                parts[name].append(seconds)
    return statistics.median(times), {name: statistics.median(v) for name, v in parts.items()}


def bench_engine(config_path: Path, frames: int, height: int, width: int, batch: int, steps: int,
                 device: str = "cpu", bf16: bool = False, workers: int = 0, memory_format: str = "contiguous",
                 overrides: list[tuple[str, str]] = ()) -> float:
    from casparks.config import load_config
    from casparks.simulate import load_simulation_config, simulate_dataset
    from casparks.training import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = load_simulation_config("default", {"n_frames": 2 * frames, "height_px": height, "width_px": width})
        simulate_dataset(root / "sim", n_movies=3, seed=0, config=sim, previews=False)
        config = load_config(config_path, list(overrides) + list({
            "data.data_dir": [str(root / "sim")], "data.val_ids": ["03"], "data.val_dir": [], "data.test_dir": [],
            "data.data_duration": frames, "data.data_step": frames, "data.batch_size": batch,
            "data.num_workers": workers, "data.ignore_frames_loss": min(6, frames // 4),
            "run.output_dir": str(root / "runs"), "run.run_name": "bench", "run.train_epochs": steps + 1,
            "run.save_every": steps + 1, "run.test_every": 10 * (steps + 1), "run.print_every": 1,
            "run.device": device, "run.precision": "bf16-mixed" if bf16 else "32", "run.testing": False,
            "run.memory_format": memory_format,
        }.items()))
        train(config)
        text = (root / "runs" / "bench" / "logs" / "train.log").read_text()
    stamps = [datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for m in re.finditer(r"^(\S+ \S+) casparks\.train(?:ing)? INFO: step \d+/\d+: loss", text, re.MULTILINE)]
    if len(stamps) < 2:
        raise RuntimeError("the run logged fewer than two steps")
    return (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--mode", choices=("both", "step", "engine"), default="both")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (mixed precision)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="engine mode: data-loading worker processes")
    parser.add_argument("--memory-format", choices=("contiguous", "channels_last"), default="contiguous")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides, as casparks train --set (e.g. network.first_layer_channels=16)")
    args = parser.parse_args()
    overrides = [tuple(item.split("=", 1)) for item in args.set]

    from casparks.config import load_config
    from casparks.nn import build_network, count_parameters

    config = load_config(args.config, overrides)
    n_params = count_parameters(build_network(config.network))
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}{gpu}, {'bf16 autocast' if args.bf16 else 'float32'}, {args.memory_format}",
          flush=True)
    print(f"# {args.config.name}: unet_steps {config.network.unet_steps}, first_layer_channels "
          f"{config.network.first_layer_channels}, {config.network.batch_normalization} norm, {n_params:,} parameters, "
          f"criterion {config.loss.criterion}", flush=True)
    print(f"# chunk {args.frames} × {args.height} × {args.width}, batch {args.batch}", flush=True)
    print(f"# load average at start: {os.getloadavg()[0]:.2f} (other processes compete for the cores above 0)",
          flush=True)
    if args.mode in ("both", "step"):
        seconds, parts = bench_step(config, args.frames, args.height, args.width, args.batch, args.steps, args.bf16,
                                    args.device, args.memory_format == "channels_last")
        report("step", seconds, args.batch, args.frames)
        print("# parts of a step: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()), flush=True)
    if args.mode in ("both", "engine"):
        report("engine", bench_engine(args.config, args.frames, args.height, args.width, args.batch, args.steps,
                            args.device, args.bf16, args.workers, args.memory_format, overrides),
               args.batch, args.frames)
    print(f"# load average at end: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()

"""Time candidate U-Nets on this CPU: training step (forward + backward) and inference forward.

    python benchmarks/bench_networks.py [--repeats 3] [--chunk 64 64 128] [--inference 256 64 512]
                                        [--only NAME ...] [--loss sum_losses] [--threads N]

For each configuration prints the parameter count, the time of a forward + backward pass (with
the loss) on a 1 × 1 × T × Y × X chunk after one warm-up pass (best wall-clock time, and median
process CPU time, which other jobs on a shared machine disturb less), the growth of the peak
resident memory during training (each configuration runs in its own process), and, with
``--inference``, the time of one no-grad forward pass on a larger movie (skipped for
configurations whose training step took more than ``--inference-limit`` CPU seconds). A chunk that
is not a multiple of the network's input multiple is padded inside the network (column "runs on").
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import platform
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from casparks.config import LossConfig, NetworkConfig
from casparks.losses import build_loss
from casparks.nn import build_network, count_parameters, input_multiple

REFERENCE = NetworkConfig(unet_steps=6, first_layer_channels=8, batch_normalization="none")
DEFAULT = NetworkConfig()  # unet_steps=4, first_layer_channels=16, batch norm

CANDIDATES: dict[str, NetworkConfig] = {
    "reference d6 f8": REFERENCE,
    "d6 f8 tpool2": dataclasses.replace(REFERENCE, time_pooling_steps=2),
    "d6 f8 TR2": dataclasses.replace(REFERENCE, temporal_reduction=True),
    "d5 f8": dataclasses.replace(REFERENCE, unet_steps=5),
    "d4 f8": dataclasses.replace(REFERENCE, unet_steps=4),
    "d3 f8": dataclasses.replace(REFERENCE, unet_steps=3),
    "d3 f16": dataclasses.replace(REFERENCE, unet_steps=3, first_layer_channels=16),
    "d4 f16": dataclasses.replace(REFERENCE, unet_steps=4, first_layer_channels=16),
    "d4 f16 tpool2": dataclasses.replace(REFERENCE, unet_steps=4, first_layer_channels=16, time_pooling_steps=2),
    "d4 f16 TR2": dataclasses.replace(REFERENCE, unet_steps=4, first_layer_channels=16, temporal_reduction=True),
    "d4 f16 batchnorm (default)": DEFAULT,
    "d5 f16": dataclasses.replace(REFERENCE, unet_steps=5, first_layer_channels=16),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_training_step(model, loss, shape, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each training step (after one warm-up step)."""
    model.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 1, *shape), generator=g)
    target = torch.randint(0, 5, (1, *shape), generator=g)
    wall, cpu = [], []
    for k in range(repeats + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.zero_grad(set_to_none=True)
        loss(model(x), target).backward()
        if k:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def time_inference(model, shape) -> tuple[float, float]:
    model.eval()
    x = torch.randn((1, 1, *shape), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        start, start_cpu = time.perf_counter(), time.process_time()
        model(x)
        return time.perf_counter() - start, time.process_time() - start_cpu


def bench(name: str, chunk: tuple[int, int, int], inference: tuple[int, int, int] | None, repeats: int,
          criterion: str, inference_limit: float, threads: int | None = None) -> str:
    """One table row; runs in its own process so that the peak memory is this network's."""
    if threads:
        torch.set_num_threads(threads)
    config = CANDIDATES[name]
    loss = build_loss(LossConfig(criterion=criterion, class_weights="none"))
    torch.manual_seed(0)
    model = build_network(config)
    baseline = peak_rss_mb()
    wall, cpu = time_training_step(model, loss, chunk, repeats)
    padded = tuple(-(-n // m) * m for n, m in zip(chunk, input_multiple(config)))
    row = (f"| {name} | {count_parameters(model):,} | {padded} | {min(wall):.2f} | "
           f"{statistics.median(cpu):.2f} | {peak_rss_mb() - baseline:.0f} |")
    if inference:
        if statistics.median(cpu) <= inference_limit:
            inf_wall, inf_cpu = time_inference(model, inference)
            row += f" {inf_wall:.1f} | {inf_cpu:.1f} |"
        else:
            row += " – | – |"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, nargs=3, default=[64, 64, 128], metavar=("T", "Y", "X"))
    parser.add_argument("--inference", type=int, nargs=3, default=None, metavar=("T", "Y", "X"))
    parser.add_argument("--inference-limit", type=float, default=20.0)
    parser.add_argument("--only", nargs="*", default=None, help="names of candidates to run")
    parser.add_argument("--loss", default="sum_losses")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; chunk {tuple(args.chunk)}, loss {args.loss}, median of {args.repeats}")
    header = ("| configuration | parameters | runs on (T,Y,X) | train step wall, best (s) | "
              "train step CPU, median (s) | train memory (MB) |")
    if args.inference:
        header += f" inference {tuple(args.inference)} wall (s) | inference CPU (s) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    spawn = multiprocessing.get_context("spawn")
    for name in CANDIDATES:
        if args.only and name not in args.only:
            continue
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            row = pool.submit(bench, name, tuple(args.chunk), tuple(args.inference) if args.inference else None,
                              args.repeats, args.loss, args.inference_limit, args.threads).result()
        print(row, flush=True)


if __name__ == "__main__":
    main()

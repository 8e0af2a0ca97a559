"""A full ``casparks detect`` of one movie, as a user runs it: wall time and peak memory.

    python benchmarks/bench_detect.py [--frames 500 --height 64 --width 512] [--repeats 3]
                                      [--device cpu] [--precision auto|bf16|32] [--window 256]
                                      [--movies N | --concat N] [--pipeline auto|on|off]

Simulates one default-preset movie (seed 0, not timed), then runs ``casparks detect MOVIE --out
DIR --overwrite`` in a fresh process ``--repeats`` times: process start, model loading, TIFF
reading, inference, post-processing, measurements and writing every output are all counted.
Reports the median wall time, the stage timings from ``<stem>_detection.json`` and the peak
resident memory of the detect process (``ru_maxrss`` of the child).

``--movies N`` simulates N movies (seeds 0..N-1 of one data set) and gives them all to one
``casparks detect``, as a physiologist runs a folder: the process starts and imports once, so
besides the wall time it reports the time per movie (wall / N: everything, start-up shared) and
each movie's own ``total`` (``casparks.detect``: statistics, inference, post-processing,
measurements; not reading and writing), the first movie (cold: first allocations, oneDNN
kernels built) apart from the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def concatenate(root: Path, first: Path, config, n: int) -> Path:
    """Write N simulated movies back to back as one uncompressed (memory-mappable) TIFF."""
    import numpy as np
    import tifffile

    from casparks.io import read_movie
    from casparks.simulate import simulate_movie

    head = read_movie(first)
    t, y, x = head.shape
    path = root / "long_video.tif"
    out = tifffile.memmap(path, shape=(n * t, y, x), dtype=head.data.dtype, imagej=True,
                          resolution=(1 / head.pixel_size_um, 1 / head.pixel_size_um),
                          metadata={"axes": "TYX", "unit": "um", "finterval": head.frame_interval_ms / 1000})
    out[:t] = np.asarray(head.data)
    for i in range(1, n):
        out[i * t:(i + 1) * t] = np.asarray(simulate_movie(config, seed=[i, 1]).movie.data)
    out.flush()
    del out
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "32"))
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--concat", type=int, default=1, metavar="N",
                        help="a long movie: N simulated movies (seeds 0..N-1) one after the other, memory-mapped")
    parser.add_argument("--movies", type=int, default=1, metavar="N",
                        help="N simulated movies (seeds 0..N-1) in one casparks detect, as a folder is run")
    parser.add_argument("--pipeline", choices=("auto", "on", "off"), default="auto",
                        help="casparks detect --pipeline / --no-pipeline (auto: neither flag, the default: on)")
    args = parser.parse_args()
    if args.movies > 1 and args.concat > 1:
        parser.error("--movies and --concat are exclusive")

    from casparks.simulate import load_simulation_config, simulate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = load_simulation_config("default", {"n_frames": args.frames, "height_px": args.height,
                                                   "width_px": args.width})
        movies = simulate_dataset(root / "sim", args.movies, seed=0, config=config, previews=False)
        if args.concat > 1:
            movies = [concatenate(root, movies[0], config, args.concat)]
        command = [sys.executable, "-m", "casparks", "detect", *map(str, movies), "--out", str(root / "out"),
                   "--overwrite", "--device", args.device, "--precision", args.precision]
        if args.window:
            command += ["--window", str(args.window)]
        if args.pipeline != "auto":
            command += ["--pipeline" if args.pipeline == "on" else "--no-pipeline"]
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
        print(f"# {len(movies)} movie(s) of {args.concat * args.frames} × {args.height} × {args.width}; command: "
              f"casparks detect {'MOVIE' if len(movies) == 1 else 'MOVIES'} --out DIR "
              f"--overwrite --device {args.device} --precision {args.precision}"
              + (f" --window {args.window}" if args.window else "")
              + {"auto": "", "on": " --pipeline", "off": " --no-pipeline"}[args.pipeline])
        walls, stages, later = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
            summaries = [json.loads((root / "out" / f"{m.name[:-4]}_detection.json").read_text()) for m in movies]
            stages.append(summaries[0]["timings_s"])
            later += [s["timings_s"]["total"] for s in summaries[1:]]
            print(f"run: {walls[-1]:.2f} s wall; stages {summaries[0]['timings_s']}; counts {summaries[0]['counts']}"
                  + (f"; {walls[-1] / len(movies):.2f} s per movie, the other movies' totals "
                     f"{[round(s['timings_s']['total'], 2) for s in summaries[1:]]}" if len(movies) > 1 else ""),
                  flush=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        median = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
        print(f"median wall {statistics.median(walls):.2f} s (min {min(walls):.2f}); median stages "
              + ("of the first movie " if len(movies) > 1 else "")
              + ", ".join(f"{k} {v:.2f} s" for k, v in median.items()) + f"; peak memory {peak:.0f} MB")
        if later:
            print(f"{len(movies)} movies: median {statistics.median(walls) / len(movies):.2f} s per movie (wall / N); "
                  f"the other movies' totals median {statistics.median(later):.2f} s (min {min(later):.2f}, "
                  f"max {max(later):.2f})")


if __name__ == "__main__":
    main()

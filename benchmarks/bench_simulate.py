"""Time the simulator on default-size movies (500 × 64 × 512 px).

    python benchmarks/bench_simulate.py [--repeats 3] [--preset default]

Prints the time to simulate one movie in memory, to simulate and write it (TIFFs + CSV), and to
write its preview; the median over the repeats (different movies) is reported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from casparks.simulate import load_simulation_config, simulate_dataset, simulate_movie, write_preview


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    config = load_simulation_config(args.preset, {})
    memory, written, preview = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            start = time.perf_counter()
            sim = simulate_movie(config, seed=[0, k + 1])
            memory.append(time.perf_counter() - start)
            start = time.perf_counter()
            simulate_dataset(Path(tmp) / "w", 1, seed=0, config=config, first_id=k + 1, previews=False)
            written.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_preview(Path(tmp) / f"{k}.png", sim)
            preview.append(time.perf_counter() - start)
            print(f"movie {k + 1}: {len(sim.events)} events ({int(sim.events['labelled'].sum())} labelled); "
                  f"simulate {memory[-1]:.2f} s, simulate+write {written[-1]:.2f} s, preview {preview[-1]:.2f} s")
    shape = (config.n_frames, config.height_px, config.width_px)
    print(f"{platform.processor() or platform.machine()}, preset {args.preset}, movie {shape}")
    print(f"median: simulate {statistics.median(memory):.2f} s, simulate+write {statistics.median(written):.2f} s, "
          f"preview {statistics.median(preview):.2f} s")


if __name__ == "__main__":
    main()

"""Is the cell that frequencies are divided by the cell? `measure.cell_mask` against the simulator's.

    python benchmarks/bench_cell.py [--movies 48] [--frames 120]

Frequencies per 100 µm per s and per 1000 µm² per s need the cell's length along x and its area.
Detection finds the cell in the movie's resting image (the median of 64 frames spread over the
movie, less the dark level). This script simulates movies of the default preset at three
samplings, finds the cell with the true dark level and with 0 (a dark level that could not be
read), and compares it with the simulator's cell (its soft mask ≥ 0.5): overlap (IoU), relative
error of the area and of the length along x, and the field's own error (what the frequencies used
before). Prints one table; the time is that of `resting_image` + `cell_mask` per movie.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from casparks.measure import cell_mask, resting_image
from casparks.simulate import load_simulation_config, simulate_movie

GEOMETRIES = {
    "0.2 µm, 64 × 512 px": {},
    "0.1 µm, 128 × 1024 px": {"pixel_size_um": 0.1, "height_px": 128, "width_px": 1024},
    "0.3 µm, 43 × 341 px": {"pixel_size_um": 0.3, "height_px": 43, "width_px": 341},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=48, help="movies at the reference sampling (a third at the others)")
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    rows = []
    for geometry, override in GEOMETRIES.items():
        n = args.movies if not override else max(1, args.movies // 3)
        for seed in range(100, 100 + n):
            sim = simulate_movie(load_simulation_config("default", {"n_frames": args.frames, **override}), seed=[seed, 5])
            truth, px = sim.cell_mask, sim.movie.pixel_size_um
            for offset_name, offset in (("true", sim.offset_adu), ("0", 0.0)):
                start = time.perf_counter()
                found = cell_mask(resting_image(sim.movie, offset), px)
                rows.append({"geometry": geometry, "dark level": offset_name, "seconds": time.perf_counter() - start,
                             "iou": (found & truth).sum() / (found | truth).sum(),
                             "area_error": found.sum() / truth.sum() - 1,
                             "length_error": found.any(0).sum() / truth.any(0).sum() - 1,
                             "field_area_error": truth.size / truth.sum() - 1})
    table = pd.DataFrame(rows)
    summary = table.groupby(["geometry", "dark level"], sort=False).agg(
        movies=("iou", "size"), iou_min=("iou", "min"), iou_median=("iou", "median"),
        area_error_median=("area_error", "median"), area_error_max_abs=("area_error", lambda v: v.abs().max()),
        length_error_max_abs=("length_error", lambda v: v.abs().max()),
        field_area_error_mean=("field_area_error", "mean"), field_area_error_max=("field_area_error", "max"),
        seconds_median=("seconds", "median"))
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(summary.round(4).to_string())


if __name__ == "__main__":
    main()

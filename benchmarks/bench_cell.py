"""Is the cell that frequencies are divided by the cell? `measure.cell_mask` against the simulator's.

    python benchmarks/bench_cell.py [--movies 48] [--frames 120]
    python benchmarks/bench_cell.py --hard [--movies 8]

Frequencies per 100 µm per s and per 1000 µm² per s need the cell's length along x and its area.
Detection finds the cell in the movie's resting image (the median of 64 frames spread over the
movie, less the dark level). This script simulates movies of the default preset at three
samplings, finds the cell with the true dark level and with 0 (a dark level that could not be
read), and compares it with the simulator's cell (its soft mask ≥ 0.5): overlap (IoU), relative
error of the area and of the length along x, and the field's own error (what the frequencies used
before). Prints one table; the time is that of `resting_image` + `cell_mask` per movie.

``--hard``: the cases two reviewers broke a first version with, at the reference sampling and
the true dark level: a tall field (160 rows) with a narrow cell and background at 5-30 % of the
cell's F0, strong unevenness, an illumination gradient, narrow cells, and a square object of
3-10 times the cell's level pasted into the resting image (outside the cell where there is room;
inside it, and then part of the truth, where the cell fills the field); and a background that
varies across the field: a stray-light ramp added to the resting image, or an illumination
gradient over a bright background.
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


HARD = {
    **{f"160 rows, cell 10-14 µm, background {b:.0%}": {"height_px": 160, "cell_width_um": [10.0, 14.0],
                                                         "background_fraction": b} for b in (0.05, 0.12, 0.18, 0.22, 0.30)},
    "unevenness 0.15-0.2": {"unevenness": [0.15, 0.2], "unevenness_scale_um": [5.0, 15.0]},
    "unevenness 0.25-0.3, 5-8 µm": {"unevenness": [0.25, 0.3], "unevenness_scale_um": [5.0, 8.0]},
    "illumination gradient 0.5": {"illumination_gradient": 0.5},
    "cells 8-10 µm wide": {"cell_width_um": [8.0, 10.0]},
    **{f"object {size} px at {times}×": {"object": (times, size)} for times, size in ((3, 16), (6, 16), (10, 12), (6, 40))},
    # a background that varies across the field (session 23)
    **{f"stray-light ramp 0-{r:.0%} of F0, {h} rows": {"height_px": h, "ramp": r, **({"cell_width_um": [10.0, 14.0]} if h > 64 else {})}
       for r in (0.2, 0.4) for h in (64, 160)},
    **{f"illumination gradient {g}, background {b:.0%}, {h} rows": {
        "height_px": h, "illumination_gradient": g, "background_fraction": b, **({"cell_width_um": [10.0, 14.0]} if h > 64 else {})}
       for g, b in ((0.5, 0.2), (0.7, 0.25)) for h in (64, 160)},
}


def _with_ramp(resting: np.ndarray, truth: np.ndarray, amount: float, seed: int) -> np.ndarray:
    """Stray light rising linearly across the field in a random direction, from 0 to ``amount``
    of the cell's median resting level."""
    angle = np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi)
    y, x = np.mgrid[0 : resting.shape[0], 0 : resting.shape[1]].astype(np.float64)
    along = np.cos(angle) * x + np.sin(angle) * y
    along = (along - along.min()) / np.ptp(along)
    return (resting + amount * float(np.median(resting[truth])) * along).astype(np.float32)


def _with_object(resting: np.ndarray, truth: np.ndarray, times: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A square of ``times`` the cell's median resting level: outside the cell where it fits."""
    level = float(np.median(resting[truth]))
    room = np.argwhere(~truth) if np.count_nonzero(~truth) > size * size else np.argwhere(truth)
    y, x = room[len(room) // 2]
    y = min(max(y - size // 2, 0), resting.shape[0] - size)
    x = min(max(x - size // 2, 0), resting.shape[1] - size)
    resting, truth = resting.copy(), truth.copy()
    truth[y:y + size, x:x + size] = truth[y, x]
    resting[y:y + size, x:x + size] = times * level
    return resting, truth


def hard_cases(movies: int) -> None:
    rows = []
    for case, override in HARD.items():
        sim_override = {k: v for k, v in override.items() if k not in ("object", "ramp")}
        for seed in range(movies):
            sim = simulate_movie(load_simulation_config("default", {"n_frames": 60, **sim_override}), seed=[seed, 3])
            resting, truth = resting_image(sim.movie, sim.offset_adu), sim.cell_mask
            if "object" in override:
                resting, truth = _with_object(resting, truth, *override["object"])
            if "ramp" in override:
                resting = _with_ramp(resting, truth, override["ramp"], seed)
            found = cell_mask(resting, sim.movie.pixel_size_um)
            rows.append({"case": case, "iou": (found & truth).sum() / (found | truth).sum(),
                         "area_error": found.sum() / truth.sum() - 1})
    table = pd.DataFrame(rows).groupby("case", sort=False).agg(
        movies=("iou", "size"), iou_min=("iou", "min"), area_error_median=("area_error", "median"),
        area_error_max_abs=("area_error", lambda v: v.abs().max()))
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(4).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=48, help="movies at the reference sampling (a third at the others)")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--hard", action="store_true", help="the reviewers' hard cases instead (8 movies each by default)")
    args = parser.parse_args()
    if args.hard:
        hard_cases(args.movies if args.movies != 48 else 8)
        return
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

"""Are the events table's numbers continuous in the data? Re-measure detected movies with the dark
level each detection recorded ± 0.01 ADU.

    casparks detect data/sim-v2/test --out DET
    python benchmarks/bench_fit_stability.py --pred DET --movies data/sim-v2/test [--delta 0.01]

A dark level 0.01 ADU off changes ΔF/F0 by about 1e-5 of itself, so every measurement should
move by about as much. Counts, per column, the sparks whose value moves by more than 1 % (or
turns NaN) either way: a fit that jumps between equally good solutions shows up here, and with
it how much segments of a long movie, or a rerun with another ``--offset``, can differ.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

from casparks.io import read_movie
from casparks.measure import MeasureConfig, measure_events

COLUMNS = ("amplitude_dff", "fdhm_ms", "time_to_peak_ms", "decay_tau_ms", "fwhm_um")


def jumps(tables: list, column: str, rows: np.ndarray) -> int:
    """Rows whose value moves by more than 1 % from the middle table's, or turns NaN."""
    values = np.stack([t[column].to_numpy(dtype=float)[rows] for t in tables])
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no value to move
        moved = np.nanmax(np.abs(values - values[1]) / np.abs(values[1]), axis=0) > 0.01
    nan_flip = np.isnan(values).any(axis=0) & ~np.isnan(values).all(axis=0)
    return int((moved | nan_flip).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="a casparks detect output folder")
    parser.add_argument("--movies", type=Path, required=True, help="the folder of the detected movies")
    parser.add_argument("--delta", type=float, default=0.01, help="ADU added to and taken from the dark level")
    args = parser.parse_args()
    changed = dict.fromkeys(COLUMNS, 0)
    sparks = movies = 0
    seconds = 0.0
    for video in sorted(args.movies.glob("*_video.tif")):
        stem = video.name[: -len(".tif")]
        summary = args.pred / f"{stem}_detection.json"
        if not summary.exists():
            continue
        dark = json.loads(summary.read_text())["dark_level"]["adu"]
        movie = read_movie(video)
        class_label = tifffile.imread(args.pred / f"{stem}_class_label.tif")
        event_label = tifffile.imread(args.pred / f"{stem}_event_label.tif")
        tables = []
        for delta in (-args.delta, 0.0, args.delta):
            start = time.perf_counter()
            tables.append(measure_events(movie, class_label, event_label, movie.pixel_size_um,
                                         movie.frame_interval_ms, config=MeasureConfig(offset_adu=dark + delta)))
            seconds += time.perf_counter() - start
        rows = tables[1]["class"].eq("spark").to_numpy()
        sparks += int(rows.sum())
        movies += 1
        for column in COLUMNS:
            changed[column] += jumps(tables, column, rows)
    if not movies:
        raise SystemExit(f"no detections of the movies of {args.movies} in {args.pred}")
    print(f"{movies} movies, {sparks} sparks; dark level ± {args.delta} ADU; sparks whose value moved > 1 %"
          f" or turned NaN: " + ", ".join(f"{c} {n}" for c, n in changed.items())
          + f" ({seconds:.1f} s of measure_events)")


if __name__ == "__main__":
    main()

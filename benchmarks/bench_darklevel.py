"""Accuracy of the dark level read from photon noise (``casparks.darklevel``, the default
``offset_adu: auto`` of ``casparks.measure``) on movies whose true dark level is known.

Each movie is measured with its annotated labels (``measure_events``, the default config), the
way ``casparks detect`` measures its detections, and the dark level it read is compared with the
truth: for folders of ``benchmarks/physical_sim.py`` (their events tables carry ``offset_adu``
and ``read_adu``) and for movies of ``casparks.simulate`` drawn here. The error is also given as
a fraction of the resting signal above the dark level (``error_of_f0``: median over the field, the
figure given before session 32; ``error_of_cell_f0``: over the cell, which scales the cell's ΔF/F0 and against
which casparks calls a dark level uncertain). ``warned``: casparks warned (no estimate, a lower
bound, own-mean binning, uncertain); the last line says how the others fare.

    python benchmarks/bench_darklevel.py --physical data/phys/ref data/phys/other --simulated 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from casparks.io import read_movie, read_stack
from casparks.darklevel import estimate_dark_level
from casparks.measure import cell_resting_adu, measure_events
from casparks.simulate import load_simulation_config, simulate_movie


def row(name: str, data: np.ndarray, classes: np.ndarray, events: np.ndarray, px: float, dt: float,
        true_offset: float, true_read: float | None) -> dict:
    start = time.perf_counter()
    table = measure_events(data, classes, events, px, dt)
    seconds = time.perf_counter() - start
    # a movie without events: read from all of it, as casparks detect reads it for its summary
    level = table.attrs.get("dark_level") if len(table) else estimate_dark_level(data).to_dict()
    mean_image = data.mean(axis=0) - true_offset
    resting = float(np.median(mean_image))
    cell_resting = cell_resting_adu(mean_image.astype(np.float32), px)  # what the "uncertain" flag uses
    adu = level.get("adu")
    return {"movie": name, "true_adu": round(true_offset, 1), "read_adu": level.get("adu"),
            "se_adu": level.get("se_adu"), "method": level.get("method"), "binning": level.get("binning"),
            "read_noise_adu": level.get("read_noise_adu"),
            "true_read_noise_adu": None if true_read is None else round(true_read, 1),
            "error_of_f0": None if adu is None else round((adu - true_offset) / resting, 3),
            "error_of_cell_f0": None if adu is None else round((adu - true_offset) / cell_resting, 3),
            # what casparks warns about: no estimate, unconfirmed, own-mean binning, uncertain
            "warned": adu is None or (bool(level.get("reason")) and level.get("method") != "floor"),
            "measure_s": round(seconds, 2)}


def physical(folder: Path) -> list[dict]:
    rows = []
    for video in sorted(folder.glob("*_video.tif")):
        stem = video.name[: -len("_video.tif")]
        movie = read_movie(video)
        classes = np.asarray(read_stack(folder / f"{stem}_class_label.tif"))
        events = np.asarray(read_stack(folder / f"{stem}_event_label.tif"))
        info = pd.read_csv(folder / f"{stem}_events.csv").iloc[0]
        rows.append(row(f"{folder.name}/{stem}", np.asarray(movie.data), classes, events, movie.pixel_size_um,
                        movie.frame_interval_ms, float(info["offset_adu"]), float(info["read_adu"])))
    return rows


def simulated(n_movies: int, preset: str, overrides: dict | None = None) -> list[dict]:
    rows = []
    for k in range(n_movies):
        sim = simulate_movie(load_simulation_config(preset, overrides or {}), seed=[77, k])
        m = sim.movie
        rows.append(row(f"{preset} seed [77, {k}]", np.asarray(m.data), sim.class_label, sim.event_label,
                        m.pixel_size_um, m.frame_interval_ms, sim.offset_adu, None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--physical", nargs="*", type=Path, default=[], help="folders made by physical_sim.py")
    parser.add_argument("--simulated", type=int, default=0, help="movies of casparks.simulate to draw")
    parser.add_argument("--preset", default="default", help="simulator preset of --simulated")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a simulator parameter of --simulated, e.g. --set pixel_size_um=0.1 --set n_frames=250")
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.overrides)}
    rows = [r for folder in args.physical for r in physical(folder)]
    if args.simulated:
        rows += simulated(args.simulated, args.preset, overrides)
    table = pd.DataFrame(rows)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for values in table.itertuples(index=False):
        print("| " + " | ".join("–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                               for v in values) + " |")
    errors = table["error_of_f0"].dropna().abs()
    print(f"\n{len(table)} movies; |error| / F0: median {errors.median():.3f}, "
          f"≤ 0.05 in {(errors <= 0.05).mean():.0%}, ≤ 0.15 in {(errors <= 0.15).mean():.0%}; "
          f"no estimate in {table['read_adu'].isna().sum()}")
    # is a dark level given without a warning to be trusted, and is its standard error honest?
    quiet = table[~table["warned"]]
    quiet_errors = quiet["error_of_cell_f0"].abs()
    within = ((quiet["read_adu"] - quiet["true_adu"]).abs() <= 3 * quiet["se_adu"]).mean()
    print(f"warned for {int(table['warned'].sum())}; the {len(quiet)} others: |error| / the cell's F0 ≤ 0.15 in "
          f"{(quiet_errors <= 0.15).mean():.0%} (worst {quiet_errors.max():.3f}), within 3 se_adu in {within:.0%}")


if __name__ == "__main__":
    main()

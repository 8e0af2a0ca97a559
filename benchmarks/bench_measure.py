"""Speed and accuracy of the per-event measurements (`casparks.measure`) on simulated movies.

    python benchmarks/bench_measure.py [--repeats 3] [--accuracy-movies 6] [--skip-accuracy] [--physical DIR]
                                       [--puff-movies N] [--wave-decay MOVIES [--wave-decay-sampling UM MS]]
                                       [--skip-speed]

Speed: ``measure_events`` on full-size movies (500 × 64 × 512 px, 0.2 µm, 6.8 ms) of the
'dense' preset with a wave, with the true labels; best wall time of ``--repeats`` runs, and the
baseline (F0) step alone.

Accuracy: measured vs the simulator's exact noise-free values (``SimulatedMovie.events``) for
labelled events (the amplitude against both the largest noise-free sample and the
continuous course's peak at the centre), in two noise regimes: 'low noise' (1000 photons per pixel and frame, low read
noise, no flicker) and the default preset's noise (3-40 photons); sparks and puffs with no other
event within 5 µm and a few frames (and no wave in the movie) count as 'isolated'. Movies are
300 × 64 × 256 px; the detector offset is given (``offset_adu``), as a user would.
Prints markdown tables: median relative error (bias), median absolute relative error, and the
fraction of NaN, per column and class.

Puffs' time to peak (``--puff-movies N``): N puff-rich movies per noise level (puff rate 6-10,
few sparks, no waves), true labels; each labelled puff whose continuous peak lies in the movie
and whose centre lies in the field is compared with three truths: the simulator's
``rise_time_ms`` (onset to the continuous course's maximum), the noise-free course at its
centre pixel as the frames sample it (10 % crossing to its maximum, the column's definition),
and that course smoothed in time by ``puff_sigma_ms`` as ``measure_events`` smooths a puff.

Sparks on a wave's decay (``--wave-decay MOVIES``): 'dense' movies with a wave (300 × 64 × 256
px, low and default noise) measured with the true labels; each labelled spark is 'on a wave's
decay' where a wave's front passed its centre before its peak (the spark peaks after the wave's
local peak there) and the wave's noise-free ΔF/F0 there at the spark's peak is over 10 % of its
local peak, 'isolated' where no wave's ΔF/F0 there exceeds 0.02 and no other event is near (as
above), else 'other'. Also the FWHM / largest extent ratios that ``MAX_WIDTH_PER_EXTENT`` is read
against, for those groups and for the isolated sparks of wave-free movies at 0.2 µm / 6.8 ms and
0.3 µm / 10 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import pandas as pd

from scipy import ndimage

import casparks.measure as measure_module
from casparks.measure import MeasureConfig, _baseline, _excluded, measure_events
from casparks.simulate import _wave_course, load_simulation_config, simulate_movie

LOW_NOISE = {"f0_photons": [1000, 1000], "gain_adu_per_photon": [8, 8], "read_noise_adu": [2, 2],
             "frame_flicker": [0, 0], "line_flicker": [0, 0], "scan_lowpass": [0, 0]}
SMALL = {"n_frames": 300, "width_px": 256}
#: (measured, true): amplitude against the largest noise-free sample (what the frames can show)
#: and against the continuous course's peak at the centre (what the spark fit estimates)
PAIRS = [("amplitude_dff", "amplitude_dff0"), ("amplitude_dff", "peak_dff0"), ("fwhm_um", "fwhm_um_true"), ("fwhm_y_um", "fwhm_y_um_true"),
         ("fdhm_ms", "fdhm_ms_true"), ("time_to_peak_ms", "rise_time_ms"), ("decay_tau_ms", "decay_tau_ms_true"),
         ("speed_um_per_s", "speed_um_per_s_true")]


def isolated(events: pd.DataFrame, distance_um: float = 5.0) -> pd.Series:
    waves = events["class"].eq("wave").any()
    keep = []
    for i, e in events.iterrows():
        others = events.drop(index=i)
        near = (np.hypot(others.x_um - e.x_um, others.y_um - e.y_um) < distance_um) \
            & (others.end_ms > e.start_ms - 60.0) & (others.start_ms < e.end_ms + 150.0)
        keep.append(bool(e.labelled) and not near.any() and not waves)
    return pd.Series(keep, index=events.index)


def speed(repeats: int) -> None:
    config = load_simulation_config("dense", {"wave_probability": 1.0})
    print("\n## Speed: full-size movies (dense preset, one wave or more)\n")
    print("| movie | events (spark/puff/wave) | `measure_events` best of runs | F0 step alone |")
    print("|---|---|---|---|")
    for seed in (3, 4):
        sim = simulate_movie(config, seed=seed)
        m = sim.movie
        counts = sim.events[sim.events["labelled"]]["class"].value_counts()
        runs, base_runs = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            table = measure_events(m.data, sim.class_label, sim.event_label, m.pixel_size_um, m.frame_interval_ms)
            runs.append(time.perf_counter() - start)
            start = time.perf_counter()
            _baseline(m.data, _excluded(sim.class_label, sim.event_label), m.pixel_size_um, m.frame_interval_ms,
                      MeasureConfig(), class_label=sim.class_label)  # as measure_events calls it
            base_runs.append(time.perf_counter() - start)
        print(f"| dense seed {seed}, {m.shape} | {len(table)} ({counts.get('spark', 0)}/{counts.get('puff', 0)}/"
              f"{counts.get('wave', 0)}) | {min(runs):.2f} s | {min(base_runs):.2f} s |")


def joined_truth(overrides: dict, seeds: range, offset: str = "true") -> pd.DataFrame:
    config = load_simulation_config("default", overrides)
    rows = []
    for seed in seeds:
        sim = simulate_movie(config, seed=seed)
        m = sim.movie
        table = measure_events(m.data, sim.class_label, sim.event_label, m.pixel_size_um, m.frame_interval_ms,
                               config=MeasureConfig(offset_adu=sim.offset_adu if offset == "true" else offset)
                               ).set_index("id")
        events = sim.events.copy()
        events["isolated"] = isolated(events)
        truth = events[events["labelled"]].set_index("event_id")
        rows.append(table.merge(truth, left_index=True, right_index=True, suffixes=("", "_true")))
    return pd.concat(rows)


def report(name: str, joined: pd.DataFrame, classes: tuple[str, ...] = ("spark", "puff", "wave")) -> None:
    print(f"\n### {name}\n")
    print("| class | n | column | median rel. error | median abs. rel. error | NaN |")
    print("|---|---|---|---|---|---|")
    for cls in classes:
        part = joined[joined["class"] == cls]
        if not len(part):
            continue
        for measured, true in PAIRS:
            if true not in part or part[true].isna().all():
                continue
            error = (part[measured] / part[true] - 1.0).replace([np.inf, -np.inf], np.nan).dropna()
            if not len(error):
                continue
            nan = part[measured].isna().mean()
            label = f"{measured} vs {true}" if measured == "amplitude_dff" else measured
            print(f"| {cls} | {len(part)} | {label} | {error.median():+.3f} | {error.abs().median():.3f} | "
                  f"{nan:.0%} |")


def accuracy(n_movies: int, offset: str = "true") -> None:
    seeds = range(n_movies)
    print(f"\n## Accuracy against the simulator's truth (300 × 64 × 256 px movies), offset {offset}")
    local = {**SMALL, "wave_probability": 0.0, "spark_rate": [6, 10], "puff_rate": [2, 4]}
    waves = {**SMALL, "spark_rate": [1, 2], "puff_rate": [0, 0], "wave_probability": 1.0}
    for noise, extra in (("low noise", LOW_NOISE), ("default noise (3-40 photons)", {})):
        joined = joined_truth({**local, **extra}, seeds, offset)
        report(f"Isolated sparks and puffs, {noise}, {n_movies} movies", joined[joined["isolated"]])
        report(f"All labelled sparks and puffs, {noise}, {n_movies} movies", joined)
        report(f"Waves, {noise}, {n_movies} movies", joined_truth({**waves, **extra}, seeds, offset), ("wave",))


#: (measured, true) on the physical simulator's movies (benchmarks/physical_sim.py): against its
#: sampled truth (the largest noise-free voxel; FWHM and FDHM through it) and its continuous
#: course at the centre
PHYSICAL_PAIRS = [("amplitude_dff", "peak_dff0"), ("amplitude_dff", "course_peak_dff0"), ("fwhm_um", "fwhm_um_true"),
                  ("fdhm_ms", "fdhm_ms_true"), ("fdhm_ms", "course_fdhm_ms"),
                  ("time_to_peak_ms", "course_time_to_peak_ms")]


def physical(folder: str) -> pd.DataFrame:
    """Measure the physical simulator's movies with their true labels and dark level."""
    from pathlib import Path

    from casparks.io import read_label_stack, read_stack, read_units

    rows = []
    videos = sorted(Path(folder).glob("*_video.tif"))
    for video in videos:
        stem = video.name[: -len("_video.tif")]
        truth = pd.read_csv(video.with_name(f"{stem}_events.csv"))
        px, dt = read_units(video)
        table = measure_events(read_stack(video), read_label_stack(video.with_name(f"{stem}_class_label.tif")),
                               read_label_stack(video.with_name(f"{stem}_event_label.tif")), px, dt,
                               config=MeasureConfig(offset_adu=float(truth["offset_adu"].iloc[0])))
        truth = truth[truth["labelled"]].set_index("event_id")
        rows.append(table.set_index("id").merge(truth, left_index=True, right_index=True, suffixes=("", "_true")))
    joined = pd.concat(rows)
    print(f"\n## The physical simulator's movies ({folder}, {len(videos)} movies), true labels and dark level\n")
    print("| class | n | column | median rel. error | median abs. rel. error | NaN |")
    print("|---|---|---|---|---|---|")
    for cls in ("spark", "puff"):
        part = joined[joined["class"] == cls]
        for measured, true in PHYSICAL_PAIRS:
            if true not in part:  # a folder written before physical_sim.py had the column
                continue
            error = (part[measured] / part[true] - 1.0).replace([np.inf, -np.inf], np.nan).dropna()
            if len(error):
                print(f"| {cls} | {len(part)} | {measured} vs {true} | {error.median():+.3f} | "
                      f"{error.abs().median():.3f} | {part[measured].isna().mean():.0%} |")
    return joined


#: a puff-rich movie: many puffs, few sparks, no waves (300 × 64 × 256 px)
PUFF_RICH = {**SMALL, "wave_probability": 0.0, "spark_rate": [0.5, 1.0], "puff_rate": [6, 10]}


def course_time_to_peak(course: np.ndarray, times: np.ndarray, fraction: float = 0.1) -> float:
    """From the crossing of ``fraction`` of the maximum on the rise (interpolated) to the maximum
    of a sampled course; NaN where it does not fall below that fraction before the maximum."""
    i = int(np.argmax(course))
    below = np.flatnonzero(course[:i] < fraction * course[i])
    if not below.size:
        return float("nan")
    j = below[-1]
    level = fraction * course[i]
    return float(times[i] - (times[j] + (level - course[j]) / (course[j + 1] - course[j]) * (times[j + 1] - times[j])))


def puff_rises(n_movies: int, noise: dict) -> pd.DataFrame:
    """Each labelled puff's measured time to peak and its truths (see the module's docstring)."""
    config = load_simulation_config("default", {**PUFF_RICH, **noise})
    measure = MeasureConfig()
    rows = []
    for seed in range(n_movies):
        sim = simulate_movie(config, seed=seed, keep_dff=True)
        m = sim.movie
        px, dt = m.pixel_size_um, m.frame_interval_ms
        T, H, W = m.shape
        table = measure_events(m.data, sim.class_label, sim.event_label, px, dt,
                               config=MeasureConfig(offset_adu=sim.offset_adu)).set_index("id")
        events = sim.events.copy()
        events["isolated"] = isolated(events)
        for eid, e in events[events["labelled"] & events["class"].eq("puff")].set_index("event_id").iterrows():
            yc, xc = int(e.y_um // px), int(e.x_um // px)
            if eid not in table.index or e.peak_ms >= T * dt or not (0 <= yc < H and 0 <= xc < W):
                continue
            lo, hi = max(0, int((e.start_ms - measure.margin_ms) // dt)), min(T, int((e.end_ms + measure.margin_ms) // dt) + 1)
            times = (np.arange(T) + (yc + 0.5) / H)[lo:hi] * dt  # the centre row's scan time
            course = sim.dff[:, yc, xc].astype(float)
            smoothed = ndimage.gaussian_filter1d(course, measure.puff_sigma_ms / dt, mode="nearest")
            rows.append({"isolated": bool(e.isolated), "onset_recorded": e.onset_ms >= measure.margin_ms,
                         "measured": table.loc[eid, "time_to_peak_ms"], "rise_time_ms": e.rise_time_ms,
                         "sampled": course_time_to_peak(course[lo:hi], times),
                         "smoothed": course_time_to_peak(smoothed[lo:hi], times)})
    return pd.DataFrame(rows)


def puff_time_to_peak(n_movies: int) -> None:
    print(f"\n## Puffs' time to peak, {n_movies} puff-rich movies per noise level (true labels)\n")
    print("| puffs | n | NaN (of those whose onset the movie holds) | vs `rise_time_ms` | vs sampled course, "
          "10 % → max | vs that course smoothed by `puff_sigma_ms` | smoothed vs sampled course |")
    print("|---|---|---|---|---|---|---|")

    def error(measured: pd.Series, true: pd.Series) -> str:
        e = (measured / true - 1.0).replace([np.inf, -np.inf], np.nan).dropna()
        return f"{e.median():+.3f} / {e.abs().median():.3f} ({len(e)})" if len(e) else "–"

    for noise, extra in (("low noise", LOW_NOISE), ("default noise", {})):
        rises = puff_rises(n_movies, extra)
        for name, part in (("isolated", rises[rises["isolated"]]), ("all", rises)):
            recorded = part[part["onset_recorded"]]
            print(f"| {name}, {noise} | {len(part)} | {part['measured'].isna().mean():.0%} "
                  f"({recorded['measured'].isna().mean():.0%} of {len(recorded)}) | "
                  f"{error(part['measured'], part['rise_time_ms'])} | {error(part['measured'], part['sampled'])} | "
                  f"{error(part['measured'], part['smoothed'])} | {error(part['smoothed'], part['sampled'])} |")


def wave_at(sim, spark: pd.Series, after_ms: float | None = None, at_ms: float | None = None,
            peaked_before: bool = False) -> tuple[float, float]:
    """(fraction of its local peak, noise-free ΔF/F0) of the wave that contributes most at a
    spark's centre at its peak time (or ``at_ms``); fraction −1 where the spark peaks (or
    ``after_ms``, a puff's onset, lies) before that wave's local peak there, (0, 0) where no
    wave's ΔF/F0 there exceeds 0.02. A wave whose local peak came before the movie is skipped,
    or with ``peaked_before`` scaled from the movie's first frame. Needs ``keep_dff``."""
    after_ms = spark.peak_ms if after_ms is None else after_ms
    at_ms = spark.peak_ms if at_ms is None else at_ms
    T, H, W = sim.movie.shape
    px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
    yc, xc = int(spark.y_um // px), int(spark.x_um // px)
    best = (0.0, 0.0)
    if not (0 <= yc < H and 0 <= xc < W):
        return best
    row_ms = (yc + 0.5) / H * dt
    for _, w in sim.events[sim.events["class"] == "wave"].iterrows():
        arrival = w.onset_ms + math.hypot(spark.x_um - w.origin_x_um, spark.y_um - w.origin_y_um) \
            / (w.speed_um_per_s / 1000.0)
        k = int((arrival + w.rise_time_ms - row_ms) // dt)  # the frame of the wave's peak there
        if peaked_before and k < 0:
            k = 0
        if not 0 <= k < T:
            continue
        course = _wave_course(np.array([k * dt + row_ms - arrival, at_ms - arrival], dtype=np.float32),
                              w.rise_time_ms, w.decay_tau_ms)
        here = float(course[1]) * float(sim.dff[k, yc, xc]) / max(float(course[0]), 1e-6)
        if here > 0.02 and here > abs(best[1]):
            best = (float(course[1]) if after_ms - arrival >= w.rise_time_ms else -1.0, here)
    return best


def width_ratios(joined: pd.DataFrame) -> pd.Series:
    """FWHM (x and y) over the event's largest extent, as ``MAX_WIDTH_PER_EXTENT`` reads it."""
    largest = np.maximum(joined["extent_x_um"], joined["extent_y_um"])
    return pd.concat([joined["fwhm_um"] / largest, joined["fwhm_y_um"] / largest]).dropna()


def unfiltered(function, *args, **kwargs):
    """``function``'s result with ``MAX_WIDTH_PER_EXTENT`` off (the widths it would blank kept)."""
    saved = measure_module.MAX_WIDTH_PER_EXTENT
    measure_module.MAX_WIDTH_PER_EXTENT = math.inf
    try:
        return function(*args, **kwargs)
    finally:
        measure_module.MAX_WIDTH_PER_EXTENT = saved


def filtered(joined: pd.DataFrame) -> pd.DataFrame:
    """The widths as ``measure_events`` reports them: NaN over ``MAX_WIDTH_PER_EXTENT`` × the largest extent."""
    out = joined.copy()
    largest = np.maximum(out["extent_x_um"], out["extent_y_um"])
    for column in ("fwhm_um", "fwhm_y_um"):
        out.loc[out[column] > measure_module.MAX_WIDTH_PER_EXTENT * largest, column] = np.nan
    return out


def wave_decay_sparks(overrides: dict, seeds: range, cls: str = "spark", preset: str = "dense") -> pd.DataFrame:
    """Labelled sparks (or puffs) of movies with waves, measured (widths unfiltered) and grouped.
    A puff is on a wave's decay only where it also began after the wave's local peak there, and
    isolated only where no wave reached its centre by 60 ms after its end either (the box's
    frames); for puffs a wave whose local peak came before the movie counts too."""
    config = load_simulation_config(preset, overrides)
    rows = []
    for seed in seeds:
        sim = simulate_movie(config, seed=seed, keep_dff=True)
        m = sim.movie
        table = unfiltered(measure_events, m.data, sim.class_label, sim.event_label, m.pixel_size_um,
                           m.frame_interval_ms, config=MeasureConfig(offset_adu=sim.offset_adu)).set_index("id")
        events = sim.events
        locals_ = events[events["class"] != "wave"]
        groups, fractions = [], []
        for i, e in events.iterrows():
            fraction, _ = wave_at(sim, e, e.onset_ms if cls == "puff" else None, peaked_before=cls == "puff") \
                if e["class"] == cls else (0.0, 0.0)
            if cls == "puff" and e["class"] == cls and fraction == 0.0:  # nor a wave by the end of its box
                fraction = wave_at(sim, e, at_ms=e.end_ms + 60.0, peaked_before=True)[0] or 0.0
            others = locals_.drop(index=i, errors="ignore")
            near = ((np.hypot(others.x_um - e.x_um, others.y_um - e.y_um) < 5.0)
                    & (others.end_ms > e.start_ms - 60.0) & (others.start_ms < e.end_ms + 150.0)).any()
            groups.append("on a wave's decay" if fraction > 0.1 else "isolated" if fraction == 0.0 and not near
                          else "other")
            fractions.append(fraction)
        truth = events.assign(group=groups, wave_fraction=fractions)
        truth = truth[truth["labelled"] & (truth["class"] == cls)].set_index("event_id")
        rows.append(table.merge(truth, left_index=True, right_index=True, suffixes=("", "_true")))
    return pd.concat(rows)


def ratio_line(name: str, ratios: pd.Series) -> str:
    q = np.percentile(ratios, [50, 90, 99, 100]) if len(ratios) else [np.nan] * 4
    return (f"| {name} | {len(ratios)} | {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} / {q[3]:.2f} | "
            f"{(ratios > 2.2).mean():.1%} | {(ratios > 2.5).mean():.1%} | {(ratios > 3.0).mean():.1%} |")


def group_table(reported: pd.DataFrame, groups: tuple[str, ...]) -> None:
    print("| group | n | column | median rel. error | median abs. rel. error | median abs. error | NaN |")
    print("|---|---|---|---|---|---|---|")
    for group in groups:
        part = reported[reported["group"] == group]
        for measured, true in PAIRS:
            if true not in part or part[true].isna().all() or measured == "speed_um_per_s":
                continue
            error = (part[measured] / part[true] - 1.0).replace([np.inf, -np.inf], np.nan).dropna()
            absolute = (part[measured] - part[true]).abs().dropna()
            label = f"{measured} vs {true}" if measured == "amplitude_dff" else measured
            print(f"| {group} | {len(part)} | {label} | {error.median():+.3f} | {error.abs().median():.3f} | "
                  f"{absolute.median():.3g} | {part[measured].isna().mean():.0%} |")


def wave_decay(n_movies: int, sampling: tuple[float, float] = (0.2, 6.8)) -> None:
    seeds = range(n_movies)
    units = {"pixel_size_um": sampling[0], "frame_interval_ms": sampling[1]}
    print(f"\n## Sparks on a wave's decay ('dense' preset with a wave, 300 × 64 × 256 px at {sampling[0]} µm / "
          f"{sampling[1]} ms, {n_movies} movies)")
    ratios = []
    for noise, extra in (("low noise", LOW_NOISE), ("default noise (3-40 photons)", {})):
        joined = wave_decay_sparks({**SMALL, "wave_probability": 1.0, **extra, **units}, seeds)
        print(f"\n### {noise}\n")
        group_table(filtered(joined), ("isolated", "on a wave's decay", "other"))
        for group in ("isolated", "on a wave's decay", "other"):
            ratios.append((f"{group}, {noise}", width_ratios(joined[joined["group"] == group])))
    local = {**SMALL, "wave_probability": 0.0, "spark_rate": [6, 10], "puff_rate": [2, 4]}
    for px, dt in ((0.2, 6.8), (0.3, 10.0)):
        for noise, extra in (("low noise", LOW_NOISE), ("default noise", {})):
            joined = unfiltered(joined_truth, {**local, **extra, "pixel_size_um": px, "frame_interval_ms": dt}, seeds)
            part = joined[(joined["class"] == "spark") & joined["isolated"]]
            ratios.append((f"isolated, no wave, {px} µm / {dt} ms, {noise}", width_ratios(part)))
    print(f"\n### FWHM / largest extent of sparks (x and y; `MAX_WIDTH_PER_EXTENT` = "
          f"{measure_module.MAX_WIDTH_PER_EXTENT})\n")
    print("| sparks | widths | median / 90th / 99th percentile / largest | > 2.2 | > 2.5 | > 3.0 |")
    print("|---|---|---|---|---|---|")
    for name, r in ratios:
        print(ratio_line(name, r))


#: puff-rich movies with a wave whose CRUs may release again 30-120 ms after it passed (the
#: default 200-600 ms leaves the wave at < 10 % of its peak there before most puffs begin)
PUFF_WAVE = {**PUFF_RICH, "wave_probability": 1.0, "wave_refractory_ms": [30, 120]}


def wave_decay_puffs(n_movies: int, sampling: tuple[float, float] = (0.2, 6.8)) -> None:
    seeds = range(n_movies)
    units = {"pixel_size_um": sampling[0], "frame_interval_ms": sampling[1]}
    print(f"\n## Puffs on a wave's decay (puff-rich movies with a wave, refractory 30-120 ms, 300 × 64 × 256 px at "
          f"{sampling[0]} µm / {sampling[1]} ms, {n_movies} movies; 'isolated, no wave': the puff-rich movies "
          f"without one)")
    for noise, extra in (("low noise", LOW_NOISE), ("default noise (3-40 photons)", {})):
        joined = wave_decay_sparks({**PUFF_WAVE, **extra, **units}, seeds, "puff", "default")
        quiet = wave_decay_sparks({**PUFF_RICH, **extra, **units}, range(1000, 1000 + n_movies), "puff", "default")
        quiet["group"] = quiet["group"].replace({"isolated": "isolated, no wave"})
        print(f"\n### {noise}\n")
        group_table(filtered(pd.concat([joined, quiet])), ("isolated, no wave", "isolated", "on a wave's decay", "other"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy-movies", type=int, default=6)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--puff-movies", type=int, default=0,
                        help="also compare puffs' time to peak with its truths on N puff-rich movies per noise level")
    parser.add_argument("--wave-decay-sampling", type=float, nargs=2, default=(0.2, 6.8), metavar=("UM", "MS"),
                        help="pixel size and frame interval of --wave-decay's movies with waves")
    parser.add_argument("--wave-decay", type=int, default=0, metavar="MOVIES",
                        help="also measure sparks and puffs on a wave's decay against isolated ones, on this many movies "
                             "per noise level, and the width / extent ratios")
    parser.add_argument("--wave-decay-classes", nargs="+", choices=("spark", "puff"), default=("spark", "puff"),
                        help="which of sparks and puffs --wave-decay measures (default both)")
    parser.add_argument("--offset", choices=("true", "auto"), default="true",
                        help="the dark level measure_events gets: the simulator's (as a user who knows it) "
                             "or 'auto' (read from the movie's noise, casparks.darklevel)")
    parser.add_argument("--physical", metavar="DIR",
                        help="also measure a folder made by benchmarks/physical_sim.py (its true labels and dark level)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"numpy {np.__version__}, pandas {pd.__version__}")
    if not args.skip_speed:
        speed(args.repeats)
    if not args.skip_accuracy:
        accuracy(args.accuracy_movies, args.offset)
    if args.puff_movies:
        puff_time_to_peak(args.puff_movies)
    if args.wave_decay and "spark" in args.wave_decay_classes:
        wave_decay(args.wave_decay, tuple(args.wave_decay_sampling))
    if args.wave_decay and "puff" in args.wave_decay_classes:
        wave_decay_puffs(args.wave_decay, tuple(args.wave_decay_sampling))
    if args.physical:
        physical(args.physical)


if __name__ == "__main__":
    main()

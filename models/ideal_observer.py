"""How many annotated events could a detector find at all? A matched-filter reference.

    python models/ideal_observer.py --truth data/sim-v2/test [--classes spark puff] [--pred DET]

Why: the simulator annotates every event whose signal-to-noise ratio reaches 3 (``event_snr``),
and the network misses most events below SNR 5. Whether a better network could find them, or
whether no detector can without drowning in false events, decides what accuracy goal is
reachable. This script measures it with the detector that is optimal for a known shape in white
noise, a matched filter, given every advantage the truth allows:

1. **Oracle baseline and noise.** Per pixel, F0 and the noise SD are estimated from the voxels
   farther than 2 µm and 150 ms from any annotated event (and 500 ms from a wave): F0 as the
   mean of each 100-frame block, linearly interpolated (and extrapolated) in time; the SD from
   the frame-to-frame differences. The movie becomes z = (F - F0) / SD, less each frame's
   mean over those voxels (the simulator's frame flicker).
2. **Matched filters.** For each class, Gaussian filters whose σ in space and time are the
   class's annotated FWHM / 2.355 and FDHM / 2.355 at their 25th and 75th percentiles over all
   the movies given (four scales, the same for every movie). Each filtered movie is divided by
   the SD that white noise would have after the filter at each voxel (larger near the movie's
   borders) and by its robust SD (MAD) over the same quiet voxels, so its values are in noise
   units; the detection statistic S is the maximum over the scales.
3. **Events and false events.** An annotated event scores the maximum of S over its own voxels.
   At a threshold h, a false event is a connected component of S > h inside the cell (F0 above
   Otsu's threshold) that comes no closer to an annotated voxel of any class (ignore included)
   than 2σ of the largest scale, 2 µm or 150 ms, so a bright event's fringe is part of its
   detection. They are counted away from waves (500 ms plus 2σ around a wave's frames, whose
   diffusing fringe is not labelled) and their rate per voxel, pooled over the movies, is
   applied to the whole cells.

A threshold h finds the events scoring above h and makes the false events at h; sweeping h
gives precision, recall and F1. The script prints the best F1, the recall at given precisions,
and the fraction found per SNR bin; with ``--pred`` (``casparks detect`` output folders) it
prints the detector's found fraction per SNR bin beside it (any class, IoMin ≥ 0.5, as
``recall_by_snr.py``).

It is a reference, not a strict bound: it ignores class confusion and touching events (it counts
every annotated event on its own) and knows where the events are when it estimates F0 and noise,
which favour it; one filter bank for all events and no prior on where events occur (z-lines)
disfavour it. Scores are in noise units of the filtered movie, not the simulator's ``snr``.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from casparks.classes import WAVE
from casparks.simulate import FWHM_PER_SIGMA

BLOCK_FRAMES = 100
WAVE_MARGIN_MS = 500.0
#: F0, noise and the filters' noise level come from voxels this far from any event
QUIET_MARGIN_MS, QUIET_MARGIN_UM = 150.0, 2.0
#: below this fraction of quiet voxels a movie's F0 and noise come from all voxels outside its events
MIN_QUIET_FRACTION = 0.02
#: detection thresholds swept, in noise units of the filtered movie
THRESHOLDS = np.arange(4.0, 16.01, 0.5)


def _oracle_z(video: np.ndarray, busy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F - F0) / SD per voxel and the F0 image; F0 and SD from the voxels outside ``busy``."""
    with warnings.catch_warnings():  # pixels busy throughout (a wave) are all-NaN: they get z = 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return _z(video, busy)


def _z(video: np.ndarray, busy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_frames = video.shape[0]
    quiet = np.where(busy, np.nan, video.astype(np.float32))
    starts = list(range(0, n_frames, BLOCK_FRAMES))
    centres = np.array([(s + min(s + BLOCK_FRAMES, n_frames)) / 2 for s in starts])
    # means, not medians: the median of a few photons' integer counts is biased against the mean
    blocks = np.stack([np.nanmean(quiet[s:s + BLOCK_FRAMES], axis=0) for s in starts])
    overall = np.nanmean(quiet, axis=0)
    blocks = np.where(np.isfinite(blocks), blocks, overall)
    t = np.arange(n_frames, dtype=np.float64)
    right = np.clip(np.searchsorted(centres, t), 1, max(len(starts) - 1, 1))
    left = right - 1
    if len(starts) == 1:
        f0 = np.broadcast_to(blocks[0], video.shape)
    else:
        w = ((t - centres[left]) / (centres[right] - centres[left]))[:, None, None]  # linear beyond the ends (bleaching)
        f0 = (1 - w) * blocks[left] + w * blocks[right]
    sd = np.nanstd(np.diff(quiet, axis=0), axis=0) / math.sqrt(2.0)  # not MAD: few photons make it 0
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, np.nan)
    z = (video - f0) / sd
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), np.asarray(overall)


def _filter_gain(n: int, sigma: float) -> np.ndarray:
    """SD of white unit noise after the 1-D Gaussian filter, at each of n positions.

    Near a border the reflected copy of the noise adds to itself, so the filtered noise is
    larger there (up to √2 per axis); dividing by it keeps the statistic's noise level flat.
    """
    from scipy import ndimage

    impulses = ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode="reflect")
    return np.sqrt((impulses**2).sum(axis=1))


def class_widths(events, name: str) -> list[tuple[float, float]]:
    """(σ in ms, σ in µm) pairs: the class's FDHM and FWHM at their 25th and 75th percentiles."""
    rows = events[(events["class"] == name) & events["labelled"].astype(bool)]
    fwhm = rows["fwhm_um"].dropna().to_numpy()
    fdhm = rows["fdhm_ms"].dropna().to_numpy()
    if len(fwhm) == 0 or len(fdhm) == 0:
        return []
    return [(float(t) / FWHM_PER_SIGMA, float(x) / FWHM_PER_SIGMA)
            for t in np.percentile(fdhm, [25, 75]) for x in np.percentile(fwhm, [25, 75])]


def in_voxels(widths: list[tuple[float, float]], pixel_um: float, frame_ms: float) -> list[tuple[float, float, float]]:
    """(σt, σy, σx) in frames and pixels, at least half a voxel."""
    return [(max(t / frame_ms, 0.5), max(x / pixel_um, 0.5), max(x / pixel_um, 0.5)) for t, x in widths]


class _Quiet(NamedTuple):
    """One movie's z-scores and masks, the same for every class's filters."""

    z: np.ndarray  # (F - F0) / SD, frame flicker removed
    quiet: np.ndarray  # voxels far from events, inside the cell: F0, noise and the filters' noise level
    cell: np.ndarray  # Y×X, F0 above Otsu's threshold
    near_wave: np.ndarray  # (T,) frames within the wave margin of a wave
    events_any: np.ndarray  # annotated voxels of any class, ignore included


def _quiet_z(video: np.ndarray, classes: np.ndarray, event_label: np.ndarray,
             wave_margin: int, quiet_margin: tuple[int, int, int]) -> _Quiet:
    """z-scores from the truth's quiet voxels (see the module docstring, step 1)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    events_any = (classes > 0) | (event_label > 0)
    near_wave = np.zeros(video.shape[0], dtype=bool)
    for box in ndimage.find_objects((classes == WAVE).view(np.uint8)):  # a wave's unlabelled fringe
        if box is not None:
            near_wave[max(box[0].start - wave_margin, 0):box[0].stop + wave_margin] = True
    quiet = ~(ndimage.maximum_filter(events_any.view(np.uint8), size=tuple(2 * np.asarray(quiet_margin) + 1)) > 0)
    quiet[near_wave] = False
    if quiet.mean() < MIN_QUIET_FRACTION:  # e.g. a wave all movie long: only the events themselves are left out
        quiet = ~events_any
    z, f0_image = _oracle_z(video, ~quiet)
    cell = f0_image > threshold_otsu(f0_image[np.isfinite(f0_image)])
    quiet &= cell[None]
    for t in range(len(z)):  # frame flicker: the whole frame brightens or dims at once
        if quiet[t].any():
            z[t] -= z[t][quiet[t]].mean()
    return _Quiet(z, quiet, cell, near_wave, events_any)


def _class_scores(movie: _Quiet, event_label: np.ndarray, scales: list[tuple[float, float, float]],
                  wanted: list[int]) -> tuple[dict[int, float], np.ndarray, float, float]:
    """:func:`movie_scores` for one filter bank, from the movie's z-scores."""
    from scipy import ndimage

    z = movie.z
    reach = np.ceil(2 * np.max(np.array(scales), axis=0)).astype(int)
    busy = ndimage.maximum_filter(movie.events_any.view(np.uint8), size=tuple(2 * reach + 1)) > 0
    near_wave = ndimage.maximum_filter1d(movie.near_wave.view(np.uint8), size=2 * reach[0] + 1) > 0
    busy[near_wave] = True
    busy |= ~movie.quiet  # within 2 µm and 150 ms of an event: a bright event's fringe, not a false event
    statistic = None
    for sigma in scales:
        filtered = ndimage.gaussian_filter(z, sigma=sigma, mode="reflect")
        gains = [_filter_gain(n, sd) for n, sd in zip(z.shape, sigma)]
        filtered /= gains[0][:, None, None] * gains[1][None, :, None] * gains[2][None, None, :]
        sample = filtered[movie.quiet][::7]
        filtered /= float(1.4826 * np.median(np.abs(sample - np.median(sample))))
        statistic = filtered if statistic is None else np.maximum(statistic, filtered, out=statistic)
    objects = ndimage.find_objects(event_label)
    scores = {}
    for event_id in wanted:
        box = objects[event_id - 1] if event_id - 1 < len(objects) else None
        if box is not None:
            scores[event_id] = float(statistic[box][event_label[box] == event_id].max())
    searched = movie.cell[None] & ~near_wave[:, None, None]
    false = np.zeros(len(THRESHOLDS))
    for i, h in enumerate(THRESHOLDS):
        components, n = ndimage.label((statistic > h) & searched)
        touching = np.unique(components[busy & (components > 0)])
        false[i] = n - len(touching)
    return scores, false, float(searched.sum()), float(movie.cell.sum()) * z.shape[0]


def movie_scores(video: np.ndarray, classes: np.ndarray, event_label: np.ndarray,
                 scales: list[tuple[float, float, float]], wanted: list[int],
                 wave_margin: int, quiet_margin: tuple[int, int, int]) -> tuple[dict[int, float], np.ndarray, float, float]:
    """Scores of the ``wanted`` event ids, false events at each of ``THRESHOLDS``, voxels searched and in the cell.

    A false event at threshold h is a connected component of S > h inside the cell that comes no
    closer than 2σ to an annotated voxel (any class, ignore included), counted away from waves.
    """
    return _class_scores(_quiet_z(video, classes, event_label, wave_margin, quiet_margin), event_label, scales, wanted)


def sweep(event_scores: np.ndarray, false: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at each of ``THRESHOLDS`` (``false``: false events summed over movies)."""
    found = (event_scores[None, :] > THRESHOLDS[:, None]).sum(axis=1)
    precision = found / np.maximum(found + false, 1e-12)
    recall = found / max(len(event_scores), 1)
    f1 = np.where(found > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {"threshold": THRESHOLDS, "precision": precision, "recall": recall, "f1": f1, "false": false}


def main() -> None:
    import pandas as pd

    from casparks.dataset import list_samples
    from casparks.io import read_movie, read_stack
    from recall_by_snr import found_events  # this folder's script

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", type=Path, required=True, nargs="+", help="simulated data-set folders (NN_events.csv)")
    parser.add_argument("--classes", nargs="+", default=["spark", "puff"], choices=["spark", "puff"])
    parser.add_argument("--pred", type=Path, nargs="*", default=[], help="casparks detect output folders, one per --truth")
    parser.add_argument("--precisions", type=float, nargs="+", default=[0.9, 0.95, 0.97])
    parser.add_argument("--bins", type=float, nargs="+", default=[3, 4.2, 5.8, 8.2, 12, 1e9], help="SNR bin edges")
    args = parser.parse_args()
    if args.pred and len(args.pred) != len(args.truth):
        parser.error("give one --pred folder per --truth folder")
    samples = [(k, folder, sample) for k, folder in enumerate(args.truth)
               for sample in list_samples(folder, require=("video", "class_label", "event_label"))]
    tables = {sample.event_label: pd.read_csv(sample.event_label.with_name(f"{sample.id}_events.csv"))
              for _, _, sample in samples}
    every_event = pd.concat(tables.values())
    widths = {name: class_widths(every_event, name) for name in args.classes}  # one filter bank per class
    rows, false_events = [], {name: [] for name in args.classes if widths[name]}
    for k, folder, sample in samples:
        movie = read_movie(sample.video)
        event_label = np.asarray(read_stack(sample.event_label))
        events = tables[sample.event_label]
        found = {}
        if args.pred:
            pred_file = next(Path(args.pred[k]).glob(f"{sample.id}_*event_label.tif"))
            found = found_events(event_label, np.asarray(read_stack(pred_file)), 0.5)
        px, dt = movie.pixel_size_um, movie.frame_interval_ms
        quiet = _quiet_z(np.asarray(movie.data, dtype=np.float32), np.asarray(read_stack(sample.class_label)),
                         event_label, int(round(WAVE_MARGIN_MS / dt)),
                         (int(round(QUIET_MARGIN_MS / dt)),) + (int(round(QUIET_MARGIN_UM / px)),) * 2)
        for name in false_events:
            chosen = events[(events["class"] == name) & events["labelled"].astype(bool)]
            wanted = [int(i) for i in chosen["event_id"] if int(i) > 0]
            scores, false, searched, cell = _class_scores(quiet, event_label, in_voxels(widths[name], px, dt), wanted)
            print(f"  {name}: false events at {THRESHOLDS[8]:g} / {THRESHOLDS[16]:g}: {false[8]:.0f} / {false[16]:.0f} "
                  f"in {searched / cell:.0%} of the cell", flush=True)
            false_events[name].append((false, searched, cell))
            for row in chosen.itertuples():
                if int(row.event_id) in scores:
                    rows.append({"set": folder.name, "movie": sample.id, "class": name, "snr": row.snr,
                                 "score": scores[int(row.event_id)], "found_by_model": found.get(int(row.event_id))})
        print(f"{folder.name}/{sample.id}: done", flush=True)
    table = pd.DataFrame(rows)
    for name in args.classes:
        part = table[table["class"] == name]
        if part.empty:
            continue
        false, searched, cell = zip(*false_events[name])  # pooled rate per searched voxel, over the whole cells
        result = sweep(part["score"].to_numpy(), np.sum(false, axis=0) / max(sum(searched), 1.0) * sum(cell))
        best = int(np.argmax(result["f1"]))
        n_movies = len(false_events[name])
        print(f"\n{name}: {len(part)} annotated events in {n_movies} movies")
        print(f"  best F1 {result['f1'][best]:.3f} at score {result['threshold'][best]:.2f}: precision "
              f"{result['precision'][best]:.3f}, recall {result['recall'][best]:.3f}, "
              f"{result['false'][best] / n_movies:.2f} false events per movie")
        for p in args.precisions:
            ok = np.flatnonzero(result["precision"] >= p)
            if len(ok):
                i = ok[np.argmax(result["recall"][ok])]
                print(f"  at precision >= {p:.2f}: recall {result['recall'][i]:.3f}, F1 {result['f1'][i]:.3f} "
                      f"(score > {result['threshold'][i]:.2f})")
        threshold = result["threshold"][best]
        part = part.assign(found_by_filter=part["score"] > threshold,  # as sweep() counts
                           snr_bin=pd.cut(part["snr"], args.bins, right=False))
        summary = part.groupby("snr_bin", observed=True).agg(events=("score", "size"),
                                                              filter_found=("found_by_filter", "mean"),
                                                              median_score=("score", "median"))
        if args.pred:
            summary["model_found"] = part.groupby("snr_bin", observed=True)["found_by_model"].apply(
                lambda s: s.astype(float).mean())
        print(summary.round(2).to_string())


if __name__ == "__main__":
    main()

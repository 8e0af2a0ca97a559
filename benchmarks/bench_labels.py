"""Speed of training-label preparation on a synthetic 500×64×512 movie (the reference data size).

The movie is built here (not with casparks.simulate): Gaussian blobs as sparks (some annotated
pairs, so that 'peaks' finds several maxima in one spark), two long blobs as puffs and a
travelling band as a wave, on a noisy baseline, at 0.2 µm / 6.8 ms.

    python benchmarks/bench_labels.py [--repeat 3] [--sparks 50] [--seed 0]

Prints one line per measurement: best wall time of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from casparks.classes import PUFF, SPARK, WAVE
from casparks.io import write_class_label, write_event_label, write_stack
from casparks.instances import complete_instances
from casparks.labels import LabelConfig, dilate, find_spark_peaks, prepare_dataset_labels, prepare_labels

PX, DT = 0.2, 6.8
SHAPE = (500, 64, 512)


def _blob(movie, classes, events, event_id, code, centre, sigma, amplitude, level=0.25):
    """Add a Gaussian blob (sigma in voxels) and label where it exceeds ``level`` of its peak."""
    reach = [int(4 * s) + 1 for s in sigma]
    box = tuple(slice(max(c - r, 0), min(c + r + 1, n)) for c, r, n in zip(centre, reach, movie.shape))
    grids = np.ogrid[box]
    profile = np.exp(-sum((g - c) ** 2 / (2 * s**2) for g, c, s in zip(grids, centre, sigma)))
    movie[box] += amplitude * profile
    inside = profile > level
    classes[box][inside] = code
    events[box][inside] = event_id


def synthetic(n_sparks: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    movie = 1000.0 + 20.0 * rng.standard_normal(SHAPE)
    classes = np.zeros(SHAPE, dtype=np.uint8)
    events = np.zeros(SHAPE, dtype=np.uint32)
    next_id = 1
    # a wave: a 3 µm band crossing the field at ~100 µm/s during frames 300-450
    t, _, x = np.ogrid[300:450, :64, :512]
    front = (t - 300) * DT * 0.1 / PX  # px
    band = np.abs(x - front) < 7.5
    band = np.broadcast_to(band, (150, 64, 512))
    movie[300:450] += 400.0 * band
    classes[300:450][band] = WAVE
    events[300:450][band] = next_id
    next_id += 1
    # two puffs: long (~400 ms), wide blobs
    for centre in ((120, 20, 100), (200, 45, 400)):
        _blob(movie, classes, events, next_id, PUFF, centre, (25, 6, 6), 300.0)
        next_id += 1
    # sparks: FWHM ~2 µm, FDHM ~30 ms; every fifth annotation holds two release sites 3 µm apart
    for k in range(n_sparks):
        centre = (int(rng.integers(10, 290)), int(rng.integers(8, 56)), int(rng.integers(8, 504)))
        amplitude = float(rng.uniform(200, 800))
        _blob(movie, classes, events, next_id, SPARK, centre, (2.0, 4.0, 4.0), amplitude)
        if k % 5 == 0 and centre[2] + 15 < 512:
            _blob(movie, classes, events, next_id, SPARK, (centre[0] + 2, centre[1], centre[2] + 15), (2.0, 4.0, 4.0), 0.8 * amplitude)
        next_id += 1
    return np.clip(movie, 0, 65535).astype(np.uint16), classes, events


def best_of(repeat, func, *args, **kwargs):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), result


def whole_volume_reference_steps(movie, classes):
    """The reference algorithm's whole-movie steps, for scale: Gaussian σ = 2 voxels of the masked
    movie, maximum filter with its 3 × 11 × 11 footprint, distance transform of the whole volume."""
    spark = classes == SPARK
    smooth = ndimage.gaussian_filter(np.where(spark, movie.astype(np.float64), 0.0), 2.0)
    yy, xx = np.ogrid[-5:6, -5:6]
    footprint = np.stack([(yy**2 + xx**2) <= 25] * 3)
    peaks = (smooth == ndimage.maximum_filter(smooth, footprint=footprint)) & spark & (smooth > 0)
    distance = ndimage.distance_transform_edt(~peaks)
    return int(peaks.sum()), distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sparks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    movie, classes, events = synthetic(args.sparks, args.seed)
    n_events = len(np.unique(events)) - 1
    print(f"python {platform.python_version()}, numpy {np.__version__}; movie {movie.shape} uint16, "
          f"{n_events} events ({args.sparks} sparks, 2 puffs, 1 wave); best of {args.repeat}")

    raw = LabelConfig()
    peaks_config = LabelConfig(sparks_type="peaks")
    instances = complete_instances(classes, events)
    spark_instances = np.where(classes == SPARK, instances, 0)
    event_voxels = np.isin(classes, (SPARK, WAVE, PUFF))

    rows = []
    seconds, _ = best_of(args.repeat, dilate, event_voxels, 0.2, 6.8, PX, DT)
    rows.append(("dilate(all events, 0.2 µm, 6.8 ms)", seconds, ""))
    seconds, _ = best_of(args.repeat, dilate, event_voxels, 1.0, 30.0, PX, DT)
    rows.append(("dilate(all events, 1.0 µm, 30 ms)", seconds, ""))
    seconds, peaks = best_of(args.repeat, find_spark_peaks, movie, spark_instances, PX, DT)
    rows.append(("find_spark_peaks", seconds, f"{len(peaks)} peaks in {len(np.unique(peaks[:, 3]))} sparks"))
    seconds, out = best_of(args.repeat, prepare_labels, classes, events, None, PX, DT, raw)
    rows.append(("prepare_labels raw (ignore shells)", seconds, f"{int((out == 4).sum())} ignore voxels"))
    seconds, out = best_of(args.repeat, prepare_labels, classes, events, movie, PX, DT, peaks_config)
    rows.append(("prepare_labels peaks", seconds, f"{int((out == 1).sum())} spark voxels"))
    seconds, _ = best_of(args.repeat, prepare_labels, classes, None, movie, PX, DT,
                         LabelConfig(sparks_type="peaks", only_sparks=True))
    rows.append(("prepare_labels peaks, only_sparks, event_label=None", seconds, ""))

    with tempfile.TemporaryDirectory() as tmp:
        raw_dir = Path(tmp) / "raw"
        write_stack(raw_dir / "01_video.tif", movie, PX, DT)
        write_class_label(raw_dir / "01_class_label.tif", classes, PX, DT)
        write_event_label(raw_dir / "01_event_label.tif", events, PX, DT)
        seconds, _ = best_of(args.repeat, prepare_dataset_labels, raw_dir, Path(tmp) / "out", peaks_config, overwrite=True)
        rows.append(("prepare_dataset_labels peaks (1 movie, TIFF in/out)", seconds, ""))

    seconds, (n_peaks, _) = best_of(1, whole_volume_reference_steps, movie, classes)
    rows.append(("reference-style whole-volume steps (for scale, 1 run)", seconds, f"{n_peaks} maxima"))

    width = max(len(name) for name, *_ in rows)
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:7.3f} s  {note}")


if __name__ == "__main__":
    main()

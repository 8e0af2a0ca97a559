"""How the detector's masks change the measurements of the events a person annotated.

For each annotated folder: ``casparks detect`` with a model, ``casparks measure`` on the
annotation (with the dark level the detection read), ``casparks evaluate --pairs``; then, for each one-to-one pair of one class, the detected
event's measurement against the annotated event's (the same movie, the same measuring code: only
the masks differ). Prints per class and column the median relative difference (bias), the
median absolute relative difference, and how often one of the two is empty.

    python benchmarks/bench_detected_masks.py --truth data/phys/val data/sim-v2/val --work /tmp/masks
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import casparks

COLUMNS = ("amplitude_dff", "fwhm_um", "fwhm_y_um", "fdhm_ms", "time_to_peak_ms", "decay_tau_ms", "duration_ms",
           "snr", "speed_um_per_s")


def paired_measurements(truth: Path, work: Path, model: str | None, reuse: bool = False) -> pd.DataFrame:
    """Each one-to-one pair of one class with both events' measurements (``_annotated``, ``_detected``).

    The annotation is measured with the dark level the detection read from the same movie
    (``offset_adu: auto`` reads it with each side's own events left out: 174 against 179 ADU on
    one movie, 4 % on every amplitude), so that only the masks differ."""
    import shutil

    from casparks.dataset import list_samples
    from casparks.evaluation import read_annotation
    from casparks.labelled import measure_labels
    from casparks.measure import MeasureConfig

    measured, detected = work / "annotated", work / "detected"
    if not reuse:  # results of another model or data set must not pass for these
        shutil.rmtree(work, ignore_errors=True)
    if not any(detected.glob("*_detection.json")):
        casparks.detect_files([truth], detected, model) if model else casparks.detect_files([truth], detected)
    if not any(measured.glob("*_detection.json")):
        for sample in list_samples(truth, require=("video", "class_label")):
            movie = casparks.read_movie(sample.video)
            level = (casparks.read_detection(detected / f"{movie.name}_detection.json", probabilities=False)
                     .dark_level or {}).get("adu") or 0.0
            classes, events = read_annotation(sample)
            casparks.write_detection(measure_labels(movie, classes, events, config=MeasureConfig(offset_adu=level)),
                                     measured)
    pairs = casparks.evaluate(truth, detected).pairs
    annotated = casparks.read_events(measured).add_suffix("_annotated")
    found = casparks.read_events(detected).add_suffix("_detected")
    both = (pairs.merge(annotated, how="left", left_on=["truth_movie", "truth_id"],
                        right_on=["movie_annotated", "id_annotated"])
                 .merge(found, how="left", left_on=["pred_movie", "pred_id"],
                        right_on=["movie_detected", "id_detected"]))
    return both[both["outcome"] == "paired"]


def summarise(paired: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cls, group in paired.groupby("truth_class"):
        for column in COLUMNS:
            a, d = group[f"{column}_annotated"].to_numpy(float), group[f"{column}_detected"].to_numpy(float)
            if np.isnan(a).all() and np.isnan(d).all():
                continue
            both = ~np.isnan(a) & ~np.isnan(d) & (a != 0)
            rel = d[both] / a[both] - 1
            rows.append({"class": cls, "column": column, "pairs": len(group),
                         "bias_%": 100 * np.median(rel) if rel.size else np.nan,
                         "abs_%": 100 * np.median(np.abs(rel)) if rel.size else np.nan,
                         "empty_annotated_%": 100 * np.isnan(a).mean(), "empty_detected_%": 100 * np.isnan(d).mean()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", nargs="+", type=Path, required=True, help="annotated data-set folders")
    parser.add_argument("--work", type=Path, required=True, help="folder for the measured and detected results")
    parser.add_argument("--model", default=None, help="model for detect (default: the default model)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the detections and measurements of an earlier run in --work (same model and data)")
    args = parser.parse_args()
    start = time.perf_counter()
    for truth in args.truth:
        paired = paired_measurements(truth, args.work / f"{truth.parent.name}-{truth.name}", args.model, args.reuse)
        table = summarise(paired)
        print(f"\n{truth} ({paired['truth_movie'].nunique()} movies, {len(paired)} paired events)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

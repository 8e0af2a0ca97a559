"""Does the puff transient test (``puff_min_transient_snr``) mean the same at every pixel size?

    python models/puff_snr_by_sampling.py --val 0.3=data/phys/puffs-030 --val 0.2=data/phys/puffs \
        [--model sim-v3] [--probabilities probs/] [--alphas 0 0.5 1]

Why: :func:`casparks.postprocess.transient_snr` divides a candidate puff's rise by one pixel's
noise, so the same puff seen at finer pixels (fewer photons each) might score lower. This script
post-processes each annotated movie with the model's card but the transient test off, computes
every predicted puff's transient SNR as the card's test would, and pairs it with the annotated
puffs (IoMin ≥ 0.5, any annotated puff). Per ``--val`` group it prints the median SNR of the
predicted puffs that match and of those that do not, and the puff F1 over thresholds with the SNR
scaled by (pixel size / 0.2 µm)^alpha: alpha 0 is the test as it is, 1 a noise per µm² instead of
per pixel. ``--probabilities`` is ``casparks calibrate``'s folder of kept probabilities (read
back when the key matches, otherwise computed and kept).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

THRESHOLDS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)


def puff_rows(model: str, folder: Path, probabilities: Path | None) -> tuple[list[dict], int]:
    """(one row per predicted puff: pixel size, SNR, matched; the number of annotated puffs)."""
    from scipy import ndimage

    from casparks.calibration import _annotations, _kept_probabilities, _movies, _samples
    from casparks.classes import IGNORE, PUFF
    from casparks.detection import DetectSettings, load_detector
    from casparks.metrics import label_instances, overlaps
    from casparks.postprocess import postprocess, transient_snr

    detector = load_detector(model, settings=DetectSettings(measure={"offset_adu": 0.0}))
    config = dataclasses.replace(detector.postprocess, puff_min_transient_snr=None)
    samples = _samples([folder])
    movies = _movies(samples, None, None)
    rows, n_true = [], 0
    for sample, movie, (truth, truth_events) in zip(samples, movies, _annotations(samples, movies)):
        probs = (np.load(_kept_probabilities(detector, movie, sample.video, probabilities)).astype(np.float32)
                 if probabilities
                 else detector.detect(movie, save_probabilities=True).probabilities)
        found = postprocess(probs, config, movie.pixel_size_um, movie.frame_interval_ms, movie=movie.data)
        dt = movie.frame_interval_ms
        window = max(3, round(config.transient_window_ms / dt))
        gap = max(1, round(config.transient_gap_ms / dt))
        truth_labels, truth_codes = label_instances(truth, truth_events)
        pred_labels, pred_codes = label_instances(found.class_label, found.event_label)
        iomin = overlaps(truth_labels, truth_codes.size, pred_labels, pred_codes.size, truth == IGNORE).iomin
        n_true += int(np.sum(truth_codes == PUFF))
        data = np.asarray(movie.data)
        for j, box in enumerate(ndimage.find_objects(pred_labels)):
            if box is None or pred_codes[j] != PUFF:
                continue
            lo, hi = np.array([s.start for s in box]), np.array([s.stop for s in box])
            snr = transient_snr(data, found.event_label, pred_labels[box] == j + 1, lo, hi, window, gap)
            matched = bool(np.any((iomin[:, j] >= 0.5) & (truth_codes == PUFF)))
            rows.append({"pixel_size_um": movie.pixel_size_um, "snr": snr, "matched": matched})
    return rows, n_true


def f1_by_threshold(rows: list[dict], n_true: int, alpha: float) -> list[float]:
    """Puff F1 at each of :data:`THRESHOLDS` with the SNR scaled by (pixel size / 0.2)^alpha."""
    scores = []
    for threshold in THRESHOLDS:
        kept = [r for r in rows if r["snr"] * (r["pixel_size_um"] / 0.2) ** alpha >= threshold]
        tp = sum(r["matched"] for r in kept)
        fp = len(kept) - tp
        fn = max(n_true - tp, 0)
        scores.append(2 * tp / max(2 * tp + fp + fn, 1))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", action="append", required=True, metavar="NAME=DIR",
                        help="a group of annotated movies (one sampling), named")
    parser.add_argument("--model", default="sim-v3")
    parser.add_argument("--probabilities", type=Path, help="casparks calibrate's --probabilities folder")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = parser.parse_args()
    groups = {}
    for item in args.val:
        name, _, folder = item.partition("=")
        if not folder:
            parser.error(f"--val {item}: give NAME=DIR")
        groups[name] = puff_rows(args.model, Path(folder), args.probabilities)
    for name, (rows, n_true) in groups.items():
        matched = [r["snr"] for r in rows if r["matched"]]
        other = [r["snr"] for r in rows if not r["matched"]]
        print(f"{name}: {n_true} annotated puffs; predicted puffs matching one {len(matched)} (median SNR "
              f"{np.median(matched) if matched else float('nan'):.1f}), matching none {len(other)} (median SNR "
              f"{np.median(other) if other else float('nan'):.1f})")
    header = " | ".join(f"{t:g}" for t in THRESHOLDS)
    for alpha in args.alphas:
        print(f"\nSNR × (pixel size / 0.2 µm)^{alpha:g}: puff F1 at thresholds {header}")
        table = {name: f1_by_threshold(rows, n_true, alpha) for name, (rows, n_true) in groups.items()}
        for name, scores in table.items():
            print(f"  {name}: " + " | ".join(f"{s:.2f}" for s in scores))
        print("  mean: " + " | ".join(f"{s:.3f}" for s in np.mean(list(table.values()), axis=0)))


if __name__ == "__main__":
    main()

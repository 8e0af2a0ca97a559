"""How should a movie sampled finer than any training movie be read: resampled as it is, or
averaged first, and over how much?

    python models/fine_sampling.py --val 1ms=data/sim-1ms --val 0.05um=data/phys-005 \
        [--model sim-v3] [--targets none finest native]

Why: detection resamples a movie to the model's native sampling (0.2 µm / 6.8 ms for sim-v3)
with linear interpolation, which reads the two samples beside each new one and drops the rest.
A 1 ms movie then keeps the noise of one 1 ms frame, where the network learned movies of 2.5 ms
or more. This script detects each annotated movie three ways and prints the one-to-one scores
per class (precision, recall, F1) of each, and the 95 % bootstrap interval (over movies, paired)
of each reading's F1 minus the first's, per group and over all groups:

* ``none``: resampled as it is (before session 35);
* ``finest``: averaged over as many samples as bring it to the model's finest training
  sampling (card ``trained_sampling``: 2.5 ms, 0.1 µm), then resampled: the default since
  session 35 (``DetectSettings.average_fine_sampling``);
* ``native``: averaged over as many samples as span the model's native sampling (6.8 ms,
  0.2 µm), then resampled.

Only the axes sampled finer than the finest training movies are averaged, in both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

TARGETS = ("none", "finest", "native")


def counts_by_target(model: str, folder: Path, targets: list[str]) -> dict[str, list]:
    """{target: [EventCounts of each movie]} for the annotated movies of ``folder``."""
    from casparks.calibration import _annotations, _movies, _samples
    from casparks.detection import DetectSettings, load_detector
    from casparks.evaluation import evaluate_movie
    from casparks.preprocess import averaging_widths

    detector = load_detector(model, settings=DetectSettings(measure={"offset_adu": 0.0}))
    trained = detector.info.card["trained_sampling"]
    finest = (min(trained["pixel_size_um"]), min(trained["frame_interval_ms"]))
    reach = {"finest": finest, "native": detector.native_sampling}
    samples = _samples([folder])
    movies = _movies(samples, None, None)
    out: dict[str, list] = {t: [] for t in targets}
    for sample, movie, (truth, truth_events) in zip(samples, movies, _annotations(samples, movies)):
        for target in targets:
            widths = (None if target == "none"
                      else averaging_widths(movie.pixel_size_um, movie.frame_interval_ms, finest, to=reach[target]))
            detector._averaging = lambda _movie, widths=widths: widths  # this run's reading of every movie
            start = time.perf_counter()
            found = detector.detect(movie)
            scored = evaluate_movie(truth, truth_events, found.class_label, found.event_label, id=sample.id)
            out[target].append(scored.counts)
            o2o = scored.scores["classes"]["spark"]["one_to_one"]
            print(f"  {folder.name}/{sample.id} {target}: widths {widths}, spark P {o2o['precision']:.2f} "
                  f"R {o2o['recall']:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def main() -> None:
    from casparks.metrics import EventCounts, scores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", action="append", required=True, metavar="NAME=DIR",
                        help="a group of annotated movies, named")
    parser.add_argument("--model", default="sim-v3")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    args = parser.parse_args()
    pooled: dict[str, list] = {}
    for item in args.val:
        name, _, folder = item.partition("=")
        if not folder:
            parser.error(f"--val {item}: give NAME=DIR")
        by_target = counts_by_target(args.model, Path(folder), args.targets)
        print(f"\n{name} ({len(next(iter(by_target.values())))} movies): one-to-one precision / recall / F1")
        for target, counts in by_target.items():
            classes = scores(sum(counts, EventCounts()))["classes"]
            cells = []
            for kind in ("spark", "puff", "wave"):
                o2o = classes[kind]["one_to_one"]
                cells.append(f"{kind} {o2o['precision']:.2f} / {o2o['recall']:.2f} / {o2o['f1']:.3f} "
                             f"(n {classes[kind]['annotations']})")
            print(f"  {target:7s} " + " | ".join(cells), flush=True)
        f1s = {t: [scores(sum(c, EventCounts()))["classes"][k]["one_to_one"]["f1"] for k in ("spark", "puff", "wave")]
               for t, c in by_target.items()}
        print("  mean F1 over classes with events: " + ", ".join(
            f"{t} {np.nanmean(v):.3f}" for t, v in f1s.items()))
        print_paired(by_target)
        for target, counts in by_target.items():
            pooled.setdefault(target, []).extend(counts)
    if len(args.val) > 1:
        print(f"\nall groups ({len(next(iter(pooled.values())))} movies)")
        print_paired(pooled)


def print_paired(by_target: dict[str, list]) -> None:
    """95 % bootstrap intervals (over movies, paired) of each target's F1 minus the first's."""
    from casparks.metrics import f1_intervals

    first, *others = by_target
    for target in others:
        intervals = f1_intervals(by_target[target], by_target[first]) or {}
        print(f"  {target} − {first}, 95 % paired interval: " + " | ".join(
            f"{k} [{v[0]:+.3f}, {v[1]:+.3f}]" if v else f"{k} -" for k, v in intervals.items()), flush=True)


if __name__ == "__main__":
    main()

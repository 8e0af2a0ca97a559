"""Calibrate a model's post-processing thresholds on annotated validation movies (for its card).

    python models/calibrate.py --model runs/sim-v2 --val data/sim-v2/val
                               [--event-thresholds 0.9 0.95 0.97 0.975 0.98 0.985]
                               [--puff-thresholds none 0.9 0.95] [--spark-thresholds none 0.9]
                               [--json OUT.json]

Why: a network trained with class weights over-predicts rare classes, so its event probability
needs a threshold chosen on annotated movies (sim-v1's was 0.975, with 0.95 for puffs). The
network runs once per movie (as ``casparks detect`` runs it: the model's windows, resampling and
precision); each pair of thresholds then only post-processes and scores (``casparks.postprocess``,
``casparks.evaluate_movie``, counts summed over the movies). Prints one row per pair (one-to-one
F1 per class and their mean; reference F1 beside) and the pair with the best mean one-to-one F1,
as the card's ``postprocess:`` lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np


def threshold(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a bundled model, a .ckpt file or a run folder")
    parser.add_argument("--val", type=Path, required=True, help="annotated movies (the original layout)")
    parser.add_argument("--event-thresholds", type=float, nargs="+", default=[0.9, 0.95, 0.97, 0.975, 0.98, 0.985])
    parser.add_argument("--puff-thresholds", type=threshold, nargs="+", default=[None, 0.9, 0.95],
                        help="'none': the event threshold")
    parser.add_argument("--spark-thresholds", type=threshold, nargs="+", default=[None, 0.9, 0.8],
                        help="'none': the event threshold")
    parser.add_argument("--edge-frames", type=int, default=None,
                        help="mirrored frames before and after each movie (default: the model's ignore_frames_loss)")
    parser.add_argument("--window", type=int, default=None, help="frames per inference window (default: the card's)")
    parser.add_argument("--overlap", type=float, default=None, help="window overlap (default: the card's)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()

    from casparks import read_movie
    from casparks.dataset import list_samples
    from casparks.detection import DetectSettings, load_detector
    from casparks.evaluation import evaluate_movie
    from casparks.io import read_stack
    from casparks.metrics import scores
    from casparks.postprocess import postprocess

    detector = load_detector(args.model, device="auto", settings=DetectSettings(
        edge_frames=args.edge_frames, window_frames=args.window, overlap=args.overlap))
    movies = []
    start = time.perf_counter()
    for sample in list_samples(args.val, require=("video", "class_label", "event_label")):
        movie = read_movie(sample.video)
        probabilities = detector.detect(movie, save_probabilities=True).probabilities
        movies.append((movie, probabilities, np.asarray(read_stack(sample.class_label)),
                       np.asarray(read_stack(sample.event_label))))
    print(f"# model {args.model}: network run on {len(movies)} movies of {args.val} in "
          f"{time.perf_counter() - start:.0f} s; card settings now: {detector.postprocess.to_dict()}")
    print("| event threshold | spark threshold | puff threshold | F1 spark | wave | puff | mean | reference F1 spark / wave / puff |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for event, spark, puff in itertools.product(args.event_thresholds, args.spark_thresholds, args.puff_thresholds):
        config = dataclasses.replace(detector.postprocess, event_threshold=event, spark_threshold=spark,
                                     puff_threshold=puff)
        total = None
        for movie, probabilities, truth_classes, truth_events in movies:
            found = postprocess(probabilities, config, movie.pixel_size_um, movie.frame_interval_ms, movie=movie.data)
            counts = evaluate_movie(truth_classes, truth_events, found.class_label, found.event_label).counts
            total = counts if total is None else total + counts
        per_class = scores(total)["classes"]
        o2o = {c: per_class[c]["one_to_one"]["f1"] for c in ("spark", "wave", "puff")}
        ref = {c: per_class[c]["reference"]["f1"] for c in ("spark", "wave", "puff")}
        defined = [v for v in o2o.values() if v == v and v is not None]
        mean = float(np.mean(defined)) if defined else float("nan")
        rows.append({"event_threshold": event, "spark_threshold": spark, "puff_threshold": puff, "one_to_one_f1": o2o,
                     "reference_f1": ref, "mean_one_to_one_f1": mean})
        show = " | ".join(f"{v:.2f}" if v == v and v is not None else "–" for v in o2o.values())
        shown_ref = " / ".join(f"{v:.2f}" if v == v and v is not None else "–" for v in ref.values())
        named = " | ".join("–" if v is None else f"{v:g}" for v in (spark, puff))
        print(f"| {event:g} | {named} | {show} | {mean:.3f} | {shown_ref} |", flush=True)
    best = max(rows, key=lambda r: r["mean_one_to_one_f1"] if r["mean_one_to_one_f1"] == r["mean_one_to_one_f1"] else -1)
    print(f"\nbest mean one-to-one F1 {best['mean_one_to_one_f1']:.3f}; for the model card:\npostprocess:\n"
          f"  event_threshold: {best['event_threshold']:g}\n"
          + "".join(f"  {name}: {best[name]:g}\n" for name in ("spark_threshold", "puff_threshold")
                    if best[name] is not None))
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "val": str(args.val), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

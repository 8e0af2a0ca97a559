"""Calibrate a model's post-processing thresholds on annotated validation movies (for its card).

    python models/calibrate.py --model runs/sim-v2 --val data/sim-v2/val [data/sim-v2/val-other ...]
                               [--event-thresholds 0.9 0.95 0.97 0.975 0.98 0.985]
                               [--puff-thresholds none 0.9 0.95] [--spark-thresholds none 0.9]
                               [--grid spark_min_diameter_um=0.6,1.2 puff_min_mean_probability=0,0.45 ...]
                               [--json OUT.json] [--workers N]

Why: a network trained with class weights over-predicts rare classes, so its event probability
needs a threshold chosen on annotated movies (sim-v1's was 0.975, with 0.95 for puffs). The
network runs once per movie (as ``casparks detect`` runs it: the model's windows, resampling and
precision); each combination of thresholds (and of the ``--grid`` values of any other
post-processing option, e.g. the minimum spark size in µm and ms) then only post-processes and
scores (``casparks.postprocess``, ``casparks.evaluate_movie``, counts summed over the movies of
every ``--val`` folder). Prints one row per combination (one-to-one F1 per class and their mean;
reference F1 beside) and the best mean one-to-one F1, as the card's ``postprocess:`` lines.

Post-processing is single-threaded, so ``--workers N`` scores N combinations at once in forked
processes, which share the movies and probabilities the network made (copy-on-write: nothing is
copied or pickled but the settings and the counts). The rows are the same as with one worker.
Where the system cannot fork (Windows) the combinations run one after the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

#: (movie, probabilities, truth classes, truth events) of each validation movie: a module global,
#: so that forked workers read the parent's arrays instead of receiving copies
MOVIES: list[tuple] = []


def threshold(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def grid_value(text: str) -> float | str | None:
    """A number, none (the option off), or a word for the options that take one (e.g.
    spark_split_on=movie,probability)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return text.strip()


def shown(value: float | str | None) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def grid_option(text: str) -> tuple[str, list[float | str | None]]:
    key, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=V1,V2,...")
    return key.strip(), [grid_value(v) for v in values.split(",")]


def score(config):
    """Event counts of every movie of :data:`MOVIES` post-processed with ``config``, summed."""
    from casparks.evaluation import evaluate_movie
    from casparks.postprocess import postprocess

    total = None
    for movie, probabilities, truth_classes, truth_events in MOVIES:
        found = postprocess(probabilities, config, movie.pixel_size_um, movie.frame_interval_ms, movie=movie.data)
        counts = evaluate_movie(truth_classes, truth_events, found.class_label, found.event_label).counts
        total = counts if total is None else total + counts
    return total


def scored(configs: list, workers: int):
    """:func:`score` of each config, in order; ``workers`` forked processes where possible."""
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods() or len(configs) < 2:
        yield from map(score, configs)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(configs))) as pool:
        yield from pool.imap(score, configs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a bundled model, a .ckpt file or a run folder")
    parser.add_argument("--val", type=Path, nargs="+", required=True,
                        help="folders of annotated movies (the original layout), scored together")
    parser.add_argument("--event-thresholds", type=float, nargs="+", default=[0.9, 0.95, 0.97, 0.975, 0.98, 0.985])
    parser.add_argument("--puff-thresholds", type=threshold, nargs="+", default=[None, 0.9, 0.95],
                        help="'none': the event threshold")
    parser.add_argument("--spark-thresholds", type=threshold, nargs="+", default=[None, 0.9, 0.8],
                        help="'none': the event threshold")
    parser.add_argument("--edge-frames", type=int, default=None,
                        help="mirrored frames before and after each movie (default: the model's ignore_frames_loss)")
    parser.add_argument("--window", type=int, default=None, help="frames per inference window (default: the card's)")
    parser.add_argument("--overlap", type=float, default=None, help="window overlap (default: the card's)")
    parser.add_argument("--grid", type=grid_option, nargs="+", default=[], metavar="KEY=V1,V2",
                        help="also try these values of other post-processing options (e.g. spark_min_duration_ms=10,20)")
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--workers", type=int, default=1,
                        help="combinations post-processed and scored at once, in forked processes (default 1)")
    args = parser.parse_args()

    from casparks import read_movie
    from casparks.dataset import list_samples
    from casparks.detection import DetectSettings, load_detector
    from casparks.io import read_stack
    from casparks.metrics import scores
    from casparks.postprocess import PostprocessConfig

    own_options = ("event_threshold", "spark_threshold", "puff_threshold")  # each has its own option above
    options = [f.name for f in dataclasses.fields(PostprocessConfig) if f.name not in own_options]
    for key, _ in args.grid:
        if key not in options:
            parser.error(f"--grid {key}: not a post-processing option here ({', '.join(options)})")

    detector = load_detector(args.model, device="auto", settings=DetectSettings(
        edge_frames=args.edge_frames, window_frames=args.window, overlap=args.overlap))
    movies = MOVIES
    movies.clear()
    start = time.perf_counter()
    samples = [s for folder in args.val for s in list_samples(folder, require=("video", "class_label", "event_label"))]
    for sample in samples:
        movie = read_movie(sample.video)
        probabilities = detector.detect(movie, save_probabilities=True).probabilities
        movies.append((movie, probabilities, np.asarray(read_stack(sample.class_label)),
                       np.asarray(read_stack(sample.event_label))))
    print(f"# model {args.model}: network run on {len(movies)} movies of {', '.join(map(str, args.val))} in "
          f"{time.perf_counter() - start:.0f} s; card settings now: {detector.postprocess.to_dict()}")
    grid_keys = [key for key, _ in args.grid]
    print("| event threshold | spark threshold | puff threshold | " + "".join(f"{k} | " for k in grid_keys)
          + "F1 spark | wave | puff | mean | reference F1 spark / wave / puff |")
    print("|---|---|---|" + "---|" * len(grid_keys) + "---|---|---|---|---|")
    rows = []
    combos = list(itertools.product(args.event_thresholds, args.spark_thresholds, args.puff_thresholds,
                                    *(v for _, v in args.grid)))
    configs = [dataclasses.replace(detector.postprocess, event_threshold=event, spark_threshold=spark,
                                   puff_threshold=puff, **dict(zip(grid_keys, values)))
               for event, spark, puff, *values in combos]
    for (event, spark, puff, *values), total in zip(combos, scored(configs, args.workers)):
        extra = dict(zip(grid_keys, values))
        per_class = scores(total)["classes"]
        # precision and recall beside F1 say whether a class lost its F1 to misses or to false events
        one_to_one = {name: {c: per_class[c]["one_to_one"][name] for c in ("spark", "wave", "puff")}
                      for name in ("f1", "precision", "recall")}
        o2o = one_to_one["f1"]
        ref = {c: per_class[c]["reference"]["f1"] for c in ("spark", "wave", "puff")}
        defined = [v for v in o2o.values() if v == v and v is not None]
        mean = float(np.mean(defined)) if defined else float("nan")
        rows.append({"event_threshold": event, "spark_threshold": spark, "puff_threshold": puff, **extra, "one_to_one_f1": o2o,
                     "one_to_one_precision": one_to_one["precision"], "one_to_one_recall": one_to_one["recall"],
                     "reference_f1": ref, "mean_one_to_one_f1": mean})
        show = " | ".join(f"{v:.2f}" if v == v and v is not None else "–" for v in o2o.values())
        shown_ref = " / ".join(f"{v:.2f}" if v == v and v is not None else "–" for v in ref.values())
        named = " | ".join(shown(v) for v in (spark, puff, *values))
        print(f"| {event:g} | {named} | {show} | {mean:.3f} | {shown_ref} |", flush=True)
    best = max(rows, key=lambda r: r["mean_one_to_one_f1"] if r["mean_one_to_one_f1"] == r["mean_one_to_one_f1"] else -1)
    print(f"\nbest mean one-to-one F1 {best['mean_one_to_one_f1']:.3f}; for the model card:\npostprocess:\n"
          f"  event_threshold: {best['event_threshold']:g}\n"
          + "".join(f"  {name}: {shown(best[name])}\n" for name in ("spark_threshold", "puff_threshold", *grid_keys)
                    if best[name] is not None))
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "val": [str(v) for v in args.val], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""Amplitude error of detected sparks against the truth: how far the events table's ``amplitude_dff``
is from the annotated spark's true ΔF/F0, with the dark level given three ways (``--offset 0``,
``--offset auto``, the true offset). This is the README's table "Median amplitude error of
detected sparks paired with their annotated event" (section "Detection outputs").

Each detected spark is paired one-to-one with an annotated spark as ``casparks evaluate`` pairs
events (``casparks.metrics``: IoMin = |A∩P| / min(|A|, |P|) ≥ 0.5, a Hungarian assignment that
puts pairs of the same class first; only spark-spark pairs count here); the annotated instance's
event id names its row of the truth table (``NN_events.csv``: ``event_id``, and
``amplitude_dff0``, or ``peak_dff0`` in folders of ``benchmarks/physical_sim.py``: the largest
noise-free sample of the spark). Printed per detection folder: movies, paired sparks, median
relative error (detected / true − 1) and median absolute relative error.

``--detect-true-offset OUT`` first detects every movie of ``--truth`` with its own true dark
level (``offset_adu`` of its ``NN_events.csv``, as the physical simulator writes it), which
``casparks detect --offset ADU`` cannot do for a folder of movies with different offsets.

    casparks detect data/phys/ref/*_video.tif --out pred/ref-0 --offset 0
    casparks detect data/phys/ref/*_video.tif --out pred/ref-auto
    python benchmarks/bench_amplitude.py --truth data/phys/ref --detect-true-offset pred/ref-true \\
        --pred 0=pred/ref-0 auto=pred/ref-auto true=pred/ref-true --json amplitude-ref.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from casparks.classes import IGNORE, SPARK
from casparks.io import read_label_stack
from casparks.metrics import IOMIN_THRESHOLD, label_instances, one_to_one_pairs, overlaps

#: truth columns holding a spark's true amplitude, the first present is used
TRUTH_COLUMNS = ("amplitude_dff0", "peak_dff0")


def movies(truth: Path) -> list[str]:
    """Stems (``NN``) of the truth folder's movies."""
    stems = [video.name[: -len("_video.tif")] for video in sorted(truth.glob("*_video.tif"))]
    if not stems:
        raise SystemExit(f"no *_video.tif in {truth}")
    return stems


def instance_ids(labels: np.ndarray, n: int, events: np.ndarray) -> np.ndarray:
    """The original event id of each compact instance 1..n (0 where no id covers it)."""
    flat = labels.reshape(-1)
    ids = np.zeros(n, dtype=np.int64)
    on = np.flatnonzero(flat)
    # one voxel per instance: an instance is one (event id, class) pair, so any voxel names its id
    ids[flat[on] - 1] = events.reshape(-1)[on]
    return ids


def paired_sparks(truth_classes: np.ndarray, truth_events: np.ndarray, pred_classes: np.ndarray,
                  pred_events: np.ndarray, threshold: float = IOMIN_THRESHOLD) -> list[tuple[int, int, float]]:
    """(truth event id, detected event id, IoMin) of the one-to-one spark-spark pairs of one movie,
    paired as :func:`casparks.metrics.count_events` pairs them."""
    truth_labels, truth_codes = label_instances(truth_classes, truth_events)
    pred_labels, pred_codes = label_instances(pred_classes, pred_events)
    ov = overlaps(truth_labels, truth_codes.size, pred_labels, pred_codes.size, truth_classes == IGNORE)
    iomin = ov.iomin
    ti, pj = one_to_one_pairs(iomin, threshold, truth_codes[:, None] == pred_codes[None, :])
    truth_ids = instance_ids(truth_labels, truth_codes.size, truth_events)
    pred_ids = instance_ids(pred_labels, pred_codes.size, pred_events)
    return [(int(truth_ids[i]), int(pred_ids[j]), float(iomin[i, j])) for i, j in zip(ti, pj)
            if truth_codes[i] == SPARK and pred_codes[j] == SPARK]


def pairs_table(truth: Path, pred: Path, stems: list[str], threshold: float) -> pd.DataFrame:
    """One row per paired spark: movie, ids, IoMin, detected and true amplitude, relative error."""
    rows = []
    for stem in stems:
        table = pd.read_csv(truth / f"{stem}_events.csv")
        column = next((c for c in TRUTH_COLUMNS if c in table), None)
        if column is None:
            raise SystemExit(f"{truth / f'{stem}_events.csv'} has none of the columns {', '.join(TRUTH_COLUMNS)}")
        true_amp = table.drop_duplicates("event_id").set_index("event_id")[column]
        name = f"{stem}_video"
        found = pd.read_csv(pred / f"{name}_events.csv").set_index("id")["amplitude_dff"]
        pairs = paired_sparks(read_label_stack(truth / f"{stem}_class_label.tif"),
                              read_label_stack(truth / f"{stem}_event_label.tif"),
                              read_label_stack(pred / f"{name}_class_label.tif"),
                              read_label_stack(pred / f"{name}_event_label.tif"), threshold)
        for truth_id, pred_id, iomin in pairs:
            rows.append({"movie": stem, "truth_id": truth_id, "pred_id": pred_id, "iomin": round(iomin, 3),
                         "true_amplitude": true_amp.get(truth_id, np.nan),
                         "amplitude_dff": found.get(pred_id, np.nan)})
    frame = pd.DataFrame(rows, columns=["movie", "truth_id", "pred_id", "iomin", "true_amplitude", "amplitude_dff"])
    frame["error"] = frame["amplitude_dff"] / frame["true_amplitude"] - 1.0
    return frame


def summary(name: str, frame: pd.DataFrame, n_movies: int) -> dict:
    error = frame["error"].replace([np.inf, -np.inf], np.nan).dropna()
    return {"pred": name, "movies": n_movies, "paired_sparks": len(frame),
            # pairs whose detected amplitude (NaN: no estimate) or truth row is missing
            "no_error": int(len(frame) - len(error)),
            "median_error": float(error.median()) if len(error) else None,
            "median_abs_error": float(error.abs().median()) if len(error) else None}


def detect_true_offset(truth: Path, out: Path, stems: list[str], model: str | None, device: str) -> None:
    """Detect each movie with its true dark level (``offset_adu`` of its events table)."""
    import casparks
    from casparks.detection import DEFAULT_MODEL

    for stem in stems:
        offsets = pd.read_csv(truth / f"{stem}_events.csv")["offset_adu"].dropna().unique()
        if len(offsets) != 1:
            raise SystemExit(f"{stem}_events.csv: expected one offset_adu, got {offsets.tolist()}")
        start = time.perf_counter()
        settings = casparks.DetectSettings(measure={"offset_adu": float(offsets[0])})
        found = casparks.detect(truth / f"{stem}_video.tif", model if model else DEFAULT_MODEL,
                                device=device, settings=settings)
        casparks.write_detection(found, out, overwrite=True)
        print(f"detected {stem} with offset {offsets[0]:.1f} ADU in {time.perf_counter() - start:.1f} s",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--truth", type=Path, required=True,
                        help="annotated folder: NN_video.tif, NN_class_label.tif, NN_event_label.tif, NN_events.csv")
    parser.add_argument("--pred", nargs="*", default=[], metavar="NAME=DIR",
                        help="detection folders (casparks detect --out DIR) of the truth folder's movies")
    parser.add_argument("--detect-true-offset", type=Path, metavar="OUT",
                        help="first detect each movie with its true offset_adu into OUT (added to --pred as 'true')")
    parser.add_argument("--model", default=None, help="model for --detect-true-offset (default: the default model)")
    parser.add_argument("--device", default="auto", help="device for --detect-true-offset")
    parser.add_argument("--iomin", type=float, default=IOMIN_THRESHOLD, help="IoMin needed to pair (default 0.5)")
    parser.add_argument("--show-pairs", type=int, default=0, metavar="N",
                        help="print the first N pairs of each folder (to check the pairing by eye)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the summaries as JSON")
    args = parser.parse_args()

    stems = movies(args.truth)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"truth {args.truth} ({len(stems)} movies)", flush=True)
    preds = []
    for item in args.pred:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--pred takes NAME=DIR, got {item!r}")
        preds.append((name, Path(folder)))
    if args.detect_true_offset:
        detect_true_offset(args.truth, args.detect_true_offset, stems, args.model, args.device)
        preds.append(("true", args.detect_true_offset))
    if not preds:
        parser.error("give --pred NAME=DIR or --detect-true-offset OUT")

    results, frames = [], []
    for name, folder in preds:
        frame = pairs_table(args.truth, folder, stems, args.iomin)
        frames.append((name, frame))
        results.append({**summary(name, frame, len(stems)), "folder": str(folder)})
    print("\n| detections | movies | paired sparks | median error | median absolute error |")
    print("|---|---|---|---|---|")
    for row in results:
        missing = f" ({row['no_error']} without an error)" if row["no_error"] else ""
        error = "n/a" if row["median_error"] is None else f"{row['median_error']:+.1%}"
        absolute = "n/a" if row["median_abs_error"] is None else f"{row['median_abs_error']:.1%}"
        print(f"| {row['pred']} ({row['folder']}) | {row['movies']} | {row['paired_sparks']}{missing} | "
              f"{error} | {absolute} |")
    for name, frame in frames if args.show_pairs else ():
        print(f"\nfirst {args.show_pairs} pairs of {name}:")
        print(frame.head(args.show_pairs).to_string(index=False))
    if args.json:
        args.json.write_text(json.dumps({"truth": str(args.truth), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

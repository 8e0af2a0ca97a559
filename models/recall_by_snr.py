"""Which simulated events does a detection find, by their signal-to-noise ratio?

    python models/recall_by_snr.py --truth data/sim-v1/test --pred det [--bins 5] [--iomin 0.5]

Why: one-to-one F1 says how many events a model misses, not which. The simulator writes, for
every event, its SNR (peak ΔF over the noise at its peak) in ``NN_events.csv``; this script
counts an annotated event as found when one predicted event (``<stem>_event_label.tif`` or
``NN_event_label.tif`` in ``--pred``, any class) covers at least ``--iomin`` of the smaller of the
two (IoMin, the reference's matching rule), and prints the fraction found per class and SNR
quantile bin. Only annotated events count (``labelled`` in the CSV).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def found_events(truth_events: np.ndarray, pred_events: np.ndarray, iomin: float) -> dict[int, bool]:
    """For each truth id present: does some predicted event overlap it with IoMin ≥ ``iomin``?"""
    from casparks.metrics import overlaps

    n_truth, n_pred = int(truth_events.max()), int(pred_events.max())
    pairs = overlaps(truth_events, n_truth, pred_events, n_pred, np.zeros(truth_events.shape, dtype=bool))
    found = (pairs.iomin >= iomin).any(axis=1)
    return {t + 1: bool(found[t]) for t in np.flatnonzero(pairs.truth_sizes)}


def table(truth: Path, pred: Path, iomin: float = 0.5, bins: int = 5):
    """One row per annotated event (class, snr, found) of every movie of ``truth``."""
    import pandas as pd

    from casparks.dataset import list_samples
    from casparks.io import read_stack

    predictions = {s.id: s for s in list_samples(pred, require=())}  # NN_… or NN_video_… files, by id
    rows = []
    for sample in list_samples(truth, require=("event_label",)):
        csv = sample.event_label.with_name(f"{sample.id}_events.csv")
        found_file = getattr(predictions.get(sample.id), "event_label", None)
        if not csv.is_file() or found_file is None:
            raise SystemExit(f"{sample.id}: needs {csv.name} in --truth and {sample.id}_video_event_label.tif in --pred")
        events = pd.read_csv(csv)
        events = events[events["labelled"].astype(bool)]
        found = found_events(np.asarray(read_stack(sample.event_label)), np.asarray(read_stack(found_file)), iomin)
        for row in events.itertuples():  # event_id is the annotated event's id in NN_event_label.tif
            if row.event_id in found:
                rows.append({"class": row._2, "snr": row.snr, "found": found[row.event_id]})
    frame = pd.DataFrame(rows)
    frame["snr_bin"] = pd.qcut(frame["snr"], bins, duplicates="drop")
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", type=Path, required=True, help="simulated movies with NN_events.csv")
    parser.add_argument("--pred", type=Path, required=True, help="casparks detect's output folder")
    parser.add_argument("--bins", type=int, default=5, help="SNR quantile bins (over all classes)")
    parser.add_argument("--iomin", type=float, default=0.5)
    args = parser.parse_args()
    frame = table(args.truth, args.pred, args.iomin, args.bins)
    summary = frame.groupby(["class", "snr_bin"], observed=True)["found"].agg(found="mean", events="size")
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()

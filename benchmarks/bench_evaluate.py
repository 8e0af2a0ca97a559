"""Speed of `evaluate_movie` on a full-size (500×64×512) movie with ~50 events.

    python benchmarks/bench_evaluate.py [--repeat 5]

Prints the best and median wall time of the event and voxel metrics (arrays in memory) and of a
folder evaluation of two such movies including TIFF reading.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from casparks.classes import IGNORE
from casparks.evaluation import evaluate, evaluate_movie
from casparks.io import write_class_label

SHAPE = (500, 64, 512)


def make_pair(seed: int, n_events: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    for _ in range(n_events):
        t, y, x = rng.integers(0, 480), rng.integers(0, 56), rng.integers(0, 504)
        code = int(rng.integers(1, 4))
        truth[t:t + 15, y:y + 6, x:x + 6] = code
        pred[t + 2:t + 17, y + 1:y + 7, x:x + 6] = code
    truth[:, :2] = IGNORE
    return truth, pred


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    truth, pred = make_pair(0)
    evaluate_movie(truth, None, pred, None)  # warm-up
    arrays = timed(lambda: evaluate_movie(truth, None, pred, None), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        truth_dir, pred_dir = Path(tmp, "truth"), Path(tmp, "pred")
        for sid in ("01", "02"):
            t, p = make_pair(int(sid))
            write_class_label(truth_dir / f"{sid}_class_label.tif", t)
            write_class_label(pred_dir / f"{sid}_video_class_label.tif", p)
        folder = timed(lambda: evaluate(truth_dir, pred_dir), args.repeat)
    for name, times in (("evaluate_movie, 1 movie in memory", arrays), ("evaluate, 2 movies from TIFF", folder)):
        print(f"{name:38s} best {min(times):.3f} s  median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()

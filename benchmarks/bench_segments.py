"""A long movie detected in segments against the same movie in one piece: labels, dark level and
every measurement column.

    python benchmarks/bench_segments.py [--frames 2600 --height 32 --width 128 --seed 3]
                                        [--segments 1000 200]

Simulates one default-preset movie (``casparks simulate``'s simulator), detects it with
``DetectSettings(segment_frames=None)`` (one piece) and with each ``--segments`` size, and prints
for each: the number of segments, whether the class and event labels are identical, the dark
levels, and per measurement column how many events differ (relative difference > 1e-6), the
median and the largest relative difference.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def compare(whole, parts) -> list[str]:
    """One line per measurement column in which the two tables differ."""
    a, b = whole.events.set_index("id"), parts.events.set_index("id")
    if list(a.index) != list(b.index):
        return [f"event ids differ: {len(a)} against {len(b)}"]
    lines = []
    for column in a.columns.drop("class"):
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        both = np.isfinite(x) & np.isfinite(y)
        nan_mismatch = int((np.isfinite(x) != np.isfinite(y)).sum())
        rel = np.abs(y[both] - x[both]) / np.maximum(np.abs(x[both]), 1e-9)
        if nan_mismatch or (rel > 1e-6).any():
            lines.append(f"  {column}: {int((rel > 1e-6).sum())} of {len(a)} differ, median relative "
                         f"{np.median(rel):.3g}, largest {rel.max():.3g}, NaN in one only {nan_mismatch}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2600)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--segments", type=int, nargs="+", default=[1000, 200])
    args = parser.parse_args()

    from casparks.detection import DetectSettings, load_detector
    from casparks.simulate import load_simulation_config, simulate_movie

    config = load_simulation_config("default", {"n_frames": args.frames, "height_px": args.height,
                                                "width_px": args.width})
    movie = simulate_movie(config, seed=[args.seed, 1]).movie
    print(f"# {platform.machine()}, {platform.processor() or ''}; movie {movie.shape} (seed {args.seed})")
    start = time.perf_counter()
    whole = load_detector(settings=DetectSettings(segment_frames=None)).detect(movie)
    print(f"one piece: {time.perf_counter() - start:.1f} s, {whole.counts}, dark level {whole.dark_level['adu']} ADU")
    for size in args.segments:
        detector = load_detector(settings=DetectSettings(segment_frames=size))
        start = time.perf_counter()
        parts = detector.detect(movie)
        print(f"segments of {size} frames ({len(detector._segments(movie))}): {time.perf_counter() - start:.1f} s, "
              f"{parts.counts}, dark level {parts.dark_level['adu']} ADU")
        print(f"  labels identical: classes {np.array_equal(parts.class_label, whole.class_label)}, "
              f"events {np.array_equal(parts.event_label, whole.event_label)}")
        print("\n".join(compare(whole, parts)) or "  every measurement identical")


if __name__ == "__main__":
    main()

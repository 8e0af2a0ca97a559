"""Time and peak memory of detecting a movie sampled finer than the model's training movies,
with and without the averaging that reads it into the trained range (session 35).

    python benchmarks/bench_fine_sampling.py MOVIE.tif on|off

One detection per process (peak memory is the process's): run it alternating, e.g.
``for i in 1 2; do for m in off on; do python benchmarks/bench_fine_sampling.py m.tif $m; done; done``.
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("movie", help="a movie sampled finer than sim-v3's training movies (e.g. 1 ms frames)")
    parser.add_argument("mode", choices=("on", "off"), help="average it into the trained range first, or not")
    args = parser.parse_args()
    from casparks.detection import DetectSettings, load_detector
    from casparks.io import read_movie

    path, mode = args.movie, args.mode
    detector = load_detector("sim-v3", settings=DetectSettings(average_fine_sampling=mode == "on",
                                                               measure={"offset_adu": 0.0}))
    movie = read_movie(path)
    start = time.perf_counter()
    found = detector.detect(movie)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    print(f"{mode}: {time.perf_counter() - start:.1f} s, peak {peak_gb:.2f} GB, {found.counts}, "
          f"stages {found.timings_s}, averaged {found.settings.get('averaged_tyx')}")


if __name__ == "__main__":
    main()

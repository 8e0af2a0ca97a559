"""Speed of post-processing (`casparks.postprocess`) on full-size (500×64×512) simulated movies.

The probabilities imitate a network's output: the truth classes of a simulated movie
(`casparks.simulate.simulate_movie`, ignore voxels as background) as one-hot logits of height
``--contrast``, smoothed by a Gaussian (σ = 1 voxel), plus Gaussian logit noise (σ ``--noise``,
smoothed over 1 voxel so that it makes small blobs, not single voxels), then a softmax. The
result has soft event borders, class confusions at the edges and noise fragments.

    python benchmarks/bench_postprocess.py [--repeat 3] [--presets default dense waves] [--seed 0]
        [--noise 1.0] [--contrast 6.0] [--frames 500]
    python benchmarks/bench_postprocess.py --movie data/sim-v1/test/08_video.tif --model sim-v3

The second form times a real network's output instead: the model's probabilities of the movie
(computed once, not timed), post-processed with the model's card, with the card's sparks
split as the reference does (on the movie smoothed by σ 0.6 µm × 20.4 ms, 1.8 µm apart),
without the card's wave-fringe rule, and without its puff transient test.

Prints, per preset, the best and median wall time of `probabilities_to_classes`,
`separate_events` (spark maxima in the movie, and in the spark probability) and `postprocess`,
the peak memory `postprocess` allocates (tracemalloc), the event counts, and the reference F1 of the result against the truth (a sanity check of the
output, not a measure of any network).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
import tracemalloc
from functools import partial

import numpy as np
from scipy import ndimage

from casparks.classes import CLASS_NAMES, IGNORE
from casparks.evaluation import evaluate_movie
from casparks.postprocess import (
    PostprocessConfig,
    postprocess,
    probabilities_to_classes,
    separate_events,
)
from casparks.simulate import simulate_movie
from casparks.simulation_params import load_simulation_config


def fake_probabilities(class_label: np.ndarray, contrast: float, noise: float, seed: int) -> np.ndarray:
    """(4, T, Y, X) float32 softmax of smoothed one-hot logits plus smoothed noise."""
    rng = np.random.default_rng(seed)
    logits = np.empty((4, *class_label.shape), dtype=np.float32)
    for code in range(4):
        channel = ((class_label == code) | ((code == 0) & (class_label == IGNORE))).astype(np.float32)
        ndimage.gaussian_filter(channel, 1.0, output=channel)
        channel *= contrast
        grain = rng.standard_normal(class_label.shape, dtype=np.float32)
        ndimage.gaussian_filter(grain, 1.0, output=grain)
        grain *= noise / grain.std()
        channel += grain
        logits[code] = channel
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def timed(function, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["default", "dense", "waves"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", type=float, default=6.0, help="one-hot logit height")
    parser.add_argument("--noise", type=float, default=1.0, help="σ of the logit noise")
    parser.add_argument("--frames", type=int, default=None, help="movie length (default: the preset's, 500)")
    parser.add_argument("--movie", help="time the post-processing of a model's probabilities of this movie")
    parser.add_argument("--model", default="sim-v3", help="with --movie: the model (default sim-v3)")
    args = parser.parse_args()
    if args.movie:
        time_model_output(args.movie, args.model, args.repeat)
        return
    print(f"# Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; noise {args.noise}, contrast {args.contrast}")
    config = PostprocessConfig()
    for preset in args.presets:
        sim_config = load_simulation_config(preset, {"n_frames": args.frames} if args.frames else None)
        sim = simulate_movie(sim_config, seed=args.seed)
        px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
        truth = sim.class_label
        probabilities = fake_probabilities(truth, args.contrast, args.noise, args.seed)
        labelled = sim.events[sim.events["labelled"].astype(bool)]
        n_truth = {name: int((labelled["class"] == name).sum()) for name in CLASS_NAMES.values()}
        print(f"\n## preset {preset}: movie {truth.shape}, {px} µm, {dt} ms; labelled events {n_truth}")
        movie = sim.movie
        steps, (classes, threshold) = timed(partial(probabilities_to_classes, probabilities, config), args.repeat)
        rows = [("probabilities_to_classes", steps)]
        separate = partial(separate_events, classes, probabilities, config, px, dt)
        rows.append(("separate_events, maxima in the movie", timed(partial(separate, movie=movie), args.repeat)[0]))
        rows.append(("separate_events, maxima in p(spark)", timed(separate, args.repeat)[0]))
        whole, result = timed(partial(postprocess, probabilities, config, px, dt, movie=movie), args.repeat)
        rows.append(("postprocess (both steps, movie)", whole))
        for name, times in rows:
            print(f"{name:40s} best {min(times):.3f} s  median {statistics.median(times):.3f} s")
        tracemalloc.start()
        postprocess(probabilities, config, px, dt, movie=movie)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"peak memory allocated by postprocess: {peak / 2**20:.0f} MiB "
              f"(input probabilities {probabilities.nbytes / 2**20:.0f} MiB, movie {movie.data.nbytes / 2**20:.0f} MiB)")
        scores = evaluate_movie(truth, sim.event_label, result.class_label, result.event_label).scores
        summary = ", ".join(
            f"{name} {result.counts[name]} (F1 {scores['classes'][name]['reference']['f1']:.2f})"
            for name in CLASS_NAMES.values()
        )
        print(f"threshold {threshold:.3f}; events {summary}; {result.event_label.dtype}")


def time_model_output(path: str, model: str, repeat: int) -> None:
    """Median time of ``postprocess`` of a model's probabilities of one movie, card and variants."""
    from casparks import read_movie
    from casparks.detection import load_detector

    detector = load_detector(model, device="cpu")
    movie = read_movie(path)
    probabilities = detector.detect(movie, save_probabilities=True).probabilities
    card = detector.postprocess
    reference_split = dataclasses.replace(card, spark_split_on="movie", spark_smooth_sigma_um=0.6,
                                          spark_smooth_sigma_ms=20.4, spark_min_distance_um=1.8,
                                          spark_min_distance_ms=20.0)
    print(f"# {path} {movie.shape}, model {model}; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    no_fringe = dataclasses.replace(card, wave_fringe_min_probability=None)
    no_transient = dataclasses.replace(card, puff_min_transient_snr=None)
    variants = (("the card", card), ("the card, sparks split on the movie", reference_split),
                ("the card, no wave fringes", no_fringe), ("the card, no puff transient test", no_transient))
    for name, config in variants:
        run = partial(postprocess, probabilities, config, movie.pixel_size_um, movie.frame_interval_ms, movie=movie.data)
        times, result = timed(run, repeat)
        counts = " / ".join(str(result.counts[c]) for c in CLASS_NAMES.values())
        print(f"{name:40s} best {min(times):.3f} s  median {statistics.median(times):.3f} s  "
              f"events {counts} ({' / '.join(CLASS_NAMES.values())})")


if __name__ == "__main__":
    main()

"""Robustness of a model to what real recordings have and simulated ones lack: detection scores of
annotated movies as they are and after one perturbation at a time.

    python benchmarks/bench_robustness.py --truth data/sim-v1/test --ids 01 02 03 04 [--model sim-v1]
                                          [--perturbations clean hot-voxel ...] [--threshold P]

Each perturbation changes the movie only (the annotation stays the truth), then
``casparks.detect`` runs with ``--model`` and ``casparks.evaluate_movie`` scores it; counts are
summed over the movies before the one-to-one F1 per class is taken (as ``casparks evaluate``).

Perturbations (intensities relative to the movie's own maximum ``M`` and its darkest level):

* ``clean``: the movie as it is;
* ``hot-voxel``: one voxel at 4095 (a saturated 12-bit sample: a cosmic ray, a PMT spike);
* ``stuck-pixel``: one pixel at 4095 in every frame (a hot detector pixel);
* ``dead-pixel``: one pixel at 0 in every frame (at the field's edge);
* ``punctum``: a static 3 × 3 px spot + 2 M (a dye punctum brighter than any event);
* ``offset``: + 500 on every voxel (another detector offset);
* ``gain``: × 3 (another detector gain or laser power: brighter, same relative noise);
* ``vignetting``: × a ramp from 0.5 at the left edge to 1 at the right (uneven illumination);
  the detector's dark level is ramped too, which no real vignetting does;
* ``vignetting-signal``: the signal above the dark level × the same ramp, the dark level kept (as
  uneven excitation or collection does); the dark level is the offset of the movie's shot-noise
  line (``MovieStats.noise_offset``: variance ≈ gain · (x − offset));
* ``read-noise``: + Gaussian noise of σ = 3 % of ``M`` (a noisier detector; seed 0);
* ``bleaching``: the signal above the darkest pixel level × exp(−t/τ), 30 % lost by the last frame
  (photobleaching of the dye during the recording).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np


def perturb(name: str, data: np.ndarray) -> np.ndarray:
    """The movie with one perturbation (a new array; uint16 kept where it fits)."""
    if name == "clean":
        return np.array(data)
    t, h, w = data.shape
    out = data.astype(np.int64)
    top = int(out.max())
    if name == "hot-voxel":
        out[t // 5, h // 2, (2 * w) // 5] = 4095
    elif name == "stuck-pixel":
        out[:, h // 2, (2 * w) // 5] = 4095
    elif name == "dead-pixel":
        out[:, h // 3, 0] = 0
    elif name == "punctum":
        out[:, h // 2 : h // 2 + 3, (3 * w) // 5 : (3 * w) // 5 + 3] += 2 * top
    elif name == "offset":
        out += 500
    elif name == "gain":
        out *= 3
    elif name == "vignetting":
        out = np.rint(out * np.linspace(0.5, 1.0, w)[None, None, :]).astype(np.int64)
    elif name == "vignetting-signal":
        from casparks.preprocess import movie_stats

        dark = movie_stats(data).noise_offset
        out = np.rint(dark + (out - dark) * np.linspace(0.5, 1.0, w)[None, None, :]).astype(np.int64)
    elif name == "read-noise":
        out = np.rint(out + np.random.default_rng(0).normal(0.0, 0.03 * top, out.shape)).astype(np.int64)
    elif name == "bleaching":
        dark = float(np.percentile(out[:, :, :], 0.1))
        decay = np.exp(np.log(0.7) * np.linspace(0.0, 1.0, t))[:, None, None]
        out = np.rint(dark + (out - dark) * decay).astype(np.int64)
    else:
        raise SystemExit(f"unknown perturbation {name!r}")
    return np.clip(out, 0, 65535).astype(np.uint16)


PERTURBATIONS = ("clean", "hot-voxel", "stuck-pixel", "dead-pixel", "punctum", "offset", "gain", "vignetting",
                 "vignetting-signal", "read-noise", "bleaching")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", type=Path, required=True, help="an annotated data set (the original layout)")
    parser.add_argument("--ids", nargs="+", required=True, help="movie ids, e.g. 01 02 03 04")
    parser.add_argument("--model", default="sim-v1")
    parser.add_argument("--perturbations", nargs="+", default=list(PERTURBATIONS))
    parser.add_argument("--threshold", type=float, help="event threshold (default: the model card's, else Otsu's)")
    args = parser.parse_args()

    from casparks import read_movie
    from casparks.detection import DetectSettings, detect, load_detector
    from casparks.evaluation import evaluate_movie
    from casparks.io import read_stack
    from casparks.metrics import scores

    post = {"event_threshold": args.threshold} if args.threshold is not None else {}
    detector = load_detector(args.model, device="cpu", settings=DetectSettings(postprocess=post))
    print(f"# {platform.machine()}, python {platform.python_version()}; model {args.model}; "
          f"movies {args.truth} {' '.join(args.ids)}")
    print("| perturbation | one-to-one F1 spark | wave | puff | events predicted | seconds |")
    print("|---|---|---|---|---|---|")
    for name in args.perturbations:
        total, predicted, start = None, 0, time.perf_counter()
        for movie_id in args.ids:
            movie = read_movie(args.truth / f"{movie_id}_video.tif")
            movie = dataclasses.replace(movie, data=perturb(name, np.asarray(movie.data)))
            found = detect(movie, detector)
            truth_classes = np.asarray(read_stack(args.truth / f"{movie_id}_class_label.tif"))
            truth_events = np.asarray(read_stack(args.truth / f"{movie_id}_event_label.tif"))
            counts = evaluate_movie(truth_classes, truth_events, found.class_label, found.event_label).counts
            total = counts if total is None else total + counts
            predicted += len(found.events)
        result = scores(total)["classes"]
        f1 = [result[c]["one_to_one"]["f1"] for c in ("spark", "wave", "puff")]
        shown = " | ".join("–" if v is None or v != v else f"{v:.2f}" for v in f1)
        print(f"| {name} | {shown} | {predicted} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()

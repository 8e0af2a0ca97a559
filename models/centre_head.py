"""Session 40's experiment: can sim-v3's own features mark spark centres, so that touching sparks
(one plateau of p(spark)) are split at them? A small head trained on the frozen network.

Three steps (movies at sim-v3's native 0.2 µm / 6.8 ms only, so no resampling is involved):

    python models/centre_head.py features FEATS DIR/*_video.tif ...   # ~10 s per 500-frame movie
    python models/centre_head.py train FEATS --truth DIR ... --steps 1200 --out head.pt   # ~1 s per step
    python models/centre_head.py score FEATS head.pt --val DIR ... --val DIR ...

``features`` runs sim-v3 once over each whole movie (bf16, 6 mirrored edge frames as detection
reads them) and keeps the input of its 1×1 output convolution (8 channels), its class
probabilities and the normalised movie, float16. ``train`` fits a 4-layer dilated 3-D CNN (9 →
24 → 24 → 24 → 1 channels, receptive field 15 voxels) to Gaussian heatmaps at the annotated
sparks' peaks (σ 10 ms, 0.4 µm; ``NN_events.csv`` of simulated movies; unlabelled sparks ignored)
with CenterNet's focal loss, on 32 × 48 × 96-voxel crops. ``score`` post-processes the kept
probabilities with sim-v3's card, splits each detected spark again by a watershed from the
heatmap's maxima inside it (at least 2 frames / 3 px apart, above a threshold), and prints the
one-to-one F1 per group of ``--val`` folders before and after. Results: models/sim-v3/README.md,
session 40.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed
from torch import nn

from casparks.detection import load_detector
from casparks.evaluation import Evaluation, evaluate_movie
from casparks.inference import _multiples
from casparks.io import read_movie
from casparks.postprocess import postprocess
from casparks.preprocess import movie_stats, pad_frames, preprocess_frames, with_source_scale

NATIVE = (0.2, 6.8)  # µm, ms
SIGMA_T, SIGMA_YX = 1.5, 2.0  # heatmap σ in frames and pixels (10 ms, 0.4 µm)
CROP = (32, 48, 96)


def _key(video: Path) -> str:
    """A feature file's name: the movie's folder and id (two data sets' folders may share a name)."""
    return f"{video.parent.parent.name}-{video.parent.name}_{video.name.split('_')[0]}"


def extract_features(out: Path, videos: list[Path]) -> None:
    detector = load_detector("sim-v3", device="cpu")
    network, kept = detector.network, {}
    network.head.register_forward_hook(lambda m, i, o: kept.update(features=i[0], logits=o))
    mt, my, mx = _multiples(network, None)
    edge = detector.edge_frames
    out.mkdir(parents=True, exist_ok=True)
    for video in videos:
        movie = read_movie(video)
        if not np.allclose((movie.pixel_size_um, movie.frame_interval_ms), NATIVE):
            print(f"{video}: skipped, sampled at {movie.pixel_size_um} µm / {movie.frame_interval_ms} ms")
            continue
        data = np.asarray(movie.data)
        n, h, w = data.shape
        stats = with_source_scale(movie_stats(data), data.dtype)
        window = math.ceil((n + 2 * edge) / mt) * mt
        ph, pw = (math.ceil(max(s, 64) / m) * m for s, m in ((h, my), (w, mx)))
        x = pad_frames(np.asarray(preprocess_frames(data, -edge, window - edge, stats, *NATIVE,
                                                    detector.preprocessing), np.float32), ph, pw)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            network(torch.from_numpy(x[None, None]).contiguous(memory_format=torch.channels_last_3d))
        box = (slice(None), slice(edge, edge + n), slice(0, h), slice(0, w))
        np.save(out / f"{_key(video)}_feat.npy", kept["features"][0].float()[box].numpy().astype(np.float16))
        np.save(out / f"{_key(video)}_probs.npy",
                torch.softmax(kept["logits"][0].float(), 0)[box].numpy().astype(np.float16))
        np.save(out / f"{_key(video)}_x.npy", x[edge:edge + n, :h, :w].astype(np.float16))
        print(f"{video}: kept")


def spark_centres(events_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(t, y, x) voxel coordinates of the annotated sparks' peaks, and of the unlabelled ones."""
    events = pd.read_csv(events_csv)
    sparks = events[events["class"] == "spark"]
    centres = np.column_stack([sparks.peak_ms / NATIVE[1], sparks.y_um / NATIVE[0] - 0.5, sparks.x_um / NATIVE[0] - 0.5])
    labelled = sparks.labelled.to_numpy(bool)
    return centres[labelled], centres[~labelled]


def heatmap_target(shape: tuple[int, ...], origin: np.ndarray, centres: np.ndarray) -> np.ndarray:
    t, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    target = np.zeros(shape, np.float32)
    for c in centres - origin:
        if -6 < c[0] < shape[0] + 6 and -8 < c[1] < shape[1] + 8 and -8 < c[2] < shape[2] + 8:
            np.maximum(target, np.exp(-((t - c[0]) ** 2) / (2 * SIGMA_T**2)
                                      - ((y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * SIGMA_YX**2)), out=target)
    return target


class CentreHead(nn.Module):
    def __init__(self, channels: int = 24):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(9, channels, 3, padding=1), nn.ReLU(),
            nn.Conv3d(channels, channels, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv3d(channels, channels, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv3d(channels, 1, 1),
        )
        nn.init.constant_(self.net[-1].bias, -4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def focal_loss(logit: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on a Gaussian heatmap, per positive voxel."""
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    positive = target > 0.98
    loss = torch.where(positive, -torch.log(p) * (1 - p) ** 2, -torch.log(1 - p) * p**2 * (1 - target) ** 4)
    return (loss * ~ignore).sum() / positive.sum().clamp(min=1)


def _load(feats: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    return np.load(feats / f"{key}_feat.npy", mmap_mode="r"), np.load(feats / f"{key}_x.npy", mmap_mode="r")


def _inputs(features: np.ndarray, x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    stacked = np.concatenate([np.asarray(features, np.float32), np.asarray(x, np.float32)[None]])
    return (stacked - mean[:, None, None, None]) / sd[:, None, None, None]


def train_head(feats: Path, truth: list[Path], steps: int, out: Path, seed: int = 0, batch: int = 4,
               lr: float = 2e-3, start: Path | None = None) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    movies = []
    for folder in truth:
        for video in sorted(folder.glob("*_video.tif")):
            if (feats / f"{_key(video)}_feat.npy").exists():
                labelled, unlabelled = spark_centres(video.with_name(video.name.replace("_video.tif", "_events.csv")))
                movies.append((*_load(feats, _key(video)), labelled, unlabelled))
    print(f"{len(movies)} movies, {sum(len(m[2]) for m in movies)} annotated sparks")
    sample = np.concatenate([np.asarray(f[:, ::10, ::8, ::8], np.float32).reshape(f.shape[0], -1) for f, *_ in movies[:6]], 1)
    pixels = np.concatenate([np.asarray(x[::10, ::8, ::8], np.float32).ravel() for _, x, *_ in movies[:6]])
    mean = np.r_[sample.mean(1), pixels.mean()].astype(np.float32)
    sd = np.r_[sample.std(1), pixels.std()].astype(np.float32) + 1e-3

    def crop(features, x, labelled, unlabelled):
        limit = np.array(x.shape) - CROP
        if rng.random() < 0.6 and len(labelled):  # most crops near a spark: they are sparse
            centre = labelled[rng.integers(len(labelled))] + rng.normal(0, [6, 8, 16])
            origin = np.clip(np.round(centre - np.array(CROP) / 2).astype(int), 0, limit)
        else:
            origin = np.array([rng.integers(m + 1) for m in limit])
        box = tuple(slice(o, o + c) for o, c in zip(origin, CROP))
        return (_inputs(features[(slice(None), *box)], x[box], mean, sd), heatmap_target(CROP, origin, labelled),
                heatmap_target(CROP, origin, unlabelled) > 0.05)

    head = CentreHead()
    if start is not None:
        head.load_state_dict(torch.load(start, weights_only=False)["state"])
    head = head.to(memory_format=torch.channels_last_3d)
    optimiser = torch.optim.AdamW(head.parameters(), lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.05)
    running = None
    for step in range(1, steps + 1):
        inputs, target, ignore = (torch.from_numpy(np.stack(a)) for a in
                                  zip(*[crop(*movies[rng.integers(len(movies))]) for _ in range(batch)]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logit = head(inputs.contiguous(memory_format=torch.channels_last_3d))[:, 0]
        loss = focal_loss(logit.float(), target, ignore)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"step {step}: loss {running:.3f}", flush=True)
    torch.save({"state": head.state_dict(), "mean": mean, "sd": sd}, out)


def heatmap(head: CentreHead, mean: np.ndarray, sd: np.ndarray, features: np.ndarray, x: np.ndarray,
            block: int = 100, margin: int = 8) -> np.ndarray:
    out = np.zeros(x.shape, np.float32)
    for a in range(0, x.shape[0], block):
        lo, hi = max(0, a - margin), min(x.shape[0], a + block + margin)
        inputs = torch.from_numpy(_inputs(features[:, lo:hi], x[lo:hi], mean, sd)[None])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.sigmoid(head(inputs.contiguous(memory_format=torch.channels_last_3d)).float())[0, 0].numpy()
        b = min(block, x.shape[0] - a)
        out[a:a + b] = h[a - lo:a - lo + b]
    return out


def split_sparks(classes: np.ndarray, events: np.ndarray, heat: np.ndarray, threshold: float,
                 radius_t: int = 1, radius_yx: int = 3, min_frames: int = 3, min_px: int = 5) -> np.ndarray:
    """Each detected spark split by a watershed from the heatmap's maxima inside it (pieces must
    keep sim-v3's spark minima, 20 ms and 1 µm, else their maximum is dropped)."""
    events = events.astype(np.int32)
    new_id = int(events.max()) + 1
    t, y, x = np.ogrid[-radius_t:radius_t + 1, -radius_yx:radius_yx + 1, -radius_yx:radius_yx + 1]
    footprint = (t / (radius_t + 0.5)) ** 2 + (y**2 + x**2) / (radius_yx + 0.5) ** 2 <= 1
    for i, box in enumerate(ndimage.find_objects(events), start=1):
        if box is None:
            continue
        inside = events[box] == i
        if classes[box][inside][0] != 1:
            continue
        local = np.where(inside, heat[box], 0)
        peaks = peak_local_max(local, footprint=footprint, threshold_abs=threshold, labels=inside.astype(np.int32),
                               exclude_border=False)
        while len(peaks) > 1:
            markers = np.zeros(inside.shape, np.int32)
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            pieces = watershed(-local, markers, mask=inside, connectivity=3)
            kept = np.array([b is not None and b[0].stop - b[0].start >= min_frames
                             and max(b[1].stop - b[1].start, b[2].stop - b[2].start) >= min_px
                             for b in ndimage.find_objects(pieces, max_label=len(peaks))])
            if kept.all():
                region = events[box]
                for k in range(2, len(peaks) + 1):
                    region[pieces == k] = new_id
                    new_id += 1
                break
            peaks = peaks[kept]
    return events


def score(feats: Path, head_file: Path, groups: list[list[Path]], thresholds: list[float]) -> None:
    saved = torch.load(head_file, weights_only=False)
    head = CentreHead()
    head.load_state_dict(saved["state"])
    head.eval()
    card = load_detector("sim-v3", device="cpu").postprocess
    for folders in groups:
        before, after = [], {h: [] for h in thresholds}
        for folder in folders:
            for video in sorted(folder.glob("*_video.tif")):
                key = _key(video)
                if not (feats / f"{key}_probs.npy").exists():
                    continue
                probs = np.load(feats / f"{key}_probs.npy").astype(np.float32)
                found = postprocess(probs, card, *NATIVE, movie=np.asarray(read_movie(video).data))
                stem = str(video).replace("_video.tif", "")
                truth = tifffile.imread(f"{stem}_class_label.tif"), tifffile.imread(f"{stem}_event_label.tif")
                before.append(evaluate_movie(*truth, found.class_label, found.event_label, id=key))
                heat = heatmap(head, saved["mean"], saved["sd"], *_load(feats, key))
                for h in thresholds:
                    split = split_sparks(found.class_label, found.event_label, heat, h)
                    after[h].append(evaluate_movie(*truth, found.class_label, split, id=key, check_annotation=False))
        print(f"{' '.join(map(str, folders))} ({len(before)} movies), one-to-one F1 spark / wave / puff:")
        for name, movies in [("card", before), *((f"split at heatmap maxima >= {h}", m) for h, m in after.items())]:
            f1 = Evaluation(tuple(movies)).scores["classes"]
            print(f"  {name}: " + " / ".join(f"{f1[c]['one_to_one']['f1']:.4f}" for c in ("spark", "wave", "puff")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("features")
    p.add_argument("feats", type=Path)
    p.add_argument("videos", type=Path, nargs="+")
    p = sub.add_parser("train")
    p.add_argument("feats", type=Path)
    p.add_argument("--truth", type=Path, nargs="+", required=True)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--start", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("score")
    p.add_argument("feats", type=Path)
    p.add_argument("head", type=Path)
    p.add_argument("--val", type=Path, nargs="+", action="append", required=True)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.step == "features":
        extract_features(args.feats, args.videos)
    elif args.step == "train":
        train_head(args.feats, args.truth, args.steps, args.out, lr=args.lr, start=args.start)
    else:
        score(args.feats, args.head, args.val, args.thresholds)


if __name__ == "__main__":
    main()

"""Whole-movie prediction: overlapping windows in time, Gaussian blending, no seams.

A movie of any length T is cut into windows of ``window_frames`` frames (the training chunk
length) that overlap by ``overlap``; each window is pre-processed exactly as training chunks are
(:func:`casparks.preprocess.preprocess_frames`, which pads outside the movie), padded in y and x
to the network's input multiple, and run through the network. Window outputs (softmax
probabilities) are blended with a Gaussian weight along time (MONAI's
``compute_importance_map``, the weight ``sliding_window_inference`` uses), so frames near the
edge of a window, which lack context, count least, and a frame's probability is the weighted
mean over every window that covers it. Windows span the whole frame in y and x, so no seam can
appear in space; the stitched result accumulates in host memory while windows run on
``device`` (the reference took each frame from the window where it is most central instead).

We cut windows ourselves instead of calling ``monai.inferers.sliding_window_inference`` on the
whole pre-processed movie because normalisation can be per chunk (``norm_video: chunk``) and
because only one window at a time then needs to be pre-processed: memory does not grow with T
beyond the (4, T, Y, X) float32 result.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import CasparksError

log = logging.getLogger(__name__)

#: σ of the Gaussian blending weight as a fraction of the window length (MONAI's default).
SIGMA_SCALE = 0.125

__all__ = ["blending_weights", "predict_movie", "window_starts"]


def window_starts(n_frames: int, window_frames: int, overlap: float) -> list[int]:
    """First frame of every window; the last window ends on the last frame.

    A movie shorter than one window gets one window centred on it (padded on both sides).
    """
    if n_frames < 1 or window_frames < 1:
        raise ValueError(f"need at least one frame and a positive window, got {n_frames} and {window_frames}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if n_frames <= window_frames:
        return [-((window_frames - n_frames) // 2)]
    step = max(1, int(round(window_frames * (1 - overlap))))
    starts = list(range(0, n_frames - window_frames + 1, step))
    if starts[-1] != n_frames - window_frames:
        starts.append(n_frames - window_frames)
    return starts


def blending_weights(window_frames: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Gaussian weight along a window (positive everywhere, 1 at the centre)."""
    from monai.data.utils import compute_importance_map

    weights = compute_importance_map((window_frames,), mode="gaussian", sigma_scale=sigma_scale)
    weights = weights.detach().cpu().numpy().astype(np.float64)
    return weights / weights.max()


def _multiples(network: torch.nn.Module, input_multiple: Any) -> tuple[int, int, int]:
    """(t, y, x) sizes the network input must be multiples of."""
    if input_multiple is None:
        config = getattr(network, "config", None)
        if config is not None:  # our U-Net and user networks built from a NetworkConfig
            from .nn import input_multiple as nn_input_multiple

            input_multiple = nn_input_multiple(config)
        elif not callable(getattr(network, "input_multiple", None)):
            input_multiple = getattr(network, "input_multiple", None)
    if input_multiple is None:
        return (1, 1, 1)
    if isinstance(input_multiple, (int, np.integer)):
        return (int(input_multiple),) * 3
    values = tuple(int(v) for v in input_multiple)
    if len(values) == 2:  # (y, x)
        return (1, *values)
    if len(values) != 3:
        raise ValueError(f"input_multiple must be an int or (t, y, x), got {input_multiple!r}")
    return values  # type: ignore[return-value]


def _pad_to(chunk: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad (W, Y, X) at the bottom/right to (W, height, width)."""
    _, y, x = chunk.shape
    if (y, x) == (height, width):
        return chunk
    mode = "reflect" if y > 1 and x > 1 else "edge"
    return np.pad(chunk, ((0, 0), (0, height - y), (0, width - x)), mode=mode)


def predict_movie(
    network: torch.nn.Module,
    movie_data: np.ndarray,
    preprocessing: Any,
    stats: Any,
    pixel_size_um: float,
    frame_interval_ms: float,
    window_frames: int,
    overlap: float = 0.5,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    *,
    input_multiple: int | Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities (float32, shape (4, T, Y, X), softmax over axis 0) of a whole movie.

    ``movie_data`` is the raw T×Y×X movie (any dtype; memory-mapped is fine); ``preprocessing``
    the :class:`casparks.preprocess.Preprocessing` the network was trained with and ``stats``
    the movie's :class:`~casparks.preprocess.MovieStats` (None: computed here).
    ``input_multiple`` (int or (t, y, x)): sizes the network needs its input to be multiples of;
    None takes ``network.input_multiple`` or :func:`casparks.nn.input_multiple` of
    ``network.config`` when the network carries them, else 1. ``progress(done, total)`` is
    called after each batch of windows.
    """
    from .preprocess import movie_stats, preprocess_frames

    data = getattr(movie_data, "data", movie_data)
    if data.ndim != 3:
        raise CasparksError(f"a movie is T×Y×X, got an array of shape {data.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_frames, height, width = data.shape
    mt, my, mx = _multiples(network, input_multiple)
    window = int(math.ceil(window_frames / mt) * mt)
    padded_h, padded_w = int(math.ceil(height / my) * my), int(math.ceil(width / mx) * mx)
    if stats is None:
        stats = movie_stats(data)
    starts = window_starts(n_frames, window, overlap)
    weights = blending_weights(window)
    device = torch.device(device)

    out = np.zeros((4, n_frames, height, width), dtype=np.float32)
    total_weight = np.zeros(n_frames, dtype=np.float64)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
            for done, batch in enumerate(batches, start=1):
                chunks = [
                    _pad_to(
                        np.asarray(
                            preprocess_frames(data, s, s + window, stats, pixel_size_um, frame_interval_ms, preprocessing),
                            dtype=np.float32,
                        ),
                        padded_h, padded_w,
                    )
                    for s in batch
                ]
                x = torch.from_numpy(np.stack(chunks)[:, None]).to(device)
                logits = network(x)
                if tuple(logits.shape[2:]) != tuple(x.shape[2:]):
                    raise CasparksError(
                        f"the network maps an input of {tuple(x.shape[2:])} voxels to {tuple(logits.shape[2:])}; "
                        "whole-movie prediction needs outputs the size of their input",
                        fix="use network.border_mode: same",
                    )
                probs = torch.softmax(logits.float(), dim=1)[:, :, :, :height, :width].cpu().numpy()
                for s, p in zip(batch, probs):
                    lo, hi = max(0, s), min(n_frames, s + window)
                    w = weights[lo - s : hi - s]
                    out[:, lo:hi] += p[:, lo - s : hi - s] * w[None, :, None, None].astype(np.float32)
                    total_weight[lo:hi] += w
                if progress is not None:
                    progress(done, len(batches))
    finally:
        network.train(was_training)
    out /= total_weight[None, :, None, None].astype(np.float32)
    return out

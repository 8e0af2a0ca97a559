"""Whole-movie prediction: overlapping windows in time, Gaussian blending, no seams.

A movie of any length T is cut into windows of ``window_frames`` frames (the training chunk
length) that overlap by ``overlap``; each window is pre-processed exactly as training chunks are
(:func:`casparks.preprocess.preprocess_frames`, which pads outside the movie), padded in y and x
to the network's input multiple, and run through the network. Window outputs (softmax
probabilities) are blended with a Gaussian weight along time (MONAI's
``compute_importance_map``, the weight ``sliding_window_inference`` uses), so frames near the
edge of a window, which lack context, count least, and a frame's probability is the weighted
mean over every window that covers it (the reference took each frame from the window where it
is most central instead). The stitched result accumulates in host memory while windows run on
``device``.

A frame narrower than :data:`MIN_FRAME_PX` in y or x is padded to it the same way: the network
then sees every structure at no smaller a field than it was trained on.

Windows span the whole frame in y and x unless the frame is larger than ``tile_yx`` pixels:
then each window is cut into overlapping spatial tiles, blended the same way in y and x, so a
large field of view needs no more memory than a tile and shows no seams either (tested against
whole-frame windows). A window's or tile's weight tapers only towards sides that lie inside the
movie (:func:`edge_aware_weights`): at the movie's own borders every window lacks context alike,
so there the window in which a voxel is most central must keep its full weight. MONAI's
``compute_importance_map`` gives the Gaussian; its ``sliding_window_inference`` has one weight
map for all tiles and clamps it at 1e-3 as a whole, which lets tiles' edges outweigh tiles that
end at the border, hence the small loop here.

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
# frames narrower than this are reflect-padded to it, and balanced tiles (:func:`_balanced_tile`)
# are no smaller (unless the largest tile is: lower tiles put a border inside the cell)
from .preprocess import MIN_FRAME_PX

log = logging.getLogger(__name__)

#: σ of the Gaussian blending weight as a fraction of the window length (MONAI's default).
SIGMA_SCALE = 0.125

__all__ = ["blending_weights", "capped_window", "edge_aware_weights", "predict_movie", "window_starts"]


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


def capped_window(window_frames: int, span: int, multiple: int = 1, least: int | None = None) -> int:
    """The window (a whole number of ``multiple`` frames) for ``span`` frames (a movie with its
    edge frames): ``window_frames`` rounded up, but no longer than the span rounded up, nor
    shorter than ``least`` (the model's own window) rounded up. None: never capped.

    Why: a movie shorter than the window is read in one window centred on it, the rest mirrored
    padding; 5000 frames for a 200-frame movie took 31.6 s where 224 take ~4 s, for no context
    the movie holds. Not below the model's own window: a network reads a window of another
    length otherwise, and a short movie's probabilities moved (by up to 0.37) with the cap.
    """
    window = int(math.ceil(window_frames / multiple) * multiple)
    if least is None:
        return window
    needed = int(math.ceil(max(1, span, least) / multiple) * multiple)
    if window > needed:
        log.info("a window of %d frames capped to %d: the movie with its edge frames is %d frames",
                 window_frames, needed, span)
        return needed
    return window


def blending_weights(window_frames: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Gaussian weight along a window (positive everywhere, 1 at the centre)."""
    from ._monai import compute_importance_map

    weights = compute_importance_map((window_frames,), mode="gaussian", sigma_scale=sigma_scale)
    weights = weights.detach().cpu().numpy().astype(np.float64)
    return weights / weights.max()


def _multiples(network: torch.nn.Module, input_multiple: Any) -> tuple[int, int, int]:
    """(t, y, x) sizes the network input must be multiples of."""
    if input_multiple is None:
        from .config import NetworkConfig

        own = getattr(network, "input_multiple", None)  # the network's own value (set on it, or a property)
        # networks built by nn.build_network carry their config (a user's network need not keep it)
        config = getattr(network, "casparks_network_config", None) or getattr(network, "config", None)
        if own is not None and not callable(own):
            input_multiple = own
        elif isinstance(config, NetworkConfig):  # our U-Net, and a static input_multiple(config)
            from .nn import input_multiple as nn_input_multiple

            input_multiple = nn_input_multiple(config)
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


#: ``tile_yx="auto"``: frames of up to this many pixels (padded) run whole, larger ones in tiles
#: of at most :data:`AUTO_TILE_YX`. The pixels of the reference 64 × 512 field twice over, the
#: memory a window of 128 × 512 px takes; a 256 × 256 px field, as many pixels, was cut into three
#: 112-row tiles, none holding the whole cell, and part of a wave became a false puff.
AUTO_TILE_PX = 128 * 512
AUTO_TILE_YX = (128, 512)


def _tile_size(tile_yx: Sequence[int] | str | None, frame_yx: tuple[int, int], multiples_yx: tuple[int, int],
               tile_overlap: float = 0.25) -> tuple[int, int] | None:
    """(y, x) tile of whole input multiples, or None when the (padded) frame fits in one.

    ``tile_yx`` is the largest tile; an axis that needs several is cut into that many of the
    smallest size that still covers it with ``tile_overlap`` (:func:`_balanced_tile`). "auto":
    none for frames of up to :data:`AUTO_TILE_PX` pixels, else :data:`AUTO_TILE_YX`.
    """
    if isinstance(tile_yx, str):
        if tile_yx != "auto":
            raise ValueError(f"tile_yx must be two sizes, 'auto' or None, got {tile_yx!r}")
        tile_yx = None if frame_yx[0] * frame_yx[1] <= AUTO_TILE_PX else AUTO_TILE_YX
    if tile_yx is None:
        return None
    tile = []
    for size, limit, multiple in zip(frame_yx, tile_yx, multiples_yx):
        if int(limit) < 1:
            raise ValueError(f"tile sizes must be positive, got {tuple(tile_yx)}")
        largest = min(size, max(multiple, int(limit) // multiple * multiple))
        tile.append(largest if largest >= size else _balanced_tile(size, largest, multiple, tile_overlap))
    return None if tuple(tile) == tuple(frame_yx) else (tile[0], tile[1])


def _balanced_tile(size: int, largest: int, multiple: int, overlap: float) -> int:
    """The smallest tile (a whole number of ``multiple``) that covers ``size`` in as few tiles as
    ``largest`` does, each overlapping its neighbour by at least ``overlap``.

    Why: tiles of the largest size overshoot an axis slightly longer than one tile (a 160-row
    frame in two 128-row tiles runs 256 rows, 1.6 times the frame); two 96-row tiles run 192.
    Never below :data:`MIN_FRAME_PX` unless ``largest`` is.
    """
    count = len(window_starts(size, largest, overlap))
    smallest = -(-min(largest, MIN_FRAME_PX) // multiple) * multiple
    for tile in range(smallest, largest, multiple):
        if len(window_starts(size, tile, overlap)) <= count:
            return tile
    return largest


def edge_aware_weights(size: int, start: int, total: int) -> np.ndarray:
    """Blending weight of a window of ``size`` starting at ``start`` in an axis of ``total``.

    Gaussian (:func:`blending_weights`), but flat at 1 from the centre towards a side that
    reaches the movie's border, where no other window has more context.
    """
    weights = blending_weights(size).copy()
    centre = size // 2
    if start <= 0:
        weights[:centre] = 1.0
    if start + size >= total:
        weights[centre:] = 1.0
    return weights


def _softmax_probabilities(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the network's output; refuses networks whose output is not the input's size."""
    logits = network(x)
    if tuple(logits.shape[2:]) != tuple(x.shape[2:]):
        raise CasparksError(
            f"the network maps an input of {tuple(x.shape[2:])} voxels to {tuple(logits.shape[2:])}; "
            "whole-movie prediction needs outputs the size of their input",
            fix="use network.border_mode: same",
        )
    return torch.softmax(logits.float(), dim=1)


def _tiles(height: int, width: int, tile: tuple[int, int] | None,
           tile_overlap: float) -> list[tuple[tuple[slice, slice], torch.Tensor | None]]:
    """The spatial tiles of a padded frame of ``height`` × ``width``: each tile's box and its
    blending weight over the frame's summed weight (the weights of a pixel's tiles sum to 1).
    Whole frames (``tile`` None) are one tile without a weight."""
    if tile is None:
        return [((slice(0, height), slice(0, width)), None)]
    boxes, weights = [], []
    total = torch.zeros((height, width), dtype=torch.float32)
    for y0 in window_starts(height, tile[0], tile_overlap):
        wy = torch.from_numpy(edge_aware_weights(tile[0], y0, height)).float()
        for x0 in window_starts(width, tile[1], tile_overlap):
            wx = torch.from_numpy(edge_aware_weights(tile[1], x0, width)).float()
            box = (slice(y0, y0 + tile[0]), slice(x0, x0 + tile[1]))
            boxes.append(box)
            weights.append(wy[:, None] * wx[None, :])
            total[box] += weights[-1]
    return [(box, weight / total[box]) for box, weight in zip(boxes, weights)]


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
    tile_yx: Sequence[int] | str | None = None,
    tile_overlap: float = 0.25,
    channels_last: bool = False,
    edge_frames: int = 0,
    least_window: int | None = None,
) -> np.ndarray:
    """Class probabilities (float32, shape (4, T, Y, X), softmax over axis 0) of a whole movie.

    ``movie_data`` is the raw T×Y×X movie (any dtype; memory-mapped is fine); ``preprocessing``
    the :class:`casparks.preprocess.Preprocessing` the network was trained with and ``stats``
    the movie's :class:`~casparks.preprocess.MovieStats` (None: computed here).
    ``input_multiple`` (int or (t, y, x)): sizes the network needs its input to be multiples of;
    None takes ``network.input_multiple`` or :func:`casparks.nn.input_multiple` of
    ``network.config`` when the network carries them, else 1. ``progress(done, total)`` is
    called after each batch of windows. ``tile_yx``: the largest (y, x) extent in pixels a
    window is run at (rounded down to the input multiples); larger frames are cut into tiles
    overlapping by ``tile_overlap`` (None: whole frames; "auto": whole frames of up to
    :data:`AUTO_TILE_PX` pixels, tiles of at most :data:`AUTO_TILE_YX` beyond). ``channels_last``: feed windows in
    channels-last 3-D memory layout (for a network converted to it; faster on CPUs).
    ``edge_frames``: windows start this many frames before the movie and end as many after it
    (mirrored frames), so that the movie's own first and last frames do not fall on a window's
    first or last frames, where a network trained with ``ignore_frames_loss`` never learned
    anything (give it that number). ``least_window``: a window longer than the movie with its
    edge frames is cut to it, but not below this many frames (:func:`capped_window`; None:
    never cut).
    """
    from .preprocess import movie_stats, pad_frames, preprocess_frames

    data = movie_data if isinstance(movie_data, np.ndarray) else getattr(movie_data, "data", movie_data)
    if data.ndim != 3:
        raise CasparksError(f"a movie is T×Y×X, got an array of shape {data.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= tile_overlap < 1:
        raise ValueError(f"tile_overlap must lie in [0, 1), got {tile_overlap}")
    n_frames, height, width = data.shape
    mt, my, mx = _multiples(network, input_multiple)
    edge = int(edge_frames)
    if edge < 0:
        raise ValueError(f"edge_frames must not be negative, got {edge_frames}")
    span = n_frames + 2 * edge
    window = capped_window(window_frames, span, mt, least_window)
    padded_h, padded_w = (int(math.ceil(max(size, MIN_FRAME_PX) / m) * m) for size, m in ((height, my), (width, mx)))
    if stats is None:
        stats = movie_stats(data)
    tile = _tile_size(tile_yx, (padded_h, padded_w), (my, mx), tile_overlap)
    starts = [s - edge for s in window_starts(span, window, overlap)]
    device = torch.device(device)

    # accumulated with torch (multi-threaded, and it reads the channels-last window outputs
    # without a slow strided numpy pass); returned as the numpy array that shares its memory.
    # Each tile's probabilities go straight into it, weighted by time × space, so no window-sized
    # buffer is ever built (a 256 × 1024 px frame: 0.87 GB per 208-frame window, three times over)
    out = torch.zeros((4, n_frames, height, width), dtype=torch.float32)
    total_weight = np.zeros(n_frames, dtype=np.float64)
    tiles = _tiles(padded_h, padded_w, tile, tile_overlap)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
            for done, batch in enumerate(batches, start=1):
                chunks = [
                    pad_frames(
                        np.asarray(
                            preprocess_frames(data, s, s + window, stats, pixel_size_um, frame_interval_ms, preprocessing),
                            dtype=np.float32,
                        ),
                        padded_h, padded_w,
                    )
                    for s in batch
                ]
                x = torch.from_numpy(np.stack(chunks)[:, None]).to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                frames = [(max(0, s), min(n_frames, s + window)) for s in batch]
                time_weights = [edge_aware_weights(window, s + edge, span)[lo - s : hi - s]
                                for s, (lo, hi) in zip(batch, frames)]
                for (ys, xs), space_weight in tiles:
                    inside = (slice(ys.start, min(ys.stop, height)), slice(xs.start, min(xs.stop, width)))
                    if inside[0].start >= inside[0].stop or inside[1].start >= inside[1].stop:
                        continue  # a tile of padding only
                    probs = _softmax_probabilities(network, x[..., ys, xs])
                    probs = probs[..., : inside[0].stop - ys.start, : inside[1].stop - xs.start]
                    probs = probs.to("cpu", memory_format=torch.contiguous_format)
                    if space_weight is not None:
                        probs.mul_(space_weight[: probs.shape[-2], : probs.shape[-1]])
                    for s, (lo, hi), w, p in zip(batch, frames, time_weights, probs):
                        out[:, lo:hi, inside[0], inside[1]].addcmul_(p[:, lo - s : hi - s],
                                                                     torch.from_numpy(w).float()[None, :, None, None])
                for (lo, hi), w in zip(frames, time_weights):
                    total_weight[lo:hi] += w
                if progress is not None:
                    progress(done, len(batches))
    finally:
        network.train(was_training)
    out.div_(torch.from_numpy(total_weight).float()[None, :, None, None])
    return out.numpy()

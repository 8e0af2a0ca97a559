"""Pre-processing of movies: one implementation shared by training and detection.

A network sees what :func:`preprocess_frames` makes of a movie, during training and at
detection time alike, so the two can never disagree. The steps, in this order:

1. **Background removal** (``remove_background``), in raw intensity units:

   * ``'none'``;
   * ``'average'`` subtracts the movie's mean frame (:attr:`MovieStats.mean_frame`);
   * ``'moving'`` subtracts a centred moving average over ``background_window_ms`` (per pixel,
     along t: :func:`scipy.ndimage.uniform_filter1d` over the odd number of frames nearest to
     ``background_window_ms / frame_interval_ms``). It really runs (the reference documented a
     moving background that silently did nothing) and uses the movie's real frames beyond the
     requested window, so a window gives exactly the frames of the whole-movie result.

2. **Normalisation** (``norm_video``), with the statistics of the *whole movie* (:class:`MovieStats`),
   so every chunk of a movie is scaled the same way:

   ============ ================================= =====================================
   mode          no background removal             with background removal
   ============ ================================= =====================================
   ``abs_max``   (x − min) / (full − min)          (x − bg) / (full − min)
   ``movie``     (x − min) / (max − min)           (x − bg) / (max − min)
   ``percentile`` (x − p₀.₁) / (p₉₉.₉ − p₀.₁)      (x − bg) / (p₉₉.₉ − p₀.₁)
   ``zscore``    (x − mean) / std                  (x − bg) / residual_std
   ``chunk``     min–max of the requested window    min–max of the window of (x − bg)
   ``none``      x (float32)                        x − bg
   ============ ================================= =====================================

   ``full`` is 65535 for uint16 movies as in the reference, the dtype's maximum for other integer
   types, and the movie's maximum for float movies. With a background removed the signal is
   already centred on zero, so only the scale is kept: a movie's events get the same amplitude
   with and without background removal (``residual_std`` is the pixels' mean temporal standard
   deviation, i.e. the standard deviation of the movie minus its mean frame). A zero range
   (a constant movie or window) is replaced by 1. ``min`` and ``max`` leave out isolated
   outlier voxels (a cosmic ray, a PMT spike: :func:`outlier_voxels`) and pixels constant through
   the whole movie (a dead or hot pixel, a saturated spot: :func:`static_pixels`), and ``movie``, ``abs_max`` and
   ``percentile`` values are clipped to those extremes, so one saturated voxel cannot shrink every event of
   the movie (it did: one voxel at 4095 in a movie peaking at 418 hid all 31 sparks from
   sim-v1). A clean movie has no such voxel, and its extremes are its plain min and max.
   ``percentile`` uses the 0.1th and 99.9th percentiles of every voxel instead (estimated from
   at most 1 M voxels taken at an even stride): a bright structure that is not an event and
   covers well under 0.1 % of the voxels (a dye punctum: 3 × 3 px of a 64 × 512 px field is
   0.03 %) moves them little, where it sets ``max``: a static
   3 × 3 px punctum at 3 × the brightest event took sim-v1 ('movie') from spark F1 0.82 to 0.61
   on a test movie, and moved p₉₉.₉ by 2 %. Events rise above 1 (up to the movie's maximum).

3. **Smoothing** (``data_smoothing``): a Gaussian of σ ``smoothing_sigma_um`` in y and x and, for
   ``'3d'``, ``smoothing_sigma_ms`` in t, converted to voxels with the movie's own pixel size and
   frame interval (truncated at 4 σ, as scipy does). ``'3d'`` also reads real context frames.

Frames outside the movie (a window starting before 0 or ending after T, and the context the
filters need near the movie's ends) are the movie mirrored at its ends ("reflect": frame −1 is
frame 0, frame −2 is frame 1, frame T is frame T − 1). The same virtual extension is used for
every window, so any window ``[a, b)`` equals ``preprocess_frames(data, 0, T)[a:b]`` exactly
(except for ``'chunk'``, whose scale is by definition the window's own).

:func:`movie_stats` reads a movie once in blocks of frames (a memory-mapped movie of any length
is never materialised as float), accumulating per-pixel means and variances with Chan's
pairwise update, which stays accurate where a naive sum of squares would not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping

import numpy as np
from scipy import ndimage

from .errors import CasparksError, reject_unknown_keys

log = logging.getLogger(__name__)

NORM_MODES = ("abs_max", "chunk", "movie", "percentile", "zscore", "none")
#: the percentiles of every voxel that 'percentile' normalisation maps to 0 and 1
NORM_PERCENTILES = (0.1, 99.9)
_PERCENTILE_SAMPLES = 1 << 20  # at most this many voxels (an even stride through the movie) estimate them
BACKGROUND_MODES = ("none", "average", "moving")
SMOOTHING_MODES = ("none", "2d", "3d")
_TRUNCATE = 4.0  # Gaussian truncation in σ (scipy's default)
_BLOCK_BYTES = 64 << 20  # about this many bytes of float64 per block in movie_stats


@dataclass(frozen=True)
class Preprocessing:
    """How a movie is pre-processed (see the module docstring for the exact definitions).

    Stored inside checkpoints (:meth:`to_dict`), so detection pre-processes like training did.
    """

    norm_video: Literal["abs_max", "chunk", "movie", "percentile", "zscore", "none"] = "movie"
    remove_background: Literal["none", "average", "moving"] = "none"
    background_window_ms: float = 1000.0
    data_smoothing: Literal["none", "2d", "3d"] = "none"
    smoothing_sigma_um: float = 0.2
    smoothing_sigma_ms: float = 6.8

    def __post_init__(self) -> None:
        for name, allowed in (
            ("norm_video", NORM_MODES),
            ("remove_background", BACKGROUND_MODES),
            ("data_smoothing", SMOOTHING_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise CasparksError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}",
                    fix=f"set data.{name}",
                )
        for name in ("background_window_ms", "smoothing_sigma_um", "smoothing_sigma_ms"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0 or (name == "background_window_ms" and value == 0):
                raise CasparksError(f"{name} must be a {'positive' if name.startswith('back') else 'non-negative'} number, got {value!r}",
                                    fix=f"set data.{name}")

    @classmethod
    def from_data_config(cls, config: Any) -> "Preprocessing":
        """The pre-processing part of a :class:`casparks.config.DataConfig`."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Preprocessing":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the known ones."""
        reject_unknown_keys({f.name for f in fields(cls)}, values, "pre-processing option")
        return cls(**dict(values))


# ----------------------------------------------------------------------------------------------
# movie statistics


@dataclass(frozen=True, eq=False)
class MovieStats:
    """Whole-movie statistics, from one streaming pass (:func:`movie_stats`).

    Attributes:
        n_frames: T.
        minimum, maximum: the movie's extremes without isolated outlier voxels (see
            :func:`movie_stats`): a hot or dead voxel must not set the scale of the whole movie.
        mean, std: over every voxel (std: population standard deviation).
        percentile_low, percentile_high: the :data:`NORM_PERCENTILES` of every voxel.
        full_scale: the top of the intensity scale for 'abs_max': 65535 for uint16, the dtype's
            maximum for other integer types, the movie's maximum for floats.
        mean_frame: per-pixel temporal mean (Y×X float32), the 'average' background.
        std_frame: per-pixel temporal standard deviation (Y×X float32).
        residual_std: sqrt of the pixels' mean temporal variance: the std of movie − mean frame.
        noise_gain, noise_offset: shot-noise model variance ≈ noise_gain · (x − noise_offset),
            fitted by :func:`estimate_noise` to the pixels' mean and frame-to-frame noise variance
            (half the mean squared difference of successive frames, blind to slow changes).
    """

    n_frames: int
    minimum: float
    maximum: float
    mean: float
    std: float
    full_scale: float
    mean_frame: np.ndarray
    std_frame: np.ndarray
    residual_std: float
    noise_gain: float
    noise_offset: float
    percentile_low: float
    percentile_high: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values and arrays (for an ``np.savez`` cache)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MovieStats":
        out = {}
        for f in fields(cls):
            value = np.asarray(values[f.name])
            if f.name in ("mean_frame", "std_frame"):
                out[f.name] = value.astype(np.float32)
            elif f.name == "n_frames":
                out[f.name] = int(value)
            else:
                out[f.name] = float(value)
        return cls(**out)


def _array(data: Any) -> np.ndarray:
    """The array of a :class:`casparks.io.Movie`, or ``data`` itself."""
    return data if isinstance(data, np.ndarray) else getattr(data, "data", data)


def full_scale_of(dtype: np.dtype, maximum: float) -> float:
    """The 'abs_max' top of scale: 65535 for uint16, the dtype max for integers, else ``maximum``."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).max)
    return float(maximum)


def movie_stats(data: np.ndarray, block_frames: int | None = None) -> MovieStats:
    """Statistics of a T×Y×X movie from a streaming pass over blocks of frames.

    ``data`` may be a ``np.memmap`` of a long movie: only ``block_frames`` frames (default: about
    64 MiB of float64) are held as float at a time.
    """
    return _scan(data, block_frames, announce=True)[0]


@dataclass(frozen=True, eq=False)
class _Defects:
    """What :func:`_scan` learnt about a movie's bad voxels: the noise model that judges them,
    the stuck pixels, and the frames whose brightest or darkest voxel is an outlier or stuck."""

    gain: float
    offset: float
    floor: float
    stuck: np.ndarray  # Y×X bool: constant through the movie, isolated or not (static_pixels)
    suspect_frames: tuple[int, ...]

    def bad_voxels(self, frames: np.ndarray) -> np.ndarray:
        """Outlier voxels and stuck pixels of (T, Y, X) ``frames``."""
        return outlier_voxels(frames, self.gain, self.offset, self.floor) | self.stuck[None]


def _scan(data: np.ndarray, block_frames: int | None = None,
          announce: bool = False) -> tuple[MovieStats, _Defects]:
    """:func:`movie_stats` and the movie's :class:`_Defects`, from one streaming pass.

    ``announce``: log a large constant region. Only :func:`movie_stats` does, the once per movie
    that its normalisation is computed: the repair before resampling, each segment's and the
    resampled movie's scans would otherwise say it again, each in its own pixel count."""
    data = _array(data)
    if data.ndim != 3 or data.shape[0] == 0:
        raise ValueError(f"a movie is a non-empty T×Y×X array, got shape {data.shape}")
    n_frames, height, width = data.shape
    if block_frames is None:
        block_frames = max(1, _BLOCK_BYTES // max(1, height * width * 8))
    count = 0
    mean = np.zeros((height, width), dtype=np.float64)
    m2 = np.zeros((height, width), dtype=np.float64)
    frame_high = np.empty(n_frames)
    frame_low = np.empty(n_frames)
    high_at = np.empty(n_frames, dtype=np.int64)  # flat y·X + x of each frame's brightest voxel
    low_at = np.empty(n_frames, dtype=np.int64)
    diff2 = np.zeros((height, width), dtype=np.float64)  # sum of squared frame-to-frame differences
    stride = max(1, -(-(n_frames * height * width) // _PERCENTILE_SAMPLES))
    samples, sampled_pixels = [], []
    previous = None
    # integers are always finite: only float movies need the NaN check (a full pass of its own)
    check_finite = not np.issubdtype(data.dtype, np.integer)
    for start in range(0, n_frames, block_frames):
        block = np.asarray(data[start : start + block_frames], dtype=np.float64)
        if check_finite and not np.isfinite(block).all():
            raise CasparksError(f"the movie has NaN or infinite values in frames {start}-{start + len(block) - 1}",
                                fix="replace them before training or detection")
        flat = block.reshape(len(block), -1)
        first = (-start * height * width) % stride  # the global stride continues across blocks
        samples.append(flat.reshape(-1)[first::stride].copy())
        sampled_pixels.append(np.arange(first, flat.size, stride) % (height * width))
        rows = np.arange(len(block))
        for at, value, where in ((high_at, frame_high, flat.argmax(axis=1)), (low_at, frame_low, flat.argmin(axis=1))):
            at[start : start + len(block)] = where
            value[start : start + len(block)] = flat[rows, where]
        # squared frame-to-frame differences and deviations from the block mean, each squared in
        # place: two scratch arrays of a block instead of five (a concatenated copy, np.diff, ...)
        if previous is not None:
            diff2 += np.square(block[0] - previous)
        scratch = np.subtract(block[1:], block[:-1])
        diff2 += np.square(scratch, out=scratch).sum(axis=0)
        previous = block[-1].copy()
        n = len(block)
        block_mean = block.mean(axis=0)
        scratch = np.subtract(block, block_mean)
        block_m2 = np.square(scratch, out=scratch).sum(axis=0)
        del scratch
        total = count + n
        delta = block_mean - mean
        mean += delta * (n / total)
        m2 += block_m2 + delta**2 * (count * n / total)
        count = total
    pixel_var = m2 / count
    grand_mean = float(mean.mean())
    grand_var = float(pixel_var.mean() + ((mean - grand_mean) ** 2).mean())
    # noise variance from successive frames: slow changes (bleaching, drift, long events) cancel
    noise_var = diff2 / (2.0 * (n_frames - 1)) if n_frames > 1 else pixel_var
    gain, offset = estimate_noise(mean, noise_var)
    # the noise floor: the shot-noise line says nothing below its offset (dark pixels, read noise)
    floor = float(np.percentile(noise_var, 5)) if noise_var.size else 0.0
    stuck = static_pixels(pixel_var)
    if stuck.any():  # each frame's extremes among the other pixels: suspect then only for an outlier
        frame_low, frame_high, low_at, high_at = _extremes_without(data, stuck, block_frames)
        if announce and stuck.mean() >= 0.01:  # a silent change of the normalisation otherwise (a masked border)
            log.info("%.1f %% of the field is constant through the movie (a saturated spot, a masked or "
                     "unscanned region): left out of the normalisation's extremes and percentiles",
                     100.0 * stuck.mean())
    suspects = _suspect_frames(data, (low_at, high_at), gain, offset, floor, stuck)
    defects = _Defects(gain, offset, floor, stuck, suspects)
    low, high = _robust_extremes(data, frame_low, frame_high, defects)
    sampled = np.concatenate(samples)
    if stuck.any():  # a static spot's voxels set no percentile (a 6 × 6 px one was 0.11 %: p99.9)
        sampled = sampled[~stuck.reshape(-1)[np.concatenate(sampled_pixels)]]
    p_low, p_high = np.percentile(sampled, NORM_PERCENTILES)
    stats = MovieStats(
        n_frames=int(n_frames),
        minimum=low,
        maximum=high,
        mean=grand_mean,
        std=math.sqrt(max(grand_var, 0.0)),
        full_scale=full_scale_of(data.dtype, high),
        mean_frame=mean.astype(np.float32),
        std_frame=np.sqrt(pixel_var).astype(np.float32),
        residual_std=math.sqrt(max(float(pixel_var.mean()), 0.0)),
        noise_gain=gain,
        noise_offset=offset,
        percentile_low=float(p_low),
        percentile_high=float(p_high),
    )
    return stats, defects


#: a voxel beyond all 8 of its neighbours in its frame by more than this many noise standard
#: deviations (shot-noise model at the neighbours' level, at least one photon) is an outlier
OUTLIER_SIGMAS = 10.0
_NEIGHBOURS = np.ones((3, 3), dtype=bool)
_NEIGHBOURS[1, 1] = False


def noise_sd(level: np.ndarray, gain: float, offset: float, floor: float = 0.0) -> np.ndarray:
    """Noise standard deviation at intensity ``level``: the shot-noise model's
    ``gain · (level − offset)`` variance, at least ``floor`` and at least ``gain`` (one photon)."""
    return np.sqrt(np.maximum(gain * (np.asarray(level, dtype=np.float64) - offset), max(floor, gain)))


def outlier_voxels(frames: np.ndarray, gain: float, offset: float, floor: float = 0.0,
                   sigmas: float = OUTLIER_SIGMAS) -> np.ndarray:
    """Isolated outlier voxels of (T, Y, X) ``frames``: a voxel above the brightest of its 8
    neighbours in its frame, or below the darkest, by more than ``sigmas`` noise standard
    deviations (:func:`noise_sd` at the neighbours' mean; ``floor``: the noise variance of the
    darkest pixels, where the shot-noise line does not reach). A hot or
    dead detector pixel, a cosmic ray or a PMT spike is one such voxel; a Ca²⁺ event spans
    several pixels (≥ 0.6 µm) and is never one. Neighbours are mirrored at the frame's edges."""
    frames = np.asarray(frames, dtype=np.float64)
    footprint = _NEIGHBOURS[None]
    above = ndimage.maximum_filter(frames, footprint=footprint, mode="mirror")
    below = ndimage.minimum_filter(frames, footprint=footprint, mode="mirror")
    limit = sigmas * noise_sd(ndimage.correlate(frames, footprint / 8.0, mode="mirror"), gain, offset, floor)
    return (frames - above > limit) | (below - frames > limit)


def static_pixels(pixel_var: np.ndarray) -> np.ndarray:
    """Y×X mask of pixels constant through the whole movie (a dead or hot detector pixel alone; a
    region of them: a saturated spot, or outside the scan), unless
    every pixel is (a constant movie). A pixel that never changes carries no signal, not even
    photon noise, so it sets none of the normalisation's extremes or percentiles: a saturated
    3 × 3 px spot at 65535 in a movie peaking at ~700 kept the maximum at 65535 and made 146
    false sparks around it, a 6 × 6 px one set the 99.9th percentile and hid every event."""
    constant = np.asarray(pixel_var) == 0
    return constant if not constant.all() else np.zeros_like(constant)


def _lone(pixels: np.ndarray) -> np.ndarray:
    """The pixels of ``pixels`` (Y×X) without a neighbour in it (8-connected): a hot or dead pixel,
    repaired from its neighbours; a region's rim (a neighbour varies there too) is not one."""
    labels, n = ndimage.label(pixels, structure=np.ones((3, 3), dtype=bool))
    if not n:
        return np.zeros_like(pixels)
    return (np.bincount(labels.ravel(), minlength=n + 1) == 1)[labels] & pixels


def _extremes_without(data: np.ndarray, pixels: np.ndarray, block_frames: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each frame's darkest and brightest value over the pixels not in ``pixels`` (Y×X), and
    where they lie (flat y·X + x): one more pass, where re-reading every frame whose extreme a
    static spot holds to find its outliers took 3 s for 500 × 64 × 512."""
    n_frames = data.shape[0]
    keep = np.flatnonzero(~pixels.reshape(-1))
    lows, highs = np.empty(n_frames), np.empty(n_frames)
    low_at, high_at = np.empty(n_frames, dtype=np.int64), np.empty(n_frames, dtype=np.int64)
    for start in range(0, n_frames, block_frames):
        block = np.asarray(data[start : start + block_frames], dtype=np.float64).reshape(-1, pixels.size)[:, keep]
        rows, stop = np.arange(len(block)), start + len(block)
        for at, value, where in ((high_at, highs, block.argmax(axis=1)), (low_at, lows, block.argmin(axis=1))):
            at[start:stop] = keep[where]
            value[start:stop] = block[rows, where]
    return lows, highs, low_at, high_at


def _suspect_frames(data: np.ndarray, extremes_at: tuple[np.ndarray, np.ndarray], gain: float, offset: float,
                    floor: float, stuck: np.ndarray) -> tuple[int, ...]:
    """Frames whose darkest or brightest voxel (flat y·X + x per frame, in ``extremes_at``) is an
    outlier (judged against its 8 neighbours only: a few reads per frame) or on a stuck pixel."""
    n_frames, height, width = data.shape
    frames = np.arange(n_frames)
    suspects = set()
    for at, sign in zip(extremes_at, (-1, 1)):
        suspects.update(np.flatnonzero(stuck.reshape(-1)[at]).tolist())
        y, x = np.divmod(at, width)
        values = np.asarray(data[frames, y, x], dtype=np.float64)
        neighbours = []
        for dy, dx in zip(*np.nonzero(_NEIGHBOURS)):
            ny = _mirror(y + dy - 1, height)
            nx = _mirror(x + dx - 1, width)
            neighbours.append(np.asarray(data[frames, ny, nx], dtype=np.float64))
        extreme = np.max(neighbours, axis=0) if sign > 0 else np.min(neighbours, axis=0)
        limit = OUTLIER_SIGMAS * noise_sd(np.mean(neighbours, axis=0), gain, offset, floor)
        suspects.update(np.flatnonzero((values - extreme) * sign > limit).tolist())
    return tuple(sorted(suspects))


def _robust_extremes(data: np.ndarray, frame_low: np.ndarray, frame_high: np.ndarray,
                     defects: _Defects) -> tuple[float, float]:
    """The movie's minimum and maximum over voxels that are neither isolated outliers nor on a
    stuck pixel (:func:`static_pixels`).

    Only the suspect frames are read again (with a clean movie, none): their extremes are taken
    over their other voxels. Why: 'movie' normalisation divides by max − min, so one saturated
    voxel (4095 in a movie whose events peak at 400) would shrink every event ten-fold and hide
    them all from the network, and a dead pixel at 0 in a movie whose darkest pixels read 64
    shifted and shrank the scale enough to lose 5 of 27 sparks.
    """
    frame_low, frame_high = frame_low.copy(), frame_high.copy()
    for f in defects.suspect_frames:
        frame = np.asarray(data[f : f + 1], dtype=np.float64)
        keep = ~defects.bad_voxels(frame)
        if keep.any():
            frame_low[f], frame_high[f] = frame[keep].min(), frame[keep].max()
    return float(frame_low.min()), float(frame_high.max())


def repair_outliers(data: np.ndarray) -> np.ndarray:
    """``data`` with the outlier voxels of its suspect frames (:func:`outlier_voxels`) and its
    lone stuck pixels (a hot or dead pixel) replaced by the mean of their 8 neighbours, and its
    static regions (:func:`static_pixels`, a saturated spot) clipped to the movie's extremes: a
    float32 copy, or ``data`` itself when there are none (a clean movie).

    Why: resampling spreads one bad voxel over several, which :func:`movie_stats` can then no
    longer tell from an event, so a movie is repaired before :func:`resample_movie` zooms it.
    """
    data = _array(data)
    stats, defects = _scan(data)
    isolated = _lone(defects.stuck)  # a hot or dead pixel: repaired from its neighbours
    static = defects.stuck & ~isolated  # a region (a saturated spot): clipped to the extremes
    if not defects.suspect_frames and not defects.stuck.any():
        return data
    out = np.array(data, dtype=np.float32)
    if isolated.any():  # every frame: a frame's extremes no longer make it suspect (read without them)
        out[:, isolated] = _neighbour_mean(out, *np.nonzero(isolated))
    for f in defects.suspect_frames:
        frame = out[f : f + 1].astype(np.float64)
        bad = defects.bad_voxels(frame)
        bad &= ~defects.stuck[None]  # repaired above, or a static region: clipped below
        if bad.any():
            mean = ndimage.correlate(frame, _NEIGHBOURS[None] / 8.0, mode="mirror")
            out[f][bad[0]] = mean[bad]
    if static.any():  # as normalisation clips it, before resampling spreads it
        out[:, static] = np.clip(out[:, static], stats.minimum, stats.maximum)
    return out


def _neighbour_mean(data: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(T, len(ys)) mean of the 8 neighbours of pixels (ys, xs) in every frame, mirrored at the
    frame's edges: only those pixels' neighbours are read, not the whole movie filtered."""
    height, width = data.shape[1:]
    total = np.zeros((data.shape[0], ys.size), dtype=np.float64)
    for dy, dx in zip(*np.nonzero(_NEIGHBOURS)):
        total += data[:, _mirror(ys + dy - 1, height), _mirror(xs + dx - 1, width)]
    return total / 8.0


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored at 0 and n − 1 without repeating the edge (scipy 'mirror'); n = 1 stays 0."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


def estimate_noise(pixel_mean: np.ndarray, pixel_var: np.ndarray, n_bins: int = 20) -> tuple[float, float]:
    """Shot-noise model of a movie: (gain, offset) with variance ≈ gain · (mean − offset).

    Photon shot noise makes a pixel's noise variance grow linearly with its mean intensity
    (gain = ADU per detected photon, times the detector's excess noise factor squared).
    Pixels are grouped into ``n_bins`` bins of equal count by mean; the median mean and the
    median variance per bin (robust to the few pixels that events make brighter) are fitted by a
    straight line. Where that fails (too few distinct intensities, a slope ≤ 0: a flat or
    synthetic movie) the approximation is pure Poisson statistics in the movie's units,
    gain = mean variance / mean intensity above the darkest pixel, offset = the darkest pixel mean.
    """
    means = np.asarray(pixel_mean, dtype=np.float64).ravel()
    variances = np.asarray(pixel_var, dtype=np.float64).ravel()
    darkest = float(means.min())
    fallback_gain = float(variances.mean() / max(means.mean() - darkest, 1e-12))
    fallback = (fallback_gain if math.isfinite(fallback_gain) and fallback_gain > 0 else 1.0, darkest)
    if means.size < 2 * n_bins or np.ptp(means) <= 0:
        return fallback
    order = np.argsort(means, kind="stable")
    groups = np.array_split(order, n_bins)
    x = np.array([np.median(means[g]) for g in groups])
    y = np.array([np.median(variances[g]) for g in groups])
    if np.ptp(x) <= 0:
        return fallback
    slope, intercept = np.polyfit(x, y, 1)
    if not (math.isfinite(slope) and slope > 0):
        return fallback
    return float(slope), float(-intercept / slope)


# ----------------------------------------------------------------------------------------------
# windows of frames


def background_window_frames(settings: Preprocessing, frame_interval_ms: float) -> int:
    """Odd number of frames of the moving-average background (at least 1)."""
    half = int(round(settings.background_window_ms / frame_interval_ms / 2.0))
    return 2 * max(half, 0) + 1


def smoothing_sigma(settings: Preprocessing, pixel_size_um: float, frame_interval_ms: float) -> tuple[float, float, float]:
    """Gaussian σ in voxels (t, y, x); zeros where no smoothing applies."""
    if settings.data_smoothing == "none":
        return (0.0, 0.0, 0.0)
    space = settings.smoothing_sigma_um / pixel_size_um
    time = settings.smoothing_sigma_ms / frame_interval_ms if settings.data_smoothing == "3d" else 0.0
    return (time, space, space)


#: the bundled models trained on 64-row crops, so the network never sees a smaller field:
#: frames narrower than this (in the network's pixels) are reflect-padded to it (in a 32-row
#: field, a 6.4 µm fast scan at 0.1 µm, sim-v3 took a wave's front for a chain of sparks and
#: missed its body: benchmarks/results/physical.md), and tiles are no smaller
MIN_FRAME_PX = 64


def pad_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad (T, Y, X) at the bottom/right to (T, height, width): how detection widens a
    narrow frame for the network and how training batches frames of several sizes, alike."""
    _, y, x = frames.shape
    if (y, x) == (height, width):
        return frames
    mode = "reflect" if y > 1 and x > 1 else "edge"
    return np.pad(frames, ((0, 0), (0, height - y), (0, width - x)), mode=mode)


def context_frames(settings: Preprocessing, pixel_size_um: float, frame_interval_ms: float) -> int:
    """Frames needed on each side of a window to pre-process it exactly like the whole movie."""
    context = 0
    if settings.remove_background == "moving":
        context += background_window_frames(settings, frame_interval_ms) // 2
    sigma_t = smoothing_sigma(settings, pixel_size_um, frame_interval_ms)[0]
    if sigma_t > 0:
        context += int(_TRUNCATE * sigma_t + 0.5)  # scipy's Gaussian radius
    return context


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map frame indices (any integers) into 0..n-1 by mirroring at the ends (scipy 'reflect')."""
    index = np.mod(np.asarray(index, dtype=np.int64), 2 * n)
    return np.where(index >= n, 2 * n - 1 - index, index)


def read_frames(data: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Frames ``[start, stop)`` as a new float32 array (never a view: callers may write into it,
    also when the movie is a read-only float32 memmap); frames outside the movie are its mirror image.

    Only the frames inside the movie that are needed are read from ``data`` (a memmap stays
    on disk).
    """
    data = _array(data)
    n = data.shape[0]
    if stop < start:
        raise ValueError(f"empty frame range [{start}, {stop})")
    index = reflect_index(np.arange(start, stop), n)
    if index.size == 0:
        return np.zeros((0, *data.shape[1:]), dtype=np.float32)
    low, high = int(index.min()), int(index.max()) + 1
    block = np.array(data[low:high], dtype=np.float32)
    if start >= 0 and stop <= n:
        return block
    return block[index - low]


def normalisation(
    stats: MovieStats, settings: Preprocessing, window: np.ndarray | None = None
) -> tuple[float, float]:
    """(offset, scale) of the normalisation: ``normalised = (signal − offset) / scale``.

    ``signal`` is the background-removed movie where a background is removed. ``window`` (the
    requested frames after background removal) is needed for 'chunk' only.
    """
    mode = settings.norm_video
    removed = settings.remove_background != "none"
    if mode == "none":
        return 0.0, 1.0
    if mode == "chunk":
        if window is None:
            raise ValueError("'chunk' normalisation needs the window")
        low, high = float(window.min()), float(window.max())
        return low, _nonzero(high - low)
    if mode == "abs_max":
        offset, scale = stats.minimum, stats.full_scale - stats.minimum
    elif mode == "movie":
        offset, scale = stats.minimum, stats.maximum - stats.minimum
    elif mode == "percentile":
        offset, scale = stats.percentile_low, stats.percentile_high - stats.percentile_low
    else:  # zscore
        offset, scale = stats.mean, stats.residual_std if removed else stats.std
    return (0.0 if removed else float(offset)), _nonzero(float(scale))


def _nonzero(scale: float) -> float:
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def preprocess_frames(
    data: np.ndarray,
    start: int,
    stop: int,
    stats: MovieStats,
    pixel_size_um: float,
    frame_interval_ms: float,
    settings: Preprocessing,
) -> np.ndarray:
    """Pre-processed frames ``[start, stop)`` of a T×Y×X movie as float32 (stop − start, Y, X).

    Reads only those frames plus the context the moving background and the 3-D smoothing need;
    windows may reach beyond the movie (mirrored frames). ``stats`` are the whole movie's
    (:func:`movie_stats`), units are the movie's own.
    """
    data = _array(data)
    if stop <= start:
        raise ValueError(f"empty frame range [{start}, {stop})")
    if not (pixel_size_um > 0 and frame_interval_ms > 0):
        raise ValueError("pixel size and frame interval must be positive")
    n = stop - start
    sigma = smoothing_sigma(settings, pixel_size_um, frame_interval_ms)
    smooth_context = int(_TRUNCATE * sigma[0] + 0.5) if sigma[0] > 0 else 0
    context = context_frames(settings, pixel_size_um, frame_interval_ms)
    frames = read_frames(data, start - context, stop + context)  # float32, context on both sides

    # 1. background, keeping the frames the smoothing still needs
    if settings.remove_background == "moving":
        size = background_window_frames(settings, frame_interval_ms)
        background = ndimage.uniform_filter1d(frames, size=size, axis=0, mode="nearest")
        frames = frames - background
        keep = context - smooth_context
        frames = frames[keep : len(frames) - keep]
    elif settings.remove_background == "average":
        frames = frames - stats.mean_frame[None]
    # now frames = [start - smooth_context, stop + smooth_context)

    # 2. normalisation
    window = frames[smooth_context : smooth_context + n] if settings.norm_video == "chunk" else None
    offset, scale = normalisation(stats, settings, window)
    if offset != 0.0 or scale != 1.0:
        frames = (frames - np.float32(offset)) / np.float32(scale)
    if settings.norm_video in ("movie", "abs_max", "percentile") and settings.remove_background == "none":
        # within the movie's extremes by construction, but for the outlier voxels they leave out
        low, high = (np.float32((v - offset) / scale) for v in (stats.minimum, stats.maximum))
        np.clip(frames, low, high, out=frames)

    # 3. smoothing
    if any(s > 0 for s in sigma):
        frames = ndimage.gaussian_filter(frames, sigma, mode="reflect", truncate=_TRUNCATE)
    out = frames[smooth_context : smooth_context + n]
    return np.ascontiguousarray(out, dtype=np.float32)


def preprocess_movie(
    data: np.ndarray, stats: MovieStats | None, pixel_size_um: float, frame_interval_ms: float, settings: Preprocessing
) -> np.ndarray:
    """The whole movie pre-processed (convenience for small movies; stats computed if None)."""
    data = _array(data)
    stats = stats if stats is not None else movie_stats(data)
    return preprocess_frames(data, 0, data.shape[0], stats, pixel_size_um, frame_interval_ms, settings)


# ----------------------------------------------------------------------------------------------
# sampling: one resampling for training and detection

#: relative difference of sampling below which a movie is used as it is
RESAMPLE_TOLERANCE = 0.02
#: a movie sampled more than this many times more finely or coarsely than the model's native
#: sampling (in µm or in ms) is refused, in detection and in training: its units are almost
#: surely wrong (nm typed as µm, s as ms), and resampling it would need memory without bound (200
#: µm per pixel for 0.2: 59 TiB). An uncalibrated file read as 1 µm per pixel is 5 times 0.2 µm:
#: warned about, with a hint, not refused
MAX_RESAMPLE_FACTOR = 8.0


def resample_factors(pixel_size_um: float, frame_interval_ms: float,
                     target: tuple[float, float] | None) -> tuple[float, float, float] | None:
    """(t, y, x) zoom factors from a movie's sampling to ``target`` = (µm, ms); None when within
    :data:`RESAMPLE_TOLERANCE` (or no target). A factor > 1 means more samples."""
    if target is None:
        return None
    fy = pixel_size_um / float(target[0])
    ft = frame_interval_ms / float(target[1])
    if abs(fy - 1) <= RESAMPLE_TOLERANCE and abs(ft - 1) <= RESAMPLE_TOLERANCE:
        return None
    return (ft, fy, fy)


def resampled_shape(shape: tuple[int, ...], factors: tuple[float, float, float]) -> tuple[int, int, int]:
    """The T×Y×X shape a movie of ``shape`` gets when zoomed by ``factors``."""
    return tuple(max(1, int(round(n * f))) for n, f in zip(shape, factors))  # type: ignore[return-value]


#: how far outside its training movies' samplings (card ``trained_sampling``) a movie may lie and
#: still be read as they were: within 10 % no warning (:func:`casparks.detection.check_sampling`)
#: and no averaging (:func:`averaging_widths`)
TRAINED_RANGE_SLACK = 1.1


def averaging_widths(pixel_size_um: float, frame_interval_ms: float, finest: tuple[float, float] | None,
                     to: tuple[float, float] | None = None) -> tuple[float, float, float] | None:
    """(t, y, x) running-mean widths, in the movie's own samples, for a movie sampled finer than
    ``finest`` = (µm, ms) along an axis (by more than :data:`TRAINED_RANGE_SLACK`): as many
    samples as span ``to`` (``finest`` itself where None) there, 1 along the other axes; None
    where it is not finer along any axis.

    Why: linear resampling to a coarser sampling reads the two samples beside each new one and
    drops the rest, so a 1 ms movie resampled to 6.8 ms kept the noise of one 1 ms frame where
    the network had learned movies of 2.5 ms or more. Averaged over 2.5 ms first, it reads as a
    2.5 ms movie does (:func:`box_weights`), and a movie just past the range is averaged just a
    little. On 24 movies of both simulators at 1 ms and 0.05 µm (models/fine_sampling.py) that
    raised every class's F1 (paired 95 % intervals: sparks +0.006 to +0.046, puffs +0.025 to
    +0.078); averaging up to the model's native sampling (``to``) raised sparks more (+0.009 to
    +0.071) but not puffs (−0.050 to +0.060)."""
    if finest is None:
        return None
    to = finest if to is None else to
    values, least, target = (frame_interval_ms, pixel_size_um), (finest[1], finest[0]), (to[1], to[0])
    t, yx = (float(g) / v if v * TRAINED_RANGE_SLACK < float(f) else 1.0
             for v, f, g in zip(values, least, target))
    return (max(1.0, t), max(1.0, yx), max(1.0, yx)) if max(t, yx) > 1.0 else None


def box_weights(width: float) -> np.ndarray:
    """Taps of a centred running mean over ``width`` samples (any real width ≥ 1): each sample
    weighs the share of it that a box of ``width`` samples centred on the middle one covers, so
    a width of 2.5 is [0.75, 1, 0.75] / 2.5 (binning without a grid to bin on)."""
    half = width / 2
    taps = np.arange(-math.ceil(half - 0.5), math.ceil(half - 0.5) + 1, dtype=np.float64)
    weights = np.clip(np.minimum(taps + 0.5, half) - np.maximum(taps - 0.5, -half), 0.0, 1.0)
    return weights / weights.sum()


def average_samples(data: np.ndarray, widths: tuple[float, float, float] | None,
                    in_place: bool = False) -> np.ndarray:
    """``data`` (float32) averaged along each axis over its ``widths`` (:func:`box_weights`),
    edges held as resampling holds them; ``data`` itself where every width is 1. A row of every
    frame (along t), or a frame (along y, x), at a time, so that ``in_place`` (``data`` a float32
    array of the caller's own) needs no second movie: a 6800-frame 1 ms movie is 0.9 GB of float32."""
    if widths is None or max(widths) <= 1.0 + RESAMPLE_TOLERANCE:
        return data
    out = data if in_place else np.array(data, dtype=np.float32)
    for axis, width in enumerate(widths):
        if width <= 1.0 + RESAMPLE_TOLERANCE:
            continue
        weights = box_weights(width)
        if axis == 0:
            for y in range(out.shape[1]):
                out[:, y] = ndimage.correlate1d(out[:, y], weights, axis=0, mode="nearest")
        else:
            for t in range(out.shape[0]):
                out[t] = ndimage.correlate1d(out[t], weights, axis=axis - 1, mode="nearest")
    return out


def resample_movie(data: np.ndarray, factors: tuple[float, float, float], order: int = 1,
                   average: tuple[float, float, float] | None = None) -> np.ndarray:
    """A T×Y×X movie zoomed by (t, y, x) ``factors``: linear (``order=1``, float32) for
    intensities, nearest (``order=0``, same dtype) for labels. Detection resamples movies of
    other samplings with exactly this, and training with ``data.resample_to`` too, so a model
    learns what interpolated movies look like. Intensities are repaired first
    (:func:`repair_outliers`: a clean movie is untouched), then averaged over ``average``
    samples (:func:`averaging_widths`: a movie sampled finer than any the model learned)."""
    from scipy import ndimage

    data = np.asarray(data)
    if order:
        floats = repair_outliers(data).astype(np.float32, copy=False)
        data = average_samples(floats, average, in_place=floats is not data)  # never the caller's movie
    elif average is not None:
        raise ValueError("labels (order=0) are resampled, not averaged")
    shape = resampled_shape(data.shape, factors)
    zoom = [s / n for s, n in zip(shape, data.shape)]
    return ndimage.zoom(data, zoom, order=order, mode="nearest", grid_mode=True)


def with_source_scale(stats: MovieStats, source_dtype: np.dtype) -> MovieStats:
    """``stats`` of a resampled (float32) movie with the 'abs_max' top of scale of the movie it
    was resampled from: resampling must not turn a uint16 movie's 65535 into its own maximum
    (a 150-fold change of the normalised values)."""
    return replace(stats, full_scale=full_scale_of(source_dtype, stats.maximum))


class ResampledFrames:
    """A T×Y×X movie zoomed by ``factors`` as :func:`resample_movie` zooms it (linear, edges
    held; to float rounding), made frame block by frame block on indexing:
    :func:`resampled_stats` streams a long movie's resampled whole through it, and detection
    resamples a long movie's segments on the whole movie's grid with it. ``repair``: each block
    of source frames read is repaired first (:func:`repair_outliers`), as a segment is.
    ``average``: as for :func:`resample_movie` (a block reads the frames its running mean needs)."""

    def __init__(self, data: np.ndarray, factors: tuple[float, float, float], repair: bool = False,
                 average: tuple[float, float, float] | None = None):
        self.source = data
        self.repair = repair
        self.average = average
        self._margin = box_weights(average[0]).size // 2 if average is not None else 0
        self.shape = resampled_shape(data.shape, factors)
        self.ndim = 3
        self.dtype = np.dtype(np.float32)

    def _frames(self, start: int, stop: int) -> np.ndarray:
        from scipy import ndimage

        n_in = self.source.shape[0]
        lo, hi, weight = _linear_taps(_grid_positions(n_in, self.shape[0])[start:stop], n_in)
        weight = weight[:, None, None]
        first = max(0, int(lo.min()) - self._margin)  # and the frames the running mean reads
        source = np.asarray(self.source[first : min(n_in, int(hi.max()) + 1 + self._margin)], dtype=np.float32)
        if self.repair:
            source = np.asarray(repair_outliers(source), dtype=np.float32)
        source = average_samples(source, self.average)
        frames = source[lo - first] * (1 - weight) + source[hi - first] * weight
        zoom = [1.0] + [s / n for s, n in zip(self.shape[1:], self.source.shape[1:])]
        return ndimage.zoom(frames, zoom, order=1, mode="nearest", grid_mode=True)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            return self._frames(start, stop)[::step]
        frames, *rest = key if isinstance(key, tuple) else (key,)
        if isinstance(frames, slice):
            return self[frames][(slice(None), *rest)]
        frames = np.asarray(frames)
        unique, inverse = np.unique(frames, return_inverse=True)
        stack = np.stack([self._frames(int(f), int(f) + 1)[0] for f in unique])
        return stack[(inverse.reshape(frames.shape), *rest)]


def resampled_stats(data: np.ndarray, factors: tuple[float, float, float],
                    block_frames: int | None = None, average: tuple[float, float, float] | None = None) -> MovieStats:
    """:func:`movie_stats` of ``data`` zoomed by ``factors`` (after ``average``, as
    :func:`resample_movie`), streamed: the whole movie's normalisation for the segments of a
    long movie of another sampling, without holding its resampled whole (each segment's own
    statistics moved p(event) by up to 0.58)."""
    stats = movie_stats(ResampledFrames(_array(data), factors, average=average), block_frames)
    return with_source_scale(stats, _array(data).dtype)


def resample_probabilities(probs: np.ndarray, shape: tuple[int, ...], block_frames: int = 64,
                           at_t: np.ndarray | None = None) -> np.ndarray:
    """(C, T', Y', X') class probabilities → (C, *shape) by linear interpolation, renormalised to
    sum to 1: results of a resampled movie brought back to the movie's own sampling. ``at_t``:
    the frame positions among ``probs``' to interpolate at (a segment's, on the whole movie's
    grid), instead of the grid-mode positions of ``shape[0]`` frames.

    The interpolation is :func:`scipy.ndimage.zoom`'s (order 1, grid mode, edges held), done one
    axis at a time and a block of frames at a time: trilinear is the product of three linear
    interpolations, and an axis that keeps its size is left alone. ``ndimage.zoom`` interpolated
    every voxel in 3-D: 16 s of a 1 ms movie's 39 s (3400 × 64 × 512 px, four channels), and the
    renormalisation of the whole another 5 s."""
    out = np.empty((probs.shape[0], *shape), dtype=np.float32)
    n_in = probs.shape[1]
    at_t = _grid_positions(n_in, shape[0]) if at_t is None else np.clip(at_t, 0, n_in - 1)
    for start in range(0, shape[0], block_frames):
        stop = min(start + block_frames, shape[0])
        below, above, weight = _linear_taps(at_t[start:stop], n_in)
        block = out[:, start:stop]
        for c in range(probs.shape[0]):
            frames = probs[c, below] * (1 - weight)[:, None, None] + probs[c, above] * weight[:, None, None]
            for axis in (1, 2):
                frames = _lerp_axis(frames, axis, shape[axis])
            block[c] = frames
        block /= np.maximum(block.sum(axis=0, keepdims=True), np.float32(1e-8))
    return out


def _grid_positions(n_in: int, n_out: int) -> np.ndarray:
    """Where the ``n_out`` samples of a resampled axis fall among its ``n_in`` samples (grid mode:
    the ends of the two grids' extents coincide, as :func:`scipy.ndimage.zoom` with ``grid_mode``)."""
    return np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)


def _linear_taps(at: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two samples beside each position ``at`` and the weight of the second (float32)."""
    below = np.floor(at).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    return below, above, (at - below).astype(np.float32)


def _lerp_axis(data: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """``data`` linearly resampled to ``n_out`` samples along ``axis`` (grid mode, edges held)."""
    n_in = data.shape[axis]
    if n_in == n_out:
        return data
    below, above, weight = _linear_taps(_grid_positions(n_in, n_out), n_in)
    shape = [1] * data.ndim
    shape[axis] = n_out
    weight = weight.reshape(shape)
    return np.take(data, below, axis=axis) * (1 - weight) + np.take(data, above, axis=axis) * weight

"""Per-event measurements: what a physiologist reports for every spark, puff and wave.

Detection says *where* the events are; the biology is in their numbers: amplitude ΔF/F0, width
(FWHM), duration (FDHM), time to peak, decay τ, frequency, and for waves the propagation speed.
:func:`measure_events` computes them for every instance of an event label (annotated or
predicted) from the raw movie, in µm and ms, with the conventions of line-scan spark analysis
(Cheng et al. 1999; SparkMaster, Tomek et al. 2023) carried over to x-y-t movies.

Baseline F0 (:func:`f0_estimate`)
---------------------------------
ΔF/F0 = (F − offset − F0) / F0, where ``offset`` is the detector's dark level
(``MeasureConfig.offset_adu``; 0 = the movie's values are already offset-free; ``"auto"`` = the
darkest 0.5 % of the baseline image, for fields with cell-free background) and F0 the resting
fluorescence above it. F0 is modelled as a resting image times a global time course,
F0(t, y, x) = B(y, x) · g(t) (photobleaching and slow drift scale the whole field):

1. Frames are averaged in bins of ``f0_bin_ms`` (a median of single low-photon frames is biased
   low; a median of bin means is not).
2. Bins touched by an event are excluded: every voxel of an event (``event_label > 0``) or of an
   event or ignore class, dilated by ``exclude_um`` in space and by ``exclude_before_ms`` before /
   ``exclude_after_ms`` after in time (events decay after their labels end).
3. B is the per-pixel median of the remaining bin means; bins more than ``f0_clip_sigma`` robust
   SDs above it (unlabelled events, long decay tails) are dropped and the median is taken again.
   g(t) is the ratio of the movie to B over the bright half of the field outside events, a
   running mean over ``f0_window_ms``. B is smoothed in space by a Gaussian of σ
   ``f0_smooth_um`` (normalised convolution: pixels under events in every bin borrow from their
   neighbours; pixels with no usable bin at all within reach take the 10th percentile of all
   their bins).

Measurements
------------
Around each event's bounding box (padded by ``margin_um`` and ``margin_ms``) ΔF/F0 is smoothed by
a Gaussian of σ ``smooth_sigma_um`` / ``smooth_sigma_ms``. Waves are measured on ΔF/F0 averaged in
``wave_bin_um`` squares (and smoothed in time only): they are wide, and this keeps a movie-filling
wave cheap. Profiles stop at voxels of other events (a crossing that is not reached before
another event or the field's edge gives NaN). Time of a voxel: with ``raster_scan`` (the default,
a point-scanning confocal) row y of frame k is acquired at (k + (y + 0.5)/H)·Δt, otherwise the
whole frame at (k + 0.5)·Δt; frame k spans [k·Δt, (k + 1)·Δt).

Columns of the table (one row per event id, sorted by id):

=================  ==============================================================================
id                 the instance id in ``event_label``
class              'spark', 'wave' or 'puff': the most common event class among its voxels
confidence         mean over its voxels of 1 − p(background) (NaN without probabilities)
start_ms, end_ms   first frame · Δt and (last frame + 1) · Δt of its voxels
duration_ms        end_ms − start_ms
peak_ms            time of the maximum of smoothed ΔF/F0 over its voxels (parabolic sub-frame)
peak_y_um/_x_um    position of that maximum (pixel centres, parabolic sub-pixel refinement)
centroid_y/x_um    centre of its voxels weighted by smoothed ΔF/F0 (≥ 0)
extent_y/x_um      size of its bounding box (pixels × pixel size)
amplitude_dff      smoothed ΔF/F0 at the peak
fwhm_um            full width at half amplitude of the profile along x through the peak, at the
                   peak frame (linear interpolation of the crossings)
fwhm_y_um          the same along y
fdhm_ms            full duration at half amplitude of the temporal profile at the peak pixel: the
                   contiguous span around the peak that stays above half the amplitude
time_to_peak_ms    from the crossing of 10 % of the amplitude (``rise_fraction``) on the rise of
                   that temporal profile to the peak (for a release that starts abruptly this is
                   the rise time minus a few per cent)
decay_tau_ms       τ of a ΔF/F0-weighted log-linear fit of a·exp(−t/τ) to the final decay of
                   that profile: from its last local maximum above half the amplitude down to
                   ``decay_floor_fraction`` of it (or another event / a renewed rise / the box
                   end); NaN with fewer than 3 points or no decay
speed_um_per_s     waves: propagation speed from the arrival time (half-maximum crossing on the
                   rise of each ``wave_bin_um`` square) fitted by a front spreading from a point,
                   t = t0 + |p − p0| / v (robust least squares; a far p0 is a plane front)
direction_deg      waves: mean propagation direction, atan2 of the mean unit vector from p0 to
                   the wave's pixels, in degrees (0 = +x, 90 = +y, i.e. down the image rows;
                   ±180 = −x); NaN when the wave spreads both ways (mean vector shorter than 0.5)
=================  ==============================================================================

Smoothing lowers the measured amplitude and widens FWHM a little (for a Gaussian spark of
FWHM w, the smoothed FWHM is sqrt(w² + (2.355·σ)²): +4 % for 1.5 µm at σ = 0.2 µm); noise raises
the measured maximum of faint events. See ``tests/test_measure.py`` for the accuracy on simulated
movies with known truth.

Frequency (:func:`event_frequency`)
-----------------------------------
Events per 100 µm of cell length per s, the line-scan convention, with the length taken as the
cell's extent along x (the columns that hold any pixel of ``cell_mask``, or the field's width),
and events per 1000 µm² per s (the area of ``cell_mask`` or of the field). A line scan samples
only the sparks within about a FWHM of its line, an x-y frame the whole width of the cell in view,
so x-y frequencies per 100 µm are higher than line-scan ones by roughly cell width / FWHM; the
per-area rate is the one to compare between x-y movies.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage, optimize

from .classes import CLASS_NAMES, CODE_NAMES, EVENT_CLASSES, IGNORE, WAVE
from .errors import CasparksError, reject_unknown_keys

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS", "FREQUENCY_COLUMNS", "MeasureConfig", "MeasureConfigError", "measure_events",
    "event_frequency", "f0_estimate", "dff_movie",
]

#: Columns of :func:`measure_events`' table, in order.
COLUMNS = [
    "id", "class", "confidence", "start_ms", "peak_ms", "end_ms", "duration_ms", "peak_y_um", "peak_x_um",
    "centroid_y_um", "centroid_x_um", "extent_y_um", "extent_x_um", "amplitude_dff", "fwhm_um", "fwhm_y_um",
    "fdhm_ms", "time_to_peak_ms", "decay_tau_ms", "speed_um_per_s", "direction_deg",
]
#: Columns of :func:`event_frequency`'s table.
FREQUENCY_COLUMNS = ["class", "count", "length_um", "area_um2", "duration_s", "per_100um_per_s", "per_1000um2_per_s"]

#: Fewest arrival-time points for a wave speed.
_MIN_WAVE_POINTS = 8


# ----------------------------------------------------------------------------------------------
# configuration


class MeasureConfigError(CasparksError, ValueError):
    """An invalid :class:`MeasureConfig` value."""


@dataclass(frozen=True)
class MeasureConfig:
    """How events are measured; every size in µm, every time in ms (see the module docstring).

    Attributes:
        offset_adu: detector dark level subtracted before ΔF/F0 (ADU); "auto": the darkest 0.5 %
            of the baseline image (only for fields that include cell-free background).
        f0_bin_ms: frames are averaged in bins of this length before the baseline median.
        f0_window_ms: running-mean window of the baseline's global time course g(t).
        f0_smooth_um: Gaussian σ of the spatial smoothing of the resting image B.
        f0_clip_sigma: bins this many robust SDs above the first baseline are dropped (0: off).
        exclude_um: spatial dilation of the event mask for the baseline.
        exclude_before_ms: temporal dilation before each event.
        exclude_after_ms, exclude_after_factor: after each run of event voxels at a pixel, the
            next max(exclude_after_ms, exclude_after_factor × the run's length) are left out too
            (a decay lasts longer after a longer event).
        smooth_sigma_um, smooth_sigma_ms: Gaussian σ of the smoothing of ΔF/F0 before measuring.
        margin_um, margin_ms: padding of each event's bounding box for its profiles.
        rise_fraction: time to peak starts where the rise crosses this fraction of the amplitude.
        decay_floor_fraction: the decay fit stops below this fraction of its starting value.
        wave_bin_um: waves are measured on ΔF/F0 averaged in squares of this size.
        raster_scan: rows of a frame are acquired one after another (point-scanning confocal).
    """

    offset_adu: float | str = 0.0
    f0_bin_ms: float = 30.0
    f0_window_ms: float = 500.0
    f0_smooth_um: float = 0.2
    f0_clip_sigma: float = 3.0
    exclude_um: float = 1.0
    exclude_before_ms: float = 20.0
    exclude_after_ms: float = 100.0
    exclude_after_factor: float = 2.0
    smooth_sigma_um: float = 0.2
    smooth_sigma_ms: float = 0.0
    margin_um: float = 2.0
    margin_ms: float = 60.0
    rise_fraction: float = 0.1
    decay_floor_fraction: float = 0.1
    wave_bin_um: float = 1.0
    raster_scan: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.offset_adu, str):
            if self.offset_adu != "auto":
                raise MeasureConfigError(f"offset_adu must be a number or 'auto', got {self.offset_adu!r}",
                                         fix="give the detector's dark level in ADU, 0, or auto")
        elif not _is_number(self.offset_adu):
            raise MeasureConfigError(f"offset_adu must be a number or 'auto', got {self.offset_adu!r}",
                                     fix="give the detector's dark level in ADU, 0, or auto")
        if not isinstance(self.raster_scan, (bool, np.bool_)):
            raise MeasureConfigError(f"raster_scan must be true or false, got {self.raster_scan!r}",
                                     fix="give a boolean")
        positive = ("f0_bin_ms", "f0_window_ms", "wave_bin_um")
        fractions = ("rise_fraction", "decay_floor_fraction")
        for f in fields(self):
            if f.name in ("offset_adu", "raster_scan"):
                continue
            value = getattr(self, f.name)
            ok = _is_number(value) and (value > 0 if f.name in positive else value >= 0)
            if ok and f.name in fractions:
                ok = 0 < value < 1
            if not ok:
                need = "in (0, 1)" if f.name in fractions else "> 0" if f.name in positive else ">= 0"
                raise MeasureConfigError(f"{f.name} must be a number {need}, got {value!r}",
                                         fix=f"set {f.name} {need}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for YAML/JSON); :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MeasureConfig":
        """Build from a dict; unknown keys are an error naming the known ones."""
        reject_unknown_keys({f.name for f in fields(cls)}, values, "measure option", MeasureConfigError)
        return cls(**dict(values))


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


# ----------------------------------------------------------------------------------------------
# baseline


@dataclass(frozen=True)
class _Baseline:
    """F0(t, y, x) = image[y, x] · course[t], above ``offset``."""

    image: np.ndarray  # (Y, X) float32
    course: np.ndarray  # (T,) float32
    offset: float
    floor: float  # smallest F0 used as a divisor

    def f0(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        f0 = self.image[box[1], box[2]][None] * self.course[box[0], None, None]
        return np.maximum(f0, np.float32(self.floor))


def _shift_or(mask: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    """Dilate a boolean array along ``axis``: a True at i marks i − before … i + after."""
    out = mask.copy()
    n = mask.shape[axis]
    for d in list(range(1, min(after, n - 1) + 1)) + [-d for d in range(1, min(before, n - 1) + 1)]:
        src = [slice(None)] * mask.ndim
        dst = [slice(None)] * mask.ndim
        src[axis] = slice(0, n - d) if d > 0 else slice(-d, n)
        dst[axis] = slice(d, n) if d > 0 else slice(0, n + d)
        out[tuple(dst)] |= mask[tuple(src)]
    return out


def _extend_after(mask: np.ndarray, minimum: int, factor: float) -> np.ndarray:
    """Extend every run of True along axis 0 (per pixel) by max(minimum, factor × its length)."""
    out = mask.copy()
    run = np.zeros(mask.shape[1:], dtype=np.int32)
    left = np.zeros(mask.shape[1:], dtype=np.int32)
    for b in range(mask.shape[0]):
        now = mask[b]
        ended = ~now & (run > 0)
        if ended.any():
            left = np.where(ended, np.maximum(minimum, np.ceil(factor * run)).astype(np.int32), left)
        run = np.where(now, run + 1, 0)
        tail = ~now & (left > 0)
        out[b] |= tail
        left = np.where(tail, left - 1, left)
    return out


def _sorted_median(sorted_values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median per column of values sorted along axis 0 whose first ``count`` entries are valid."""
    lo = np.clip((count - 1) // 2, 0, None)[None]
    hi = np.clip(count // 2, 0, sorted_values.shape[0] - 1)[None]
    lo = np.minimum(lo, sorted_values.shape[0] - 1)
    med = 0.5 * (np.take_along_axis(sorted_values, lo, 0)[0] + np.take_along_axis(sorted_values, hi, 0)[0])
    return np.where(count > 0, med, np.nan).astype(np.float32)


def _baseline(data: np.ndarray, excluded: np.ndarray, pixel_size_um: float, frame_interval_ms: float,
              config: MeasureConfig) -> _Baseline:
    """The factorised baseline of a raw T×Y×X movie with ``excluded`` voxels (events) left out."""
    T, H, W = data.shape
    nb = max(1, int(round(config.f0_bin_ms / frame_interval_ms)))
    starts = np.arange(0, T, nb)
    counts = np.diff(np.append(starts, T)).astype(np.float32)
    means = np.add.reduceat(data, starts, axis=0, dtype=np.float32)
    means /= counts[:, None, None]
    touched = np.logical_or.reduceat(excluded, starts, axis=0)
    bin_ms = nb * frame_interval_ms
    touched = _extend_after(touched, int(math.ceil(config.exclude_after_ms / bin_ms)), config.exclude_after_factor)
    touched = _shift_or(touched, 0, int(math.ceil(config.exclude_before_ms / bin_ms)), 0)
    r = int(round(config.exclude_um / pixel_size_um))
    if r > 0:
        touched = _shift_or(_shift_or(touched, 1, r, r), 2, r, r)
    valid = ~touched
    n_bins = len(starts)

    def robust(values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, clipped median, validity after clipping) per pixel of ``values`` where ``ok``."""
        work = np.where(ok, values, np.float32(np.inf))
        work.sort(axis=0)
        n = ok.sum(axis=0)
        med = _sorted_median(work, n)
        if config.f0_clip_sigma <= 0:
            return med, med, ok
        q25 = np.take_along_axis(work, np.clip((n - 1) // 4, 0, n_bins - 1)[None], 0)[0]
        scale = np.maximum(med - q25, 0) / 0.6745
        threshold = med + np.float32(config.f0_clip_sigma) * scale
        n_kept = np.where(n > 0, (work <= threshold[None]).sum(axis=0), 0)
        return med, _sorted_median(work, n_kept), ok & (values <= threshold[None])

    if config.offset_adu == "auto":
        first = np.nanmedian(np.where(valid, means, np.nan), axis=0) if valid.any() else np.median(means, axis=0)
        first = np.where(np.isfinite(first), first, np.median(means, axis=0))
        offset = float(np.percentile(ndimage.gaussian_filter(first, 1.0), 0.5))
    else:
        offset = float(config.offset_adu)
    means -= np.float32(offset)

    _, image, kept = robust(means, valid)
    # global time course: median over the bright half of the field, outside events, of movie / image
    finite = np.isfinite(image)
    course_bins = np.ones(n_bins)
    if finite.any():
        step = max(1, int(round(math.sqrt(finite.sum() / 4096))))  # ~4000 pixels are plenty
        sub_image = image[::step, ::step]
        bright = np.isfinite(sub_image) & (sub_image >= np.nanmedian(image)) & (sub_image > 0)
        use = kept[:, ::step, ::step] & bright[None]
        ratio = np.where(use, means[:, ::step, ::step] / np.where(bright, sub_image, 1)[None], np.inf)
        ratio = ratio.reshape(n_bins, -1)
        ratio.sort(axis=1)
        n_use = use.reshape(n_bins, -1).sum(axis=1)
        has = n_use >= 10
        if has.any():
            course_bins[has] = _sorted_median(ratio.T, n_use)[has]
            window = max(1, int(round(config.f0_window_ms / bin_ms)))
            smooth_num = ndimage.uniform_filter1d(np.where(has, course_bins, 0.0), window, mode="nearest")
            smooth_den = ndimage.uniform_filter1d(has.astype(float), window, mode="nearest")
            filled = np.interp(np.arange(n_bins), np.flatnonzero(has), course_bins[has])
            course_bins = np.where(smooth_den > 1e-6, smooth_num / np.maximum(smooth_den, 1e-12), filled)
            course_bins /= float(np.mean(course_bins))
            _, image, _ = robust(means / course_bins[:, None, None].astype(np.float32), valid)
    # spatial smoothing by normalised convolution; pixels without any usable bin borrow
    known = np.isfinite(image)
    sigma = config.f0_smooth_um / pixel_size_um
    filled_image = np.where(known, image, 0).astype(np.float32)
    if sigma > 0:
        num2 = ndimage.gaussian_filter(filled_image, sigma, mode="nearest")
        den2 = ndimage.gaussian_filter(known.astype(np.float32), sigma, mode="nearest")
        smooth = np.where(den2 > 1e-3, num2 / np.maximum(den2, 1e-12), np.nan)
        smooth = np.where(known, smooth, smooth)  # unknown pixels with known neighbours get their mean
    else:
        smooth = np.where(known, image, np.nan)
    missing = ~np.isfinite(smooth)
    if missing.any():
        low = np.percentile(means / course_bins[:, None, None], 10, axis=0)
        smooth = np.where(missing, low, smooth)
    centres = (starts + 0.5 * counts - 0.5)
    course = np.interp(np.arange(T), centres, course_bins).astype(np.float32)
    image_out = smooth.astype(np.float32)
    top = float(np.percentile(image_out, 90)) if image_out.size else 1.0
    floor = max(0.02 * top, 1e-6)
    return _Baseline(image_out, course, offset, floor)


def _excluded(class_label: np.ndarray | None, event_label: np.ndarray | None) -> np.ndarray:
    mask = None
    if event_label is not None:
        mask = np.asarray(event_label) > 0
    if class_label is not None:
        c = np.asarray(class_label)
        event_or_ignore = (c >= min(EVENT_CLASSES)) & (c <= max(max(EVENT_CLASSES), IGNORE))
        mask = event_or_ignore if mask is None else mask | event_or_ignore
    return mask


def _array(movie: Any) -> np.ndarray:
    data = movie if isinstance(movie, np.ndarray) else getattr(movie, "data", movie)
    data = np.asarray(data)
    if data.ndim != 3:
        raise CasparksError(f"a movie is a T×Y×X array, got shape {data.shape}", fix="pass one channel as T×Y×X")
    return data


def f0_estimate(movie: np.ndarray, event_mask: np.ndarray | None, pixel_size_um: float, frame_interval_ms: float,
                config: MeasureConfig = MeasureConfig()) -> np.ndarray:
    """Resting fluorescence F0 (T×Y×X float32) above the offset, robust to the events.

    ``event_mask`` (T×Y×X bool, or None) marks event voxels to leave out (it is dilated as the
    config says). ΔF/F0 is ``(movie − offset − F0) / F0`` with ``offset = config.offset_adu``
    (for ``offset_adu='auto'`` use :func:`dff_movie`, which knows the estimated offset).
    """
    data = _array(movie)
    mask = np.zeros(data.shape, bool) if event_mask is None else np.asarray(event_mask, dtype=bool)
    _check_shape(mask, data.shape, "event_mask")
    base = _baseline(data, mask, pixel_size_um, frame_interval_ms, config)
    return base.f0((slice(None), slice(None), slice(None)))


def dff_movie(movie: np.ndarray, event_mask: np.ndarray | None, pixel_size_um: float, frame_interval_ms: float,
              config: MeasureConfig = MeasureConfig()) -> np.ndarray:
    """ΔF/F0 of the whole movie (T×Y×X float32), with F0 from :func:`f0_estimate`'s method."""
    data = _array(movie)
    mask = np.zeros(data.shape, bool) if event_mask is None else np.asarray(event_mask, dtype=bool)
    _check_shape(mask, data.shape, "event_mask")
    base = _baseline(data, mask, pixel_size_um, frame_interval_ms, config)
    full = (slice(None), slice(None), slice(None))
    return ((data.astype(np.float32) - np.float32(base.offset)) / base.f0(full) - 1.0).astype(np.float32)


def _check_shape(array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if array.shape != tuple(shape):
        raise CasparksError(f"{what} has shape {array.shape}, the movie {tuple(shape)}",
                            fix=f"give a {what} with the movie's shape")


# ----------------------------------------------------------------------------------------------
# profiles


def _crossing(values: np.ndarray, coords: np.ndarray, i_peak: int, level: float, step: int) -> float:
    """Coordinate where ``values`` first falls below ``level`` walking from ``i_peak`` by ``step``
    (±1), linearly interpolated; NaN if a NaN (another event) or the end comes first."""
    i = i_peak
    n = values.size
    while True:
        j = i + step
        if j < 0 or j >= n or not np.isfinite(values[j]):
            return float("nan")
        if values[j] < level:
            v_in, v_out = values[i], values[j]
            frac = (v_in - level) / (v_in - v_out) if v_in != v_out else 0.0
            return float(coords[i] + frac * (coords[j] - coords[i]))
        i = j


def _width(values: np.ndarray, coords: np.ndarray, i_peak: int, level: float) -> float:
    return _crossing(values, coords, i_peak, level, +1) - _crossing(values, coords, i_peak, level, -1)


def _parabola(values: np.ndarray, i: int) -> float:
    """Sub-sample offset (−0.5 … 0.5) of the vertex of the parabola through i − 1, i, i + 1."""
    if i <= 0 or i >= values.size - 1:
        return 0.0
    a, b, c = values[i - 1], values[i], values[i + 1]
    denom = a - 2 * b + c
    if not (np.isfinite(denom) and denom < 0):
        return 0.0
    return float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))


def _decay_tau(values: np.ndarray, times: np.ndarray, i_peak: int, amplitude: float, config: MeasureConfig) -> float:
    """τ (ms) of the final decay of a temporal profile (see the module docstring); NaN if none."""
    n = values.size
    j = i_peak
    while j + 1 < n and np.isfinite(values[j + 1]) and values[j + 1] >= amplitude / 2:
        j += 1
    # last local maximum between the peak and the fall below half the amplitude
    start = i_peak
    for k in range(j, i_peak, -1):
        if values[k] >= values[k - 1] and (k + 1 >= n or not np.isfinite(values[k + 1]) or values[k] >= values[k + 1]):
            start = k
            break
    top = values[start]
    floor = config.decay_floor_fraction * top
    start += 1  # the maximum sample may lie on the rise: the fit starts after it
    end = start
    low = top
    while end < n and np.isfinite(values[end]) and values[end] >= floor:
        low = min(low, values[end])
        if values[end] - low > 0.2 * top:  # a renewed rise: another release
            break
        end += 1
    v = values[start:end]
    t = times[start:end]
    keep = v > 0
    if keep.sum() < 3:
        return float("nan")
    v, t = v[keep].astype(float), t[keep].astype(float)
    w = v**2
    tm = np.sum(w * t) / np.sum(w)
    lm = np.sum(w * np.log(v)) / np.sum(w)
    var = np.sum(w * (t - tm) ** 2)
    if var <= 0:
        return float("nan")
    slope = np.sum(w * (t - tm) * (np.log(v) - lm)) / var
    if not (np.isfinite(slope) and slope < 0):
        return float("nan")
    return float(-1.0 / slope)


@dataclass
class _Box:
    """Smoothed ΔF/F0 around one event and the geometry to read it."""

    sm: np.ndarray  # (t, y, x) smoothed ΔF/F0
    inside: np.ndarray  # bool, the event's voxels
    others: np.ndarray  # bool, other events' voxels
    frame0: int  # first frame of the box
    y: np.ndarray  # µm, centres of the box's rows
    x: np.ndarray  # µm, centres of the box's columns
    row_delay: np.ndarray  # ms, acquisition delay of each row within its frame
    dy: float  # µm, row spacing
    dx: float  # µm, column spacing


def _measure_box(box: _Box, dt: float, config: MeasureConfig) -> dict[str, float]:
    """Peak, widths, kinetics and centroid of one event from its smoothed ΔF/F0 box."""
    sm, inside = box.sm, box.inside
    masked = np.where(inside, sm, -np.inf)
    ti, yi, xi = np.unravel_index(int(np.argmax(masked)), sm.shape)
    amplitude = float(sm[ti, yi, xi])
    blocked = np.where(box.others, np.nan, sm)
    time_prof = blocked[:, yi, xi].copy()
    # the temporal profile is read within the event's own frames at this pixel ± the margin
    own = np.flatnonzero(inside[:, yi, xi])
    pad = int(math.ceil(config.margin_ms / dt))
    time_prof[: max(0, own[0] - pad)] = np.nan
    time_prof[own[-1] + 1 + pad:] = np.nan
    times = (box.frame0 + np.arange(sm.shape[0])) * dt + box.row_delay[yi]
    x_prof, y_prof = blocked[ti, yi, :], blocked[ti, :, xi]
    out: dict[str, float] = {
        "amplitude_dff": amplitude,
        "peak_ms": float(times[ti]),
        "peak_y_um": float(box.y[yi] + _parabola(sm[ti, :, xi], yi) * box.dy),
        "peak_x_um": float(box.x[xi] + _parabola(sm[ti, yi, :], xi) * box.dx),
    }
    if amplitude > 0:
        out["fwhm_um"] = _width(x_prof, box.x, xi, amplitude / 2)
        out["fwhm_y_um"] = _width(y_prof, box.y, yi, amplitude / 2)
        out["fdhm_ms"] = _width(time_prof, times, ti, amplitude / 2)
        out["time_to_peak_ms"] = out["peak_ms"] - _crossing(time_prof, times, ti, config.rise_fraction * amplitude, -1)
        out["decay_tau_ms"] = _decay_tau(time_prof, times, ti, amplitude, config)
    weights = np.where(inside, np.clip(sm, 0, None), 0).astype(np.float64)
    total = weights.sum()
    if total <= 0:
        weights, total = inside.astype(np.float64), float(inside.sum())
    out["centroid_y_um"] = float((weights.sum(axis=(0, 2)) * box.y).sum() / total)
    out["centroid_x_um"] = float((weights.sum(axis=(0, 1)) * box.x).sum() / total)
    return out


# ----------------------------------------------------------------------------------------------
# events


def _padded(sl: slice, pad: int, n: int) -> slice:
    return slice(max(0, sl.start - pad), min(n, sl.stop + pad))


def _row_delay(H: int, dt: float, raster: bool) -> np.ndarray:
    return (np.arange(H) + 0.5) / H * dt if raster else np.full(H, 0.5 * dt)


def _local_box(data, event_label, eid, sl, base: _Baseline, px, dt, config, row_delay) -> tuple[_Box, tuple]:
    T, H, W = data.shape
    pt = int(math.ceil(config.margin_ms / dt))
    ps = int(math.ceil(config.margin_um / px))
    box = (_padded(sl[0], pt, T), _padded(sl[1], ps, H), _padded(sl[2], ps, W))
    raw = data[box].astype(np.float32)
    raw -= np.float32(base.offset)
    dff = raw / base.f0(box) - np.float32(1.0)
    sigma = (config.smooth_sigma_ms / dt, config.smooth_sigma_um / px, config.smooth_sigma_um / px)
    sm = ndimage.gaussian_filter(dff, sigma, mode="nearest", truncate=3.0) if any(sigma) else dff
    lab = event_label[box]
    inside = lab == eid
    others = (lab != 0) & ~inside
    ys = (np.arange(box[1].start, box[1].stop) + 0.5) * px
    xs = (np.arange(box[2].start, box[2].stop) + 0.5) * px
    return _Box(sm, inside, others, box[0].start, ys, xs, row_delay[box[1]], px, px), box


def _binned(array: np.ndarray, ky: int, kx: int) -> np.ndarray:
    t, h, w = array.shape
    return array.reshape(t, h // ky, ky, w // kx, kx).mean(axis=(2, 4), dtype=np.float32)


def _wave_box(data, event_label, eid, sl, base: _Baseline, px, dt, config, row_delay) -> tuple[_Box, tuple]:
    """Smoothed ΔF/F0 of a wave, averaged in ``wave_bin_um`` squares."""
    T, H, W = data.shape
    pt = int(math.ceil(config.margin_ms / dt))
    k = max(1, int(round(config.wave_bin_um / px)))
    ys, xs = _padded(sl[1], k, H), _padded(sl[2], k, W)
    ky, kx = min(k, ys.stop - ys.start), min(k, xs.stop - xs.start)
    ys = slice(ys.start, ys.start + (ys.stop - ys.start) // ky * ky)
    xs = slice(xs.start, xs.start + (xs.stop - xs.start) // kx * kx)
    box = (_padded(sl[0], pt, T), ys, xs)
    raw = _binned(data[box], ky, kx) - np.float32(base.offset)
    f0 = _binned(base.image[None, ys, xs], ky, kx) * base.course[box[0], None, None]
    dff = raw / np.maximum(f0, np.float32(base.floor)) - np.float32(1.0)
    sm = ndimage.gaussian_filter1d(dff, config.smooth_sigma_ms / dt, axis=0, mode="nearest", truncate=3.0) \
        if config.smooth_sigma_ms > 0 else dff
    lab = event_label[box]
    inside = _binned((lab == eid).view(np.uint8), ky, kx) >= 0.5
    others = _binned(((lab != 0) & (lab != eid)).view(np.uint8), ky, kx) >= 0.5
    yc = (ys.start + (np.arange(sm.shape[1]) + 0.5) * ky) * px
    xc = (xs.start + (np.arange(sm.shape[2]) + 0.5) * kx) * px
    delay = row_delay[ys].reshape(-1, ky).mean(axis=1)
    return _Box(sm, inside, others, box[0].start, yc, xc, delay, ky * px, kx * px), box


def _wave_speed(box: _Box, dt: float, amplitude: float) -> tuple[float, float]:
    """(speed µm/s, direction °) of a wave from the arrival times of its half maximum."""
    sm, inside = box.sm, box.inside
    masked = np.where(inside, sm, -np.inf)
    peak = masked.max(axis=0)
    k_peak = masked.argmax(axis=0)
    half = (peak / 2)[None]
    frames = np.arange(sm.shape[0])[:, None, None]
    below = (sm < half) & (frames < k_peak[None])
    k_below = np.where(below, frames, -1).max(axis=0)
    ok = np.isfinite(peak) & (peak >= 0.3 * amplitude) & (k_below >= 0)
    if ok.sum() < _MIN_WAVE_POINTS:
        return float("nan"), float("nan")
    iy, ix = np.nonzero(ok)
    kb = k_below[iy, ix]
    v0, v1 = sm[kb, iy, ix], sm[kb + 1, iy, ix]
    h = half[0, iy, ix]
    frac = np.where(v1 > v0, (h - v0) / np.where(v1 > v0, v1 - v0, 1.0), 0.0)
    t = (box.frame0 + kb + frac) * dt + box.row_delay[iy]
    x, y = box.x[ix].astype(float), box.y[iy].astype(float)
    return _fit_front(x, y, t.astype(float), dt)


def _fit_front(x: np.ndarray, y: np.ndarray, t: np.ndarray, dt: float) -> tuple[float, float]:
    """Fit t = t0 + s·|p − p0| (s: slowness ms/µm); return (speed µm/s, direction °)."""
    design = np.column_stack([np.ones_like(x), x, y])
    (c0, a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
    starts = []
    grad = math.hypot(a, b)
    cx, cy = float(x.mean()), float(y.mean())
    if grad > 0:
        far = 1000.0  # µm: a plane front, seen as a circle from far away
        ux, uy = a / grad, b / grad
        ox, oy = cx - far * ux, cy - far * uy
        starts.append([float(np.mean(t)) - grad * far, ox, oy, grad])
    i0 = int(np.argmin(t))
    d0 = np.hypot(x - x[i0], y - y[i0])
    far_pts = d0 > 0.25 * max(d0.max(), 1e-9)
    s0 = float(np.median((t[far_pts] - t[i0]) / d0[far_pts])) if far_pts.any() else grad
    if s0 > 0:
        starts.append([float(t[i0]), float(x[i0]), float(y[i0]), s0])
    best = None
    for p0 in starts:
        def residual(p):
            return p[0] + p[3] * np.hypot(x - p[1], y - p[2]) - t
        try:
            fit = optimize.least_squares(residual, p0, loss="soft_l1", f_scale=dt, x_scale="jac", max_nfev=200)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if fit.x[3] > 0 and (best is None or fit.cost < best.cost):
            best = fit
    if best is None:
        return float("nan"), float("nan")
    _, ox, oy, s = best.x
    speed = 1000.0 / s
    dx, dy = x - ox, y - oy
    norm = np.hypot(dx, dy)
    norm[norm == 0] = 1.0
    mx, my = float(np.mean(dx / norm)), float(np.mean(dy / norm))
    direction = math.degrees(math.atan2(my, mx)) if math.hypot(mx, my) >= 0.5 else float("nan")
    return float(speed), direction


def _empty_table() -> pd.DataFrame:
    table = pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    table["id"] = table["id"].astype(np.int64)
    table["class"] = table["class"].astype(object)
    return table


def measure_events(
    movie: np.ndarray,
    class_label: np.ndarray,
    event_label: np.ndarray,
    pixel_size_um: float,
    frame_interval_ms: float,
    probabilities: np.ndarray | None = None,
    config: MeasureConfig = MeasureConfig(),
) -> pd.DataFrame:
    """One row of measurements per event id (``event_label > 0``); columns :data:`COLUMNS`.

    ``movie`` is the raw T×Y×X recording (or a :class:`casparks.io.Movie`), ``class_label`` its
    class codes and ``event_label`` its instance ids (same shape). ``probabilities``, optional,
    are the network's class probabilities (4, T, Y, X) with background first, or a T×Y×X
    probability of "any event"; they give the confidence column. See the module docstring for
    the definition of every column.
    """
    data = _array(movie)
    for value, what in ((pixel_size_um, "pixel size (µm)"), (frame_interval_ms, "frame interval (ms)")):
        if not (_is_number(value) and value > 0):
            raise CasparksError(f"the {what} must be a positive number, got {value!r}", fix=f"pass the {what}")
    px, dt = float(pixel_size_um), float(frame_interval_ms)
    class_label = np.asarray(class_label)
    event_label = np.asarray(event_label)
    _check_shape(class_label, data.shape, "class label")
    _check_shape(event_label, data.shape, "event label")
    if event_label.dtype.kind not in "ui":
        raise CasparksError(f"the event label must hold integer ids, got {event_label.dtype}",
                            fix="give instance ids (0 = no event)")
    event_prob = None
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.ndim == 4 and probabilities.shape[1:] == data.shape:
            event_prob = ("background", probabilities[0])
        elif probabilities.shape == data.shape:
            event_prob = ("event", probabilities)
        else:
            raise CasparksError(f"probabilities have shape {probabilities.shape}, the movie {data.shape}",
                                fix="give (classes, T, Y, X) with background first, or T×Y×X event probabilities")
    if event_label.size == 0 or not event_label.any():
        return _empty_table()
    if event_label.dtype.kind == "i" and event_label.min() < 0:
        raise CasparksError("the event label has negative ids", fix="use 0 for no event and positive ids")
    objects = ndimage.find_objects(event_label)
    base = _baseline(data, _excluded(class_label, event_label), px, dt, config)
    row_delay = _row_delay(data.shape[1], dt, config.raster_scan)
    rows = []
    n_codes = max(max(CODE_NAMES), int(class_label.max()) if class_label.size else 0) + 1
    for eid, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        lab = event_label[sl]
        inside = lab == eid
        counts = np.bincount(class_label[sl][inside].astype(np.int64), minlength=n_codes)
        event_counts = counts[list(EVENT_CLASSES)]
        code = EVENT_CLASSES[int(np.argmax(event_counts))] if event_counts.any() else int(np.argmax(counts))
        name = CLASS_NAMES.get(code, CODE_NAMES.get(code, str(code)))
        if code == WAVE:
            box, _ = _wave_box(data, event_label, eid, sl, base, px, dt, config, row_delay)
        else:
            box, _ = _local_box(data, event_label, eid, sl, base, px, dt, config, row_delay)
        row: dict[str, Any] = {"id": eid, "class": name}
        row.update(_measure_box(box, dt, config))
        if code == WAVE:
            row["speed_um_per_s"], row["direction_deg"] = _wave_speed(box, dt, row["amplitude_dff"])
        if event_prob is not None:
            kind, p = event_prob
            values = p[sl][inside].astype(np.float64)
            row["confidence"] = float(np.mean(1.0 - values) if kind == "background" else np.mean(values))
        row.update(start_ms=sl[0].start * dt, end_ms=sl[0].stop * dt, duration_ms=(sl[0].stop - sl[0].start) * dt,
                   extent_y_um=(sl[1].stop - sl[1].start) * px, extent_x_um=(sl[2].stop - sl[2].start) * px)
        rows.append(row)
    if not rows:
        return _empty_table()
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = np.nan
    table = table[COLUMNS]
    table["id"] = table["id"].astype(np.int64)
    for column in COLUMNS[2:]:
        table[column] = table[column].astype(float)
    log.debug("measured %d events", len(table))
    return table


# ----------------------------------------------------------------------------------------------
# frequency


def event_frequency(
    events: pd.DataFrame,
    shape: tuple[int, int, int] | np.ndarray,
    pixel_size_um: float,
    frame_interval_ms: float,
    cell_mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Events per 100 µm of cell length per s and per 1000 µm² per s, one row per class.

    ``events`` is a table with a 'class' column (from :func:`measure_events` or a simulated
    truth); ``shape`` the movie's (T, Y, X) shape or any array of that shape (e.g. the class
    label). The length is the extent along x of ``cell_mask`` (Y×X, the columns holding any cell
    pixel) or, without a mask, the field's width; the area that of the mask or of the field.
    Rows: spark, wave, puff; columns :data:`FREQUENCY_COLUMNS`.
    """
    shape = tuple(shape.shape) if isinstance(shape, np.ndarray) else tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise CasparksError(f"the movie shape must be (T, Y, X), got {shape}", fix="pass movie.shape")
    T, H, W = shape
    px, dt = float(pixel_size_um), float(frame_interval_ms)
    if cell_mask is not None:
        cell_mask = np.asarray(cell_mask, dtype=bool)
        if cell_mask.shape != (H, W):
            raise CasparksError(f"the cell mask has shape {cell_mask.shape}, a frame {(H, W)}",
                                fix="give a Y×X mask of the cell")
        length = float(cell_mask.any(axis=0).sum()) * px
        area = float(cell_mask.sum()) * px * px
    else:
        length, area = W * px, H * W * px * px
    duration_s = T * dt / 1000.0
    counts = events["class"].value_counts() if len(events) and "class" in events else pd.Series(dtype=int)
    rows = []
    for name in CLASS_NAMES.values():
        n = int(counts.get(name, 0))
        ok = length > 0 and duration_s > 0
        rows.append({
            "class": name, "count": n, "length_um": length, "area_um2": area, "duration_s": duration_s,
            "per_100um_per_s": n / (length / 100.0) / duration_s if ok else float("nan"),
            "per_1000um2_per_s": n / (area / 1000.0) / duration_s if ok and area > 0 else float("nan"),
        })
    return pd.DataFrame(rows, columns=FREQUENCY_COLUMNS)

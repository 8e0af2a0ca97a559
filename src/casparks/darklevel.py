"""The detector's dark level (offset), read from a movie's own photon noise.

ΔF/F0 divides by the resting light above the detector's dark level; an offset left in scales
every amplitude down by F0 / (F0 + offset) (−88 % on the physical simulator's movies, whose
offsets are 50-800 ADU against 17-115 ADU of light). The darkest pixels give the dark level only
where the field holds cell-free background; usually the cell fills it. Photon noise tells where
zero light lies wherever the light varies across the field. Per pixel of mean μ (ADU):

* noise variance    ``V(μ) = a · (μ − o) + r``  (a: ADU per photon times the excess noise; r:
  the read noise's variance): the variance line crosses zero at ``o − r / a``, *below* the dark
  level ``o`` by the read noise (15-37 photons on half of the physical simulator's movies);
* noise third cumulant ``K(μ) = c · (μ − o)``: photon counts are skewed (Poisson, and any
  compound Poisson such as a PMT's gain cascade), Gaussian read noise, rounding and symmetric
  laser flicker are not, so the skewness line crosses zero at the dark level itself.

Per pixel the noise is taken from ``d_t = x_t −`` the mean of the k = 4 frames on either side (a
signal that changes linearly over 2k + 1 frames cancels; for noise independent between frames
E d² = (1 + 1/2k) κ₂ and E d³ = (1 − 1/4k²) κ₃), outside events and their surroundings. Pixels are pooled in bins of equal
count by their mean, and both lines are fitted to the bins, weighted by each bin's standard
error. The skewness line is unbiased but noisier; where it does not lie significantly (2
standard errors) above the variance line's crossing, the read noise is negligible and the
variance line gives the dark level; where the skewness line rises too little to be fitted (a
small or uniform field), the variance line's crossing is used as what it is, a lower bound.
Movies whose noise is not photon noise (processed, background-subtracted) or that saturate
give no estimate, and a reason; where the noise of most pixels reaches an integer detector's
0, the dark level is within the noise of 0 and taken as 0.

Measured on two simulators (``benchmarks/results/physical.md``): within a few ADU of the true
offset on most movies, where the darkest pixels (cell, not dark) were off by far more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: the noise sample d_t is frame t less the mean of this many frames on each side: a wider
#: reference is less noisy (the third cumulant's signal to noise is 2× that of one frame each
#: side at 4), a narrower one follows a changing signal more closely
REFERENCE_HALF = 4
#: pixels are pooled in this many bins of equal count by mean intensity
N_BINS = 20
#: a pixel needs this many noise samples (2 · REFERENCE_HALF + 1 valid frames each) to enter a bin
MIN_SAMPLES = 30
#: pixels are left out below (above) the mean intensity under (over) which the detector clipped
#: more than this fraction of the voxels of pixels of that mean at its 0 (maximum), whether or
#: not their own were: keeping only the pixels whose noise happened not to reach it would bias
#: the darkest bins. A Gaussian clipped at this tail fraction has its third moment moved by ~2 %.
CLIP_FRACTION = 1e-4
#: below this median number of noise samples per pixel (a movie of fewer than ~130 frames),
#: pixels are binned by the mean of their 3 × 3 neighbourhood instead of their own: a pixel's
#: own mean of a few dozen frames shares its noise with its variance and third moment, and
#: binning on it biases both lines. 40 frames: the dark level 0.29 F0 high with read noise
#: (median of 6 synthetic movies; 0.07 with the neighbourhood's mean), 0.10 on 8 simulated
#: ones (0.006); at 100 frames 0.003 either way, at 200 and more a pixel's own mean is better
#: (neighbours of other brightness widen the bins: 2 of 8 simulated movies 0.06-0.1 off)
SHORT_MOVIE_SAMPLES = 120
#: both lines must rise with the light by this many standard errors of their slope
MIN_SLOPE_SIGMAS = 3.0
#: the skewness line replaces the variance line's crossing when it lies this many of its
#: standard errors above it (significant read noise)
READ_NOISE_SIGNIFICANCE = 2.0


@dataclass(frozen=True)
class DarkLevel:
    """A movie's dark level and how it was found.

    ``adu`` is NaN where the noise does not allow an estimate (``method`` "none", ``reason``
    says why); ``se_adu`` its standard error; ``read_noise_adu`` the read noise the two lines
    imply (0 where the variance line was used, NaN where the skewness line could not be
    fitted: then ``adu`` is the variance line's crossing, a lower bound, and ``reason`` says
    so); ``method`` "skewness", "variance", or "floor" (the noise of most pixels reaches an
    integer detector's 0, so the dark level is taken as 0: it lies within the noise of it).
    """

    adu: float
    se_adu: float
    read_noise_adu: float
    method: str
    reason: str = ""

    @property
    def found(self) -> bool:
        return math.isfinite(self.adu)

    def to_dict(self) -> dict[str, float | str]:
        """JSON-friendly (NaN becomes None)."""
        out: dict[str, float | str] = {}
        for key in ("adu", "se_adu", "read_noise_adu"):
            value = getattr(self, key)
            out[key] = significant(value) if math.isfinite(value) else None  # type: ignore[assignment]
        out["method"] = self.method
        if self.reason:
            out["reason"] = self.reason
        return out


def describe(level: dict | None) -> str:
    """One line for people: a summary's ``dark_level`` (:meth:`DarkLevel.to_dict`), e.g.
    "212.5 ± 1.8 ADU (skewness)", or "not read: 0 used (why)"."""
    if not level:
        return ""
    if level.get("adu") is None:
        value = "not read: 0 used"
    else:
        se = level.get("se_adu")
        value = f"{level['adu']:.1f}" + (f" ± {se:.1f}" if se is not None else "") + " ADU"
    detail = level.get("method", "")
    if level.get("reason"):
        detail += f"; {level['reason']}"
    return f"{value} ({detail})" if detail else value


def _unknown(reason: str) -> DarkLevel:
    return DarkLevel(math.nan, math.nan, math.nan, "none", reason)


def significant(value: float, digits: int = 5) -> float:
    """``value`` to ``digits`` significant digits: ADU of a 0-1 float movie keep their meaning."""
    return float(f"{float(value):.{digits}g}")


def _clip_values(dtype: np.dtype) -> tuple[float, float] | None:
    """Values at which an integer detector clips (the type's minimum, 0 for unsigned types, and
    its maximum); None for floats. A signed movie's negative values are signal and noise below
    a dark level under 0 (an offset subtracted by the acquisition software), not clipping."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def noise_moments(data: np.ndarray, exclude: np.ndarray | None = None,
                  block_frames: int | None = None, half: int | None = None) -> dict[str, np.ndarray]:
    """Per-pixel sums of the noise samples ``d_t`` of a T×Y×X movie, streamed in blocks of frames.

    ``d_t = x_t − mean(x_{t−k} … x_{t−1}, x_{t+1} … x_{t+k})`` with ``k = half`` (default
    :data:`REFERENCE_HALF`, fewer for very short movies). Returns ``n`` (samples), ``mean`` (of
    the centre frames), ``d2`` and ``d3`` (sums of d² and d³), ``half``, ``at_low`` and
    ``at_high`` (the pixel's frames at its integer type's 0 and maximum: the detector clipped
    them), ``frames`` (T) and ``limits`` (those values; None for float movies). A sample needs
    its 2k + 1 frames finite and outside ``exclude``.
    """
    T, H, W = data.shape
    k = max(1, min(half or REFERENCE_HALF, (T - 1) // 2))
    n = np.zeros((H, W), np.int64)
    sx, s2, s3 = (np.zeros((H, W)) for _ in range(3))
    at_low, at_high = np.zeros((H, W), np.int64), np.zeros((H, W), np.int64)
    limits = _clip_values(np.asarray(data[:1]).dtype)
    step = block_frames or max(1, (16 << 20) // max(1, H * W * 4))
    for start in range(k, T - k, step):
        stop = min(T - k, start + step)
        # float32 within a block (sums of at most `step` terms), float64 across blocks
        x = np.asarray(data[start - k:stop + k], dtype=np.float32)
        size = stop - start
        if limits is not None:  # each frame counted once: the centres, and the ends' context
            own = x[(0 if start == k else k):(size + 2 * k if stop == T - k else size + k)]
            at_low += (own <= limits[0]).sum(axis=0)
            at_high += (own >= limits[1]).sum(axis=0)
        ok = None if limits is not None else np.isfinite(x)
        if exclude is not None:
            keep = ~np.asarray(exclude[start - k:stop + k], dtype=bool)
            ok = keep if ok is None else ok & keep
        centre = x[k:k + size]
        d = np.zeros_like(centre)
        for j in range(1, k + 1):
            d += x[k - j:k - j + size]
            d += x[k + j:k + j + size]
        d *= np.float32(-1.0 / (2 * k))
        d += centre
        if ok is not None:
            all_ok = ok[k:k + size].copy()
            for j in range(1, k + 1):
                all_ok &= ok[k - j:k - j + size]
                all_ok &= ok[k + j:k + j + size]
            d[~all_ok] = 0.0
            n += all_ok.sum(axis=0)
            sx += np.where(all_ok, centre, np.float32(0.0)).sum(axis=0, dtype=np.float64)
        else:
            n += size
            sx += centre.sum(axis=0, dtype=np.float64)
        d2 = d * d
        s2 += d2.sum(axis=0)
        d2 *= d
        s3 += d2.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sx / n
    return {"n": n, "mean": mean, "d2": s2, "d3": s3, "half": k, "at_low": at_low, "at_high": at_high,
            "frames": T, "limits": limits}


def sum_moments(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The :func:`noise_moments` of a movie from those of consecutive runs of its frames (a long
    movie read part by part). Each part's context frames at its ends enter its clip counts, so
    ``frames`` and ``at_low``/``at_high`` count a few frames twice: a fraction, not a bias."""
    if len({p["half"] for p in parts}) != 1:
        raise ValueError("the parts' noise samples use different reference widths")
    n = sum(p["n"] for p in parts)
    sx = sum(np.where(p["n"] > 0, p["mean"] * p["n"], 0.0) for p in parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sx / n
    return {"n": n, "mean": mean, "d2": sum(p["d2"] for p in parts), "d3": sum(p["d3"] for p in parts),
            "half": parts[0]["half"], "at_low": sum(p["at_low"] for p in parts),
            "at_high": sum(p["at_high"] for p in parts), "frames": sum(p["frames"] for p in parts),
            "limits": parts[0]["limits"]}


def _line(x: np.ndarray, y: np.ndarray, se: np.ndarray, min_sigmas: float) -> tuple[float, float, float] | None:
    """Weighted straight line y = slope · (x − root): (root, its standard error, slope), or None
    unless the slope is positive by ``min_sigmas`` standard errors (a movie whose pixels' means
    hardly differ, e.g. one with its mean frame subtracted, has no line to extrapolate).

    The parameters' covariance is scaled up by the fit's reduced χ² when the bins scatter more
    than their standard errors say (neighbouring pixels' noise can be correlated)."""
    if x.size < 3 or not np.all(se > 0) or np.ptp(x) <= 0:
        return None
    w = 1.0 / se
    (slope, intercept), cov = np.polyfit(x, y, 1, w=w, cov="unscaled")
    residual = (y - (slope * x + intercept)) * w
    chi2 = float(residual @ residual) / max(1, x.size - 2)
    cov = cov * max(1.0, chi2)
    if not (math.isfinite(slope) and slope > min_sigmas * math.sqrt(max(cov[0, 0], 0.0))):
        return None
    root = -intercept / slope
    # delta method for root = −intercept / slope
    grad = np.array([intercept / slope**2, -1.0 / slope])
    var = float(grad @ cov @ grad)
    return root, math.sqrt(max(var, 0.0)), slope


def _away_from_limits(mean: np.ndarray, at_low: np.ndarray, at_high: np.ndarray, frames: int, usable: np.ndarray,
                      n_bins: int = 50) -> np.ndarray:
    """Pixels whose mean lies where the detector clipped few voxels of pixels of that mean.

    Selecting by mean alone leaves the kept pixels' noise as it is; whether a pixel itself
    touched a limit is a noisy, selective criterion (it keeps the quiet ones)."""
    keep = np.ones(mean.shape, bool)
    idx = np.flatnonzero(usable)
    if idx.size < n_bins:
        return keep
    order = idx[np.argsort(mean[idx], kind="stable")]
    groups = np.array_split(order, n_bins)
    low = np.flatnonzero([at_low[g].sum() / (g.size * frames) > CLIP_FRACTION for g in groups])
    high = np.flatnonzero([at_high[g].sum() / (g.size * frames) > CLIP_FRACTION for g in groups])
    if low.size:  # dark pixels reach 0: keep those brighter than the last such bin
        keep &= mean > mean[groups[low[-1]]].max()
    if high.size:  # bright pixels saturate: keep those darker than the first such bin
        keep &= mean < mean[groups[high[0]]].min()
    return keep


def _binned(mean: np.ndarray, n: np.ndarray, values: list[np.ndarray], n_bins: int) -> tuple[np.ndarray, ...]:
    """Pixels pooled in ``n_bins`` bins of equal count by mean: the bins' sample-weighted mean
    intensity, and for each of ``values`` the weighted mean and its standard error."""
    order = np.argsort(mean, kind="stable")
    x = np.empty(n_bins)
    ys = [np.empty(n_bins) for _ in values]
    ses = [np.empty(n_bins) for _ in values]
    for i, group in enumerate(np.array_split(order, n_bins)):
        weights = n[group]
        x[i] = np.average(mean[group], weights=weights)
        for value, y, se in zip(values, ys, ses):
            y[i] = np.average(value[group], weights=weights)
            se[i] = np.std(value[group]) / math.sqrt(group.size)
    return (x, *ys, *ses)


def _neighbourhood_mean(mean: np.ndarray) -> np.ndarray:
    """Mean of each pixel's 3 × 3 neighbourhood (Y×X), over its finite pixels; NaN stays NaN."""
    from scipy import ndimage

    ok = np.isfinite(mean)
    total = ndimage.uniform_filter(np.where(ok, mean, 0.0), 3, mode="nearest")
    count = ndimage.uniform_filter(ok.astype(np.float64), 3, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, total / count, np.nan)


def dark_level_from_moments(moments: dict[str, np.ndarray], n_bins: int = N_BINS) -> DarkLevel:
    """:class:`DarkLevel` from :func:`noise_moments`' per-pixel sums (see the module docstring)."""
    n = moments["n"].ravel().astype(np.float64)
    mean = moments["mean"].ravel()
    sampled_n = n[n >= MIN_SAMPLES]
    if sampled_n.size and np.median(sampled_n) < SHORT_MOVIE_SAMPLES:
        mean = _neighbourhood_mean(moments["mean"]).ravel()
    half = moments["half"]
    with np.errstate(invalid="ignore", divide="ignore"):  # E d² = κ₂ (1 + 1/2k), E d³ = κ₃ (1 − 1/4k²)
        var_px = moments["d2"].ravel() / n / (1.0 + 1.0 / (2 * half))
        k3_px = moments["d3"].ravel() / n / (1.0 - 1.0 / (4 * half * half))
    sampled = (n >= MIN_SAMPLES) & np.isfinite(mean)
    # noise below a millionth of the signal is float rounding, not photons (a synthetic movie)
    usable = sampled & (var_px > (1e-6 * mean) ** 2)
    if np.count_nonzero(usable) < 0.5 * np.count_nonzero(sampled):
        return _unknown("most pixels have no noise (a synthetic or processed movie)")
    limits = moments.get("limits")
    if limits is not None:
        usable &= _away_from_limits(mean, moments["at_low"].ravel(), moments["at_high"].ravel(),
                                    moments["frames"], usable)
    n_pixels = int(np.count_nonzero(usable))
    if n_pixels < n_bins * 10:
        if limits is not None:
            low, high = int(moments["at_low"].sum()), int(moments["at_high"].sum())
            if low > high:  # the noise reaches the detector's 0: the dark level lies within it
                return DarkLevel(limits[0], math.nan, math.nan, "floor",
                                 f"the noise of most pixels reaches the detector's 0 ({low} voxels at 0)")
            if high > 0:
                return _unknown(f"most pixels saturate the detector ({high} voxels at {limits[1]:.0f})")
        return _unknown(f"only {n_pixels} pixels have {MIN_SAMPLES} noise samples outside events")
    x, v, k, se_v, se_k = _binned(mean[usable], n[usable], [var_px[usable], k3_px[usable]], n_bins)
    variance = _line(x, v, se_v, MIN_SLOPE_SIGMAS)
    if variance is None:
        return _unknown("the noise variance does not rise significantly with the light "
                        "(too uniform a field, or no photon noise: processed data?)")
    o_v, se_o_v, a = variance
    skew = _line(x, k, se_k, MIN_SLOPE_SIGMAS)
    if skew is None:  # the variance line's crossing is a lower bound: read noise can only lower it
        level = DarkLevel(o_v, se_o_v, math.nan, "variance",
                          "a lower bound: the noise's skewness does not rise significantly with the light")
    elif skew[0] - o_v <= READ_NOISE_SIGNIFICANCE * skew[1]:
        level = DarkLevel(o_v, se_o_v, 0.0, "variance")
    else:
        o_k, se_o_k, _ = skew
        level = DarkLevel(o_k, se_o_k, math.sqrt(a * (o_k - o_v)), "skewness")
    if level.adu > x[0] + 3.0 * level.se_adu:
        return _unknown(f"the estimate ({level.adu:.1f} ADU) lies above the darkest pixels' mean ({x[0]:.1f})")
    if limits is not None and level.adu < limits[0]:  # an integer detector's dark level is not below its 0
        level = DarkLevel(limits[0], level.se_adu, level.read_noise_adu, level.method, level.reason)
    return level


def estimate_dark_level(data: np.ndarray, exclude: np.ndarray | None = None,
                        block_frames: int | None = None) -> DarkLevel:
    """The dark level of a T×Y×X movie (ADU), with events' voxels in ``exclude`` left out."""
    data = data if hasattr(data, "shape") and hasattr(data, "__getitem__") else np.asarray(data)
    if len(data.shape) != 3:
        raise ValueError(f"a movie is a T×Y×X array, got shape {data.shape}")
    if data.shape[0] < 3:
        return _unknown("fewer than 3 frames")
    return dark_level_from_moments(noise_moments(data, exclude, block_frames))

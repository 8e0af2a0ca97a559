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

Per pixel the noise is taken from ``d_t = x_t −`` the mean of the k = 4 frames of its own parity
on either side, t ± 2 … t ± 8 (a signal that changes linearly over those 17 frames cancels; for
noise independent between frames E d² = (1 + 1/2k) κ₂ and E d³ = (1 − 1/4k²) κ₃), outside events
and their surroundings. Pixels are pooled in bins of equal count by their light, and both lines
are fitted to the bins, weighted by each bin's standard error. Pooled by their own means, the
bins' means spread wider than their light (regression dilution) and share the noise of their
variances and third moments, which biases both lines unless the noise is Poisson photons times
one gain; so the pixels of even frames are pooled by the means of the odd frames, and those of
odd frames by the even frames' (:func:`dark_level_from_moments` says when the own means are used:
then the mean of every frame a pixel's samples may use, the frames outside events, given which
Poisson counts are multinomial and the lines exact; the mean of the samples' centre frames
alone made a skewness line out of nothing in a uniform field).
The skewness line is unbiased but noisier; where it does not lie significantly (2 standard
errors) above the variance line's crossing, the variance line gives the dark level, with the
skewness line's error in its own (read noise it cannot rule out would lower the crossing);
where the skewness line rises too little to be fitted (a small or uniform field), the variance
line's crossing is used unconfirmed: read noise would put it low, excess noise that grows faster
than the light (laser flicker) high, so it is no bound either way. A dark level whose standard error is over
a tenth of the cell's resting signal above it is called uncertain (:func:`flag_uncertain`).
Movies whose noise is not photon noise (processed, background-subtracted), that saturate, or
whose values are clipped at both ends (a contrast-stretched export) give no estimate, and a
reason; where the noise of most pixels reaches an integer detector's 0, the dark level is within
the noise of 0 and taken as 0.

Measured on two simulators (``benchmarks/results/physical.md``, ``measure.md`` session 32):
within a few ADU of the true offset on most movies, where the darkest pixels (cell, not dark)
were off by far more; every movie without a warning within 0.15 of its resting signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

#: the noise sample d_t is frame t less the mean of this many frames on each side, every
#: STRIDE-th frame: a wider reference is less noisy (the third cumulant's signal to noise is 2×
#: that of one frame each side at 4; at 2 the dark level's standard error was ~15 % larger), a
#: narrower one follows a changing signal more closely
REFERENCE_HALF = 4
#: the reference frames are every second frame, so that the samples of even frames and those of
#: odd frames share no frame: each parity's pixels are binned by the other parity's means
#: (:func:`dark_level_from_moments`). A sample reaches STRIDE · REFERENCE_HALF = 8 frames to
#: each side (55 ms at 6.8 ms per frame), outside events and their surroundings.
STRIDE = 2
#: pixels are pooled in this many bins of equal count by mean intensity
N_BINS = 20
#: a pixel needs this many noise samples (2 · REFERENCE_HALF + 1 valid frames each) of even
#: frames and as many of odd frames to enter the bins (a movie of 36 frames or more)
MIN_PARITY_SAMPLES = 10
#: pixels are left out below (above) the mean intensity under (over) which the detector clipped
#: more than this fraction of the voxels of pixels of that mean at its 0 (maximum), whether or
#: not their own were: keeping only the pixels whose noise happened not to reach it would bias
#: the darkest bins. A Gaussian clipped at this tail fraction has its third moment moved by ~2 %.
CLIP_FRACTION = 1e-4
#: a dark level whose standard error exceeds this fraction of the resting signal above it is
#: called uncertain (:func:`flag_uncertain`): ΔF/F0 scales by about 1 ± that fraction
UNCERTAIN_FRACTION = 0.1
#: why a dark level read from pixels binned by their own means is not to be trusted blindly
OWN_BINNING_REASON = ("read from pixels pooled by their own means, as the light varies too little across the "
                      "field to pool them by independent ones: exact for Poisson photon noise times one gain, "
                      "biased by a PMT's gain spread")
#: a movie with at least this fraction as many voxels at its type's maximum as at its 0, and the
#: other way round, was clipped at both ends: a display range applied on export (Fiji's 8-bit
#: conversion after Auto contrast clips 0.35 % at each end), not a detector reaching its 0
CLIPPED_AT_BOTH_ENDS = 0.1
#: pixels binned by their own means are used where their lines cross zero within this many
#: standard errors of the cross-binned lines' crossings (:func:`_agree`)
BINNING_AGREEMENT = 3.0
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
    fitted: then ``adu`` is the variance line's crossing, unconfirmed, and ``reason`` says
    so); ``method`` "skewness", "variance", or "floor" (the noise of most pixels reaches an
    integer detector's 0, so the dark level is taken as 0: it lies within the noise of it).
    """

    adu: float
    se_adu: float
    read_noise_adu: float
    method: str
    reason: str = ""
    #: how pixels were pooled by their light: "cross" (each parity of frames by the other's
    #: means) or "own" (by their own means; where the cross-binned lines give only an unconfirmed one)
    binning: str = "cross"

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
        if self.method in ("skewness", "variance"):
            out["binning"] = self.binning
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
        value = with_error(level["adu"], level.get("se_adu")) + " ADU"
    detail = level.get("method", "")
    if level.get("reason"):
        detail += f"; {level['reason']}"
    return f"{value} ({detail})" if detail else value


def with_error(value: float, se: float | None) -> str:
    """``value ± se`` to the standard error's second significant digit ("212.5 ± 1.8",
    "55.500 ± 0.030", "1027 ± 129"); ``value`` to 0.1 where there is no standard error."""
    if se is None or not math.isfinite(se) or se <= 0:
        return f"{value:.1f}"
    decimals = max(0, 1 - math.floor(math.log10(se)))
    return f"{value:.{decimals}f} ± {se:.{decimals}f}"


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


def reference_half(n_frames: int, half: int | None = None) -> int:
    """k, the reference frames on each side of a noise sample (:data:`REFERENCE_HALF`, fewer for
    a very short movie); a sample reaches :data:`STRIDE` · k frames to each side."""
    return max(1, min(half or REFERENCE_HALF, (n_frames - 1) // (2 * STRIDE)))


def noise_moments(data: np.ndarray, exclude: np.ndarray | None = None,
                  block_frames: int | None = None, half: int | None = None,
                  first_frame: int = 0, movie_frames: int | None = None) -> dict[str, np.ndarray]:
    """Per-pixel sums of the noise samples ``d_t`` of a T×Y×X movie, streamed in blocks of frames.

    ``d_t = x_t − mean(x_{t±2}, x_{t±4}, … x_{t±2k})`` with ``k = half`` (default
    :data:`REFERENCE_HALF`, fewer for very short movies: :func:`reference_half`): a sample
    uses frames of its own parity only, so the samples of even frames and those of odd frames
    share no frame. Returns ``n`` (samples), ``mean`` (of the centre frames), ``d2`` and ``d3``
    (sums of d² and d³), each also per parity (``parities``: ``n``, ``sum`` of the centre frames,
    ``d2``, ``d3``, each 2×Y×X, even then odd frames of the movie that ``data`` begins at frame
    ``first_frame`` of), ``half``, ``at_low`` and ``at_high`` (the pixel's frames at its integer
    type's 0 and maximum: the detector clipped them), ``frames`` (T) and ``limits`` (those
    values; None for float movies). A sample needs its 2k + 1 frames finite and outside ``exclude``.
    ``valid_sum`` and ``valid_n`` (Y×X) sum each pixel's finite frames outside ``exclude``, each
    frame of the movie once: ``data`` is frames ``first_frame`` … of a movie of ``movie_frames``
    (default: it ends with ``data``), and a part counts the frames its samples are centred on,
    and the context before or after them only at the movie's start or end, so that the parts of
    a movie add up to it (:func:`sum_moments`).
    """
    T, H, W = data.shape
    k = reference_half(T, half)
    reach = STRIDE * k
    n = np.zeros((2, H, W), np.int64)
    sx, s2, s3 = (np.zeros((2, H, W)) for _ in range(3))
    at_low, at_high = np.zeros((H, W), np.int64), np.zeros((H, W), np.int64)
    valid_sum, valid_n = np.zeros((H, W)), np.zeros((H, W), np.int64)
    movie_frames = first_frame + T if movie_frames is None else movie_frames
    limits = _clip_values(np.asarray(data[:1]).dtype)
    step = block_frames or max(1, (16 << 20) // max(1, H * W * 4))
    for start in range(reach, T - reach, step):
        stop = min(T - reach, start + step)
        # float32 within a block (sums of at most `step` terms), float64 across blocks
        x = np.asarray(data[start - reach:stop + reach], dtype=np.float32)
        size = stop - start
        if limits is not None:  # each frame counted once: the centres, and the ends' context
            own = x[(0 if start == reach else reach):(size + 2 * reach if stop == T - reach else size + reach)]
            at_low += (own <= limits[0]).sum(axis=0)
            at_high += (own >= limits[1]).sum(axis=0)
        ok = None if limits is not None else np.isfinite(x)
        if exclude is not None:
            keep = ~np.asarray(exclude[start - reach:stop + reach], dtype=bool)
            ok = keep if ok is None else ok & keep
        # each frame of the movie once: the centres, and the context at the movie's own ends
        a = 0 if (start == reach and first_frame == 0) else reach
        b = size + 2 * reach if (stop == T - reach and first_frame + T == movie_frames) else size + reach
        frames = x[a:b]
        counted = np.isfinite(frames) if ok is None else ok[a:b]
        valid_sum += np.where(counted, frames, np.float32(0.0)).sum(axis=0, dtype=np.float64)
        valid_n += counted.sum(axis=0)
        centre = x[reach:reach + size]
        offsets = [reach + sign * STRIDE * j for j in range(1, k + 1) for sign in (-1, 1)]
        d = np.zeros_like(centre)
        for at in offsets:
            d += x[at:at + size]
        d *= np.float32(-1.0 / (2 * k))
        d += centre
        all_ok = None
        if ok is not None:
            all_ok = ok[reach:reach + size].copy()
            for at in offsets:
                all_ok &= ok[at:at + size]
            d[~all_ok] = 0.0
        d2 = d * d
        d3 = d2 * d
        for parity in (0, 1):
            first = (parity - first_frame - start) % 2  # the block's first centre frame of this parity
            own_ok = None if all_ok is None else all_ok[first::2]
            if own_ok is None:
                n[parity] += len(range(first, size, 2))
                sx[parity] += centre[first::2].sum(axis=0, dtype=np.float64)
            else:
                n[parity] += own_ok.sum(axis=0)
                sx[parity] += np.where(own_ok, centre[first::2], np.float32(0.0)).sum(axis=0, dtype=np.float64)
            s2[parity] += d2[first::2].sum(axis=0)
            s3[parity] += d3[first::2].sum(axis=0)
    return _with_totals({"parities": {"n": n, "sum": sx, "d2": s2, "d3": s3}, "half": k, "at_low": at_low,
                         "at_high": at_high, "frames": T, "limits": limits, "valid_sum": valid_sum,
                         "valid_n": valid_n})


def _with_totals(moments: dict) -> dict:
    """``moments`` with the whole movie's ``n``, ``mean``, ``d2`` and ``d3`` from its even and odd frames'."""
    parities = moments["parities"]
    n = parities["n"].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = parities["sum"].sum(axis=0) / n
    return {**moments, "n": n, "mean": mean, "d2": parities["d2"].sum(axis=0), "d3": parities["d3"].sum(axis=0)}


def sum_moments(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The :func:`noise_moments` of a movie from those of consecutive runs of its frames (a long
    movie read part by part). Each part's context frames at its ends enter its clip counts, so
    ``frames`` and ``at_low``/``at_high`` count a few frames twice: a fraction, not a bias."""
    if len({p["half"] for p in parts}) != 1:
        raise ValueError("the parts' noise samples use different reference widths")
    parities = {key: sum(p["parities"][key] for p in parts) for key in ("n", "sum", "d2", "d3")}
    return _with_totals({"parities": parities, "half": parts[0]["half"], "at_low": sum(p["at_low"] for p in parts),
                         "at_high": sum(p["at_high"] for p in parts), "frames": sum(p["frames"] for p in parts),
                         "limits": parts[0]["limits"], "valid_sum": sum(p["valid_sum"] for p in parts),
                         "valid_n": sum(p["valid_n"] for p in parts)})


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


def _binned_by(proxy: np.ndarray, mean: np.ndarray, n: np.ndarray, values: list[np.ndarray],
               n_bins: int) -> tuple[np.ndarray, ...]:
    """Pixels pooled in ``n_bins`` bins of equal count by ``proxy``, a measure of their light:
    the bins' sample-weighted ``mean``, and for each of ``values`` the weighted mean and its
    standard error."""
    order = np.argsort(proxy, kind="stable")
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


def _per_pixel(n: np.ndarray, total: np.ndarray, d2: np.ndarray, d3: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Samples, mean, noise variance and third cumulant of each pixel from its sums."""
    n = n.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # E d² = κ₂ (1 + 1/2k), E d³ = κ₃ (1 − 1/4k²)
        return n, total / n, d2 / n / (1.0 + 1.0 / (2 * k)), d3 / n / (1.0 - 1.0 / (4 * k * k))


@dataclass(frozen=True)
class _Lines:
    """The variance and skewness lines of binned pixels (each (root, its standard error, slope),
    or None where it does not rise significantly) and the bins' mean light."""

    variance: tuple[float, float, float] | None
    skew: tuple[float, float, float] | None
    x: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, v: np.ndarray, k: np.ndarray, se_v: np.ndarray, se_k: np.ndarray) -> "_Lines":
        return cls(_line(x, v, se_v, MIN_SLOPE_SIGMAS), _line(x, k, se_k, MIN_SLOPE_SIGMAS), x)


def _agree(own: _Lines, cross: _Lines) -> bool:
    """Whether the lines of pixels binned by their own means agree with the cross-binned ones:
    each line both fitted crosses zero within :data:`BINNING_AGREEMENT` standard errors of
    their difference (a line fitted in one only is not compared)."""
    for a, b in ((own.variance, cross.variance), (own.skew, cross.skew)):
        if a is not None and b is not None and abs(a[0] - b[0]) > BINNING_AGREEMENT * math.hypot(a[1], b[1]):
            return False
    return True


def _level(lines: _Lines) -> DarkLevel:
    """The dark level the lines give: the skewness line's crossing where it lies significantly
    above the variance line's (read noise), else the variance line's; unconfirmed where the
    skewness line could not be fitted."""
    if lines.variance is None:
        return _unknown("the noise variance does not rise significantly with the light "
                        "(too uniform a field, or no photon noise: processed data?)")
    o_v, se_o_v, a = lines.variance
    skew = lines.skew
    if skew is None:  # read noise lowers the variance line's crossing, laser flicker (variance ∝ light²) raises it
        return DarkLevel(o_v, se_o_v, math.nan, "variance",
                         "unconfirmed: the noise's skewness does not rise significantly with the light, and the "
                         "noise variance alone reads the dark level low with read noise, high with laser flicker")
    if skew[0] - o_v <= READ_NOISE_SIGNIFICANCE * skew[1]:
        # read noise the skewness line cannot rule out lowers the variance crossing by up to
        # ~2 of the skewness line's standard errors: its error is part of this estimate's
        return DarkLevel(o_v, math.hypot(se_o_v, skew[1]), 0.0, "variance")
    o_k, se_o_k, _ = skew
    return DarkLevel(o_k, se_o_k, math.sqrt(a * (o_k - o_v)), "skewness")


def _definite(level: DarkLevel) -> bool:
    """Found, and confirmed by the skewness line (not the variance line's crossing alone)."""
    return level.found and math.isfinite(level.read_noise_adu)


def dark_level_from_moments(moments: dict[str, np.ndarray], n_bins: int = N_BINS) -> DarkLevel:
    """:class:`DarkLevel` from :func:`noise_moments`' per-pixel sums (see the module docstring).

    Pixels are binned two ways. Cross-binned (each parity of frames by the other parity's
    means), the lines are unbiased for any noise whose variance and third cumulant rise
    linearly with the light, but need the light to vary across the field; they are used
    wherever they give a dark level confirmed by the skewness line. Binned by their own
    means, pixels whose noise is Poisson photons times one gain give lines as unbiased and
    more precise, since E[variance | own mean] is then exactly linear, even in a uniform
    field; with other noise (a PMT's gain spread, excess noise that is not Poisson) they are
    biased, the more the less the light varies (0.08-0.28 F0 at 5-6 standard errors on a
    field of ±10 % light). They are used only where the cross-binned lines give an unconfirmed level
    at most and agree with them (:func:`_agree`); ``binning`` says which were used."""
    k_ref = moments["half"]
    parities = {key: value.reshape(2, -1) for key, value in moments["parities"].items()}
    n_h, mean_h, var_h, k3_h = _per_pixel(parities["n"], parities["sum"], parities["d2"], parities["d3"], k_ref)
    n, mean, var, k3 = _per_pixel(*(parities[key].sum(axis=0) for key in ("n", "sum", "d2", "d3")), k_ref)
    sampled = np.all(n_h >= MIN_PARITY_SAMPLES, axis=0) & np.all(np.isfinite(mean_h), axis=0)
    # noise below a millionth of the signal is float rounding, not photons (a synthetic movie)
    usable = sampled & np.all(var_h > (1e-6 * mean_h) ** 2, axis=0)
    if np.count_nonzero(usable) < 0.5 * np.count_nonzero(sampled):
        return _unknown("most pixels have no noise (a synthetic or processed movie)")
    limits = moments.get("limits")
    enough = np.count_nonzero(usable) >= n_bins * 10
    if limits is not None:
        usable &= _away_from_limits(mean, moments["at_low"].ravel(), moments["at_high"].ravel(),
                                    moments["frames"], usable)
    n_pixels = int(np.count_nonzero(usable))
    if n_pixels < n_bins * 10:
        if limits is not None and enough:  # the pixels left out for clipping were the many
            low, high = int(moments["at_low"].sum()), int(moments["at_high"].sum())
            if low > CLIPPED_AT_BOTH_ENDS * high and high > CLIPPED_AT_BOTH_ENDS * low:
                return _unknown(f"the values are clipped at both ends ({low} voxels at {limits[0]:.0f}, {high} at "
                                f"{limits[1]:.0f}): a contrast-stretched export? Its dark level is not the detector's")
            if low > high:  # the noise reaches the detector's 0: the dark level lies within it
                return DarkLevel(limits[0], math.nan, math.nan, "floor",
                                 f"the noise of most pixels reaches the detector's 0 ({low} voxels at 0)")
            if high > 0:
                return _unknown(f"most pixels saturate the detector ({high} voxels at {limits[1]:.0f})")
        return _unknown(f"only {n_pixels} pixels have {MIN_PARITY_SAMPLES} noise samples outside events "
                        "in both even and odd frames")
    points = [_binned_by(mean_h[1 - h, usable], mean_h[h, usable], n_h[h, usable],
                         [var_h[h, usable], k3_h[h, usable]], n_bins) for h in (0, 1)]
    lines = _Lines.fit(*(np.concatenate(parts) for parts in zip(*points)))
    level = _level(lines)
    if not _definite(level):  # too uniform a field for the cross-binned lines: own means, if they agree
        # the mean of every frame the samples may use: conditioned on it, Poisson counts are
        # multinomial, and E d², E d³ exactly linear. The mean of the centre frames alone leaves
        # out the references at the ends and beside events, which made a skewness line out of
        # nothing in a uniform field (558 ADU for a dark level of 100: benchmarks/results/measure.md)
        with np.errstate(invalid="ignore", divide="ignore"):
            light = (moments["valid_sum"] / moments["valid_n"]).ravel() if "valid_sum" in moments else mean
        own_usable = usable & np.isfinite(light)
        own = _Lines.fit(*_binned_by(light[own_usable], light[own_usable], n[own_usable],
                                     [var[own_usable], k3[own_usable]], n_bins))
        own_level = _level(own)
        if _definite(own_level) and _agree(own, lines):
            lines, level = own, replace(own_level, binning="own", reason=OWN_BINNING_REASON)
    if not level.found:
        return level
    if level.adu > lines.x.min() + 3.0 * level.se_adu:
        return _unknown(f"the estimate ({level.adu:.1f} ADU) lies above the darkest pixels' mean "
                        f"({lines.x.min():.1f})")
    if limits is not None and level.adu < limits[0]:  # an integer detector's dark level is not below its 0
        level = replace(level, adu=limits[0])
    return level


UNCERTAIN = "uncertain"


def flag_uncertain(level: DarkLevel, resting_adu: float) -> DarkLevel:
    """``level`` with the reason "uncertain" where its standard error exceeds
    :data:`UNCERTAIN_FRACTION` of ``resting_adu``, the resting signal above it (the cell's median
    in the movie's resting image): ΔF/F0 scales by about 1 ± se_adu / resting_adu."""
    if not (level.found and math.isfinite(level.se_adu)) or not resting_adu > 0 or level.method == "floor":
        return level
    if level.se_adu <= UNCERTAIN_FRACTION * resting_adu or level.reason.startswith(UNCERTAIN):
        return level
    uncertain = (f"{UNCERTAIN}: its standard error is {100 * level.se_adu / resting_adu:.0f} % of the resting signal "
                 f"above it ({significant(resting_adu, 3):g} ADU), so ΔF/F0 is uncertain by about as much")
    # after another reason (unconfirmed, own means), the size of the error is said too
    return replace(level, reason=f"{uncertain}; and {level.reason}" if level.reason else uncertain)


def estimate_dark_level(data: np.ndarray, exclude: np.ndarray | None = None,
                        block_frames: int | None = None) -> DarkLevel:
    """The dark level of a T×Y×X movie (ADU), with events' voxels in ``exclude`` left out."""
    data = data if hasattr(data, "shape") and hasattr(data, "__getitem__") else np.asarray(data)
    if len(data.shape) != 3:
        raise ValueError(f"a movie is a T×Y×X array, got shape {data.shape}")
    if data.shape[0] < 2 * STRIDE + 1:
        return _unknown(f"fewer than {2 * STRIDE + 1} frames")
    return dark_level_from_moments(noise_moments(data, exclude, block_frames))

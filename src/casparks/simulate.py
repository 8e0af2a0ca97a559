"""Synthetic confocal x-y-t movies of cardiomyocytes with sparks, puffs and waves, and their truth.

The model, step by step (parameters and sources: :mod:`casparks.simulation_params`):

1. **Cell and resting fluorescence** F0(y, x) in photons per pixel per frame: a cell whose long axis
   runs roughly along x (tilted, slightly bent, sometimes with one rounded end in the field) with a
   smooth membrane edge, z-line striations, smooth unevenness, sometimes a nucleus, and static
   puncta of dye in organelles (which do not respond to Ca²⁺); outside it only autofluorescence.
   Photobleaching scales F0 exponentially over the movie, slow drift by a few per cent.
2. **Release units** (CRUs) on the z-lines (every sarcomere along x, every ~0.5-1 µm across),
   jittered, each with a log-normal "eagerness" so that some sites repeat; CRUs just under the
   membrane fire more often (atrial cells).
3. **Events** add ΔF/F0: F = F0·bleach(t)·(1 + Σ_e ΔF/F0_e(t, y, x)).
   *Sparks*: a sharp-peaked radial profile (Gaussian core plus a wider Gaussian tail, slightly
   elongated) whose centre course rises during release (time to peak 5-15 ms) and decays
   exponentially (τ 20-40 ms) while σ² grows by apparent diffusion; each at a depth from the
   focal plane that dims it (axial Gaussian PSF) and widens it, which makes the observed amplitude
   distribution fall monotonically (Izu 2001). Some sparks trigger neighbours (clusters).
   *Puffs*: wider, lower, 100-600 ms of flickering release (a telegraph open/closed process).
   *Waves*: a front spreading from a site at 50-150 µm/s (a circle from the site, so the front is
   curved), filling the cell's width, with a fast rise and a slow decay; some die out; CRUs the
   wave passed stay silent for a few hundred ms.
   Event kinetics vary around typical values drawn per movie. Each frame is scanned row by row,
   so row y of frame k is seen at (k + (y + 0.5)/H)·Δt (its middle, as casparks measures).
4. **Detector**: laser flicker per frame and per line, Poisson photon counts, excess noise, gain,
   offset and read noise, a slight low-pass along the scan axis, clipped to uint16.
5. **Truth**: an event covers the voxels where its own noise-free ΔF/F0 ≥ max(label_floor_dff0,
   label_fraction·peak) (valleys of a flickering puff filled); overlaps go to the larger
   contribution; each event keeps one connected piece (cut-off pieces become ignore). Events
   below ``visibility_snr`` (:func:`event_snr`) or mostly hidden under others become ignore (4)
   without an id. An ignore shell surrounds every event.

Each event is rendered only in its bounding box (float32), so a 500 × 64 × 512 movie takes a few
seconds on one core.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from . import classes
from .errors import CasparksError
from .io import Movie, refuse_folders, write_class_label, write_csv, write_event_label, write_movie
from .labels import dilate
from .simulation_params import (
    SimulationConfig,
    list_presets,
    load_simulation_config,
    save_simulation_config,
)

__all__ = [
    "SimulatedMovie", "SimulationConfig", "simulate_movie", "simulate_dataset", "load_simulation_config",
    "list_presets", "sample_spark_amplitudes", "event_snr", "EVENT_COLUMNS", "EXTRA_COLUMNS", "write_preview", "preview_dff",
]

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Lateral widening of an out-of-focus event: FWHM × sqrt(1 + DEPTH_WIDENING·(depth/σ_axial)²).
#: Qualitative, after Izu 2001 (out-of-focus sparks look dimmer and somewhat wider).
DEPTH_WIDENING = 0.15
#: An event keeping less than this fraction of its extent (the rest under stronger events) is ignore.
HIDDEN_FRACTION = 0.3
#: The wide component of a spark's radial profile is this many times wider than its core.
TAIL_WIDTH = 2.5

#: Columns of NN_events.csv, in order (units in the names). Times are from the start of the movie
#: (frame k starts at k·Δt); start_ms/end_ms bound the event's label extent in whole frames;
#: peak_ms, fdhm_ms and rise_time_ms describe the continuous noise-free course at the event's
#: centre; amplitude_dff0 is the largest rendered noise-free ΔF/F0 of the event; x_um, y_um is
#: its centre (a spark or puff cut by the field's edge may be centred up to 1.5 µm outside it;
#: for a wave, the voxel where it peaks). Extra columns follow them:
#: onset_ms (release start), fwhm_y_um (FWHM across x; fwhm_um is along x), origin_x_um/origin_y_um (where a wave started),
#: peak_dff0 (sparks and puffs: the noise-free ΔF/F0 at the centre at the peak of the continuous
#: course, which the frames sample; amplitude_dff0, the largest sample, is lower where they miss
#: the peak: a median 10 % for sparks at 6.8 ms) and
#: unlabelled_reason ('faint': SNR below visibility_snr; 'below_floor': visible, its peak below
#: label_floor_dff0, labelled ignore; 'hidden': mostly under other events).
EVENT_COLUMNS = [
    "event_id", "class", "class_code", "labelled", "start_ms", "peak_ms", "end_ms", "duration_ms",
    "x_um", "y_um", "depth_um", "amplitude_dff0", "fwhm_um", "fdhm_ms", "rise_time_ms", "decay_tau_ms",
    "speed_um_per_s", "direction", "snr", "cluster_id", "f0_photons",
]
EXTRA_COLUMNS = ["onset_ms", "fwhm_y_um", "origin_x_um", "origin_y_um", "peak_dff0", "unlabelled_reason"]


@dataclass(frozen=True)
class SimulatedMovie:
    """One simulated movie and its ground truth.

    ``movie`` holds the uint16 recording with its units; ``class_label`` (uint8, codes of
    :mod:`casparks.classes`) and ``event_label`` (instance ids, 0 = none) have its shape;
    ``events`` has one row per simulated event (columns :data:`EVENT_COLUMNS`).
    ``resting_adu`` is the noise-free resting level (Y×X, ADU, offset included) at t = 0 and
    ``bleach`` the photobleaching factor per frame, from which previews compute ΔF/F0; ``dff``
    the noise-free ΔF/F0 of all events (only with ``simulate_movie(..., keep_dff=True)``).
    ``cell_mask`` (Y×X bool) is the cell: where its soft mask (the membrane's fall-off) is at
    least one half.
    """

    movie: Movie
    class_label: np.ndarray
    event_label: np.ndarray
    events: pd.DataFrame
    resting_adu: np.ndarray | None = field(default=None, repr=False, compare=False)
    offset_adu: float = 0.0
    bleach: np.ndarray | None = field(default=None, repr=False, compare=False)
    dff: np.ndarray | None = field(default=None, repr=False, compare=False)
    cell_mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        """One line: size, units and the events simulated (the arrays printed 147 lines)."""
        from .io import sampling_text

        counts = classes.count_classes(self.events["class"] if len(self.events) else ())
        labelled = int(self.events["labelled"].sum()) if len(self.events) else 0
        sampling = sampling_text(self.movie.shape, self.movie.pixel_size_um, self.movie.frame_interval_ms)
        return (f"SimulatedMovie({sampling}, {np.dtype(self.movie.data.dtype)}: {classes.format_counts(counts)} "
                f"simulated, {labelled} of them labelled)")


# ----------------------------------------------------------------------------------------------
# random draws


def _illumination(rng: np.random.Generator, config: SimulationConfig, grid: "_Grid") -> np.ndarray | float:
    """Relative excitation over the field (Y×X), falling linearly by ``illumination_gradient``
    across it in a random direction; 1.0 (and no random draw, so movies of earlier versions stay
    the same) when the gradient is 0."""
    fall = _draw(rng, config.illumination_gradient)
    if fall <= 0:
        return 1.0
    angle = rng.uniform(0.0, 2.0 * math.pi)
    y, x = np.mgrid[0 : grid.H, 0 : grid.W].astype(np.float64)
    along = math.cos(angle) * x + math.sin(angle) * y
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-9)
    return (1.0 - fall * along).astype(np.float32)


def _draw(rng: np.random.Generator, r: tuple[float, float]) -> float:
    low, high = r
    return float(low) if high <= low else float(rng.uniform(low, high))


def _draw_log(rng: np.random.Generator, r: tuple[float, float]) -> float:
    low, high = r
    if high <= low or low <= 0:
        return _draw(rng, r)
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


#: Event parameters whose typical value is drawn once per movie (see movie_kinetics_spread).
MOVIE_LEVEL = (
    "spark_rise_ms", "spark_decay_ms", "spark_fwhm_um", "spark_diffusion_um2_per_ms", "spark_tail_fraction",
    "puff_duration_ms", "puff_on_ms", "puff_off_ms", "puff_rise_ms", "puff_decay_ms", "puff_fwhm_um",
)


def _movie_centres(rng: np.random.Generator, config: SimulationConfig) -> dict[str, float]:
    """The movie's own typical value of each event parameter, drawn from its range."""
    return {name: _draw(rng, getattr(config, name)) for name in MOVIE_LEVEL}


def _draw_event(rng: np.random.Generator, config: SimulationConfig, name: str, centres: dict[str, float]) -> float:
    """One event's value: the movie's typical value × a log-normal factor, kept inside the range.

    Cells and preparations differ (temperature, dye, buffers), so events in one movie resemble
    each other more than events of different movies.
    """
    low, high = getattr(config, name)
    centre = centres[name]
    if high <= low:
        return float(low)
    if centre <= 0:  # e.g. a tail fraction of 0: vary additively
        return float(np.clip(centre + rng.normal(0.0, config.movie_kinetics_spread * (high - low)), low, high))
    return float(np.clip(centre * math.exp(rng.normal(0.0, config.movie_kinetics_spread)), low, high))


def _axial_sigma(config: SimulationConfig) -> float:
    return config.axial_fwhm_um / FWHM_PER_SIGMA


def depth_factors(depth_um: np.ndarray, config: SimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(amplitude factor, FWHM factor) of an event ``depth_um`` from the focal plane."""
    z = np.asarray(depth_um, dtype=float) / _axial_sigma(config)
    return np.exp(-0.5 * z**2), np.sqrt(1.0 + DEPTH_WIDENING * z**2)


def sample_spark_amplitudes(
    rng: np.random.Generator, n: int, config: SimulationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` sparks' (in-focus amplitude, depth µm, observed amplitude) in ΔF/F0.

    In-focus amplitudes are log-normal with ``spark_amplitude_dff0`` as their central 90 %
    interval (5th-95th percentile, a modal distribution as for sparks in focus), depths are
    uniform on ``spark_depth_um`` (CRUs uniform in 3-D), and the axial PSF dims them: the observed
    distribution decreases monotonically (Izu 2001) as long as the depths reach ≳ 1.1 axial FWHM.
    """
    low, high = config.spark_amplitude_dff0
    median = math.sqrt(low * high)
    sigma = math.log(high / low) / (2 * 1.6449) if high > low else 0.0
    focus = rng.lognormal(math.log(median), sigma, n) if sigma > 0 else np.full(n, low)
    depth = rng.uniform(*config.spark_depth_um, n)
    return focus, depth, focus * depth_factors(depth, config)[0]


# ----------------------------------------------------------------------------------------------
# the cell


@dataclass(frozen=True)
class _Cell:
    y_mid: float
    x_mid: float
    tilt: float
    curvature: float
    half_width: float
    edge: float
    end_u: float | None  # along-axis position of a rounded end, None if both ends lie outside
    end_sign: int  # +1: the cell lies at u < end_u; -1: at u > end_u
    period: float
    phase: float

    def coords(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Along-axis u and across-axis v (µm) of points (y, x) in µm."""
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        dx, dy = x - self.x_mid, y - self.y_mid
        u = dx * c + dy * s
        v = -dx * s + dy * c - self.curvature * u**2
        return u, v

    def mask(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Soft cell mask (0 outside, 1 inside) at points (y, x) µm."""
        u, v = self.coords(y, x)
        half = np.full(np.broadcast(u, v).shape, self.half_width)
        if self.end_u is not None:
            into = (self.end_u - u) * self.end_sign  # distance from the end into the cell
            cap = np.clip(into / self.half_width, 0.0, 1.0)
            half = self.half_width * np.sqrt(1.0 - (1.0 - cap) ** 2)
            half = np.where(into <= 0, into, half)  # beyond the end: outside, falling off
        scale = self.edge / 4.4  # logistic 10-90 % width = edge
        return 1.0 / (1.0 + np.exp(-(half - np.abs(v)) / scale))


def _make_cell(rng: np.random.Generator, config: SimulationConfig) -> _Cell:
    h_um = config.height_px * config.pixel_size_um
    w_um = config.width_px * config.pixel_size_um
    end_u = None
    end_sign = 1
    if rng.random() < config.cell_end_probability:
        end_sign = int(rng.choice([-1, 1]))
        end_u = end_sign * rng.uniform(0.1, 0.4) * w_um
    return _Cell(
        y_mid=h_um / 2 + _draw(rng, config.cell_offset_um),
        x_mid=w_um / 2,
        tilt=math.radians(_draw(rng, config.cell_tilt_deg)),
        curvature=_draw(rng, config.cell_curvature_per_um),
        half_width=_draw(rng, config.cell_width_um) / 2,
        edge=_draw(rng, config.cell_edge_um),
        end_u=end_u,
        end_sign=end_sign,
        period=_draw(rng, config.sarcomere_um),
        phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma_px``."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    # divide by the standard deviation such a field has on an infinite plane, so that a field of
    # view smaller than the correlation length shows only a part of the variation
    return field_ * (2.0 * math.sqrt(math.pi) * max(sigma_px, 0.5))


def _resting_maps(rng, config: SimulationConfig, cell: _Cell) -> tuple[np.ndarray, np.ndarray]:
    """(relative F0 map incl. background, fraction of it that is cell dye) on the Y×X grid."""
    px = config.pixel_size_um
    y = (np.arange(config.height_px) + 0.5)[:, None] * px
    x = (np.arange(config.width_px) + 0.5)[None, :] * px
    mask = cell.mask(y, x)
    u, v = cell.coords(y, x)
    # striations: z-lines at u = phase·period/2π + k·period, a sharpened cosine
    angle = 2 * math.pi * u / cell.period + cell.phase
    stripes = np.cos(angle) + 0.35 * np.cos(2 * angle)
    stripes /= np.abs(stripes).max() + 1e-12
    contrast = _draw(rng, config.striation_contrast)
    # the pattern is not perfect: its contrast varies smoothly along and across the cell
    contrast_map = contrast * np.clip(1 + 0.5 * _smooth_noise(rng, mask.shape, 8.0 / px), 0.2, 2.0)
    uneven = _draw(rng, config.unevenness) * _smooth_noise(rng, mask.shape, _draw(rng, config.unevenness_scale_um) / px)
    dye = (1.0 + contrast_map * stripes) * np.clip(1.0 + uneven, 0.3, None)
    # a little brighter just under the membrane (sub-sarcolemmal space)
    dye *= 1.0 + 0.08 * np.exp(-((cell.half_width - np.abs(v)) ** 2) / (2 * 0.8**2))
    if rng.random() < config.nucleus_probability:
        ny = cell.y_mid + rng.uniform(-0.3, 0.3) * cell.half_width
        nx = rng.uniform(0.1, 0.9) * config.width_px * px
        ry, rx = rng.uniform(2.0, 4.0), rng.uniform(5.0, 9.0)
        r = np.sqrt(((y - ny) / ry) ** 2 + ((x - nx) / rx) ** 2)
        nucleus = 1.0 / (1.0 + np.exp((r - 1.0) / 0.12))
        dye *= 1.0 + _draw(rng, config.nucleus_contrast) * nucleus
    cell_dye = mask * dye
    background = _draw(rng, config.background_fraction) * (1.0 + 0.3 * _smooth_noise(rng, mask.shape, 10.0 / px))
    total = cell_dye + np.clip(background, 0.0, None) + _bright_spots(rng, config, mask, y, x)
    return total.astype(np.float32), (cell_dye / np.maximum(total, 1e-9)).astype(np.float32)


def _bright_spots(rng, config: SimulationConfig, mask: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Static puncta of dye that does not respond to cytosolic Ca²⁺ (loaded into organelles)."""
    px = config.pixel_size_um
    area = float(mask.sum()) * px * px
    n = rng.poisson(_draw(rng, config.bright_spot_density) * area / 100.0)
    spots = np.zeros(mask.shape, dtype=float)
    if n == 0:
        return spots
    weights = mask.ravel() / mask.sum()
    for index in rng.choice(mask.size, size=n, p=weights):
        cy, cx = divmod(int(index), mask.shape[1])
        sigma = rng.uniform(0.2, 0.45)
        r = max(1, int(math.ceil(3 * sigma / px)))
        ys, xs = slice(max(0, cy - r), cy + r + 1), slice(max(0, cx - r), cx + r + 1)
        d2 = (y[ys, :] - (cy + 0.5) * px) ** 2 + (x[:, xs] - (cx + 0.5) * px) ** 2
        spots[ys, xs] += _draw(rng, config.bright_spot_contrast) * np.exp(-d2 / (2 * sigma**2))
    return spots


def _make_crus(rng, config: SimulationConfig, cell: _Cell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CRU positions (y, x in µm) inside the cell (and up to 1.5 µm beyond the field), weights."""
    px = config.pixel_size_um
    h_um, w_um = config.height_px * px, config.width_px * px
    margin = 1.5
    half_extent = math.hypot(h_um, w_um) / 2 + margin + 2
    # z-lines: the u values where the striation phase is 0 (bright bands)
    k = np.arange(math.floor(-half_extent / cell.period) - 1, math.ceil(half_extent / cell.period) + 2)
    u_lines = (k - cell.phase / (2 * math.pi)) * cell.period
    spacing = _draw(rng, config.cru_spacing_um)
    v_rows = np.arange(-cell.half_width, cell.half_width + 1e-9, spacing)
    uu, vv = np.meshgrid(u_lines, v_rows, indexing="ij")
    uu = uu.ravel() + rng.normal(0, config.cru_jitter_um * 0.5, uu.size)
    vv = vv.ravel() + rng.normal(0, config.cru_jitter_um, vv.size)
    c, s = math.cos(cell.tilt), math.sin(cell.tilt)
    vv_straight = vv + cell.curvature * uu**2
    x = cell.x_mid + uu * c - vv_straight * s
    y = cell.y_mid + uu * s + vv_straight * c
    keep = (x > -margin) & (x < w_um + margin) & (y > -margin) & (y < h_um + margin)
    x, y = x[keep], y[keep]
    inside = cell.mask(y, x) > 0.8
    x, y = x[inside], y[inside]
    weight = rng.lognormal(0.0, config.cru_eagerness_sigma, x.size) if x.size else np.zeros(0)
    # junctional CRUs under the membrane fire more often (atrial cells: few t-tubules)
    _, v = cell.coords(y, x)
    depth_in = np.clip(cell.half_width - np.abs(v), 0.0, None)
    weight = weight * (1.0 + (_draw(rng, config.edge_cru_weight) - 1.0) * np.exp(-depth_in / 1.0))
    return y, x, weight


# ----------------------------------------------------------------------------------------------
# event time courses


def _release_course(t: np.ndarray, switches: Sequence[float], amplitude: float, tau_on: float,
                    tau_off: float) -> np.ndarray:
    """ΔF/F0 at times ``t`` (ms) of a first-order response to release that alternates open/closed.

    ``switches`` = [open, close, open, close, ...] times. While open the signal relaxes towards
    ``amplitude`` with τ ``tau_on``; while closed it decays to 0 with τ ``tau_off``.
    """
    t = np.asarray(t, dtype=float)
    out = np.zeros_like(t)
    level = 0.0
    bounds = list(switches) + [np.inf]
    for i in range(len(switches)):
        a, b = bounds[i], bounds[i + 1]
        is_open = i % 2 == 0
        target, tau = (amplitude, tau_on) if is_open else (0.0, tau_off)
        sel = (t >= a) & (t < b)
        if sel.any():
            out[sel] = target + (level - target) * np.exp(-(t[sel] - a) / tau)
        if np.isfinite(b):
            level = target + (level - target) * math.exp(-(b - a) / tau)
    return out


def _fill_valleys(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill the dips between maxima along ``axis`` (min of the running max from both sides)."""
    forward = np.maximum.accumulate(values, axis=axis)
    backward = np.flip(np.maximum.accumulate(np.flip(values, axis=axis), axis=axis), axis=axis)
    return np.minimum(forward, backward)


def _crossings_width(t: np.ndarray, values: np.ndarray, level: float) -> float:
    """Width of the span where ``values`` ≥ ``level`` around its maximum (linear interpolation)."""
    if values.size == 0 or values.max() < level:
        return float("nan")
    i = int(np.argmax(values))
    left = i
    while left > 0 and values[left - 1] >= level:
        left -= 1
    right = i
    while right < values.size - 1 and values[right + 1] >= level:
        right += 1
    def cross(j_in: int, j_out: int) -> float:
        if j_out < 0 or j_out >= values.size:
            return float(t[j_in])
        v_in, v_out = values[j_in], values[j_out]
        frac = (v_in - level) / (v_in - v_out) if v_in != v_out else 0.0
        return float(t[j_in] + frac * (t[j_out] - t[j_in]))
    return cross(right, right + 1) - cross(left, left - 1)


# ----------------------------------------------------------------------------------------------
# rendering


@dataclass
class _Rendered:
    """One event rendered in its box: contribution, label contribution, truth row."""

    code: int
    box: tuple[slice, slice, slice]
    contrib: np.ndarray  # float32 ΔF/F0 in the box
    label_contrib: np.ndarray  # float32, valleys filled (for the label extent)
    row: dict


class _Grid:
    def __init__(self, config: SimulationConfig):
        self.T, self.H, self.W = config.n_frames, config.height_px, config.width_px
        self.px, self.dt = config.pixel_size_um, config.frame_interval_ms
        self.row_delay = (np.arange(self.H) + 0.5) / self.H * self.dt  # line-scan timing per row

    def frame_range(self, t_first: float, t_last: float) -> tuple[int, int]:
        f0 = max(0, int(math.floor(t_first / self.dt)))
        f1 = min(self.T, int(math.ceil(t_last / self.dt)) + 1)
        return f0, f1

    def px_range(self, centre_um: float, radius_um: float, n: int) -> tuple[int, int]:
        lo = max(0, int(math.floor((centre_um - radius_um) / self.px)))
        hi = min(n, int(math.ceil((centre_um + radius_um) / self.px)) + 1)
        return lo, hi


def _profile(r2: np.ndarray, sigma2: np.ndarray, tail: float) -> np.ndarray:
    """Radial profile (1 at the centre): a Gaussian core of variance σ² plus a fraction ``tail``
    of a Gaussian TAIL_WIDTH times wider (sparks are sharper-peaked than a Gaussian)."""
    core = np.exp(-r2 / (2.0 * sigma2))
    if tail <= 0:
        return core
    return (1.0 - tail) * core + tail * np.exp(-r2 / (2.0 * TAIL_WIDTH**2 * sigma2))


def profile_fwhm(sigma_um: float, tail: float) -> float:
    """FWHM (µm) of :func:`_profile` with core σ ``sigma_um`` (bisection on the half-maximum)."""
    lo, hi = 0.0, 10.0 * TAIL_WIDTH * sigma_um
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _profile(np.array(mid**2), np.array(sigma_um**2), tail) > 0.5:
            lo = mid
        else:
            hi = mid
    return 2.0 * 0.5 * (lo + hi)


def _render_local(grid: _Grid, weight: np.ndarray, code: int, y_um: float, x_um: float,
                  switches: list[float], amplitude_inf: float, tau_on: float, tau_off: float,
                  sigma_um: float, diffusion: float, tail: float, elongation: float = 1.0) -> _Rendered | None:
    """A spark or puff: radial profile whose σ² grows by diffusion after the release, times the
    centre's time course (each row sampled at its own scan time)."""
    t_start = switches[0]
    t_release_end = switches[-1]
    t_end = t_release_end + 6.0 * tau_off
    f0, f1 = grid.frame_range(t_start - grid.dt, t_end)
    if f1 <= f0:
        return None
    sigma_max = math.sqrt(sigma_um**2 + 2 * diffusion * max(0.0, t_end - t_release_end))
    radius = 3.2 * sigma_max * (TAIL_WIDTH if tail > 0 else 1.0) * math.sqrt(max(elongation, 1 / elongation))
    y0, y1 = grid.px_range(y_um, radius, grid.H)
    x0, x1 = grid.px_range(x_um, radius, grid.W)
    if y1 <= y0 or x1 <= x0:
        return None
    times = np.arange(f0, f1)[:, None] * grid.dt + grid.row_delay[None, y0:y1]  # (t, y)
    course = _release_course(times, switches, amplitude_inf, tau_on, tau_off)
    after = np.clip(times - t_release_end, 0.0, None)
    sigma2 = (sigma_um**2 + 2.0 * diffusion * after)[:, :, None]  # (t, y, 1)
    yy = ((np.arange(y0, y1) + 0.5) * grid.px - y_um)[None, :, None]
    xx = ((np.arange(x0, x1) + 0.5) * grid.px - x_um)[None, None, :]
    # elongation e stretches x by sqrt(e) and shrinks y by sqrt(e) (the geometric mean is kept)
    shape = _profile(yy**2 * elongation + xx**2 / elongation, sigma2, tail).astype(np.float32)
    w = weight[y0:y1, x0:x1][None]
    contrib = (course[:, :, None] * shape) * w
    label_course = _fill_valleys(course, axis=0)
    label_contrib = (label_course[:, :, None] * shape) * w
    box = (slice(f0, f1), slice(y0, y1), slice(x0, x1))
    return _Rendered(code, box, contrib.astype(np.float32), label_contrib.astype(np.float32), {})


def _local_row(r: _Rendered, onset: float, sigma_um: float, diffusion: float, tau_off: float,
               switches: list[float], tail: float, elongation: float = 1.0, centre_weight: float = math.nan) -> None:
    """Truth of a rendered spark/puff: amplitude (largest rendered value), FWHM at the peak,
    FDHM, time to peak and peak (× ``centre_weight``, the dye at the centre) of the continuous
    course at its centre."""
    t_fine = np.arange(onset - 1.0, switches[-1] + 8 * tau_off, 0.25)
    course = _release_course(t_fine, switches, r.row["_amp_inf"], r.row["_tau_on"], tau_off)
    i_peak = int(np.argmax(course))
    t_peak = float(t_fine[i_peak])
    after = max(0.0, t_peak - switches[-1])
    r.row.update(
        peak_ms=t_peak, amplitude_dff0=float(r.contrib.max()), peak_dff0=float(course[i_peak]) * centre_weight,
        fwhm_um=profile_fwhm(math.sqrt((sigma_um**2 + 2 * diffusion * after) * elongation), tail),
        fwhm_y_um=profile_fwhm(math.sqrt((sigma_um**2 + 2 * diffusion * after) / elongation), tail),
        fdhm_ms=_crossings_width(t_fine, course, course[i_peak] / 2), rise_time_ms=t_peak - onset,
    )


# ----------------------------------------------------------------------------------------------
# event schedules


def _spark_events(rng, config: SimulationConfig, grid: _Grid, crus, area_um2: float) -> list[dict]:
    cy, cx, cw = crus
    if cx.size == 0:
        return []
    duration = grid.T * grid.dt
    rate = _draw(rng, config.spark_rate)  # per 1000 µm² per s
    n_primary = rng.poisson(rate * area_um2 / 1000.0 * duration / 1000.0)
    p = cw / cw.sum()
    sites = rng.choice(cx.size, size=n_primary, p=p)
    onsets = rng.uniform(-40.0, duration, n_primary)
    events: list[dict] = []
    cluster = 0
    for site, onset in zip(sites, onsets):
        members = [(int(site), float(onset))]
        cid = 0
        if rng.random() < config.cluster_probability:
            near = np.flatnonzero(np.hypot(cy - cy[site], cx - cx[site]) <= config.cluster_radius_um)
            near = near[near != site]
            n_extra = min(near.size, int(round(_draw(rng, config.cluster_size))))
            if n_extra > 0:
                cluster += 1
                cid = cluster
                t = onset
                for s in rng.choice(near, size=n_extra, replace=False):
                    t += _draw(rng, config.cluster_delay_ms)
                    members.append((int(s), t))
        for s, t in members:
            events.append({"code": classes.SPARK, "site": s, "onset": t, "cluster_id": cid})
    focus, depth, _ = sample_spark_amplitudes(rng, len(events), config)
    for ev, a, z in zip(events, focus, depth):
        ev.update(amp_focus=float(a), depth=float(z))
    return events


def _puff_events(rng, config: SimulationConfig, grid: _Grid, crus, area_um2: float) -> list[dict]:
    cy, cx, cw = crus
    if cx.size == 0:
        return []
    duration = grid.T * grid.dt
    rate = _draw(rng, config.puff_rate)
    n = rng.poisson(rate * area_um2 / 1000.0 * duration / 1000.0)
    sites = rng.choice(cx.size, size=n, p=cw / cw.sum())
    return [
        {"code": classes.PUFF, "site": int(s), "onset": float(rng.uniform(-200.0, duration - 20.0)),
         "cluster_id": 0, "amp_focus": _draw(rng, config.puff_amplitude_dff0),
         "depth": _draw(rng, config.puff_depth_um)}
        for s in sites
    ]


def _render_spark_or_puff(rng, config: SimulationConfig, grid: _Grid, weight, crus, ev: dict,
                          centres: dict[str, float]) -> _Rendered | None:
    cy, cx, _ = crus
    y_um, x_um = float(cy[ev["site"]]), float(cx[ev["site"]])
    amp_factor, width_factor = depth_factors(ev["depth"], config)
    amp = ev["amp_focus"] * float(amp_factor)
    onset = ev["onset"]
    if ev["code"] == classes.SPARK:
        rise = _draw_event(rng, config, "spark_rise_ms", centres)
        tau_off = _draw_event(rng, config, "spark_decay_ms", centres)
        tau_on = rise  # concave rise during the release
        switches = [onset, onset + rise]
        amp_inf = amp / (1.0 - math.exp(-rise / tau_on))
        fwhm = _draw_event(rng, config, "spark_fwhm_um", centres) * float(width_factor)
        diffusion = _draw_event(rng, config, "spark_diffusion_um2_per_ms", centres)
    else:
        total = _draw_event(rng, config, "puff_duration_ms", centres)
        mean_on, mean_off = _draw_event(rng, config, "puff_on_ms", centres), _draw_event(rng, config, "puff_off_ms", centres)
        switches = [onset]
        t = onset
        while True:
            t += rng.exponential(mean_on)
            if t >= onset + total:
                switches.append(onset + total)
                break
            switches.append(t)
            t += rng.exponential(mean_off)
            if t >= onset + total:
                break
            switches.append(t)
        if len(switches) % 2:  # ended while closed: close at the last switch
            switches = switches[:-1] if len(switches) > 1 else [onset, onset + total]
        tau_on = _draw_event(rng, config, "puff_rise_ms", centres)
        tau_off = _draw_event(rng, config, "puff_decay_ms", centres)
        amp_inf = amp
        fwhm = _draw_event(rng, config, "puff_fwhm_um", centres) * float(width_factor)
        diffusion = 0.5 * _draw_event(rng, config, "spark_diffusion_um2_per_ms", centres)
    tail = _draw_event(rng, config, "spark_tail_fraction", centres)
    sigma = fwhm / profile_fwhm(1.0, tail)  # the in-focus FWHM is that of the whole profile
    elongation = _draw_log(rng, config.event_elongation)
    r = _render_local(grid, weight, ev["code"], y_um, x_um, switches, amp_inf, tau_on, tau_off, sigma,
                      diffusion, tail, elongation)
    if r is None:
        return None
    r.row = {
        "class_code": ev["code"], "onset_ms": onset, "x_um": x_um, "y_um": y_um, "depth_um": ev["depth"],
        "decay_tau_ms": tau_off, "speed_um_per_s": np.nan, "direction": np.nan, "cluster_id": ev["cluster_id"],
        "_amp_inf": amp_inf, "_tau_on": tau_on,
    }
    yc, xc = math.floor(y_um / grid.px), math.floor(x_um / grid.px)
    inside = 0 <= yc < grid.H and 0 <= xc < grid.W  # a centre outside the field: no peak there
    _local_row(r, onset, sigma, diffusion, tau_off, switches, tail, elongation,
               float(weight[yc, xc]) if inside else math.nan)
    return r


def _wave_course(s: np.ndarray, rise: float, tau_off: float) -> np.ndarray:
    """Local ΔF/F0 course (peak 1) at ``s`` ms after the front arrived: a concave rise over
    ``rise`` ms (τ = rise), then an exponential decay with τ ``tau_off``; 0 before arrival."""
    amp_inf = 1.0 / (1.0 - math.exp(-1.0))
    course = np.minimum(s, np.float32(rise))
    np.maximum(course, 0, out=course)
    np.multiply(course, np.float32(-1.0 / rise), out=course)
    np.exp(course, out=course)
    course = np.float32(amp_inf) * (1 - course)
    decay = s - np.float32(rise)
    np.maximum(decay, 0, out=decay)
    np.multiply(decay, np.float32(-1.0 / tau_off), out=decay)
    np.exp(decay, out=decay)
    course *= decay  # the decay factor is 1 before the peak, the rise factor 1 after it
    course[s < 0] = 0.0
    return course


#: apparent diffusion (µm²/ms) that carries a z-line's release to the pixels between z-lines
_SALTATORY_DIFFUSION = 0.1


def _saltatory_travel_ms(cell: _Cell, y: np.ndarray, x: np.ndarray, ys: float, xs: float, speed: float) -> np.ndarray:
    """Time (ms) a saltatory front takes from the site (ys, xs) to each pixel: it reaches the
    pixel's nearest z-line (a circle from the site in the cell's along/across coordinates, the
    line's along-position in place of the pixel's), then diffuses the rest (δu²/2D)."""
    u, v = cell.coords(y, x)
    us, vs = cell.coords(np.asarray(ys), np.asarray(xs))
    shift = cell.phase / (2 * math.pi)  # z-lines where 2πu/period + phase = 2πk
    line = (np.round(u / cell.period + shift) - shift) * cell.period
    return np.hypot(line - us, v - vs) / speed + (u - line) ** 2 / (2 * _SALTATORY_DIFFUSION)


def _render_wave(rng, config: SimulationConfig, grid: _Grid, weight: np.ndarray, cell: _Cell,
                 crus) -> _Rendered | None:
    cy, cx, _ = crus
    duration = grid.T * grid.dt
    w_um = grid.W * grid.px
    speed = _draw(rng, config.wave_speed_um_per_s) / 1000.0  # µm/ms
    amp = _draw(rng, config.wave_amplitude_dff0)
    rise = _draw(rng, config.wave_rise_ms)
    tau_off = _draw(rng, config.wave_decay_ms)
    max_dist = _draw(rng, config.wave_max_distance_um)
    onset = float(rng.uniform(-0.3 * duration, 0.8 * duration))
    if rng.random() < config.wave_outside_probability or cx.size == 0:
        side = int(rng.choice([-1, 1]))
        xs = -rng.uniform(1.0, 40.0) if side < 0 else w_um + rng.uniform(1.0, 40.0)
        ys = cell.y_mid + rng.uniform(-0.5, 0.5) * cell.half_width
        direction = "+x" if side < 0 else "-x"
    else:
        i = int(rng.integers(cx.size))
        xs, ys = float(cx[i]), float(cy[i])
        direction = "both"
    y = (np.arange(grid.H) + 0.5)[:, None] * grid.px
    x = (np.arange(grid.W) + 0.5)[None, :] * grid.px
    dist = np.hypot(y - ys, x - xs)  # a circle from the site: curved front
    travel = dist / speed
    # drawn only when asked for, so that the random stream (and every data set) stays as it was
    if config.wave_saltatory_probability > 0 and rng.random() < config.wave_saltatory_probability:
        travel = _saltatory_travel_ms(cell, y, x, ys, xs, speed)
    arrival = onset + travel  # (y, x)
    alive = 1.0 / (1.0 + np.exp((dist - max_dist) / 5.0))
    f0, f1 = grid.frame_range(max(onset, arrival.min() - rise), duration)
    reach = (arrival - rise <= duration) & (alive > 0.01) & (weight > 0.01)
    if f1 <= f0 or not reach.any():
        return None
    cols = np.flatnonzero(reach.any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    spatial = (amp * alive[:, x0:x1] * weight[:, x0:x1]).astype(np.float32)
    arrival_box = arrival[None, :, x0:x1].astype(np.float32)
    contrib = np.empty((f1 - f0, grid.H, x1 - x0), dtype=np.float32)
    for c0 in range(f0, f1, 32):  # in chunks of frames to bound the temporary arrays
        c1 = min(f1, c0 + 32)
        times = (np.arange(c0, c1)[:, None, None] * grid.dt + grid.row_delay[None, :, None]).astype(np.float32)
        contrib[c0 - f0:c1 - f0] = _wave_course(times - arrival_box, rise, tau_off) * spatial[None]
    box = (slice(f0, f1), slice(0, grid.H), slice(x0, x1))
    r = _Rendered(classes.WAVE, box, contrib, contrib, {})
    # truth at the peak pixel
    ti, yi, xi = np.unravel_index(int(np.argmax(contrib)), contrib.shape)
    t_fine = np.arange(0.0, rise + 8 * tau_off, 0.5)
    local = _wave_course(t_fine.astype(np.float32), rise, tau_off).astype(float)
    r.row = {
        "class_code": classes.WAVE, "onset_ms": onset, "x_um": (x0 + xi + 0.5) * grid.px,
        "y_um": (yi + 0.5) * grid.px, "depth_um": 0.0, "decay_tau_ms": tau_off,
        "speed_um_per_s": speed * 1000.0, "direction": direction, "cluster_id": 0,
        "peak_ms": float(arrival[yi, x0 + xi] + rise), "amplitude_dff0": float(contrib.max()),
        "fwhm_um": np.nan, "fdhm_ms": _crossings_width(t_fine, local, 0.5), "rise_time_ms": rise,
        "origin_x_um": xs, "origin_y_um": ys, "_speed": speed, "_max_dist": max_dist,
    }
    return r


def _refractory(ev: dict, crus, waves: list[_Rendered], rng, config: SimulationConfig) -> bool:
    """True if a wave passed the event's CRU shortly before its onset (the SR is depleted)."""
    cy, cx, _ = crus
    for wave in waves:
        row = wave.row
        dist = math.hypot(cy[ev["site"]] - row["origin_y_um"], cx[ev["site"]] - row["origin_x_um"])
        if dist > row["_max_dist"]:
            continue
        arrival = row["onset_ms"] + dist / row["_speed"]
        if arrival - 20.0 <= ev["onset"] <= arrival + _draw(rng, config.wave_refractory_ms):
            return True
    return False


# ----------------------------------------------------------------------------------------------
# noise, SNR


def event_snr(amplitude: float, fwhm_um: float, fdhm_ms: float, f0_photons: float, gain: float,
              read_noise_adu: float, excess_noise: float, config: SimulationConfig) -> float:
    """Signal-to-noise ratio of an event as an annotator sees it.

    The noise of one voxel in ΔF/F0 units is sqrt(ENF²·F0 + (read/gain)²)/F0 at the event's
    resting photon count F0. The eye is modelled as a Gaussian smoothing: σ ``eye_sigma_um`` in
    space, and in time the event's own σ_c = FDHM/2.355 clipped to [``eye_sigma_ms``,
    ``eye_max_sigma_ms``] (a long puff is seen by following it over many frames). Smoothing divides
    the noise by sqrt(n_eff) (n_eff = Π max(1, 2√π·σ_axis/voxel)) and lowers the peak by
    σ_e²/(σ_e² + σ_eye²) in space (σ_e = FWHM/2.355) and σ_c/sqrt(σ_c² + σ_eye²) in time.
    SNR = smoothed peak / smoothed noise. A NaN FWHM or FDHM counts as very large.
    """
    if not (f0_photons > 0 and amplitude > 0):
        return 0.0
    noise = math.sqrt(excess_noise**2 * f0_photons + (read_noise_adu / gain) ** 2) / f0_photons
    sigma_c = fdhm_ms / FWHM_PER_SIGMA if np.isfinite(fdhm_ms) else math.inf
    eye_t = min(max(sigma_c, config.eye_sigma_ms), max(config.eye_max_sigma_ms, config.eye_sigma_ms))
    s_px = config.eye_sigma_um / config.pixel_size_um
    s_fr = eye_t / config.frame_interval_ms
    n_eff = max(1.0, 2 * math.sqrt(math.pi) * s_px) ** 2 * max(1.0, 2 * math.sqrt(math.pi) * s_fr)
    space = 1.0
    if np.isfinite(fwhm_um):
        se = fwhm_um / FWHM_PER_SIGMA
        space = se**2 / (se**2 + config.eye_sigma_um**2) if se > 0 else 0.0
    time = 1.0 if not np.isfinite(sigma_c) else (sigma_c / math.sqrt(sigma_c**2 + eye_t**2) if eye_t > 0 else 1.0)
    return float(amplitude * space * time / (noise / math.sqrt(n_eff)))


#: above this fraction of voxels at 65535 ADU a simulated movie is said to be saturated
SATURATED_WARNING = 1e-4


def _detector(rng, expected_photons: np.ndarray, gain: float, offset: float, read: float, enf: float,
              lowpass: float = 0.0, chunk: int = 64) -> np.ndarray:
    """Photon counts → uint16 ADU (Poisson, excess noise, gain, offset, read noise), in chunks."""
    out = np.empty(expected_photons.shape, dtype=np.uint16)
    extra = gain * gain * (enf * enf - 1.0)
    for start in range(0, expected_photons.shape[0], chunk):
        lam = expected_photons[start:start + chunk]
        counts = rng.poisson(lam).astype(np.float32)
        sd = np.sqrt(np.float32(read * read) + np.float32(extra) * lam)
        adu = offset + gain * counts + sd * rng.standard_normal(lam.shape, dtype=np.float32)
        if lowpass > 0:  # detector bandwidth: neighbouring pixels along the fast (x) scan axis
            inner = adu[..., 1:-1] + lowpass * (adu[..., :-2] + adu[..., 2:])
            adu[..., 1:-1] = inner / (1.0 + 2.0 * lowpass)
        out[start:start + chunk] = np.clip(np.rint(adu), 0, 65535).astype(np.uint16)
    return out


# ----------------------------------------------------------------------------------------------
# the movie


def simulation_config(config: SimulationConfig | str | Path | Mapping[str, object] | None) -> SimulationConfig:
    """``config`` as a :class:`SimulationConfig`: a preset's name or YAML file, or a mapping of
    parameters over the default preset, read by :func:`load_simulation_config` (they were
    AttributeErrors); None: the defaults."""
    if config is None:
        return SimulationConfig()
    if isinstance(config, SimulationConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_simulation_config(config)
    if isinstance(config, Mapping):
        return load_simulation_config("default", config)
    raise CasparksError(f"config must be a SimulationConfig, a preset's name or file, or a mapping of parameters, "
                        f"got {type(config).__name__} {config!r:.40}", fix="pass, e.g., casparks.load_simulation_config('noisy')")


def simulate_movie(config: SimulationConfig | str | Path | Mapping[str, object] | None = None,
                   seed: int | Sequence[int] = 0, keep_dff: bool = False) -> SimulatedMovie:
    """Simulate one movie with its truth; the same ``seed`` gives the same arrays.

    ``config``: a :class:`SimulationConfig`, a preset's name or file, or a mapping of parameters
    over the default preset (:func:`simulation_config`). ``seed`` is an int or a sequence of ints
    (a data set uses ``[seed, movie_id]``). With ``keep_dff`` the result also holds the
    noise-free ΔF/F0 of all events (float32, T×Y×X).
    """
    config = simulation_config(config)
    parts = list(seed) if isinstance(seed, (list, tuple, np.ndarray)) else [seed]
    if not parts or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in parts):
        raise CasparksError(f"the seed must be a whole number >= 0 (or a list of them), got {seed!r}",
                            fix="pass, e.g., seed=0")  # NumPy's "expected non-negative integer" said less
    rng = np.random.default_rng(seed)
    grid = _Grid(config)
    T, H, W = grid.T, grid.H, grid.W
    cell = _make_cell(rng, config)
    rel_f0, dye_fraction = _resting_maps(rng, config, cell)
    f0_ph = _draw_log(rng, config.f0_photons)
    gain = _draw(rng, config.gain_adu_per_photon)
    offset = _draw(rng, config.offset_adu)
    read = _draw(rng, config.read_noise_adu)
    enf = _draw(rng, config.excess_noise_factor)
    bleach_total = _draw(rng, config.bleach_fraction)
    bleach = (1.0 - bleach_total) ** (np.arange(T) / max(T - 1, 1))
    drift = _draw(rng, config.baseline_drift)
    if drift > 0 and T > 1:  # slow focus / laser power drift: smooth noise, correlation ≈ 0.3-1 s
        corr_frames = rng.uniform(300.0, 1000.0) / grid.dt
        wiggle = ndimage.gaussian_filter1d(rng.standard_normal(T + 200), corr_frames, mode="reflect")[100:-100]
        wiggle *= math.sqrt(2.0 * math.sqrt(math.pi) * corr_frames)  # unit variance of the process
        bleach = bleach * np.clip(1.0 + drift * wiggle, 0.5, 1.5)
    bleach = bleach.astype(np.float32)
    crus = _make_crus(rng, config, cell)
    soft_mask = cell.mask((np.arange(H)[:, None] + 0.5) * grid.px, (np.arange(W)[None, :] + 0.5) * grid.px)
    area_um2 = float(soft_mask.sum()) * grid.px**2

    rng_events = np.random.default_rng(rng.integers(2**63))
    waves: list[_Rendered] = []
    if rng_events.random() < config.wave_probability:
        while True:
            r = _render_wave(rng_events, config, grid, dye_fraction, cell, crus)
            if r is not None and r.contrib.max() > 1e-3:
                waves.append(r)
            if rng_events.random() >= config.extra_wave_probability:
                break
    rendered: list[_Rendered] = list(waves)
    centres = _movie_centres(rng_events, config)
    for ev in _spark_events(rng_events, config, grid, crus, area_um2) + _puff_events(
            rng_events, config, grid, crus, area_um2):
        if _refractory(ev, crus, waves, rng_events, config):
            continue
        r = _render_spark_or_puff(rng_events, config, grid, dye_fraction, crus, ev, centres)
        if r is not None and r.contrib.max() > 1e-3:
            rendered.append(r)
    rendered.sort(key=lambda r: r.row["onset_ms"])

    dff = np.zeros((T, H, W), dtype=np.float32)
    for r in rendered:
        dff[r.box] += r.contrib
    truth_dff = dff.copy() if keep_dff else None
    f0_map = rel_f0 * f0_ph * _illumination(rng, config, grid)  # photons per pixel and frame at rest
    class_label, event_label, table = _truth(rendered, config, grid, f0_map, bleach, (gain, read, enf), cell)
    expected = dff  # reuse the buffer
    expected += 1.0
    expected *= f0_map[None]
    expected *= bleach[:, None, None]
    flicker = _draw(rng, config.frame_flicker)
    line = _draw(rng, config.line_flicker)
    if flicker > 0 or line > 0:  # laser intensity noise: per frame and per scanned line
        expected *= (1.0 + flicker * rng.standard_normal((T, 1, 1))
                     + line * rng.standard_normal((T, H, 1))).clip(0.5, 1.5).astype(np.float32)
    data = _detector(rng, expected, gain, offset, read, enf, _draw(rng, config.scan_lowpass))
    del expected
    saturated = float(np.count_nonzero(data == np.iinfo(np.uint16).max)) / data.size
    if saturated > SATURATED_WARNING:  # clipped without a word: a wave 33 % saturated kept its true amplitude
        log.warning("the simulated movie has %.2g %% of its voxels saturated at 65535 ADU (clipped), its events "
                    "too: lower f0_photons or gain_adu_per_photon", 100 * saturated)
    movie = Movie(data, config.pixel_size_um, config.frame_interval_ms, name="simulated")
    resting = (offset + gain * f0_map).astype(np.float32)
    return SimulatedMovie(movie, class_label, event_label, table, resting, float(offset), bleach, truth_dff,
                          soft_mask >= 0.5)


def _truth(rendered: list[_Rendered], config: SimulationConfig, grid: _Grid, f0_map: np.ndarray,
           bleach: np.ndarray, camera: tuple[float, float, float], cell: _Cell):
    """Class and instance labels and the events table from the rendered events."""
    T, H, W = grid.T, grid.H, grid.W
    gain, read, enf = camera
    best = np.zeros((T, H, W), dtype=np.float32)
    owner = np.zeros((T, H, W), dtype=np.int32)
    extents = np.zeros((T, H, W), dtype=bool)
    masks = []
    for i, r in enumerate(rendered, start=1):
        peak = float(r.label_contrib.max())
        threshold = max(config.label_floor_dff0, config.label_fraction * peak)
        mask = r.label_contrib >= threshold
        masks.append(mask)
        if not mask.any():
            continue
        extents[r.box] |= mask
        b, o = best[r.box], owner[r.box]
        win = mask & (r.label_contrib > b)
        b[win] = r.label_contrib[win]
        o[win] = i
    class_label = np.zeros((T, H, W), dtype=np.uint8)
    event_label = np.zeros((T, H, W), dtype=np.uint32)
    rows = []
    next_id = 1
    structure = np.ones((3, 3, 3), dtype=bool)
    for i, (r, mask) in enumerate(zip(rendered, masks), start=1):
        row = {k: v for k, v in r.row.items() if not k.startswith("_")}
        region = owner[r.box] == i
        span = mask if mask.any() else r.label_contrib >= config.label_fraction * r.label_contrib.max()
        if span.any():
            f_idx = np.flatnonzero(span.any(axis=(1, 2)))
            start_ms = (r.box[0].start + f_idx[0]) * grid.dt
            end_ms = (r.box[0].start + f_idx[-1] + 1) * grid.dt
        else:
            start_ms = end_ms = np.nan
        # the resting photons where and when the event peaks
        ti, yi, xi = np.unravel_index(int(np.argmax(r.contrib)), r.contrib.shape)
        t_abs, y_abs, x_abs = r.box[0].start + ti, r.box[1].start + yi, r.box[2].start + xi
        f0_local = float(f0_map[y_abs, x_abs] * bleach[t_abs])
        snr = event_snr(row["amplitude_dff0"], row.get("fwhm_um", np.nan), row.get("fdhm_ms", np.nan),
                        f0_local, gain, read, enf, config)
        if r.code == classes.WAVE:  # a wave is seen over its whole front, not one spot
            snr = event_snr(row["amplitude_dff0"], np.inf, row["fdhm_ms"], f0_local, gain, read, enf, config)
        keep = region
        if region.any():
            labelled_cc, n_cc = ndimage.label(region, structure=structure)
            if n_cc > 1:
                pick = labelled_cc[ti, yi, xi] if region[ti, yi, xi] else 0
                if pick == 0:
                    pick = int(np.argmax(np.bincount(labelled_cc.ravel())[1:])) + 1
                keep = labelled_cc == pick
        # an event mostly hidden under others (less than HIDDEN_FRACTION of its extent left) is ignore
        visible = snr >= config.visibility_snr and keep.sum() >= HIDDEN_FRACTION * mask.sum() > 0
        c, e = class_label[r.box], event_label[r.box]
        # pieces cut off from the event (by another one) become ignore
        c[region & ~keep] = classes.IGNORE
        if visible:
            c[keep] = r.code
            e[keep] = next_id
            event_id = next_id
            next_id += 1
        else:
            c[region] = classes.IGNORE
            event_id = 0
        # visible, but its peak under the label floor (a movie of many photons): ignore where it rises
        # above its own half maximum, not background where a detector finding it is wrong
        below_floor = not mask.any() and snr >= config.visibility_snr
        if below_floor:
            c[span & (c == classes.BACKGROUND)] = classes.IGNORE
        row.update(
            event_id=event_id, **{"class": classes.CLASS_NAMES[r.code]}, labelled=visible, start_ms=start_ms,
            end_ms=end_ms, duration_ms=end_ms - start_ms, snr=snr, f0_photons=f0_local,
            unlabelled_reason="" if visible else ("faint" if snr < config.visibility_snr
                                                  else "below_floor" if below_floor else "hidden"),
        )
        rows.append(row)
    # ignore shell around every event extent
    if extents.any() and (config.ignore_width_um > 0 or config.ignore_width_ms > 0):
        shell = dilate(extents, config.ignore_width_um, config.ignore_width_ms, grid.px, grid.dt)
        class_label[shell & (class_label == classes.BACKGROUND)] = classes.IGNORE
    table = pd.DataFrame(rows)
    # a movie without events: the columns' own dtypes (all float, events[events["labelled"]]
    # selected columns, not rows, and the truth's usual filter failed with KeyError 'event_id')
    kinds = {"event_id": np.int64, "class": object, "class_code": np.int64, "labelled": bool, "direction": object,
             "unlabelled_reason": object}
    for column in EVENT_COLUMNS + EXTRA_COLUMNS:
        if column not in table:
            table[column] = pd.Series(dtype=kinds.get(column, float))
    table = table[EVENT_COLUMNS + EXTRA_COLUMNS]
    event_label = event_label.astype(np.uint16) if next_id <= 65536 else event_label
    return class_label, event_label, table


# ----------------------------------------------------------------------------------------------
# data sets


def _movie_paths(out_dir: Path, movie_id: int, previews: bool) -> dict[str, Path]:
    stem = f"{movie_id:02d}"
    paths = {kind: out_dir / f"{stem}_{kind}.tif" for kind in ("video", "class_label", "event_label")}
    paths["events"] = out_dir / f"{stem}_events.csv"
    if previews:
        paths["preview"] = out_dir / f"{stem}_preview.png"
    return paths


#: bytes a movie's simulation holds per voxel at its peak (float32 fields, labels, the noisy
#: movie): 500 × 64 × 512 took 0.50 GB above the interpreter, 1000 × 64 × 512 0.69 GB (2026-12-06)
SIMULATION_BYTES_PER_VOXEL = 32


def _refuse_beyond_memory(config: SimulationConfig) -> None:
    """A movie larger than memory allows: refused before anything is written (it ran out of
    memory with a traceback after 20 s, leaving its parameter file behind)."""
    from .hardware import available_memory_bytes

    voxels = config.n_frames * config.height_px * config.width_px
    need, free = voxels * SIMULATION_BYTES_PER_VOXEL, available_memory_bytes()
    if free is not None and need > free:
        raise CasparksError(f"a {config.n_frames} × {config.height_px} × {config.width_px} movie needs about "
                            f"{need / 1e9:.1f} GB to simulate, more than the {free / 1e9:.1f} GB available",
                            fix="simulate fewer frames or a smaller field (long movies: several shorter ones)")


def _refuse_overlapping_runs(out_dir: Path, config_path: Path, ids: list[int]) -> None:
    """Refuse to replace some of the movies an earlier run's ``simulation_A-B.yaml`` describes:
    its movies outside this run would stay under a description that no longer holds for all of
    them (the folder, checked clean, would mix two runs)."""
    for other in sorted(out_dir.glob("simulation_*-*.yaml")) if out_dir.is_dir() else []:
        match = re.fullmatch(r"simulation_(\d+)-(\d+)\.yaml", other.name)
        if other == config_path or match is None:
            continue
        first, last = int(match.group(1)), int(match.group(2))
        replaced = [i for i in ids if first <= i <= last]
        if replaced:
            raise CasparksError(
                f"{other.name} describes movies {first:02d}-{last:02d}, of which this run would replace "
                f"{replaced[0]:02d}-{replaced[-1]:02d}: the folder would hold two runs' movies", path=out_dir,
                fix=f"simulate all of {first:02d}-{last:02d} again (--first-id {first} --movies {last - first + 1}), "
                    "another folder or --first-id, or remove that run's files first")


def simulate_dataset(
    out_dir: str | Path,
    n_movies: int,
    seed: int = 0,
    config: SimulationConfig | str | Path | Mapping[str, object] | None = None,
    first_id: int = 1,
    overwrite: bool = False,
    previews: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``n_movies`` simulated movies in the reference layout; returns the video paths.

    Movie ``k`` (id ``first_id + k``) is simulated with the seed ``[seed, id]``, so it is the same
    whatever ``n_movies`` is. The parameters go to ``simulation_FIRST-LAST.yaml`` (a preset file
    that reproduces the run, with the seed, first id and count it records:
    :func:`casparks.simulation_params.recorded_run`). Nothing is written if any target file exists (unless ``overwrite``)
    or is a folder. ``config`` as for :func:`simulate_movie`.
    """
    config = simulation_config(config)
    out_dir = Path(out_dir)
    blocking = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():  # it said "File exists; check the free space"
        raise CasparksError("is a file, not a folder", path=blocking, fix="give a folder for the simulated movies")
    for name, value, least in (("n_movies", n_movies, 1), ("first_id", first_id, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            # 1.5 movies was a TypeError from range()
            raise CasparksError(f"{name} must be a whole number >= {least}, got {value!r}",
                                fix=f"pass, e.g., {name}={max(least, 1)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        # numpy's generators take non-negative integers; checked before anything is written
        raise CasparksError(f"the seed must be a whole number >= 0, got {seed!r}", fix="pass, e.g., --seed 0")
    _refuse_beyond_memory(config)
    ids = list(range(first_id, first_id + n_movies))
    all_paths = [_movie_paths(out_dir, i, previews) for i in ids]
    config_path = out_dir / f"simulation_{ids[0]:02d}-{ids[-1]:02d}.yaml"
    refuse_folders([config_path, *(p for paths in all_paths for p in paths.values())],
                   fix="remove or rename it, or choose another output folder or --first-id")
    if not overwrite:
        existing = [p for paths in all_paths for p in paths.values() if p.exists()]
        existing += [config_path] if config_path.exists() else []
        if existing:
            raise CasparksError(
                f"{len(existing)} output file(s) exist already, e.g. {existing[0].name}", path=out_dir,
                fix="choose another folder or --first-id, or pass --overwrite")
    else:
        _refuse_overlapping_runs(out_dir, config_path, ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # the movies replaced go first: an interrupted run leaves none of the old ones among the new
        for movie_id in ids:
            for path in _movie_paths(out_dir, movie_id, True).values():
                path.unlink(missing_ok=True)
    from . import __version__

    save_simulation_config(
        config_path, config, description=f"parameters of simulated movies {ids[0]:02d}-{ids[-1]:02d}",
        provenance={"casparks": __version__, "seed": int(seed), "first_id": first_id, "n_movies": n_movies,
                    "movie_seed": "[seed, movie id]"}, overwrite=overwrite)
    written = []
    for done, (movie_id, paths) in enumerate(zip(ids, all_paths), start=1):
        sim = simulate_movie(config, seed=[int(seed), int(movie_id)])
        px, dt = config.pixel_size_um, config.frame_interval_ms
        mine: list[Path] = []  # the files this run wrote: a second run into the folder may have written the others
        try:  # each writer returns its path once the file is in place
            mine.append(write_movie(paths["video"], sim.movie, overwrite=overwrite))
            mine.append(write_class_label(paths["class_label"], sim.class_label, px, dt, overwrite=overwrite))
            mine.append(write_event_label(paths["event_label"], sim.event_label, px, dt, overwrite=overwrite))
            mine.append(write_csv(paths["events"], sim.events, overwrite=overwrite))
            if previews:
                mine.append(write_preview(paths["preview"], sim, overwrite=overwrite))
        except BaseException:  # Ctrl-C, a full disk: a movie is whole or absent (a movie without labels was left)
            for path in mine:  # not another run's (a refused second run deleted the first's movie 01)
                path.unlink(missing_ok=True)
            if not written:  # no movie to describe: the parameters alone blocked the rerun (--overwrite asked)
                config_path.unlink(missing_ok=True)
            raise
        written.append(paths["video"])
        log.info("movie %02d: %d events (%d labelled)", movie_id, len(sim.events),
                 int(sim.events["labelled"].sum()) if len(sim.events) else 0)
        if progress is not None:
            progress(done, n_movies)
    return written


# ----------------------------------------------------------------------------------------------
# preview


def preview_dff(sim: SimulatedMovie, sigma_px: float = 1.0, sigma_frames: float = 1.0) -> np.ndarray:
    """Lightly smoothed ΔF/F0 of the (noisy) movie, from the known resting level and bleaching."""
    data = sim.movie.data.astype(np.float32)
    if sim.resting_adu is None:
        baseline = np.median(data, axis=0)
        offset = 0.0
        bleach = np.ones(data.shape[0], dtype=np.float32)
    else:
        baseline, offset, bleach = sim.resting_adu, sim.offset_adu, sim.bleach
    rest = (baseline - offset)[None] * bleach[:, None, None]
    dff = (data - offset) / np.maximum(rest, 1e-3)
    dff -= 1.0
    # outside the cell the estimate is meaningless noise: weight by the resting signal
    dff *= np.clip((baseline - offset) / np.percentile(baseline - offset, 90), 0, 1)[None]
    return ndimage.gaussian_filter(dff, (sigma_frames, sigma_px, sigma_px), truncate=2.0)


def write_preview(path: str | Path, sim: SimulatedMovie, overwrite: bool = False) -> Path:
    """PNG: max projection of smoothed ΔF/F0 with event outlines, one raw frame, a kymograph."""
    from matplotlib.figure import (
        Figure,  # no pyplot: renders with Agg, never opens a window
    )

    from .io import atomic_output

    movie = sim.movie
    T, H, W = movie.shape
    px, dt = movie.pixel_size_um, movie.frame_interval_ms
    dff = preview_dff(sim)
    vmax = float(np.percentile(dff.max(axis=0), 99.5))
    vmax = vmax if math.isfinite(vmax) and vmax > 0 else 1.0  # a saturated movie's ΔF/F0 is ≤ 0 (it crashed)
    fig = Figure(figsize=(11, 9.5), dpi=90)
    axes = fig.subplots(3, 1, gridspec_kw={"height_ratios": [1.0, 1.0, 3.0]})
    extent_xy = (0, W * px, H * px, 0)
    x_um, y_um, t_ms = (np.arange(W) + 0.5) * px, (np.arange(H) + 0.5) * px, (np.arange(T) + 0.5) * dt
    labels = sim.class_label
    events = sim.events
    # 1: max projection with outlines
    ax = axes[0]
    ax.imshow(dff.max(axis=0), cmap="gray", vmin=0, vmax=vmax, extent=extent_xy, interpolation="nearest")
    for code in classes.EVENT_CLASSES:
        proj = (labels == code).any(axis=0)
        if proj.any():
            color = tuple(c / 255 for c in classes.CLASS_COLORS[code])
            ax.contour(x_um, y_um, proj.astype(float), levels=[0.5], colors=[color], linewidths=0.8)
    n_by = events[events["labelled"]]["class"].value_counts().to_dict() if len(events) else {}
    ax.set_title("max over time of smoothed ΔF/F0 — labelled: "
                 + classes.format_counts({n: n_by.get(n, 0) for n in ("spark", "puff", "wave")})
                 + f" ({int((~events['labelled']).sum()) if len(events) else 0} too faint or hidden → ignore)",
                 fontsize=9)
    ax.set_ylabel("y (µm)")
    # 2: one raw frame, at the brightest labelled spark if any
    frame = T // 2
    sparks = events[(events["class"] == "spark") & events["labelled"]] if len(events) else events
    if len(sparks):
        best = sparks.sort_values("amplitude_dff0").iloc[-1]
        frame = int(np.clip(round(best["peak_ms"] / dt), 0, T - 1))
    ax = axes[1]
    raw = movie.data[frame]
    ax.imshow(raw, cmap="gray", extent=extent_xy, interpolation="nearest",
              vmin=np.percentile(raw, 1), vmax=np.percentile(raw, 99.8))
    ax.set_title(f"raw frame {frame} (t = {frame * dt:.0f} ms)", fontsize=9)
    ax.set_ylabel("y (µm)")
    # 3: kymograph x-t (max over y)
    ax = axes[2]
    kymo = dff.max(axis=1)
    extent_xt = (0, W * px, T * dt, 0)
    ax.imshow(kymo, cmap="gray", vmin=0, vmax=vmax, extent=extent_xt, aspect="auto", interpolation="nearest")
    for code in classes.EVENT_CLASSES:
        proj = (labels == code).any(axis=1)
        if proj.any():
            color = tuple(c / 255 for c in classes.CLASS_COLORS[code])
            ax.contour(x_um, t_ms, proj.astype(float), levels=[0.5], colors=[color], linewidths=0.7)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("t (ms)")
    ax.set_title("kymograph: max over y of smoothed ΔF/F0; outlines: sparks amber, puffs magenta, "
                 "waves cyan", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return path

"""Per-event measurements: what a physiologist reports for every spark, puff and wave.

Detection says *where* the events are; the biology is in their numbers: amplitude ΔF/F0, width
(FWHM), duration (FDHM), time to peak, decay τ, frequency, and for waves the propagation speed.
:func:`measure_events` computes them for every instance of an event label (annotated or
predicted) from the raw movie, in µm and ms, with the conventions of line-scan spark analysis
(Cheng et al. 1999; SparkMaster 2, Tomek et al. 2023) carried over to x-y-t movies. It is
vectorised where it can be and works on each event's bounding box (``scipy.ndimage.find_objects``):
a 500 × 64 × 512 movie with 140 events takes 1.0-1.3 s on one CPU core, 226 events 1.6 s
(``benchmarks/results/measure.md``).

Baseline F0 (:func:`f0_estimate`)
---------------------------------
ΔF/F0 = (F − offset − F0) / F0. ``offset`` is the detector's dark level
(``MeasureConfig.offset_adu``: ``"auto"``, the default, reads it from the movie's photon noise
outside events, :mod:`casparks.darklevel`, and takes 0 with a warning where the noise allows no
estimate; 0 = the movie's values are already offset-free; or the dark level in ADU when you
know it). An offset left in F0 scales every ΔF/F0 down by F0 / (F0 + offset).
F0 is a resting image times a global time course, F0(t, y, x) = B(y, x) · g(t) (photobleaching
and slow drift scale the whole field):

1. Frames are averaged in bins of ``f0_bin_ms`` (the median of single low-photon frames is
   biased low; the median of bin means is not).
2. Bins touched by an event are left out: voxels with an event id, or an event or ignore class,
   dilated by ``exclude_um`` in space, ``exclude_before_ms`` before and, after each run of event
   voxels at a pixel, max(``exclude_after_ms``, ``exclude_after_factor`` × the run's length)
   (a decay outlasts its label, and a long spark's or wave's decay lasts longer); after puffs and
   the ignore voxels within ``exclude_um`` of an event ``exclude_after_ms`` only
   (:data:`SHORT_TAIL_CLASSES`: a puff lasts as long as its release, not its decay; at a site of
   two 0.3-0.4 s puffs in a 2 s movie the longer tail left no bin, and F0 there read 16 % low;
   ignore beside an event is the shell around its mask, ignore elsewhere may be an uncertain
   event with a long decay, and keeps the long tail).
3. B is the per-pixel median of the remaining bin means; bins more than ``f0_clip_sigma`` robust
   SDs (from the lower quartile) above it (unlabelled events, long tails) are dropped and the
   median taken again. g(t) is the median of bin mean / B over the bright half of the field,
   outside events, as a running mean over ``f0_window_ms`` (a local straight line through the
   bins that set it; bins where an event covers much of the field, a wave, and a while after it
   are bridged by a straight line, and beyond the last such bin the exponential trend of the
   bins within ``f0_window_ms`` of it continues where it is significant, :data:`_TREND_MIN_BINS`
   bins and :data:`_TREND_MIN_SE` standard errors at least: else g stays level there, as the
   trend of a few bins is their noise); B is then re-estimated from the
   movie / g. B is smoothed in space by a Gaussian of σ ``f0_smooth_um`` (normalised
   convolution: pixels under events in every bin borrow from known pixels within about 3 σ,
   and only from those at least half as bright as their own 10th percentile over the bins,
   :data:`_BORROW_FROM_FRACTION`, so that a cell's edge does not take the F0 of the dark
   outside; pixels with none take their 10th percentile over all bins, with a warning: noise
   puts it about 1.3 SDs of a bin mean low, 14-28 % at 20-5 photons a pixel, so ΔF/F0 there
   reads high, and events in the bins push it up).

Measurements
------------
Around each event's bounding box (padded by ``margin_um`` and ``margin_ms``) ΔF/F0 is smoothed by
a Gaussian of σ ``smooth_sigma_um`` in space, and in time by ``puff_sigma_ms`` for puffs and
``smooth_sigma_ms`` for waves (a spark lasts only a few frames: its time course is fitted instead).
The peak pixel is the maximum over the event's voxels of ΔF/F0 smoothed a little more
(``locate_sigma_um`` / ``locate_sigma_ms``). Waves are measured on ΔF/F0 averaged in ``wave_bin_um`` squares. Temporal
profiles are read within the event's own frames at the peak pixel ± ``margin_ms``, and every
profile stops at voxels of other events: a crossing not reached before another event, the
field's edge or the end of the movie gives NaN. Time of a voxel: with ``raster_scan`` (default,
a point-scanning confocal) row y of frame k is acquired at (k + (y + 0.5)/H)·Δt, otherwise the
whole frame at (k + 0.5)·Δt; frame k spans [k·Δt, (k + 1)·Δt).

*Sparks*: the temporal profile at the peak pixel is fitted (least squares) by 0 before an onset
t0, a linear rise to A over r ms, then A·exp(−(t − t0 − r)/τ), so the peak may fall between two
frames. With two or more samples on the rise the fit is unique; at 6.8 ms per frame a spark's
5-15 ms rise often holds one sample, and then onset, peak time and amplitude trade off along a
valley of equally good fits. A weak prior (``SPARK_PEAK_PRIOR``) pulls the peak time towards the
vertex of the parabola through the largest sample and its neighbours, which picks one point of
the valley continuously in the data: a tiny change of F0 no longer moves the fit along it.
The spatial profile at the frame nearest the fitted peak is fitted by a 2-D Gaussian (axes along
y and x, baseline 0) on the pixels within about 0.75 FWHM of the peak (the core: sparks are
sharper-peaked than a Gaussian, and their flanks would widen the fit); the smoothing is then
undone exactly for a Gaussian: FWHM² − (2.355·σ_smooth)², and A scaled up accordingly, down to
events as narrow as the smoothing (0.94 µm); narrower ones are reported at that resolution limit;
A is read at the peak pixel, not at the fitted centre: a spark centred on a pixel's corner
comes out 3 % low at 0.2 µm pixels, 8 % at 0.5 µm (scaling A to the fitted centre, or by the
fitted height, removed that but raised the median amplitude of faint sparks at the default
noise from +13 % to +20 %, benchmarks/results/measure.md). Where a spark's rise was not
recorded (the movie's first frame or another event comes before it), the fit assumes a rise of
about a frame: its time to peak is NaN and its FDHM is good to about half a rise.
A spark on a raised background (the decay of a wave that passed its site: its ΔF/F0 is still
0.2-0.9 there and falling; or an F0 that is off there) is measured above it
(:func:`_local_background`): the background's course is a plane fitted to the ring of pixels
more than ``exclude_um`` from the spark and from other sparks and puffs (a wave's voxels count)
in each frame of its box before and after it, carried across its frames by a parabola in time;
its level at each pixel is the pixel's own mean before the spark (a wave's decay has the same
course everywhere). It is subtracted from the box only where the ring before the spark stands
above 0 by more than 4 standard errors and 10 % of the spark's peak: the ring of an isolated
spark holds some of its own flanks once it has begun. On the simulator's sparks on a wave's
decay (median errors, default / low noise, 0.2 µm / 6.8 ms) the amplitude read +51 % / +82 %,
the FWHM +142 % / +127 % (2-5 × the spark's extent), FDHM +104 % / +103 %, τ +110 % / +262 %;
now +18 % / +7 %, +1 % / +4 %, −2 % / +3 %, −8 % / +8 % (the isolated sparks of those movies:
+3 % / +3 %, +12 % / +2 %, +9 % / +5 %, −2 % / +9 %;
``python benchmarks/bench_measure.py --wave-decay 10``).
A puff on a wave's decay is measured above it the same way, its background read on ΔF/F0 not
yet smoothed in time (the 20 ms smoothing carries a puff's rise into the frames before it) and
then smoothed as each of its arrays, only where the ring before the puff also stands above 0
and falls (a decay; a faint puff's own rise reaching its ring, or an F0 that is off, is left
alone): on the simulator's puffs on a wave's decay the amplitude read +77 % / +79 % (default /
low noise), the FWHM +69 % / +126 %, τ +160 % / +137 %, FDHM empty for 76 % / 94 %; now +3 % /
−16 %, −1 % / +2 %, +21 % / −4 %, 29 % / 53 % (isolated puffs: unchanged; ``--wave-decay 20``).
*Puffs*: Gaussian spatial fits as sparks; temporal measures read off the smoothed profile
(half-maximum crossings, interpolated linearly; the decay on the profile smoothed only by
``smooth_sigma_ms``). The 20 ms smoothing (``puff_sigma_ms``) that steadies a flickering
plateau also blurs a brief puff: amplitude, FDHM and time to peak are good for puffs whose FDHM
is several times 47 ms (2.355 σ), and not for shorter ones (noise-free, rise/τ 30/60 ms: FDHM
90 ms for 57, amplitude 0.69 of the true one; 100/300 ms: FDHM +12 %, amplitude −8 %).
*Waves*: amplitude, widths, speed and direction read off the binned, smoothed ΔF/F0; FDHM, time
to peak and τ are the medians of the spark fits of the course at up to 9 of the wave's pixels
(the centres of its brightest bins, spread along it), averaged with their neighbours as a
spark's smoothing does once each neighbour's course is moved in time by the front's delay to it
(the fitted front of the speed), neither binned nor smoothed in time (the binned, smoothed course
spread the rise by the time the front takes to cross a bin and by the smoothing: time to peak
+70-80 %; smoothed in space without the alignment, +90 / +27 / +6 % at 50 / 100 / 200 µm/s);
read off the binned course where no fit works. Each fit is held to the sparks' rules on the
rise (30 % seen before the peak, no onset before the wave reached the pixel by more than its
labelling explains), and the time to peak is NaN unless at least ``WAVE_RISE_MIN_PIXELS`` (3)
of them recorded the rise: waves that began before the movie or rose on another's decay read
−28 % to +351 % of their rise on our simulator, 5 of 9 over +100 %.

Columns of the table (one row per event id, sorted by id):

=================  ==============================================================================
id                 the instance id in ``event_label``
class              'spark', 'wave' or 'puff': the most common event class among its voxels
confidence         mean over its voxels of 1 − p(background) (NaN without probabilities)
start_ms, end_ms   first frame · Δt and (last frame + 1) · Δt of its voxels
duration_ms        end_ms − start_ms
peak_ms            time of the peak: t0 + r of the spark fit; the peak sample otherwise
peak_y_um/_x_um    where it peaks: the Gaussian centre (sparks, puffs), else the peak pixel
                   refined by a parabola through its neighbours
centroid_y/x_um    centre of its voxels weighted by smoothed ΔF/F0 (≥ 0)
extent_y/x_um      size of its bounding box (pixels × pixel size)
amplitude_dff      peak ΔF/F0: A of the spark fit; the maximum of the smoothed profile otherwise
                   (both corrected for the spatial smoothing for sparks and puffs)
fwhm_um            full width at half maximum along x at the peak time: 2.355·σx of the Gaussian
                   fit (sparks, puffs; NaN if the fit fails, e.g. the centre lies outside the
                   field, or gives over ``MAX_WIDTH_PER_EXTENT`` × the event's largest extent:
                   another event's signal; near the field's edge the Gaussian is fitted as the
                   smoothing saw it there, the edge pixels extended outward); for waves the
                   half-maximum crossings of the x profile
fwhm_y_um          the same along y
fdhm_ms            full duration at half maximum of the temporal profile at the peak pixel:
                   r/2 + τ·ln 2 of the spark fit (sparks, waves); else the contiguous span
                   around the peak above half the amplitude; NaN (and ``decay_tau_ms``) for a
                   spark whose profile the movie's end cuts before it falls to half its peak
time_to_peak_ms    from 10 % of the amplitude on the rise (``rise_fraction``) to the peak: 0.9·r
                   of the spark fit (sparks, waves); else from the crossing of 10 % before the peak; NaN where
                   the rise was not recorded (the movie's start or another event comes before
                   the profile falls below 30 % of the peak; a wave's, where fewer than 3 of its
                   fitted pixels recorded it, each held to the sparks' rules), and for a spark whose fitted rise
                   begins before its first frame by more than its labelling explains (2 frames,
                   and 0.35 of its fitted rise and a frame: ``EARLY_ONSET_FRAMES``) and does so
                   again fitted from the frame before it (an earlier event's decay, or noise);
                   an unfitted spark's linear rise through its 10 % crossing is held to the same
                   rule. Puffs are never fitted nor held to that rule (NaN where the profile does
                   not fall below 10 % within ``margin_ms`` before the event's frames at its peak
                   pixel, or before another event or the movie's start); their peak is the maximum of
                   the profile smoothed by ``puff_sigma_ms``, which on a flat or flickering
                   plateau can lie anywhere on it (analytic puffs: a 300 ms plateau reads 248 ms
                   for a continuous course's 298, a 60 ms puff 68 for 58), and the smoothing
                   puts the 10 % crossing a median 23 ms before the event's first frame, so the
                   rule emptied right values (benchmarks/results/measure.md, session 41)
decay_tau_ms       τ of the spark fit (sparks, waves); else a ΔF/F0-weighted log-linear fit of a·exp(−t/τ) to the
                   final decay, from the first sample below 85 % of the last local maximum
                   above half the amplitude (``DECAY_START_FRACTION``: past the corner that
                   smoothing rounds) down to ``decay_floor_fraction`` of it (stopping at another
                   event or a renewed rise); NaN with fewer than 3 points or no decay
speed_um_per_s     waves: the arrival time (half-maximum crossing on the rise of each
                   ``wave_bin_um`` square) fitted by a front spreading from a point p0,
                   t = t0 + |p − p0| / v (robust least squares; a far p0 is a plane front)
direction_deg      waves: mean propagation direction, the angle of the mean unit vector from p0
                   to the wave's squares (0 = +x, 90 = +y, i.e. down the image rows; ±180 = −x);
                   NaN when the wave spreads both ways (mean vector shorter than 0.5)
snr                sparks and puffs: signal-to-noise ratio, the smoothed ΔF/F0 at the peak
                   (spatial σ ``smooth_sigma_um``; for puffs also ``puff_sigma_ms`` in time) over
                   the noise SD of that smoothed ΔF/F0 around the event (:func:`_noise_sd`: its
                   box's pixels farther than ``exclude_um`` from any event, all its frames);
                   NaN for waves and where too few quiet pixels are left
=================  ==============================================================================

Accuracy against simulated truth (``tests/test_measure.py``, ``benchmarks/results/measure.md``):
on isolated sparks of low-noise movies the median errors are amplitude 0 % against the
continuous course's peak (+8 % against the largest noise-free sample, which 6.8 ms frames
place a median 10 % below the peak), FWHM +6-8 %, FDHM +5 %, τ +10 % (the simulator's sparks
are sharper-peaked than a Gaussian and widen as they decay); puff amplitude and FWHM within
3 % (of our simulator's and clean synthetic puffs; the physical simulator's flickering puffs as
the model labels them read −27 % / +31 %: README, "Puffs and waves"); wave speed within 2 %
(also at the default noise; a wave's amplitude, the largest of its bins, reads +3-18 % with
noise). Noise biases the amplitude of faint
events upwards (the peak is where noise adds to the signal: +2-5 % against the continuous peak
at 3-40 photons per pixel) and spreads FWHM and τ by 15-25 %; time to peak is good to about a
third of a frame where ``snr`` is 8 or more; below, the rise reads long (+3.8 ms at ``snr``
6-8, +8-10 ms below 6): a course that is 0 before its onset takes up the noise's positive
excursions before it, and cannot take up the negative ones. Waves: FDHM −2 % / +0 %, time to
peak +5 % / +9 % of the onset-to-peak time, τ −1 % / +1 % (low / default noise; before, off the
binned course: +6 % / −16 %, +83 % / +68 %, 0 % / +6 %; FDHM and τ NaN for the 14 % whose
decay the movie's end cuts at every pixel used); time to peak −7 % / −4 %, |error| 7 % / 9 %,
NaN for the 21 % / 18 % whose rise the movie holds at fewer than 3 pixels (session 42). With
session 42's F0 (24 movies per noise level, ``bench_measure.py --skip-speed --accuracy-movies
24``): waves' amplitude +1 % / +8 %, FDHM −3 % / −2 %, time to peak −7 % / −3 % (NaN 21 % /
14 %), τ −2 % / −1 %, speed 0 %. Puff τ and time to peak are descriptive only. On the physically based simulator
(``benchmarks/physical_sim.py``), whose sparks have a round top, the spark fit's sharp corner
sits above the top: amplitudes +13 % at every SNR, FDHM −6 %.

Frequency (:func:`event_frequency`)
-----------------------------------
Events per 100 µm of cell length per s, the line-scan convention, with the length taken as the
cell's extent along x (the columns that hold any pixel of ``cell_mask``, or the field's width),
and events per 1000 µm² per s (the area of ``cell_mask`` or of the field). Detection finds the
cell in the movie's resting image (:func:`resting_image`, :func:`cell_mask`). A line scan samples
only the sparks within about a FWHM of its line, an x-y frame the whole width of the cell in view,
so x-y frequencies per 100 µm are higher than line-scan ones by roughly cell width / FWHM; the
per-area rate is the one to compare between x-y movies.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, optimize

from .classes import CLASS_NAMES, CODE_NAMES, EVENT_CLASSES, IGNORE, PUFF, WAVE
from .darklevel import (STRIDE, DarkLevel, dark_level_from_moments, estimate_dark_level, flag_uncertain,
                        noise_moments, reference_half, significant, sum_moments, with_error)
from .errors import CasparksError, reject_unknown_keys, is_number

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "FREQUENCY_COLUMNS",
    "LATER_COLUMNS",
    "MeasureConfig",
    "MeasureConfigError",
    "LazyDff",
    "dff_movie",
    "empty_table",
    "event_frequency",
    "f0_estimate",
    "measure_events",
    "movie_dark_level",
]

#: Columns of :func:`measure_events`' table, in order.
COLUMNS = [
    "id", "class", "confidence", "start_ms", "peak_ms", "end_ms", "duration_ms", "peak_y_um", "peak_x_um",
    "centroid_y_um", "centroid_x_um", "extent_y_um", "extent_x_um", "amplitude_dff", "fwhm_um", "fwhm_y_um",
    "fdhm_ms", "time_to_peak_ms", "decay_tau_ms", "speed_um_per_s", "direction_deg", "snr",
]
#: Columns added to :data:`COLUMNS` after tables were first written: a table written before
#: lacks them, and reading it fills them with NaN (snr: 2026-12-06).
LATER_COLUMNS = ("snr",)
#: :func:`_noise_sd` needs at least this many quiet voxels around an event
_MIN_NOISE_VOXELS = 200
#: ... and reads its robust SD from about this many of them, evenly spaced
_NOISE_SAMPLE = 4096
#: Columns of :func:`event_frequency`'s table.
FREQUENCY_COLUMNS = ["class", "count", "length_um", "area_um2", "duration_s", "per_100um_per_s", "per_1000um2_per_s"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: The 2-D Gaussian fit uses pixels within this many FWHM (estimated) of the peak.
_FIT_REACH = 0.75
#: Bins in which events cover more than this fraction of the bright field do not set F0's time course.
_BUSY_FRACTION = 0.25
#: g(t)'s trend is continued beyond its last usable bins only from this many bins at least ...
_TREND_MIN_BINS = 4
#: ... and where its slope lies more than this many standard errors from 0 (else g stays level)
_TREND_MIN_SE = 3.0
#: A pixel with no bin outside the events borrows F0 (the normalised convolution, wherever the
#: weight of the known pixels it reaches is 1e-3: 3.2 σ of ``f0_smooth_um`` from a lone one) only
#: from known pixels whose B is at least this fraction of the pixel's own 10th percentile over the
#: bins (to within a factor 2: a few levels). Borrowing from every known pixel, edge pixels of a
#: cell under waves took the F0 of dark pixels 0.4-0.6 µm away outside it, whose noise read −3
#: ADU: F0 −104 % of the truth; borrowing within 1.5 σ only, pixels 2-3 px inside a block without
#: bins read their 10th percentile, 14-28 % low; with a threshold of the whole field's (a quarter
#: of its 90th percentile), a dim cell beside one 5× brighter borrowed from the dark outside
#: again, −90 % (benchmarks/results/measure.md, session 42)
_BORROW_FROM_FRACTION = 0.5


def _borrowed_from_peers(smooth: np.ndarray, image: np.ndarray, known: np.ndarray, unknown: np.ndarray,
                         low: np.ndarray, sigma: float) -> np.ndarray:
    """``smooth`` where each ``unknown`` pixel (no usable bin; ``low`` its 10th percentile over
    the bins) takes the normalised convolution of the known pixels at least
    :data:`_BORROW_FROM_FRACTION` of its own ``low`` bright, quantised to powers of 2 (one
    convolution per level): a cell's edge never takes the dark outside, a dark pixel still
    borrows from all, whatever else the field holds."""
    need = np.maximum(_BORROW_FROM_FRACTION * low, 0.0)
    level = np.zeros_like(need)
    positive = need > 0
    level[positive] = 2.0 ** np.floor(np.log2(need[positive]))
    borrowed = smooth[unknown]
    for value in np.unique(level[positive]):
        lent = _normalised_smooth(image, known & (image >= value), sigma)[unknown]
        borrowed = np.where(level == value, lent, borrowed)
    out = smooth.copy()
    out[unknown] = borrowed
    return out
#: a wave's front fit is kept where the arrival times it predicts spread over at least this
#: fraction of the times observed (10th to 90th percentile): else no speed (not one source)
MIN_FRONT_SPREAD = 0.25
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
        offset_adu: detector dark level subtracted before ΔF/F0 (ADU); "auto" (default): read
            from the movie's photon noise outside events (:mod:`casparks.darklevel`; 0 where the
            noise allows no estimate).
        f0_bin_ms: frames are averaged in bins of this length before the baseline median.
        f0_window_ms: running-mean window of the baseline's global time course g(t).
        f0_smooth_um: Gaussian σ of the spatial smoothing of the resting image B.
        f0_clip_sigma: bins this many robust SDs above the first baseline are dropped (0: off).
        exclude_um: spatial dilation of the event mask for the baseline.
        exclude_before_ms: temporal dilation before each event.
        exclude_after_ms, exclude_after_factor: after each run of event voxels at a pixel, the
            next max(exclude_after_ms, exclude_after_factor × the run's length) are left out too
            (a decay lasts longer after a longer spark or wave; after puffs and ignore voxels,
            whose length is not their decay's, exclude_after_ms only).
        smooth_sigma_um: Gaussian σ of the spatial smoothing of ΔF/F0 before measuring.
        smooth_sigma_ms: temporal σ of the smoothing for waves.
        puff_sigma_ms: temporal σ of the smoothing for puffs (long events: noise matters more
            than sharpness). Sparks are fitted without temporal smoothing.
        locate_sigma_um, locate_sigma_ms: smoothing of the search for the peak pixel.
        margin_um, margin_ms: padding of each event's bounding box for its profiles.
        rise_fraction: time to peak starts where the rise crosses this fraction of the amplitude.
        decay_floor_fraction: the decay fit stops below this fraction of its starting value.
        wave_bin_um: waves are measured on ΔF/F0 averaged in squares of this size.
        raster_scan: rows of a frame are acquired one after another (point-scanning confocal).
    """

    offset_adu: float | str = "auto"
    f0_bin_ms: float = 30.0
    f0_window_ms: float = 500.0
    f0_smooth_um: float = 0.2
    f0_clip_sigma: float = 3.0
    exclude_um: float = 1.0
    exclude_before_ms: float = 20.0
    exclude_after_ms: float = 100.0
    exclude_after_factor: float = 2.0
    smooth_sigma_um: float = 0.4
    smooth_sigma_ms: float = 6.8
    puff_sigma_ms: float = 20.0
    locate_sigma_um: float = 0.4
    locate_sigma_ms: float = 6.8
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
        elif not is_number(self.offset_adu):
            raise MeasureConfigError(f"offset_adu must be a number or 'auto', got {self.offset_adu!r}",
                                     fix="give the detector's dark level in ADU, 0, or auto")
        # below 0: signed data (an int16 movie reads -122, and auto reads it); detection refuses it
        # for a movie that is never negative (casparks.detection._check_offset)
        if not isinstance(self.raster_scan, (bool, np.bool_)):
            raise MeasureConfigError(f"raster_scan must be true or false, got {self.raster_scan!r}",
                                     fix="give a boolean")
        positive = ("f0_bin_ms", "f0_window_ms", "wave_bin_um")
        fractions = ("rise_fraction", "decay_floor_fraction")
        for f in fields(self):
            if f.name in ("offset_adu", "raster_scan"):
                continue
            value = getattr(self, f.name)
            ok = is_number(value) and (value > 0 if f.name in positive else value >= 0)
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
    def from_dict(cls, values: Mapping[str, Any]) -> MeasureConfig:
        """Build from a dict; unknown keys are an error naming the known ones."""
        reject_unknown_keys({f.name for f in fields(cls)}, values, "measure option", MeasureConfigError)
        return cls(**dict(values))




# ----------------------------------------------------------------------------------------------
# baseline


@dataclass(frozen=True)
class _Baseline:
    """F0(t, y, x) = image[y, x] · course[t], above ``offset``."""

    image: np.ndarray  # (Y, X) float32
    course: np.ndarray  # (T,) float32
    offset: float
    floor: float  # smallest F0 used as a divisor
    dark: DarkLevel | None = None  # how ``offset`` was estimated (offset_adu "auto")

    def f0(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        f0 = self.image[box[1], box[2]][None] * self.course[box[0], None, None]
        return np.maximum(f0, np.float32(self.floor))


#: classes after whose voxels F0 leaves out only ``exclude_after_ms``, not ``exclude_after_factor``
#: × their length at a pixel: a puff lasts as long as its release, and its decay (τ 25-60 ms) ends
#: within that. With the long tail, a site of two 0.3-0.4 s puffs in a 2 s movie had no bin left,
#: and its F0 was filled 16 % low (benchmarks/results/measure.md, session 42). Ignore voxels get
#: the short tail too within ``exclude_um`` and a bin of an event (:func:`_short_tail_ignore`: the
#: shell around an event's mask, as long as the event there; a wave's own long tail covers its
#: shell), and keep the long one elsewhere: ignore also marks uncertain events, wave-like ones with long decays
#: among them (a lone 700 ms ignore event with the short tail: F0 +5.2 % beside it, +0.4 % with
#: the long one)
SHORT_TAIL_CLASSES = (PUFF,)


def _add_tail_bins(tails: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, excluded: np.ndarray,
                   classes: np.ndarray) -> None:
    """Mark a frame of each of the first ``n`` bins in ``tails`` = (bins of voxels with a long tail:
    events of classes other than puffs and ignore; ignore voxels; puff voxels)."""
    lasting, ignore, puff = tails
    is_ignore, is_puff = classes == IGNORE, np.isin(classes, SHORT_TAIL_CLASSES)
    lasting[:n] |= excluded & ~is_ignore & ~is_puff
    ignore[:n] |= excluded & is_ignore
    puff[:n] |= is_puff


def _short_tail_ignore(ignore: np.ndarray, events: np.ndarray, reach_px: int) -> np.ndarray:
    """The ``ignore`` bins within one bin and ``reach_px`` pixels (``exclude_um``) of ``events``
    bins (any event class): the shell around an event's mask, which lasts as long as the event
    there, whose own tail (long after a spark or wave, dilated by ``exclude_um``) covers it. An
    uncertain event labelled ignore keeps its long tail beyond that reach, also where an event
    lies inside it (its whole 3-D component took the short tail: F0 beside a 700 ms ignore
    event with a spark in it read +5 %). Shifts of boolean bins: no labels, no int arrays."""
    if not (ignore.any() and events.any()):
        return np.zeros_like(ignore)
    near = _shift_or(events, 0, 1, 1)
    if reach_px > 0:
        near = _shift_or(_shift_or(near, 1, reach_px, reach_px), 2, reach_px, reach_px)
    near &= ignore
    return near


def _long_tail_bins(tails: tuple[np.ndarray, np.ndarray, np.ndarray], reach_px: int) -> np.ndarray:
    """The bins whose run at a pixel counts for the long tail, from :func:`_add_tail_bins`' three:
    events other than puffs, and ignore beyond ``reach_px`` of any event (:func:`_short_tail_ignore`)."""
    lasting, ignore, puff = tails
    lasting |= ignore & ~_short_tail_ignore(ignore, lasting | puff, reach_px)
    return lasting


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


def _extend_after(mask: np.ndarray, minimum: int, factor: float, counted: np.ndarray | None = None) -> np.ndarray:
    """Extend every run of True along axis 0 (per pixel) by max(minimum, factor × its length),
    the length counted over the run's entries that are also True in ``counted`` (default: all)."""
    out = mask.copy()
    counted = mask if counted is None else counted
    before = np.zeros(mask.shape[1:], dtype=bool)
    run = np.zeros(mask.shape[1:], dtype=np.int32)
    left = np.zeros(mask.shape[1:], dtype=np.int32)
    for b in range(mask.shape[0]):
        now = mask[b]
        ended = ~now & before
        if ended.any():
            left = np.where(ended, np.maximum(minimum, np.ceil(factor * run)).astype(np.int32), left)
        run = np.where(now, run + counted[b], 0)
        before = now
        tail = ~now & (left > 0)
        out[b] |= tail
        left = np.where(tail, left - 1, left)
    return out


def _running_line(values: np.ndarray, ok: np.ndarray, window: int) -> np.ndarray:
    """Local straight-line fit over ``window`` samples (those where ``ok``), evaluated at each
    usable sample: a running mean that keeps linear trends. Gaps between usable samples (a
    wave's bins) are bridged by a straight line between the fits on either side, and beyond
    the first and last usable samples the exponential trend of the ``window`` usable samples
    nearest them continues where it is significant (a bleach, :func:`_log_trend`): a local line
    evaluated in a gap extrapolates the slope of the few noisy samples at its edge (a course of
    0.98 fell to 0.54 and rose to 0.95 within 80 ms where a wave ran to the movie's end, and
    doubled the wave's ΔF/F0), and the whole movie's trend is too steep at the end of an
    exponential bleach (0.80 of F0 where 36 % of the light was left)."""
    x = np.arange(values.size, dtype=float)
    w = ok.astype(float)
    y = np.where(ok, values, 0.0)
    # a window too short to hold two usable samples widens until it does
    window = max(window, 3)
    sums = [ndimage.uniform_filter1d(a, window, mode="constant", cval=0.0) for a in (w, w * x, w * x * x, y, y * x)]
    s0, s1, s2, sy, sxy = sums
    det = s0 * s2 - s1 * s1
    good = det > 1e-9 * np.maximum(s0, 1e-12) ** 2
    slope = np.where(good, (s0 * sxy - s1 * sy) / np.where(good, det, 1.0), 0.0)
    mean_x = np.where(s0 > 0, s1 / np.maximum(s0, 1e-12), x)
    mean_y = np.where(s0 > 0, sy / np.maximum(s0, 1e-12), np.nan)
    out = mean_y + slope * (x - mean_x)
    missing = ~(np.isfinite(out) & ok)
    if missing.any():  # gaps, the ends, and samples with no usable one within the window
        known = np.flatnonzero(~missing)
        if known.size == 0:
            return np.ones_like(values, dtype=float)
        # inside: interpolate between fitted values; beyond the ends: the trend of the nearest samples
        out[missing] = np.interp(x[missing], x[known], out[known])
        usable = np.flatnonzero(ok)
        first, last = known[0], known[-1]
        out[:first] = out[first] * np.exp(_log_trend(x, values, usable[:window]) * (x[:first] - first))
        out[last + 1:] = out[last] * np.exp(_log_trend(x, values, usable[-window:]) * (x[last + 1:] - last))
    return out


def _log_trend(x: np.ndarray, values: np.ndarray, at: np.ndarray) -> float:
    """Slope of the straight line through log ``values`` at the indices ``at``: a course continued
    by it is exponential, as a bleach is. 0 unless it is significant: at least
    :data:`_TREND_MIN_BINS` values, all above 0, and a slope more than :data:`_TREND_MIN_SE`
    standard errors from 0 (the slope of two bins 27 ms apart, the only ones that set the course
    of a movie under waves, carried over its 2 s, read F0 −12 % at its start and +13 % at its end;
    keeping only trends of bins that span ``f0_window_ms`` dropped a bleach's trend read from
    fewer, and F0 read +66 % at the end of a movie bleaching with τ 4 s)."""
    if at.size < _TREND_MIN_BINS or not np.all(values[at] > 0):
        return 0.0
    xs, ys = x[at], np.log(values[at])
    slope, intercept = np.polyfit(xs, ys, 1)
    sxx = float(np.sum((xs - xs.mean()) ** 2))
    se = math.sqrt(float(np.sum((ys - slope * xs - intercept) ** 2)) / (at.size - 2) / sxx)
    return float(slope) if abs(slope) > _TREND_MIN_SE * se else 0.0


def _sorted_median(sorted_values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median per column of values sorted along axis 0 whose first ``count`` entries are valid."""
    lo = np.clip((count - 1) // 2, 0, None)[None]
    hi = np.clip(count // 2, 0, sorted_values.shape[0] - 1)[None]
    lo = np.minimum(lo, sorted_values.shape[0] - 1)
    med = 0.5 * (np.take_along_axis(sorted_values, lo, 0)[0] + np.take_along_axis(sorted_values, hi, 0)[0])
    return np.where(count > 0, med, np.nan).astype(np.float32)


def _normalised_smooth(image: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` at ``known`` pixels smoothed by a Gaussian of σ ``sigma`` px, normalised by the
    weight of the known pixels; NaN where that weight is below 1e-3 (none within about 3 σ)."""
    num = ndimage.gaussian_filter(np.where(known, image, 0).astype(np.float32), sigma, mode="nearest")
    den = ndimage.gaussian_filter(known.astype(np.float32), sigma, mode="nearest")
    return np.where(den > 1e-3, num / np.maximum(den, 1e-12), np.nan)


def _baseline(data: np.ndarray, excluded: np.ndarray, pixel_size_um: float, frame_interval_ms: float,
              config: MeasureConfig, name: str | None = None, warn: bool = True,
              class_label: np.ndarray | None = None) -> _Baseline:
    """The factorised baseline of a raw T×Y×X movie with ``excluded`` voxels (events) left out
    (``name``: the movie's, for the warnings about its dark level; ``warn`` False: the caller
    warns once it knows whether the level is also uncertain, :func:`warn_dark_level`;
    ``class_label``: the movie's class codes, where known: after voxels of
    :data:`SHORT_TAIL_CLASSES` and the ignore voxels within ``exclude_um`` of an event only
    ``exclude_after_ms`` is left out)."""
    T, H, W = data.shape
    nb = max(1, round(config.f0_bin_ms / frame_interval_ms))
    starts = np.arange(0, T, nb)
    counts = np.diff(np.append(starts, T)).astype(np.float32)
    means = np.zeros((len(starts), H, W), dtype=np.float32)
    touched = np.zeros((len(starts), H, W), dtype=bool)
    tails = None if class_label is None else tuple(np.zeros_like(touched) for _ in range(3))
    for k in range(nb):  # bin sums from strided frames: no float copy of the whole movie
        n = len(range(k, T, nb))
        means[:n] += data[k::nb]
        touched[:n] |= excluded[k::nb]
        if tails is not None:
            _add_tail_bins(tails, n, excluded[k::nb], class_label[k::nb])
    lasting = None  # bins of events with long tails
    if tails is not None:
        lasting = _long_tail_bins(tails, round(config.exclude_um / pixel_size_um))
        del tails
    means /= counts[:, None, None]
    bin_ms = nb * frame_interval_ms
    after_bins = math.ceil(config.exclude_after_ms / bin_ms)
    raw_touched = touched
    touched = _dilated_bins(touched, nb, pixel_size_um, frame_interval_ms, config, lasting)
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

    dark, offset = None, config.offset_adu
    if offset == "auto":
        dark = estimate_dark_level(data, _FrameMask(touched, nb))  # events and their surroundings left out
        if warn:
            _warn_dark_level(dark, name)
        offset = dark.adu if dark.found else 0.0
    offset = float(offset)
    means -= np.float32(offset)

    _, image, kept = robust(means, valid)
    # global time course: median over the bright half of the field, outside events, of movie / image
    finite = np.isfinite(image)
    course_bins = np.ones(n_bins)
    if finite.any():
        step = max(1, round(math.sqrt(finite.sum() / 4096)))  # ~4000 pixels are plenty
        sub_image = image[::step, ::step]
        bright = np.isfinite(sub_image) & (sub_image >= np.nanmedian(image)) & (sub_image > 0)
        use = kept[:, ::step, ::step] & bright[None]
        ratio = np.where(use, means[:, ::step, ::step] / np.where(bright, sub_image, 1)[None], np.inf)
        ratio = ratio.reshape(n_bins, -1)
        ratio.sort(axis=1)
        n_use = use.reshape(n_bins, -1).sum(axis=1)
        # while an event covers much of the field (a wave) and for a while after it, the whole
        # field may be brighter: such bins do not set the time course, which is bridged instead
        busy = raw_touched[:, ::step, ::step][:, bright].mean(axis=1) > _BUSY_FRACTION if bright.any() \
            else np.zeros(n_bins, bool)
        busy = _extend_after(busy[:, None], after_bins, config.exclude_after_factor)[:, 0]
        has = (n_use >= 10) & ~busy
        if not has.any():
            has = n_use >= 10
        if has.any():
            course_bins[has] = _sorted_median(ratio.T, n_use)[has]
            course_bins = _running_line(course_bins, has, max(1, round(config.f0_window_ms / bin_ms)))
            course_bins /= float(np.mean(course_bins))
            _, image, _ = robust(means / course_bins[:, None, None].astype(np.float32), valid)
    # spatial smoothing by normalised convolution; pixels without any usable bin borrow
    known = np.isfinite(image)
    unknown = ~known
    low = None  # the 10th percentile of bins / g at the pixels without a usable bin
    if unknown.any():
        low = np.percentile(means[:, unknown] / course_bins[:, None].astype(np.float32), 10, axis=0)
    sigma = config.f0_smooth_um / pixel_size_um
    if sigma > 0:
        smooth = _normalised_smooth(image, known, sigma)
        if low is not None and known.any():
            smooth = _borrowed_from_peers(smooth, image, known, unknown, low, sigma)
    else:
        smooth = np.where(known, image, np.nan)
    missing = ~np.isfinite(smooth)
    if missing.any():
        # no bin outside the events (and their exclusion before and after) near these pixels: a
        # short movie, or events over most of it: their own 10th percentile, which noise puts low
        if missing.mean() >= 0.01:
            log.warning("%s%.0f %% of the field has no frames outside its events (%d frames of %g ms; events "
                        "exclude %g ms before and %g ms after them): F0 there is read from frames that hold "
                        "events and may read low (by 10-30 %% in noisy movies), ΔF/F0 there high",
                        f"{name}: " if name else "", 100.0 * missing.mean(), T, frame_interval_ms,
                        config.exclude_before_ms, config.exclude_after_ms)
        fill = np.full(image.shape, np.nan, np.float32)
        fill[unknown] = low
        smooth = np.where(missing, fill, smooth)
    centres = (starts + 0.5 * counts - 0.5)
    course = np.interp(np.arange(T), centres, course_bins).astype(np.float32)
    image_out = smooth.astype(np.float32)
    top = float(np.percentile(image_out, 90)) if image_out.size else 1.0
    floor = max(0.02 * top, 1e-6)
    return _Baseline(image_out, course, offset, floor, dark)


def _dilated_bins(touched: np.ndarray, nb: int, pixel_size_um: float, frame_interval_ms: float,
                  config: MeasureConfig, lasting: np.ndarray | None = None) -> np.ndarray:
    """The per-bin event mask widened as the baseline leaves events out: ``exclude_um`` in
    space, ``exclude_before_ms`` before, and after each run max(``exclude_after_ms``,
    ``exclude_after_factor`` × its length), counting only its bins in ``lasting`` where given
    (those of classes not in :data:`SHORT_TAIL_CLASSES`: a spark's or a wave's label at a pixel
    ends on its decay, which lasts longer after a longer event)."""
    bin_ms = nb * frame_interval_ms
    touched = _extend_after(touched, math.ceil(config.exclude_after_ms / bin_ms), config.exclude_after_factor,
                            lasting)
    touched = _shift_or(touched, 0, math.ceil(config.exclude_before_ms / bin_ms), 0)
    r = round(config.exclude_um / pixel_size_um)
    if r > 0:
        touched = _shift_or(_shift_or(touched, 1, r, r), 2, r, r)
    return touched


#: how to give the dark level, in the CLI and where the napari plugin runs (no command-line flags there)
OFFSET_HOW = "casparks detect --offset ADU; napari: the Detect widget's dark level box; Python: " \
             "casparks.DetectSettings(measure={'offset_adu': ADU})"


def _warn_dark_level(dark: DarkLevel, name: str | None) -> DarkLevel:
    """``dark``, with a warning where it could not be read, is unconfirmed, or is uncertain."""
    movie = f"{name}: " if name else ""
    if not dark.found:
        log.warning("%sthe dark level could not be read from the movie's noise (%s): ΔF/F0 taken with "
                    "offset 0; give the detector's dark level (%s)", movie, dark.reason, OFFSET_HOW)
    elif dark.reason and dark.method != "floor":  # unconfirmed, own means, or uncertain
        log.warning("%sthe dark level read from the movie's noise, %s ADU, is %s; give the detector's "
                    "dark level if you know it (%s)", movie, with_error(dark.adu, dark.se_adu), dark.reason, OFFSET_HOW)
    return dark


def warn_dark_level(dark: DarkLevel, resting_adu: float, name: str | None) -> DarkLevel:
    """``dark`` flagged where uncertain (:func:`casparks.darklevel.flag_uncertain`), with one
    warning that gives every reason, for a level read without one: warned as it was read and again
    when flagged, a movie's level was told twice ("pooled by their own means", then "uncertain …;
    and … pooled by their own means")."""
    return _warn_dark_level(flag_uncertain(dark, resting_adu), name)


#: a movie whose events' median ΔF/F0 exceeds this has its F0 read far too low: sparks reach a few
#: ΔF/F0 at most (0.2-3 with fluo-4), waves and puffs less. Seen: a ΔF/F0 movie given as the
#: recording (median 918 256), and a dark level read 65 ADU high from a small movie's noise that a
#: missed wave skewed (36-87 for sparks of 0.7), both without a word
IMPLAUSIBLE_DFF0 = 10.0


def warn_implausible_amplitudes(events: pd.DataFrame, offset_adu: float, name: str | None) -> bool:
    """Warn (and say True) where the events' median ΔF/F0 is beyond any Ca²⁺ event's
    (:data:`IMPLAUSIBLE_DFF0`): F0, the resting light above the dark level ``offset_adu``, reads
    too low, so every amplitude and the report's ΔF/F0 are off by as much."""
    if "amplitude_dff" not in events or not len(events):
        return False
    amplitudes = pd.to_numeric(events["amplitude_dff"], errors="coerce").to_numpy(dtype=float)
    amplitudes = amplitudes[np.isfinite(amplitudes)]
    if not amplitudes.size or not np.median(amplitudes) > IMPLAUSIBLE_DFF0:
        return False
    movie = f"{name}: " if name else ""
    log.warning("%sthe events' median ΔF/F0 is %.3g, far above any spark's or wave's (a few at most): F0, the "
                "resting light above the dark level (%.4g ADU), reads too low. If the movie is processed already "
                "(ΔF/F0, F − F0, background-subtracted), give the raw recording; otherwise give the detector's "
                "dark level (%s)", movie, float(np.median(amplitudes)), offset_adu, OFFSET_HOW)
    return True


def movie_dark_level(movie: Any, class_label: np.ndarray, event_label: np.ndarray, pixel_size_um: float,
                     frame_interval_ms: float, parts: Sequence[tuple[int, int, int, int]],
                     config: MeasureConfig = MeasureConfig(), warn: bool = True) -> DarkLevel:
    """The dark level of a long movie, as :func:`measure_events` reads it with ``offset_adu="auto"``
    on the whole movie, from its ``parts`` (lo, start, stop, hi; the starts..stops tile the movie):
    the noise of frames start..stop outside the events, which are dilated as the baseline dilates
    them from the labels of frames lo..hi. Memory: one part's event mask, not the movie's.

    An event under way at a part's ``lo`` is read from its first frame, so that as much of its
    decay is left out as in the whole movie.
    Why: a movie detected in segments is measured segment by segment; one dark level keeps its
    amplitudes on one scale (and equal to the figures', which use one for the whole movie).
    """
    data = getattr(movie, "data", movie)
    n_frames = data.shape[0]
    nb = max(1, round(config.f0_bin_ms / frame_interval_ms))
    k = reference_half(n_frames)  # the whole movie's reference width
    reach = STRIDE * k
    moments = []
    for lo, start, stop, hi in parts:
        centre0, centre1 = max(start, reach), min(stop, n_frames - reach)  # the whole movie's centre frames in it
        if centre1 <= centre0:  # a core of a few frames at the movie's end: its frames have none
            continue
        lo_data, hi_data = centre0 - reach, centre1 + reach
        first = _runs_start(class_label, event_label, min(lo, lo_data))  # events that began before: whole
        first -= first % nb  # bins on the whole movie's grid of bins
        last = max(hi, hi_data)
        touched = np.zeros((-(-(last - first) // nb), *data.shape[1:]), dtype=bool)
        tails = tuple(np.zeros_like(touched) for _ in range(3))
        for j in range(nb):
            frames = slice(first + j, last, nb)
            n = len(range(*frames.indices(n_frames)))
            excluded = _excluded(class_label[frames], event_label[frames])
            touched[:n] |= excluded
            _add_tail_bins(tails, n, excluded, class_label[frames])
        lasting = _long_tail_bins(tails, round(config.exclude_um / pixel_size_um))
        touched = _dilated_bins(touched, nb, pixel_size_um, frame_interval_ms, config, lasting)
        mask = _Shifted(_FrameMask(touched, nb), lo_data - first)
        moments.append(noise_moments(data[lo_data:hi_data], mask, half=k, first_frame=lo_data, movie_frames=n_frames))
    # a movie too short for noise samples: read whole
    dark = dark_level_from_moments(sum_moments(moments)) if moments else estimate_dark_level(data)
    return _warn_dark_level(dark, getattr(movie, "name", None)) if warn else dark


def _runs_start(class_label: np.ndarray, event_label: np.ndarray, frame: int) -> int:
    """The first frame of the runs of event voxels that go on at ``frame`` (the earliest of its
    pixels'), read a frame at a time backwards."""
    active = _excluded(class_label[frame], event_label[frame]) if frame < len(event_label) else None
    while active is not None and frame > 0 and active.any():
        active &= _excluded(class_label[frame - 1], event_label[frame - 1])
        if not active.any():
            break
        frame -= 1
    return frame


class _Shifted:
    """A frame-sliceable mask read ``offset`` frames further on."""

    def __init__(self, mask: Any, offset: int):
        self.mask, self.offset = mask, offset

    def __getitem__(self, frames: slice) -> np.ndarray:
        return self.mask[slice(frames.start + self.offset, frames.stop + self.offset)]


class _FrameMask:
    """A T×Y×X view of a per-bin mask (``nb`` frames per bin): slicing frames gives each frame
    its bin's mask, so the baseline's dilated event mask serves voxel-wise without a full copy."""

    def __init__(self, bins: np.ndarray, frames_per_bin: int):
        self.bins, self.nb = bins, frames_per_bin

    def __getitem__(self, frames: slice) -> np.ndarray:
        start, stop, _ = frames.indices(self.bins.shape[0] * self.nb)
        return self.bins[np.arange(start, stop) // self.nb]


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
    if 0 in data.shape:
        raise CasparksError(f"the movie is empty (shape {data.shape})",
                            fix="pass a movie of at least one frame and pixel")
    return data


def _f0_left_out(data: np.ndarray, event_mask: np.ndarray | None, class_label: np.ndarray | None) -> np.ndarray:
    """The voxels F0 leaves out: ``event_mask``'s, and the event and ignore classes' of ``class_label``."""
    mask = np.zeros(data.shape, bool) if event_mask is None else np.asarray(event_mask, dtype=bool)
    _check_shape(mask, data.shape, "event_mask")
    if class_label is None:
        return mask
    _check_shape(np.asarray(class_label), data.shape, "class label")
    return _excluded(class_label, mask)


def f0_estimate(movie: np.ndarray, event_mask: np.ndarray | None, pixel_size_um: float, frame_interval_ms: float,
                config: MeasureConfig = MeasureConfig(), class_label: np.ndarray | None = None) -> np.ndarray:
    """Resting fluorescence F0 (T×Y×X float32) above the offset, robust to the events.

    ``event_mask`` (T×Y×X bool, or None) marks event voxels to leave out (it is dilated as the
    config says). ``class_label`` (optional, T×Y×X class codes) adds its event and ignore voxels
    and tells puffs from the rest: after a puff only ``exclude_after_ms`` is left out
    (:data:`SHORT_TAIL_CLASSES`; and after the ignore voxels around events), as
    :func:`measure_events` does. ΔF/F0 is ``(movie − offset − F0) / F0`` with ``offset =
    config.offset_adu`` (for ``offset_adu='auto'`` use :func:`dff_movie`, which knows the
    estimated offset).
    """
    data = _array(movie)
    mask = _f0_left_out(data, event_mask, class_label)
    base = _baseline(data, mask, pixel_size_um, frame_interval_ms, config, class_label=class_label)
    return base.f0((slice(None), slice(None), slice(None)))


def dff_movie(movie: np.ndarray, event_mask: np.ndarray | None, pixel_size_um: float, frame_interval_ms: float,
              config: MeasureConfig = MeasureConfig(), class_label: np.ndarray | None = None) -> np.ndarray:
    """ΔF/F0 of the whole movie (T×Y×X float32), with F0 from :func:`f0_estimate`'s method.

    Filled a block of frames at a time from a :class:`LazyDff`: one float32 copy of the movie
    at the peak, not F0 and temporaries of its size too.
    """
    lazy = LazyDff(movie, event_mask, pixel_size_um, frame_interval_ms, config, class_label)
    out = np.empty(lazy.shape, dtype=np.float32)
    block = max(1, (16 << 20) // max(1, out[0].nbytes))
    for start in range(0, out.shape[0], block):
        out[start : start + block] = lazy[start : start + block]
    return out


class LazyDff:
    """ΔF/F0 of a movie (:func:`dff_movie`'s values) computed only where it is read.

    Index it with three slices (``lazy[t0:t1, :, x0:x1]``; one slice means frames) or with
    three integer arrays of voxel coordinates; ``np.asarray(lazy)`` makes the whole movie. Holds
    the (memory-mapped) movie and F0's Y×X image and T course only, so figures of a long movie
    need no float copy of it.
    """

    def __init__(self, movie: Any, event_mask: np.ndarray | None, pixel_size_um: float, frame_interval_ms: float,
                 config: MeasureConfig = MeasureConfig(), class_label: np.ndarray | None = None):
        self.data = _array(movie)
        mask = _f0_left_out(self.data, event_mask, class_label)
        self._base = _baseline(self.data, mask, pixel_size_um, frame_interval_ms, config, getattr(movie, "name", None),
                               class_label=class_label)
        self.shape: tuple[int, int, int] = tuple(self.data.shape)  # type: ignore[assignment]
        self.ndim, self.dtype = 3, np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        base = self._base
        if all(isinstance(k, slice) for k in key):
            out = np.asarray(self.data[key], dtype=np.float32).copy()
            out -= np.float32(base.offset)
            out /= base.f0(key)
        else:
            t, y, x = (np.asarray(k) for k in key)
            f0 = np.maximum(base.image[y, x] * base.course[t], np.float32(base.floor))
            out = (np.asarray(self.data[t, y, x], dtype=np.float32) - np.float32(base.offset)) / f0
        out -= np.float32(1.0)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype, copy=False)


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


#: the decay fit (:func:`_decay_tau`) starts below this fraction of the last maximum. Analytic
#: puffs (plateau, then τ 20 / 30 / 60 / 100 ms, 6.8 ms frames) read +11 / +1 / 0 / 0 % against
#: +63 / +34 / +11 / +4 % from the sample after the maximum; the simulator's isolated puffs +9 %
#: against +46 % at low noise, −2 % against −8 % at the default noise, where the spread grows
#: (median absolute error 32 → 37 %: fewer points; benchmarks/results/measure.md, session 34).
#: 0.75 left +3 % at 20 ms but spread the noisy puffs' τ further (46 %)
DECAY_START_FRACTION = 0.85


def _decay_tau(values: np.ndarray, times: np.ndarray, i_peak: int, amplitude: float, floor_fraction: float) -> float:
    """τ (ms) of the final decay of a temporal profile (see the module docstring); NaN if none.

    The fit starts where the profile has fallen below :data:`DECAY_START_FRACTION` of its last
    maximum: a corner from a plateau into the decay is rounded by any smoothing (a Gaussian
    keeps an exponential's τ, but not the corner's), and its flattened samples, the heaviest in
    a ΔF/F0²-weighted fit, read τ long (+63 % for 20 ms puffs smoothed by 6.8 ms, fitted from
    the sample after the maximum). Where that leaves no fit (a flickering decay that rises again
    soon after), it starts at the sample after the maximum, as before.
    """
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
    top = float(values[start])
    start += 1  # the maximum sample may lie on the rise: the fit starts after it
    past = start
    while past < n and np.isfinite(values[past]) and values[past] > DECAY_START_FRACTION * top:
        past += 1
    tau = _fit_decay(values, times, past, top, floor_fraction * top)
    return tau if np.isfinite(tau) or past == start else _fit_decay(values, times, start, top, floor_fraction * top)


def _fit_decay(values: np.ndarray, times: np.ndarray, start: int, top: float, floor: float) -> float:
    """τ (ms) of a ΔF/F0²-weighted log-linear fit from ``start`` down to ``floor`` (stopping at
    another event or a renewed rise of 0.2 × ``top``); NaN with fewer than 3 points or no decay."""
    n = values.size
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


def _gaussian(x: np.ndarray, amplitude: float, centre: float, sigma: float) -> np.ndarray:
    return amplitude * np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _fit_gaussian(values: np.ndarray, coords: np.ndarray, i_peak: int, step: float) -> tuple[float, float]:
    """(FWHM, centre) of a Gaussian (baseline 0) fitted to a spatial profile; NaN if it fails.

    The fit uses the contiguous finite stretch around ``i_peak`` and must see both flanks: a
    profile that is still above half its peak at either end of that stretch (an event cut by the
    field's edge or by another event) gives NaN.
    """
    ok = np.isfinite(values)
    if not ok[i_peak]:
        return float("nan"), float("nan")
    lo, hi = i_peak, i_peak
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < values.size - 1 and ok[hi + 1]:
        hi += 1
    v, x = values[lo:hi + 1].astype(float), coords[lo:hi + 1].astype(float)
    top = float(values[i_peak])
    if v.size < 4 or top <= 0 or v[0] >= top / 2 or v[-1] >= top / 2:
        return float("nan"), float("nan")
    width = 0.5 * (x[-1] - x[0])
    half_width = _width(values, coords, i_peak, top / 2)
    guess = float(np.clip(half_width / FWHM_PER_SIGMA if np.isfinite(half_width) else width / 4, step, width))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (_, centre, sigma), _ = optimize.curve_fit(
                _gaussian, x, v, p0=[top, float(coords[i_peak]), guess],
                bounds=([0.0, x[0], 0.25 * step], [10.0 * top, x[-1], 2.0 * width]), max_nfev=200)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return float("nan"), float("nan")
    if not (x[0] < centre < x[-1]) or sigma >= 2.0 * width * 0.999:
        return float("nan"), float("nan")
    return float(FWHM_PER_SIGMA * sigma), float(centre)


def _gaussian_2d(coords: tuple[np.ndarray, np.ndarray], amplitude: float, cy: float, cx: float, log_sy: float,
                 log_sx: float) -> np.ndarray:
    y, x = coords
    return amplitude * np.exp(-0.5 * (((y - cy) / np.exp(log_sy)) ** 2 + ((x - cx) / np.exp(log_sx)) ** 2))


def _gaussian_2d_jac(coords: tuple[np.ndarray, np.ndarray], amplitude: float, cy: float, cx: float, log_sy: float,
                     log_sx: float) -> np.ndarray:
    y, x = coords
    sy, sx = np.exp(log_sy), np.exp(log_sx)
    uy, ux = (y - cy) / sy, (x - cx) / sx
    g = np.exp(-0.5 * (uy**2 + ux**2))
    a = amplitude * g
    return np.column_stack([g, a * uy / sy, a * ux / sx, a * uy**2, a * ux**2])


def _fit_gaussian_2d(frame: np.ndarray, y: np.ndarray, x: np.ndarray, yi: int, xi: int, dy: float,
                     dx: float) -> tuple[float, float, float, float] | None:
    """(FWHM y, FWHM x, centre y, centre x) of a 2-D Gaussian (baseline 0, axes along y and x)
    fitted to one frame of smoothed ΔF/F0 (NaN pixels left out); None if it fails, is wider
    than the frame, or is centred outside it."""
    ok = np.isfinite(frame)
    top = float(frame[yi, xi])
    if ok.sum() < 12 or not top > 0:
        return None
    yy, xx = np.meshgrid(y, x, indexing="ij")
    data = frame[ok].astype(float)
    coords = (yy[ok].astype(float), xx[ok].astype(float))
    p0 = [top, float(y[yi]), float(x[xi]), math.log(2.5 * dy), math.log(2.5 * dx)]
    try:
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (amp, cy, cx, log_sy, log_sx), _ = optimize.curve_fit(_gaussian_2d, coords, data, p0=p0,
                                                                  jac=_gaussian_2d_jac, method="lm", maxfev=200)
    except (RuntimeError, ValueError, np.linalg.LinAlgError, OverflowError):
        return None
    sy, sx = math.exp(min(log_sy, 50.0)), math.exp(min(log_sx, 50.0))
    if not _plausible_gaussian(amp, cy, cx, sy, sx, y, x, dy, dx):
        return None
    return FWHM_PER_SIGMA * sy, FWHM_PER_SIGMA * sx, float(cy), float(cx)


def _plausible_gaussian(amplitude: float, cy: float, cx: float, sy: float, sx: float, y: np.ndarray, x: np.ndarray,
                        dy: float, dx: float) -> bool:
    """A fitted 2-D Gaussian is kept when it is positive, centred within the frame of pixel
    centres ``y``, ``x``, and no narrower than a quarter pixel nor wider than the frame."""
    height, width = float(y[-1] - y[0] + dy), float(x[-1] - x[0] + dx)
    inside = y[0] - 0.5 * dy < cy < y[-1] + 0.5 * dy and x[0] - 0.5 * dx < cx < x[-1] + 0.5 * dx
    return bool(amplitude > 0 and inside and 0.25 * dy < sy < height and 0.25 * dx < sx < width)


def _fit_smoothed_gaussian_2d(frame: np.ndarray, box: "_Box", yi: int, xi: int, reach_um: float
                              ) -> tuple[float, float, float, float, float] | None:
    """(FWHM y, FWHM x, centre y, centre x, gain) of an event whose fit (``frame``'s finite pixels, within
    ``reach_um`` of the peak pixel yi, xi) comes within the smoothing's reach of the field's edge:
    the 2-D Gaussian whose smoothing as the box's (σ ``box.sigma_um``, the edge pixels extended
    outward) fits ``frame``. The widths and centre are the Gaussian's own; the gain is its value at
    the peak pixel over its smoothed value there (the amplitude's correction for the smoothing).

    Deconvolved as a Gaussian blur (:func:`_unsmoothed_fwhm`), a spark 0.3-1 µm from the edge read
    9-17 % wide with its centre pulled to the edge: the smoothing there is no Gaussian blur. None
    where the fit comes nowhere near the edge (the blur is exact there, and this fit slower), or
    fails, or lies outside the frame.
    """
    y0, y1, x0, x1 = box.smoothed_on
    pad = reach_um + 3.0 * box.sigma_um
    ry, rx = math.ceil(pad / box.dy), math.ceil(pad / box.dx)
    lo_y, hi_y, lo_x, hi_x = max(y0, yi - ry), min(y1, yi + ry + 1), max(x0, xi - rx), min(x1, xi + rx + 1)
    near = ((box.clipped[0] and lo_y == y0) or (box.clipped[1] and hi_y == y1)
            or (box.clipped[2] and lo_x == x0) or (box.clipped[3] and hi_x == x1))
    if not near:
        return None
    # the model on rows/columns lo..hi (relative to the box), compared where they meet the box
    fy0, fy1, fx0, fx1 = max(lo_y, 0), min(hi_y, frame.shape[0]), max(lo_x, 0), min(hi_x, frame.shape[1])
    part = frame[fy0:fy1, fx0:fx1]
    ok = np.isfinite(part)
    top = float(frame[yi, xi])
    if ok.sum() < 12 or not top > 0:
        return None
    yw = box.y[0] + np.arange(lo_y, hi_y) * box.dy
    xw = box.x[0] + np.arange(lo_x, hi_x) * box.dx
    # a Gaussian and the smoothing are separable: the smoothed model is the outer product of its
    # rows' and columns' profiles, each smoothed by a matrix (column j: a unit pixel j smoothed)
    smooth_y = ndimage.gaussian_filter1d(np.eye(yw.size), box.sigma_um / box.dy, axis=0, mode="nearest",
                                         truncate=3.0)[fy0 - lo_y:fy1 - lo_y]
    smooth_x = ndimage.gaussian_filter1d(np.eye(xw.size), box.sigma_um / box.dx, axis=0, mode="nearest",
                                         truncate=3.0)[fx0 - lo_x:fx1 - lo_x]
    data = part[ok].astype(float)

    def profiles(p: np.ndarray) -> tuple[np.ndarray, ...]:
        _, cy, cx, log_sy, log_sx = p
        uy, ux = (yw - cy) / math.exp(min(log_sy, 50.0)), (xw - cx) / math.exp(min(log_sx, 50.0))
        gy, gx = np.exp(-0.5 * uy**2), np.exp(-0.5 * ux**2)
        return gy, gx, uy, ux

    def residuals(p: np.ndarray) -> np.ndarray:
        gy, gx, _, _ = profiles(p)
        return p[0] * np.outer(smooth_y @ gy, smooth_x @ gx)[ok] - data

    def jacobian(p: np.ndarray) -> np.ndarray:
        gy, gx, uy, ux = profiles(p)
        sgy, sgx = smooth_y @ gy, smooth_x @ gx
        sy, sx = math.exp(min(p[3], 50.0)), math.exp(min(p[4], 50.0))
        columns = [np.outer(sgy, sgx), p[0] * np.outer(smooth_y @ (gy * uy / sy), sgx),
                   p[0] * np.outer(sgy, smooth_x @ (gx * ux / sx)), p[0] * np.outer(smooth_y @ (gy * uy**2), sgx),
                   p[0] * np.outer(sgy, smooth_x @ (gx * ux**2))]
        return np.column_stack([c[ok] for c in columns])

    p0 = [top, float(box.y[yi]), float(box.x[xi]), math.log(2.5 * box.dy), math.log(2.5 * box.dx)]
    try:
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            fit = optimize.least_squares(residuals, p0, jac=jacobian, method="lm", max_nfev=200)
    except (ValueError, np.linalg.LinAlgError, OverflowError):
        return None
    amplitude, cy, cx, log_sy, log_sx = fit.x
    sy, sx = math.exp(min(log_sy, 50.0)), math.exp(min(log_sx, 50.0))
    if not (fit.success and _plausible_gaussian(amplitude, cy, cx, sy, sx, box.y, box.x, box.dy, box.dx)):
        return None
    if min(sy, sx) < box.sigma_um:
        # narrower than the smoothing resolves (σ 0.04 µm was fitted at 0.1 µm pixels): its gain had
        # no floor (an amplitude of 3e-5 for 0.2, or 2×); the blur's fit and its floor instead
        return None
    gy, gx, _, _ = profiles(fit.x)
    at_peak = float(amplitude * (smooth_y @ gy)[yi - fy0] * (smooth_x @ gx)[xi - fx0])  # the peak pixel, smoothed
    own = amplitude * math.exp(-0.5 * ((box.y[yi] - cy) / sy) ** 2 - 0.5 * ((box.x[xi] - cx) / sx) ** 2)
    if not at_peak > 0:
        return None
    return FWHM_PER_SIGMA * sy, FWHM_PER_SIGMA * sx, float(cy), float(cx), own / at_peak


def _spark_course(t: np.ndarray, t0: float, log_rise: float, amplitude: float, log_tau: float) -> np.ndarray:
    """0 before ``t0``, a linear rise to ``amplitude`` over exp(log_rise) ms, then an exponential
    decay with τ = exp(log_tau) ms (log parameters keep both positive in an unbounded fit)."""
    rise, tau = max(np.exp(log_rise), 1e-9), max(np.exp(log_tau), 1e-9)
    s = t - t0
    return np.where(s < 0, 0.0, np.where(s < rise, amplitude * s / rise, amplitude * np.exp(-(s - rise) / tau)))


def _spark_course_jac(t: np.ndarray, t0: float, log_rise: float, amplitude: float, log_tau: float) -> np.ndarray:
    rise, tau = max(np.exp(log_rise), 1e-9), max(np.exp(log_tau), 1e-9)
    s = t - t0
    on_rise = (s >= 0) & (s < rise)
    decay = s >= rise
    e = np.where(decay, np.exp(-np.where(decay, s - rise, 0.0) / tau), 0.0)
    jac = np.empty((t.size, 4))
    jac[:, 0] = np.where(on_rise, -amplitude / rise, 0.0) + amplitude * e / tau
    jac[:, 1] = (np.where(on_rise, -amplitude * s / rise**2, 0.0) + amplitude * e / tau) * rise  # a longer rise delays the decay
    jac[:, 2] = np.where(on_rise, s / rise, 0.0) + e
    jac[:, 3] = amplitude * e * np.where(decay, s - rise, 0.0) / tau
    return jac


#: a spark's rise counts as recorded where its profile falls below this fraction of the peak
#: before it, within the margin and before any other event
RISE_SEEN_FRACTION = 0.3

#: weight of the spark fit's prior on its peak time: a peak one frame from the samples' vertex
#: costs as much as one residual of this fraction of the peak
SPARK_PEAK_PRIOR = 0.02


#: a spark's or puff's fitted FWHM above this many times its largest extent is NaN: the
#: half-maximum area it was fitted on held another event's signal (a false spark on a wave's
#: fringe read the wave's 12.2 µm for an event of 1.8 × 2.6 µm). Not lower: faint isolated
#: sparks labelled near the label floor (extents 0.3-1.5 µm) read widths over 2.2 × their
#: extent, about half of them right (2-3 % of isolated sparks' widths at low noise, 0.2 µm /
#: 6.8 ms and 0.3 µm / 10 ms; none at the default noise); sparks on a wave's decay, which read
#: 2-5 × before they were measured above the local background, stay within 2.5 × at the default
#: noise (benchmarks/results/measure.md, session 41)
MAX_WIDTH_PER_EXTENT = 3.0
#: a spark fit whose rise begins more than this many frames before the event's first frame (at
#: its peak pixel), and more than ``EARLY_ONSET_RISE_FRACTION`` of its fitted rise and a frame,
#: rose on something else: an earlier event's decay that was not detected, within the profile's
#: margin (time to peak read 31-70 ms for true rises of 5-8 ms, longer than the event itself)
EARLY_ONSET_FRAMES = 2.0
#: an event labelled from a fraction f of its peak on starts f × its rise after the onset (and up
#: to a frame later): at 2 ms frames a 15 ms rise labelled from 30 % (both simulators' annotation)
#: began 2.25 frames before its first frame, and a frame count alone emptied the time to peak of
#: well-recorded rises. 0.35 leaves the reference sampling's figures as they were (0.5 let in
#: noisy fits that rose early: time to peak +0.28 → +0.43 of the true rise on dense movies)
EARLY_ONSET_RISE_FRACTION = 0.35


def _rose_before_the_event(fit: dict[str, float], first_ms: float, dt: float) -> bool:
    """Whether a spark fit's onset lies earlier before the event's first frame (``first_ms``)
    than its labelling explains (see :data:`EARLY_ONSET_FRAMES`)."""
    rise = fit["peak_ms"] - fit["onset_ms"]
    return first_ms - fit["onset_ms"] > max(EARLY_ONSET_FRAMES * dt, EARLY_ONSET_RISE_FRACTION * rise + dt)


def _refit_from_the_event(fit: dict[str, float], values: np.ndarray, times: np.ndarray, i_peak: int, dt: float,
                          first: int) -> dict[str, float]:
    """A spark fit again from the frame before the event's first (``first``). Where its rise
    still begins before that frame, it rose from something else (an earlier event's decay, not
    detected): the rise is not recorded, time to peak NaN, as where another event comes before.
    Where it begins after, the first fit's early onset was noise on a flat baseline and the
    refit stands. The first fit without its time to peak where the shorter profile cannot be fitted."""
    base = max(first - 1, 0)
    clipped = values.astype(float)
    clipped[:base] = np.nan
    refit = _fit_spark(clipped, times, i_peak, dt)
    if refit is None:
        return {**fit, "time_to_peak_ms": float("nan")}
    if refit["onset_ms"] < times[base]:
        return {**refit, "time_to_peak_ms": float("nan")}
    return refit


def _fit_spark(values: np.ndarray, times: np.ndarray, i_peak: int, dt: float) -> dict[str, float] | None:
    """Fit :func:`_spark_course` to a spark's temporal profile; None if it fails.

    Starts at the foot of the rise (where it leaves 5 % of the peak: a piecewise model needs
    samples on its rise to move its onset), or half a frame before the peak.
    """
    ok = np.isfinite(values)
    v, t = values[ok].astype(float), times[ok].astype(float)
    top = float(values[i_peak])
    if v.size < 5 or top <= 0:
        return None
    tp = float(times[i_peak])
    span = float(t[-1] - t[0])
    tau0 = _decay_tau(values, times, i_peak, top, 0.1)
    tau0 = float(np.clip(tau0 if np.isfinite(tau0) else 25.0, 0.6 * dt, span))
    foot = _crossing(values, times, i_peak, 0.05 * top, -1)
    # the rise is not recorded where the movie's first frame or another event comes before the
    # signal falls to a third of the peak: the fit still gives amplitude, peak time and τ, not
    # the rise (5 % of the peak, the fit's start, is often not reached in noise within the margin)
    rise_recorded = bool(np.isfinite(_crossing(values, times, i_peak, RISE_SEEN_FRACTION * top, -1)))
    if not (np.isfinite(foot) and foot < tp - 0.1 * dt):
        foot = tp - dt
    # With one or two samples on a fast rise, onset, peak time and amplitude trade off along a
    # valley of equally good fits, and where a fit stopped in it moved with any change of F0. A
    # weak prior pulling the peak time towards the vertex of the parabola through the largest
    # sample and its neighbours picks one point of the valley, continuously in the data; it is
    # too weak to move a peak the samples place elsewhere.
    weight = SPARK_PEAK_PRIOR * top / dt
    anchor = tp + _parabola(values, i_peak) * dt

    def residuals(p: np.ndarray) -> np.ndarray:
        peak_time = p[0] + math.exp(min(p[1], 50.0))
        return np.append(_spark_course(t, *p) - v, weight * (peak_time - anchor))

    def jacobian(p: np.ndarray) -> np.ndarray:
        rise = math.exp(min(p[1], 50.0))
        return np.vstack([_spark_course_jac(t, *p), [weight, weight * rise, 0.0, 0.0]])

    best = None
    # start from three guesses of the peak around the vertex (guesses that move with the data)
    for peak in (anchor - 0.5 * dt, anchor, anchor + 0.4 * dt):
        rise0 = max(peak - foot, 0.1 * dt)
        p0 = [peak - rise0, math.log(rise0), top, math.log(tau0)]
        try:
            with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
                params, _, _, _, status = optimize.leastsq(residuals, p0, Dfun=jacobian, maxfev=200, full_output=True,
                                                           ftol=1e-6, xtol=1e-6)
                cost = float(np.sum(residuals(params) ** 2))
        except (ValueError, np.linalg.LinAlgError, OverflowError, TypeError):
            continue
        # not converged in 200 evaluations (1 of 351 fits of bench_measure's sparks; 3 % while
        # the Jacobian had a sign wrong): left out, as curve_fit did
        if status not in (1, 2, 3, 4):
            continue
        if np.isfinite(cost) and (best is None or cost < best[0]):
            best = (cost, params)
    if best is None:
        return None
    t0, log_rise, amplitude, log_tau = best[1]
    rise, tau = math.exp(min(log_rise, 50.0)), math.exp(min(log_tau, 50.0))
    if not (amplitude > 0 and 0.01 * dt < rise < span and t[0] - dt < t0 + rise < t[-1]):
        return None
    if 0.5 * rise + tau * math.log(2.0) < dt:
        # a course narrower than a frame: at most one sample above its half maximum, so the
        # samples do not hold its peak, which the fit extrapolates (a spark at 10 ms frames read
        # ΔF/F0 2.61 or 3.14 for a dark level 0.5 ADU apart); the samples' own measures instead
        return None
    tau = tau if tau < 20 * span else float("nan")  # no visible decay
    return {"amplitude_dff": float(amplitude), "peak_ms": float(t0 + rise),
            "fdhm_ms": 0.5 * rise + tau * math.log(2.0), "time_to_peak_ms": rise if rise_recorded else float("nan"),
            "decay_tau_ms": tau, "onset_ms": float(t0)}


@dataclass
class _Box:
    """Smoothed ΔF/F0 around one event and the geometry to read it."""

    sm: np.ndarray  # (t, y, x) smoothed ΔF/F0 that profiles are read from
    locate: np.ndarray  # (t, y, x) ΔF/F0 smoothed more, to locate the peak
    inside: np.ndarray  # bool, the event's voxels
    others: np.ndarray  # bool, other events' voxels
    frame0: int  # first frame of the box
    y: np.ndarray  # µm, centres of the box's rows
    x: np.ndarray  # µm, centres of the box's columns
    row_delay: np.ndarray  # ms, acquisition delay of each row within its frame
    dy: float  # µm, row spacing
    dx: float  # µm, column spacing
    sigma_um: float  # spatial Gaussian σ already in ``sm`` (corrected for in FWHM and amplitude)
    fine: np.ndarray | None = None  # (t, y, x) less smoothed in time, for the decay fit (puffs)
    #: where the field's edge cut the spatial smoothing (which extends the edge pixels outward):
    #: the rows and columns it was computed on, (y0, y1, x0, x1) relative to the box's first row
    #: and column, and which of those four ends is the field's; None inside the field
    smoothed_on: tuple[int, int, int, int] | None = None
    clipped: tuple[bool, bool, bool, bool] = (False, False, False, False)


def _noise_sd(box: _Box, reach_um: float) -> float:
    """Noise SD of the box's smoothed ΔF/F0 around the event: 1.4826 × the median absolute
    deviation over every frame of the pixels farther than ``reach_um`` from any event voxel
    (of any frame), a robust SD that the decays of nearby events hardly move; NaN with fewer
    than ``_MIN_NOISE_VOXELS``."""
    footprint = (box.inside | box.others).any(axis=0)
    if footprint.all():
        return float("nan")
    quiet = ndimage.distance_transform_edt(~footprint, sampling=(box.dy, box.dx)) > reach_um
    values = box.sm[:, quiet].ravel()
    values = values[np.isfinite(values)]
    if values.size < _MIN_NOISE_VOXELS:
        return float("nan")
    values = values[:: max(1, values.size // _NOISE_SAMPLE)]  # neighbours are correlated anyway
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _unsmoothed_fwhm(fwhm: float, smoothing: float) -> float:
    """FWHM (µm) before a Gaussian smoothing of squared FWHM ``smoothing`` (µm²).

    Exact for Gaussians, sqrt(FWHM² − smoothing), down to an event as narrow as the smoothing
    itself. Narrower events are below what the smoothed movie resolves (the correction would
    grow without bound and amplify noise): they are reported at the smoothing's FWHM, and a
    measured width below even that as it is. Widths and the amplitude's gain (measured / true
    width) stay continuous in the measured width.
    """
    if fwhm**2 > 2 * smoothing:
        return math.sqrt(fwhm**2 - smoothing)
    return min(fwhm, math.sqrt(smoothing))


def _segment(values: np.ndarray, i: int) -> np.ndarray:
    """``values`` with everything outside the contiguous finite stretch around ``i`` set to NaN."""
    out = values.copy()
    ok = np.isfinite(values)
    lo, hi = i, i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < values.size - 1 and ok[hi + 1]:
        hi += 1
    out[:lo] = np.nan
    out[hi + 1:] = np.nan
    return out


def _time_profile(box: _Box, blocked: np.ndarray, ti: int, yi: int, xi: int, dt: float,
                  config: MeasureConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """The temporal profile at pixel (yi, xi), read within the event's own frames there ± the
    margin and before any other event (NaN elsewhere), its times (ms, the row's scan delay
    included) and the frame of its peak within the event."""
    time_prof = blocked[:, yi, xi].copy()
    own = np.flatnonzero(box.inside[:, yi, xi])
    pad = math.ceil(config.margin_ms / dt)
    time_prof[: max(0, own[0] - pad)] = np.nan
    time_prof[own[-1] + 1 + pad:] = np.nan
    own_prof = np.where(box.inside[:, yi, xi], time_prof, np.nan)
    ti = int(np.nanargmax(own_prof)) if np.isfinite(own_prof).any() else ti
    times = (box.frame0 + np.arange(box.sm.shape[0])) * dt + box.row_delay[yi]
    return _segment(time_prof, ti), times, ti


def _decay_cut_by_the_end(time_prof: np.ndarray, i_peak: int, level: float, box: _Box, n_frames: int) -> bool:
    """Whether the movie ends before a profile read in ``box`` falls below ``level`` after its
    peak (its finite stretch runs into the movie's last frame): its FDHM and decay were not
    recorded."""
    if box.frame0 + box.sm.shape[0] < n_frames:
        return False
    after = time_prof[i_peak + 1:]
    return bool(np.isfinite(after).all() and not (after < level).any())


def _decay_hidden_by_another(time_prof: np.ndarray, i_peak: int, level: float) -> bool:
    """Whether another event's voxels (NaN in the profile) come after a profile's peak before it
    falls below ``level``: its decay was not recorded."""
    after = time_prof[i_peak + 1:]
    below_or_gap = np.flatnonzero(~np.isfinite(after) | (after < level))
    return bool(below_or_gap.size and not np.isfinite(after[below_or_gap[0]]))


def _measure_box(box: _Box, dt: float, config: MeasureConfig, kind: str, n_frames: int) -> dict[str, float]:
    """Peak, widths, kinetics and centroid of one event from its smoothed ΔF/F0 box.

    ``kind``: 'spark' (temporal course fitted by :func:`_spark_course`, spatial profiles by
    Gaussians), 'puff' (empirical temporal measures, Gaussian spatial fits) or 'wave' (all
    empirical: crossings of the half maximum).
    """
    sm, inside = box.sm, box.inside
    ti, yi, xi = np.unravel_index(int(np.argmax(np.where(inside, box.locate, -np.inf))), sm.shape)
    blocked = np.where(box.others, np.nan, sm)
    time_prof, times, ti = _time_profile(box, blocked, ti, yi, xi, dt, config)
    own = np.flatnonzero(inside[:, yi, xi])
    amplitude = float(sm[ti, yi, xi])
    out: dict[str, float] = {"amplitude_dff": amplitude, "peak_ms": float(times[ti])}
    fit = _fit_spark(time_prof, times, ti, dt) if kind == "spark" and amplitude > 0 else None
    if fit is not None and own.size and _rose_before_the_event(fit, times[own[0]], dt):
        fit = _refit_from_the_event(fit, time_prof, times, ti, dt, own[0])
    if fit is not None and _decay_hidden_by_another(time_prof, ti, 0.5 * fit["amplitude_dff"]):
        # the next event's voxels came before the fall to half the peak: the fit read τ from the
        # rise alone (0.4 ms for a true 24 ms) and put its peak above every sample; the samples'
        # own measures instead (FDHM and τ then NaN: not recorded)
        fit = None
    if fit is not None and _decay_cut_by_the_end(time_prof, ti, 0.5 * fit["amplitude_dff"], box, n_frames):
        # with no fall to half the peak seen, τ came from a sample or two (0.1-40 ms for 30)
        fit.update(fdhm_ms=float("nan"), decay_tau_ms=float("nan"))
    if fit is not None:
        fit.pop("onset_ms")
        out.update(fit)
        out["time_to_peak_ms"] *= 1.0 - config.rise_fraction  # 10 % of a linear rise → peak
        tf = int(np.clip(np.argmin(np.abs(times - out["peak_ms"])), own[0], own[-1]))
        if np.isfinite(blocked[tf, yi, xi]):
            ti = tf
    elif amplitude > 0:
        out["fdhm_ms"] = _width(time_prof, times, ti, amplitude / 2)
        out["time_to_peak_ms"] = out["peak_ms"] - _crossing(time_prof, times, ti, config.rise_fraction * amplitude, -1)
        if kind == "spark" and own.size and np.isfinite(out["time_to_peak_ms"]):
            # no fit: the fit's early-onset rule on the onset of a linear rise through the crossing
            # (a spark rising on an undetected earlier one's decay read 44 ms, longer than itself)
            onset = out["peak_ms"] - out["time_to_peak_ms"] / (1.0 - config.rise_fraction)
            if _rose_before_the_event({"onset_ms": onset, "peak_ms": out["peak_ms"]}, times[own[0]], dt):
                out["time_to_peak_ms"] = float("nan")
        decay_prof = time_prof
        if box.fine is not None:  # the decay is fitted on a profile smoothed less in time
            decay_prof = np.where(np.isfinite(time_prof), box.fine[:, yi, xi], np.nan)
        out["decay_tau_ms"] = _decay_tau(decay_prof, times, ti, amplitude, config.decay_floor_fraction)
    x_prof, y_prof = blocked[ti, yi, :], blocked[ti, :, xi]
    out["peak_y_um"] = float(box.y[yi] + _parabola(sm[ti, :, xi], yi) * box.dy)
    out["peak_x_um"] = float(box.x[xi] + _parabola(sm[ti, yi, :], xi) * box.dx)
    if kind == "wave":
        level = amplitude / 2
        out["fwhm_um"] = _width(x_prof, box.x, xi, level) if level > 0 else float("nan")
        out["fwhm_y_um"] = _width(y_prof, box.y, yi, level) if level > 0 else float("nan")
    else:
        smoothing = (FWHM_PER_SIGMA * box.sigma_um) ** 2
        frame = blocked[ti].copy()
        half_area = float(np.sum(box.locate[ti] >= 0.5 * box.locate[ti, yi, xi])) * box.dy * box.dx
        reach = _FIT_REACH * 2.0 * math.sqrt(half_area / math.pi)  # × the FWHM of a round event
        far = np.hypot(box.y[:, None] - box.y[yi], box.x[None, :] - box.x[xi]) > max(reach, 3 * box.dx)
        frame[far] = np.nan
        fit_reach = max(reach, 3 * box.dx)
        at_edge = _fit_smoothed_gaussian_2d(frame, box, yi, xi, fit_reach) if box.smoothed_on is not None else None
        fit2 = None if at_edge is not None else _fit_gaussian_2d(frame, box.y, box.x, yi, xi, box.dy, box.dx)
        if at_edge is not None:  # the Gaussian's own widths, and its own amplitude's correction
            out["fwhm_y_um"], out["fwhm_um"], out["peak_y_um"], out["peak_x_um"], edge_gain = at_edge
            out["amplitude_dff"] *= edge_gain
        elif fit2 is not None:
            out["fwhm_y_um"], out["fwhm_um"], out["peak_y_um"], out["peak_x_um"] = fit2
        else:  # 1-D fits along x and y through the peak
            for axis, prof, coords, i, step in (("x", x_prof, box.x, xi, box.dx), ("y", y_prof, box.y, yi, box.dy)):
                fwhm, centre = _fit_gaussian(prof, coords, i, step)
                out["fwhm_um" if axis == "x" else "fwhm_y_um"] = fwhm
                if np.isfinite(centre):
                    out["peak_x_um" if axis == "x" else "peak_y_um"] = centre
        gain = 1.0
        for key in ("fwhm_um", "fwhm_y_um") if at_edge is None else ():
            fwhm = out.get(key, float("nan"))
            if np.isfinite(fwhm):
                true = _unsmoothed_fwhm(fwhm, smoothing)
                gain *= fwhm / true
                out[key] = true
        out["amplitude_dff"] *= gain
    if kind != "wave":  # the smoothed peak over the smoothed noise around the event
        noise = _noise_sd(box, config.exclude_um)
        out["snr"] = float(sm[ti, yi, xi] / noise) if noise > 0 else float("nan")
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


#: a spark's (or puff's) local background (:func:`_local_background`) is subtracted where the ring
#: around it before the event stands above 0 by more than this many standard errors of its mean ...
BACKGROUND_SE = 4.0
#: ... and by more than this fraction of the spark's smoothed peak. Before the bench's isolated
#: sparks (no wave in the movie; 38 at low noise, 22 at the default) the ring stood at most
#: 0.05 and 0.13 of the peak above 0 (the second 3.4 standard errors; at low noise a small
#: offset of F0 is 17 standard errors); before sparks on a wave's decay (79 in 12 movies) at
#: least 0.11 and 7 standard errors (benchmarks/results/measure.md, session 41)
BACKGROUND_FRACTION = 0.1
#: the local background is fitted on at least this many pixels of the ring in a frame
MIN_RING_PIXELS = 30


def _ring(inside: np.ndarray, local_others: np.ndarray, dy: float, dx: float, reach_um: float) -> np.ndarray:
    """The pixels (Y×X) of a box farther than ``reach_um`` from the event's voxels (``inside``, of
    any frame) and from other sparks' and puffs' (``local_others``, of any frame)."""
    near = inside.any(axis=0) | local_others.any(axis=0)
    if near.all():
        return np.zeros(near.shape, dtype=bool)
    return ndimage.distance_transform_edt(~near, sampling=(dy, dx)) > reach_um


def _ring_planes(values: np.ndarray, ring: np.ndarray, yy: np.ndarray, xx: np.ndarray, frames: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per frame in ``frames`` (bool, T), the plane a + gy·yy + gx·xx fitted (least squares) to
    ``values`` (T×Y×X) on the ``ring`` pixels (yy, xx: coordinates relative to the event's centre):
    its coefficients (k × T, NaN in other frames and where fewer than ``MIN_RING_PIXELS`` are
    finite) and the k surfaces they multiply (k × Y × X). Along an axis where the ring lies on
    one side of the centre only (the field's edge), the plane is flat: its slope would be
    extrapolated."""
    ry, rx = yy[ring], xx[ring]
    columns, surfaces = [np.ones_like(ry)], [np.ones_like(yy)]
    for r, full in ((ry, yy), (rx, xx)):
        if r.size and r.min() < 0 < r.max():
            columns.append(r)
            surfaces.append(full)
    design = np.column_stack(columns)
    v = values[:, ring].T.astype(float)  # (pixels, frames)
    ok = np.isfinite(v)
    coef = np.full((design.shape[1], values.shape[0]), np.nan)
    whole = frames & ok.all(axis=0)  # one solve for the frames whose ring is finite throughout
    if whole.any():
        try:
            coef[:, whole] = np.linalg.solve(design.T @ design, design.T @ v[:, whole])
        except np.linalg.LinAlgError:  # a ring along one line: the plane is not determined
            coef[:, whole] = np.linalg.lstsq(design, v[:, whole], rcond=None)[0]
    for t in np.flatnonzero(frames & ~whole):
        if ok[:, t].sum() >= MIN_RING_PIXELS:
            coef[:, t] = np.linalg.lstsq(design[ok[:, t]], v[ok[:, t], t], rcond=None)[0]
    return coef, np.stack(surfaces)


#: a puff's ring after it must lie this many standard errors below its ring before it to be a
#: wave's decay: the sign of the slope before it alone passed half of flat rings (an F0 off by a
#: constant, 200 seeds); with this, none, and 1 of 17 puffs on a wave's decay at the default noise
#: is no longer corrected (at 3 SE: 2; session 42)
FALL_SE = 2.0


def _falls(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether a ring's level fell across an event: falling before it (a least-squares slope < 0)
    and lower after it (its mean after, one value per frame, below its mean before by more than
    ``FALL_SE`` standard errors of the difference)."""
    if before.size < 2 or after.size < 2:
        return False
    t = np.arange(before.size, dtype=float)
    if not float((t - t.mean()) @ before) < 0:
        return False
    error = math.sqrt(float(before.var(ddof=1)) / before.size + float(after.var(ddof=1)) / after.size)
    return float(before.mean() - after.mean()) > FALL_SE * error


def _local_background(values: np.ndarray, inside: np.ndarray, ring: np.ndarray, near_others: np.ndarray,
                      y: np.ndarray, x: np.ndarray, peak: float | None, falling: bool = False) -> np.ndarray | None:
    """The background under a spark or puff (T×Y×X) where it stands on one (the decay of a wave
    that passed its site, or for a spark an F0 that is off there); None where it does not, or
    cannot be told.

    In each frame of the box before the spark's first frame and after its last, a plane is
    fitted to the ``ring`` around it (:func:`_ring_planes`), and a parabola in time through each
    coefficient carries it across the spark's frames (a wave's decay, τ 150-450 ms, bends little
    over the spark's 50-100 ms; over a puff's 100-600 ms the parabola read its τ and FWHM
    better than a straight line or an exponential fitted to the ring, session 42). That gives
    the background's course; its level at each pixel is the pixel's own mean before the spark
    (leaving out the frame just before it, which may hold the start of its rise) times the
    ring's course relative to that time. A wave's decay is an exponential, the same course at
    every pixel from its own level; the plane's level alone read 0.4-0.5 of the wave at sparks
    beside the membrane (the wave stops at the cell's edge, half their ring did not see it).
    Pixels of other sparks and puffs (``near_others``) take the plane's level. With ``peak``
    (the event's smoothed peak), the background counts only where
    the ring's mean before the spark stands above 0 by more than ``BACKGROUND_SE`` standard
    errors (from the spread of those frames) and ``BACKGROUND_FRACTION`` of the peak: the ring
    of an isolated spark holds a little of its own flanks after its onset, which would shorten
    its decay. With ``falling`` (puffs), the ring's mean before the event must also stand above 0
    and fall (:func:`_falls`): a wave's decay; an F0 that is off (flat, either sign) and a faint
    puff's own rise reaching its ring (rising) are left alone. It needs 3 frames before the event
    and 2 after.
    """
    own = np.flatnonzero(inside.any(axis=(1, 2)))
    foot = inside.any(axis=0)
    if own.size == 0 or ring.sum() < MIN_RING_PIXELS:
        return None
    cy, cx = float(y[foot.any(axis=1)].mean()), float(x[foot.any(axis=0)].mean())
    yy, xx = np.meshgrid(y - cy, x - cx, indexing="ij")
    t = np.arange(values.shape[0])
    coef, surfaces = _ring_planes(values, ring, yy, xx, (t < own[0]) | (t > own[-1]))
    have = np.isfinite(coef[0])
    before = coef[0, have & (t < own[0])]
    if before.size < 3 or np.count_nonzero(have & (t > own[-1])) < 2:
        return None
    if peak is not None:
        level = abs(float(before.mean()))
        error = float(before.std(ddof=1)) / math.sqrt(before.size)
        if not (level > BACKGROUND_SE * error and level > BACKGROUND_FRACTION * peak):
            return None
        if falling and not (before.mean() > 0 and _falls(before, coef[0, have & (t > own[-1])])):
            return None
    trend = np.polynomial.polynomial.polyfit(t[have].astype(float), coef[:, have].T, 2)
    course = np.polynomial.polynomial.polyval(t.astype(float), trend)  # (k, T)
    plane = np.einsum("kt,kyx->tyx", course, surfaces)
    pre = t < own[0] - 1 if own[0] >= 3 else t < own[0]
    reference = float(course[0, pre].mean())
    if not abs(reference) > 0:
        return plane.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pixel with no finite value before the spark
        level = np.nanmean(values[pre], axis=0)
    own_level = level[None] * (course[0] / reference)[:, None, None]
    return np.where((np.isfinite(level) & ~near_others)[None], own_level, plane).astype(np.float32)


def _local_box(data, event_label, eid, sl, base: _Baseline, px, dt, config, row_delay, kind,
               class_label: np.ndarray | None = None) -> _Box:
    """ΔF/F0 around a spark or puff, smoothed in space (and in time for puffs); with
    ``class_label``, above the local background it stands on (:func:`_local_background`)."""
    T, H, W = data.shape
    pt = math.ceil(config.margin_ms / dt)
    ps = math.ceil(config.margin_um / px)
    box = (_padded(sl[0], pt, T), _padded(sl[1], ps, H), _padded(sl[2], ps, W))
    s_t = config.puff_sigma_ms / dt if kind == "puff" else 0.0
    sigma = (s_t, config.smooth_sigma_um / px, config.smooth_sigma_um / px)
    fine_sigma = (min(s_t, config.smooth_sigma_ms / dt),) + sigma[1:]
    locate_sigma = (max(s_t, config.locate_sigma_ms / dt), config.locate_sigma_um / px, config.locate_sigma_um / px)
    # smoothed as in the whole movie: ΔF/F0 is read that much beyond the box, then cut back to it,
    # so that the box's edges (where the noise around the event is read) are not smoothed less
    reach = [math.ceil(3.0 * max(a, b, c)) for a, b, c in zip(sigma, fine_sigma, locate_sigma)]
    wide = tuple(_padded(b, r, n) for b, r, n in zip(box, reach, data.shape))
    clipped = tuple(end for b, r, n in zip(box[1:], reach[1:], data.shape[1:]) for end in (b.start - r < 0,
                                                                                          b.stop + r > n))
    smoothed_on = (wide[1].start - box[1].start, wide[1].stop - box[1].start, wide[2].start - box[2].start,
                   wide[2].stop - box[2].start) if any(clipped) and config.smooth_sigma_um > 0 else None
    raw = data[wide].astype(np.float32)
    raw -= np.float32(base.offset)
    dff = raw / base.f0(wide) - np.float32(1.0)
    cut = tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, wide))
    in_space: dict[tuple[float, float], np.ndarray] = {}  # the smoothings share their spatial pass

    def smoothed(s: tuple[float, float, float]) -> np.ndarray:
        if s[1:] not in in_space:
            in_space[s[1:]] = ndimage.gaussian_filter(dff, (0.0, *s[1:]), mode="nearest", truncate=3.0) \
                if any(s[1:]) else dff
        out = in_space[s[1:]]
        if s[0]:
            out = ndimage.gaussian_filter1d(out, s[0], axis=0, mode="nearest", truncate=3.0)
        return out[cut]

    sm = smoothed(sigma)
    fine = smoothed(fine_sigma) if kind == "puff" else None
    locate = smoothed(locate_sigma) if any(locate_sigma) else sm
    lab = event_label[box]
    inside = lab == eid
    others = (lab != 0) & ~inside
    ys = (np.arange(box[1].start, box[1].stop) + 0.5) * px
    xs = (np.arange(box[2].start, box[2].stop) + 0.5) * px
    if class_label is not None and kind in ("spark", "puff"):
        # a spark or puff on a wave's decay: ΔF/F0 above the background around it (the wave is
        # background: its voxels stay in the ring; other sparks and puffs do not)
        local_others = others & (class_label[box] != WAVE)
        ring = _ring(inside, local_others, px, px, config.exclude_um)
        near = local_others.any(axis=0)
        peak = float(np.max(np.where(inside, sm, -np.inf)))
        if kind == "spark":
            background = _local_background(sm, inside, ring, near, ys, xs, peak)
            if background is not None:
                sm = sm - background
                around = _local_background(locate, inside, ring, near, ys, xs, None)
                locate = locate - around if around is not None else locate
        else:
            # read on ΔF/F0 not smoothed in time (the 20 ms smoothing carries a puff's rise into
            # the frames before it, each pixel's level), then smoothed in time as each array is
            background = _local_background(smoothed((0.0,) + sigma[1:]), inside, ring, near, ys, xs, peak,
                                           falling=True)
            if background is not None:
                def in_time(s_t: float) -> np.ndarray:
                    return ndimage.gaussian_filter1d(background, s_t, axis=0, mode="nearest", truncate=3.0) \
                        if s_t else background
                sm, fine, locate = sm - in_time(sigma[0]), fine - in_time(fine_sigma[0]), \
                    locate - in_time(locate_sigma[0])
    return _Box(sm, locate, inside, others, box[0].start, ys, xs, row_delay[box[1]], px, px, config.smooth_sigma_um,
                fine, smoothed_on, clipped)


#: a wave's kinetics are the medians of the spark fits at up to this many of its pixels
WAVE_KINETICS_PIXELS = 9
#: a wave's time to peak needs a recorded rise at this many of those pixels, else NaN: where the
#: wave began before the movie or rose on another's decay at the others, the one or two left
#: carried it alone and were often fits that noise let through (bench_measure's seed-5 wave from
#: 67 ms before the movie read −56 % from one pixel, a wave on another's decay +171 % from two;
#: benchmarks/results/measure.md, session 42)
WAVE_RISE_MIN_PIXELS = 3


def _pixel_kinetics(data, event_label, eid, frames: slice, yi: int, xi: int, base: _Baseline, px, dt,
                    one_pixel: MeasureConfig, row_delay,
                    front: tuple[float, float, float] | None = None) -> dict[str, float] | None:
    """The spark fit of an event's course at pixel (yi, xi), smoothed in space as a spark's (along
    the wave's ``front`` where it is known: :func:`_front_aligned_course`) and not in time; None
    where it fails. ``one_pixel``: the measure config with ``margin_um`` 0, so
    that the box is the pixel (smoothed with its neighbours). Where the movie ends before the
    event leaves the pixel, its decay was not recorded: FDHM and τ are NaN (such fits wandered,
    e.g. an FDHM of 8 ms for a wave of 150)."""
    box = _local_box(data, event_label, eid, (frames, slice(yi, yi + 1), slice(xi, xi + 1)), base, px, dt,
                     one_pixel, row_delay, "spark")
    if front is not None and one_pixel.smooth_sigma_um > 0:
        box.sm = _front_aligned_course(data, base, box.frame0, box.sm.shape[0], yi, xi, px, dt,
                                       one_pixel.smooth_sigma_um, front, row_delay)[:, None, None]
    own = np.flatnonzero(box.inside[:, 0, 0])
    if own.size == 0:
        return None
    ti = int(np.argmax(np.where(box.inside[:, 0, 0], box.sm[:, 0, 0], -np.inf)))
    time_prof, times, ti = _time_profile(box, np.where(box.others, np.nan, box.sm), ti, 0, 0, dt, one_pixel)
    fit = _fit_spark(time_prof, times, ti, dt) if box.sm[ti, 0, 0] > 0 else None
    if fit is not None and _rose_before_the_event(fit, times[own[0]], dt):
        # a sparks' rule: the fit rose before the wave reached the pixel (the movie's start,
        # another wave's decay or an F0 that is off there): its rise was not recorded
        fit = _refit_from_the_event(fit, time_prof, times, ti, dt, own[0])
    if fit is not None and box.frame0 + own[-1] >= data.shape[0] - 1:
        fit.update(fdhm_ms=float("nan"), decay_tau_ms=float("nan"))
    return fit


def _front_aligned_course(data: np.ndarray, base: _Baseline, frame0: int, n_frames: int, yi: int, xi: int,
                          px: float, dt: float, sigma_um: float, front: tuple[float, float, float],
                          row_delay: np.ndarray) -> np.ndarray:
    """ΔF/F0 at pixel (yi, xi) in frames frame0 … frame0 + n_frames, averaged with its neighbours
    (Gaussian weights of σ ``sigma_um``, as the spatial smoothing) after each neighbour's course is
    moved in time by the time the front takes from the pixel to it (``front``: origin x, y µm and
    slowness ms/µm; rows' scan delays included). Smoothed in space without it, a slow wave's rise
    took in neighbours the front reaches σ/v earlier or later: time to peak +90 / +27 / +6 % at
    50 / 100 / 200 µm/s for a 15 ms rise."""
    T, H, W = data.shape
    ox, oy, slowness = front
    r = math.ceil(3.0 * sigma_um / px)
    ys, xs = slice(max(0, yi - r), min(H, yi + r + 1)), slice(max(0, xi - r), min(W, xi + r + 1))
    yc = (np.arange(ys.start, ys.stop) + 0.5) * px
    xc = (np.arange(xs.start, xs.stop) + 0.5) * px
    here = math.hypot((xi + 0.5) * px - ox, (yi + 0.5) * px - oy)
    shift = slowness * (np.hypot(xc[None, :] - ox, yc[:, None] - oy) - here)  # ms: reached later by
    weight = np.exp(-0.5 * ((yc[:, None] - (yi + 0.5) * px) ** 2 + (xc[None, :] - (xi + 0.5) * px) ** 2)
                    / sigma_um**2)
    extra = math.ceil(float(np.abs(shift).max()) / dt) + 1
    frames = _padded(slice(frame0, frame0 + n_frames), extra, T)
    raw = data[frames, ys, xs].astype(np.float32) - np.float32(base.offset)
    dff = raw / base.f0((frames, ys, xs)) - np.float32(1.0)
    wanted = (frame0 + np.arange(n_frames)) * dt + row_delay[yi]  # the pixel's own sample times
    total = np.zeros(n_frames)
    weights = np.zeros(n_frames)
    for j, y in enumerate(range(ys.start, ys.stop)):
        seen = (frames.start + np.arange(dff.shape[0])) * dt + row_delay[y]
        for k in range(dff.shape[2]):
            values = np.interp(wanted + shift[j, k], seen, dff[:, j, k], left=np.nan, right=np.nan)
            ok = np.isfinite(values)
            total[ok] += weight[j, k] * values[ok]
            weights[ok] += weight[j, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / weights).astype(np.float32)


def _wave_kinetics(data, event_label, eid, sl, base: _Baseline, px, dt, config, row_delay,
                   box: _Box, front: tuple[float, float, float] | None = None) -> dict[str, float]:
    """FDHM, time to peak and τ of a wave: the medians of the spark fits of its course at up to
    ``WAVE_KINETICS_PIXELS`` pixels, the centres of its brightest bins (at least 70 % of the
    brightest), spread along it. Read off the binned, time-smoothed course, the rise was spread
    by the time the front takes to cross a bin and by the smoothing; one pixel can stand badly
    for the wave (at the peak pixel alone, 2 of 8 simulated waves read about twice their rise).
    With the wave's ``front`` (:func:`_fit_front`) each pixel's neighbours are aligned in time to
    it before they are averaged (:func:`_front_aligned_course`). Time to peak NaN where fewer than
    ``WAVE_RISE_MIN_PIXELS`` fits recorded the rise. Empty where no fit works."""
    peaks = np.where(box.inside, box.sm, -np.inf).max(axis=0)
    bright = np.argwhere(peaks >= 0.7 * peaks.max()) if np.isfinite(peaks.max()) and peaks.max() > 0 else []
    if not len(bright):
        return {}
    bright = bright[np.lexsort((bright[:, 0], bright[:, 1]))]  # along x, then y
    picks = bright[np.unique(np.linspace(0, len(bright) - 1, WAVE_KINETICS_PIXELS).round().astype(int))]
    H, W = data.shape[1:]
    one_pixel = replace(config, margin_um=0.0)
    fits = []
    for by, bx in picks:
        yi = int(np.clip(math.floor(box.y[by] / px), 0, H - 1))
        xi = int(np.clip(math.floor(box.x[bx] / px), 0, W - 1))
        fit = _pixel_kinetics(data, event_label, eid, sl[0], yi, xi, base, px, dt, one_pixel, row_delay, front)
        if fit is not None:
            fits.append(fit)
    if not fits:
        return {}
    rises = np.array([f["time_to_peak_ms"] for f in fits])
    rises = rises[np.isfinite(rises)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN for a column: NaN
        return {"fdhm_ms": float(np.nanmedian([f["fdhm_ms"] for f in fits])),
                "decay_tau_ms": float(np.nanmedian([f["decay_tau_ms"] for f in fits])),
                "time_to_peak_ms": float(np.median(rises)) * (1.0 - config.rise_fraction)
                if rises.size >= WAVE_RISE_MIN_PIXELS else float("nan")}


def _binned(array: np.ndarray, ky: int, kx: int) -> np.ndarray:
    t, h, w = array.shape
    return array.reshape(t, h // ky, ky, w // kx, kx).mean(axis=(2, 4), dtype=np.float32)


def _wave_box(data, event_label, eid, sl, base: _Baseline, px, dt, config, row_delay) -> _Box:
    """Smoothed ΔF/F0 of a wave, averaged in ``wave_bin_um`` squares."""
    T, H, W = data.shape
    pt = math.ceil(config.margin_ms / dt)
    k = max(1, round(config.wave_bin_um / px))
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
    share = _binned((lab == eid).view(np.uint8), ky, kx)
    inside = share >= 0.5
    others = _binned(((lab != 0) & (lab != eid)).view(np.uint8), ky, kx) >= 0.5
    if not inside.any():  # a thin wave (e.g. a later pass split from another) fills no square by half
        inside = share > 0
        others &= ~inside
    yc = (ys.start + (np.arange(sm.shape[1]) + 0.5) * ky) * px
    xc = (xs.start + (np.arange(sm.shape[2]) + 0.5) * kx) * px
    delay = row_delay[ys].reshape(-1, ky).mean(axis=1)
    return _Box(sm, sm, inside, others, box[0].start, yc, xc, delay, ky * px, kx * px, 0.0)


def _wave_speed(box: _Box, dt: float, amplitude: float) -> tuple[float, float, tuple[float, float, float] | None]:
    """(speed µm/s, direction °, front) of a wave from the arrival times of its half maximum
    (front: :func:`_fit_front`'s origin x, y in µm and slowness in ms/µm; None without a fit)."""
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
        return float("nan"), float("nan"), None
    iy, ix = np.nonzero(ok)
    kb = k_below[iy, ix]
    v0, v1 = sm[kb, iy, ix], sm[kb + 1, iy, ix]
    h = half[0, iy, ix]
    frac = np.where(v1 > v0, (h - v0) / np.where(v1 > v0, v1 - v0, 1.0), 0.0)
    t = (box.frame0 + kb + frac) * dt + box.row_delay[iy]
    x, y = box.x[ix].astype(float), box.y[iy].astype(float)
    return _fit_front(x, y, t.astype(float), dt)


def _fit_front(x: np.ndarray, y: np.ndarray, t: np.ndarray, dt: float
               ) -> tuple[float, float, tuple[float, float, float] | None]:
    """Fit t = t0 + s·|p − p0| (s: slowness ms/µm); return (speed µm/s, direction °, (p0 x, p0 y,
    s)), or NaNs and None."""
    design = np.column_stack([np.ones_like(x), x, y])
    (_c0, a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
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
        return float("nan"), float("nan"), None
    _, ox, oy, s = best.x
    # a front the one-source model cannot follow (two waves meeting head-on arrive last in the
    # middle) fits flat: it would cross the wave in a small part of the time its arrivals spread
    # over (0.012 of it for 17 235 µm/s, where every wave measured fitted 0.8-1.07)
    dx, dy = x - ox, y - oy
    distance = np.hypot(dx, dy)
    spread = float(np.percentile(t, 90) - np.percentile(t, 10))
    if spread > 0 and s * float(np.percentile(distance, 90) - np.percentile(distance, 10)) < MIN_FRONT_SPREAD * spread:
        return float("nan"), float("nan"), None
    speed = 1000.0 / s
    norm = np.where(distance == 0, 1.0, distance)
    mx, my = float(np.mean(dx / norm)), float(np.mean(dy / norm))
    direction = math.degrees(math.atan2(my, mx)) if math.hypot(mx, my) >= 0.5 else float("nan")
    return float(speed), direction, (float(ox), float(oy), float(s))


def empty_table() -> pd.DataFrame:
    """The events table without rows: :data:`COLUMNS` with their dtypes."""
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
    the definition of every column. With ``config.offset_adu == "auto"`` the table's
    ``attrs["dark_level"]`` says which dark level was read (:class:`casparks.darklevel.DarkLevel`).
    """
    data = _array(movie)
    for value, what in ((pixel_size_um, "pixel size (µm)"), (frame_interval_ms, "frame interval (ms)")):
        if not (is_number(value) and value > 0):
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
        return empty_table()
    if event_label.dtype.kind == "i" and event_label.min() < 0:
        raise CasparksError("the event label has negative ids", fix="use 0 for no event and positive ids")
    objects = ndimage.find_objects(event_label)
    # the dark level is warned about once, below, where it is known whether it is also uncertain
    base = _baseline(data, _excluded(class_label, event_label), px, dt, config, getattr(movie, "name", None),
                     warn=False, class_label=class_label)
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
        kind = "wave" if code == WAVE else "puff" if code == PUFF else "spark"
        if kind == "wave":
            box = _wave_box(data, event_label, eid, sl, base, px, dt, config, row_delay)
        else:
            box = _local_box(data, event_label, eid, sl, base, px, dt, config, row_delay, kind, class_label)
        row: dict[str, Any] = {"id": eid, "class": name}
        row.update(_measure_box(box, dt, config, kind, data.shape[0]))
        if code == WAVE:
            row["speed_um_per_s"], row["direction_deg"], front = _wave_speed(box, dt, row["amplitude_dff"])
            row.update(_wave_kinetics(data, event_label, eid, sl, base, px, dt, config, row_delay, box, front))
        if event_prob is not None:
            given, p = event_prob
            values = p[sl][inside].astype(np.float64)
            row["confidence"] = float(np.mean(1.0 - values) if given == "background" else np.mean(values))
        row.update(start_ms=sl[0].start * dt, end_ms=sl[0].stop * dt, duration_ms=(sl[0].stop - sl[0].start) * dt,
                   extent_y_um=(sl[1].stop - sl[1].start) * px, extent_x_um=(sl[2].stop - sl[2].start) * px)
        if kind != "wave":  # a width several times the event's own extent is something else's
            largest = max(row["extent_y_um"], row["extent_x_um"])
            for column in ("fwhm_um", "fwhm_y_um"):
                if row.get(column, math.nan) > MAX_WIDTH_PER_EXTENT * largest:
                    row[column] = math.nan
        rows.append(row)
    if not rows:
        return empty_table()
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = np.nan
    table = table[COLUMNS]
    table["id"] = table["id"].astype(np.int64)
    for column in COLUMNS[2:]:
        table[column] = table[column].astype(float)
    # the cell's resting signal above the dark level, which the dark level's standard error is to be
    # read against (the field's median was the background's where the cell fills less than half of it)
    table.attrs["resting_adu"] = significant(cell_resting_adu(base.image, px))
    if base.dark is not None:  # how offset_adu "auto" read the dark level, for the run summary
        dark = warn_dark_level(base.dark, table.attrs["resting_adu"], getattr(movie, "name", None))
        table.attrs["dark_level"] = {**dark.to_dict(), "resting_adu": table.attrs["resting_adu"]}
    log.debug("measured %d events", len(table))
    return table


# ----------------------------------------------------------------------------------------------
# frequency


#: a membrane is a step from the background to the cell within this distance (µm) at the
#: boundary; a cell's own variations are smoother (sharpness 0.3: the step over 3.3 µm)
MEMBRANE_UM = 3.3
#: the cell's level near a pixel stands in for the cell's where it is this fraction of the way
#: from the background to the cell's median level (a dim part of the cell); below, the median
CELL_CONTRAST = 0.3
#: the cell's level near a pixel: the 90th percentile within a square of this side (µm)
CELL_LOCAL_UM = 3.0
#: the background near a pixel: the ring outside the membrane within about this distance (µm, a Gaussian's σ)
BACKGROUND_REACH_UM = 5.0
#: the resting image is the median of at most this many frames spread over the movie
RESTING_FRAMES = 64
#: bright or dark specks smaller than this (µm²) are not the cell, nor holes in it
MIN_CELL_AREA_UM2 = 4.0


def resting_image(movie: Any, offset_adu: float = 0.0, frames: int = RESTING_FRAMES) -> np.ndarray:
    """The movie's resting fluorescence above the dark level (Y×X float32): the median of
    ``frames`` frames spread evenly over it, so sparse events, bleaching and a long movie's
    length hardly matter and only those frames are read."""
    data = _array(movie)
    index = np.unique(np.linspace(0, data.shape[0] - 1, min(frames, data.shape[0])).round().astype(int))
    sample = np.asarray(data[index], dtype=np.float32)
    if np.isnan(sample).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            middle = np.nanmedian(sample, axis=0)
    else:  # 4 × faster than nanmedian
        middle = np.median(sample, axis=0)
    return (middle - np.float32(offset_adu)).astype(np.float32)


def cell_resting_adu(resting: np.ndarray, pixel_size_um: float, cell: np.ndarray | None = None) -> float:
    """The median resting signal of the cell (:func:`cell_mask`, or ``cell`` where given) in a
    resting image above the dark level: what a dark level's error scales ΔF/F0 by, in the cell."""
    cell = cell_mask(resting, pixel_size_um) if cell is None else cell
    return float(np.median(resting[cell] if cell.any() else resting))


def cell_mask(resting: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """The cell in a resting image (:func:`resting_image`, fluorescence above the dark level).

    A cell's F0 varies within it several-fold (dye loading, nucleus, organelles) and the
    background outside it (autofluorescence, stray light) can reach a third of the cell's level,
    so no one level separates them everywhere. What does is the membrane: a step from the
    background to the cell within about a micrometre, where the cell's own variations are smooth.

    1. The image is smoothed by a Gaussian of σ 0.4 µm (photon noise) and split by Otsu's
       threshold on its logarithm (a bright object several times the cell's level, debris or
       a brighter neighbour, does not pull the split above the cell).
    2. Where the split runs along steep edges (a step of the two classes' medians within
       :data:`MEMBRANE_UM`, for at least 2 µm), the field holds background: its level is the
       lower quartile 0.6-1.5 µm outside those edges, the cell's the median as far inside.
       The background near each pixel follows the ring's pixels within about
       :data:`BACKGROUND_REACH_UM` (stray light and an uneven excitation make it a slope, not
       a level: :func:`_background_surface`). Otherwise the cell fills the field (the split ran
       between its brighter and dimmer parts), the background is 0 and the cell's level the
       field's median.
    3. A pixel is cell where it is above the half-maximum between the background and the cell
       near it: the 90th percentile within :data:`CELL_LOCAL_UM` where that stands clearly above
       the background (:data:`CELL_CONTRAST` of the way to the cell's level and 4 noise SDs:
       at the membrane, and in a dim part of the cell, half its own level), the cell's level
       elsewhere (a flat background far from the cell is not half of itself). Enclosed holes
       (a dim nucleus) are filled; specks under :data:`MIN_CELL_AREA_UM2` dropped.

    A field without a usable level (constant, all at or below the dark level, or variations
    that do not stand out of the photon noise) is all cell, as the field was before this estimate.
    """
    px = float(pixel_size_um)
    image = np.nan_to_num(np.asarray(resting, dtype=np.float32), nan=0.0)
    field = np.ones(image.shape, dtype=bool)
    sigma_px = 0.4 / px
    smooth = ndimage.gaussian_filter(image, sigma_px, mode="nearest")
    p90 = float(np.percentile(smooth, 90))
    # the photon noise left after smoothing (white noise: its SD over 2·√π·σ); an image whose
    # variations do not stand out of it shows no cell edge (a blank field, or one all cell)
    noise = 1.4826 * float(np.median(np.abs(image - smooth))) / (2.0 * math.sqrt(math.pi) * max(sigma_px, 0.5))
    if not (p90 > 0 and float(np.std(smooth)) > 3.0 * noise):
        return field
    from skimage.filters import threshold_otsu

    # float64: Otsu's 256 bins over a range of 1e-4 near log(1000) are finer than float32's spacing
    logs = np.log(np.maximum(smooth, np.float32(0.02 * p90)).astype(np.float64))
    if float(logs.max()) - float(logs.min()) < 1e-4:  # under 0.01 %: no edge
        return field
    upper = logs > threshold_otsu(logs)
    if upper.all() or not upper.any():
        return field
    level, lower_level = float(np.median(smooth[upper])), float(np.median(smooth[~upper]))
    membrane = _membrane_levels(smooth, upper, level - lower_level, px)
    if membrane is None or not membrane[0] < 0.5 * level:  # the cell fills the field
        bg, level = 0.0, float(np.median(smooth))
    else:  # the cell's level just inside its membrane: Otsu may have split a hazy background instead
        bg_level, level, outside = membrane
        bg = _background_surface(smooth, outside, bg_level, px)
    near = _local_level(smooth, px)
    clear = near - bg > np.maximum(4.0 * noise, CELL_CONTRAST * (level - bg))
    reference = np.where(clear, near, np.float32(level))
    mask = smooth > bg + 0.5 * (reference - bg)
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        mask &= (sizes >= MIN_CELL_AREA_UM2 / px**2)[labels]
    mask = ndimage.binary_fill_holes(mask)  # enclosed holes of any size: the cell goes round them
    return mask if mask.any() else field


def _membrane_levels(smooth: np.ndarray, upper: np.ndarray, step: float,
                     px: float) -> tuple[float, float, np.ndarray] | None:
    """The background's level just outside the steep stretches of the boundary of ``upper`` (a
    membrane), the cell's just inside them and the background's own pixels of that outer ring
    (under half the cell's level near them), or None where there are none (under 2 µm).

    Outside, the lower quartile of a ring 0.6-1.5 µm out (where a membrane meets a dim part of
    the cell, the ring reaches into it); inside, the median of the same ring within ``upper``
    (the upper class's own median was the haze of a background where the cell is a strip along
    the field's edge: +219 % area in a reviewer's movie)."""
    if min(smooth.shape) < 2:  # one row (a line scan given as T × 1 × X): no membrane to read
        return None
    edge = upper & ~ndimage.binary_erosion(upper, border_value=1)
    gy, gx = np.gradient(smooth)
    steep = edge & (np.hypot(gy, gx) / px * MEMBRANE_UM > max(step, 1e-12))
    if np.count_nonzero(steep) * px < 2.0:
        return None
    outer = ndimage.binary_dilation(steep, iterations=max(1, round(1.5 / px)))
    ring = outer & ~ndimage.binary_dilation(steep, iterations=max(1, round(0.6 / px)))
    outside, inside = ring & ~upper, ring & upper
    if np.count_nonzero(outside) * px * px < 1.0 or not inside.any():
        return None
    background, cell = float(np.percentile(smooth[outside], 25)), float(np.median(smooth[inside]))
    # the background's own pixels: under half the cell's level just inside (a dim part of an
    # uneven cell, split off by Otsu, stands closer to its brighter neighbour)
    sigma = 1.0 / px
    weight = ndimage.gaussian_filter(inside.astype(np.float32), sigma, mode="constant")
    near_cell = ndimage.gaussian_filter(np.where(inside, smooth, 0).astype(np.float32), sigma, mode="constant")
    return background, cell, outside & (2.0 * smooth * weight < near_cell)


def _background_surface(smooth: np.ndarray, outside: np.ndarray, level: float, px: float) -> np.ndarray | float:
    """The background over the field, from the ring just outside the membrane (``outside``):
    its local mean within about :data:`BACKGROUND_REACH_UM`, tending to ``level`` (the ring's
    lower quartile) where no ring is near, then shifted so that a quarter of the ring lies below
    it, as a quarter lay below ``level`` (where a membrane meets a dim part of the cell the ring
    reaches into it).

    Stray light and an uneven excitation make the background vary across the field: with one
    level, a brightly lit stretch of background beside a dimly lit end of the cell passed as cell
    (an illumination falling by 70 % across a 32 µm field with a background of 25 %: +11 to
    +27 % area; now within 2.3 %: benchmarks/results/measure.md)."""
    if np.count_nonzero(outside) * px * px < 1.0:
        return level
    k = max(1, int(round(0.4 / px)))
    H, W = smooth.shape
    pad = ((0, -H % k), (0, -W % k))
    weight = np.pad(outside, pad).astype(np.float32)
    values = np.pad(np.where(outside, smooth, 0), pad).astype(np.float32)
    shape = (weight.shape[0] // k, k, weight.shape[1] // k, k)
    weight, values = weight.reshape(shape).sum(axis=(1, 3)), values.reshape(shape).sum(axis=(1, 3))
    sigma = BACKGROUND_REACH_UM / (px * k)
    weight = ndimage.gaussian_filter(weight, sigma, mode="constant")
    values = ndimage.gaussian_filter(values, sigma, mode="constant")
    prior = 0.002 * float(weight.max())  # far from the ring, the ring's level
    local = (values + prior * level) / (weight + prior)
    if k > 1:
        local = ndimage.zoom(local, k, order=1, mode="nearest", grid_mode=True)
    local = local[:H, :W]
    return (local + np.percentile(smooth[outside] - local[outside], 25)).astype(np.float32)


def _local_level(image: np.ndarray, px: float) -> np.ndarray:
    """The 90th percentile of ``image`` within :data:`CELL_LOCAL_UM`, computed on blocks of about
    0.4 µm (a percentile filter at 0.1 µm per pixel took 1.4 s for 128 × 1024 px) and
    interpolated back."""
    k = max(1, int(round(0.4 / px)))
    H, W = image.shape
    padded = np.pad(image, ((0, -H % k), (0, -W % k)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).mean(axis=(1, 3))
    size = max(3, int(round(CELL_LOCAL_UM / (px * k))) | 1)
    near = ndimage.percentile_filter(blocks, 90, size=size, mode="nearest")
    if k > 1:
        near = ndimage.zoom(near, k, order=1, mode="nearest", grid_mode=True)
    return near[:H, :W]


def frequency_cell_size(frequency: pd.DataFrame) -> tuple[float, float] | None:
    """The (length µm, area µm²) an :func:`event_frequency` table is per, or None where it does
    not say (a table without rows, or written before the columns existed) or they are not finite."""
    if not len(frequency) or not {"length_um", "area_um2"} <= set(frequency.columns):
        return None
    length, area = float(frequency["length_um"].iloc[0]), float(frequency["area_um2"].iloc[0])
    return (length, area) if math.isfinite(length) and math.isfinite(area) else None


def event_frequency(
    events: pd.DataFrame,
    shape: tuple[int, int, int] | np.ndarray,
    pixel_size_um: float,
    frame_interval_ms: float,
    cell_mask: np.ndarray | None = None,
    cell_size: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Events per 100 µm of cell length per s and per 1000 µm² per s, one row per class.

    ``events`` is a table with a 'class' column (from :func:`measure_events` or a simulated
    truth); ``shape`` the movie's (T, Y, X) shape or any array of that shape (e.g. the class
    label). The length is the extent along x of ``cell_mask`` (Y×X, the columns holding any cell
    pixel) or, without a mask, the field's width; the area that of the mask or of the field.
    ``cell_size`` (length µm, area µm²) gives them instead, e.g. a written detection's.
    Rows: spark, wave, puff; columns :data:`FREQUENCY_COLUMNS`.
    """
    if hasattr(shape, "shape"):  # any array of the movie's shape, a Movie, a memory map
        shape = tuple(shape.shape)
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise CasparksError(f"the movie shape must be (T, Y, X), got {shape!r}", fix="pass movie.shape") from None
    if len(shape) != 3:
        raise CasparksError(f"the movie shape must be (T, Y, X), got {shape}", fix="pass movie.shape")
    T, H, W = shape
    px, dt = float(pixel_size_um), float(frame_interval_ms)
    if cell_size is not None:
        length, area = (float(v) for v in cell_size)
    elif cell_mask is not None:
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

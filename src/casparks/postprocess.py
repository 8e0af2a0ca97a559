"""Network probabilities → event classes → event instances (sparks, waves, puffs).

Why: the network gives every voxel a probability of background, spark, wave and puff; a user
wants *events*: one id per spark, wave or puff, each of one class, so that they can be counted,
measured and compared with annotations. This module turns a (4, T, Y, X) probability stack into
a class label (codes 0-3, :mod:`casparks.classes`) and an instance label (ids 1..N, 0 = none),
with every size given in µm and ms and converted with the movie's own pixel size and frame
interval.

Steps (each a pure function, numpy in, numpy out):

1. :func:`probabilities_to_classes`: a voxel is an event where the event probability
   ``1 - p(background)`` exceeds a threshold (fixed, or Otsu's per movie, clamped to
   [``otsu_min``, ``otsu_max``]); its class is the most probable event class.
2. :func:`separate_events`:

   * *wave fringes* (only with ``wave_fringe_min_probability``): a component of spark voxels
     connected to a wave (a wave-class component at least the wave minimum duration and
     diameter) whose mean p(wave) is at least that becomes part of the wave;

   * *fragments*: 3-D connected components (26-connectivity) of each class;
   * *mixed blobs* (touching fragments of several classes): a fragment too small to be an event
     of its own class (below that class's minimum duration or diameter) takes the class of the
     largest fragment it touches, when that one has more voxels; touching fragments of one class
     then merge, and this repeats until nothing changes. Fragments big enough to be events keep
     their class, so a genuine spark next to a wave stays a spark, while a one-frame
     puff-coloured fringe on a spark becomes part of the spark;
   * *waves and puffs*: pieces of one class separated in time by gaps of at most
     ``merge_gap_ms`` (and at most one pixel apart in y/x) are one event (same id); the gap
     voxels are not painted (the class label keeps what the network saw);
   * *waves passing twice* (only with ``wave_split_gap_ms``): where a pixel of a wave is
     empty for longer than that gap and then in the wave again, a second wave has come; the
     26-connected pieces of such later passages that reach the wave minima and
     ``wave_split_min_area_um2`` become one wave of their own (two waves crossing the same
     pixels in turn touch where the second starts and would otherwise be one);
   * *sparks*: each spark component is split at the maxima of the smoothed movie (or, without a
     movie or with ``spark_split_on="probability"``, of the smoothed spark probability) that lie
     at least ``spark_min_distance_um`` apart in space or ``spark_min_distance_ms`` in time
     (:func:`casparks.labels.find_spark_peaks`), by a watershed on the smoothed values. A
     component whose voxels all lie within the min distance of each other cannot hold two
     peaks: it is one spark, whose peak is its voxel nearest the centroid of its values above
     its minimum (no per-spark smoothing, so that thousands of small components cost one
     vectorised pass);
   * events (wave/puff after merging, spark component before splitting) shorter than the class's
     ``*_min_duration_ms`` or narrower than its ``*_min_diameter_um`` are removed (background in
     the class label too). *Duration* = frames spanned × frame interval; *diameter* = the longer
     side of the event's bounding box in y/x × pixel size;
   * so are events whose mean probability of their own class, over their voxels, is below the
     class's ``*_min_mean_probability`` (0: off). This lets a model keep a low voxel threshold
     for a class (a faint puff's voxels rarely pass 0.9) without the many small, doubtful
     blobs a low threshold also lets in: those are uncertain throughout, a real faint event is
     not;
   * *puffs must be transients* (only with ``puff_min_transient_snr`` and a movie): a puff's
     pixels must be brighter during it than in the quieter of the ``transient_window_ms``
     windows just before and just after it (``transient_gap_ms`` away; other events' voxels
     left out), by at least that many noise SDs of one pixel's mean over the puff's frames
     (:func:`transient_snr`). A static patch of bright dye the size of a puff is no event; a
     network that never saw such patches calls them puffs (benchmarks/results/physical.md);
   * ids are 1..N, numbered by onset (first frame, then top, left), uint16 below 65 536 events,
     else uint32.

3. :func:`postprocess`: both steps, returning a :class:`PostprocessResult`; with
   ``spark_in_puff_min_overlap``, a spark touching a puff whose y-x footprint lies at least that
   fraction inside the puff's becomes part of the puff (the network often calls a burst of a puff
   a spark); with ``spark_rescue_threshold``, both steps again at that lower threshold, whose sparks that keep
   clear of every event already found (``spark_rescue_distance_um`` / ``_ms``) are added, on
   movies sampled at least as finely as ``spark_rescue_max_pixel_size_um`` / ``_frame_interval_ms``.

Differences from the reference (Dotti et al. 2024, ``dottipr/sparks_project``,
``process_raw_predictions``), whose numbers are voxels at 0.2 µm × 6.8 ms:

* **Threshold**: the same quantity (their sum of event probabilities equals ``1 - p(background)``),
  but Otsu's threshold is clamped to [0.2, 0.8] (unclamped, a movie without events gets a
  threshold inside the noise and many false events) and computed from a 256-bin histogram of at
  most 4 M voxels (every k-th); a fixed threshold may be given instead.
* **Sizes in µm and ms**: sparks ≥ 10 ms and ≥ 0.6 µm (reference 2 frames and 3 × 3 px), puffs
  ≥ 34 ms (5 frames) and ≥ 0.6 µm (reference: no width), waves ≥ 50 ms (reference: none) and
  ≥ 15 µm (reference: 75 px along x). The diameter is the longer bounding-box side in any
  direction, so a wave crossing the field in y counts as well as one crossing it in x.
* **Spark sizes are checked on the spark component before splitting** (the reference checked
  each split spark, so a small piece of a split spark could vanish and leave a hole).
* **Mixed blobs**: the reference kept each class's components, so a spark with a puff-coloured
  fringe became a spark *and* a puff; we fold fragments that are too small for their class into
  the largest touching event (see above).
* **Spark maxima**: found per spark, with the minimum distance applied as the reference named it
  (1.8 µm and 20 ms; its footprint, a 1 µm disk over 3 frames, suppressed only within about half
  of that), on the movie smoothed within the spark only (normalised convolution, so a bright
  neighbour or the baseline offset does not move the maxima); Gaussian σ 0.6 µm × 20.4 ms, the
  reference's 3 voxels. Without a movie the spark probability is smoothed instead (zero outside
  the spark, so the maxima sit in the thick parts of a blob). Every spark component gets at
  least one peak (the reference added missing ones after the fact). A model's card may split on
  the spark probability even when the movie is given (``spark_split_on``): the network computed
  it at its own sampling, so it separates repeated sparks at one site without the over-splitting
  that a finer split of the movie shows at coarse pixels, where the movie holds fewer photons per
  µm² and ms (sim-v3's card: unsmoothed, 0.9 µm and 20 ms; ``models/sim-v3/README.md``).
* **Gap merging** joins the same pieces as the reference (pieces ≤ 2 frames apart at 6.8 ms),
  expressed in ms; like the reference, the gap voxels stay background.
* **Watershed** without compactness (the reference used compactness 1), on the smoothed values.
* **Ids**: one numbering over all classes in onset order, stored as uint16/uint32 (never wrapping);
  the reference numbered by class.

Limits: a fragment of another class that is big enough to be an event of its own class stays
one (a spark with a puff-coloured fringe lasting ≥ 34 ms gives a spark and a touching puff).
Time grows with the number of spark components wide or long enough to hold two peaks (about
1 ms each on one CPU core): a trained network's output takes well under a second, a random
one with tens of thousands of such blobs takes seconds
(``benchmarks/results/postprocess.md``).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from .classes import BACKGROUND, CLASS_NAMES, EVENT_CLASSES, IGNORE, PUFF, SPARK, WAVE
from .errors import CasparksError, reject_unknown_keys, is_number
from .io import instance_dtype
from .labels import find_spark_peaks

__all__ = [
    "PostprocessConfig",
    "PostprocessError",
    "PostprocessResult",
    "postprocess",
    "probabilities_to_classes",
    "separate_events",
]

log = logging.getLogger(__name__)

_EPS = 1e-9
SPLIT_SOURCES = ("movie", "probability")  # where touching sparks are split (PostprocessConfig.spark_split_on)
_FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity
_OTSU_SAMPLES = 1 << 22  # voxels the Otsu histogram is built from (every k-th voxel)
_OTSU_BINS = 256
_BOX_COST = 20_000  # voxels a per-box Python round costs, in whole-array work
_MAX_PAIRWISE = 4_000  # fragments of one class up to which gap candidates are found pairwise
_MANY_OBJECTS = 10_000  # from this many fragments, boxes come from voxel coordinates, not find_objects
_N_CODES = max(EVENT_CLASSES) + 1
assert EVENT_CLASSES == tuple(range(1, _N_CODES))


# ----------------------------------------------------------------------------------------------
# configuration


class PostprocessError(CasparksError, ValueError):
    """An invalid post-processing option or input (a ValueError for Python callers, one line in the CLI)."""




@dataclass(frozen=True)
class PostprocessConfig:
    """How probabilities become events. Sizes in µm (space) and ms (time).

    Attributes:
        event_threshold: a voxel is an event where ``1 - p(background)`` exceeds this: a number
            in (0, 1), or ``"otsu"`` for Otsu's threshold of the movie's event probabilities.
        otsu_min, otsu_max: Otsu's threshold is clamped to this range (a movie without events
            would otherwise get a threshold inside its noise).
        merge_gap_ms: pieces of one wave or puff separated in time by empty frames lasting at
            most this (empty frames × frame interval) are one event (20 ms: gaps of up to 2
            frames at 6.8 ms, as the reference); 0 turns merging off.
        spark_min_distance_um, spark_min_distance_ms: two spark maxima closer than both (in space
            and in time) are one spark; farther apart in either, two sparks (reference values).
        spark_smooth_sigma_um, spark_smooth_sigma_ms: Gaussian σ of the smoothing before the
            maxima search (reference: 3 voxels = 0.6 µm, 20.4 ms).
        spark_split_on: where touching sparks are split: ``"movie"`` (the reference: maxima of
            the smoothed movie, or of the spark probability when no movie is given) or
            ``"probability"`` (maxima of the spark probability, which the network computed at
            its own sampling, so its noise does not grow with coarser pixels as the movie's
            does per µm² and ms).
        spark_min_duration_ms, spark_min_diameter_um: smaller spark components are removed
            (10 ms: a spark rises for ~10 ms; 0.6 µm = 3 px, the reference's width).
        wave_min_duration_ms, wave_min_diameter_um: smaller waves are removed (a wave crosses
            ≥ 15 µm, the reference's width; 50 ms is far below any wave's duration).
        puff_min_duration_ms, puff_min_diameter_um: smaller puffs are removed (34 ms = the
            reference's 5 frames; puffs last 100-600 ms).
        spark_threshold, wave_threshold, puff_threshold: per-class event thresholds, applied to
            voxels whose most probable event class is that class (None: ``event_threshold``).
            A model whose probabilities are calibrated differently per class (e.g. puffs less
            confident than sparks) gets its own values from its card.
        wave_fringe_min_probability: a spark component (26-connected spark voxels) connected
            to a wave (a wave-class component of at least the wave minimum duration and
            diameter) becomes part of the wave when its mean p(wave) is at least this: the
            network, hesitating between the two at a wave's fringe, otherwise scatters false
            sparks along the wave. None (default): sparks stay sparks. In [0, 1]; needs the
            probabilities.
        wave_split_gap_ms, wave_split_min_area_um2: a wave's voxels at a pixel that come after
            that pixel was out of the wave for longer than this gap (ms) are a later wave
            passing; the 26-connected pieces of them that reach the wave minima and cover at
            least that area (µm², their footprint in y-x) become one wave of their own, smaller
            pieces (slivers along the wave's edge) stay with the wave. None (default): a
            connected wave is one event.
        puff_min_transient_snr: a puff whose :func:`transient_snr` (its brightness above the
            quieter side of its surroundings in time, in noise units) is below this is
            removed. None (default): off. Needs the movie.
        transient_window_ms, transient_gap_ms: the baseline windows of that test: this long,
            starting this far before the puff's first frame and after its last.
        spark_rescue_threshold: a second, lower threshold for isolated sparks. The movie is also
            post-processed with the event and spark thresholds at this value; a spark found so
            that lasts at most ``spark_rescue_max_duration_ms`` and keeps farther than
            ``spark_rescue_distance_um`` in space or ``spark_rescue_distance_ms`` in time from
            every event found at the model's thresholds is added. A faint spark is often seen
            (p(event) ≈ 0.8) but split between spark and puff below the spark threshold; a low
            threshold everywhere also swells the fringes of the events already found, and far
            from them it does not. None (default): off.
        spark_rescue_max_pixel_size_um, spark_rescue_max_frame_interval_ms: the rescue runs only
            on movies sampled at least this finely (1 % tolerance); None: at every sampling. A
            coarser movie is upsampled to the model's sampling, and its interpolated noise makes
            spark-sized blobs that the lower threshold takes for sparks (sim-v3's validation
            movies: 7 of 88 rescued at 0.25-0.3 µm were sparks, 65 of 95 at 0.1-0.2 µm).
        spark_in_puff_min_overlap: a spark that touches a puff (26-connected) and whose
            footprint in y-x lies at least this fraction inside that puff's footprint becomes
            part of the puff. The network often calls a burst of a puff a spark: a false spark,
            and a puff whose course stops at it (no time to peak, no FDHM); true sparks that fire
            within a puff's footprint go too (models/sim-v3/README.md, session 39). None
            (default): sparks stay sparks. In [0, 1]; with several puffs touching, the one
            with most contact takes it.
        spark_min_mean_probability, wave_min_mean_probability, puff_min_mean_probability:
            events whose mean probability of their class (e.g. p(puff) for a puff) over their
            voxels is below this are removed (sparks: the component before splitting); 0 keeps
            all. In [0, 1); needs the probabilities.

    The duration of an event is the number of frames it spans × the frame interval; its diameter
    the longer side of its bounding box in y/x × the pixel size.
    """

    event_threshold: float | str = "otsu"
    otsu_min: float = 0.2
    otsu_max: float = 0.8
    merge_gap_ms: float = 20.0
    spark_min_distance_um: float = 1.8
    spark_min_distance_ms: float = 20.0
    spark_smooth_sigma_um: float = 0.6
    spark_smooth_sigma_ms: float = 20.4
    spark_split_on: str = "movie"
    spark_min_duration_ms: float = 10.0
    spark_min_diameter_um: float = 0.6
    wave_min_duration_ms: float = 50.0
    wave_min_diameter_um: float = 15.0
    puff_min_duration_ms: float = 34.0
    puff_min_diameter_um: float = 0.6
    spark_threshold: float | None = None
    wave_threshold: float | None = None
    puff_threshold: float | None = None
    spark_min_mean_probability: float = 0.0
    wave_min_mean_probability: float = 0.0
    puff_min_mean_probability: float = 0.0
    wave_fringe_min_probability: float | None = None
    wave_split_gap_ms: float | None = None
    wave_split_min_area_um2: float = 50.0
    puff_min_transient_snr: float | None = None
    transient_window_ms: float = 200.0
    transient_gap_ms: float = 14.0
    spark_rescue_threshold: float | None = None
    spark_rescue_distance_um: float = 1.0
    spark_rescue_distance_ms: float = 20.0
    spark_rescue_max_duration_ms: float = 100.0
    spark_rescue_max_pixel_size_um: float | None = None
    spark_rescue_max_frame_interval_ms: float | None = None
    spark_in_puff_min_overlap: float | None = None

    def __post_init__(self) -> None:
        threshold = self.event_threshold
        if isinstance(threshold, str) and threshold.strip().lower() != "otsu":
            try:
                threshold = float(threshold)
            except ValueError:
                threshold = None
        if isinstance(threshold, str):
            object.__setattr__(self, "event_threshold", "otsu")
        elif is_number(threshold) and 0 < threshold < 1:
            object.__setattr__(self, "event_threshold", float(threshold))
        else:
            raise PostprocessError(
                f"event_threshold must be 'otsu' or a number between 0 and 1, got {self.event_threshold!r}",
                fix="use event_threshold: otsu, or e.g. 0.5",
            )
        for name in ("spark_threshold", "wave_threshold", "puff_threshold", "spark_rescue_threshold"):
            value = getattr(self, name)
            if value is None:
                continue
            if not (is_number(value) and 0 < value < 1):
                raise PostprocessError(f"{name} must be a number between 0 and 1 (or null), got {value!r}",
                                       fix=f"e.g. {name}: 0.9")
            object.__setattr__(self, name, float(value))
        fringe = self.wave_fringe_min_probability
        if fringe is not None:
            if not (is_number(fringe) and 0 <= fringe <= 1):
                raise PostprocessError("wave_fringe_min_probability must be a number in [0, 1] (or null), "
                                       f"got {fringe!r}", fix="e.g. wave_fringe_min_probability: 0.2")
            object.__setattr__(self, "wave_fringe_min_probability", float(fringe))
        overlap = self.spark_in_puff_min_overlap
        if overlap is not None:
            if not (is_number(overlap) and 0 <= overlap <= 1):
                raise PostprocessError("spark_in_puff_min_overlap must be a number in [0, 1] (or null), "
                                       f"got {overlap!r}", fix="e.g. spark_in_puff_min_overlap: 0.5")
            object.__setattr__(self, "spark_in_puff_min_overlap", float(overlap))
        for name, example in (("wave_split_gap_ms", 200), ("spark_rescue_max_pixel_size_um", 0.2),
                              ("spark_rescue_max_frame_interval_ms", 6.8)):  # a length, or None: off
            value = getattr(self, name)
            if value is None:
                continue
            if not (is_number(value) and value > 0):
                unit = "µm" if name.endswith("_um") else "ms"
                raise PostprocessError(f"{name} must be a positive number of {unit} (or null), got {value!r}",
                                       fix=f"e.g. {name}: {example}")
            object.__setattr__(self, name, float(value))
        snr = self.puff_min_transient_snr
        if snr is not None:
            if not is_number(snr):
                raise PostprocessError(f"puff_min_transient_snr must be a number (or null), got {snr!r}",
                                       fix="e.g. puff_min_transient_snr: 3")
            object.__setattr__(self, "puff_min_transient_snr", float(snr))
        if self.spark_split_on not in SPLIT_SOURCES:
            raise PostprocessError(f"spark_split_on must be one of {', '.join(SPLIT_SOURCES)}, "
                                   f"got {self.spark_split_on!r}", fix="e.g. spark_split_on: probability")
        for f in fields(self):
            if (f.name == "event_threshold" or f.name.endswith("_threshold")
                    or f.name in ("spark_split_on", "wave_fringe_min_probability", "wave_split_gap_ms",
                                  "spark_in_puff_min_overlap",
                                  "puff_min_transient_snr", "spark_rescue_max_pixel_size_um",
                                  "spark_rescue_max_frame_interval_ms")):
                continue
            value = getattr(self, f.name)
            if f.name.endswith("_min_mean_probability"):
                if not (is_number(value) and 0 <= value < 1):
                    raise PostprocessError(f"{f.name} must be a number in [0, 1), got {value!r}",
                                           fix=f"e.g. {f.name}: 0.45, or 0 to keep every event")
                object.__setattr__(self, f.name, float(value))
                continue
            strictly = f.name.startswith(("spark_min_distance", "otsu", "transient_window"))
            if not (is_number(value) and (value > 0 if strictly else value >= 0)):
                unit = "µm" if f.name.endswith("_um") else "ms" if f.name.endswith("_ms") else ""
                raise PostprocessError(
                    f"{f.name} must be a {'positive' if strictly else 'non-negative'} number"
                    f"{' of ' + unit if unit else ''}, got {value!r}",
                    fix=f"set {f.name} {'> 0' if strictly else '>= 0'}",
                )
        if not self.otsu_min <= self.otsu_max < 1:
            raise PostprocessError(
                f"otsu_min ({self.otsu_min}) must not exceed otsu_max ({self.otsu_max}), which must be below 1",
                fix="e.g. otsu_min: 0.2, otsu_max: 0.8",
            )

    def class_threshold(self, code: int, event_threshold: float) -> float:
        """Event threshold for voxels whose most probable event class is ``code``."""
        value = getattr(self, f"{CLASS_NAMES[code]}_threshold")
        return float(event_threshold if value is None else value)

    def min_duration_ms(self, code: int) -> float:
        """Minimum duration (ms) of an event of class ``code`` (1 spark, 2 wave, 3 puff)."""
        return float(getattr(self, f"{CLASS_NAMES[code]}_min_duration_ms"))

    def min_diameter_um(self, code: int) -> float:
        """Minimum diameter (µm, longer bounding-box side in y/x) of an event of class ``code``."""
        return float(getattr(self, f"{CLASS_NAMES[code]}_min_diameter_um"))

    def min_mean_probability(self, code: int) -> float:
        """Minimum mean probability of class ``code`` over the voxels of an event of that class."""
        return float(getattr(self, f"{CLASS_NAMES[code]}_min_mean_probability"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for YAML/JSON); :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PostprocessConfig:
        """Build from a dict; unknown keys are an error naming the known ones."""
        reject_unknown_keys({f.name for f in fields(cls)}, values, "post-processing option", PostprocessError)
        return cls(**dict(values))


# ----------------------------------------------------------------------------------------------
# result


@dataclass(frozen=True, eq=False)
class PostprocessResult:
    """Events found in one movie.

    Attributes:
        class_label: uint8 T×Y×X, codes 0 background, 1 spark, 2 wave, 3 puff.
        event_label: uint16 (uint32 from 65 536 events) T×Y×X, ids 1..N in onset order, 0 = none.
        event_threshold: the threshold on ``1 - p(background)`` that was used.
        event_classes: (N,) uint8, class code of event ``i + 1``.
        spark_peaks: (S, 3) int64 t, y, x voxel of each spark's smoothed maximum (for sparks too
            small to hold two maxima: the voxel nearest their intensity centroid), one row per
            spark in id order: row i belongs to event ``spark_ids[i]``.
        config: the configuration used.
    """

    class_label: np.ndarray
    event_label: np.ndarray
    event_threshold: float
    event_classes: np.ndarray
    spark_peaks: np.ndarray
    config: PostprocessConfig = field(default_factory=PostprocessConfig)

    @property
    def n_events(self) -> int:
        return int(self.event_classes.size)

    @property
    def spark_ids(self) -> np.ndarray:
        """Ids of the spark events, ascending (the events of the rows of :attr:`spark_peaks`)."""
        return np.flatnonzero(self.event_classes == SPARK) + 1

    @property
    def counts(self) -> dict[str, int]:
        """Number of events per class name."""
        return {name: int(np.count_nonzero(self.event_classes == code)) for code, name in CLASS_NAMES.items()}


# ----------------------------------------------------------------------------------------------
# step 1: probabilities → classes


def probabilities_to_classes(
    probabilities: np.ndarray, config: PostprocessConfig | None = None
) -> tuple[np.ndarray, float]:
    """Class label (uint8 T×Y×X, codes 0-3) and the event threshold used.

    ``probabilities``: float (C, T, Y, X), channel k = class code k (0 background, 1 spark,
    2 wave, 3 puff; C = 2 for spark-only networks). A voxel is an event where
    ``1 - p(background)`` exceeds the threshold; its class is the most probable event class
    (ties: the lowest code).
    """
    config = config if config is not None else PostprocessConfig()
    p = np.asarray(probabilities)
    if p.ndim != 4 or not 2 <= p.shape[0] <= _N_CODES:
        raise PostprocessError(
            f"probabilities must have shape (4, T, Y, X) (channels: background, spark, wave, puff), got {p.shape}"
        )
    if p.dtype.kind != "f":
        raise PostprocessError(f"probabilities must be floating point, got dtype {p.dtype}")
    event = np.subtract(np.float32(1.0), p[0], dtype=np.float32)
    if config.event_threshold == "otsu":
        threshold = _otsu(event, float(config.otsu_min), float(config.otsu_max))
    else:
        threshold = float(config.event_threshold)
    per_class = np.array([config.class_threshold(code, threshold) for code in range(SPARK, p.shape[0])],
                         dtype=np.float32)
    candidate = event > per_class.min()
    classes = np.zeros(candidate.shape, dtype=np.uint8)
    if candidate.any():
        if p.shape[0] == 2:
            best = np.zeros(int(np.count_nonzero(candidate)), dtype=np.uint8)
        else:
            best = np.argmax(p[1:, candidate], axis=0).astype(np.uint8)  # (n,): only the candidate voxels
        keep = event[candidate] > per_class[best]
        values = np.where(keep, best + np.uint8(SPARK), np.uint8(0)).astype(np.uint8)
        classes[candidate] = values
    del event
    return classes, threshold


def _otsu(event: np.ndarray, low: float, high: float) -> float:
    """Otsu's threshold of the event probabilities (256 bins on [0, 1]), clamped to [low, high]."""
    flat = event.reshape(-1)
    return otsu_threshold(otsu_counts(flat[:: otsu_step(flat.size)]), low, high)


def otsu_step(n_voxels: int) -> int:
    """Otsu's histogram is built from every this-many-th voxel of a movie of ``n_voxels``."""
    return max(1, -(-n_voxels // _OTSU_SAMPLES))


def otsu_counts(event: np.ndarray) -> np.ndarray:
    """Histogram of event probabilities for :func:`otsu_threshold`; the sum of those of a movie's
    parts is the movie's (segments: one threshold for the whole movie)."""
    return np.histogram(event, bins=_OTSU_BINS, range=(0.0, 1.0))[0]


def otsu_threshold(counts: np.ndarray, low: float, high: float) -> float:
    """Otsu's threshold of a histogram of :func:`otsu_counts`, clamped to [low, high]."""
    filled = np.flatnonzero(counts)
    if filled.size < 2:  # one value everywhere: nothing to separate
        value = 0.5 * (low + high)
    else:
        edges = np.linspace(0.0, 1.0, _OTSU_BINS + 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        span = slice(int(filled[0]), int(filled[-1]) + 1)
        value = float(threshold_otsu(hist=(counts[span], centres[span])))
    clamped = min(max(value, low), high)
    log.debug("event threshold: Otsu %.3f, used %.3f", value, clamped)
    return float(clamped)


# ----------------------------------------------------------------------------------------------
# step 2: classes → instances


def separate_events(
    class_label: np.ndarray,
    probabilities: np.ndarray | None,
    config: PostprocessConfig | None,
    pixel_size_um: float,
    frame_interval_ms: float,
    movie: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cleaned class label (uint8) and instance label (uint16/uint32, ids 1..N, 0 = none).

    ``class_label``: T×Y×X codes 0-3 (4 = ignore is kept and is no event);
    ``probabilities``: the (C, T, Y, X) stack the classes came from (only the spark channel is
    used, when ``movie`` is None; may be None when a movie is given); ``movie``: the raw T×Y×X
    recording (array or :class:`casparks.io.Movie`), whose smoothed maxima split touching sparks.
    See the module docstring for the rules.
    """
    sep = _separate(class_label, probabilities, config, pixel_size_um, frame_interval_ms, movie)
    return sep.classes, sep.instances


def postprocess(
    probabilities: np.ndarray,
    config: PostprocessConfig | None,
    pixel_size_um: float,
    frame_interval_ms: float,
    movie: np.ndarray | None = None,
) -> PostprocessResult:
    """Probabilities (C, T, Y, X) → :class:`PostprocessResult` (classes, instances, threshold, peaks)."""
    config = config if config is not None else PostprocessConfig()
    _check_units(pixel_size_um, frame_interval_ms)
    classes, threshold = probabilities_to_classes(probabilities, config)
    sep = _separate(classes, probabilities, config, pixel_size_um, frame_interval_ms, movie)
    if config.spark_in_puff_min_overlap is not None:
        sep = _sparks_into_puffs(sep, config.spark_in_puff_min_overlap)
    if _rescues_sparks(config, pixel_size_um, frame_interval_ms):
        sep = _rescue_sparks(sep, probabilities, config, pixel_size_um, frame_interval_ms, movie)
    log.info(
        "post-processing: threshold %.3f, %d events (%s)",
        threshold,
        sep.event_classes.size,
        ", ".join(f"{np.count_nonzero(sep.event_classes == c)} {CLASS_NAMES[c]}s" for c in EVENT_CLASSES),
    )
    return PostprocessResult(sep.classes, sep.instances, threshold, sep.event_classes, sep.spark_peaks, config)


# ----------------------------------------------------------------------------------------------
# implementation


@dataclass
class _Separated:
    classes: np.ndarray
    instances: np.ndarray
    event_classes: np.ndarray
    spark_peaks: np.ndarray


@dataclass
class _Fragments:
    """Connected components of each class: id volume and, per id, class, voxels and bounding box.

    Index 0, and ids left unused when fragments merge, have class 0.
    """

    labels: np.ndarray  # int32 T×Y×X
    code: np.ndarray  # (n + 1,) uint8
    size: np.ndarray  # (n + 1,) int64
    lo: np.ndarray  # (n + 1, 3) int64, first voxel index per axis
    hi: np.ndarray  # (n + 1, 3) int64, one past the last
    probability: np.ndarray | None = None  # (n + 1,) summed probability of each fragment's class

    def probable(self, ids: np.ndarray, group: np.ndarray, code: int, minima: _Minima) -> np.ndarray:
        """Whether each group of fragments ``ids`` (group index per fragment, 0..k-1) has a mean
        probability of class ``code`` of at least the class's minimum (all True without one)."""
        k = int(group.max()) + 1 if group.size else 0
        if minima.mean_probability[code] <= 0 or self.probability is None:
            return np.ones(k, dtype=bool)
        total = np.bincount(group, weights=self.probability[ids], minlength=k)
        voxels = np.bincount(group, weights=self.size[ids], minlength=k)
        return total >= minima.mean_probability[code] * voxels


@dataclass(frozen=True)
class _Minima:
    """Per-class minimum sizes in whole voxels, indexed by class code."""

    frames: np.ndarray
    pixels: np.ndarray
    mean_probability: np.ndarray  # (float) per class code; 0: no minimum

    @classmethod
    def of(cls, config: PostprocessConfig, pixel_size_um: float, frame_interval_ms: float) -> _Minima:
        frames = np.zeros(_N_CODES, dtype=np.int64)
        pixels = np.zeros(_N_CODES, dtype=np.int64)
        probability = np.zeros(_N_CODES, dtype=np.float64)
        for code in EVENT_CLASSES:
            frames[code] = math.ceil(config.min_duration_ms(code) / frame_interval_ms - _EPS)
            pixels[code] = math.ceil(config.min_diameter_um(code) / pixel_size_um - _EPS)
            probability[code] = config.min_mean_probability(code)
        return cls(frames, pixels, probability)

    def passes(self, code: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Whether boxes ``lo``..``hi`` (N×3) of classes ``code`` reach their class's minima."""
        extent = hi - lo
        diameter = np.maximum(extent[:, 1], extent[:, 2])
        return (extent[:, 0] >= self.frames[code]) & (diameter >= self.pixels[code])


def _check_units(pixel_size_um: float, frame_interval_ms: float) -> None:
    for name, value, unit in (("pixel_size_um", pixel_size_um, "µm"), ("frame_interval_ms", frame_interval_ms, "ms")):
        if not (is_number(value) and value > 0):
            raise PostprocessError(
                f"{name} must be a positive number of {unit}, got {value!r}",
                fix="give the movie's pixel size (µm) and frame interval (ms)",
            )


def _box(lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _separate(
    class_label: np.ndarray,
    probabilities: np.ndarray | None,
    config: PostprocessConfig | None,
    pixel_size_um: float,
    frame_interval_ms: float,
    movie: np.ndarray | None,
) -> _Separated:
    config = config if config is not None else PostprocessConfig()
    _check_units(pixel_size_um, frame_interval_ms)
    classes = np.asarray(class_label)
    if classes.ndim != 3:
        raise PostprocessError(f"the class label must be T×Y×X, got shape {classes.shape}")
    if classes.dtype.kind not in "uib":
        raise PostprocessError(f"the class label must hold integer codes, got dtype {classes.dtype}")
    highest = int(classes.max()) if classes.size else 0
    if classes.size and (int(classes.min()) < 0 or highest > IGNORE):
        raise PostprocessError("the class label holds codes outside 0-4 (0 background, 1 spark, 2 wave, 3 puff, 4 ignore)")
    split_movie = movie if config.spark_split_on == "movie" else None
    if config.spark_split_on == "probability":
        _required_probabilities(probabilities, classes.shape,
                                "spark_split_on is 'probability' but no probabilities were given",
                                fix="pass the probabilities, or set spark_split_on: movie")
    source = _spark_source(classes.shape, probabilities, split_movie)
    steps = (float(frame_interval_ms), float(pixel_size_um), float(pixel_size_um))

    minima = _Minima.of(config, pixel_size_um, frame_interval_ms)
    codes = classes if highest <= PUFF else np.where(classes <= PUFF, classes, BACKGROUND).astype(np.uint8)
    if config.wave_fringe_min_probability is not None:
        codes = _wave_fringes(codes, probabilities, config.wave_fringe_min_probability, minima)
    frags = _fragments(codes, minima)
    del codes
    if minima.mean_probability.any():
        frags = replace(frags, probability=_class_probability_sums(frags, probabilities))
    found = _Events(np.zeros(frags.code.size, dtype=np.int64))
    transients = None
    if config.puff_min_transient_snr is not None:
        if movie is None:
            raise PostprocessError("puff_min_transient_snr needs the movie",
                                   fix="pass the movie, or set puff_min_transient_snr: null")
        transients = _Transients(_movie_array(movie, classes.shape), frags.labels, config.puff_min_transient_snr,
                                 max(3, round(config.transient_window_ms / frame_interval_ms)),
                                 max(1, round(config.transient_gap_ms / frame_interval_ms)))
    _add_waves_and_puffs(found, frags, minima, math.floor(config.merge_gap_ms / frame_interval_ms + _EPS), transients)
    if config.wave_split_gap_ms is not None:
        _split_wave_passages(found, frags, minima, math.floor(config.wave_split_gap_ms / frame_interval_ms + _EPS),
                             math.ceil(config.wave_split_min_area_um2 / pixel_size_um**2 - _EPS))
    sparks = _add_sparks(found, frags, minima, source, config, steps, smooth_within=split_movie is not None)

    codes = np.concatenate(found.codes) if found.codes else np.zeros(0, dtype=np.uint8)
    starts = np.concatenate(found.starts) if found.starts else np.zeros((0, 3), dtype=np.int64)
    order, new_id = _onset_order(codes, starts)
    dtype = instance_dtype(found.n)
    instances = new_id[found.event_of].astype(dtype)[frags.labels]
    for box, pieces, before in found.paint:
        region = instances[box]
        hit = pieces > 0
        region[hit] = new_id[pieces[hit] + before].astype(dtype)

    code_lut = np.where(found.event_of > 0, frags.code, BACKGROUND).astype(np.uint8)
    code_lut[sparks] = SPARK  # split sparks are painted, not looked up
    cleaned = code_lut[frags.labels]
    if highest == IGNORE:
        cleaned[classes == IGNORE] = IGNORE

    spark_peaks = np.zeros((0, 3), dtype=np.int64)
    if found.peaks:
        spark_peaks = np.concatenate(found.peaks).astype(np.int64)
        spark_peaks = spark_peaks[np.argsort(new_id[np.concatenate(found.peak_numbers)], kind="stable")]
    return _Separated(cleaned, instances, codes[order], spark_peaks)


def _onset_order(codes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Events (class ``codes``, first voxel of their box ``starts``, k×3) in onset order: first
    frame, then top, then left, then class. Returns the order and the new id of each old id
    1..k (index 0: background)."""
    order = np.lexsort((codes, starts[:, 2], starts[:, 1], starts[:, 0]))
    new_id = np.zeros(codes.size + 1, dtype=np.int64)
    new_id[order + 1] = np.arange(1, codes.size + 1)
    return order, new_id


def _rescues_sparks(config: PostprocessConfig, pixel_size_um: float, frame_interval_ms: float) -> bool:
    """Whether the spark rescue runs on a movie of this sampling (see :class:`PostprocessConfig`)."""
    if config.spark_rescue_threshold is None:
        return False
    return all(limit is None or value <= limit * 1.01
               for value, limit in ((pixel_size_um, config.spark_rescue_max_pixel_size_um),
                                    (frame_interval_ms, config.spark_rescue_max_frame_interval_ms)))


def _rescue_sparks(sep: _Separated, probabilities: np.ndarray, config: PostprocessConfig, pixel_size_um: float,
                   frame_interval_ms: float, movie: np.ndarray | None) -> _Separated:
    """``sep`` with the isolated sparks found at ``config.spark_rescue_threshold`` added (see
    :class:`PostprocessConfig`), every event renumbered in onset order."""
    # only this pass's sparks are used: the tests that decide waves and puffs alone are left out
    # (the same sparks, sooner)
    low = replace(config, event_threshold=config.spark_rescue_threshold, spark_threshold=config.spark_rescue_threshold,
                  spark_rescue_threshold=None, puff_min_transient_snr=None, wave_split_gap_ms=None,
                  wave_min_mean_probability=0.0, puff_min_mean_probability=0.0)
    classes, _ = probabilities_to_classes(probabilities, low)
    other = _separate(classes, probabilities, low, pixel_size_um, frame_interval_ms, movie)
    del classes
    reach_pixels = config.spark_rescue_distance_um / pixel_size_um
    frames, pixels = (math.floor(d + _EPS) for d in (config.spark_rescue_distance_ms / frame_interval_ms, reach_pixels))
    reach = (frames, pixels, pixels)
    max_frames = math.floor(config.spark_rescue_max_duration_ms / frame_interval_ms + _EPS)
    other_sparks = np.flatnonzero(other.event_classes == SPARK) + 1  # ids, in the order of other.spark_peaks
    rescued = []
    boxes = ndimage.find_objects(other.instances)
    for row, event in enumerate(other_sparks):
        box = boxes[event - 1]
        if box is None or box[0].stop - box[0].start > max_frames:
            continue
        grown = tuple(slice(max(0, b.start - r), b.stop + r) for b, r in zip(box, reach))
        mask = other.instances[grown] == event
        if not _near(mask, sep.instances[grown] > 0, reach[0], reach_pixels):
            rescued.append((grown, mask, other.spark_peaks[row]))
    if not rescued:
        return sep
    n_before = sep.event_classes.size
    n = n_before + len(rescued)
    instances = sep.instances.astype(instance_dtype(n), copy=True)
    classes = sep.classes.copy()
    for k, (grown, mask, _) in enumerate(rescued, n_before + 1):
        instances[grown][mask] = k
        classes[grown][mask] = SPARK
    codes = np.concatenate([sep.event_classes, np.full(len(rescued), SPARK, dtype=np.uint8)])
    peak_ids = np.concatenate([np.flatnonzero(sep.event_classes == SPARK) + 1, np.arange(n_before + 1, n + 1)])
    peaks = np.concatenate([sep.spark_peaks.reshape(-1, 3), np.array([peak for _, _, peak in rescued], dtype=np.int64)])
    return _in_onset_order(classes, instances, codes, peaks, peak_ids)


def _in_onset_order(classes: np.ndarray, instances: np.ndarray, codes: np.ndarray, peaks: np.ndarray,
                    peak_ids: np.ndarray) -> _Separated:
    """Events 1..k of ``instances`` (class ``codes``; spark peaks ``peaks`` of events ``peak_ids``)
    renumbered in onset order (:func:`_onset_order`), the peaks in the order of their sparks' ids:
    what a step that adds or merges events hands on."""
    starts = np.array([[b.start for b in box] for box in ndimage.find_objects(instances, max_label=codes.size)],
                      dtype=np.int64).reshape(-1, 3)
    order, new_id = _onset_order(codes, starts)
    instances = new_id.astype(instances.dtype)[instances]
    peaks = peaks.reshape(-1, 3)[np.argsort(new_id[peak_ids], kind="stable")]
    return _Separated(classes, instances, codes[order], peaks)


def _sparks_into_puffs(sep: _Separated, min_overlap: float) -> _Separated:
    """``sep`` with each spark that touches a puff and lies at least ``min_overlap`` of its y-x
    footprint inside that puff's made part of the puff (see :class:`PostprocessConfig`), every
    event renumbered in onset order."""
    n = sep.event_classes.size
    is_puff = np.zeros(n + 1, dtype=bool)
    is_puff[1:] = sep.event_classes == PUFF
    spark_ids = np.flatnonzero(sep.event_classes == SPARK) + 1
    if not is_puff.any() or spark_ids.size == 0:
        return sep
    boxes = ndimage.find_objects(sep.instances, max_label=n)
    target = np.arange(n + 1)
    for spark in spark_ids:
        box = boxes[spark - 1]
        if box is None:
            continue
        grown = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
        region = sep.instances[grown]
        mask = region == spark
        contact = region[ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), dtype=bool)) & ~mask]
        contact = contact[is_puff[contact]]
        if contact.size == 0:
            continue
        values, counts = np.unique(contact, return_counts=True)
        puff = int(values[np.argmax(counts)])
        frames = boxes[puff - 1][0]
        footprint = mask.any(axis=0)
        puff_footprint = (sep.instances[(frames, *grown[1:])] == puff).any(axis=0)
        if np.count_nonzero(footprint & puff_footprint) >= min_overlap * np.count_nonzero(footprint) - _EPS:
            target[spark] = puff
    absorbed = target != np.arange(n + 1)
    if not absorbed.any():
        return sep
    kept = np.flatnonzero(~absorbed[1:]) + 1  # old ids that stay events
    compact = np.zeros(n + 1, dtype=np.int64)
    compact[kept] = np.arange(1, kept.size + 1)
    instances = compact[target].astype(sep.instances.dtype)[sep.instances]
    classes = sep.classes.copy()
    classes[absorbed[sep.instances]] = PUFF
    stays = ~absorbed[spark_ids]
    return _in_onset_order(classes, instances, sep.event_classes[kept - 1], sep.spark_peaks.reshape(-1, 3)[stays],
                           compact[spark_ids[stays]])


def _near(mask: np.ndarray, events: np.ndarray, frames: int, pixels: float) -> bool:
    """Whether a voxel of ``events`` lies within ``frames`` in time and, there, ``pixels`` in space
    (a disc, distance ≤ ``pixels``) of a voxel of ``mask`` (T×Y×X bool, one box): what "not
    farther than" both distances means. (The rescue's zone was a box of rounded sizes: 20.4 ms at
    6.8 ms frames, and 1.41 µm along a diagonal, counted as within 20 ms and 1 µm.)"""
    reached = ndimage.maximum_filter1d(events, size=2 * frames + 1, axis=0, mode="constant") if frames else events
    for t in np.flatnonzero(mask.any(axis=(1, 2))):
        if reached[t].any() and ndimage.distance_transform_edt(~reached[t])[mask[t]].min() <= pixels + _EPS:
            return True
    return False


@dataclass
class _Events:
    """Events found so far, numbered 1..n in the order they were found."""

    event_of: np.ndarray  # fragment id → event number (0: removed, or painted by a watershed)
    codes: list[np.ndarray] = field(default_factory=list)  # class of each event
    starts: list[np.ndarray] = field(default_factory=list)  # first voxel of each event's box (k×3)
    peaks: list[np.ndarray] = field(default_factory=list)  # t, y, x of spark peaks
    peak_numbers: list[np.ndarray] = field(default_factory=list)  # event number of each peak
    paint: list[tuple[tuple[slice, ...], np.ndarray, int]] = field(default_factory=list)  # split sparks
    n: int = 0

    def add(self, code: int, starts: np.ndarray) -> np.ndarray:
        """Register events of class ``code`` whose boxes start at ``starts``; their numbers."""
        numbers = self.n + np.arange(1, len(starts) + 1)
        self.codes.append(np.full(len(starts), code, dtype=np.uint8))
        self.starts.append(np.asarray(starts, dtype=np.int64).reshape(-1, 3))
        self.n += len(starts)
        return numbers


def _add_waves_and_puffs(found: _Events, frags: _Fragments, minima: _Minima, gap: int,
                         transients: _Transients | None = None) -> None:
    """Waves and puffs: fragments joined across temporal gaps of ≤ ``gap`` frames, size-filtered
    (puffs also by ``transients``, when given)."""
    for code in (WAVE, PUFF):
        ids = np.flatnonzero(frags.code == code)
        if ids.size == 0:
            continue
        group = _merge_gaps(frags, ids, gap)  # 0..k-1 per fragment of ids
        k = int(group.max()) + 1
        lo = np.full((k, 3), np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.zeros((k, 3), dtype=np.int64)
        np.minimum.at(lo, group, frags.lo[ids])
        np.maximum.at(hi, group, frags.hi[ids])
        keep = minima.passes(np.full(k, code), lo, hi) & frags.probable(ids, group, code, minima)
        if code == PUFF and transients is not None:
            for j in np.flatnonzero(keep):
                keep[j] = transients.passes(ids[group == j], lo[j], hi[j])
        number = np.zeros(k, dtype=np.int64)
        number[keep] = found.add(code, lo[keep])
        found.event_of[ids] = number[group]


def _split_wave_passages(found: _Events, frags: _Fragments, minima: _Minima, gap: int, min_pixels: int) -> None:
    """Each later passage of a wave through its own pixels becomes a wave of its own (painted).

    A voxel of a wave belongs to a later passage when its pixel was out of the wave for more
    than ``gap`` frames at some time before. Why: a second wave that starts where the first has
    just passed touches it there, so the two are one connected component; at most pixels,
    though, the two pass in turn with quiet frames between (sim-v3 merged 3 of 40 annotated
    validation and test waves this way). :func:`_wave_passages` says which voxels are which wave.
    """
    waves = np.flatnonzero((frags.code == WAVE) & (found.event_of > 0))
    member = np.zeros(frags.code.size, dtype=bool)
    for number in np.unique(found.event_of[waves]):
        members = waves[found.event_of[waves] == number]
        start = frags.lo[members].min(axis=0)
        box = _box(start, frags.hi[members].max(axis=0))
        member[:] = False
        member[members] = True
        passages = _wave_passages(member[frags.labels[box]], gap, minima, min_pixels)
        n = int(passages.max())
        if n < 2:
            continue
        spans = ndimage.find_objects(passages)[1:]  # passages 2..n, each a wave of its own
        found.paint.append((box, np.where(passages >= 2, passages - 1, 0).astype(np.int32), found.n))
        found.add(WAVE, np.array([[s.start for s in span] for span in spans], dtype=np.int64) + start)


#: at most this many waves are told apart in one connected wave (each a pass of the split)
MAX_WAVE_PASSAGES = 16


def _wave_passages(inside: np.ndarray, gap: int, minima: _Minima, min_pixels: int) -> np.ndarray:
    """The voxels of one wave (``inside``, T×Y×X bool) numbered by the wave they belong to: 1 the
    first, 2, 3, … each later passage through its pixels (0 outside).

    The 26-connected pieces of later passages (:func:`_later_passages`) that reach the wave minima
    and cover at least ``min_pixels`` pixels (y-x footprint) are the next wave's seed; the first
    passage at the pixels those pieces cover is this wave's. Every other voxel goes to the seed
    whose flood reaches it first through the wave in time order (a watershed whose landscape is
    the frame): a later wave's voxels at pixels the first never reached were the first wave's,
    doubling its duration (only its pixels passed twice were split off); on a flat landscape the
    first wave's own branch away from the second went to the second. The next wave is split again
    in the same way, so that three waves in turn are three, not two.
    """
    out = inside.astype(np.int32)
    box = tuple(slice(0, n) for n in inside.shape)
    for number in range(2, MAX_WAVE_PASSAGES + 1):
        later_wave = _next_wave(out[box] == number - 1, gap, minima, min_pixels)
        if later_wave is None:
            break
        out[box][later_wave] = number
        box = tuple(slice(b.start + s.start, b.start + s.stop)  # the next pass within the later wave's box
                    for b, s in zip(box, ndimage.find_objects(later_wave.view(np.uint8))[0]))
    return out


def _next_wave(current: np.ndarray, gap: int, minima: _Minima, min_pixels: int) -> np.ndarray | None:
    """The voxels of the wave that passes after ``current``'s first through its pixels (see
    :func:`_wave_passages`), or None where no later passage is large enough for a wave."""
    later = _later_passages(current, gap)
    if not later.any():
        return None
    pieces, n = ndimage.label(later, structure=_FULL, output=np.int32)
    spans = ndimage.find_objects(pieces)
    lo = np.array([[s.start for s in b] for b in spans], dtype=np.int64)
    hi = np.array([[s.stop for s in b] for b in spans], dtype=np.int64)
    keep = minima.passes(np.full(n, WAVE), lo, hi)
    for j in np.flatnonzero(keep):
        keep[j] = np.count_nonzero((pieces[spans[j]] == j + 1).any(axis=0)) >= min_pixels
    if not keep.any():
        return None
    next_seed = np.concatenate(([False], keep))[pieces]
    markers = np.zeros(current.shape, dtype=np.int32)
    markers[current & ~later & next_seed.any(axis=0)[None]] = 1
    markers[next_seed] = 2
    return _flooded(markers, current) == 2


def _flooded(markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``markers`` (0 where unassigned) spread over ``mask`` in time order: a watershed whose
    landscape is the frame, run only on the unassigned voxels and the marked ones touching them
    (the marked voxels beyond never take part; a watershed over the whole wave took 1 s a pass)."""
    unassigned = mask & (markers == 0)
    if not unassigned.any():
        return markers
    crop = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1))
                 for s, n in zip(ndimage.find_objects(unassigned.view(np.uint8))[0], mask.shape))
    near = ndimage.binary_dilation(unassigned[crop], structure=_FULL) & mask[crop]
    frames = np.broadcast_to(np.arange(crop[0].start, crop[0].stop, dtype=np.int32)[:, None, None], near.shape)
    out = markers.copy()
    out[crop] = np.where(near, watershed(frames, np.where(near, markers[crop], 0), connectivity=3, mask=near),
                         markers[crop])
    return out


def _later_passages(inside: np.ndarray, gap: int) -> np.ndarray:
    """Voxels of ``inside`` (T×Y×X bool) whose pixel was outside it for more than ``gap``
    frames between an earlier voxel and them: a later passage at that pixel.

    One pass over the frames with a frame's worth of state per pixel (the last frame inside,
    the passages so far): 20 times faster than cumulative sums over the whole box.
    """
    later = np.zeros_like(inside)
    last_inside = np.full(inside.shape[1:], -gap - 2, dtype=np.int64)
    passages = np.zeros(inside.shape[1:], dtype=np.int32)
    for t, here in enumerate(inside):
        # t - last_inside - 1 frames outside: a new passage after more than ``gap`` of them
        passages += here & (t - last_inside - 1 > gap)
        np.logical_and(here, passages >= 2, out=later[t])
        last_inside[here] = t
    return later


@dataclass(frozen=True)
class _Transients:
    """The movie and every event fragment, to test candidate puffs with :func:`transient_snr`."""

    movie: np.ndarray
    labels: np.ndarray
    min_snr: float
    window: int  # frames
    gap: int  # frames

    def passes(self, members: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
        box = _box(lo, hi)
        inside = np.isin(self.labels[box], members)
        return transient_snr(self.movie, self.labels, inside, lo, hi, self.window, self.gap) >= self.min_snr


def transient_snr(movie: np.ndarray, labels: np.ndarray, inside: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  window: int, gap: int) -> float:
    """How far an event's pixels rise above their surroundings in time, in noise units.

    ``inside``: the event's voxels in its box ``lo``..``hi`` (frames, rows, columns) of the
    T×Y×X ``movie``; ``labels``: any event's voxels (non-zero), left out of the baseline. Per
    pixel of the event's footprint, the baseline is the median of ``window`` frames ending
    ``gap`` frames before the event, or of those starting ``gap`` after it, whichever is lower
    (a fragment of a longer event has one side inside it); the noise is the pixel's robust SD
    (1.4826 × MAD) about it. Returns the mean over the event's voxels of (movie − baseline),
    divided by the median pixel SD / √(frames of the event): one pixel's noise over the event's
    duration, ignoring the spatial mean, so that correlated noise does not inflate it. inf when
    there is no baseline (an event spanning the movie) or no noise (every value equal).
    """
    n_frames = movie.shape[0]
    t0, t1 = int(lo[0]), int(hi[0])
    rows, cols = slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2]))
    sides = []
    for a, b in ((t0 - gap - window, t0 - gap), (t1 + gap, t1 + gap + window)):
        a, b = max(0, a), min(n_frames, max(0, b))
        if b - a >= 3:
            values = movie[a:b, rows, cols].astype(np.float32)
            values[labels[a:b, rows, cols] > 0] = np.nan
            sides.append(values)
    if not sides:
        return math.inf
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (inside other events) are dropped below
        baseline = np.fmin.reduce([np.nanmedian(v, axis=0) for v in sides])  # the quieter side
        both = np.concatenate(sides)
        sd = 1.4826 * np.nanmedian(np.abs(both - baseline), axis=0)
        enough = np.sum(np.isfinite(both), axis=0) >= 3
    usable = inside & (np.isfinite(baseline) & np.isfinite(sd) & enough)[None]
    if not usable.any():
        return math.inf
    frames = int(np.count_nonzero(usable.any(axis=(1, 2))))
    rise = float(np.mean((movie[t0:t1, rows, cols].astype(np.float32) - baseline)[usable]))
    noise = float(np.median(sd[usable.any(axis=0)])) / math.sqrt(frames)
    if noise <= 0:
        return math.inf if rise > 0 else 0.0
    return rise / noise


def _movie_array(movie: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The raw T×Y×X values of ``movie`` (array or :class:`casparks.io.Movie`), checked against the labels."""
    data = np.asarray(getattr(movie, "data", movie))
    if data.shape != shape:
        raise PostprocessError(f"the movie's shape {data.shape} differs from the class label's {shape}")
    return data


def _add_sparks(
    found: _Events,
    frags: _Fragments,
    minima: _Minima,
    source: np.ndarray,
    config: PostprocessConfig,
    steps: tuple[float, float, float],
    smooth_within: bool,
) -> np.ndarray:
    """Sparks: size-filtered components, split at their peaks; returns the kept spark fragments."""
    sparks = np.flatnonzero(frags.code == SPARK)
    sparks = sparks[minima.passes(frags.code[sparks], frags.lo[sparks], frags.hi[sparks])]
    sparks = sparks[frags.probable(sparks, np.arange(sparks.size), SPARK, minima)]
    single = _one_peak_only(frags.lo[sparks], frags.hi[sparks], config, steps)
    few = sparks[single]
    if few.size:  # too small to hold two peaks: one event each, all at once
        numbers = found.add(SPARK, frags.lo[few])
        found.event_of[few] = numbers
        found.peaks.append(_centre_peaks(frags.labels, few, source, steps))
        found.peak_numbers.append(numbers)
    sigma_um = config.spark_smooth_sigma_um / steps[1]
    sigma = (config.spark_smooth_sigma_ms / steps[0], sigma_um, sigma_um)
    for f in sparks[~single]:
        box = _box(frags.lo[f], frags.hi[f])
        inside = frags.labels[box] == f
        landscape = _landscape(source[box], inside, sigma, smooth_within)
        peaks = find_spark_peaks(
            landscape, inside.view(np.uint8), steps[1], steps[0], sigma_um=0.0, sigma_ms=0.0,
            min_distance_um=config.spark_min_distance_um, min_distance_ms=config.spark_min_distance_ms,
        )[:, :3]
        start = frags.lo[f]
        pieces, peaks = _split_at_peaks(landscape, inside, peaks, minima) if len(peaks) > 1 else (None, peaks)
        if pieces is None:
            numbers = found.add(SPARK, start[None])
            found.event_of[f] = numbers[0]
        else:
            found.paint.append((box, pieces, found.n))
            numbers = found.add(SPARK, np.array([[s.start for s in b] for b in ndimage.find_objects(pieces)]) + start)
        found.peaks.append(peaks + start)
        found.peak_numbers.append(numbers)
    return sparks


def _split_at_peaks(landscape: np.ndarray, inside: np.ndarray, peaks: np.ndarray,
                    minima: _Minima) -> tuple[np.ndarray | None, np.ndarray]:
    """A spark blob split by a watershed from its ``peaks``: the pieces (1..n) and the peaks kept.

    A piece below the spark minima (a peak on a blob's edge cut off a few voxels: a 4-voxel,
    0.4 µm "spark" was written) gives up its peak, and the split is made again without it, so
    its voxels join the neighbouring pieces. (None, the one peak left) where one remains."""
    while len(peaks) > 1:
        markers = np.zeros(inside.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
        pieces = watershed(-landscape, markers, mask=inside, connectivity=3)
        boxes = ndimage.find_objects(pieces, max_label=len(peaks))
        lo = np.array([[s.start for s in b] if b else [0, 0, 0] for b in boxes])
        hi = np.array([[s.stop for s in b] if b else [0, 0, 0] for b in boxes])
        passing = minima.passes(np.full(len(peaks), SPARK), lo, hi)
        if passing.all():
            return pieces, peaks
        if not passing.any():  # none is a spark alone: the blob is one
            return None, peaks[[int(np.argmax(np.bincount(pieces[inside], minlength=len(peaks) + 1)[1:]))]]
        peaks = peaks[passing]
    return None, peaks


def _wave_fringes(
    codes: np.ndarray, probabilities: np.ndarray | None, minimum: float, minima: _Minima
) -> np.ndarray:
    """``codes`` with the spark components connected to a wave whose mean p(wave) is at least
    ``minimum`` relabelled as wave (a uint8 copy when anything changes).

    Connected: in one 26-connected component of spark and wave voxels with a wave, i.e. a
    wave-class component passing the wave minima (a small wave-coloured speck on a spark is no
    wave). The movie's spark and wave voxels are labelled once; waves and sparks are labelled
    only inside the box around the components that hold wave voxels (often a fraction of the
    movie), masked to those components: the same components as in the whole movie.
    """
    p = _required_probabilities(probabilities, codes.shape, "wave_fringe_min_probability needs the probabilities",
                                fix="pass the probabilities, or set wave_fringe_min_probability: null")
    wave = codes == WAVE
    if p.shape[0] <= WAVE or not wave.any():
        return codes
    spark = codes == SPARK
    joint, n_joint = ndimage.label(spark | wave, structure=_FULL)
    holds_wave = np.bincount(joint[wave], minlength=n_joint + 1) > 0
    holds_wave[0] = False
    del wave, spark
    found = [b for b, h in zip(ndimage.find_objects(joint), holds_wave[1:]) if h]
    box = tuple(slice(min(b[a].start for b in found), max(b[a].stop for b in found)) for a in range(3))
    joint = joint[box]
    codes_box = np.where(holds_wave[joint], codes[box], BACKGROUND)
    waves, n_waves = ndimage.label(codes_box == WAVE, structure=_FULL)
    wave_boxes = ndimage.find_objects(waves)
    lo = np.array([[s.start for s in b] for b in wave_boxes])
    hi = np.array([[s.stop for s in b] for b in wave_boxes])
    real = np.zeros(n_waves + 1, dtype=bool)
    real[1:] = minima.passes(np.full(n_waves, WAVE, dtype=np.int64), lo, hi)
    if not real.any():
        return codes
    with_wave = np.zeros(n_joint + 1, dtype=bool)
    with_wave[joint[real[waves]]] = True
    del waves
    spark = codes_box == SPARK
    sparks, n = ndimage.label(spark, structure=_FULL)
    ids = sparks[spark]
    connected = np.zeros(n + 1, dtype=bool)
    connected[ids[with_wave[joint[spark]]]] = True
    sums = np.bincount(ids, weights=p[WAVE][box][spark], minlength=n + 1)
    counts = np.bincount(ids, minlength=n + 1)
    fringe = connected & (sums >= minimum * counts)  # connected[0] is False: background stays
    if not fringe.any():
        return codes
    out = codes.astype(np.uint8)
    out[box][fringe[sparks]] = WAVE
    return out


def _required_probabilities(
    probabilities: np.ndarray | None, shape: tuple[int, ...], missing: str, fix: str
) -> np.ndarray:
    """The (C, T, Y, X) probabilities an option needs: a one-line error when they are missing
    (``missing``, ``fix``) or do not match the class label's ``shape``."""
    if probabilities is None:
        raise PostprocessError(missing, fix=fix)
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[1:] != shape:
        raise PostprocessError(f"probabilities of shape {p.shape} do not match the class label's {shape}")
    return p


def _class_probability_sums(frags: _Fragments, probabilities: np.ndarray | None) -> np.ndarray:
    """Per fragment id, the sum over its voxels of the probability of its class (one pass)."""
    p = _required_probabilities(probabilities, frags.labels.shape,
                                "a minimum mean probability (*_min_mean_probability) needs the probabilities",
                                fix="pass the probabilities, or set the minimum to 0")
    where = np.flatnonzero(frags.labels)
    ids = frags.labels.reshape(-1)[where]
    code = frags.code[ids].astype(np.int64)
    have = code < p.shape[0]  # a spark-only network has no wave or puff channel
    values = np.zeros(where.size, dtype=np.float64)
    values[have] = p.reshape(p.shape[0], -1)[code[have], where[have]]
    return np.bincount(ids, weights=values, minlength=frags.code.size)


def _spark_source(shape: tuple[int, ...], probabilities: np.ndarray | None, movie: Any) -> np.ndarray:
    """The values whose maxima split sparks: the movie if given, else the spark probability."""
    if movie is not None:
        return _movie_array(movie, shape)
    if probabilities is None:
        raise PostprocessError("give the probabilities or the movie: spark maxima are searched in one of them")
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[1:] != shape or p.shape[0] <= SPARK:
        raise PostprocessError(f"probabilities of shape {p.shape} do not match the class label's {shape}")
    return p[SPARK]


def _landscape(values: np.ndarray, inside: np.ndarray, sigma: tuple[float, ...], smooth_within: bool) -> np.ndarray:
    """Smoothed values of one spark (float64, box-sized).

    ``smooth_within`` (a movie): Gaussian average over the spark's voxels only (normalised
    convolution), so the movie's baseline and bright neighbours do not move the maxima. Otherwise
    (a probability): Gaussian of the probability set to 0 outside the spark, whose maxima lie in
    the thick parts of a blob.
    """
    masked = np.where(inside, values.astype(np.float64, copy=False), 0.0)
    if not any(s > 0 for s in sigma):
        return masked
    smooth = ndimage.gaussian_filter(masked, sigma, mode="constant")
    if smooth_within:
        weight = ndimage.gaussian_filter(inside.astype(np.float64), sigma, mode="constant")
        smooth = np.divide(smooth, weight, out=np.zeros_like(smooth), where=inside & (weight > 0))
    return smooth


def _one_peak_only(lo: np.ndarray, hi: np.ndarray, config: PostprocessConfig, steps: tuple[float, ...]) -> np.ndarray:
    """Whether every two voxels of boxes ``lo``..``hi`` lie closer than the spark min distance (in
    space and in time), so that :func:`find_spark_peaks` can find one peak only."""
    reach = hi - lo - 1  # largest offsets between two voxels of a box
    in_time = reach[:, 0] * steps[0] < config.spark_min_distance_ms * (1 - _EPS)
    in_space = (reach[:, 1] ** 2 + reach[:, 2] ** 2) * steps[1] ** 2 < config.spark_min_distance_um**2 * (1 - _EPS)
    return in_time & in_space


def _centre_peaks(labels: np.ndarray, ids: np.ndarray, source: np.ndarray, steps: tuple[float, ...]) -> np.ndarray:
    """Peak of each small spark ``ids`` (k×3 t, y, x, in the order of ``ids``): its voxel nearest
    the centroid of the values above the spark's minimum (of its voxels, when they are all equal)."""
    member = np.zeros(int(labels.max()) + 1, dtype=bool)
    member[ids] = True
    index = np.zeros(member.size, dtype=np.int64)
    index[ids] = np.arange(ids.size)
    where = np.flatnonzero(member[labels])
    comp = index[labels.reshape(-1)[where]]
    coords = np.unravel_index(where, labels.shape)
    values = np.asarray(source[coords], dtype=np.float64)
    lowest = np.full(ids.size, np.inf)
    np.minimum.at(lowest, comp, values)
    weight = values - lowest[comp]
    flat = np.bincount(comp, weight, minlength=ids.size) <= 0
    weight[flat[comp]] = 1.0
    total = np.bincount(comp, weight, minlength=ids.size)
    distance = np.zeros(where.size)
    for axis, step in enumerate(steps):
        centre = np.bincount(comp, weight * coords[axis], minlength=ids.size) / total
        distance += ((coords[axis] - centre[comp]) * step) ** 2
    order = np.lexsort((distance, comp))
    first = np.ones(order.size, dtype=bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    return np.column_stack(coords)[order[first]]


def _fragments(events: np.ndarray, minima: _Minima) -> _Fragments:
    """Components of each class (26-connectivity; codes 1-3, anything else background), after
    fragments too small for their class joined the largest fragment they touch (:func:`_absorb`).

    One labelling pass over all event voxels; only where blobs hold several classes (usually a
    small part of the movie) is each class labelled again, inside the blobs' bounding box.
    """
    is_event = (events >= SPARK) & (events <= PUFF)
    labels, n = ndimage.label(is_event, structure=_FULL, output=np.int32)
    del is_event
    where = np.flatnonzero(labels)
    ids = labels.reshape(-1)[where]
    codes = events.reshape(-1)[where]
    code = np.zeros(n + 1, dtype=np.uint8)
    code[ids] = codes
    mixed = np.zeros(n + 1, dtype=bool)
    mixed[ids[codes != code[ids]]] = True
    if mixed.any():
        lo, hi = _boxes(labels, n, where)
        blobs = np.flatnonzero(mixed)
        for box, blob in _work_boxes(lo[blobs], hi[blobs], blobs):
            region = labels[box]
            inside = mixed[region] if blob is None else region == blob
            region_events = events[box]
            for c in EVENT_CLASSES:
                split, k = ndimage.label(inside & (region_events == c), structure=_FULL, output=np.int32)
                hit = split > 0
                region[hit] = split[hit] + n
                n += k
        ids = labels.reshape(-1)[where]
        code = np.zeros(n + 1, dtype=np.uint8)
        code[ids] = codes
    del codes
    lo, hi = _boxes(labels, n, where)
    size = np.bincount(ids, minlength=n + 1).astype(np.int64)
    frags = _Fragments(labels, code, size, lo, hi)
    small = ~minima.passes(code, lo, hi)
    small[code == 0] = False
    if not small.any():
        return frags
    on_small = small[ids]
    a, b = _touching(labels, where[on_small], ids[on_small])
    if a.size == 0:
        return frags
    unit, unit_code = _absorb(frags, a, b, minima)
    if np.array_equal(unit, np.arange(n + 1)):
        return frags
    # one id per merged group: its smallest fragment id
    labels = unit.astype(np.int32)[labels]
    code = np.zeros(n + 1, dtype=np.uint8)
    reps = np.unique(unit[frags.code > 0])
    code[reps] = unit_code[reps]
    size = np.bincount(unit, weights=frags.size, minlength=n + 1).astype(np.int64)
    lo = np.full((n + 1, 3), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lo, unit, frags.lo)
    lo[code == 0] = 0
    hi = np.zeros((n + 1, 3), dtype=np.int64)
    np.maximum.at(hi, unit, frags.hi)
    hi[code == 0] = 0
    return _Fragments(labels, code, size, lo, hi)


def _boxes(labels: np.ndarray, n: int, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last voxel index per axis of ids 0..n (zeros where an id is unused);
    ``where``: flat indices of the labelled voxels."""
    if n <= _MANY_OBJECTS:  # find_objects: one pass, then Python per object
        lo = np.zeros((n + 1, 3), dtype=np.int64)
        hi = np.zeros((n + 1, 3), dtype=np.int64)
        for i, box in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
            if box is not None:
                lo[i] = [s.start for s in box]
                hi[i] = [s.stop for s in box]
        return lo, hi
    ids = labels.reshape(-1)[where]
    lo = np.full((n + 1, 3), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.zeros((n + 1, 3), dtype=np.int64)
    for axis, coord in enumerate(np.unravel_index(where, labels.shape)):
        np.minimum.at(lo[:, axis], ids, coord)
        np.maximum.at(hi[:, axis], ids, coord + 1)
    lo[hi[:, 0] == 0] = 0
    return lo, hi


def _touching(labels: np.ndarray, voxels: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of different ids where a voxel of a (``voxels``, flat indices, with ids ``own``)
    has b among its 26 neighbours; each pair once."""
    shape = labels.shape
    flat = labels.reshape(-1)
    coords = np.unravel_index(voxels, shape)
    inside = [{-1: c > 0, 0: None, 1: c < n - 1} for c, n in zip(coords, shape)]
    strides = (shape[1] * shape[2], shape[2], 1)
    n_ids = np.int64(flat.max()) + 1
    keys = []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        if offset == (0, 0, 0):
            continue
        ok = None
        for axis, d in enumerate(offset):
            if d:
                ok = inside[axis][d] if ok is None else ok & inside[axis][d]
        src, mine = (voxels, own) if ok is None else (voxels[ok], own[ok])
        other = flat[src + sum(d * s for d, s in zip(offset, strides))]
        hit = (other != 0) & (other != mine)
        keys.append(mine[hit].astype(np.int64) * n_ids + other[hit])
    keys = np.unique(np.concatenate(keys))
    return keys // n_ids, keys % n_ids


def _absorb(frags: _Fragments, a: np.ndarray, b: np.ndarray, minima: _Minima) -> tuple[np.ndarray, np.ndarray]:
    """Group of each fragment (its smallest id) and class of each group after absorption.

    In rounds: every group too small for its class takes the class of the largest (most voxels)
    group it touches, when that one has more voxels; touching groups of one class then merge.
    Repeated until nothing changes (each round merges at least one group, so it ends).
    ``a``, ``b``: touching fragment pairs (every pair with a small fragment).
    """
    n1 = frags.code.size
    unit = np.arange(n1)
    code = frags.code.copy()  # class of each fragment's group
    a, b = np.concatenate([a, b]), np.concatenate([b, a])
    big = np.iinfo(np.int64).max
    for _ in range(n1):
        size = np.bincount(unit, weights=frags.size, minlength=n1)
        lo = np.full((n1, 3), big, dtype=np.int64)
        np.minimum.at(lo, unit, frags.lo)
        hi = np.zeros((n1, 3), dtype=np.int64)
        np.maximum.at(hi, unit, frags.hi)
        ua, ub = unit[a], unit[b]
        small = (ua != ub) & ~minima.passes(code[ua], lo[ua], hi[ua])
        ua, ub = ua[small], ub[small]
        order = np.lexsort((ub, -size[ub], ua))  # per group, its largest neighbour first
        ua, ub = ua[order], ub[order]
        first = np.ones(ua.size, dtype=bool)
        first[1:] = ua[1:] != ua[:-1]
        grows = first & (size[ub] > size[ua])
        if not grows.any():
            break
        new = code.copy()
        new[ua[grows]] = code[ub[grows]]
        code = new[unit]
        ua, ub = unit[a], unit[b]
        join = (ua != ub) & (code[ua] == code[ub])
        graph = sparse.coo_matrix((np.ones(int(join.sum()), dtype=np.int8), (ua[join], ub[join])), shape=(n1, n1))
        n_comp, comp = csgraph.connected_components(graph, directed=False)
        rep = np.full(n_comp, n1, dtype=np.int64)
        np.minimum.at(rep, comp, np.arange(n1))
        unit = rep[comp[unit]]
    return unit, code


def _work_boxes(lo: np.ndarray, hi: np.ndarray, ids: np.ndarray) -> list[tuple[tuple[slice, ...], Any]]:
    """Where to process the objects ``ids`` with boxes ``lo``..``hi``: each in its own box
    (``(box, id)``), or all together in their common box (``(box, None)``), whichever touches
    fewer voxels, counting each box as ``_BOX_COST`` voxels more (the cost of a Python round)."""
    common_lo, common_hi = lo.min(axis=0), hi.max(axis=0)
    separate = float(np.prod(hi - lo, axis=1, dtype=np.float64).sum()) + _BOX_COST * len(ids)
    if separate < float(np.prod(common_hi - common_lo, dtype=np.float64)):
        return [(_box(a, b), i) for a, b, i in zip(lo, hi, ids)]
    return [(_box(common_lo, common_hi), None)]


def _merge_gaps(frags: _Fragments, ids: np.ndarray, gap: int) -> np.ndarray:
    """Group index (0..k-1) of each fragment in ``ids`` (one class): fragments whose voxels come
    within ``gap`` empty frames of each other in time (and within one pixel in y/x) share one.

    Only fragments whose boxes come that close are candidates; each set of candidates is
    labelled in its own box after every voxel is extended ``gap`` frames forward in time.
    """
    group = np.arange(ids.size)
    if gap <= 0 or ids.size == 1:
        return group
    lo, hi = frags.lo[ids], frags.hi[ids]
    if ids.size <= _MAX_PAIRWISE:
        reach = np.array([gap + 1, 1, 1])
        near = np.ones((ids.size, ids.size), dtype=bool)
        for axis in range(3):
            near &= lo[:, None, axis] <= hi[None, :, axis] - 1 + reach[axis]
            near &= lo[None, :, axis] <= hi[:, None, axis] - 1 + reach[axis]
        _, candidates = csgraph.connected_components(sparse.csr_matrix(near), directed=False)
    else:
        candidates = np.zeros(ids.size, dtype=np.int64)
    member = np.zeros(frags.code.size, dtype=bool)
    position = np.zeros(frags.code.size, dtype=np.int64)
    position[ids] = np.arange(ids.size)
    sets = np.flatnonzero(np.bincount(candidates) > 1)
    for c in sets:
        chosen = np.flatnonzero(candidates == c)
        box = _box(lo[chosen].min(axis=0), hi[chosen].max(axis=0))
        member[:] = False
        member[ids[chosen]] = True
        labels = frags.labels[box]
        mask = member[labels]
        closed = mask.copy()
        for k in range(1, min(gap, mask.shape[0] - 1) + 1):  # extend every voxel `gap` frames forward
            closed[k:] |= mask[:-k]
        joined, _ = ndimage.label(closed, structure=_FULL)
        first = np.full(joined.max() + 1, ids.size, dtype=np.int64)  # first fragment of each joined set
        where = position[labels[mask]]
        np.minimum.at(first, joined[mask], where)
        group[where] = first[joined[mask]]
    _, index = np.unique(group, return_inverse=True)
    return index.reshape(-1)

"""Raw annotations → training labels: ignore regions around events, spark peaks, only-sparks.

What the reference research code (Dotti et al. 2024, ``dottipr/sparks_project``) did, in voxels
at 0.2 µm × 6.8 ms, and what we do, in µm and ms (every size is converted to voxels in one place,
:class:`_Grid`, using the movie's own pixel size and frame interval):

* **ignore shell** around events ('dilated' labels there): one 6-connected dilation step of the
  spark masks, i.e. 1 voxel = 0.2 µm in y/x and 6.8 ms in t. Our default shell is that width for
  every event (the reference used 2-3 voxels for puffs and waves and also eroded their inside);
  the shell only ever covers background: it never overwrites an event or changes an ignore voxel.
* **'peaks' sparks**: the spark annotation replaced by small balls at the maxima of the smoothed
  movie inside the spark (reference: Gaussian σ = 2 voxels = 0.4 µm / 13.6 ms; ball = voxels
  closer than 3 voxels, reproduced exactly at 0.2 µm / 6.8 ms by an inclusive ellipsoid of
  0.58 µm × 20 ms), with an ignore shell around each ball
  (reference: closer than 4 voxels, reproduced exactly by the ellipsoid of radii ball + shell width).
  The rest of the raw spark mask becomes ignore (the reference's 'small' sparks did this; its
  'peaks' labels set it to background, which teaches the network that spark flanks are not sparks).
  Balls never cover annotated ignore or other events; a ball's piece they cut off from its peak
  is ignore too (as spark it was a tiny spark of its own, beyond the annotator's margin).
* **only sparks**: puffs and waves become ignore.

Deliberate differences from the reference's maxima search (see :func:`find_spark_peaks`):
the movie is smoothed *within each spark* by normalised convolution (the reference smoothed the
movie multiplied by the spark mask, so its maxima moved with the movie's baseline offset);
maxima are searched per spark (one spark cannot suppress the maxima of a touching one); and two
maxima closer than 1.8 µm in space and 20 ms in time are one peak (the reference named these
distances but its footprint, a 1.0 µm disk over 3 frames, suppressed only within about half of
them); flat-topped (saturated) maxima count once.

Also home of :func:`dilate`, the anisotropic morphology that the simulator reuses for its ignore
shells, so both define "around an event" the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import local_maxima

from .classes import BACKGROUND, IGNORE, PUFF, SPARK, WAVE
from .errors import CasparksError, raise_together, reject_unknown_keys
from .instances import complete_instances
from .metrics import check_codes, check_ids

log = logging.getLogger(__name__)

SPARKS_TYPES = ("raw", "peaks")
_EPS = 1e-9


# ----------------------------------------------------------------------------------------------
# configuration


class LabelConfigError(CasparksError, ValueError):
    """An invalid :class:`LabelConfig` value (a ValueError for Python callers, one line in the CLI)."""


@dataclass(frozen=True)
class LabelConfig:
    """How raw annotations become training labels. Sizes in µm (space) and ms (time).

    Defaults reproduce the reference labels at its 0.2 µm / 6.8 ms sampling.

    Attributes:
        sparks_type: 'raw' keeps the annotated spark masks; 'peaks' replaces each spark by balls
            at the maxima of the smoothed movie inside it, the rest of the spark becoming ignore.
        ignore_width_um, ignore_width_ms: ignore shell around every event (and around each
            peak ball); 0 and 0 turn the shells off. Default one voxel (0.2 µm, 6.8 ms). A
            positive width is at least one voxel along its axes around events (at 0.21 µm /
            7 ms a 0.2 µm / 6.8 ms shell used to vanish).
        peak_radius_um, peak_radius_ms: radii of the ellipsoidal ball at each spark maximum
            (inclusive; 0.58 µm × 20 ms is the reference's "closer than 3 voxels" ball).
        peak_min_distance_um, peak_min_distance_ms: two maxima of one spark closer than both
            distances (in space and in time) are one peak; the higher one is kept.
        smooth_sigma_um, smooth_sigma_ms: Gaussian σ of the smoothing before the maxima search.
        only_sparks: mark puffs and waves as ignore (spark-only training).
    """

    sparks_type: Literal["raw", "peaks"] = "raw"
    ignore_width_um: float = 0.2
    ignore_width_ms: float = 6.8
    peak_radius_um: float = 0.58
    peak_radius_ms: float = 20.0
    peak_min_distance_um: float = 1.8
    peak_min_distance_ms: float = 20.0
    smooth_sigma_um: float = 0.4
    smooth_sigma_ms: float = 13.6
    only_sparks: bool = False

    def __post_init__(self) -> None:
        if self.sparks_type not in SPARKS_TYPES:
            raise LabelConfigError(
                f"sparks_type must be one of {', '.join(SPARKS_TYPES)}, got {self.sparks_type!r}",
                fix="use --sparks-type raw or --sparks-type peaks",
            )
        if not isinstance(self.only_sparks, (bool, np.bool_)):
            raise LabelConfigError(
                f"only_sparks must be true or false, got {self.only_sparks!r}", fix="give a boolean"
            )
        for f in fields(self):
            if f.name in ("sparks_type", "only_sparks"):
                continue
            value = getattr(self, f.name)
            strictly = f.name.startswith("peak_min_distance")
            ok = (
                isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (value > 0 if strictly else value >= 0)
            )
            if not ok:
                unit = "µm" if f.name.endswith("_um") else "ms"
                raise LabelConfigError(
                    f"{f.name} must be a {'positive' if strictly else 'non-negative'} number of {unit}, got {value!r}",
                    fix=f"set {f.name} (--{f.name.replace('_', '-')}) {'> 0' if strictly else '>= 0'}",
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for YAML/JSON); :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LabelConfig":
        """Build from a dict; unknown keys are an error naming the known ones."""
        reject_unknown_keys({f.name for f in fields(cls)}, values, "label option", LabelConfigError)
        return cls(**dict(values))


def label_options(config: LabelConfig | Mapping[str, Any]) -> LabelConfig:
    """``config`` as a :class:`LabelConfig`: a mapping of its options read by :meth:`LabelConfig.from_dict`
    (a dict was an AttributeError deep inside), anything else one clear error."""
    if isinstance(config, LabelConfig):
        return config
    if isinstance(config, Mapping):
        return LabelConfig.from_dict(config)
    raise LabelConfigError(f"config must be a LabelConfig or a mapping of its options, got {type(config).__name__} {config!r:.40}",
                           fix="pass, e.g., casparks.LabelConfig(sparks_type='peaks') or {'sparks_type': 'peaks'}")


# ----------------------------------------------------------------------------------------------
# physical units → voxels (the one place where sizes are converted)


@dataclass(frozen=True)
class _Grid:
    """Voxel size of a movie: t in ms, y and x in µm."""

    frame_interval_ms: float
    pixel_size_um: float

    def __post_init__(self) -> None:
        for name in ("frame_interval_ms", "pixel_size_um"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value > 0):
                raise LabelConfigError(f"{name} must be a positive number, got {value!r}",  # a unit: a user's mistake
                                       fix=f"pass the {name.replace('_', ' ').replace(' um', ' in µm').replace(' ms', ' in ms')}")

    @property
    def steps(self) -> tuple[float, float, float]:
        return (float(self.frame_interval_ms), float(self.pixel_size_um), float(self.pixel_size_um))

    @staticmethod
    def _per_axis(ms: float, um: float) -> tuple[float, float, float]:
        return (float(ms), float(um), float(um))

    def reach(self, radius_ms: float, radius_um: float) -> tuple[int, int, int]:
        """Whole voxels within an inclusive radius along each axis (floor, robust to 0.6/0.2)."""
        return tuple(
            int(math.floor(r / s + _EPS)) if r > 0 else 0
            for r, s in zip(self._per_axis(radius_ms, radius_um), self.steps)
        )  # type: ignore[return-value]

    def strictly_within(self, distance_ms: float, distance_um: float) -> tuple[int, int, int]:
        """Largest whole-voxel offset strictly closer than a distance along each axis."""
        return tuple(
            max(int(math.ceil(d / s * (1 - _EPS))) - 1, 0) for d, s in zip(self._per_axis(distance_ms, distance_um), self.steps)
        )  # type: ignore[return-value]

    def ellipsoid_sampling(self, radius_ms: float, radius_um: float) -> tuple[float, float, float]:
        """EDT sampling that makes the ellipsoid of these radii the unit ball (huge step where r = 0)."""
        return tuple(
            (s / r) if r > 0 else 1e6 for r, s in zip(self._per_axis(radius_ms, radius_um), self.steps)
        )  # type: ignore[return-value]

    def sigma(self, sigma_ms: float, sigma_um: float) -> tuple[float, float, float]:
        """Gaussian σ in voxels."""
        return tuple(r / s for r, s in zip(self._per_axis(sigma_ms, sigma_um), self.steps))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# morphology


def dilate(
    mask: np.ndarray,
    radius_um: float,
    radius_ms: float,
    pixel_size_um: float,
    frame_interval_ms: float,
) -> np.ndarray:
    """Dilate a T×Y×X boolean mask by an ellipsoid of radius ``radius_ms`` in t and ``radius_um`` in y, x.

    A voxel is added when its centre lies within the ellipsoid (inclusive) around some mask voxel;
    a radius shorter than one voxel does not grow the mask along that axis. Sparse masks (spark
    peaks) are painted with the ellipsoid stencil; otherwise the cheaper of a structuring-element
    dilation and an anisotropic Euclidean distance transform runs in boxes around groups of
    nearby mask voxels, so the cost follows the events, not the movie size.
    """
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    if radius_um < 0 or radius_ms < 0:
        raise ValueError(f"dilation radii must be >= 0, got {radius_um} µm and {radius_ms} ms")
    grid = _Grid(frame_interval_ms, pixel_size_um)
    reach = grid.reach(radius_ms, radius_um)
    if not any(reach) or not mask.any():
        return out
    sampling = grid.ellipsoid_sampling(radius_ms, radius_um)
    ball = _ellipsoid(grid, radius_ms, radius_um)
    if np.count_nonzero(mask) * int(ball.sum()) <= _PAINT_LIMIT:
        _paint(out, np.argwhere(mask), np.argwhere(ball) - np.asarray(reach))
        return out
    # OR-ing shifted copies costs one vectorised pass per stencil element; a distance transform
    # costs about as much per voxel as ~100 such passes: small stencils (the usual shells of a
    # few voxels) shift, large ones use the distance transform (both give the same voxels)
    if int(ball.sum()) <= _SHIFT_LIMIT:
        whole = _bounding_box(mask, reach)
        out[whole] = _dilate_by_shifts(mask[whole], ball)
        return out
    _, boxes = _padded_boxes(mask, reach)
    for box in boxes:
        distance = ndimage.distance_transform_edt(~mask[box], sampling=sampling)
        out[box] |= distance <= 1.0 + _EPS
    return out


def _dilate_by_shifts(mask: np.ndarray, stencil: np.ndarray) -> np.ndarray:
    """Binary dilation as the OR of the mask shifted by every offset of a centred stencil."""
    out = mask.copy()
    centre = np.asarray(stencil.shape) // 2
    for offset in np.argwhere(stencil) - centre:
        if not offset.any():
            continue
        src = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(offset, mask.shape))
        dst = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(offset, mask.shape))
        out[dst] |= mask[src]
    return out


def _ellipsoid(grid: "_Grid", radius_ms: float, radius_um: float) -> np.ndarray:
    """Boolean stencil of the voxels whose centres lie in the ellipsoid (inclusive), centred."""
    reach = grid.reach(radius_ms, radius_um)
    sampling = grid.ellipsoid_sampling(radius_ms, radius_um)
    offsets = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    return sum((o * s) ** 2 for o, s in zip(offsets, sampling)) <= (1.0 + _EPS) ** 2


def paint_ellipsoids(
    shape: tuple[int, ...],
    points: np.ndarray,
    radius_um: float,
    radius_ms: float,
    pixel_size_um: float,
    frame_interval_ms: float,
) -> np.ndarray:
    """Boolean T×Y×X mask of ellipsoids (radius ``radius_ms`` in t, ``radius_um`` in y, x) centred
    on ``points`` (N×3 t, y, x voxel indices); the same voxels as :func:`dilate` of those points."""
    grid = _Grid(frame_interval_ms, pixel_size_um)
    out = np.zeros(shape, dtype=bool)
    points = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    if len(points):
        ball = _ellipsoid(grid, radius_ms, radius_um)
        _paint(out, points, np.argwhere(ball) - np.asarray(ball.shape) // 2)
    return out


_SHIFT_LIMIT = 100  # stencil elements up to which dilation ORs shifted copies
_PAINT_LIMIT = 2_000_000  # voxels × stencil elements below which a sparse mask is painted directly


def _paint(out: np.ndarray, points: np.ndarray, stencil: np.ndarray) -> None:
    """Set ``out`` True at every ``point + stencil offset`` inside the array (sparse dilation)."""
    coords = (points[:, None, :].astype(np.int32) + stencil[None, :, :].astype(np.int32)).reshape(-1, out.ndim)
    valid = np.all((coords >= 0) & (coords < np.asarray(out.shape, dtype=np.int32)), axis=1)
    out[tuple(coords[valid].T)] = True


def _volume(box: tuple[slice, ...]) -> int:
    return math.prod(s.stop - s.start for s in box)


def _bounding_box(mask: np.ndarray, reach: tuple[int, ...]) -> tuple[slice, ...]:
    """Bounding box of the mask's True voxels, grown by ``reach`` voxels and clipped to the array."""
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))) for axis in range(mask.ndim)]
    return tuple(
        slice(max(int(c[0]) - r, 0), min(int(c[-1]) + r + 1, n)) for c, r, n in zip(coords, reach, mask.shape)
    )


def _padded_boxes(
    mask: np.ndarray, reach: tuple[int, ...], small: int = 1 << 20
) -> tuple[tuple[slice, ...], list[tuple[slice, ...]]]:
    """The padded bounding box of the mask, and boxes that together hold every mask voxel plus
    ``reach`` voxels around it.

    One box when the padded bounding box is small; otherwise one per group of nearby mask voxels,
    found on a coarse grid (blocks of at least ``reach`` voxels, grown by one block), which costs
    one pass over the mask whatever the radius.
    """
    whole = _bounding_box(mask, reach)
    if _volume(whole) <= small:
        return whole, [whole]
    block = tuple(max(r, 8) for r in reach)
    padded_shape = tuple(-(-n // b) * b for n, b in zip(mask.shape, block))
    padded = np.zeros(padded_shape, dtype=bool)
    padded[tuple(slice(0, n) for n in mask.shape)] = mask
    split = [d for n, b in zip(padded_shape, block) for d in (n // b, b)]
    coarse = padded.reshape(split).any(axis=tuple(range(1, 2 * mask.ndim, 2)))
    coarse = ndimage.binary_dilation(coarse, structure=np.ones((3,) * mask.ndim, dtype=bool))
    groups, _ = ndimage.label(coarse, structure=np.ones((3,) * mask.ndim, dtype=bool))
    return whole, [
        tuple(slice(s.start * b, min(s.stop * b, n)) for s, b, n in zip(box, block, mask.shape))
        for box in ndimage.find_objects(groups)
        if box is not None
    ]


# ----------------------------------------------------------------------------------------------
# instances and spark peaks


def find_spark_peaks(
    movie: np.ndarray,
    spark_instances: np.ndarray,
    pixel_size_um: float,
    frame_interval_ms: float,
    *,
    sigma_um: float = 0.4,
    sigma_ms: float = 13.6,
    min_distance_um: float = 1.8,
    min_distance_ms: float = 20.0,
) -> np.ndarray:
    """Maxima of the smoothed movie inside each spark: an (N, 4) int64 array of t, y, x, spark id.

    Per spark (voxels with the same non-zero id), the movie is smoothed by a Gaussian of σ
    ``sigma_ms`` × ``sigma_um`` using only the spark's own voxels (normalised convolution), and
    regional maxima are kept when no higher voxel of the spark lies closer than
    ``min_distance_um`` in space *and* ``min_distance_ms`` in time. A flat-topped maximum (a
    saturated spark) counts once, at the voxel nearest its centre; among equal maxima closer than
    the min distance the first in (t, y, x) order wins. Every spark gets at least one peak.
    """
    movie = np.asarray(getattr(movie, "data", movie))
    spark_instances = np.asarray(spark_instances)
    if movie.shape != spark_instances.shape:
        raise ValueError(f"movie shape {movie.shape} differs from the labels' {spark_instances.shape}")
    if min_distance_um <= 0 or min_distance_ms <= 0:
        raise ValueError("the minimum distances between peaks must be positive")
    grid = _Grid(frame_interval_ms, pixel_size_um)
    sigma = grid.sigma(sigma_ms, sigma_um)
    kt, ky, kx = grid.strictly_within(min_distance_ms, min_distance_um)
    dy, dx = np.ogrid[-ky : ky + 1, -kx : kx + 1]
    disk = (dy * pixel_size_um) ** 2 + (dx * pixel_size_um) ** 2 < min_distance_um**2 * (1 - _EPS)
    footprint = disk[None]

    compact, ids = _compact_ids(spark_instances)
    peaks: list[np.ndarray] = []
    for k, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is None:
            continue
        inside = compact[box] == k
        smooth = _smooth_within(movie[box].astype(np.float64), inside, sigma)
        smooth[~inside] = -np.inf
        highest = ndimage.maximum_filter1d(smooth, size=2 * kt + 1, axis=0, mode="constant", cval=-np.inf)
        highest = ndimage.maximum_filter(highest, footprint=footprint, mode="constant", cval=-np.inf)
        low = smooth[inside].min() - 1.0
        smooth[~inside] = low  # finite, and padded, for the regional-maximum test (tiny boxes too)
        regional = local_maxima(np.pad(smooth, 1, constant_values=low), connectivity=3)[1:-1, 1:-1, 1:-1]
        candidates = inside & (smooth >= highest) & regional
        points = _plateau_centres(candidates, grid.steps)
        kept = _space_ties(points, smooth[tuple(points.T)], kt, disk, ky, kx)
        start = np.array([s.start for s in box])
        peaks.append(np.column_stack([kept + start, np.full(len(kept), ids[k - 1])]))
    if not peaks:
        return np.zeros((0, 4), dtype=np.int64)
    return np.concatenate(peaks).astype(np.int64)


def _compact_ids(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel ids to 1..n (int32) so find_objects stays small; also return the original ids."""
    flat = instances.reshape(-1)
    where = np.flatnonzero(flat)
    ids, inverse = np.unique(flat[where], return_inverse=True)
    compact = np.zeros(instances.shape, dtype=np.int32)
    compact.reshape(-1)[where] = inverse.astype(np.int32) + 1
    return compact, ids


def _smooth_within(values: np.ndarray, inside: np.ndarray, sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian average of ``values`` over the ``inside`` voxels only (normalised convolution)."""
    if not any(s > 0 for s in sigma):
        return values.copy()
    weights = inside.astype(np.float64)
    numerator = ndimage.gaussian_filter(np.where(inside, values, 0.0), sigma, mode="constant")
    denominator = ndimage.gaussian_filter(weights, sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inside, numerator / np.maximum(denominator, 1e-300), 0.0)


def _plateau_centres(candidates: np.ndarray, steps: tuple[float, ...]) -> np.ndarray:
    """One voxel per connected plateau of candidate maxima: the one nearest its centroid."""
    labels, n = ndimage.label(candidates, structure=np.ones((3,) * candidates.ndim, dtype=bool))
    coords = np.argwhere(candidates)
    if n == len(coords):
        return coords
    which = labels[candidates] - 1
    counts = np.bincount(which, minlength=n)
    centroids = np.stack([np.bincount(which, weights=c, minlength=n) for c in coords.T], axis=1) / counts[:, None]
    distance = (((coords - centroids[which]) * np.asarray(steps)) ** 2).sum(axis=1)
    order = np.lexsort((distance, which))
    first = np.ones(len(order), dtype=bool)
    first[1:] = which[order][1:] != which[order][:-1]
    return coords[order[first]]


def _space_ties(
    candidates: np.ndarray, values: np.ndarray, kt: int, disk: np.ndarray, ky: int, kx: int
) -> np.ndarray:
    """Among candidate maxima, keep the highest and drop those within the min distance of a kept one.

    Candidates are already the highest voxels of their neighbourhood, so only equal values can lie
    within the min distance of each other; the loop therefore runs over ties only.
    """
    if len(candidates) <= 1:
        return candidates
    order = np.lexsort((*candidates.T[::-1], -values))
    kept: list[np.ndarray] = []
    for point in candidates[order]:
        if kept:
            offsets = np.abs(np.asarray(kept) - point)
            close = (offsets[:, 0] <= kt) & (offsets[:, 1] <= ky) & (offsets[:, 2] <= kx)
            if close.any() and disk[ky + offsets[close, 1], kx + offsets[close, 2]].any():
                continue
        kept.append(point)
    return np.asarray(kept)


# ----------------------------------------------------------------------------------------------
# label preparation


def prepare_labels(
    class_label: np.ndarray,
    event_label: np.ndarray | None,
    movie: np.ndarray | None,
    pixel_size_um: float,
    frame_interval_ms: float,
    config: LabelConfig | Mapping[str, Any] = LabelConfig(),
) -> np.ndarray:
    """Training class labels (uint8: 0 background, 1 sparks, 2 waves, 3 puffs, 4 ignore).

    ``class_label`` holds the raw annotation, ``event_label`` its instance ids (None: connected
    components per class), ``movie`` the recording (needed for ``sparks_type='peaks'`` only).
    Existing ignore voxels stay ignore; ignore shells only cover background. ``config``: a
    :class:`LabelConfig` or a mapping of its options.
    """
    config = label_options(config)
    classes = _check_labels(class_label, event_label)
    out = classes.copy()
    grid = _Grid(frame_interval_ms, pixel_size_um)  # validates the units
    if config.only_sparks:
        out[(out == WAVE) | (out == PUFF)] = IGNORE
    if config.sparks_type == "peaks" and (out == SPARK).any():
        if movie is None:
            raise ValueError("sparks_type='peaks' needs the movie to find the spark maxima")
        movie = np.asarray(getattr(movie, "data", movie))
        if movie.shape != classes.shape:
            raise ValueError(f"movie shape {movie.shape} differs from the class label shape {classes.shape}")
        spark = out == SPARK
        instances = complete_instances(np.where(spark, SPARK, BACKGROUND), event_label)
        peaks = find_spark_peaks(
            movie, np.where(spark, instances, 0), grid.pixel_size_um, grid.frame_interval_ms,
            sigma_um=config.smooth_sigma_um, sigma_ms=config.smooth_sigma_ms,
            min_distance_um=config.peak_min_distance_um, min_distance_ms=config.peak_min_distance_ms,
        )
        centres = peaks[:, :3]
        balls = paint_ellipsoids(
            classes.shape, centres, config.peak_radius_um, config.peak_radius_ms, grid.pixel_size_um, grid.frame_interval_ms
        )
        out[spark] = IGNORE
        # balls cover background and the (now ignored) raw sparks, never other events or annotated ignore
        painted = balls & ((out == BACKGROUND) | spark)
        joined = _parts_holding(painted, centres)
        out[joined] = SPARK
        # a ball's piece that annotated ignore or another event cuts off from its peak is ignore:
        # as spark it was a tiny spark of its own beyond the annotator's margin, with a new id
        out[painted & ~joined] = IGNORE
        if config.ignore_width_um > 0 or config.ignore_width_ms > 0:
            # the shell around a ball is the concentric ellipsoid (the reference's "closer than 4 voxels")
            outer = paint_ellipsoids(
                classes.shape, centres, config.peak_radius_um + config.ignore_width_um,
                config.peak_radius_ms + config.ignore_width_ms, grid.pixel_size_um, grid.frame_interval_ms,
            )
            out[outer & (out == BACKGROUND)] = IGNORE
        log.debug("%d spark(s) → %d peak ball(s)", len(np.unique(peaks[:, 3])), len(peaks))
    if config.ignore_width_um > 0 or config.ignore_width_ms > 0:
        events = (out == SPARK) | (out == WAVE) | (out == PUFF)
        # at least one voxel: a width a little under a voxel (0.2 µm at 0.21 µm) is still a shell
        width_um = max(config.ignore_width_um, grid.pixel_size_um) if config.ignore_width_um > 0 else 0.0
        width_ms = max(config.ignore_width_ms, grid.frame_interval_ms) if config.ignore_width_ms > 0 else 0.0
        grown = dilate(events, width_um, width_ms, grid.pixel_size_um, grid.frame_interval_ms)
        out[grown & (out == BACKGROUND)] = IGNORE
    return out


def _parts_holding(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 26-connected parts of ``mask`` that hold one of ``points`` (N×3 t, y, x voxel indices)."""
    parts, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    keep = np.zeros(n + 1, dtype=bool)
    keep[parts[tuple(np.asarray(points, dtype=np.int64).reshape(-1, 3).T)]] = True
    keep[0] = False
    return keep[parts]


def adopt_orphan_voxels(labels: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Instance ids for prepared ``labels``: event-class voxels outside every instance of the
    raw annotation (a spark's peak ball reaching past the annotated spark) take the id of the
    instance they touch most, else a new id; without it `casparks check` faulted the prepared
    set's own voxels as belonging to no event."""
    orphan = ((labels == SPARK) | (labels == WAVE) | (labels == PUFF)) & (instances == 0)
    if not orphan.any():
        return instances
    components, _ = ndimage.label(orphan, structure=np.ones((3, 3, 3), bool))
    out = instances.copy()
    next_id = int(instances.max()) + 1
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        part = components[grown] == index
        ring = ndimage.binary_dilation(part, structure=np.ones((3, 3, 3), bool)) & ~part
        touched = instances[grown][ring]
        touched = touched[touched > 0].astype(np.int64)
        if touched.size:
            out[grown][part] = np.bincount(touched).argmax()
        else:
            if next_id > np.iinfo(out.dtype).max:
                out = out.astype(np.uint32)
            out[grown][part] = next_id
            next_id += 1
    return out


def _check_labels(class_label: np.ndarray, event_label: np.ndarray | None) -> np.ndarray:
    """The class labels as uint8, refused as evaluate refuses them (a boolean mask is no class
    codes: it became sparks), with event ids of their shape in every mode: unused by
    ``sparks_type='raw'``, ids of another movie passed unnoticed until the peaks run."""
    classes = np.asarray(class_label)
    if classes.ndim != 3:
        raise ValueError(f"class labels are T×Y×X, got shape {classes.shape}")
    check_codes(classes)
    check_ids(event_label, classes.shape)
    return classes.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# data-set folders


def prepare_dataset_labels(
    in_dir: str | Path,
    out_dir: str | Path,
    config: LabelConfig | Mapping[str, Any] = LabelConfig(),
    pixel_size_um: float | None = None,
    frame_interval_ms: float | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    skip_existing: bool = False,
) -> list[Path]:
    """Write a training data set: for every sample of ``in_dir``, the movie (hard link or copy),
    prepared class labels, event labels (completed by connected components where missing) and
    the events table if any, all with units. Returns the class-label paths written.

    ``skip_existing`` continues an interrupted run: samples whose files are all there and whose
    class labels :data:`PREPARED_RECORD` vouches for, with these settings, are kept; the files an
    interruption left of the others are replaced.

    Units come from each movie's metadata unless ``pixel_size_um`` / ``frame_interval_ms`` are
    given. Everything is checked before the first file is written, and each file is written
    atomically.
    """
    from .dataset import (
        CLASS_SUFFIX,
        EVENT_SUFFIX,
        EVENTS_CSV_SUFFIX,
        VIDEO_SUFFIX,
        list_samples,
        refuse_detection_output,
    )
    from .io import (
        for_data_set,
        read_movie,
        read_label_stack,
        read_units,
        write_class_label,
        write_event_label,
        write_stack,
    )

    config = label_options(config)
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise CasparksError(
            "the output folder is the input folder", path=out_dir, fix="choose another --out folder"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise CasparksError("exists and is not a folder", path=out_dir, fix="choose another --out folder")
    refuse_detection_output(in_dir, fix="give the data-set folder with the annotations (NN_video.tif with "
                                        "NN_class_label.tif)")
    samples = list_samples(in_dir, require=("video", "class_label"))

    # check everything first, so that a mistake leaves nothing half-written, and name every
    # movie's problem at once
    plans, problems = [], []
    for sample in samples:
        try:
            movie = read_movie(sample.video, pixel_size_um, frame_interval_ms)
            problem = _annotation_problem(sample, movie.shape)
        except CasparksError as exc:
            problem = for_data_set(exc)
        if problem is not None:
            problems.append(problem)
            continue
        csv = in_dir / f"{sample.id}{EVENTS_CSV_SUFFIX}"
        targets = {
            "video": out_dir / f"{sample.id}{VIDEO_SUFFIX}.tif",
            "class_label": out_dir / f"{sample.id}{CLASS_SUFFIX}.tif",
            "event_label": out_dir / f"{sample.id}{EVENT_SUFFIX}.tif",
        }
        if csv.is_file():
            targets["events"] = out_dir / csv.name
        plans.append((sample, movie, csv, targets))
    raise_together(problems, len(samples), "prepared",
                   fix="fix them (casparks check lists every problem of the folder); nothing was written")
    _refuse_other_samples(out_dir, {sample.id for sample in samples})
    if overwrite and skip_existing:
        raise CasparksError("--overwrite and --skip-existing contradict each other",
                            fix="--skip-existing keeps the samples prepared before, --overwrite replaces them: choose one")
    if skip_existing:  # the ones done with these settings stay; the rest are written (over what is left of them)
        # a sample whose files are all there and whose record vouches for them: kept if prepared with
        # these settings, refused if with others (it was replaced without --overwrite)
        recorded = [_recorded_settings(targets["class_label"]) if all(p.is_file() for p in targets.values()) else None
                    for *_, targets in plans]
        _refuse_prepared_otherwise([targets for *_, targets in plans], recorded, config)
        kept = [settings is not None for settings in recorded]  # the others were refused
        plans = [plan for plan, keep in zip(plans, kept) if not keep]
        overwrite = True
        if any(kept):
            log.info("%d sample(s) prepared before with these settings are kept", sum(kept))
    if not overwrite:
        existing = [p for *_, targets in plans for p in targets.values() if p.exists()]
        if existing:
            shown = ", ".join(p.name for p in existing[:5]) + (" …" if len(existing) > 5 else "")
            raise CasparksError(
                f"{len(existing)} output file(s) exist already ({shown})",
                path=out_dir, fix="choose another --out folder, pass --skip-existing to go on where an interrupted "
                                  "run stopped, or --overwrite to replace them",
            )

    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    # the record names each class-label file as written, so that a sample an interruption left
    # half-replaced, or one saved into the folder later, is not vouched for
    record = {name: entry for name, entry in _read_record(out_dir).items()
              if name not in {targets["class_label"].name for *_, targets in plans}}
    _write_record(out_dir, record)
    for done, (sample, movie, csv, targets) in enumerate(plans, start=1):
        pixel, frame = movie.pixel_size_um, movie.frame_interval_ms
        classes = np.asarray(read_label_stack(sample.class_label))
        events = None if sample.event_label is None else np.asarray(read_label_stack(sample.event_label))
        instances = complete_instances(classes, events)
        labels = prepare_labels(classes, instances, movie.data, pixel, frame, config)
        instances = adopt_orphan_voxels(labels, instances)
        if _same_units(read_units(sample.video), (pixel, frame)):
            _link_or_copy(sample.video, targets["video"], overwrite)
        else:  # the units came from the arguments: write them into the copy
            write_stack(targets["video"], movie.data, pixel, frame, overwrite)
        write_class_label(targets["class_label"], labels, pixel, frame, overwrite)
        write_event_label(targets["event_label"], instances, pixel, frame, overwrite)
        if "events" in targets:
            _link_or_copy(csv, targets["events"], overwrite, link=False)
        written.append(targets["class_label"])
        record[targets["class_label"].name] = _identity(targets["class_label"], config)
        _write_record(out_dir, record)
        log.info(
            "%s: %s", sample.id,
            ", ".join(f"{name} {int(np.count_nonzero(labels == code))}" for code, name in ((SPARK, "spark"), (IGNORE, "ignore"))) + " voxels",
        )
        if progress is not None:
            progress(done, len(plans))
    return written


#: the file :func:`prepare_dataset_labels` writes beside the labels: for each class-label file it
#: wrote, the :class:`LabelConfig` used and the file's size and time (training prepares labels
#: itself, and must not turn peak balls into balls again)
PREPARED_RECORD = "prepared_labels.json"


def _identity(path: Path, config: LabelConfig) -> dict[str, Any]:
    stat = path.stat()
    return {**asdict(config), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_record(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        record = json.loads((Path(folder) / PREPARED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = record.get("class_labels") if isinstance(record, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def _recorded_settings(class_label: str | Path) -> dict[str, Any] | None:
    """The settings :data:`PREPARED_RECORD` holds for a class-label file it wrote and that has not
    changed since (saved again, edited: its size or time differ), else None."""
    path = Path(class_label)
    entry = _read_record(path.parent).get(path.name)
    try:
        stat = path.stat()
    except OSError:
        return None
    if entry is None or entry.get("size") != stat.st_size or entry.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return {key: value for key, value in entry.items() if key not in ("size", "mtime_ns")}


def _refuse_prepared_otherwise(plans: Sequence[dict[str, Path]], recorded: Sequence[dict[str, Any] | None],
                               config: LabelConfig) -> None:
    """Refuse ``--skip-existing`` where whole samples were prepared with other settings than
    ``config`` (``recorded``: each sample's, None where not vouched for): it replaced them (peaks
    labels rewritten as raw) without ``--overwrite``, as ``detect --skip-existing`` refuses
    results detected otherwise."""
    wanted = asdict(config)
    for targets, settings in zip(plans, recorded):
        if settings is not None and settings != wanted:
            changes = ", ".join(f"{key}: {settings.get(key)!r} → {wanted.get(key)!r}"
                                for key in sorted(set(settings) | set(wanted)) if settings.get(key) != wanted.get(key))
            raise CasparksError(f"was prepared with other settings ({changes})", path=targets["class_label"],
                                fix="give the settings it was prepared with to go on, or pass --overwrite to "
                                    "prepare every sample again")


def _write_record(out_dir: Path, files: dict[str, dict[str, Any]]) -> None:
    from .io import atomic_output

    with atomic_output(out_dir / PREPARED_RECORD, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"written_by": "casparks prepare-labels", "class_labels": files}, indent=1),
                       encoding="utf-8")


def prepared_sparks_type(class_label: str | Path) -> str | None:
    """The ``sparks_type`` a class-label file was prepared with by :func:`prepare_dataset_labels`
    (its folder's :data:`PREPARED_RECORD`), or None for one it did not write, or that changed
    since (saved again, edited)."""
    settings = _recorded_settings(class_label)
    return settings.get("sparks_type") if settings else None


def _refuse_other_samples(out_dir: Path, ids: set[str]) -> None:
    """Refuse an output folder that holds movies the input no longer has: ``--overwrite`` replaced
    the prepared ones and left those, which check found clean and training then used (a movie
    removed from the input for a bad annotation, or renamed 01 → 1: the same movie twice)."""
    from .dataset import scan_samples

    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    try:
        held = scan_samples(out_dir)[0]
    except CasparksError:  # no samples in it
        return
    other = sorted(sample.id for sample in held if sample.id not in ids)
    if other:
        shown = ", ".join(other[:8]) + (" …" if len(other) > 8 else "")
        raise CasparksError(f"holds {len(other)} movie(s) the input folder does not ({shown}): training on the "
                            "folder would use them too", path=out_dir,
                            fix="choose an empty --out folder, or remove those movies from it")


def _annotation_problem(sample: Any, shape: tuple[int, ...]) -> CasparksError | None:
    """What ``casparks check`` calls an error in a sample's labels (another shape than the movie,
    unknown codes, float codes, an event of two classes, bad ids), as one error, or None: the
    prepared set would carry it into training (or stop half-written), and which class an event
    of two classes has is the annotator's call, not ours."""
    from .dataset import annotation_error
    from .io import read_label_stack

    arrays = {}
    for path in (sample.class_label, sample.event_label):
        if path is None:
            continue
        arrays[path] = np.asarray(read_label_stack(path))
        if arrays[path].shape != shape:
            return CasparksError(f"shape {arrays[path].shape} differs from the movie's {shape}",
                                 path=path, fix="check that the labels belong to this movie")
    return annotation_error(sample.class_label, arrays[sample.class_label], sample.event_label,
                            arrays.get(sample.event_label))


def _same_units(found: tuple[float | None, float | None], used: tuple[float, float]) -> bool:
    return all(f is not None and math.isclose(f, u, rel_tol=1e-6) for f, u in zip(found, used))


def _link_or_copy(source: Path, target: Path, overwrite: bool, link: bool = True) -> None:
    """Hard-link ``source`` to ``target`` (copy where links are impossible), atomically."""
    from .io import atomic_output

    with atomic_output(target, overwrite) as tmp:
        tmp.unlink()
        try:
            if not link:
                raise OSError
            os.link(source, tmp)
        except OSError:
            try:
                shutil.copyfile(source, tmp)
            except OSError as exc:  # a full disk: copyfile names the source, the movie that was read
                raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc

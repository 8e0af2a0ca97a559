"""Figures of a detection, as physiologists show them: every function returns a Matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot): nothing opens a window,
nothing is shared between calls, and they render in scripts, notebooks (display the returned
figure) and headless servers alike. Save with ``fig.savefig("x.png", dpi=150)``. Every axis
carries its physical unit, every title says what is shown (after the movie's ``name`` when
given), every event has its class colour (:data:`casparks.classes.CLASS_COLORS`), and a class
or a movie without events gives a figure that says so instead of an error.

- :func:`projection_figure`: the field of view (max over time of ΔF/F0) with each event's outline;
- :func:`kymograph_figure`: x against time, the line-scan view; by default the maximum over y (every
  event shows), or the ΔF/F0 along a line at ``y_um``;
- :func:`trace_gallery_figure`: ΔF/F0 over time at the peak of a few events per class;
- :func:`distributions_figure`: amplitude, FWHM, FDHM and duration per class;
- :func:`frequency_figure`: events per 100 µm per s and per 1000 µm² per s, per class.

:func:`detection_figures` makes all five for a detection and its movie, as the report does::

    detection = casparks.detection.read_detection("results/01_video_detection.json")
    figs = casparks.figures.detection_figures(detection, casparks.read_movie(detection.source))
    figs["kymograph"].savefig("kymograph.png", dpi=200)

The image figures take ΔF/F0 as a T×Y×X array; :func:`detection_dff` computes it for a detection
the way its measurements did (:func:`casparks.measure.dff_movie`, F0 estimated outside events),
and :func:`display_dff` smooths it lightly (1 px, 1 frame) so faint events stand out of the noise.
The tables are the detection's ``events`` and ``frequency`` (pooled over movies, with a ``movie``
column, for a folder's summary).
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .classes import CLASS_COLORS, CLASS_NAMES, EVENT_CLASSES

__all__ = ["detection_dff", "detection_figures", "display_dff", "display_projections", "line_rows", "distributions_figure", "frequency_figure", "kymograph_figure",
           "projection_figure", "trace_gallery_figure"]

#: the measurements shown by :func:`distributions_figure`: column, axis label
DISTRIBUTIONS = (("amplitude_dff", "amplitude (ΔF/F0)"), ("fwhm_um", "FWHM (µm)"), ("fdhm_ms", "FDHM (ms)"),
                 ("duration_ms", "duration (ms)"))
#: above this many events, ids are not written next to the outlines (they would hide the image)
MAX_ID_LABELS = 80
_CODES = {name: code for code, name in CLASS_NAMES.items()}


def class_color(code_or_name: int | str) -> tuple[float, float, float]:
    """The class colour as Matplotlib wants it (RGB in 0-1)."""
    code = _CODES[code_or_name] if isinstance(code_or_name, str) else int(code_or_name)
    return tuple(c / 255 for c in CLASS_COLORS[code])  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# ΔF/F0 for display


def detection_dff(movie: Any, detection: Any, lazy: bool = False) -> Any:
    """ΔF/F0 (T×Y×X float32) of ``movie`` with F0 estimated outside ``detection``'s events.

    Uses the measurement settings recorded with the detection, so the traces and images show the
    ΔF/F0 the event table was measured on. ``lazy``: a :class:`casparks.measure.LazyDff` that
    computes the values where they are read (same numbers, no float copy of the movie).
    """
    from .measure import LazyDff, MeasureConfig, dff_movie

    config = MeasureConfig.from_dict(detection.settings["measure"]) if detection.settings.get("measure") else MeasureConfig()
    level = getattr(detection, "dark_level", None)
    if config.offset_adu == "auto" and level:  # the one the table was measured with: 0 where it was not read
        config = dataclasses.replace(config, offset_adu=float(level["adu"]) if level.get("adu") is not None else 0.0)
    make = LazyDff if lazy else dff_movie
    classes = getattr(detection, "class_label", None)  # F0 leaves out as much after each class as the table's
    return make(movie, np.asarray(detection.event_label) > 0, detection.pixel_size_um, detection.frame_interval_ms,
                config, None if classes is None else np.asarray(classes))


def _smoothed_blocks(dff: Any, pixel_size_um: float, frame_interval_ms: float, sigma_um: float | None,
                     sigma_ms: float | None, block_frames: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, smoothed frames) of :func:`display_dff`, a block of frames at a time, each
    with the filter's reach of real neighbours as margin (so the blocks join into one pass)."""
    from scipy import ndimage

    sigma_px = 1.0 if sigma_um is None else sigma_um / pixel_size_um
    sigma_t = 1.0 if sigma_ms is None else sigma_ms / frame_interval_ms
    truncate = 2.0
    margin = int(truncate * sigma_t + 0.5)  # SciPy's kernel radius along t
    n = len(dff)
    for start in range(0, n, max(1, block_frames)):
        stop = min(n, start + block_frames)
        lo, hi = max(0, start - margin), min(n, stop + margin)
        part = np.nan_to_num(np.asarray(dff[lo:hi], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        smooth = ndimage.gaussian_filter(part, (sigma_t, sigma_px, sigma_px), truncate=truncate)
        yield start, stop, smooth[start - lo : start - lo + (stop - start)]


def display_dff(dff: Any, pixel_size_um: float, frame_interval_ms: float, sigma_um: float | None = None,
                sigma_ms: float | None = None, block_frames: int = 256) -> np.ndarray:
    """ΔF/F0 smoothed by a Gaussian (default one pixel and one frame) for images and kymographs.

    Single voxels of ΔF/F0 are shot noise; a one-voxel blur makes events visible without
    changing their size noticeably. Non-finite values (F0 of 0) become 0. Runs in blocks of
    ``block_frames`` frames (the same result as one pass), so a long movie needs one output
    copy, not three. ``dff``: an array or a :class:`casparks.measure.LazyDff`.
    """
    out = np.empty(tuple(dff.shape), dtype=np.float32)
    for start, stop, smooth in _smoothed_blocks(dff, pixel_size_um, frame_interval_ms, sigma_um, sigma_ms,
                                                block_frames):
        out[start:stop] = smooth
    return out


def display_projections(dff: Any, pixel_size_um: float, frame_interval_ms: float, *,
                        line_rows: slice | None = None, block_frames: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(max over time: Y×X, kymograph: T×X) of :func:`display_dff`, without holding it whole.

    The kymograph is the max over y, or the mean over ``line_rows`` (see :func:`line_rows`);
    these are exactly what :func:`projection_figure` and :func:`kymograph_figure` compute from
    the smoothed movie, so a detection's figures need no float copy of a long movie.
    """
    T, H, W = tuple(dff.shape)
    projection = np.full((H, W), -np.inf, dtype=np.float32)
    kymograph = np.empty((T, W), dtype=np.float32)
    for start, stop, smooth in _smoothed_blocks(dff, pixel_size_um, frame_interval_ms, None, None, block_frames):
        np.maximum(projection, smooth.max(axis=0), out=projection)
        kymograph[start:stop] = smooth.max(axis=1) if line_rows is None else smooth[:, line_rows].mean(axis=1)
    return projection, kymograph


def _display_range(image: np.ndarray, events: np.ndarray | None = None,
                   within: np.ndarray | None = None) -> tuple[float, float]:
    """0 to the 99.5th percentile: ΔF/F0 images start at rest; a few hot voxels do not set the
    scale. Where ``events`` (a mask of the image's event pixels) is given, to at least the
    events' 99th percentile: events covering under 0.5 % of an image (a line's kymograph) were
    shown saturated, the scale topping at 0.09 for sparks of 0.3-0.9. ``within`` (the cell's
    pixels): the percentile of those only (the noise of a dim background, ΔF/F0 of a few, set
    the scale of a narrow cell's image)."""
    if within is not None and within.any():
        image = np.where(within | (events if events is not None else False), image, np.nan)
    finite = image[np.isfinite(image)]
    vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    if events is not None and events.any():
        inside = image[events & np.isfinite(image)]
        if inside.size:
            vmax = max(vmax, float(np.percentile(inside, 99)))
    return 0.0, vmax if vmax > 0 else 1.0


def _time_unit(duration_ms: float) -> tuple[str, float]:
    """Seconds for movies longer than 2 s, else milliseconds."""
    return ("s", 1000.0) if duration_ms > 2000 else ("ms", 1.0)


def _title(title: str | None, name: str | None, default: str) -> str:
    """``title`` if given, else the default description, after the movie's ``name`` if given
    (a PNG pasted into a slide should say which movie it shows)."""
    if title:
        return title
    return f"{name}: {default}" if name else default


def _no_events(ax: Any, text: str = "no events") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.35")


def _legend(fig: Figure, counts: dict[int, int] | None) -> None:
    """Class colours below the axes, outside the image (a legend on the image hides events)."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="none", edgecolor=class_color(code), linewidth=1.5,
                     label=f"{CLASS_NAMES[code]}s" + (f" ({counts.get(code, 0)})" if counts is not None else ""))
               for code in EVENT_CLASSES]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)


def _class_counts(events: pd.DataFrame) -> dict[int, int]:
    if not len(events):
        return {}
    names = events["class"].value_counts()
    return {code: int(names.get(name, 0)) for code, name in CLASS_NAMES.items()}


def _outline(ax: Any, x: np.ndarray, y: np.ndarray, mask: np.ndarray, code: int, linewidth: float) -> None:
    """Outline of a boolean mask (rows along ``y``, columns along ``x``) in the class colour."""
    if mask.any():
        contours = ax.contour(x, y, mask.astype(np.float32), levels=[0.5], colors=[class_color(code)],
                              linewidths=linewidth)
        contours.set_gid(f"outline-{CLASS_NAMES[code]}")


# ----------------------------------------------------------------------------------------------
# images


def projection_figure(dff: np.ndarray, class_label: np.ndarray, pixel_size_um: float,
                      events: pd.DataFrame | None = None, *, title: str | None = None,
                      name: str | None = None, width_in: float = 11.0, cell: np.ndarray | None = None) -> Figure:
    """The field of view: max over time of ΔF/F0 (grey), each class's events outlined in its colour.

    ``dff``: T×Y×X ΔF/F0 (:func:`display_dff` of :func:`detection_dff`); ``class_label`` its
    class codes; ``events`` (optional) writes each event's id at its peak; ``cell`` (optional,
    Y×X) the cell's pixels, whose ΔF/F0 and the events' set the grey scale.
    """
    dff, class_label = np.asarray(dff), np.asarray(class_label)
    _, H, W = class_label.shape
    px = float(pixel_size_um)
    image = dff.max(axis=0) if dff.ndim == 3 else dff
    vmin, vmax = _display_range(image, (class_label > 0).any(axis=0), cell)
    height_in = min(max(1.6, width_in * H / W + 1.1), 12)
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, extent=(0, W * px, H * px, 0), interpolation="nearest")
    x_um, y_um = (np.arange(W) + 0.5) * px, (np.arange(H) + 0.5) * px
    for code in EVENT_CLASSES:
        _outline(ax, x_um, y_um, (class_label == code).any(axis=0), code, 1.0)
    events = events if events is not None else pd.DataFrame(columns=["id", "class"])
    _label_ids(ax, events, "peak_x_um", "peak_y_um", 1.0, W * px, H * px)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    counts = _class_counts(events) if len(events) else {c: _count_ids(class_label, c) for c in EVENT_CLASSES}
    _legend(fig, counts)
    if not (class_label > 0).any():
        _no_events(ax)
    fig.colorbar(shown, ax=ax, label="ΔF/F0", shrink=0.9, pad=0.01)
    ax.set_title(_title(title, name, "max over time of ΔF/F0, events outlined by class"), fontsize=10)
    return fig


def _count_ids(class_label: np.ndarray, code: int) -> int:
    """Events of a class without a table: connected regions of its voxels."""
    from scipy import ndimage

    return int(ndimage.label(class_label == code)[1])


def _label_ids(ax: Any, events: pd.DataFrame, x_col: str, y_col: str, x_scale: float, x_max: float,
               y_max: float) -> None:
    """Write event ids next to their peaks (skipped for crowded movies): above and right of the
    peak, or below it near the top edge (y grows downwards: y = 0 is the top) and left of it near
    the right edge, where the label was clipped away (a spark 0.06 µm from the top had none)."""
    if not len(events) or len(events) > MAX_ID_LABELS or x_col not in events or y_col not in events:
        return
    for row in events.to_dict("records"):
        x, y = float(row[x_col]), float(row[y_col])
        if not (np.isfinite(x) and np.isfinite(y)) or row["class"] not in _CODES:
            continue
        top, right = y < 0.08 * y_max, x > 0.96 * x_max
        ax.annotate(str(int(row["id"])), (x / x_scale, y), xytext=(-3 if right else 3, -3 if top else 3),
                    textcoords="offset points", ha="right" if right else "left", va="top" if top else "bottom",
                    fontsize=7, color=class_color(row["class"]), clip_on=True)


def line_rows(height_px: int, pixel_size_um: float, y_um: float, line_width_um: float = 0.6) -> slice:
    """The rows of a kymograph line ``line_width_um`` wide at ``y_um`` (an error outside the field)."""
    px = float(pixel_size_um)
    if not 0 <= y_um < height_px * px:
        raise ValueError(f"y_um={y_um} lies outside the field (0 to {height_px * px:g} µm)")
    half = _half_px(line_width_um, px)
    row = min(height_px - 1, int(y_um / px))
    return slice(max(0, row - half), min(height_px, row + half + 1))


def kymograph_figure(dff: np.ndarray, class_label: np.ndarray, pixel_size_um: float, frame_interval_ms: float,
                     events: pd.DataFrame | None = None, *, y_um: float | None = None, line_width_um: float = 0.6,
                     title: str | None = None, name: str | None = None, width_in: float = 11.0,
                     max_columns: int = 1500) -> Figure:
    """The line-scan view: x (µm, down) against time (across), events outlined by class.

    Default (``y_um=None``): the maximum of ΔF/F0 over y at each x and time, so every event in
    the field appears where and when it happens. With ``y_um``: the mean ΔF/F0 over a line
    ``line_width_um`` wide at that y (as a line scan through the cell), outlining the events that
    cross the line. The title says which. ``dff``: T×Y×X, or the T×X kymograph image already
    made (:func:`display_projections`). Movies longer than ``max_columns`` frames are shown
    with the maximum over bins of frames (said in the title): an image shrunk to the page's
    width by dropping frames would drop sparks too.
    """
    dff, class_label = np.asarray(dff), np.asarray(class_label)
    T, H, W = class_label.shape
    px, dt = float(pixel_size_um), float(frame_interval_ms)
    if y_um is None:
        image = dff.max(axis=1) if dff.ndim == 3 else dff  # T×X
        masks = {code: (class_label == code).any(axis=1) for code in EVENT_CLASSES}
        what = "max over y of ΔF/F0"
    else:
        rows = line_rows(H, px, y_um, line_width_um)
        image = dff[:, rows].mean(axis=1) if dff.ndim == 3 else dff
        masks = {code: (class_label[:, rows] == code).any(axis=1) for code in EVENT_CLASSES}
        width = (rows.stop - rows.start) * px
        what = f"ΔF/F0 along a line at y = {(min(H - 1, int(y_um / px)) + 0.5) * px:.1f} µm ({width:.1f} µm wide)"
    starts = np.arange(T)
    step = max(1, math.ceil(T / max_columns))
    if step > 1:
        starts = np.arange(0, T, step)
        image = np.maximum.reduceat(image, starts, axis=0)
        masks = {code: np.logical_or.reduceat(mask, starts, axis=0) for code, mask in masks.items()}
        what += f" (max over {step} frames per column)"
    unit, scale = _time_unit(T * dt)
    vmin, vmax = _display_range(image, np.logical_or.reduce(list(masks.values())))
    fig = Figure(figsize=(width_in, min(max(2.5, width_in * 0.42), 8)), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(image.T, cmap="gray", vmin=vmin, vmax=vmax, extent=(0, T * dt / scale, W * px, 0),
                      aspect="auto", interpolation="nearest")
    t_axis = (starts + np.minimum(step, T - starts) / 2) * dt / scale
    x_axis = (np.arange(W) + 0.5) * px
    for code, mask in masks.items():
        _outline(ax, t_axis, x_axis, mask.T, code, 0.9)
    events = events if events is not None else pd.DataFrame(columns=["id", "class"])
    if y_um is None and len(events) and "peak_ms" in events:
        _label_ids(ax, events, "peak_ms", "peak_x_um", scale, T * dt, W * px)
    ax.set_xlabel(f"t ({unit})")
    ax.set_ylabel("x (µm)")
    if y_um is None:
        _legend(fig, _class_counts(events) if len(events) else {c: _count_ids(class_label, c) for c in EVENT_CLASSES})
    else:
        _legend(fig, None)  # counts of the whole field would mislead on a line
    if not any(mask.any() for mask in masks.values()):
        _no_events(ax, "no events" if y_um is None else "no event crosses this line")
    fig.colorbar(shown, ax=ax, label="ΔF/F0", shrink=0.9, pad=0.01)
    ax.set_title(_title(title, name, f"kymograph: {what}, events outlined by class"), fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# traces


def gallery_events(events: pd.DataFrame, per_class: int = 6) -> dict[str, pd.DataFrame]:
    """Up to ``per_class`` events of each class at evenly spaced ranks of amplitude, largest first.

    Evenly spaced ranks rather than the largest: the gallery should show the typical event and
    the faint ones too, not only the best.
    """
    chosen = {}
    for name in CLASS_NAMES.values():
        rows = events[events["class"] == name] if len(events) else events
        if "amplitude_dff" in rows:
            rows = rows.sort_values("amplitude_dff", ascending=False, na_position="last")
        if len(rows) > per_class:
            picks = np.unique(np.round(np.linspace(0, len(rows) - 1, per_class)).astype(int))
            rows = rows.iloc[picks]
        chosen[name] = rows
    return chosen


#: the side of the square at an event's peak whose mean :func:`event_trace` draws (µm)
TRACE_WIDTH_UM = 0.6


def event_trace(dff: np.ndarray, event_label: np.ndarray, row: Any, pixel_size_um: float, frame_interval_ms: float,
                width_um: float = TRACE_WIDTH_UM) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(times_ms, ΔF/F0, (y, x) pixel) of one event: the mean over a ``width_um`` square at its peak.

    The window runs from a quarter of the event's duration (at least 30 ms) before its start to
    half its duration (at least 60 ms) after its end, so the baseline and the decay show. Without
    a measured peak position the event's brightest voxel is used.
    """
    T, H, W = event_label.shape
    px, dt = float(pixel_size_um), float(frame_interval_ms)
    y, x = row.get("peak_y_um", np.nan), row.get("peak_x_um", np.nan)
    if np.isfinite(y) and np.isfinite(x) and 0 <= y < H * px and 0 <= x < W * px:
        yi, xi = int(y / px), int(x / px)
    else:
        voxels = np.argwhere(event_label == int(row["id"]))
        if not len(voxels):
            yi, xi = H // 2, W // 2
        else:
            values = dff[voxels[:, 0], voxels[:, 1], voxels[:, 2]]
            _, yi, xi = voxels[int(np.nanargmax(np.nan_to_num(values, nan=-np.inf)))]
    start, end = float(row["start_ms"]), float(row["end_ms"])
    duration = max(end - start, dt)
    first = max(0, math.floor((start - max(30.0, 0.25 * duration)) / dt))
    last = min(T, math.ceil((end + max(60.0, 0.5 * duration)) / dt))
    half = _half_px(width_um, px)
    patch = dff[first:last, max(0, yi - half): yi + half + 1, max(0, xi - half): xi + half + 1]
    values = np.nanmean(patch.reshape(patch.shape[0], -1), axis=1)
    times = (np.arange(first, last) + 0.5) * dt
    return times, values, (int(yi), int(xi))


def _half_px(width_um: float, pixel_size_um: float) -> int:
    """Pixels on each side of the centre of an odd band ``width_um`` wide (a trace's square, a
    kymograph's line): 0.6 µm is 1, 3 or 5 px at 0.3, 0.2 or 0.1 µm."""
    return max(0, round(width_um / pixel_size_um) - 1) // 2


def trace_gallery_figure(dff: np.ndarray, event_label: np.ndarray, events: pd.DataFrame, pixel_size_um: float,
                         frame_interval_ms: float, *, per_class: int = 6, title: str | None = None,
                         name: str | None = None) -> Figure:
    """ΔF/F0 over time at the peak of up to ``per_class`` events of each class (rows: classes).

    The event's labelled span is shaded in its class colour; the panel title gives its id (as in
    the events table) and amplitude. Events are picked by :func:`gallery_events`.
    """
    from .measure import LazyDff

    dff = dff if isinstance(dff, LazyDff) else np.asarray(dff)  # a LazyDff computes only the traces
    event_label = np.asarray(event_label)
    chosen = gallery_events(events, per_class)
    names = list(chosen)
    columns = max(1, min(per_class, max((len(rows) for rows in chosen.values()), default=1)))
    heights = [1.0 if len(chosen[cls]) else 0.3 for cls in names]
    fig = Figure(figsize=(max(6.0, 2.3 * columns), 2.1 * sum(heights) + 0.5), layout="constrained")
    grid = fig.add_gridspec(len(names), columns, height_ratios=heights)
    for r, cls in enumerate(names):
        rows = chosen[cls]
        if not len(rows):
            ax = fig.add_subplot(grid[r, :])
            ax.set_axis_off()
            _no_events(ax, f"no {cls}s")
            continue
        for c, (_, row) in enumerate(rows.iterrows()):
            ax = fig.add_subplot(grid[r, c])
            times, values, _ = event_trace(dff, event_label, row, pixel_size_um, frame_interval_ms)
            color = class_color(cls)
            ax.axvspan(float(row["start_ms"]), float(row["end_ms"]), color=color, alpha=0.25, linewidth=0)
            ax.plot(times, values, color="0.15", linewidth=1.0)
            ax.axhline(0, color="0.6", linewidth=0.6, linestyle=":")
            amplitude = row.get("amplitude_dff", np.nan)
            label = f"{cls} {int(row['id'])}" + (f", A = {amplitude:.2f}" if np.isfinite(amplitude) else "")
            ax.set_title(label, fontsize=8, color="0.1")
            ax.tick_params(labelsize=7)
            ax.set_xlabel("t (ms)", fontsize=8)
            if c == 0:
                ax.set_ylabel("ΔF/F0", fontsize=8)
    side = 2 * _half_px(TRACE_WIDTH_UM, float(pixel_size_um)) + 1  # event_trace's square
    square = f"{side} × {side} px, {side * float(pixel_size_um):.2g} µm" if side > 1 else "one pixel"
    text = _title(title, name, f"ΔF/F0 at the peak of each event (mean over {square}), event span shaded; "
                               "events at evenly spaced ranks of amplitude")
    # wrapped to the figure's width: one line was cut at both ends above three or fewer columns
    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 12)), fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# tables


def distributions_figure(events: pd.DataFrame, *, title: str | None = None, name: str | None = None) -> Figure:
    """Amplitude (ΔF/F0), FWHM (µm), FDHM (ms) and duration (ms) per class: every event a dot, and a box.

    Boxes span the quartiles with the median marked; dots are jittered sideways. Measurements
    that failed (NaN) are left out and the panel says how many events each class has.
    """
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, len(DISTRIBUTIONS))
    rng = np.random.default_rng(0)  # the same jitter every time: reports are reproducible
    names = list(CLASS_NAMES.values())
    for ax, (column, label) in zip(axes, DISTRIBUTIONS):
        ax.set_ylabel(label)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        shown = 0
        for i, cls in enumerate(names):
            values = events.loc[events["class"] == cls, column].to_numpy(dtype=float) if len(events) and column in events else np.array([])
            values = values[np.isfinite(values)]
            if not values.size:
                continue
            shown += values.size
            color = class_color(cls)
            ax.boxplot([values], positions=[i], widths=0.55, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": (*color, 0.25), "edgecolor": "0.3"},
                       medianprops={"color": "0.1"}, whiskerprops={"color": "0.4"}, capprops={"color": "0.4"})
            ax.scatter(i + rng.uniform(-0.18, 0.18, values.size), values, s=9, color=color, edgecolors="0.2",
                       linewidths=0.3, zorder=3)
        ax.set_xticks(range(len(names)), [f"{n}s\n(n={_n(events, n, column)})" for n in names], fontsize=8)
        ax.set_ylim(bottom=0)
        if not shown:
            _no_events(ax)
            ax.set_ylim(0, 1)
    fig.suptitle(_title(title, name, "measurements per class (box: quartiles and median; dots: events)"), fontsize=10)
    return fig


def _n(events: pd.DataFrame, name: str, column: str) -> int:
    if not len(events) or column not in events:
        return 0
    return int(np.isfinite(events.loc[events["class"] == name, column].to_numpy(dtype=float)).sum())


def frequency_figure(frequency: pd.DataFrame, *, title: str | None = None, name: str | None = None) -> Figure:
    """Events per 100 µm of cell per s and per 1000 µm² per s, per class.

    ``frequency``: :func:`casparks.measure.event_frequency`'s table; with a ``movie`` column
    (several movies pooled) the bars are the mean over movies and each movie is a dot.
    """
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    names = list(CLASS_NAMES.values())
    columns = (("per_100um_per_s", "events / 100 µm / s"), ("per_1000um2_per_s", "events / 1000 µm² / s"))
    table = frequency if len(frequency) else pd.DataFrame(columns=["class", "count", *(c for c, _ in columns)])
    movies = table["movie"].nunique() if "movie" in table else 1
    total = int(pd.to_numeric(table.get("count", pd.Series(dtype=float)), errors="coerce").fillna(0).sum())
    for ax, (column, label) in zip(axes, columns):
        means, spread = [], []
        for cls in names:
            values = pd.to_numeric(table.loc[table["class"] == cls, column], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            means.append(float(values.mean()) if values.size else 0.0)
            spread.append(values)
        bars = ax.bar(range(len(names)), means, color=[class_color(n) for n in names], edgecolor="0.3", width=0.6)
        if movies > 1:
            rng = np.random.default_rng(0)
            for i, values in enumerate(spread):
                ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=10, color="0.15", zorder=3)
        counts = [int(pd.to_numeric(table.loc[table["class"] == n, "count"], errors="coerce").fillna(0).sum())
                  if "count" in table else 0 for n in names]
        ax.bar_label(bars, labels=[f"n={c}" for c in counts], fontsize=7, padding=2)
        ax.set_xticks(range(len(names)), [f"{n}s" for n in names])
        ax.set_ylabel(label)
        ax.set_ylim(0, max(max(means), max((float(v.max()) for v in spread if v.size), default=0)) * 1.2 or 1.0)
        if total == 0:
            _no_events(ax)
    what = f"mean of {movies} movies (dots: movies)" if movies > 1 else "this movie"
    fig.suptitle(_title(title, name, f"event frequency per class, {what}"), fontsize=10)
    return fig


def detection_figures(detection: Any, movie: Any, *, kymograph_y_um: float | None = None,
                      per_class: int = 6) -> dict[str, Figure]:
    """Every figure of the report for one movie: projection, kymograph, traces, distributions, frequency.

    ``detection``: a :class:`casparks.detection.Detection` (e.g. from ``read_detection``);
    ``movie``: its recording (a :class:`casparks.io.Movie`, a T×Y×X array, or its file, read with
    the detection's channel). ΔF/F0 is computed
    where it is needed (:func:`detection_dff` lazily): the images from blocks of smoothed frames
    (:func:`display_projections`), the traces at their events; memory stays that of the labels
    and the memory-mapped movie, however long it is.
    """
    px, dt = detection.pixel_size_um, detection.frame_interval_ms
    events, name, labels = detection.events, detection.name, detection.class_label
    if isinstance(movie, (str, os.PathLike)):  # its file ("a movie is a T×Y×X array, got shape ()")
        from .io import read_movie

        movie = read_movie(movie, pixel_size_um=px, frame_interval_ms=dt, channel=detection.channel, warn=False)
    dff = detection_dff(movie, detection, lazy=True)
    rows = None if kymograph_y_um is None else line_rows(labels.shape[1], px, kymograph_y_um)
    projection, kymograph = display_projections(dff, px, dt, line_rows=rows)
    cell = _cell(movie, detection)
    frequency = detection.frequency
    if not len(frequency) or "per_100um_per_s" not in frequency:  # a summary written without frequencies
        from .measure import event_frequency

        frequency = event_frequency(events, labels.shape, px, dt)
    return {
        "projection": projection_figure(projection, labels, px, events, name=name, cell=cell),
        "kymograph": kymograph_figure(kymograph, labels, px, dt, events, y_um=kymograph_y_um, name=name),
        "traces": trace_gallery_figure(dff, detection.event_label, events, px, dt, per_class=per_class, name=name),
        "distributions": distributions_figure(events, name=name),
        "frequency": frequency_figure(frequency, name=name),
    }


def _cell(movie: Any, detection: Any) -> np.ndarray:
    """The cell as the detection's frequencies found it: in the resting image above the dark
    level the measurements used."""
    from .measure import cell_mask, resting_image

    level = getattr(detection, "dark_level", None) or {}
    offset = detection.settings.get("measure", {}).get("offset_adu", 0.0) if not level else level.get("adu")
    offset = float(offset) if isinstance(offset, (int, float)) else 0.0
    return cell_mask(resting_image(movie, offset), detection.pixel_size_um)


def figure_png(fig: Figure, dpi: float = 110) -> bytes:
    """The figure as PNG bytes (white background, for slides)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()

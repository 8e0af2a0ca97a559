"""Movies, labels and detections as napari layer data: pure functions, no napari import.

Every layer gets the same physical frame (time in ms, y and x in µm) so they overlay and the
viewer's rulers and cursor read real units. World coordinates are the *centres* of voxels in
the convention of the events table (``casparks.measure``: pixel ``i`` spans
``[i·px, (i+1)·px)``, frame ``k`` spans ``[k·Δt, (k+1)·Δt)``): scale ``(Δt, px, px)`` and a
half-voxel translate. So a peak point sits at world ``(peak_ms, peak_y_um, peak_x_um)`` exactly,
and hovering shows positions in the same numbers as the CSV.

Layer data are napari ``(data, kwargs, layer_type)`` tuples, what readers, sample data and
widgets hand to napari; ``metadata["casparks"]`` says what each layer is, so the widgets find
the layers that belong together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..classes import CLASS_COLORS, CLASS_NAMES, CODE_NAMES, PUFF, SPARK

LayerData = tuple[Any, dict[str, Any], str]

AXIS_LABELS = ("t", "y", "x")
UNITS = ("millisecond", "micrometer", "micrometer")
#: classes whose peaks are shown as points (a wave's "peak" is one pixel of a field-wide front)
PEAK_CLASSES = (SPARK, PUFF)
META_KEY = "casparks"


def layer_names(name: str) -> dict[str, str]:
    """The names of a movie's layers, so widgets can find (and replace) them."""
    return {"image": name, "classes": f"{name} classes", "events": f"{name} events", "peaks": f"{name} peaks",
            "probability": f"{name} event probability"}


def peaks_name(events_name: str, name: str) -> str:
    """The name of the peaks layer shown with an events layer of the movie ``name``: the events
    layer's name with 'events' as 'peaks' ('cell events (annotation)' → 'cell peaks (annotation)'),
    so an annotation's peaks and a detection's lie beside their own events; '<events name> peaks'
    for a name without 'events'."""
    own = layer_names(name)
    if events_name.startswith(own["events"]):
        return own["peaks"] + events_name[len(own["events"]):]
    head, sep, tail = events_name.rpartition(" events")
    return f"{head} peaks{tail}" if sep else f"{events_name} peaks"


def data_digest(data: np.ndarray) -> str:
    """A checksum of a labels array as made, kept in its metadata: a later detection replaces
    the layer only while the data still match it (napari's tools paint in place)."""
    import zlib

    array = np.ascontiguousarray(data)
    return f"{array.dtype.str}{array.shape}:{zlib.crc32(memoryview(array).cast('B')):08x}"


def is_edited(data: np.ndarray, metadata: dict | None) -> bool:
    """Whether a labels layer differs from what casparks made (True without a record: a layer
    someone else made is theirs)."""
    digest = ((metadata or {}).get(META_KEY) or {}).get("digest")
    return digest is None or digest != data_digest(np.asarray(data))


def class_colormap() -> dict[int | None, tuple[float, float, float, float]]:
    """Fixed RGBA colours per class code (``casparks.classes.CLASS_COLORS``); background clear."""
    colors: dict[int | None, tuple[float, float, float, float]] = {None: (0.0, 0.0, 0.0, 0.0)}
    for code, rgb in CLASS_COLORS.items():
        colors[code] = (0.0, 0.0, 0.0, 0.0) if code == 0 else (*(c / 255 for c in rgb), 1.0)
    return colors


def frame(pixel_size_um: float | None, frame_interval_ms: float | None) -> dict[str, Any]:
    """scale / translate / units / axis labels shared by every layer of a movie (pixels and
    frames when the units are unknown)."""
    if not (pixel_size_um and frame_interval_ms):
        return {"axis_labels": AXIS_LABELS}
    dt, px = float(frame_interval_ms), float(pixel_size_um)
    return {"scale": (dt, px, px), "translate": (dt / 2, px / 2, px / 2), "units": UNITS, "axis_labels": AXIS_LABELS}


def _meta(kind: str, pixel_size_um: float | None, frame_interval_ms: float | None,
          source: str | Path | None) -> dict:
    has_units = bool(pixel_size_um and frame_interval_ms)
    info = {"kind": kind, "pixel_size_um": float(pixel_size_um) if has_units else None,
            "frame_interval_ms": float(frame_interval_ms) if has_units else None,
            "source": str(source) if source else None}
    return {META_KEY: info}


def image_layer(data: np.ndarray, name: str, pixel_size_um: float | None, frame_interval_ms: float | None,
                source: str | Path | None = None) -> LayerData:
    """The movie; without units (None) in pixels and frames, for the user to set in the Detect or Save panel."""
    kwargs: dict[str, Any] = {"name": name, "colormap": "gray",
                              **frame(pixel_size_um, frame_interval_ms),
                              "metadata": _meta("movie", pixel_size_um, frame_interval_ms, source)}
    return data, kwargs, "image"


def class_layer(class_label: np.ndarray, name: str, pixel_size_um: float | None, frame_interval_ms: float | None,
                source: str | Path | None = None) -> LayerData:
    """Class codes with the tool's fixed colours; hovering names the class.

    The array is copied into a writable one: napari's label tools paint into it in place, and
    files are read as read-only memory maps.
    """
    features = pd.DataFrame({"index": list(CODE_NAMES), "class": list(CODE_NAMES.values())})
    kwargs = {"name": layer_names(name)["classes"], "colormap": class_colormap(), "features": features,
              "opacity": 0.5, **frame(pixel_size_um, frame_interval_ms),
              "metadata": _meta("classes", pixel_size_um, frame_interval_ms, source)}
    data = np.array(class_label, dtype=np.uint8)
    kwargs["metadata"][META_KEY]["digest"] = data_digest(data)
    return data, kwargs, "labels"


def event_features(events: pd.DataFrame | None) -> pd.DataFrame:
    """The events table as Labels features: an ``index`` column holding the event id first."""
    if events is None or len(events) == 0 or "id" not in events:
        return pd.DataFrame({"index": pd.Series([], dtype=np.int64)})
    table = events.reset_index(drop=True).copy()
    table.insert(0, "index", table["id"].astype(np.int64))
    return table


def corrected_event_features(features: pd.DataFrame | None, class_label: np.ndarray,
                             event_label: np.ndarray) -> pd.DataFrame:
    """The events layer's table after a correction: one row per id in ``event_label``, its class
    read from ``class_label``; an old row keeps its measurements (made before the correction),
    a newly painted event has none (NaN), so hovering never shows a class that was changed."""
    events = np.asarray(event_label)
    inside = events > 0
    pairs = np.unique(np.stack([events[inside].astype(np.int64), np.asarray(class_label)[inside].astype(np.int64)]),
                      axis=1)
    ids = np.unique(pairs[0])
    names = {}
    for event_id, code in pairs.T:  # an id on ignore and an event class: the event class names it
        if int(event_id) not in names or int(code) in CLASS_NAMES:
            names[int(event_id)] = CODE_NAMES.get(int(code), str(code))
    old = event_features(None) if features is None or "index" not in features else features
    old = old.drop_duplicates("index").set_index("index")
    table = old.reindex(pd.Index(ids, name="index"))
    if "id" in table:
        table["id"] = ids
    classes = [names[int(i)] for i in ids]
    if "confidence" in table and "class" in table:  # the detector's, for the class it found: not a relabelled one's
        table["confidence"] = table["confidence"].where(table["class"].to_numpy() == np.array(classes, dtype=object))
    table["class"] = classes
    return table.reset_index()


def measured_event_features(events: pd.DataFrame | None, previous: pd.DataFrame | None,
                            renumbered=()) -> pd.DataFrame:
    """The events layer's table after *Measure events*: the measured events (:func:`event_features`),
    each keeping the ``confidence`` of the previous table's row of its id where that row names the
    same class and the id is not in ``renumbered`` (ids measured on voxels the layer gave no or
    another id: a painted event, perhaps under an erased event's id); so the detection's mean event
    probability stays with the events Measure kept, and a painted or relabelled event has none
    (NaN), as labels measured have none."""
    table = event_features(events)
    needed = {"index", "class", "confidence"}
    if previous is None or not needed <= set(previous.columns) or len(table) == 0:
        return table
    old = previous.drop_duplicates("index").set_index("index")
    same = old["class"].reindex(table["index"]).to_numpy() == table["class"].to_numpy()
    same &= ~table["index"].isin(list(renumbered)).to_numpy()
    kept = pd.to_numeric(old["confidence"], errors="coerce").reindex(table["index"]).to_numpy(dtype=float)
    table["confidence"] = np.where(same, kept, np.nan)
    return table


def event_layer(event_label: np.ndarray, name: str, pixel_size_um: float | None, frame_interval_ms: float | None,
                events: pd.DataFrame | None = None, source: str | Path | None = None) -> LayerData:
    """Event instances (one colour per id); hovering an event shows its class and measurements."""
    data = np.array(event_label)
    if data.dtype.kind not in "ui":
        data = data.astype(np.int64)
    kwargs = {"name": layer_names(name)["events"], "features": event_features(events), "opacity": 0.5,
              **frame(pixel_size_um, frame_interval_ms),
              "metadata": _meta("events", pixel_size_um, frame_interval_ms, source)}
    kwargs["metadata"][META_KEY]["digest"] = data_digest(data)
    return data, kwargs, "labels"


def peak_layer(events: pd.DataFrame | None, name: str, pixel_size_um: float, frame_interval_ms: float,
               n_frames: int | None = None, source: str | Path | None = None) -> LayerData | None:
    """Spark and puff peaks as points at ``(peak_ms, peak_y_um, peak_x_um)`` in world units,
    edged in their class colour, with their table rows as features. None without such events."""
    needed = {"class", "peak_ms", "peak_y_um", "peak_x_um"}
    if not (pixel_size_um and frame_interval_ms) or events is None or len(events) == 0 or not needed <= set(events.columns):
        return None
    names = [CLASS_NAMES[c] for c in PEAK_CLASSES]
    rows = events[events["class"].isin(names)]
    rows = rows[np.isfinite(rows[["peak_ms", "peak_y_um", "peak_x_um"]].to_numpy(dtype=float)).all(axis=1)]
    if len(rows) == 0:
        return None
    dt, px = float(frame_interval_ms), float(pixel_size_um)
    # world = data · scale + translate, with translate half a voxel (see the module docstring)
    data = np.column_stack([rows["peak_ms"] / dt - 0.5, rows["peak_y_um"] / px - 0.5, rows["peak_x_um"] / px - 0.5])
    if n_frames is not None:
        data[:, 0] = np.clip(data[:, 0], 0, n_frames - 1)
    code_of = {v: k for k, v in CLASS_NAMES.items()}
    colors = np.array([[c / 255 for c in CLASS_COLORS[code_of[n]]] + [1.0] for n in rows["class"]])
    kwargs = {"name": layer_names(name)["peaks"], "features": rows.reset_index(drop=True),
              "size": max(3.0, 1.0 / px), "face_color": "transparent", "border_color": colors,
              "border_width": 0.15, "symbol": "disc", **frame(px, dt),
              "metadata": _meta("peaks", px, dt, source)}
    return data.astype(np.float64), kwargs, "points"


def result_layers(class_label: np.ndarray, event_label: np.ndarray | None, events: pd.DataFrame | None, name: str,
                  pixel_size_um: float, frame_interval_ms: float, source: str | Path | None = None) -> list[LayerData]:
    """Classes, peaks and events of one movie, in the order napari should add them: the events
    layer last, so it is the selected one and hovering shows an event's class and measurements."""
    layers = [class_layer(class_label, name, pixel_size_um, frame_interval_ms, source)]
    peaks = peak_layer(events, name, pixel_size_um, frame_interval_ms, class_label.shape[0], source)
    if peaks is not None:
        layers.append(peaks)
    if event_label is not None:
        layers.append(event_layer(event_label, name, pixel_size_um, frame_interval_ms, events, source))
    return layers


def probability_layer(probabilities: np.ndarray, name: str, pixel_size_um: float, frame_interval_ms: float,
                      source: str | Path | None = None) -> LayerData:
    """The event probability 1 − p(background) (what the threshold is applied to), hidden at first."""
    event = 1.0 - np.asarray(probabilities[0], dtype=np.float32)
    kwargs = {"name": layer_names(name)["probability"], "colormap": "magma", "contrast_limits": (0.0, 1.0),
              "blending": "additive", "visible": False, **frame(pixel_size_um, frame_interval_ms),
              "metadata": _meta("probability", pixel_size_um, frame_interval_ms, source)}
    return event, kwargs, "image"


def detection_layers(detection, name: str | None = None) -> list[LayerData]:
    """A :class:`casparks.detection.Detection` as (event probability, when kept,) classes, peaks
    and events layers."""
    name = name or detection.name
    layers = []
    if detection.probabilities is not None:
        layers.append(probability_layer(detection.probabilities, name, detection.pixel_size_um,
                                        detection.frame_interval_ms, detection.source))
    return layers + result_layers(detection.class_label, detection.event_label, detection.events, name,
                                  detection.pixel_size_um, detection.frame_interval_ms, detection.source)


def movie_layers(movie, class_label=None, event_label=None, events: pd.DataFrame | None = None) -> list[LayerData]:
    """A :class:`casparks.io.Movie` (and its labels, when given) as layers, the movie first."""
    layers = [image_layer(movie.data, movie.name, movie.pixel_size_um, movie.frame_interval_ms, movie.source)]
    if class_label is not None:
        layers += result_layers(class_label, event_label, events, movie.name, movie.pixel_size_um,
                                movie.frame_interval_ms, movie.source)
    elif event_label is not None:
        layers.append(event_layer(event_label, movie.name, movie.pixel_size_um, movie.frame_interval_ms, events,
                                  movie.source))
    return layers


__all__ = [
    "AXIS_LABELS",
    "UNITS",
    "LayerData",
    "class_colormap",
    "class_layer",
    "data_digest",
    "is_edited",
    "corrected_event_features",
    "detection_layers",
    "event_features",
    "event_layer",
    "frame",
    "image_layer",
    "layer_names",
    "measured_event_features",
    "movie_layers",
    "peak_layer",
    "peaks_name",
    "probability_layer",
    "result_layers",
]

"""napari reader: movies with their labels, and ``casparks detect`` results.

What it opens (anything else returns None, so napari's own readers take the file):

* a T×Y×X TIFF movie → the movie with its units, plus what lies beside it: the detection of it
  (``<stem>_detection.json`` and its label files, from ``casparks detect --out`` into the same
  folder) or its annotations in the original layout (``NN_video.tif`` with
  ``NN_class_label.tif``, ``NN_event_label.tif`` and, in simulated sets, ``NN_events.csv``);
* a label file of either kind → the whole sample or detection it belongs to (or the labels
  alone when nothing else is there);
* a ``<stem>_detection.json`` (or its ``_probabilities.tif``) or a folder of them → each movie
  (found at the path recorded at detection time, or beside the results) with its classes,
  events and peaks, and the event probability when it was saved (``--save-probabilities``).

* a Leica ``.lif`` project → each of its x-y-t movies with its units, one layer per channel,
  named as ``casparks convert`` names its TIFFs (``<project>_<image path>``, ``_channel<c>``
  added); line scans, z-stacks and snapshots are named in a warning and left out.

A movie without units opens in pixels and frames, with a warning: the Detect events and Save training
sample panels ask for them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import CODE_NAMES
from ..dataset import (
    CLASS_SUFFIX,
    EVENT_SUFFIX,
    EVENTS_CSV_SUFFIX,
    VIDEO_SUFFIX,
    sample_id,
)
from ..detection import SUMMARY_SUFFIX
from ..errors import CasparksError
from ..io import MOVIE_SUFFIXES, Movie, movie_fingerprint, movie_stem, read_movie, read_stack, read_units
from ..projects import is_project_file, movie_channels, project_movies, read_detected_movie
from . import _layers
from ._layers import LayerData

log = logging.getLogger(__name__)

PROBABILITIES_TAIL = "_probabilities"


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader for ``path`` when casparks can read it, else None (napari then tries others)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        return read_detection_folder if any(q.name.endswith(SUMMARY_SUFFIX) for q in p.iterdir()) else None
    name = p.name.lower()
    if name.endswith(SUMMARY_SUFFIX):
        return read_detection_folder
    if is_project_file(p):
        return read_project
    if not name.endswith(MOVIE_SUFFIXES):
        return None
    if _summary_of_probabilities(p) is not None:  # 4 channels, but a detection's: opened with it
        return read_tiff
    if movie_stem(p).endswith(PROBABILITIES_TAIL):  # moved or copied without its summary: no movie to split
        _warn(f"{p.name} holds a detection's class probabilities (background, spark, wave, puff), and its "
              f"{movie_stem(p)[: -len(PROBABILITIES_TAIL)]}{SUMMARY_SUFFIX} is not beside it: open the detection's "
              "results folder or its _detection.json")
        return None
    axes = _tiff_axes(p)
    if axes is not None and _has_channels(axes):
        _warn(f"{p.name} is a multi-channel movie ({''.join(a for a, _ in axes)}); casparks reads one-channel "
              "T×Y×X movies: split the channels (Fiji: Image > Color > Split Channels) and open the calcium channel")
    return read_tiff if axes is not None and _is_movie(axes) else None


def _summary_of_probabilities(path: Path) -> Path | None:
    """The ``<stem>_detection.json`` beside a ``<stem>_probabilities.tif``, or None."""
    stem = movie_stem(path)
    if not stem.endswith(PROBABILITIES_TAIL):
        return None
    summary = path.parent / f"{stem[: -len(PROBABILITIES_TAIL)]}{SUMMARY_SUFFIX}"
    return summary if summary.is_file() else None


def read_tiff(path: str | list[str]) -> list[LayerData]:
    """A movie or label TIFF, with the files that belong with it."""
    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    parsed = sample_id(p)
    stem = movie_stem(p)
    summary = _summary_of_probabilities(p)
    if summary is not None:
        return _detection(summary)
    if parsed is None or parsed[1] == "video":
        return _movie_with_labels(p)
    tail = CLASS_SUFFIX if parsed[1] == "class_label" else EVENT_SUFFIX
    summary = p.parent / f"{stem[: -len(tail)]}{SUMMARY_SUFFIX}"
    if summary.is_file():
        return _detection(summary)
    for owner in (stem[: -len(tail)], f"{parsed[0]}{VIDEO_SUFFIX}"):
        video = _beside(p.parent, owner)
        if video is not None:
            return _movie_with_labels(video)
    return [_label_file(p, parsed[1])]


def read_project(path: str | list[str]) -> list[LayerData]:
    """Every x-y-t movie of a microscope project file, one T×Y×X layer per channel, with its units."""
    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    movies, left_out = project_movies(p)
    if not movies:
        listed = "; ".join(f"{image.path}: {image.skipped}" for image in left_out[:3])
        more = f"; and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        raise CasparksError(f"holds no x-y-t movie ({listed or 'no images'}{more})", path=p,
                            fix="open a project that holds x-y-t recordings")
    if left_out:
        _warn(f"{p.name}: left out {len(left_out)} image(s) that are not x-y-t movies: "
              + "; ".join(f"{image.path} ({image.skipped.split(':')[0]})" for image in left_out))
    for image, _ in movies:
        if image.pixel_size_um is None or image.frame_interval_ms is None:
            _warn(f"{p.name}: {image.path} has no pixel size or frame interval: enter them in the Detect events or "
                  "Save training sample panel")
    return [_layers.image_layer(array, name, image.pixel_size_um, image.frame_interval_ms, p)
            for name, array, image in movie_channels(movies)]


def read_detection_folder(path: str | list[str]) -> list[LayerData]:
    """Every detection of a ``casparks detect --out`` folder, or the one ``_detection.json`` given."""
    from ..detection import find_detections

    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    layers: list[LayerData] = []
    for summary in find_detections(p):
        layers += _detection(summary)
    return layers


# ----------------------------------------------------------------------------------------------


def _tiff_axes(path: Path) -> list[tuple[str, int]] | None:
    """The TIFF's axes longer than 1, e.g. [('T', 200), ('C', 2), ...], judged from its header
    alone (compressed movies are not decoded here); None for what tifffile cannot read."""
    from ..io import _movie_series, _open_tiff

    try:
        with _open_tiff(Path(path)) as tif:  # frames written one call each are one movie, as casparks reads them
            if not tif.series:
                return None
            series = tif.series[_movie_series(tif, path)]  # not an LSM's thumbnails
            return [(axis, n) for axis, n in zip(series.axes, series.shape) if n != 1]
    except Exception:  # noqa: BLE001 - whatever tifffile raises, it is not ours to read
        return None


def _has_channels(axes: list[tuple[str, int]]) -> bool:
    """A movie with a channel (or sample) axis: T×C×Y×X and the like (a 2-D colour image is not)."""
    return len(axes) >= 4 and any(axis in "CS" for axis, _ in axes)


def _is_movie(axes: list[tuple[str, int]]) -> bool:
    """A one-channel T×Y×X stack; 2-D images, multi-channel and damaged files are left to napari's
    own readers."""
    return len(axes) == 3 and not any(axis in "CS" for axis, _ in axes)


def _beside(folder: Path, stem: str) -> Path | None:
    for suffix in (*MOVIE_SUFFIXES, *(s.upper() for s in MOVIE_SUFFIXES)):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _warn(message: str) -> None:
    """A warning in napari's notifications (logging when napari is absent)."""
    try:
        from napari.utils.notifications import show_warning
    except ImportError:  # pragma: no cover - the plugin runs inside napari
        log.warning(message)
    else:
        show_warning(message)


def _read_movie_or_none(path: Path, pixel_size_um: float | None = None,
                        frame_interval_ms: float | None = None) -> Movie | None:
    """The movie with its units, or None when the file has none, or units casparks cannot use (a
    z-stack's slice spacing, non-square pixels): the data are then read bare, and the reason told
    (it was raised with the command line's advice, "pass --frame-interval MS", and not opened)."""
    try:
        return read_movie(path, pixel_size_um, frame_interval_ms)
    except CasparksError as exc:
        if "metadata" in exc.what:
            return None
        read_stack(path)  # the data's own problem (damaged, channels, 2-D) is raised as it is
        _warn(f"{path.name}: {exc.what}; its units are not used")
        return None


def _label_files(folder: Path, name: str) -> tuple[Path | None, Path | None, Path | None]:
    """(class label, event label, events csv) named after ``name`` in ``folder``, each None where absent."""
    csv = folder / f"{name}{EVENTS_CSV_SUFFIX}"
    return (_beside(folder, f"{name}{CLASS_SUFFIX}"), _beside(folder, f"{name}{EVENT_SUFFIX}"),
            csv if csv.is_file() else None)


def _annotation_of(video: Path) -> tuple[Path | None, Path | None, Path | None] | None:
    """(class label, event label, events csv) of a movie's annotation in the original layout
    (``NN_class_label.tif`` beside ``NN_video.tif``), or None where it has none."""
    parsed = sample_id(video)
    if parsed is None or parsed[1] != "video":
        return None
    files = _label_files(video.parent, parsed[0])
    return files if files[0] is not None or files[1] is not None else None


def _labels_beside(video: Path) -> tuple[Path | None, Path | None, Path | None]:
    """The labels of a movie without an annotation: casparks outputs named after its stem."""
    return _label_files(video.parent, movie_stem(video))


def _truth_table(path: Path | None) -> pd.DataFrame | None:
    """A simulated set's ground-truth list (``event_id`` is the id in the event labels)."""
    if path is None:
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        _warn(f"{path}: not read ({exc}); events shown without their table")
        return None
    if "id" not in table and "event_id" in table:
        table = table.rename(columns={"event_id": "id"})
    if "id" not in table:
        return None
    # events the simulator did not label (too faint) have id 0, the background's: hovering the
    # background showed one of them
    return table[pd.to_numeric(table["id"], errors="coerce") > 0].reset_index(drop=True)


def _movie_with_labels(video: Path) -> list[LayerData]:
    summary = video.parent / f"{movie_stem(video)}{SUMMARY_SUFFIX}"
    annotation = _annotation_of(video)
    if summary.is_file():
        if annotation is None:
            return _detection(summary, video)
        # a detection saved into the data set never replaces the annotation (its labels would be
        # saved back as a person's): the annotation is shown, the detection opens from its summary
        _warn(f"{video.name}: its annotation is shown; the detection beside it opens from {summary.name}")
    movie = _read_movie_or_none(video)
    class_path, event_path, csv_path = annotation if annotation is not None else _labels_beside(video)
    shape = None
    if movie is None:
        data = read_stack(video)
        shape = data.shape
        units = (None, None)
        for label_path in (class_path, event_path):  # labels written by casparks carry units
            if label_path is not None and None in units:
                units = read_units(label_path)
        if None in units:
            _warn(f"{video.name}: no pixel size / frame interval in the file; opened in pixels and frames "
                  "(enter them in the Detect events or Save training sample panel)")
            layers = [_layers.image_layer(data, movie_stem(video), None, None, video)]
            return layers + _bare_labels(class_path, event_path, movie_stem(video), shape, video)
        movie = Movie(data, units[0], units[1], name=movie_stem(video), source=video)
    classes = _read_label(class_path, movie.shape)
    events = _read_label(event_path, movie.shape)
    table = _truth_table(csv_path)
    if classes is not None and events is not None:
        # each event's class as its labels say (a sample corrected in place kept the simulator's
        # list, and hovering showed the class corrected away); the list's other columns stay
        table = _layers.corrected_event_features(_layers.event_features(table), classes, events)
        table = table.drop(columns=["id"], errors="ignore").rename(columns={"index": "id"})
        if "class_code" in table:  # the simulator's list also gives the code
            codes = {name: code for code, name in CODE_NAMES.items()}
            table["class_code"] = [codes.get(name, -1) for name in table["class"]]
    layers = _layers.movie_layers(movie, classes, events, table)
    for _, kwargs, kind in layers:  # a detection run on the movie keeps them (renamed), never replaces them
        if kind == "labels":
            kwargs["metadata"][_layers.META_KEY]["annotation"] = True
    return layers


def _read_label(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if path is None:
        return None
    data = read_stack(path)
    if data.shape != tuple(shape):
        _warn(f"{path.name}: shape {data.shape} differs from the movie's {tuple(shape)}; not shown")
        return None
    return data


def _bare_labels(class_path, event_path, name, shape, video: Path) -> list[LayerData]:
    """The annotation of a movie without units, in pixels and frames like it; its source is the
    movie's, as with units (their own file's made them another movie's labels, which Save refused)."""
    layers = []
    for path, kind in ((class_path, "class_label"), (event_path, "event_label")):
        data = _read_label(path, shape)
        if data is not None:
            data, kwargs, layer_type = _label_file(path, kind, data=data, name=name, units=(None, None))
            info = kwargs["metadata"][_layers.META_KEY]
            info.update(source=str(video), annotation=True)  # a detection keeps them, as any annotation
            layers.append((data, kwargs, layer_type))
    return layers


def _label_file(path: Path, kind: str, data=None, name: str | None = None, units=None) -> LayerData:
    """One label file on its own (no movie beside it)."""
    data = read_stack(path) if data is None else data
    px, dt = read_units(path) if units is None else units
    name = name or movie_stem(path)[: -len(CLASS_SUFFIX if kind == "class_label" else EVENT_SUFFIX)]
    if kind == "class_label":
        return _layers.class_layer(data, name, px, dt, path)
    return _layers.event_layer(data, name, px, dt, None, path)


def _detection(summary: Path, video: Path | None = None) -> list[LayerData]:
    """A detection's layers, with its movie when it can be found."""
    from ..detection import read_detection

    detection = read_detection(summary)
    candidates = [video] if video is not None else []
    if detection.source is not None:
        candidates.append(detection.source if detection.source.is_absolute() else summary.parent / detection.source)
        candidates.append(summary.parent / detection.source.name)
    candidates.append(_beside(summary.parent, detection.name))
    layers: list[LayerData] = []
    for candidate in candidates:
        if candidate is None or not Path(candidate).is_file():
            continue
        # units as the detection used them (they may have been given on the command line)
        try:
            movie = read_detected_movie(candidate, detection.name, detection.movie_fingerprint,
                                        detection.pixel_size_um, detection.frame_interval_ms,
                                        channel=detection.channel)  # the channel it was detected in
        except CasparksError as exc:
            if not is_project_file(candidate):  # a damaged movie file is an error, as always
                raise
            _warn(f"{exc.path}: {exc.what}; not shown")  # a project without this movie: try the next place
            continue
        if movie.shape != detection.class_label.shape:
            _warn(f"{candidate}: shape {movie.shape} differs from the detection's {detection.class_label.shape}; "
                  "not shown")
            continue
        if detection.movie_fingerprint and movie_fingerprint(movie.data) != detection.movie_fingerprint:
            _warn(f"{candidate}: not the movie {summary.name} was made on (its pixels differ); not shown")
            continue
        layers.append(_layers.image_layer(movie.data, detection.name, movie.pixel_size_um, movie.frame_interval_ms,
                                          candidate))
        # the labels belong to the movie where it was found (moved since): the save widget compares them
        detection = dataclasses.replace(detection, source=Path(candidate))
        break
    else:
        _warn(f"{summary.name}: the movie {detection.source or detection.name} was not found; showing the results "
              "alone (open the movie too)")
    return layers + _layers.detection_layers(detection)

"""Measure the events of labels a person drew or corrected, as ``casparks detect`` measures its own.

An annotated data set (``NN_video.tif`` with ``NN_class_label.tif`` and ``NN_event_label.tif``),
a detection corrected in napari and saved as a training sample, or labels drawn in Fiji: their
events get the same measurements, frequencies, dark level and output files as a detection's
(:mod:`casparks.detection`), so that ``casparks report``, :func:`casparks.read_events` and
:func:`casparks.read_movies` read them, and a detection and an annotation of one movie can be
compared event by event with one code measuring both.

What differs from a detection: there is no network, so no model, no threshold and no
``confidence`` (empty); the events keep the ids of the event labels given (ids without an event
voxel, on ignore or background voxels only, are dropped; event voxels without an id, or every
event where no event labels are given, get new ids by connected components per class, numbered
as napari's *Save training sample* numbers them: touching events of one class then become one). Ignore voxels (code 4) are
measured as nothing and kept out of the baseline, as an event's voxels are. A spark id on separate
regions (two sparks sharing an id?) is one event, as ``casparks evaluate`` scores it and its pairs
table joins it, and is named in a warning, as ``casparks check`` names it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .classes import EVENT_CLASSES
from .detection import LABELS_MODEL, Detection, assemble_detection, output_paths, write_detection
from .errors import CasparksError, raise_together
from .io import Movie, instance_dtype
from .measure import MeasureConfig

log = logging.getLogger(__name__)

__all__ = ["measure_labels", "measure_files"]

def measure_labels(
    movie: Movie | str | Path | np.ndarray,
    class_label: np.ndarray,
    event_label: np.ndarray | None = None,
    *,
    pixel_size_um: float | None = None,
    frame_interval_ms: float | None = None,
    channel: int | None = None,
    config: MeasureConfig = MeasureConfig(),
    labels: dict[str, str | None] | None = None,
) -> Detection:
    """Measure the events of given labels in a movie: a :class:`Detection` without a network.

    ``movie``: a :class:`Movie`, a file, or a T×Y×X array with ``pixel_size_um`` and
    ``frame_interval_ms`` (``channel``: the calcium channel of a multi-channel file or T×C×Y×X
    array, as :func:`casparks.detect` takes it). ``class_label``: T×Y×X codes (0 background,
    1 spark, 2 wave, 3 puff, 4 ignore); ``event_label``: instance ids of the same shape, or None
    (see the module docstring for how ids are kept or made). ``labels``: where the labels came
    from, recorded in the summary (``{"class_label": path, "event_label": path or None}``:
    ``Detection.labels``).
    """
    from .detection import _as_movie

    mark = time.perf_counter()
    movie = _as_movie(movie, pixel_size_um, frame_interval_ms, channel)
    return _measure_labels(movie, class_label, event_label, config, labels, mark)


def _measure_labels(movie: Movie, class_label: Any, event_label: Any, config: MeasureConfig,
                    labels: dict[str, str | None] | None, mark: float, warn_pieces: bool = True) -> Detection:
    """:func:`measure_labels` of a :class:`Movie`; ``warn_pieces`` False where the spark ids on
    separate regions were said already (``measure_files``' files, by :func:`read_annotation`)."""
    _check_movie(movie, config)
    class_label, ids = event_ids(class_label, event_label, movie.data.shape, movie.name, warn_pieces=warn_pieces)
    timings = {"check": time.perf_counter() - mark}
    mark = time.perf_counter()
    events = _measure_by_id(movie, class_label, ids, config)
    timings["measure"] = time.perf_counter() - mark
    settings = {"measure": config.to_dict()}
    return assemble_detection(movie, class_label, ids.astype(instance_dtype(int(ids.max(initial=0)))), events,
                              offset_adu=config.offset_adu, model=LABELS_MODEL, settings=settings,
                              event_threshold=float("nan"), timings=timings,
                              elapsed_s=timings["check"] + timings["measure"],
                              labels=dict(labels) if labels else {"class_label": None, "event_label": None})


#: ids are measured as given up to this; beyond it (hand-edited labels with ids of 10⁸), through
#: 1..N: the measuring allocates per id up to the largest
COMPACT_IDS_ABOVE = 1 << 20


def _measure_by_id(movie: Movie, class_label: np.ndarray, ids: np.ndarray, config: MeasureConfig):
    """:func:`casparks.measure.measure_events` under the ids given, through compact ids 1..N where
    the largest id given is far beyond N."""
    from .measure import measure_events

    px, dt = movie.pixel_size_um, movie.frame_interval_ms
    if int(ids.max(initial=0)) <= COMPACT_IDS_ABOVE:
        return measure_events(movie, class_label, ids, px, dt, config=config)
    given, compact = np.unique(ids, return_inverse=True)  # given[0] is 0 (background)
    events = measure_events(movie, class_label, compact.reshape(ids.shape), px, dt, config=config)
    events["id"] = given[events["id"].to_numpy()]
    return events


@contextlib.contextmanager
def _quiet():
    """casparks' warnings held back (a check that runs again later, when they are said)."""
    logger = logging.getLogger("casparks")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_movie(movie: Movie, config: MeasureConfig) -> None:
    """A NaN or constant movie, or a dark level above its signal, named as ``detect`` names them."""
    from .detection import _check_offset, _check_values

    _check_values(movie.data, movie)
    _check_offset(movie.data, config.offset_adu, movie)


def event_ids(class_label: Any, event_label: Any, shape: tuple[int, ...], name: str,
              warn_pieces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The checked class codes (uint8) and the event ids to measure (int64): the ids given, on event
    voxels only; event voxels without an id get new ids (connected components per class) numbered
    as napari's *Save training sample* and :func:`casparks.evaluate_movie` number them
    (:func:`casparks.instances.corrected_instances`: after the largest id left on event or ignore
    voxels, not on voxels erased to background), so a corrected movie's ids agree wherever it is
    measured or scored. An id over two event classes is refused, as ``casparks check`` refuses
    it; a spark id on separate regions is measured as one spark, as ``evaluate`` scores it, and
    named in a warning (with ``warn_pieces``) as ``check`` names it."""
    from .dataset import complete_event_label, sparks_in_pieces, sparks_in_pieces_message
    from .evaluation import _refuse_events_of_two_classes
    from .metrics import check_codes, check_ids

    classes = np.asarray(class_label)
    if classes.shape != tuple(shape):
        raise CasparksError(f"{name}: the class labels have shape {classes.shape}, the movie {tuple(shape)}",
                            fix="give the labels of this movie (frames × rows × columns)")
    check_codes(classes)
    check_ids(event_label, classes.shape)
    _refuse_ids_beyond_uint32(event_label, name)
    if event_label is not None:
        given = np.asarray(event_label)
        if given.dtype.kind == "f":  # whole numbers, checked above
            given = given.astype(np.int64)
        _refuse_events_of_two_classes(classes, given, name)
    else:
        given = None
        log.warning("%s: no event labels, the events are connected components per class (touching events of "
                    "one class become one)", name)
    ids = complete_event_label(classes, given).astype(np.int64)
    # ignore voxels of an id still join its pieces; components (no event labels) are never in pieces
    pieces = sparks_in_pieces(ids, classes) if warn_pieces and given is not None else {}
    if pieces:
        log.warning("%s: %s", name, sparks_in_pieces_message(pieces))
    is_event = np.isin(classes, EVENT_CLASSES)
    ids[~is_event] = 0  # an id on ignore or background voxels is no event to measure
    return classes.astype(np.uint8), ids


def _refuse_ids_beyond_uint32(event_label: Any, name: str) -> None:
    """Ids past uint32's largest (a uint64 label file) fit no event-label file casparks writes."""
    if event_label is None:
        return
    top = np.asarray(event_label).max(initial=0)
    if top > np.iinfo(np.uint32).max:
        raise CasparksError(f"{name}: event ids reach {int(top)}, beyond uint32's largest (4294967295)",
                            fix="renumber them 1..N, e.g. skimage.segmentation.relabel_sequential(ids)[0]")


def measure_files(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    pixel_size_um: float | None = None,
    frame_interval_ms: float | None = None,
    channel: int | None = None,
    config: MeasureConfig = MeasureConfig(),
    overwrite: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure the labelled events of annotated movies and write a detection's files per movie.

    ``inputs``: data-set folders in the original layout or ``NN_video.tif`` files (one path, or
    several); a folder's movies without ``NN_class_label.tif`` are left out with a warning.
    ``channel``: the calcium channel of multi-channel movies (0-based). Every movie and its labels
    are checked (readable, units known, labels of its shape and of known codes, outputs absent
    unless ``overwrite``) before anything is written; each movie's files are written atomically.
    Returns each movie's summary; ``on_result(summary)`` is called as each is written.
    """
    from .evaluation import read_annotation
    from .io import read_movie

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CasparksError("the output path is a file, not a folder", path=out_dir, fix="choose a folder for --out")
    samples = annotated_samples([inputs] if isinstance(inputs, (str, Path)) else inputs)
    if any(_same_folder(s.video.parent, out_dir) for s in samples):
        raise CasparksError("is the annotated movies' own folder: the measured labels' copies would lie beside "
                            "the annotation as a detection of it", path=out_dir, fix="choose another --out folder")
    problems, movies = [], []
    for sample in samples:  # every movie's problem at once; the labels are read again when measured
        try:
            with _quiet():  # what is only worth saying once is said when the movie is measured
                movie = read_movie(sample.video, pixel_size_um, frame_interval_ms, channel=channel, warn=False)
                _check_movie(movie, config)
                classes, events = read_annotation(sample)  # codes, ids, events of two classes
            _refuse_ids_beyond_uint32(events, str(sample.event_label))
            if classes.shape != movie.data.shape:
                raise CasparksError(f"has shape {classes.shape}, the movie {sample.video.name} {movie.data.shape}",
                                    path=sample.class_label, fix="give the labels drawn on this movie")
            movies.append((sample, movie.name))
        except CasparksError as exc:
            problems.append(exc)
    raise_together(problems, len(samples), "measured", fix="fix or leave out these movies; nothing was written")
    names = [name for _, name in movies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CasparksError(f"two inputs are both named {twice[0]!r}: their results would overwrite each other",
                            path=out_dir, fix="measure them into separate --out folders")
    if not overwrite:
        existing = [p for name in names for p in output_paths(out_dir, name).values() if p.exists()]
        if existing:
            raise CasparksError(f"{len(existing)} result file(s) exist already, e.g. {existing[0].name}", path=out_dir,
                                fix="choose another --out folder, or pass --overwrite (Python: overwrite=True)")
    results = []
    for sample, _ in movies:
        movie = read_movie(sample.video, pixel_size_um, frame_interval_ms, channel=channel)
        classes, events = read_annotation(sample)  # says casparks check's warnings, spark ids in pieces too
        mark = time.perf_counter()
        detection = _measure_labels(movie, classes, events, config,
                                    {"class_label": str(sample.class_label.absolute()),
                                     "event_label": str(sample.event_label.absolute()) if sample.event_label else None},
                                    mark, warn_pieces=False)
        paths = write_detection(detection, out_dir, overwrite=overwrite)
        summary = detection.summary()
        summary["name"] = detection.name
        summary["outputs"] = {k: str(p) for k, p in paths.items()}
        results.append(summary)
        if on_result is not None:
            on_result(summary)
    return results


def annotated_samples(inputs: Iterable[str | Path]) -> list:
    """The annotated samples (movie and class labels, event labels where there are) of data-set
    folders and ``NN_video.tif`` files, in the order given. A folder's movies without class labels
    are left out with a warning naming them (an error where none has labels); a file given that is
    not an ``NN_video.tif``, or one without class labels, is an error naming it."""
    from .dataset import list_samples, sample_id
    from .paths import home_path

    inputs = list(inputs)
    samples: list = []
    problems = []
    for given in inputs:
        path = home_path(given)
        try:
            if path.is_dir():
                found = list_samples(path, require=("video",))
                samples.extend(_annotated(found, path))
                continue
            parsed = sample_id(path)
            if not path.exists():
                raise CasparksError("does not exist", path=path, fix="check the path")
            if parsed is None or parsed[1] != "video":
                raise CasparksError("is not a movie of the original layout (NN_video.tif)", path=path,
                                    fix="give a data-set folder or its NN_video.tif files, whose labels lie beside "
                                        "them as NN_class_label.tif (and NN_event_label.tif)")
            found = [s for s in list_samples(path.parent, require=()) if s.id == parsed[0]]
            samples.extend(_annotated(found, path))
        except CasparksError as exc:
            problems.append(exc)
    raise_together(problems, len(inputs), "read",
                   fix="fix or leave out these inputs; nothing was written")
    return samples


def _annotated(samples: Sequence, where: Path) -> list:
    """The samples with class labels; those without are named: in a warning where some have them
    (a folder still being annotated), else in an error."""
    lacking = [s.id for s in samples if s.class_label is None]
    if not lacking:
        return list(samples)
    shown = ", ".join(lacking[:5]) + (" …" if len(lacking) > 5 else "")
    if len(lacking) == len(samples):
        raise CasparksError(f"{'no movie has' if len(lacking) > 1 else 'the movie has no'} class labels "
                            f"(NN_class_label.tif): {shown}", path=where,
                            fix="annotate them, or give the folder that holds their labels")
    log.warning("%s: %d movie(s) without class labels (NN_class_label.tif) left out: %s", where, len(lacking), shown)
    return [s for s in samples if s.class_label is not None]


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return b.exists() and a.resolve() == b.resolve()
    except OSError:
        return False

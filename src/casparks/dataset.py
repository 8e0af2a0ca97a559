"""Data-set folders in the original layout, and their validation (`casparks check`).

A data-set folder holds, per sample ``NN``: ``NN_video.tif`` (T×Y×X movie), ``NN_class_label.tif``
(uint8 codes 0 background, 1 sparks, 2 waves, 3 puffs, 4 ignore) and ``NN_event_label.tif``
(instance ids). Simulated sets also hold ``NN_events.csv``, the ground-truth event list.

:func:`write_sample` adds a movie and its (corrected) labels to such a folder, validated first, so
that the napari plugin (and any script) builds training data in the layout the trainer reads;
:func:`complete_event_label` makes instance ids agree with hand-corrected classes before that.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import BACKGROUND, CODE_NAMES, EVENT_CLASSES, IGNORE, KNOWN_CODES, SPARK, binary_mask_hint
from .errors import CasparksError
from .io import TIFF_SUFFIXES, Movie, for_data_set, read_label_stack, read_stack, read_units
from .paths import home_path

VIDEO_SUFFIX = "_video"
CLASS_SUFFIX = "_class_label"
EVENT_SUFFIX = "_event_label"
EVENTS_CSV_SUFFIX = "_events.csv"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One movie of a data set and its annotation files (None where absent)."""

    id: str
    video: Path | None
    class_label: Path | None
    event_label: Path | None

    def path(self, kind: str) -> Path | None:
        return {"video": self.video, "class_label": self.class_label, "event_label": self.event_label}[kind]


def sample_id(path: str | Path) -> tuple[str, str] | None:
    """Split a file name into (movie id, kind), e.g. '01_video.tif' -> ('01', 'video').

    Prediction files named after the movie stem ('01_video_class_label.tif') pair with id '01'.
    """
    name = Path(path).name
    lower = name.lower()
    # an OME-TIFF x.ome.tif is named x, as detection names it
    suffix = next((s for s in (*(".ome" + t for t in TIFF_SUFFIXES), *TIFF_SUFFIXES) if lower.endswith(s)), None)
    if suffix is None:
        return None
    stem = name[: -len(suffix)]
    for kind, tail in (("class_label", CLASS_SUFFIX), ("event_label", EVENT_SUFFIX), ("video", VIDEO_SUFFIX)):
        if stem.endswith(tail):
            movie = stem[: -len(tail)]
            if kind != "video" and movie.endswith(VIDEO_SUFFIX):
                movie = movie[: -len(VIDEO_SUFFIX)]
            return (movie, kind) if movie else None
    return None


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def is_detection_name(path: str | Path) -> bool:
    """A label file named after its movie ('01_video_class_label.tif'): what `casparks detect`
    writes, as opposed to an annotation ('01_class_label.tif')."""
    parsed = sample_id(path)
    if parsed is None or parsed[1] == "video":
        return False
    name = Path(path).name.lower()
    tail = {"class_label": CLASS_SUFFIX, "event_label": EVENT_SUFFIX}[parsed[1]]
    return any(name.endswith(f"{VIDEO_SUFFIX}{tail}{suffix}") for suffix in TIFF_SUFFIXES)


def _pick(first: Path, second: Path, prefer: str) -> tuple[Path, Path]:
    """(kept, ignored) of two files for one sample and kind: the annotation's name wins over a
    detection's, or the reverse with ``prefer`` 'detection'; else the first by name."""
    want_detection = prefer == "detection"
    first, second = sorted((first, second), key=lambda p: p.name)
    if is_detection_name(second) == want_detection and is_detection_name(first) != want_detection:
        return second, first
    return first, second


def scan_samples(folder: str | Path, prefer: str = "annotation") -> tuple[list[Sample], list[tuple[Path, Path]]]:
    """The samples of ``folder`` (sorted by id) and the (kept, ignored) pairs of files that name
    the same sample and kind (see :func:`list_samples`); a folder without samples is an error."""
    if prefer not in ("annotation", "detection"):
        raise ValueError(f"prefer is 'annotation' or 'detection', got {prefer!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise CasparksError("is not a folder" if folder.exists() else "does not exist", path=folder,
                            fix="give the folder that holds NN_video.tif files")
    found: dict[str, dict[str, Path]] = {}
    ignored: list[tuple[Path, Path]] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):  # hidden: a Mac's ._NAME companions on a shared drive, as detection skips them
            continue
        parsed = sample_id(path)
        if parsed and path.is_file():
            movie, kind = parsed
            files = found.setdefault(movie, {})
            if kind in files:
                files[kind], dropped = _pick(files[kind], path, prefer)
                ignored.append((files[kind], dropped))
            else:
                files[kind] = path
    for files in found.values():
        # class labels and event ids from one source: an annotation without its own event file
        # takes its instances from connected components, never a detection's ids beside it
        classes, events = files.get("class_label"), files.get("event_label")
        if classes is not None and events is not None and is_detection_name(classes) != is_detection_name(events):
            ignored.append((classes, files.pop("event_label")))
    samples = [
        Sample(movie, files.get("video"), files.get("class_label"), files.get("event_label"))
        for movie, files in sorted(found.items(), key=lambda item: _natural_key(item[0]))
    ]
    if not samples:
        raise CasparksError(
            "holds no movies or labels named NN_video.tif / NN_class_label.tif",
            path=folder,
            fix="point to a data-set folder in the original layout",
        )
    return samples, ignored


def _ignored_message(kept: Path, dropped: Path, prefer: str) -> str:
    """The warning (after the file's path) for a file that names the same sample and kind as the one used."""
    role = "prediction" if prefer == "detection" else "annotation"
    fix = ("keep a detection's outputs (NN_video_class_label.tif …) out of the annotated folder: "
           "casparks detect --out OTHER_FOLDER") if is_detection_name(dropped) else "remove one of the two"
    return f"not used, {kept.name} is movie {sample_id(kept)[0]}'s {role}; {fix}"


def _detections_as_annotations(samples: list[Sample]) -> list[tuple[Path, str]]:
    """Movies whose only annotation is a detection's output: said, not refused (training on
    checked detections is a workflow of its own)."""
    return [(s.class_label, f"a detection's output, used as movie {s.id}'s annotation; if a person checked it, "
                            f"rename it {s.id}_class_label.tif (and its event labels), else move it out of the "
                            "annotated folder")
            for s in samples if s.class_label is not None and is_detection_name(s.class_label)]


def list_samples(folder: str | Path, require: tuple[str, ...] = ("video",), prefer: str = "annotation",
                 warn: bool = True) -> list[Sample]:
    """List the samples of a data-set folder, sorted by id.

    ``require`` names the files every sample must have ('video', 'class_label', 'event_label');
    samples lacking one are an error, a folder with no samples too.

    A folder may hold both a movie's annotation (``06_class_label.tif``) and a detection of it
    (``06_video_class_label.tif``, what ``casparks detect FOLDER --out FOLDER`` writes). Training,
    ``check`` and ``evaluate --truth`` must score against what a person annotated, never against
    the network's own output, so the annotation is used (``prefer`` 'annotation'), and the
    detection is named in a warning (``warn``): saving results beside the data is a reasonable
    thing to do, and the names say unambiguously which file is which. ``evaluate --pred`` reads
    predictions: ``prefer`` 'detection' there.
    """
    samples, ignored = scan_samples(folder, prefer)
    if warn:
        for kept, dropped in ignored:
            log.warning("%s: %s", dropped, _ignored_message(kept, dropped, prefer))
        if prefer == "annotation":
            for path, message in _detections_as_annotations(samples):
                log.warning("%s: %s", path, message)
    for kind in require:
        lacking = [s.id for s in samples if s.path(kind) is None]
        if lacking:
            raise CasparksError(
                f"sample(s) {', '.join(lacking[:5])}{' …' if len(lacking) > 5 else ''} have no {kind} file",
                path=folder,
                fix=f"add NN{ {'video': VIDEO_SUFFIX, 'class_label': CLASS_SUFFIX, 'event_label': EVENT_SUFFIX}[kind] }.tif or remove the sample",
            )
    return samples


def refuse_detection_output(folder: str | Path, fix: str) -> None:
    """Refuse a folder that `casparks detect` wrote (its ``*_detection.json``, no movie) where
    annotated movies go, as such: its labels without their movies were "sample(s) 01 have no
    video file", which sent the user looking for movies the folder never held."""
    folder = Path(folder)
    if not (folder.is_dir() and any(folder.glob("*_detection.json"))):
        return
    try:
        samples, _ = scan_samples(folder)
    except CasparksError:  # summaries alone: a detection's folder all the same
        samples = []
    if not any(s.video and s.class_label for s in samples):  # a stray movie beside a detection annotates nothing
        raise CasparksError("holds the output of `casparks detect`, not annotated movies", path=folder, fix=fix)


# ----------------------------------------------------------------------------------------------
# validation


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check_dataset`: severity is 'error' or 'warning'."""

    path: Path
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


def check_class_label(path: Path, classes: np.ndarray, shape: tuple[int, ...] | None) -> list[Problem]:
    """Shape agrees with the movie, dtype is integer, every code is known."""
    problems = []
    if shape is not None and classes.shape != shape:
        problems.append(Problem(path, f"shape {classes.shape} differs from the movie's {shape}"))
    if classes.dtype.kind not in "ui":
        problems.append(Problem(path, f"dtype {classes.dtype} is not an integer type; save as uint8"))
        return problems
    codes = np.unique(classes)
    unknown = [int(c) for c in codes if int(c) not in KNOWN_CODES]
    if unknown:
        hint = binary_mask_hint(codes.tolist())
        problems.append(Problem(path, f"unknown class codes {unknown}; known: 0 background, 1 sparks, 2 waves, "
                                      f"3 puffs, 4 ignore{'; ' + hint if hint else ''}"))
    return problems


def event_class_counts(events: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the event ids present, their voxels per class code: ids × codes) of integer ``events`` over
    integer ``classes`` of the same shape: what tells an event of two classes."""
    inside = events > 0
    ids = events[inside].astype(np.int64)
    codes = classes[inside].astype(np.int64)
    n_codes = max(KNOWN_CODES) + 1
    # an unknown code (named in its own problem) is counted as ignore here: read as background,
    # an event on code 5 was also said to "lie only on background"
    codes = np.where((codes >= 0) & (codes < n_codes), codes, IGNORE)
    # counted per id present, not per id up to the largest: uint32 ids reach 4e9 (156 GiB of counts)
    present_ids, index = np.unique(ids, return_inverse=True)
    counts = np.bincount(index.reshape(-1) * n_codes + codes,
                         minlength=present_ids.size * n_codes).reshape(present_ids.size, n_codes)
    return present_ids, counts


def check_event_label(path: Path, events: np.ndarray, classes: np.ndarray | None) -> list[Problem]:
    """Ids are non-negative integers that fit their dtype, and every event has exactly one class."""
    problems = []
    if events.dtype.kind == "f":
        if not np.array_equal(events, np.round(events)):
            return [Problem(path, "instance ids are not whole numbers; save as uint16 or uint32")]
        events = events.astype(np.int64)
    elif events.dtype.kind not in "ui":
        return [Problem(path, f"dtype {events.dtype} cannot hold instance ids; save as uint16 or uint32")]
    if events.size and events.min() < 0:
        problems.append(Problem(path, "negative instance ids; ids must be 0 (none) or positive"))
        return problems
    max_id = int(events.max()) if events.size else 0
    if events.dtype.itemsize == 1 and max_id >= 255:
        problems.append(
            Problem(path, "ids stored as 8-bit reach 255 and may have wrapped (a spark id's separate regions are read "
                          "as sparks of their own); save the instances as uint16", "warning")
        )
    if classes is None or classes.shape != events.shape or classes.dtype.kind not in "ui":
        return problems
    inside = events > 0
    present_ids, counts = event_class_counts(events, classes)
    event_counts = counts[:, list(EVENT_CLASSES)]
    n_classes = (event_counts > 0).sum(axis=1)
    multi = np.flatnonzero(n_classes > 1)
    if multi.size:
        shown = ", ".join(
            f"{present_ids[i]} ({'/'.join(CODE_NAMES[c] for c in EVENT_CLASSES if counts[i, c])})" for i in multi[:5]
        )
        problems.append(Problem(path, f"{multi.size} event(s) carry more than one class: {shown}"))
    no_class = present_ids[(n_classes == 0) & (counts[:, IGNORE] < counts.sum(axis=1))]
    if no_class.size:
        problems.append(
            Problem(path, f"{no_class.size} event(s) lie only on background: ids {', '.join(map(str, no_class[:5]))}")
        )
    pieces = sparks_in_pieces(events, classes)
    if pieces:
        problems.append(Problem(path, sparks_in_pieces_message(pieces), "warning"))
    event_voxels = np.isin(classes, EVENT_CLASSES)
    orphans = int(np.count_nonzero(event_voxels & ~inside))
    if orphans:
        problems.append(
            Problem(
                path,
                f"{orphans} event-class voxels belong to no instance (instances will be derived by connected components)",
                "warning",
            )
        )
    return problems


def sparks_in_pieces(events: np.ndarray, classes: np.ndarray) -> dict[int, int]:
    """``{id: separate regions}`` of the sparks whose voxels are not one 26-connected region. Only
    sparks: a wave or puff may be one event across a short gap (casparks' own detections merge
    such pieces). Ignore voxels of the id join its pieces: prepare-labels' peak balls of one spark
    need not touch, and the spark's id stays on the rest of its mask, now ignore. Each id is
    labelled in its own bounding box (a whole-movie labelling of the ids took 26 bytes per voxel:
    4 GB for a 10 000-frame movie)."""
    from scipy import ndimage

    sparks = (classes == SPARK) & (events > 0)
    spark_ids = np.unique(events[sparks])
    if not spark_ids.size:
        return {}
    # the voxels of those ids that join a spark's pieces (spark or ignore), numbered 1..N in the
    # smallest type, so that find_objects gets one box per id whatever the ids' size
    joining = ((classes == IGNORE) & (events > 0)) | sparks
    joining &= np.isin(events, spark_ids)
    compact = np.zeros(events.shape, np.min_scalar_type(spark_ids.size))
    compact[joining] = np.searchsorted(spark_ids, events[joining]) + 1
    del joining
    structure = np.ones((3,) * events.ndim, dtype=bool)
    pieces = {}
    for index, box in enumerate(ndimage.find_objects(compact), start=1):
        own = compact[box] == index
        regions, count = ndimage.label(own, structure=structure)
        if count > 1:  # regions that hold spark voxels (an ignore-only region is no piece of the spark)
            count = np.unique(regions[own & (classes[box] == SPARK)]).size
        if count > 1:
            pieces[int(spark_ids[index - 1])] = int(count)
    return pieces


def sparks_in_pieces_message(pieces: dict[int, int]) -> str:
    """What ``casparks check`` and ``casparks measure`` say of :func:`sparks_in_pieces`: such an id
    is one event to both (and to ``evaluate``), a long spark of two where two sparks share it."""
    shown = ", ".join(f"{i} ({n} regions)" for i, n in list(pieces.items())[:5]) + (" …" if len(pieces) > 5 else "")
    return (f"{len(pieces)} spark id(s) cover separate regions (two sparks sharing an id?): {shown}; each id is "
            "measured and scored as one spark: where they are two sparks, give each its own id")


#: what to do about an error :func:`annotation_error` finds
ANNOTATION_FIX = ("correct the annotation (8-bit codes 0-4; each event one class: paint it one class, or give its "
                  "parts ids of their own); casparks check lists every problem")


def annotation_error(class_path: Path, classes: np.ndarray, event_path: Path | None, events: np.ndarray | None,
                     fix: str = ANNOTATION_FIX) -> CasparksError | None:
    """The errors ``casparks check`` finds in one movie's annotation (codes, dtype, an event of two
    classes, ids), as one error naming its files, or None: what commands that use an annotation
    must refuse rather than write or learn it. Shapes are the caller's (it knows the movie)."""
    problems = check_class_label(class_path, classes, None)
    if events is not None:
        problems += check_event_label(event_path, events, classes if classes.shape == events.shape else None)
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        return None
    first = errors[0]
    rest = [p.message if p.path == first.path else f"{p.path.name}: {p.message}" for p in errors[1:]]
    return CasparksError("; ".join([first.message, *rest]), path=first.path, fix=fix)


def check_sample(sample: Sample) -> list[Problem]:
    """Validate one sample; a file that cannot be read is reported, not raised."""
    problems: list[Problem] = []
    shape = None
    if sample.video is None:
        anchor = sample.class_label or sample.event_label
        problems.append(Problem(anchor, f"no {sample.id}{VIDEO_SUFFIX}.tif beside it"))
    else:
        try:
            shape = read_stack(sample.video).shape
            pixel, frame = read_units(sample.video)
            missing = [name for name, value in (("pixel size", pixel), ("frame interval", frame)) if value is None]
            if missing:
                problems.append(Problem(sample.video, f"no {' or '.join(missing)} in the metadata: training needs "
                                        "data.pixel_size_um and data.frame_interval_ms in its config, prepare-labels "
                                        "--pixel-size and --frame-interval (which writes them into its copies)", "warning"))
        except CasparksError as exc:
            exc = for_data_set(exc)
            problems.append(Problem(sample.video, exc.what + (f"; {exc.fix}" if exc.fix else "")))
    classes = None
    if sample.class_label is None:
        problems.append(Problem(sample.video or sample.event_label, f"no {sample.id}{CLASS_SUFFIX}.tif beside it"))
    else:
        try:
            classes = np.asarray(read_label_stack(sample.class_label))
            problems += check_class_label(sample.class_label, classes, shape)
        except CasparksError as exc:
            problems.append(Problem(sample.class_label, exc.what))
    if sample.event_label is None:
        problems.append(
            Problem(sample.video or sample.class_label, f"no {sample.id}{EVENT_SUFFIX}.tif beside it", "warning")
        )
    else:
        try:
            events = np.asarray(read_label_stack(sample.event_label))
            if shape is not None and events.shape != shape:
                problems.append(Problem(sample.event_label, f"shape {events.shape} differs from the movie's {shape}"))
            problems += check_event_label(sample.event_label, events, classes)
        except CasparksError as exc:
            problems.append(Problem(sample.event_label, exc.what))
    return problems


def check_dataset(folder: str | Path) -> list[Problem]:
    """Validate every sample of a data-set folder; returns the problems found (empty if clean)."""
    samples, ignored = scan_samples(folder)
    problems = [Problem(dropped, _ignored_message(kept, dropped, "annotation"), "warning")
                for kept, dropped in ignored]
    problems += [Problem(path, message, "warning") for path, message in _detections_as_annotations(samples)]
    for sample in samples:
        problems += check_sample(sample)
    return problems


# ----------------------------------------------------------------------------------------------
# writing samples (training data from corrected labels)


def complete_event_label(class_label: np.ndarray, event_label: np.ndarray | None = None) -> np.ndarray:
    """Instance ids that agree with hand-corrected classes, in the smallest unsigned dtype.

    After a correction the class labels are the truth of *what* is an event: ids left on
    background voxels (an erased false positive) are dropped, and event-class voxels without an
    id (a newly painted event) get new ids by 3-D connected components per class, numbered after
    the existing ids left (:func:`casparks.instances.corrected_instances`, as ``casparks measure``
    and :func:`casparks.evaluate_movie` number them). Ids on ignore voxels are kept. An id that
    still covers two classes is left for :func:`write_sample` to report: which class is right is
    the annotator's call.
    """
    from .instances import corrected_instances
    from .io import instance_dtype

    classes = np.asarray(class_label)
    if event_label is not None:
        events = np.asarray(event_label)
        if events.shape != classes.shape:
            raise CasparksError(f"event labels {events.shape} and class labels {classes.shape} differ in shape",
                                fix="edit labels layers made for this movie")
        if events.size and events.min() < 0:
            raise CasparksError("event labels hold negative ids", fix="use 0 for no event and positive ids for events")
    else:
        events = None
    ids = corrected_instances(classes, events)
    return ids.astype(instance_dtype(int(ids.max(initial=0))), copy=False)


#: the largest sample number the sequence runs to (the plugin's spin box): ids beyond it are
#: other names that happen to be digits, e.g. a date ('20260112_video.tif')
MAX_SAMPLE_INDEX = 9999


def sequence_index(sid: str) -> int | None:
    """The number of a sample id written as a data set numbers its samples, with 2-4 digits
    ('07', '123', '007'), else None: an 8-digit date or '7' is a movie's own name, not a place in
    the sequence."""
    if not sid.isdigit() or not 2 <= len(sid) <= len(str(MAX_SAMPLE_INDEX)):
        return None
    return int(sid)


def _sequence_ids(folder: Path) -> list[str]:
    return [parsed[0] for p in folder.iterdir()
            if (parsed := sample_id(p)) and sequence_index(parsed[0]) is not None] if folder.is_dir() else []


def next_sample_index(folder: str | Path) -> int:
    """1 + the largest sample number in ``folder`` (1 for a new folder); ids outside the
    ``NN`` sequence (dates, names) are not counted, so a lab folder does not jump to 20260113."""
    return max((int(sid) for sid in _sequence_ids(Path(folder))), default=0) + 1


def sample_id_width(folder: str | Path) -> int:
    """The digits of the folder's sample ids (``001``: 3), 2 for a new folder as the reference data."""
    return max((len(sid) for sid in _sequence_ids(Path(folder))), default=2)


def stray_files(folder: str | Path) -> list[str]:
    """Files of ``folder`` that training and ``casparks check`` read but that are no complete
    ``NN`` sample: movies or labels under other names, without their pair, or a detection's
    outputs. Saving into such a folder is allowed; the user is told it is not a clean data set."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    try:
        samples, ignored = scan_samples(folder)
    except CasparksError:  # no samples at all
        return []
    stray = [dropped.name for _, dropped in ignored]
    for s in samples:
        incomplete = s.video is None or s.class_label is None
        if incomplete or sequence_index(s.id) is None or is_detection_name(s.class_label):
            stray += [p.name for p in (s.video, s.class_label, s.event_label) if p is not None]
    return sorted(stray)


def partly_erased_events(class_label: np.ndarray, event_label: np.ndarray) -> dict[int, tuple[int, int]]:
    """``{id: (voxels still classed, voxels of the id)}`` for events erased only in part in the
    classes: napari's fill spreads to face-touching voxels, a detected event is joined across
    diagonals, so one fill with 0 leaves pieces that would be saved as a small event."""
    classes, events = np.asarray(class_label), np.asarray(event_label)
    inside = events > 0
    ids, index = np.unique(events[inside], return_inverse=True)
    total = np.bincount(index.reshape(-1), minlength=ids.size)
    left = np.bincount(index.reshape(-1), weights=classes[inside] != BACKGROUND, minlength=ids.size).astype(np.int64)
    partly = np.flatnonzero((left > 0) & (left < total))
    return {int(ids[i]): (int(left[i]), int(total[i])) for i in partly}


def event_voxels(event_label: np.ndarray, event_id: int) -> tuple[np.ndarray, ...]:
    """Indices of every voxel of one event (a one-line error when there is none), for setting its
    class as a whole, across diagonals and frames."""
    if event_id <= 0:
        raise CasparksError("no event chosen", fix="pick an event on the events layer (colour picker) or type its id")
    voxels = np.nonzero(np.asarray(event_label) == event_id)
    if voxels[0].size == 0:
        raise CasparksError(f"no event {event_id} in the events layer", fix="pick an event that is shown there")
    return voxels


def write_sample(
    folder: str | Path,
    movie: Movie,
    class_label: np.ndarray,
    event_label: np.ndarray | None,
    index: int | None = None,
    overwrite: bool = False,
) -> Sample:
    """Add a movie and its labels to a data-set folder as ``NN_video.tif``, ``NN_class_label.tif``
    and ``NN_event_label.tif`` (uint8 codes; uint16/uint32 ids), all with the movie's units.

    ``index`` None takes the next free number (two digits like the reference data: ``07``, or as
    many as the folder's samples have: ``004`` after ``003``).
    The labels are validated first with the checks of ``casparks check`` (shape, codes, one
    class per event; ``event_label`` None derives ids by connected components); any error, or
    an existing sample without ``overwrite``, raises a one-line :class:`CasparksError` and
    writes nothing; the check's warnings (e.g. a spark id on separate regions) are logged once
    the sample is saved, as ``casparks check`` would say them of it. The three files are
    written to a hidden folder and moved into place together, so an interrupted save leaves no
    partial sample.
    """
    from .io import write_class_label, write_event_label, write_movie

    folder = home_path(folder)
    if folder.exists() and not folder.is_dir():
        raise CasparksError("exists and is not a folder", path=folder, fix="choose a data-set folder")
    if index is None:
        index = next_sample_index(folder)
    elif isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise CasparksError(f"sample index must be a non-negative whole number, got {index!r}",
                            fix="give e.g. 7 for 07_video.tif, or none for the next free number")
    sid = f"{int(index):0{sample_id_width(folder)}d}"
    targets = {kind: folder / f"{sid}{suffix}.tif" for kind, suffix in
               (("video", VIDEO_SUFFIX), ("class_label", CLASS_SUFFIX), ("event_label", EVENT_SUFFIX))}
    existing = [p.name for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise CasparksError(f"sample {sid} exists already ({', '.join(existing)})", path=folder,
                            fix="choose another index, leave it empty for the next free one, or overwrite")
    classes = np.asarray(class_label)
    events = complete_event_label(classes, None) if event_label is None else np.asarray(event_label)
    if events.dtype.kind in "ui":  # checked as saved (16 or 32 bits): an 8-bit array reaching 255 is no wrap there
        events = events.astype(np.int64, copy=False)
    problems = check_class_label(targets["class_label"], classes, movie.shape)
    if events.shape != movie.shape:
        problems.append(Problem(targets["event_label"], f"shape {events.shape} differs from the movie's {movie.shape}"))
    else:
        problems += check_event_label(targets["event_label"], events, classes)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise CasparksError(f"{first.path.name}: {first.message}{more}; nothing written", path=folder,
                            fix="correct the labels (each event one class, codes 0-4, the movie's shape) and save again")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".sample-{sid}-", dir=folder))
    try:
        px, dt = movie.pixel_size_um, movie.frame_interval_ms
        write_movie(staging / targets["video"].name, movie)
        write_class_label(staging / targets["class_label"].name, classes, px, dt)
        write_event_label(staging / targets["event_label"].name, events, px, dt)
        for path in targets.values():
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for problem in problems:  # only warnings are left: the sample is valid, and they say what check would
        log.warning("%s: %s", problem.path, problem.message)
    return Sample(sid, targets["video"], targets["class_label"], targets["event_label"])

"""Score prediction folders against annotated data sets (``casparks evaluate``).

Pairing, reading and aggregation; the scores themselves are pure array functions in
:mod:`casparks.metrics`, whose docstring defines them and lists where we depart from the
reference research code.

* Truth folder: the original layout, ``NN_class_label.tif`` per movie (``NN_video.tif`` is not
  needed; without ``NN_event_label.tif`` instances are connected components per class).
* Prediction folder: ``NN_class_label.tif`` or ``<movie stem>_class_label.tif``
  (``01_video_class_label.tif``), optionally with the matching ``..._event_label.tif``; where it
  holds a ``casparks detect`` output, only the detection's files are predictions (an annotation
  copied there would score F1 1.0 against itself). A predicted code 4 counts as background.
* Counts are summed over movies before any ratio is taken; per-movie scores are kept too.
* The one-to-one pairs behind the counts, event by event with the files' own ids, are a table
  (:attr:`MovieEvaluation.pairs`, :attr:`Evaluation.pairs`, ``casparks evaluate --pairs``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .classes import CLASS_NAMES, EVENT_CLASSES
from .dataset import (CLASS_SUFFIX, EVENT_SUFFIX, Sample, event_class_counts, is_detection_name, list_samples,
                      refuse_detection_output, sample_id, VIDEO_SUFFIX)
from .errors import CasparksError
from .instances import instances_from_classes, split_wrapped_sparks
from .io import read_label_stack, read_stack, stack_channels, stack_shape
from .metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    F1_NAMES,
    IGNORE_FRACTION,
    IOMIN_THRESHOLD,
    MISSED_KINDS,
    SPURIOUS_KINDS,
    EventCounts,
    EventPairs,
    LabelArrayError,
    check_codes,
    f1_intervals,
    match_events,
    scores,
)

__all__ = [
    "PAIR_COLUMNS",
    "PAIR_OUTCOMES",
    "Evaluation",
    "MovieEvaluation",
    "evaluate",
    "evaluate_movie",
    "instances_from_classes",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: the columns of :attr:`MovieEvaluation.pairs` (and ``casparks evaluate --pairs``)
PAIR_COLUMNS = ("movie", "truth_movie", "truth_id", "truth_class", "pred_movie", "pred_id", "pred_class", "iomin",
                "outcome", "why")
#: what happened to an event in the one-to-one matching: a true positive (paired with an event of its class), paired
#: with one of another class (a miss of truth_class and a false event of pred_class), an annotation left unpaired, a
#: prediction left unpaired, and an unpaired prediction lying ≥ 50 % on ignore voxels (not scored)
PAIR_OUTCOMES = ("paired", "other_class", "missed", "false", "ignored")


@dataclass(frozen=True)
class MovieEvaluation:
    """Counts and scores of one movie."""

    id: str
    counts: EventCounts
    iomin_threshold: float = IOMIN_THRESHOLD
    ignore_fraction: float = IGNORE_FRACTION
    truth_file: Path | None = field(default=None, compare=False)
    pred_file: Path | None = field(default=None, compare=False)
    #: the one-to-one pairs the counts count, event by event (:attr:`pairs` as a table)
    matching: EventPairs | None = field(default=None, compare=False, repr=False)

    @property
    def scores(self) -> dict[str, Any]:
        """All scores (see :func:`casparks.metrics.scores`); NaN where undefined."""
        return scores(self.counts)

    @property
    def pairs(self):
        """Which annotated event was paired with which predicted one (pandas DataFrame, columns
        :data:`PAIR_COLUMNS`): one row per annotated event, paired or missed, and one per predicted
        event left unpaired (false, or ignored); see :func:`pairs_table`."""
        if self.matching is None:
            raise CasparksError(f"{_movie_title(self.id)} was scored without its pairs",
                                fix="score it with casparks.evaluate or casparks.evaluate_movie")
        truth_movie = f"{self.id}{VIDEO_SUFFIX}" if self.truth_file is not None else None  # NN_video.tif's stem
        return pairs_table(self.matching, self.id, _prediction_stem(self.pred_file), truth_movie)

    def to_dict(self) -> dict[str, Any]:
        """Scores, counts and file names of this movie (NaN where undefined: null when written by
        :func:`casparks.io.write_json`)."""
        return {
            "id": self.id,
            "truth_file": str(self.truth_file) if self.truth_file else None,
            "pred_file": str(self.pred_file) if self.pred_file else None,
            **self.scores,
            "counts": self.counts.to_dict(),
        }

    def format_table(self) -> str:
        return format_scores(self.scores, title=_movie_title(self.id))


@dataclass(frozen=True)
class Evaluation:
    """Scores of a whole prediction folder: counts summed over movies, plus each movie."""

    movies: tuple[MovieEvaluation, ...]
    iomin_threshold: float = IOMIN_THRESHOLD
    ignore_fraction: float = IGNORE_FRACTION
    truth_dir: Path | None = None
    pred_dir: Path | None = None

    @property
    def counts(self) -> EventCounts:
        """Counts summed over all movies."""
        return sum((m.counts for m in self.movies), EventCounts())

    @property
    def scores(self) -> dict[str, Any]:
        """Scores from the summed counts (ratios of sums, not means of per-movie ratios)."""
        return scores(self.counts)

    @property
    def pairs(self):
        """Every movie's :attr:`MovieEvaluation.pairs` in one DataFrame, movies in scoring order."""
        import pandas as pd

        return pd.concat([pairs_table(None, "", None, None), *(m.pairs for m in self.movies)], ignore_index=True)

    def f1_intervals(self, against: "Evaluation | None" = None) -> dict[str, tuple[float, float] | None] | None:
        """95 % intervals of the one-to-one F1 per class and their average, from a bootstrap over
        the movies (:func:`casparks.metrics.f1_intervals`); with ``against``, a second prediction
        of the same movies, the paired interval of the difference (this − against)."""
        if against is None:
            return f1_intervals([m.counts for m in self.movies])
        return f1_intervals([m.counts for m in self.movies], [m.counts for m in _same_movies(self, against)])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict: settings, per-class scores, averages, confusion matrix, bootstrap intervals
        of the one-to-one F1, per movie. Undefined scores are NaN, which JSON has not:
        :func:`casparks.io.write_json` (as ``--json``) writes them as null."""
        return {
            "settings": {
                "iomin_threshold": self.iomin_threshold,
                "ignore_fraction": self.ignore_fraction,
                "truth_dir": str(self.truth_dir) if self.truth_dir else None,
                "pred_dir": str(self.pred_dir) if self.pred_dir else None,
                "n_movies": len(self.movies),
                "aggregation": "counts summed over movies, then ratios",
                "undefined": "null where a ratio has no denominator (no annotations / no predictions)",
            },
            **self.scores,
            "one_to_one_f1_interval": _interval_dict(self.f1_intervals(), len(self.movies)),
            "counts": self.counts.to_dict(),
            "movies": [m.to_dict() for m in self.movies],
        }

    def comparison(self, against: "Evaluation") -> dict[str, Any]:
        """JSON-ready comparison with another prediction of the same movies: each one's one-to-one
        F1, their difference, and its paired bootstrap interval."""
        this, other = _f1_row(self.scores), _f1_row(against.scores)
        return {
            "pred_dir": str(against.pred_dir) if against.pred_dir else None,
            "one_to_one_f1": other,
            "difference": {k: (None if this[k] is None or other[k] is None else this[k] - other[k]) for k in this},
            "difference_interval": _interval_dict(self.f1_intervals(against), len(self.movies)),
        }

    def format_comparison(self, against: "Evaluation") -> str:
        """Plain-text table: this prediction's one-to-one F1 against another's, with the paired
        interval of the difference."""
        result = self.comparison(against)
        this = _f1_row(self.scores)
        interval = result["difference_interval"]
        lines = [f"One-to-one F1 against {result['pred_dir']} (difference: this − that; {_interval_note(interval)}):",
                 f"{'class':<10}{'this':>7} {'that':>7} {'difference':>11}   95 % interval"]
        for name, value in this.items():
            diff = result["difference"][name]
            bounds = interval[name] if interval else None
            span = f"{bounds[0]:+.3f} to {bounds[1]:+.3f}" if bounds else "–"
            lines.append(f"{name:<10}{_fmt(value, 7)} {_fmt(result['one_to_one_f1'][name], 7)} "
                         f"{'–' if diff is None else f'{diff:+.3f}':>11}   {span}")
        return "\n".join(lines)

    def format_table(self) -> str:
        """Readable plain-text table of the summed scores, with the F1 intervals."""
        title = f"{len(self.movies)} movie(s), IoMin ≥ {self.iomin_threshold:g}"
        interval = self.f1_intervals()
        if interval is None:
            note = "one-to-one F1, 95 % interval: needs ≥ 2 movies (a bootstrap over movies)"
        else:
            spans = [f"{k} {'–' if v is None else f'{v[0]:.3f}-{v[1]:.3f}'}" for k, v in interval.items()]
            note = (f"one-to-one F1, 95 % interval (bootstrap over the {len(self.movies)} movies, "
                    f"{BOOTSTRAP_RESAMPLES} resamples): " + ", ".join(spans))
        return format_scores(self.scores, title=title) + "\n" + note


def _f1_row(result: Mapping[str, Any]) -> dict[str, float | None]:
    """One-to-one F1 per class and average from a :func:`scores` result (None where undefined)."""
    values = [result["classes"][name]["one_to_one"]["f1"] for name in F1_NAMES[:-1]]
    values.append(result["average"]["one_to_one"]["f1"])
    return {name: (None if v is None or math.isnan(v) else float(v)) for name, v in zip(F1_NAMES, values)}


def _interval_dict(interval: Mapping[str, Any] | None, n_movies: int) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"level": BOOTSTRAP_LEVEL, "resamples": BOOTSTRAP_RESAMPLES, "movies": n_movies,
            **{k: (None if v is None else list(v)) for k, v in interval.items()}}


def _interval_note(interval: Mapping[str, Any] | None) -> str:
    if interval is None:
        return "no interval: needs ≥ 2 movies"
    return f"bootstrap over the {interval['movies']} movies, {interval['resamples']} resamples"


def on_common_movies(this: Evaluation, other: Evaluation) -> tuple[Evaluation, Evaluation]:
    """Both evaluations restricted to the movies both scored (two predictions of different
    subsets, ``only_predicted``), the others named in a warning; none in common is an error."""
    mine, theirs = {m.id for m in this.movies}, {m.id for m in other.movies}
    common = mine & theirs
    if not common:
        raise CasparksError("the two predictions score no movie in common", path=other.pred_dir,
                            fix="compare predictions of the same annotated movies")
    if mine != theirs:
        log.warning("compared on the %d movie(s) both predictions have; left out: %s", len(common),
                    ", ".join(sorted(mine ^ theirs)[:10]))
    return tuple(replace(e, movies=tuple(m for m in e.movies if m.id in common)) for e in (this, other))


def _same_movies(this: Evaluation, other: Evaluation) -> list[MovieEvaluation]:
    """``other``'s movies in ``this``'s order; both must score the same annotated movies."""
    mine, theirs = [m.id for m in this.movies], {m.id: m for m in other.movies}
    if sorted(mine) != sorted(theirs):
        only = sorted(set(mine) ^ set(theirs))
        raise CasparksError(f"the two predictions score different movies ({', '.join(only[:5])} in one only)",
                            path=other.pred_dir, fix="compare predictions of the same annotated movies")
    if this.iomin_threshold != other.iomin_threshold:
        raise CasparksError("the two evaluations used different IoMin thresholds", fix="use one --iomin for both")
    if this.ignore_fraction != other.ignore_fraction:
        raise CasparksError("the two evaluations used different ignore fractions", fix="use one for both")
    # the same ids in two data sets: a "paired" difference of unrelated movies read significant
    other_truth = [m.id for m in this.movies
                   if m.truth_file and theirs[m.id].truth_file and not _same_file(m.truth_file, theirs[m.id].truth_file)]
    if other_truth:
        raise CasparksError(f"the two evaluations score different annotations of movie {other_truth[0]} "
                            f"({this.movies[mine.index(other_truth[0])].truth_file} and "
                            f"{theirs[other_truth[0]].truth_file})",
                            fix="compare two predictions scored against the same annotated folder")
    return [theirs[i] for i in mine]


# ----------------------------------------------------------------------------------------------
# pure API


def evaluate_movie(
    truth_classes: np.ndarray,
    truth_events: np.ndarray | None,
    pred_classes: np.ndarray,
    pred_events: np.ndarray | None,
    iomin_threshold: float = IOMIN_THRESHOLD,
    *,
    ignore_fraction: float = IGNORE_FRACTION,
    id: str = "movie",
    check_annotation: bool = True,
) -> MovieEvaluation:
    """Score one movie from arrays (no files).

    ``truth_classes``/``pred_classes``: T×Y×X codes 0-4; ``*_events``: instance ids of the same
    shape, or None to derive instances by connected components per class (26-connectivity). An
    annotated event id that carries two event classes is refused, as in files (``casparks
    evaluate``); ``check_annotation=False`` skips that check for annotations checked already
    (calibration scores the same annotation for every setting).
    """
    _check_threshold(iomin_threshold, ignore_fraction)
    counts, matching = match_events(  # checks shapes, codes and ids first: swapped truth arrays are named as such
        truth_classes, truth_events, pred_classes, pred_events,
        iomin_threshold=iomin_threshold, ignore_fraction=ignore_fraction,
    )
    if check_annotation:
        _refuse_events_of_two_classes(truth_classes, truth_events, id)
    return MovieEvaluation(id, counts, iomin_threshold, ignore_fraction, matching=matching)


def pairs_table(matching: EventPairs | None, movie: str, pred_movie: str | None, truth_movie: str | None = None):
    """The one-to-one matching of one movie as a DataFrame of :data:`PAIR_COLUMNS` (empty, with
    the columns' types, for None).

    One row per annotated event (in id order), then one per predicted event left unpaired (in id
    order): ``truth_id``/``pred_id`` are the ids in the event-label files (those of components,
    as the scoring derives them, where a file has none), ``*_class`` the class names,
    ``pred_movie`` the prediction's stem (``01_video``: the ``movie`` of
    :func:`casparks.read_events`), ``truth_movie`` the annotated movie's (``01_video``: the
    ``movie`` of the annotation measured by ``casparks measure``), ``iomin`` the pair's IoMin (empty for an unpaired event),
    ``outcome`` one of :data:`PAIR_OUTCOMES` and ``why`` why an event was missed or is false
    (:data:`casparks.metrics.MISSED_KINDS`, :data:`casparks.metrics.SPURIOUS_KINDS`, or
    ``other_class``), as ``casparks evaluate`` counts them.
    """
    import pandas as pd

    if matching is None:
        return pd.DataFrame({
            "movie": pd.Series(dtype=object), "truth_movie": pd.Series(dtype=object),
            "truth_id": pd.Series(dtype="Int64"),
            "truth_class": pd.Series(dtype=object), "pred_movie": pd.Series(dtype=object),
            "pred_id": pd.Series(dtype="Int64"), "pred_class": pd.Series(dtype=object),
            "iomin": pd.Series(dtype=float), "outcome": pd.Series(dtype=object), "why": pd.Series(dtype=object),
        })
    m = matching
    n_truth = m.truth_ids.size
    # each annotation's partner: its class code (-1 unpaired), id and IoMin
    partner_code = np.full(n_truth, -1, dtype=np.int64)
    partner_code[m.truth_index] = m.pred_codes[m.pred_index]
    partner_id = np.zeros(n_truth, dtype=np.int64)
    partner_id[m.truth_index] = m.pred_ids[m.pred_index]
    pair_iomin = np.full(n_truth, np.nan)
    pair_iomin[m.truth_index] = m.iomin
    paired = partner_code >= 0
    same = paired & (m.truth_codes == partner_code)
    outcome = np.where(same, "paired", np.where(paired, "other_class", "missed")).astype(object)
    why = np.array([None] * n_truth, dtype=object)
    why[paired & ~same] = "other_class"
    missed = m.missed_kind >= 0
    why[missed] = np.asarray(MISSED_KINDS, dtype=object)[m.missed_kind[missed]]
    pred_paired = np.zeros(m.pred_ids.size, dtype=bool)
    pred_paired[m.pred_index] = True
    left = np.flatnonzero(~pred_paired)
    false = m.false_kind[left] >= 0
    left_why = np.array([None] * left.size, dtype=object)
    left_why[false] = np.asarray(SPURIOUS_KINDS, dtype=object)[m.false_kind[left][false]]
    names = {code: CLASS_NAMES[code] for code in EVENT_CLASSES}

    def classes(codes: np.ndarray) -> list[str]:
        return [names[int(c)] for c in codes]

    truth_rows = pd.DataFrame({
        "truth_id": pd.array(m.truth_ids, dtype="Int64"),
        "truth_class": classes(m.truth_codes),
        "pred_id": pd.Series(partner_id, dtype="Int64").mask(~paired).array,
        "pred_class": [names[int(c)] if c >= 0 else None for c in partner_code],
        "iomin": pair_iomin, "outcome": outcome, "why": why,
    })
    pred_rows = pd.DataFrame({
        "truth_id": pd.array([pd.NA] * left.size, dtype="Int64"),
        "truth_class": [None] * left.size,
        "pred_id": pd.array(m.pred_ids[left], dtype="Int64"),
        "pred_class": classes(m.pred_codes[left]),
        "iomin": np.full(left.size, np.nan),
        "outcome": np.where(m.ignored[left], "ignored", "false").astype(object),
        "why": left_why,
    })
    table = pd.concat([pairs_table(None, movie, pred_movie, truth_movie), truth_rows, pred_rows], ignore_index=True)
    table["movie"] = movie
    table["truth_movie"] = truth_movie
    table["pred_movie"] = pred_movie
    return table[list(PAIR_COLUMNS)]


def _prediction_stem(pred_file: Path | None) -> str | None:
    """The stem of a prediction's class-label file (``01_video`` of ``01_video_class_label.tif``),
    as a detection's events table and :func:`casparks.read_events` name its movie; None without one."""
    if pred_file is None:
        return None
    name = Path(pred_file).name
    tail = f"{CLASS_SUFFIX}.tif"
    return name[: len(name) - len(tail)] if name.lower().endswith(tail.lower()) else Path(name).stem


def _movie_title(id: str) -> str:
    """'movie 03'; the default id of :func:`evaluate_movie`, "movie", alone (not 'movie movie')."""
    return "movie" if id == "movie" else f"movie {id}"


def _refuse_events_of_two_classes(classes: Any, events: Any, id: str) -> None:
    """An annotated event id over voxels of two event classes was scored as two events (one per
    class) from arrays, and refused from files: refused here too, by ``casparks check``'s count
    (:func:`casparks.dataset.event_class_counts`). Shapes and dtypes are left to
    :func:`count_events`'s checks."""
    if events is None:
        return
    classes, events = np.asarray(classes), np.asarray(events)
    if classes.shape != events.shape or classes.dtype.kind not in "ui" or events.dtype.kind not in "ui":
        return
    ids, counts = event_class_counts(events, classes)
    twice = ids[(counts[:, list(EVENT_CLASSES)] > 0).sum(axis=1) > 1]
    if twice.size:
        shown = ", ".join(map(str, twice[:5])) + (" …" if twice.size > 5 else "")
        raise LabelArrayError(f"{_movie_title(id)}: {twice.size} annotated event(s) carry more than one class: "
                              f"ids {shown}",
                              fix="give each event id one class (casparks check lists them in files)")


def annotated_samples(samples: list, folder: Path) -> list:
    """The annotated ones of a data set's samples; the movies without annotation are named in a
    warning and left out (a data set annotated in part was refused whole), a folder without any
    is an error."""
    annotated = [s for s in samples if s.class_label is not None]
    without = [s.id for s in samples if s.class_label is None]
    if not annotated:
        raise CasparksError("holds no annotated movies (NN_class_label.tif)", path=folder,
                            fix="give the folder of annotated movies (NN_video.tif with NN_class_label.tif)")
    if without:
        log.warning("%s: movie(s) %s have no annotation (NN_class_label.tif) and are left out", folder,
                    ", ".join(without[:10]) + (" …" if len(without) > 10 else ""))
    return annotated


def _check_threshold(iomin_threshold: float, ignore_fraction: float) -> None:
    for name, value in (("iomin_threshold", iomin_threshold), ("ignore_fraction", ignore_fraction)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 1):
            raise CasparksError(f"{name} must lie in (0, 1], got {value!r}")


# ----------------------------------------------------------------------------------------------
# folders


def evaluate(
    truth_dir: str | Path,
    pred_dir: str | Path,
    iomin_threshold: float = IOMIN_THRESHOLD,
    progress: Progress | None = None,
    *,
    ignore_fraction: float = IGNORE_FRACTION,
    only_predicted: bool = False,
    pairs: Mapping[str, str] | None = None,
    option: str = "--pred",
    pairs_where_present: bool = False,
) -> Evaluation:
    """Score every annotated movie of ``truth_dir`` against its prediction in ``pred_dir``.

    Predictions pair with annotations by id (``07_class_label.tif``, ``07_video_class_label.tif``
    with ``07_video.tif``); where a folder holds both names, ``truth_dir`` is read for the
    annotation and ``pred_dir`` for the detection's file. A ``pred_dir`` that holds a detection's
    files (:func:`_is_detection`) gives only those as predictions, whether or not it is
    ``truth_dir``: an annotation there (a copy of the data set) is no prediction of itself, and an
    annotation paired with itself is an error. ``pairs`` maps more prediction ids
    to annotation ids, for a movie detected under another name (``{"cell3": "07"}``). Every truth
    sample needs a prediction (else :class:`CasparksError`), unless ``only_predicted``: then the annotated movies without
    one are left out with a warning (a subset of a data set). Predictions without truth are
    skipped with a warning. ``progress(done, total)`` is called after each movie. ``option``: how
    messages name ``pred_dir`` (``--against`` for the second detection of a comparison), whose
    ``pairs`` apply only to predictions it holds with ``pairs_where_present`` (one renamed
    detection compared with another named as the movie).
    """
    _check_threshold(iomin_threshold, ignore_fraction)
    truth_dir, pred_dir = Path(truth_dir), Path(pred_dir)
    # one folder holding both (detect --out into the data set): annotations are the truth and the
    # detection's files the predictions, which is no duplicate to warn about
    same = truth_dir.is_dir() and pred_dir.is_dir() and truth_dir.resolve() == pred_dir.resolve()
    if not same:  # swapped folders: the error alone, no warning per movie
        refuse_detection_output(truth_dir, fix=f"--truth is the annotated data set and {option} the detection's "
                                               "folder (swapped?)")
    truth_samples = annotated_samples(list_samples(truth_dir, require=(), warn=not same), truth_dir)
    if same:  # a movie the folder holds only a detection of has no annotation: no truth, not scored
        truth_samples = [s for s in truth_samples if not (s.class_label and _is_detection(s.class_label))]
        if not truth_samples:
            raise CasparksError("holds detections but no annotation (NN_class_label.tif) to score them against",
                                path=truth_dir, fix="give --truth the annotated data set")
    try:
        predictions = list_samples(pred_dir, require=(), prefer="detection", warn=not same)
    except CasparksError as exc:
        raise CasparksError(f"{exc.what} for {option}", path=pred_dir,
                            fix=f"give {option} the folder `casparks detect --out` wrote") from None
    detections_only = any(s.class_label and _is_detection(s.class_label) for s in predictions)
    if detections_only:  # a detection saved into the data set, or into a copy of it: an annotation
        # it left undetected is no prediction of itself
        predictions = [s for s in map(_detection_files, predictions) if s.class_label is not None]
    pairs = dict(pairs or {})
    if pairs_where_present:
        held = {s.id for s in predictions}
        pairs = {name: movie for name, movie in pairs.items()
                 if (sample_id(f"{name}{CLASS_SUFFIX}.tif") or (name,))[0] in held}
    pred_samples = _paired_predictions(predictions, pairs, truth_samples, pred_dir, option)
    truth_ids = {s.id for s in truth_samples}
    extra = sorted(set(pred_samples) - truth_ids)
    if extra:
        log.warning(
            "%s: prediction(s) %s have no annotation in %s and are not scored",
            pred_dir, ", ".join(extra[:10]) + (" …" if len(extra) > 10 else ""), truth_dir,
        )
    matched, unpredicted = [], []
    for truth in truth_samples:
        pred = pred_samples.get(truth.id)
        if pred is None or pred.class_label is None:
            unpredicted.append(truth)
        else:
            matched.append((truth, pred))
    _refuse_self_scoring(matched, option)
    if unpredicted and (not only_predicted or not matched):
        truth = unpredicted[0]
        more = f" (and {len(unpredicted) - 1} more)" if len(unpredicted) > 1 else ""
        expected = (f"{truth.id}_video{CLASS_SUFFIX}.tif: {option} holds detections, so a {truth.id}{CLASS_SUFFIX}.tif "
                    "there is an annotation" if detections_only
                    else f"{truth.id}{CLASS_SUFFIX}.tif or {truth.id}_video{CLASS_SUFFIX}.tif")
        raise CasparksError(
            f"no prediction for movie {truth.id}{more} (expected {expected})",
            path=pred_dir,
            fix=(f"run the detection on {truth.video or truth.class_label}, pair a renamed prediction with "
                 f"--pair NAME={truth.id}, or score only the predicted movies with --only-predicted"
                 if matched or not only_predicted else f"check that {option} is the detection's output folder"),
        )
    if unpredicted:
        log.warning("%s: %d annotated movie(s) without a prediction are not scored: %s", truth_dir, len(unpredicted),
                    ", ".join(t.id for t in unpredicted[:10]) + (" …" if len(unpredicted) > 10 else ""))
    pairs_to_score = matched

    movies = []
    for done, (truth, pred) in enumerate(pairs_to_score, start=1):
        log.info("evaluating movie %s (%s vs %s)", truth.id, pred.class_label, truth.class_label)
        movies.append(_evaluate_pair(truth, pred, iomin_threshold, ignore_fraction, option))
        if progress is not None:
            progress(done, len(pairs_to_score))
    return Evaluation(tuple(movies), iomin_threshold, ignore_fraction, truth_dir, pred_dir)


def _is_detection(path: Path) -> bool:
    """Whether a label file is what ``casparks detect`` wrote: named after its movie
    (``01_video_class_label.tif``), or beside its summary (``cell3_class_label.tif`` of
    ``cell3.tif``, with ``cell3_detection.json``), not an annotation (``01_class_label.tif``)."""
    if is_detection_name(path):
        return True
    parsed = sample_id(path)
    if parsed is None or parsed[1] == "video":
        return False
    tail = {"class_label": CLASS_SUFFIX, "event_label": EVENT_SUFFIX}[parsed[1]]
    stem = path.name[: path.name.lower().rindex(tail)]
    return path.with_name(f"{stem}_detection.json").is_file()


def _detection_files(sample: Sample) -> Sample:
    """``sample`` with only the label files a detection wrote (:func:`_is_detection`)."""
    return replace(sample, **{kind: path if path is not None and _is_detection(path) else None
                              for kind, path in (("class_label", sample.class_label),
                                                 ("event_label", sample.event_label))})


def _refuse_self_scoring(matched: Sequence[tuple[Sample, Sample]], option: str = "--pred") -> None:
    """An annotation paired with itself as its prediction (``--pred`` the annotated folder, without
    a detection in it) scores F1 1.0 whatever the model: refused, before any scoring."""
    same = [pred for truth, pred in matched if _same_file(truth.class_label, pred.class_label)]
    if same:
        more = f" (and {len(same) - 1} more)" if len(same) > 1 else ""
        raise CasparksError(f"is the annotation itself, not a prediction of it{more}", path=same[0].class_label,
                            fix=f"give {option} the folder `casparks detect --out` wrote (<movie>_class_label.tif)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def _paired_predictions(predictions: Sequence[Sample], pairs: dict[str, str], truth: Sequence[Sample],
                        pred_dir: Path, option: str = "--pred") -> dict[str, Sample]:
    """Predictions by the annotation id they are scored against: their own, or ``pairs``'s."""
    by_id = {s.id: s for s in predictions}
    truth_ids = {s.id for s in truth}
    # NAME as the files are named (cell3_video_class_label.tif: cell3_video) or as their id (cell3)
    given = {(sample_id(f"{name}{CLASS_SUFFIX}.tif") or (name,))[0]: name for name in pairs}  # as typed
    pairs = {pred_id: pairs[name] for pred_id, name in given.items()}
    for pred_id, truth_id in pairs.items():
        if pred_id not in by_id:
            raise CasparksError(f"--pair {given[pred_id]}={truth_id}: no prediction {pred_id}{CLASS_SUFFIX}.tif",
                                path=pred_dir, fix=f"give the name of a prediction in {option} (its file name "
                                f"without {CLASS_SUFFIX}.tif)")
        if truth_id not in truth_ids:
            raise CasparksError(f"--pair {given[pred_id]}={truth_id}: no annotated movie {truth_id}",
                                fix="give the id of an annotated movie in --truth (NN of NN_class_label.tif)")
    scored_against: dict[str, list[str]] = {}
    for pred_id in by_id:
        scored_against.setdefault(pairs.get(pred_id, pred_id), []).append(pred_id)
    twice = sorted(t for t, preds in scored_against.items() if len(preds) > 1)
    if twice:
        names = " and ".join(by_id[p].class_label.name for p in scored_against[twice[0]])
        raise CasparksError(f"annotated movie {twice[0]} would be scored against two predictions ({names})",
                            fix="pair each annotated movie with one prediction")
    return {pairs.get(pred_id, pred_id): sample for pred_id, sample in by_id.items()}


def read_annotation(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """A movie's annotated classes and event ids (None without an event file), read and checked as
    every scoring reads them (``evaluate``, ``calibrate``): class labels of a float type (Fiji's
    32-bit), codes outside 0-4, an event of two classes and ``casparks check``'s other errors
    refused, as ``check``, ``prepare-labels`` and ``train`` refuse them."""
    classes = _read_classes(sample.class_label)
    events = _read_events(sample.event_label, classes.shape)
    if events is not None:
        split = split_wrapped_sparks(classes, events)
        if split is not None:  # once here, named; scoring then reads the split ids (not 8-bit)
            events, n_ids, n_sparks = split
            log.warning("%s: 8-bit ids reach 255 and have wrapped: %d spark id(s) covering separate regions read "
                        "as %d sparks (save the instances as uint16)", sample.event_label, n_ids, n_sparks)
        _refuse_bad_annotation(sample.event_label, events, classes)
    return classes, events


def _evaluate_pair(truth: Sample, pred: Sample, iomin_threshold: float, ignore_fraction: float,
                   option: str = "--pred") -> MovieEvaluation:
    truth_classes, truth_events = read_annotation(truth)
    pred_classes = _read_classes(pred.class_label, annotation=False)
    if truth_classes.shape != pred_classes.shape:
        raise _shape_error(truth, pred, truth_classes.shape, pred_classes.shape)
    _refuse_other_than_the_movie(truth, truth_classes.shape)
    pred_events = _read_events(pred.event_label, truth_classes.shape)
    _warn_other_movie(truth, pred, option)
    if np.array_equal(pred_classes, truth_classes) and np.count_nonzero(truth_classes):
        # a copy of the annotation scores F1 1.0 whatever the model (the same file is refused)
        log.warning("movie %s: the prediction %s is the annotation voxel for voxel: a copy of it, not a detection?",
                    truth.id, pred.class_label)
    if truth.event_label is None:
        log.warning("movie %s: no %s%s.tif, annotated instances derived by connected components (touching events "
                    "become one)", truth.id, truth.id, EVENT_SUFFIX)
    # a method's own predictions: scored as they are, but what may have merged or wrapped is said
    if pred.event_label is None:
        log.warning("movie %s: prediction %s has no event-label file beside it; predicted instances derived by "
                    "connected components (touching events become one, and an event in pieces, such as a wave "
                    "joined across a gap, several)", truth.id, pred.class_label.name)
    elif pred_events is not None and pred_events.dtype == np.uint8 and pred_events.size and pred_events.max() == 255:
        log.warning("movie %s: predicted ids stored as 8-bit reach 255 and may have wrapped (events beyond 255 share "
                    "ids): %s; save them as uint16 or uint32", truth.id, pred.event_label)
    counts, matching = match_events(
        truth_classes, truth_events, pred_classes, pred_events,
        iomin_threshold=iomin_threshold, ignore_fraction=ignore_fraction,
    )
    return MovieEvaluation(truth.id, counts, iomin_threshold, ignore_fraction, truth.class_label, pred.class_label,
                           matching)


def _warn_other_movie(truth: Sample, pred: Sample, option: str = "--pred") -> None:
    """Warn where a ``casparks detect`` prediction was made on another movie than the annotated one
    (its summary's fingerprint): a validation folder's detections scored against a test folder of
    the same shapes and ids gave plausible numbers without a sign."""
    import json

    from .io import movie_fingerprint

    summary_path = pred.class_label.with_name(pred.class_label.name.replace(f"{CLASS_SUFFIX}.tif", "_detection.json"))
    if truth.video is None or not summary_path.is_file():
        return
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        recorded = summary.get("movie_fingerprint")
        if not recorded:  # written before fingerprints were
            return
        # the annotated movie as it is: one channel (the detection's channel of a multi-channel copy), or its channel
        channel = summary.get("channel") if stack_channels(truth.video) > 1 else None
        found = movie_fingerprint(read_stack(truth.video, channel=channel))
    except (CasparksError, OSError, ValueError, AttributeError):  # a damaged summary is not this check's to report
        return
    if found != recorded:
        log.warning("movie %s: the prediction %s was detected on another movie than %s (its pixels differ): check "
                    "that %s holds the detection of --truth", truth.id, pred.class_label.name, truth.video, option)


def _odd_one(truth_shape: tuple[int, ...], pred_shape: tuple[int, ...], movie_shape: tuple[int, ...] | None) -> str | None:
    """Which of two label files of different shapes is wrong: 'annotation' or 'prediction', the one
    that differs from the movie; None where the movie cannot tell (unknown, or both differ)."""
    if movie_shape is None:
        return None
    if tuple(pred_shape) == tuple(movie_shape):
        return "annotation"
    if tuple(truth_shape) == tuple(movie_shape):
        return "prediction"
    return None


def _shape_error(truth: Sample, pred: Sample, truth_shape: tuple[int, ...], pred_shape: tuple[int, ...]) -> CasparksError:
    """The error for an annotation and a prediction of different shapes, naming the file that
    differs from the movie (the one to fix), or both where the movie cannot tell."""
    movie_shape = None
    if truth.video is not None:
        with contextlib.suppress(CasparksError, OSError):  # without the movie, both files are named
            movie_shape = tuple(stack_shape(truth.video))
    odd = _odd_one(truth_shape, pred_shape, movie_shape)
    if odd == "annotation":
        return CasparksError(
            f"the annotation has shape {truth_shape}, but the movie {truth.video.name} is {movie_shape}, as is the "
            f"prediction {pred.class_label}", path=truth.class_label,
            fix="fix the annotation: it must have the movie's frames and size (cropped, or of another movie?)",
        )
    if odd == "prediction":
        return CasparksError(
            f"the prediction has shape {pred_shape}, but the movie {truth.video.name} is {movie_shape}, as is its "
            f"annotation {truth.class_label}", path=pred.class_label,
            fix=f"detect on the annotated movie {truth.video}",
        )
    movie = f"; the movie {truth.video.name} is {movie_shape}" if movie_shape is not None else ""
    return CasparksError(
        f"prediction {pred.class_label} has shape {pred_shape}, annotation {truth.class_label} has "
        f"{truth_shape}{movie}",
        fix="the labels must have the movie's frames and size: fix the annotation, or predict on the annotated movie",
    )


def _refuse_other_than_the_movie(truth: Sample, shape: tuple[int, ...]) -> None:
    """An annotation (and a prediction of its shape) other than its movie's frames and size, as
    ``casparks check`` calls it: frame t of the labels may not be frame t of the movie. A movie
    that cannot be read leaves the labels to be compared with each other only."""
    if truth.video is None:
        return
    movie_shape = None
    with contextlib.suppress(CasparksError, OSError):
        movie_shape = tuple(stack_shape(truth.video))
    if movie_shape is not None and len(movie_shape) == 3 and movie_shape != tuple(shape):
        raise CasparksError(f"the annotation has shape {tuple(shape)}, but its movie {truth.video.name} is "
                            f"{movie_shape} (and the prediction has the annotation's)", path=truth.class_label,
                            fix="fix the annotation: it must have the movie's frames and size (cropped, or of "
                                "another movie?)")


def _refuse_bad_annotation(path: Path, events: np.ndarray, classes: np.ndarray) -> None:
    """The annotation's errors as ``casparks check`` finds them (an event of two classes, ...)
    stop the scoring, which would count them silently; its warnings are logged."""
    from .dataset import check_event_label

    for problem in check_event_label(path, events, classes):
        if problem.severity == "error":
            raise CasparksError(f"the annotation is not valid: {problem.message}", path=path,
                                fix="fix it (casparks check lists every problem of the folder)")
        log.warning("%s: %s", path, problem.message)


def _read_classes(path: Path, annotation: bool = True) -> np.ndarray:
    """Class codes 0-4 of a label stack. An annotation of a float type is refused, as ``check``,
    ``prepare-labels`` and ``train`` refuse it (one rule for an annotation); a prediction of
    another program may be whole-number floats, read as integers."""
    classes = np.asarray(read_label_stack(path))
    if classes.dtype.kind not in "uib":
        if annotation:
            raise CasparksError(f"class labels of dtype {classes.dtype} are not an integer type", path=path,
                                fix="save the class labels as uint8 codes 0-4 (Fiji: Image > Type > 8-bit, without "
                                    "scaling)")
        if not np.array_equal(classes, np.round(classes)):
            raise CasparksError("predicted class labels are not whole numbers", path=path,
                                fix="save the predicted class labels as uint8 codes 0-4")
        classes = classes.astype(np.int64)
    try:
        check_codes(classes)
    except ValueError as exc:
        raise CasparksError(getattr(exc, "what", str(exc)), path=path,
                            fix=getattr(exc, "fix", None)
                            or "save codes 0-4 (0 background, 1 sparks, 2 waves, 3 puffs, 4 ignore)") from None
    return classes


def _read_events(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if path is None:
        return None
    events = np.asarray(read_label_stack(path))
    if events.shape != shape:
        raise CasparksError(
            f"instance ids have shape {events.shape}, the class labels {shape}",
            path=path,
            fix="write the event labels of the same movie, or remove the file to derive instances",
        )
    if events.dtype.kind == "f":
        if not np.array_equal(events, np.round(events)):
            raise CasparksError("instance ids are not whole numbers", path=path, fix="save them as uint16 or uint32")
        events = events.astype(np.int64)
    elif events.dtype.kind not in "ui":
        raise CasparksError(f"dtype {events.dtype} cannot hold instance ids", path=path, fix="save them as uint16 or uint32")
    if events.size and events.min() < 0:
        raise CasparksError("negative instance ids", path=path, fix="ids must be 0 (none) or positive")
    return events


# ----------------------------------------------------------------------------------------------
# table


def _fmt(value: Any, width: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–".rjust(width)
    if isinstance(value, (int, np.integer)):
        return str(int(value)).rjust(width)
    return f"{value:.3f}".rjust(width)


def _unaveraged_note(result: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """A line under the average naming the classes predicted but not annotated: left out of the
    average, their false events are in their own row and in 'all' only."""
    classes = result["classes"]
    if not any(classes[n]["annotations"] for n in names):  # nothing annotated: the average takes every class
        return []
    false = [f"{n} ({classes[n]['predictions']} predicted)" for n in names
             if not classes[n]["annotations"] and classes[n]["predictions"]]
    if not false:
        return []
    return [f"  not in the average, none annotated: {', '.join(false)}"]


def _error_lines(result: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Why each class's events were missed and its predictions false (one-to-one): whether a
    model must see more (unseen) or separate better (merged, split off)."""
    lines = []
    for side, title, legend in (
        ("missed", "Missed annotations, why (one-to-one)",
         "other class: paired with a prediction of another class; merged: covered (IoMin ≥ the threshold) by a "
         "prediction paired with another annotation;\npartly covered: predicted voxels on it, no prediction up to "
         "the threshold; unseen: no predicted voxel on it"),
        ("false", "False predictions, why (one-to-one)",
         "other class: paired with an annotation of another class; split off: covers an annotation paired with "
         "another prediction;\npartly on an event: touches annotated events below the threshold; on background: "
         "touches no annotated event"),
    ):
        kinds = list(result["classes"][names[0]]["one_to_one_errors"][side])
        labels = [k.replace("_", " ") for k in kinds]
        width = max(len(label) for label in labels) + 2
        lines += [f"{title}:", f"{'class':<10}" + "".join(f"{label:>{width}}" for label in labels)]
        for name in names:
            counts = result["classes"][name]["one_to_one_errors"][side]
            lines.append(f"{name:<10}" + "".join(f"{counts[k]:>{width}}" for k in kinds))
        lines += legend.split("\n")
    return lines


def format_scores(result: dict[str, Any], title: str = "") -> str:
    """Plain-text table of a :func:`casparks.metrics.scores` result."""
    names = [CLASS_NAMES[code] for code in EVENT_CLASSES]
    head = (
        f"{'':<10}{'reference':^20}   {'one-to-one':^20}   {'voxel':>6}  "
        f"{'annot.':>6} {'pred.':>6} {'ignored':>7}"
    )
    sub = (
        f"{'class':<10}{'P':>6} {'R':>6} {'F1':>6}   {'P':>6} {'R':>6} {'F1':>6}   {'IoU':>6}  "
        f"{'':>6} {'':>6} {'':>7}"
    )
    lines = []
    if title:
        lines.append(f"Scores — {title}")
    lines += [head, sub, "-" * len(sub)]

    def row(label, ref, o2o, iou, n_truth="", n_pred="", ignored=""):
        return (
            f"{label:<10}{_fmt(ref['precision'])} {_fmt(ref['recall'])} {_fmt(ref['f1'])}   "
            f"{_fmt(o2o['precision'])} {_fmt(o2o['recall'])} {_fmt(o2o['f1'])}   {_fmt(iou)}  "
            f"{str(n_truth):>6} {str(n_pred):>6} {str(ignored):>7}"
        )

    def ignored(ref: int, o2o: int) -> str:  # a piece matched by the reference may be unpaired one-to-one
        return str(ref) if ref == o2o else f"{ref}/{o2o}"

    for name in names:
        c = result["classes"][name]
        lines.append(row(name, c["reference"], c["one_to_one"], c["voxel_iou"], c["annotations"], c["predictions"],
                         ignored(c["reference_counts"]["ignored"], c["one_to_one_counts"]["ignored"])))
    lines.append("-" * len(sub))
    avg = result["average"]
    lines.append(row("average", avg["reference"], avg["one_to_one"], avg["voxel_iou"]))
    lines += _unaveraged_note(result, names)
    all_ = result["all_events"]
    ignored_all = ignored(*(sum(result["classes"][n][f"{kind}_counts"]["ignored"] for n in names)
                            for kind in ("reference", "one_to_one")))
    lines.append(row("all", all_["reference"], all_["one_to_one"], all_["voxel_iou"],
                     all_["annotations"], all_["predictions"], ignored_all))
    lines.append("")
    lines.append("Reference detection (IoMin matches, any class) and classification:")
    lines.append(f"{'':<10}{'detected':>10} {'correctly classified':>21}")
    for name in names:
        ref = result["classes"][name]["reference"]
        lines.append(f"{name:<10}{_fmt(ref['detected'], 10)} {_fmt(ref['correctly_classified'], 21)}")
    lines.append(f"{'average':<10}{_fmt(avg['reference']['detected'], 10)} "
                 f"{_fmt(avg['reference']['correctly_classified'], 21)}")
    paper = result["average_paper_convention"]
    lines.append(
        f"paper convention (undefined = 0, mean of 3 classes): P {_fmt(paper['precision'], 0)}  "
        f"R {_fmt(paper['recall'], 0)}  F1 {_fmt(paper['f1'], 0)}  detected {_fmt(paper['detected'], 0)}  "
        f"correctly classified {_fmt(paper['correctly_classified'], 0)}"
    )
    lines.append("")
    conf = result["confusion"]
    lines.append("One-to-one confusion matrix (rows: annotated, columns: predicted):")
    width = max(9, *(len(c) + 1 for c in conf["columns"]))
    lines.append(f"{'':<10}" + "".join(f"{c:>{width}}" for c in conf["columns"]))
    for label, counts in zip(conf["rows"], conf["counts"]):
        cells = [
            "".rjust(width) if (label == "spurious" and col == "missed") else str(v).rjust(width)
            for col, v in zip(conf["columns"], counts)
        ]
        lines.append(f"{label:<10}" + "".join(cells))
    lines.append("")
    lines += _error_lines(result, names)
    lines.append("")
    lines.append(
        "reference: IoMin matching, many-to-many, as in Dotti et al. 2024; one-to-one: Hungarian "
        "pairing, class-agnostic, same-class pairs preferred.\nP precision, R recall, F1 their harmonic mean; "
        "'–' = undefined "
        "(no annotations or no predictions of that class); average = mean over the annotated classes "
        "where defined;\n'all' = all classes pooled (voxel IoU: any event versus background); 'ignored' = "
        "unmatched predictions lying ≥ 50 % on ignore voxels (not false positives; reference/one-to-one where they differ)."
    )
    return "\n".join(line.rstrip() for line in lines)

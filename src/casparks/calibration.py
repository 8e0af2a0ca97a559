"""Post-processing settings of a model chosen on annotated validation movies (``casparks calibrate``).

Why: a network trained with class weights over-predicts rare classes, so its event probability
needs a threshold chosen on annotated movies (sim-v1's was 0.975, with 0.95 for puffs), and a
fine-tuned run inherits settings calibrated for the model it started from, not for itself.

The network runs once per movie (as ``casparks detect`` runs it: the model's windows, resampling
and precision); each combination of event, spark and puff thresholds (and of the ``grid`` values
of any other post-processing option, e.g. the minimum spark size in µm and ms) then only
post-processes and scores (:func:`casparks.postprocess.postprocess`,
:func:`casparks.evaluate_movie`, counts summed over the movies of every validation folder). The
best combination has the highest mean one-to-one F1 over the classes the movies annotate (as
``casparks evaluate``'s average: a false event of a class none annotates does not pull it; with groups
of folders, e.g. two simulators' or two microscopes' validation movies, the mean of each group's
mean, so a large group cannot outvote a small one; on ties,
the one that keeps most of the model's own settings, then the first); a class that no validation movie annotates (no puffs) keeps the model's own
threshold, which nothing there could choose. :func:`write_card` writes it into the model's card.

Post-processing is single-threaded, so ``workers=N`` scores N combinations at once in forked
processes, which share the movies and probabilities the network made (copy-on-write: nothing is
copied or pickled but the settings and the counts). The rows are the same as with one worker.
Where the system cannot fork (Windows) the combinations run one after the other.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import itertools
import logging
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .errors import CasparksError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # numpy and pandas on use: `casparks --help` builds this command's parser from the defaults
    import numpy as np
    import pandas as pd

__all__ = ["CLASSES", "DEFAULT_EVENT_THRESHOLDS", "DEFAULT_PUFF_THRESHOLDS", "DEFAULT_SPARK_THRESHOLDS",
           "THRESHOLD_KEYS", "Calibration", "calibrate", "card_path", "grid_options", "write_card"]

#: the event classes scored, in the order of the table's columns
CLASSES = ("spark", "wave", "puff")
#: the post-processing options with their own arguments (not ``grid`` keys)
THRESHOLD_KEYS = ("event_threshold", "spark_threshold", "puff_threshold")
DEFAULT_EVENT_THRESHOLDS = (0.9, 0.95, 0.97, 0.975, 0.98, 0.985)
#: None: the class uses the event threshold
DEFAULT_SPARK_THRESHOLDS = (None, 0.9, 0.8)
DEFAULT_PUFF_THRESHOLDS = (None, 0.9, 0.95)

#: (movie, probabilities, truth classes, truth events) of each validation movie while scoring: a
#: module global, so that forked workers read the parent's arrays instead of receiving copies
_MOVIES: list[tuple] = []
#: the group (index into the folder groups) of each movie of :data:`_MOVIES`
_GROUPS: list[int] = []

Value = Any  # a number, a word (spark_split_on=movie) or None (the option off / the event threshold)


@dataclass(frozen=True, eq=False)
class Calibration:
    """Every combination's scores and the best settings.

    ``rows``: one row per combination, in the order tried (event thresholds slowest, then spark,
    puff and the grid keys in order): the settings (columns named as the post-processing options,
    with their units, e.g. ``spark_min_duration_ms``; None where a threshold is the event
    threshold or an option is off), then ``one_to_one_f1_<class>``, ``one_to_one_precision_<class>``,
    ``one_to_one_recall_<class>``, ``reference_f1_<class>`` and ``mean_one_to_one_f1`` (over the
    annotated classes; NaN where a class has no annotated or found event). ``best``: the post-processing values of the
    best row (thresholds and grid keys), as a card's ``postprocess`` takes them.
    """

    model: str
    val_dirs: tuple[Path, ...]
    n_movies: int
    grid_keys: tuple[str, ...]
    rows: pd.DataFrame
    best: dict[str, Value]
    #: the post-processing settings the model's card gave (what the combinations change)
    card_postprocess: dict[str, Any]
    network_s: float
    #: the groups of folders scored apart (one group: every folder together); with several,
    #: ``mean_one_to_one_f1`` is the mean of the columns ``group<k>_mean_one_to_one_f1``
    groups: tuple[tuple[Path, ...], ...] = ()
    #: the weights scored (``weights``: their name, ``model_step``, ``checkpoint_sha256``) and the
    #: network's windows (``window_frames``, ``overlap``, ``edge_frames``) they were read with
    network: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the windows detection with the model's card reads (what a card's thresholds must hold for)
    model_network: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        """How many groups were scored apart (1: every folder together)."""
        return max(1, len(self.groups))

    @property
    def best_row(self) -> dict[str, Any]:
        """The scores and settings of the best combination."""
        return _records(self.rows)[_best_index(self.rows, self.card_postprocess, (*THRESHOLD_KEYS, *self.grid_keys))]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: model, folders, every row (scores per class nested) and the best."""
        out = {"model": self.model, "val": [str(v) for v in self.val_dirs], "movies": self.n_movies,
               "rows": [_nested(r, self.grid_keys, self.n_groups) for r in _records(self.rows)],
               "best": dict(self.best), "best_mean_one_to_one_f1": _number(self.best_row["mean_one_to_one_f1"])}
        if self.n_groups > 1:
            out["groups"] = [[str(v) for v in group] for group in self.groups]
        return out

    def format_table(self) -> str:
        """The table ``casparks calibrate`` prints, and the best settings as card lines."""
        lines = [self.summary_line(), *table_header(self.grid_keys, self.n_groups)]
        lines += [table_row(r, self.grid_keys, self.n_groups) for r in _records(self.rows)]
        return "\n".join([*lines, "", self.format_best()])

    def summary_line(self) -> str:
        folders = (" and ".join(f"group {k} ({', '.join(map(str, g))})" for k, g in enumerate(self.groups, 1))
                   if self.n_groups > 1 else ", ".join(map(str, self.val_dirs)))
        mean = "; mean: of the groups' means" if self.n_groups > 1 else ""
        return (f"# model {self.model}: network run on {self.n_movies} movies of "
                f"{folders} in {self.network_s:.0f} s{mean}; card settings now: {self.card_postprocess}")

    def format_best(self) -> str:
        mean = self.best_row["mean_one_to_one_f1"]
        return (f"best mean one-to-one F1 {mean:.3f}; for the model card:\npostprocess:\n"
                + "".join(f"  {key}: {'null' if value is None else _shown(value)}\n" for key, value in self.best.items()))

    def record(self, date: datetime.date | None = None) -> dict[str, Any]:
        """The card's ``calibration:`` record: when, on what, and the best scores."""
        row = self.best_row
        return {"date": (date or datetime.date.today()).isoformat(),
                **self.network,  # the weights (step) and windows: detection warns for other weights
                "val_dirs": [str(Path(v).resolve()) for v in self.val_dirs], "movies": self.n_movies,
                "mean_one_to_one_f1": _number(row["mean_one_to_one_f1"]),
                # null for a class none of the movies annotates (no recall): its 0 from false events
                # read as "scored zero" in a card
                "one_to_one_f1": {c: None if _undefined(row[f"one_to_one_recall_{c}"]) else
                                  _number(row[f"one_to_one_f1_{c}"]) for c in CLASSES},
                **({"groups": [{"val_dirs": [str(Path(v).resolve()) for v in g],
                                "mean_one_to_one_f1": _number(row[f"group{k}_mean_one_to_one_f1"])}
                               for k, g in enumerate(self.groups, 1)]} if self.n_groups > 1 else {})}


# ----------------------------------------------------------------------------------------------
# the options


def grid_options() -> list[str]:
    """The post-processing options a ``grid`` may vary (every one but the thresholds)."""
    from .postprocess import PostprocessConfig

    return [f.name for f in dataclasses.fields(PostprocessConfig) if f.name not in THRESHOLD_KEYS]


def parse_value(text: str) -> Value:
    """A number, ``none`` (None: the option off, or the event threshold), or a word for the options
    that take one (e.g. ``spark_split_on=movie,probability``)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_grid(text: str) -> tuple[str, list[Value]]:
    """``KEY=V1,V2,...`` → (key, values); ValueError when it is not that."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"{text!r}: give KEY=V1,V2,...")
    return key.strip(), [parse_value(v) for v in values.split(",")]


def _check_grid(grid: Mapping[str, Sequence[Value]]) -> dict[str, list[Value]]:
    options = grid_options()
    for key, values in grid.items():
        if key in THRESHOLD_KEYS:
            raise CasparksError(f"grid {key}: not a post-processing option here (the thresholds have their own "
                                f"argument)", fix=f"use --{key.replace('_', '-')}s")
        if key not in options:
            import difflib

            close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.75)
            raise CasparksError(f"grid {key}: not a post-processing option here",
                                fix=(f"did you mean {close[0]}? " if close else "") + f"the options: {', '.join(options)}")
        if isinstance(values, (str, bytes)) or not len(values):
            raise CasparksError(f"grid {key}: give a list of values, got {values!r}")
    return {key: list(values) for key, values in grid.items()}


def _check_thresholds(name: str, values: Sequence[float | None], optional: bool) -> list[float | None]:
    values = list(values)
    if not values:
        raise CasparksError(f"{name}: give at least one threshold")
    for value in values:
        if value is None and optional:
            continue
        if value is None or not 0 < float(value) < 1:
            raise CasparksError(f"{name}: a threshold is a probability in (0, 1){' or none' if optional else ''}, "
                                f"got {value!r}")
    return values


def _groups(val_dirs: Any) -> list[list[Path]]:
    """``val_dirs`` as groups of folders: one group unless it holds lists (see :func:`calibrate`)."""
    if isinstance(val_dirs, (str, Path)):  # one folder ("my_val" was read as the folders m, y, _, …)
        return [[Path(val_dirs)]]
    items = list(val_dirs)
    if not any(isinstance(item, (list, tuple)) for item in items):
        return [[Path(item) for item in items]]
    return [[Path(item)] if isinstance(item, (str, Path)) else [Path(v) for v in item] for item in items]


def _samples(val_dirs: Sequence[str | Path]) -> list:
    from .dataset import list_samples, refuse_detection_output
    from .evaluation import annotated_samples

    if not val_dirs:
        raise CasparksError("no validation folder given", fix="give folders of annotated movies (NN_video.tif, "
                            "NN_class_label.tif, NN_event_label.tif)")
    samples = []
    for folder in map(Path, val_dirs):
        refuse_detection_output(folder, fix="give --val folders of annotated movies (NN_video.tif with "
                                            "NN_class_label.tif); casparks evaluate scores a detection")
        found = list_samples(folder, require=("video",))
        found = annotated_samples(found, folder) if found else found
        if not found:
            raise CasparksError("holds no annotated movies", path=folder,
                                fix="give a folder of NN_video.tif with NN_class_label.tif (and NN_event_label.tif)")
        without = [s.id for s in found if s.event_label is None]
        if without:  # as evaluate and check take them (it was refused here alone)
            log.warning("%s: movie(s) %s have no event labels; their annotated events are the connected components "
                        "of each class (touching events become one)", folder, ", ".join(without[:5]))
        samples += found
    return samples


# ----------------------------------------------------------------------------------------------
# scoring


def _score(config) -> list:
    """Event counts of the movies of :data:`_MOVIES` post-processed with ``config``, summed per group
    (:data:`_GROUPS`; every group holds a movie)."""
    import numpy as np

    from .evaluation import evaluate_movie
    from .postprocess import postprocess

    totals: dict[int, Any] = {}
    for (movie, probabilities, truth_classes, truth_events), group in zip(_MOVIES, _GROUPS):
        if isinstance(probabilities, Path):  # kept: one movie's file, mapped while it is scored
            probabilities = np.load(probabilities, mmap_mode="r")
        probabilities = np.asarray(probabilities, dtype=np.float32)
        found = postprocess(probabilities, config, movie.pixel_size_um, movie.frame_interval_ms, movie=movie.data)
        del probabilities
        counts = evaluate_movie(truth_classes, truth_events, found.class_label, found.event_label,
                                check_annotation=False).counts  # read_annotation checked it
        totals[group] = counts if group not in totals else totals[group] + counts
    return [totals[k] for k in sorted(totals)]


def _group_scores(group_counts: list) -> dict[str, float]:
    """A row's scores: every class over all movies; with several groups, each group's mean F1 (over
    the classes that group annotates) and, as the mean the best row is chosen on, the mean of those."""
    import numpy as np

    total = group_counts[0]
    for counts in group_counts[1:]:
        total = total + counts
    row = row_scores(total)
    if len(group_counts) > 1:
        means = [row_scores(counts)["mean_one_to_one_f1"] for counts in group_counts]
        row.update({f"group{k}_mean_one_to_one_f1": m for k, m in enumerate(means, 1)})
        defined = [m for m in means if not math.isnan(m)]
        row["mean_one_to_one_f1"] = float(np.mean(defined)) if defined else float("nan")
    return row


def _scored(configs: list, workers: int):
    """:func:`_score` of each config, in order; ``workers`` forked processes where possible."""
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods() or len(configs) < 2:
        yield from map(_score, configs)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(configs)), initializer=_default_sigterm) as pool:
        yield from pool.imap(_score, configs)


def _default_sigterm() -> None:
    """A worker ends at the pool's SIGTERM, quietly: it inherits the parent's handler, which turns
    a SIGTERM into an interruption (the parent's, to stop the pool and say so)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def row_scores(counts) -> dict[str, float]:
    """The row's score columns from summed event counts (NaN where undefined); the mean is
    evaluate's average, over the classes these movies annotate, so a false event of a class none
    annotates does not outweigh missed annotated ones (its F1 column still shows the 0)."""
    from .metrics import scores

    result = scores(counts)
    per_class = result["classes"]
    row = {}
    for name in ("f1", "precision", "recall"):  # precision and recall say whether F1 fell to misses or false events
        row.update({f"one_to_one_{name}_{c}": _number(per_class[c]["one_to_one"][name], nan=True) for c in CLASSES})
    row.update({f"reference_f1_{c}": _number(per_class[c]["reference"]["f1"], nan=True) for c in CLASSES})
    row["mean_one_to_one_f1"] = _number(result["average"]["one_to_one"]["f1"], nan=True)
    return row


def calibrate(model: str | Path, val_dirs: str | Path | Sequence[str | Path | Sequence[str | Path]], *,
              event_thresholds: Sequence[float] = DEFAULT_EVENT_THRESHOLDS,
              spark_thresholds: Sequence[float | None] = DEFAULT_SPARK_THRESHOLDS,
              puff_thresholds: Sequence[float | None] = DEFAULT_PUFF_THRESHOLDS,
              grid: Mapping[str, Sequence[Value]] | None = None, workers: int = 1,
              window_frames: int | None = None, overlap: float | None = None, edge_frames: int | None = None,
              device: str = "auto", pixel_size_um: float | None = None, frame_interval_ms: float | None = None,
              progress: Callable[[str], None] | None = None,
              probabilities_dir: str | Path | None = None, for_card: bool = False) -> Calibration:
    """Score every combination of thresholds and ``grid`` values on the annotated movies of ``val_dirs``.

    ``model``: a bundled model's name, a checkpoint or a run folder. ``val_dirs``: a folder, a list
    of folders scored together, or a list of groups (each a folder or a list of folders), each
    group scored apart and the best chosen on the mean of their means (``casparks calibrate --val
    A B --val C``). ``spark_thresholds`` and
    ``puff_thresholds``: None is the event threshold. ``grid``: other post-processing options
    (:class:`~casparks.postprocess.PostprocessConfig` fields) → the values to try. ``window_frames``,
    ``overlap``, ``edge_frames``: the network's windows (None: the model's). ``progress`` receives
    each line of the table as it is made (``casparks calibrate`` prints them).
    ``pixel_size_um`` / ``frame_interval_ms``: the units of movies without them in their metadata
    (as ``casparks detect``'s). ``probabilities_dir``: each movie's probabilities are kept there
    (float16, named by the movie and a key of the model's weights, the network's settings and the
    movie file) and read back by later calls with the same key, so a second grid over the same
    movies runs no network; every call scores the float16 values, so the tables agree. Mistakes
    (an unknown grid key, a folder without annotated movies, movies without units, annotations
    ``casparks evaluate`` refuses, an unknown model) raise :class:`~casparks.errors.CasparksError` before
    the network runs, every movie's at once; so do windows other than the model's with
    ``for_card`` (the settings go into its card, whose detection reads the model's windows).
    """
    import pandas as pd

    from .detection import DetectSettings, load_detector
    from .models import resolve_model

    grid = _check_grid(grid or {})
    events = _check_thresholds("event thresholds", event_thresholds, optional=False)
    sparks = _check_thresholds("spark thresholds", spark_thresholds, optional=True)
    puffs = _check_thresholds("puff thresholds", puff_thresholds, optional=True)
    if int(workers) < 1:
        raise CasparksError(f"workers must be at least 1, got {workers}")
    groups = _groups(val_dirs)
    val_dirs = [folder for group in groups for folder in group]
    _refuse_repeated(val_dirs)
    if probabilities_dir is not None and Path(probabilities_dir).exists() and not Path(probabilities_dir).is_dir():
        raise CasparksError("is not a folder (--probabilities keeps one file per movie in a folder)",
                            path=probabilities_dir, fix="give a folder's name")
    group_samples = [_samples(group) for group in groups]
    samples = [sample for group in group_samples for sample in group]
    group_of = [k for k, group in enumerate(group_samples) for _ in group]
    movies = _movies(samples, pixel_size_um, frame_interval_ms)
    annotations = _annotations(samples, movies)
    truths = [classes for classes, _ in annotations]
    if not _annotated_classes(truths):  # every row would score NaN, and the first combination win
        raise CasparksError("no spark, wave or puff is annotated in the validation movies: nothing to calibrate on",
                            path=val_dirs[0] if len(val_dirs) == 1 else None,
                            fix="give movies with annotated events (class labels 1, 2 or 3)")
    info = resolve_model(model)
    _check_not_training_movies(info, samples, for_card)
    # the events table is not scored: no dark level to read (nor its warnings)
    detector = load_detector(model, device=device, settings=DetectSettings(
        edge_frames=edge_frames, window_frames=window_frames, overlap=overlap, measure={"offset_adu": 0.0}),
        warn_calibration=False)  # choosing them anew
    windows = {"window_frames": detector.window_frames, "overlap": detector.overlap, "edge_frames": detector.edge_frames}
    model_windows = {"window_frames": detector.model_window_frames, "overlap": detector.model_overlap,
                     "edge_frames": detector.model_edge_frames}
    if for_card:
        _refuse_other_windows(windows, model_windows)
    network = {"weights": detector.info.name, "model_step": int(detector.step),
               "checkpoint_sha256": detector.checkpoint_sha256, **windows}
    # the default grids also try the model's own thresholds: otherwise a tie could not keep them
    # (its puff threshold 0.6 was replaced by none without 0.6 ever being scored)
    own = detector.postprocess
    for defaults, values, value in ((DEFAULT_EVENT_THRESHOLDS, events, own.event_threshold),
                                    (DEFAULT_SPARK_THRESHOLDS, sparks, own.spark_threshold),
                                    (DEFAULT_PUFF_THRESHOLDS, puffs, own.puff_threshold)):
        if tuple(values) == tuple(defaults) and not isinstance(value, str) and value not in values:
            values.append(value)
    notes = []
    # a class no movie annotates: nothing to choose its threshold on (every value ties, and the first
    # replaced the model's); it keeps the model's, and its other values are not scored
    for name in _absent_classes(truths):
        own = getattr(detector.postprocess, f"{name}_threshold")
        sparks, puffs = ((own,), puffs) if name == "spark" else (sparks, (own,))
        notes.append(f"# no {name} is annotated in the validation movies: {name}_threshold kept as the model's "
                     f"({'the event threshold' if own is None else own})")
    grid_keys = tuple(grid)
    combos = list(itertools.product(events, sparks, puffs, *grid.values()))
    try:
        configs = [dataclasses.replace(detector.postprocess, event_threshold=event, spark_threshold=spark,
                                       puff_threshold=puff, **dict(zip(grid_keys, values)))
                   for event, spark, puff, *values in combos]
    except (TypeError, ValueError) as exc:  # a word where a number belongs: before the network runs
        raise CasparksError(f"grid: {exc}".replace("\n", " ")) from None

    _MOVIES.clear()
    try:
        start = time.perf_counter()
        for sample, movie, (truth, truth_events) in zip(samples, movies, annotations):
            if probabilities_dir is None:
                probabilities = detector.detect(movie, save_probabilities=True).probabilities
            else:
                probabilities = _kept_probabilities(detector, movie, sample.video, Path(probabilities_dir))
            _MOVIES.append((movie, probabilities, truth, truth_events))
        _GROUPS[:] = group_of
        network_s = time.perf_counter() - start
        n_movies = len(_MOVIES)
        settings_columns = [*THRESHOLD_KEYS, *grid_keys]
        partial = Calibration(info.name, tuple(Path(v) for v in val_dirs), n_movies, grid_keys, pd.DataFrame(), {},
                              detector.postprocess.to_dict(), network_s, tuple(tuple(g) for g in groups),
                              network, model_windows)
        emit = progress or (lambda line: None)
        emit(partial.summary_line())
        for line in [*notes, *table_header(grid_keys, len(groups))]:
            emit(line)
        records = []
        for combo, counts in zip(combos, _scored(configs, int(workers))):
            record = {**dict(zip(settings_columns, combo)), **_group_scores(counts)}
            records.append(record)
            emit(table_row(record, grid_keys, len(groups)))
    finally:
        _MOVIES.clear()
        _GROUPS.clear()
    rows = _frame(records, settings_columns)
    best_row = records[_best_index(rows, detector.postprocess.to_dict(), settings_columns)]
    best = {key: best_row[key] for key in settings_columns}
    return dataclasses.replace(partial, rows=rows, best=best)


def _training_movies(checkpoint: Path, samples: Sequence[Any]) -> list[Path]:
    """The movies of ``samples`` that the run of ``checkpoint`` trained on: those in its
    ``data.data_dir`` folders (its config.yaml), less ``data.val_ids`` (none for a loose checkpoint,
    or a run whose config cannot be read)."""
    import yaml

    run_config = checkpoint.parent.parent / "config.yaml"
    if checkpoint.parent.name != "checkpoints" or not run_config.is_file():
        return []
    try:
        data = (yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}).get("data") or {}
        folders = {Path(folder).resolve() for folder in data.get("data_dir") or []}
        held_out = {str(i) for i in data.get("val_ids") or []}
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return []
    return [s.video for s in samples
            if Path(s.video).resolve().parent in folders and str(s.id) not in held_out
            and f"{Path(s.video).parent.name}/{s.id}" not in held_out]


def _check_not_training_movies(info: Any, samples: Sequence[Any], for_card: bool) -> None:
    """Thresholds chosen on a run's own training movies are chosen on what it learnt (train refuses
    such a validation set; calibrate took it and wrote it into the card as validation): refused
    for the card, a warning otherwise."""
    trained = _training_movies(Path(info.checkpoint), samples)
    if not trained:
        return
    shown = ", ".join(str(p) for p in trained[:3]) + (", ..." if len(trained) > 3 else "")
    message = (f"{len(trained)} of the {len(samples)} validation movies are training movies of {info.name} (its "
               f"data.data_dir): {shown}")
    if for_card:
        raise CasparksError(message, fix="calibrate on movies the run did not train on (its data.val_dir, or a "
                                         "folder of your own), or leave out --write-card")
    log.warning("%s: thresholds chosen on them are chosen on what the network learnt", message)


def _refuse_other_windows(windows: dict[str, Any], model_windows: dict[str, Any]) -> None:
    """Refuse a card's thresholds chosen with other windows than detection reads (a window of 32
    frames scored one movie's puffs 0.00 where the model's 208 scored 0.57)."""
    differ = [f"{key} {windows[key]:g} (the model's: {model_windows[key]:g})" for key in windows
              if key in model_windows and windows[key] != model_windows[key]]
    if differ:
        raise CasparksError(f"thresholds for the card must be chosen with the windows its detection reads, not "
                            f"{', '.join(differ)}",
                            fix="leave out --window/--overlap/--edge-frames to write the card, or keep the rows "
                                "with --json")


def _kept_probabilities(detector: Any, movie: Any, video: Path, folder: Path) -> Any:
    """The file of ``movie``'s probabilities (float16) in ``folder``, computed and kept there
    (atomically) when absent. Scoring maps one movie's file at a time (:func:`_score`), so that a
    calibration's memory does not grow with its movies (held as float32 arrays, 96 movies of
    500 × 64 × 512 took 24 GB, and the system killed it), nor its open files (a map holds one).

    The file's name holds a key of everything the probabilities depend on: the weights, the
    network's settings (window, overlap, edge frames, precision, device, tiles, resampling) and
    the movie file (path, size, time of change), its channel and units, so nothing stale is
    read back (a file of the wrong shape is computed again).
    """
    import hashlib
    import json

    import numpy as np

    from .io import atomic_output

    settings = {k: v for k, v in detector.describe().items() if k not in ("postprocess", "measure", "model")}
    stat = video.stat()
    key = {"network": settings, "movie": [str(video.resolve()), stat.st_size, stat.st_mtime_ns],
           "units": [movie.pixel_size_um, movie.frame_interval_ms], "channel": movie.channel}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = folder / f"{video.stem}_{digest}.npy"
    if path.is_file():
        try:
            kept = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:  # cut short (a run killed while the disk was full): made again
            if getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE):  # the process's open files, not the file's
                raise
            log.warning("%s: cannot be read; computing these probabilities again", path)
        else:
            shape = kept.shape
            del kept  # a map holds a file open: a thousand movies' maps ran out of open files
            if len(shape) == 4 and shape[1:] == tuple(movie.shape):
                return path
    kept = detector.detect(movie, save_probabilities=True).probabilities.astype(np.float16)
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as handle:
        np.save(handle, kept)
    return path


def _annotated_classes(truths: Iterable[np.ndarray]) -> set[int]:
    """The event classes' codes (spark, wave, puff) some truth annotates."""
    import numpy as np

    from .classes import PUFF, SPARK, WAVE

    seen: set[int] = set()
    for truth in truths:
        seen.update(int(v) for v in np.unique(truth))
    return seen & {SPARK, WAVE, PUFF}


def _absent_classes(truths: Iterable[np.ndarray]) -> list[str]:
    """The event classes (spark, puff: those with a threshold of their own) no truth annotates."""
    from .classes import PUFF, SPARK

    seen = _annotated_classes(truths)
    return [name for name, code in (("spark", SPARK), ("puff", PUFF)) if code not in seen]


def _refuse_repeated(folders: Sequence[Path]) -> None:
    """A folder given twice would count its movies twice (and weigh them twice in the choice)."""
    seen: dict[Path, Path] = {}
    for folder in folders:
        key = folder.resolve()
        if key in seen:
            raise CasparksError("is given twice as a validation folder", path=folder,
                                fix="give each folder once")
        seen[key] = folder


def _movies(samples: Sequence[Any], pixel_size_um: float | None, frame_interval_ms: float | None) -> list[Any]:
    """The validation movies, read with their units (or the ones given), every problem at once."""
    from .errors import raise_together
    from .io import for_data_set, read_movie

    movies, problems = [], []
    for sample in samples:
        try:
            movies.append(read_movie(sample.video, pixel_size_um, frame_interval_ms))
        except CasparksError as exc:
            problems.append(for_data_set(exc))
    raise_together(problems, len(samples), "scored", fix="fix or leave out these movies; the network did not run")
    return movies


def _annotations(samples: Sequence[Any], movies: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Each movie's annotated classes and event ids, read and checked as ``casparks evaluate`` reads
    them (:func:`casparks.evaluation.read_annotation`), every movie's problem at once, before the
    network runs: float labels crashed after it, and an event of two classes was scored silently."""
    import numpy as np

    from .errors import raise_together
    from .evaluation import read_annotation

    annotations, problems = [], []
    for sample, movie in zip(samples, movies):
        try:
            classes, events = read_annotation(sample)
            if classes.shape != tuple(movie.shape):
                raise CasparksError(f"the annotation has shape {classes.shape}, its movie {sample.video.name} "
                                    f"{tuple(movie.shape)}", path=sample.class_label,
                                    fix="fix the annotation: it must have the movie's frames and size")
        except CasparksError as exc:
            problems.append(exc)
            continue
        annotations.append((classes.astype(np.uint8, copy=False), events))  # codes 0-4, checked
    raise_together(problems, len(samples), "scored", fix="fix these annotations (casparks check lists every "
                   "problem of a folder); the network did not run")
    return annotations


def _frame(records: list[dict], settings_columns: Sequence[str]) -> pd.DataFrame:
    """The rows as a DataFrame; settings columns keep None (object dtype where they hold one)."""
    import pandas as pd

    frame = pd.DataFrame(records)
    for column in settings_columns:
        values = [r[column] for r in records]
        if any(v is None or isinstance(v, str) for v in values):
            frame[column] = pd.Series(values, dtype=object)
    return frame


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) and not k.startswith(("one_to_one", "reference", "mean"))
                 else v) for k, v in r.items()} for r in rows.to_dict("records")]


def _best_index(rows: pd.DataFrame, card: Mapping[str, Any] | None = None, keys: Sequence[str] = ()) -> int:
    """The row of the highest mean one-to-one F1 (a row without any defined F1 never wins); among
    rows that tie, the one that keeps most of the model's own ``card`` settings, then the first.
    On a small or easy validation set whole columns tie, and the first value tried replaced a
    tuned one with nothing to choose it on (a user's spark threshold 0.9 → none)."""
    import numpy as np

    means = rows["mean_one_to_one_f1"].to_numpy(dtype=float)
    score = np.where(np.isnan(means), -1.0, means)
    top = np.flatnonzero(score == score.max())
    if card is None or len(top) < 2:
        return int(top[0])
    kept = [sum(_same(rows[key].iloc[i], card.get(key)) for key in keys) for i in top]
    return int(top[int(np.argmax(kept))])


def _same(a: Any, b: Any) -> bool:
    """Whether two settings are one (None and NaN both mean "off" or "the event threshold")."""
    a, b = (None if _undefined(v) else v for v in (a, b))
    if a is None or b is None:
        return a is b
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return str(a) == str(b)


def _undefined(value: Any) -> bool:
    """None or NaN: a score without a denominator."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, nan: bool = False) -> float | None:
    """A plain float; NaN (or None) as ``nan`` asks: NaN for DataFrames, None for cards and JSON."""
    if _undefined(value):
        return float("nan") if nan else None
    return float(value) if nan else round(float(value), 4)


def _nested(row: dict[str, Any], grid_keys: Sequence[str], n_groups: int = 1) -> dict[str, Any]:
    """A row as models/calibrate.py's JSON held it: scores per class nested under their name."""
    out = {key: row[key] for key in (*THRESHOLD_KEYS, *grid_keys)}
    for name, prefix in (("one_to_one_f1", "one_to_one_f1_"), ("one_to_one_precision", "one_to_one_precision_"),
                         ("one_to_one_recall", "one_to_one_recall_"), ("reference_f1", "reference_f1_")):
        out[name] = {c: _finite(row[prefix + c]) for c in CLASSES}
    out["mean_one_to_one_f1"] = _finite(row["mean_one_to_one_f1"])
    if n_groups > 1:
        out["group_mean_one_to_one_f1"] = [_finite(row[f"group{k}_mean_one_to_one_f1"]) for k in range(1, n_groups + 1)]
    return out


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


# ----------------------------------------------------------------------------------------------
# the table


def _shown(value: Value) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, (float, int)) else str(value)


def table_header(grid_keys: Sequence[str], n_groups: int = 1) -> list[str]:
    groups = "".join(f"group {k} | " for k in range(1, n_groups + 1)) if n_groups > 1 else ""
    return ["| event threshold | spark threshold | puff threshold | " + "".join(f"{k} | " for k in grid_keys)
            + "F1 spark | wave | puff | " + groups + "mean | reference F1 spark / wave / puff |",
            "|---|---|---|" + "---|" * len(grid_keys) + "---|---|---|" + "---|" * (n_groups if n_groups > 1 else 0)
            + "---|---|"]


def table_row(row: Mapping[str, Any], grid_keys: Sequence[str], n_groups: int = 1) -> str:
    def score(value) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.2f}"

    named = " | ".join(_shown(row[k]) for k in ("spark_threshold", "puff_threshold", *grid_keys))
    f1 = " | ".join(score(row[f"one_to_one_f1_{c}"]) for c in CLASSES)
    reference = " / ".join(score(row[f"reference_f1_{c}"]) for c in CLASSES)
    groups = "".join(f"{row[f'group{k}_mean_one_to_one_f1']:.3f} | " for k in range(1, n_groups + 1)) if n_groups > 1 else ""
    return f"| {row['event_threshold']:g} | {named} | {f1} | {groups}{row['mean_one_to_one_f1']:.3f} | {reference} |"


# ----------------------------------------------------------------------------------------------
# the card


def card_path(model: str | Path, overwrite: bool = False) -> Path:
    """The card file :func:`write_card` writes for ``model``: its run's ``card.yaml`` for a run or a
    checkpoint in ``RUN/checkpoints`` (or a card beside that checkpoint, which detection reads
    first), ``X.yaml`` beside a loose checkpoint ``X.ckpt`` (an existing one only with
    ``overwrite``). A bundled model's card is refused."""
    from .models import RUN_CARD, resolve_model

    info = resolve_model(model)
    if info.bundled:
        raise CasparksError(f"{info.name} is a bundled model: its card is not written",
                            fix="fine-tune it first (casparks models --config) and calibrate the run, or use --json")
    beside = info.checkpoint.with_suffix(".yaml")
    if info.checkpoint.parent.name == "checkpoints":  # a run's checkpoint: the card it detects with
        card = beside if beside.is_file() else info.checkpoint.parent.parent / RUN_CARD
        if not overwrite:
            _refuse_calibrated(card)
        return card
    if beside.exists() and not overwrite:
        raise CasparksError("exists already", path=beside, fix="pass --overwrite (Python: overwrite=True) to replace it (with its values "
                            "kept and the calibrated ones set), or use --json")
    return beside


def _refuse_calibrated(card: Path) -> None:
    """Refuse a run's card that holds a calibration already: a second calibration replaced the
    first without a word, even one that scored higher on other movies."""
    from .models import _read_card

    try:
        record = _read_card(card).get("calibration") if card.is_file() else None
    except CasparksError:  # an unreadable card is the writer's to report
        return
    if isinstance(record, Mapping):
        score = record.get("mean_one_to_one_f1")
        raise CasparksError(f"holds a calibration already (of {record.get('date', 'an earlier date')} on "
                            f"{record.get('movies', '?')} movie(s), mean one-to-one F1 {score})", path=card,
                            fix="pass --overwrite (Python: overwrite=True) to replace it, or use --json to compare first")


def write_card(model: str | Path, calibration: Calibration, overwrite: bool = False,
               date: datetime.date | None = None) -> Path:
    """Write ``calibration.best`` into ``model``'s card (:func:`card_path`), atomically: every
    other key kept, ``postprocess`` updated, a ``calibration`` record added. An existing card is
    the start; a new one starts from the card the model resolves to. Returns the card's path."""
    import yaml

    from .io import as_json, atomic_output
    from .models import FINE_TUNED_FROM, TRAINED_FROM_SCRATCH, _read_card, resolve_model

    if _number(calibration.best_row["mean_one_to_one_f1"]) is None:
        raise CasparksError("no combination scored a mean one-to-one F1: nothing to write into the card",
                            fix="calibrate on movies with annotated events")
    _refuse_other_windows({k: v for k, v in calibration.network.items() if k in calibration.model_network},
                          calibration.model_network)
    path = card_path(model, overwrite)
    card = _read_card(path) if path.is_file() else dict(resolve_model(model).card)
    card["postprocess"] = {**(card.get("postprocess") or {}), **calibration.best}
    card["calibration"] = record = calibration.record(date)
    description = str(card.get("description", ""))
    if description.startswith((FINE_TUNED_FROM, TRAINED_FROM_SCRATCH)):  # it said "not calibrated (yet)"
        source = description.split(";")[0]
        card["description"] = (f"{source}; post-processing calibrated on {record['movies']} validation movie(s) "
                               f"on {record['date']} (casparks calibrate; see calibration)")
    text = yaml.safe_dump(as_json(card), sort_keys=False, allow_unicode=True)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path

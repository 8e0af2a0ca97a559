"""Chunks of annotated movies for training and validation.

* :func:`split_samples` turns ``DataConfig``'s folders and ids into training, validation and test
  samples, refusing every mix-up (validation = test, an unknown id, duplicated ids …).
* :class:`TrainingMovie` is one movie, read lazily and memory-mapped, with its units, its
  :class:`~casparks.preprocess.MovieStats` and its prepared training labels. Labels are prepared
  once (:func:`casparks.labels.prepare_labels`) and cached as uint8 TIFFs in ``cache_dir``,
  memory-mapped afterwards, so a large data set never has to fit in memory; the movie's statistics
  are cached beside them. With ``data.resample_to`` a movie of another sampling is resampled to
  it first (:func:`casparks.preprocess.resample_movie`, as detection does; labels nearest), and
  the resampled movie is cached too. A cache file's name holds a hash of everything it depends on (see
  :func:`label_cache_key`), so changed settings or files never reuse a stale cache.
* :class:`ChunkDataset` cuts every movie into chunks of ``data_duration`` frames with a stride of
  ``data_step``, from ``ignore_frames_loss`` frames before the movie's first frame to as many after
  its last (the last chunk aligned to that end; frames outside the movie are its mirror image,
  label 4 = ignore). The loss ignores each chunk's first and last ``ignore_frames_loss`` frames,
  so without that margin it would never see the movie's own first and last frames; detection
  pads its windows the same way (``edge_frames``). Chunks are pre-processed with
  :func:`casparks.preprocess.preprocess_frames` and, for training, augments them.

Augmentation (training only, each switched by its DataConfig field), in this order:

1. ``noise_data_augmentation``: extra shot noise on the raw frames, variance
   ``level · gain · max(x − offset, 0)`` with ``level`` uniform in [0, 1] per chunk and the movie's
   own noise model (:func:`casparks.preprocess.estimate_noise`): up to a doubling of the noise
   variance, as in a recording with half the photons. It is added before pre-processing, so the
   normalisation and smoothing treat it like real noise.
2. ``time_rescale``: the chunk is resampled in time by a factor drawn log-uniformly from the range
   (output frame j is source time start + j·factor; image linear interpolation, label nearest);
   exactly ``data_duration`` frames come out. A stretched chunk that would run past the movie's
   end margin is moved back to end with it (its ``start`` says so); only a movie shorter than the
   chunk is padded further (mirrored frames, labelled ignore). Never time reversal: event kinetics are
   not symmetric in time.
3. ``crop_size_um``: a random crop of the frames (position uniform, image and label together),
   after pre-processing, so the crop's values are those of the whole frame. Frames smaller than
   the crop stay whole. With ``crop_class_ratios`` the crop is centred on a voxel of a class
   drawn with those weights among the classes the chunk holds (:func:`class_centred_crop`), so
   rare classes reach the loss more often than where they happen to fall.
4. ``intensity_scale`` / ``intensity_offset`` on the pre-processed image: ``a · image + b``, with
   ``a`` log-uniform in the range and ``b`` uniform in ±offset (normalised units).
5. ``flip_y``, ``flip_x``: each with probability 1/2, image and label together.

Randomness: item ``i`` draws from ``numpy.random.default_rng([seed, epoch, i])``; ``epoch`` is
set with :meth:`ChunkDataset.set_epoch` (0 by default). Indices may go beyond ``len(dataset)``:
item ``i`` is chunk ``i % len(dataset)``, so a sampler that numbers its draws (e.g. over
``range(n_steps · batch_size)``) gets fresh augmentations without any epoch bookkeeping. The
result depends only on (seed, epoch, i), never on worker processes or their order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .classes import IGNORE
from .dataset import Sample, annotation_error, list_samples, refuse_detection_output
from .errors import CasparksError, raise_together
from .io import for_data_set, read_label_stack, read_stack, resolve_units, write_class_label
from .labels import LabelConfig, prepare_labels
from .paths import home_path
from .preprocess import (
    MovieStats,
    Preprocessing,
    context_frames,
    movie_stats,
    pad_frames,
    preprocess_frames,
    read_frames,
)

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 2: movie extremes without outlier voxels
N_CLASSES = 4


# ----------------------------------------------------------------------------------------------
# splitting data sets


def _folder_samples(folders: Iterable[str], role: str) -> list[tuple[Path, Sample]]:
    out = []
    seen: dict[Path, str] = {}
    for folder in folders:
        path = home_path(folder)
        key = path.resolve()
        if key in seen:
            raise CasparksError(f"is listed twice in data.{role}", path=path, fix="list each folder once")
        seen[key] = role
        if not path.is_dir():
            raise CasparksError("is not a folder" if path.exists() else "does not exist", path=path,
                                fix=f"fix data.{role}")
        refuse_detection_output(path, fix=f"give data.{role} folders of annotated movies (NN_video.tif with "
                                          "NN_class_label.tif)")
        out += [(path, s) for s in list_samples(path, require=("video", "class_label"))]
    return out


def _unique_ids(groups: dict[str, list[tuple[Path, Sample]]]) -> dict[str, list[Sample]]:
    """Give every sample an id unique across all folders: ``folder/id`` where ids collide."""
    every = [(folder, s) for items in groups.values() for folder, s in items]
    counts: dict[str, int] = {}
    for _, s in every:
        counts[s.id] = counts.get(s.id, 0) + 1
    out: dict[str, list[Sample]] = {}
    used: dict[str, Path] = {}
    for role, items in groups.items():
        renamed = []
        for folder, s in items:
            new = s.id if counts[s.id] == 1 else f"{folder.name}/{s.id}"
            if new in used:
                raise CasparksError(
                    f"sample id {s.id} is in two folders of the same name ({used[new]} and {folder})",
                    path=s.video, fix="rename one folder or its files",
                )
            used[new] = folder
            renamed.append(replace(s, id=new))
        out[role] = renamed
    return out


def _fingerprint(sample: Sample) -> str | None:
    """The movie's :func:`casparks.io.movie_fingerprint`; None where it cannot be read (the
    loading that follows names that problem with every other)."""
    from .io import movie_fingerprint

    try:
        return movie_fingerprint(read_stack(sample.video))
    except CasparksError:
        return None


#: where each set's movies come from, for the messages of :func:`_refuse_copies`
_SET_SOURCES = {"training": "data.data_dir", "validation": "data.val_ids or data.val_dir", "test": "data.test_dir"}


def _refuse_copies(sets: dict[str, list[Sample]]) -> None:
    """Refuse one movie in two sets under two names (a copy of a training movie in validation or
    test scores the network on what it learnt, also where data.val_ids took the copy out of
    data.data_dir, as a sample saved twice from napari); warn of a copy within a set (it counts
    twice). The same file in two sets is refused before, by its path."""
    first: dict[str, tuple[str, Sample]] = {}
    for role, samples in sets.items():
        for sample in samples:
            printed = _fingerprint(sample)
            if printed is None:
                continue
            if printed not in first:
                first[printed] = (role, sample)
                continue
            seen_role, seen = first[printed]
            if seen_role != role:
                raise CasparksError(f"is the same movie as {seen.video} ({seen_role}, {_SET_SOURCES[seen_role]}), "
                                    f"under another name, in the {role} set", path=sample.video,
                                    fix=f"a movie may be in one set only: take it out of {_SET_SOURCES[role]} or "
                                        f"{_SET_SOURCES[seen_role]}")
            log.warning("%s: the same movie as %s (%s set): it counts twice", sample.video, seen.video, role)


def split_samples(config: Any) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(train, validation, test) samples of a :class:`casparks.config.DataConfig`.

    Training: every sample of ``data_dir`` except ``val_ids``; validation: ``val_ids`` taken out of
    ``data_dir``, plus every sample of ``val_dir``; test: ``test_dir`` (never validation). Every
    sample needs a video and a class label. Ids that occur in more than one folder become
    ``folder/id`` (``val_ids`` may use either form when unambiguous). ``dataset_size='minimal'``
    keeps two training movies and one validation movie.
    """
    if not config.data_dir:
        raise CasparksError("no training data: data.data_dir is empty", fix="set data.data_dir to a data-set folder")
    groups = {
        "data_dir": _folder_samples(config.data_dir, "data_dir"),
        "val_dir": _folder_samples(config.val_dir, "val_dir"),
        "test_dir": _folder_samples(config.test_dir, "test_dir"),
    }
    data_folders = {f.resolve() for f, _ in groups["data_dir"]}
    for role in ("val_dir", "test_dir"):
        shared = {f for f, _ in groups[role] if f.resolve() in data_folders}
        if shared:
            fix = ("take it out of data.data_dir, or use data.val_ids for validation" if role == "val_dir"
                   else "never train on the test set: take it out of data.data_dir")
            raise CasparksError(f"is both in data.data_dir and data.{role}", path=min(shared), fix=fix)
    val_folders = {f.resolve() for f, _ in groups["val_dir"]}
    shared = {f for f, _ in groups["test_dir"] if f.resolve() in val_folders}
    if shared:
        raise CasparksError("is both the validation and the test set", path=min(shared),
                            fix="validation must not be the test set: choose another data.val_dir")
    videos: dict[Path, str] = {}
    for role, items in groups.items():
        for _, s in items:
            key = s.video.resolve()
            if key in videos and videos[key] != role:
                raise CasparksError(f"is in data.{videos[key]} and in data.{role}", path=s.video,
                                    fix="a movie may be in one set only")
            videos[key] = role
    unique = _unique_ids(groups)
    pool = unique["data_dir"]
    by_id = {s.id: s for s in pool}
    by_raw: dict[str, list[Sample]] = {}
    for (_, raw), s in zip(groups["data_dir"], pool):
        by_raw.setdefault(raw.id, []).append(s)
    chosen: list[Sample] = []
    for wanted in config.val_ids:
        wanted = str(wanted)
        if wanted not in by_id and wanted not in by_raw and wanted.isdigit():
            # 6 for 06: matched by its value (a number typed with a leading zero, 010, is read as its
            # text by casparks.config, never as YAML 1.1's octal 8)
            same = [raw for raw in by_raw if raw.isdigit() and int(raw) == int(wanted)]
            wanted = same[0] if len(same) == 1 else wanted
        if wanted in by_id:
            match = by_id[wanted]
        elif len(by_raw.get(wanted, [])) == 1:
            match = by_raw[wanted][0]
        elif wanted in by_raw:
            raise CasparksError(
                f"validation id {wanted} is in several data folders",
                fix=f"write one of {', '.join(s.id for s in by_raw[wanted])} in data.val_ids",
            )
        else:
            known = ", ".join(s.id for s in pool[:10]) + (" …" if len(pool) > 10 else "")
            folders = ", ".join(str(f) for f in dict.fromkeys(f for f, _ in groups["data_dir"]))
            raise CasparksError(f"validation id {wanted} (data.val_ids) is in none of the data.data_dir folders "
                                f"({folders})", fix=f"known ids: {known}")
        if match not in chosen:
            chosen.append(match)
    train = [s for s in pool if s not in chosen]
    val = chosen + unique["val_dir"]
    test = unique["test_dir"]
    if not train:
        raise CasparksError("no training movie left after taking out data.val_ids",
                            fix="keep at least one movie of data.data_dir for training")
    if not val:
        raise CasparksError("no validation movie", fix="set data.val_ids (ids taken out of data_dir) or data.val_dir")
    _refuse_copies({"training": train, "validation": val, "test": test})
    if config.dataset_size == "minimal":
        train, val = train[:2], val[:1]
    check_units(train + val, config)
    log.info("%d training, %d validation, %d test movies", len(train), len(val), len(test))
    return train, val, test


# ----------------------------------------------------------------------------------------------
# one movie


def movie_units(sample: Sample, config: Any, warn: bool = True) -> tuple[float, float]:
    """(pixel size µm, frame interval ms) of a training movie: its metadata's, the config's where
    it has none; a :class:`CasparksError` naming the movie where neither has them."""
    pixel, frame = resolve_units(sample.video, config.pixel_size_um, config.frame_interval_ms,
                                 names=("data.pixel_size_um", "data.frame_interval_ms"), fallback=True, warn=warn)
    missing = [name for name, value in (("pixel size", pixel), ("frame interval", frame)) if value is None]
    if missing:
        raise CasparksError(
            f"the {' and the '.join(missing)} {'are' if len(missing) > 1 else 'is'} not in the movie's metadata",
            path=sample.video, fix="set data.pixel_size_um (µm) and data.frame_interval_ms (ms) in the config",
        )
    if not (pixel > 0 and frame > 0):
        raise CasparksError("the pixel size and frame interval must be positive", path=sample.video,
                            fix="set data.pixel_size_um and data.frame_interval_ms")
    return float(pixel), float(frame)


def check_units(samples: Sequence[Sample], config: Any) -> None:
    """Every movie without units named at once: training loads the validation movies before the
    training movies, so a missing unit among the first hid those of the second."""
    problems = []
    for sample in samples:
        try:
            movie_units(sample, config, warn=False)  # the warnings come when the movie is loaded
        except CasparksError as exc:
            problems.append(exc)
    raise_together(problems, len(samples), "used",
                   fix="set data.pixel_size_um (µm) and data.frame_interval_ms (ms) in the config, or write the "
                       "units into copies with casparks prepare-labels --pixel-size UM --frame-interval MS")


def label_config(config: Any) -> LabelConfig:
    """The :class:`LabelConfig` of a DataConfig (other label options keep their defaults)."""
    return LabelConfig(
        sparks_type=config.sparks_type,
        ignore_width_um=config.ignore_width_um,
        ignore_width_ms=config.ignore_width_ms,
        only_sparks=config.only_sparks,
    )


#: folders whose peak labels were named in a warning (once per folder, not per movie)
_WARNED_PREPARED: set[str] = set()


def _not_prepared_again(config: LabelConfig, sample: Sample) -> LabelConfig:
    """``config``, with ``sparks_type`` raw for labels that ``casparks prepare-labels`` turned into
    peak balls already: preparing them again moved and shrank the balls (1 225 voxels of one
    movie changed), which training with ``sparks_type: peaks`` on such a folder did unseen."""
    from .labels import PREPARED_RECORD, prepared_sparks_type

    folder = Path(sample.class_label).parent
    if config.sparks_type != "peaks" or prepared_sparks_type(sample.class_label) != "peaks":
        return config
    if str(folder) not in _WARNED_PREPARED:
        _WARNED_PREPARED.add(str(folder))
        log.warning("%s: its sparks are peak balls already (%s): used as they are, not prepared as peaks again",
                    folder, PREPARED_RECORD)
    return replace(config, sparks_type="raw")


def _file_identity(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def label_cache_key(sample: Sample, labels: LabelConfig, pixel_size_um: float, frame_interval_ms: float,
                    factors: tuple[float, float, float] | None = None) -> str:
    """Hash of what prepared labels depend on: the files (path, size, modification time), the
    label settings, the units (the movie only for 'peaks' sparks) and any resampling."""
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "class_label": _file_identity(sample.class_label),
        "event_label": _file_identity(sample.event_label),
        "video": _file_identity(sample.video) if labels.sparks_type == "peaks" else None,
        "labels": labels.to_dict(),
        "units": [float(pixel_size_um), float(frame_interval_ms)],
        # labels cached before annotations were checked (an event of two classes; 1), and before a
        # wrapped 8-bit spark id's separate regions were read as sparks of their own (2), are made again
        "checked": 2,
    }
    if factors is not None:
        payload["resample"] = [round(f, 9) for f in factors]
    if labels.sparks_type == "peaks":  # balls cached with their cut-off pieces as sparks are made again
        payload["balls"] = 2
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _stats_cache_key(sample: Sample, factors: tuple[float, float, float] | None = None) -> str:
    payload: dict[str, Any] = {"version": CACHE_FORMAT_VERSION, "video": _file_identity(sample.video)}
    if factors is not None:  # keys of movies used as they are stay what they were
        payload["resample"] = [round(f, 9) for f in factors]
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _check_training_sampling(sample: Sample, units: tuple[float, float], target: Sequence[float]) -> None:
    """Refuse a training movie sampled more than :data:`MAX_RESAMPLE_FACTOR` times off
    ``data.resample_to``, as detection refuses it, and warn at exactly 1 µm per pixel (what a
    file without a calibration reports): a movie tagged 2 µm for 0.2 was enlarged 10× without a
    word, and the run's card then claimed a sampling its own detection refuses."""
    from .preprocess import MAX_RESAMPLE_FACTOR

    for what, unit, value, native in (("pixel size", "µm", units[0], float(target[0])),
                                      ("frame interval", "ms", units[1], float(target[1]))):
        ratio = value / native
        if not 1 / MAX_RESAMPLE_FACTOR <= ratio <= MAX_RESAMPLE_FACTOR:
            raise CasparksError(f"its {what} of {value:g} {unit} is {ratio:.3g} times data.resample_to's {native:g} "
                                f"{unit}: the units are most likely wrong", path=sample.video,
                                fix="check the file's calibration (casparks prepare-labels --pixel-size / "
                                    "--frame-interval writes copies with units)")
    if units[0] == 1.0 and float(target[0]) != 1.0:
        log.warning("%s: its pixel size is exactly 1 µm, what a file without a calibration reports; it is resampled "
                    "to %g µm: check its calibration", sample.video, float(target[0]))


class TrainingMovie:
    """One annotated movie for training: lazily read, memory-mapped, with units, stats and labels.

    Units come from the movie's metadata; ``config.pixel_size_um`` / ``config.frame_interval_ms``
    fill in where it has none (set once for many movies, they must not rescale a calibrated one: a
    warning names each movie whose own units differ, :func:`casparks.io.resolve_units`).
    With ``config.resample_to`` a movie of another sampling is resampled to it
    (``data``, ``shape``, units and labels are then those of the resampled movie; ``source_units``
    keeps the file's). Labels are prepared with :func:`label_config` and cached in ``cache_dir``
    (None: kept in memory). Pickles without open files (for DataLoader workers): the movie and the
    cached labels are reopened lazily where they are used.
    """

    def __init__(self, sample: Sample, config: Any, cache_dir: str | Path | None = None):
        self.sample = sample
        self.id = sample.id
        self.pixel_size_um, self.frame_interval_ms = movie_units(sample, config)
        from .preprocess import resample_factors

        self.source_units = (self.pixel_size_um, self.frame_interval_ms)
        target = getattr(config, "resample_to", None)
        if target:
            _check_training_sampling(sample, self.source_units, target)
        self.factors = resample_factors(self.pixel_size_um, self.frame_interval_ms, target)
        if self.factors is not None:
            self.pixel_size_um, self.frame_interval_ms = float(target[0]), float(target[1])
        self._data: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.factors is None:
            self.video_path: Path | None = sample.video
            self.source_shape: tuple[int, int, int] = tuple(self.data.shape)  # type: ignore[assignment]
        else:
            self.source_shape = tuple(read_stack(sample.video).shape)  # type: ignore[assignment]
            self.video_path = self._resample_video()
        self.shape: tuple[int, int, int] = tuple(self.data.shape)  # type: ignore[assignment]
        self.label_config = _not_prepared_again(label_config(config), sample)
        self.stats = self._load_stats()
        self.labels_path = self._prepare_labels()

    # -- lazily opened arrays (never pickled) --
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.video_path is not None:
            state["_data"] = None
        if self.labels_path is not None:
            state["_labels"] = None
        return state

    @property
    def data(self) -> np.ndarray:
        """The raw movie (resampled with ``resample_to``), T×Y×X, memory-mapped where the file allows."""
        if self._data is None:
            self._data = read_stack(self.video_path)
        return self._data

    @property
    def labels(self) -> np.ndarray:
        """Prepared training labels, T×Y×X uint8 (0-3 classes, 4 ignore), memory-mapped."""
        if self._labels is None:
            self._labels = read_stack(self.labels_path)
        return self._labels

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    def _resample_video(self) -> Path | None:
        """The resampled movie's file in the cache (None: resampled in memory, without a cache)."""
        assert self.factors is not None
        from .io import write_stack
        from .preprocess import resample_movie, resampled_shape

        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{_safe(self.id)}_video_{_stats_cache_key(self.sample, self.factors)}.tif"
            if path.is_file():
                try:
                    if tuple(read_stack(path).shape) == resampled_shape(self.source_shape, self.factors):
                        return path
                except CasparksError:
                    pass
                log.warning("%s: unusable resampled movie in the cache, resampling again", path)
        resampled = resample_movie(read_stack(self.sample.video), self.factors)
        log.info("%s: resampled from %.3g µm, %.3g ms to %.3g µm, %.3g ms", self.id, *self.source_units,
                 self.pixel_size_um, self.frame_interval_ms)
        if path is None:
            self._data = resampled
            return None
        write_stack(path, resampled, self.pixel_size_um, self.frame_interval_ms, overwrite=True)
        return path

    def _source_scale(self, stats: MovieStats) -> MovieStats:
        """A resampled (float32) movie keeps its source's 'abs_max' scale (65535 for uint16)."""
        if self.factors is None:
            return stats
        from .io import stack_dtype
        from .preprocess import with_source_scale

        return with_source_scale(stats, stack_dtype(self.sample.video))

    def _load_stats(self) -> MovieStats:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{_safe(self.id)}_stats_{_stats_cache_key(self.sample, self.factors)}.npz"
            saved_stats = None
            if path.is_file():
                try:
                    with np.load(path) as saved:
                        saved_stats = MovieStats.from_dict(saved)
                except Exception:  # a damaged cache is recomputed (only the cache: the movie's own errors pass)
                    log.warning("%s: unreadable statistics cache, recomputing", path)
            if saved_stats is not None:
                return self._source_scale(saved_stats)
        stats = self._source_scale(movie_stats(self.data))
        if path is not None:
            from .io import atomic_output

            with atomic_output(path, overwrite=True) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **stats.to_dict())
        return stats

    def _prepare_labels(self) -> Path | None:
        path = None
        if self.cache_dir is not None:
            key = label_cache_key(self.sample, self.label_config, self.pixel_size_um, self.frame_interval_ms,
                                  self.factors)
            path = self.cache_dir / f"{_safe(self.id)}_labels_{key}.tif"
            if path.is_file():
                try:
                    cached = read_stack(path)
                    if tuple(cached.shape) == self.shape:
                        return path
                except CasparksError:
                    pass
                log.warning("%s: unusable label cache, preparing again", path)
        # the label reader: an RGB export is named as labels that lost their codes (not a movie's channels)
        classes = np.asarray(read_label_stack(self.sample.class_label))
        self._check_shape(self.sample.class_label, classes.shape)
        events = None
        if self.sample.event_label is not None:
            events = np.asarray(read_label_stack(self.sample.event_label))
            self._check_shape(self.sample.event_label, events.shape)
        # what check refuses (an event of two classes) would be learnt silently: refused, as evaluate does
        problem = annotation_error(self.sample.class_label, classes, self.sample.event_label, events)
        if problem is not None:
            raise problem
        if self.factors is not None:  # nearest: codes and ids stay codes and ids
            from .preprocess import resample_movie

            classes = resample_movie(classes, self.factors, order=0)
            events = resample_movie(events, self.factors, order=0) if events is not None else None
        movie = self.data if self.label_config.sparks_type == "peaks" else None
        try:
            prepared = prepare_labels(classes, events, movie, self.pixel_size_um, self.frame_interval_ms, self.label_config)
        except ValueError as exc:
            raise CasparksError(f"cannot prepare training labels: {exc}", path=self.sample.class_label,
                                fix="check the annotation with casparks check") from None
        log.info("%s: training labels prepared (%s)", self.id, self.label_config.sparks_type)
        if path is None:
            self._labels = prepared
            return None
        write_class_label(path, prepared, self.pixel_size_um, self.frame_interval_ms, overwrite=True)
        return path

    def _check_shape(self, path: Path, shape: tuple[int, ...]) -> None:
        if tuple(shape) != self.source_shape:
            raise CasparksError(
                f"shape {tuple(shape)} differs from the movie {self.sample.video}'s {self.source_shape}",
                path=path, fix="check that the labels belong to this movie",
            )

    def __repr__(self) -> str:
        return f"TrainingMovie({self.id!r}, shape={self.shape}, {self.pixel_size_um} µm, {self.frame_interval_ms} ms)"


def load_movies(samples: Sequence[Sample], config: Any, cache_dir: str | Path | None = None) -> list[TrainingMovie]:
    """A :class:`TrainingMovie` per sample (stats and labels computed or read from the cache).

    Movies are prepared in ``config.num_workers`` threads (NumPy and SciPy release the GIL), so a
    large data set's first run does not wait for one core.
    """
    workers = max(1, min(int(getattr(config, "num_workers", 0) or 1), len(samples)))

    def load(sample: Sample) -> TrainingMovie | CasparksError:
        try:
            return TrainingMovie(sample, config, cache_dir)
        except CasparksError as exc:  # every movie's problem, not only the first one's
            return for_data_set(exc)

    if workers == 1:
        loaded = [load(s) for s in samples]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(load, samples))
    raise_together([m for m in loaded if isinstance(m, CasparksError)], len(samples), "used",
                   fix="fix them (casparks check lists every problem of a folder) or leave them out")
    return loaded  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# chunks


def chunk_starts(n_frames: int, duration: int, step: int, edge: int = 0) -> list[int]:
    """First frames of the chunks of a movie: every ``step`` frames from ``-edge``, the last one
    ending ``edge`` frames after the movie (frames outside it are mirrored); one chunk at
    ``-edge`` (padded) when the movie and its margins are shorter than ``duration``."""
    if duration < 1 or step < 1:
        raise ValueError("duration and step must be positive")
    if edge < 0:
        raise ValueError("edge must not be negative")
    span = n_frames + 2 * edge
    if span <= duration:
        return [-edge]
    starts = list(range(0, span - duration + 1, step))
    if starts[-1] + duration < span:
        starts.append(span - duration)
    return [s - edge for s in starts]


class ChunkDataset(torch.utils.data.Dataset):
    """Chunks of ``data_duration`` frames of every movie, pre-processed, augmented when ``train``.

    Items are dicts: ``image`` float32 (1, T, Y, X), ``label`` uint8 (T, Y, X) with codes 0-3 and
    4 = ignore (padding and the first/last ``ignore_frames_loss`` frames of the chunk), ``movie``
    (its id) and ``start`` (first frame). See the module docstring for augmentation and randomness.
    Labels stay uint8 until they reach the network's device (the training step widens them for
    the loss): int64 would be 8× the bytes through worker processes, pinned memory and the
    host-to-GPU copy, 2.4× the whole batch.
    """

    def __init__(self, movies: Sequence[TrainingMovie], config: Any, train: bool, seed: int = 0):
        if not movies:
            raise CasparksError("no movies for the data set", fix="check data.data_dir / data.val_ids")
        self.movies = list(movies)
        self.config = config
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.duration = int(config.data_duration)
        self.preprocessing = Preprocessing.from_data_config(config)
        #: mirrored frames before and after each movie (the loss ignores as many at a chunk's ends)
        self.edge = int(config.ignore_frames_loss)
        self.chunks: list[tuple[int, int]] = [
            (m, start)
            for m, movie in enumerate(self.movies)
            for start in chunk_starts(movie.n_frames, self.duration, int(config.data_step), self.edge)
        ]
        longest = max(movie.n_frames for movie in self.movies) + 2 * self.edge
        if self.train and longest < self.duration:  # 4× the time and 2.6× the memory per step, for padding
            log.warning("data.data_duration (%d frames) is longer than every training movie (the longest spans %d, "
                        "with its mirrored edge frames): each chunk is padded with frames the loss ignores, at the "
                        "cost of their time and memory; set data.data_duration to at most %d", self.duration,
                        longest, longest)

    def __len__(self) -> int:
        return len(self.chunks)

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of this epoch (augmentations differ between epochs)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of item ``index``: ``default_rng([seed, epoch, index])``."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def class_counts(self) -> np.ndarray:
        """Voxel counts of classes 0..3 over every movie's training labels (int64, streamed)."""
        counts = np.zeros(N_CLASSES + 1, dtype=np.int64)
        for movie in self.movies:
            labels = movie.labels
            block = max(1, (32 << 20) // max(1, int(np.prod(labels.shape[1:]))))
            for start in range(0, labels.shape[0], block):
                part = np.asarray(labels[start : start + block]).ravel()
                counts += np.bincount(np.minimum(part, N_CLASSES), minlength=N_CLASSES + 1)[: N_CLASSES + 1]
        return counts[:N_CLASSES]

    # -- items --
    def draw(self, index: int) -> dict[str, Any] | None:
        """The augmentation parameters of item ``index`` (None when not training).

        Every parameter is drawn, in a fixed order, whether its augmentation is on or not, so
        switching one augmentation never changes the draws of the others.
        """
        if not self.train:
            return None
        config, rng = self.config, self.rng(index)
        (t_low, t_high), (s_low, s_high) = config.time_rescale, config.intensity_scale
        u = rng.random(6)
        return {
            "time_factor": float(math.exp(math.log(t_low) + u[0] * (math.log(t_high) - math.log(t_low)))),
            "noise_level": float(u[1]) if config.noise_data_augmentation else 0.0,
            "noise_seed": int(rng.integers(2**63)),
            "scale": float(math.exp(math.log(s_low) + u[2] * (math.log(s_high) - math.log(s_low)))),
            "offset": float(2.0 * u[3] - 1.0) * float(config.intensity_offset),
            "flip_y": bool(config.flip_y and u[4] < 0.5),
            "flip_x": bool(config.flip_x and u[5] < 0.5),
            # drawn last, so runs without a crop keep their earlier draws; where the crop starts,
            # as a fraction of the room it has
            "crop_y": float(rng.random()),
            "crop_x": float(rng.random()),
            # drawn after them, so runs without class-centred crops keep their earlier draws
            "crop_seed": int(rng.integers(2**32)),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            raise IndexError(index)
        m, start = self.chunks[index % len(self.chunks)]
        movie = self.movies[m]
        params = self.draw(index)
        image, label, start = self._read(movie, start, params)
        if params is not None:
            image, label = self._crop(image, label, movie, params)
            image, label = _intensity_and_flips(image, label, params)
        k = int(self.config.ignore_frames_loss)
        if k:
            label[:k] = IGNORE
            label[-k:] = IGNORE
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None]),
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.uint8)),
            "movie": movie.id,
            "start": int(start),
        }

    def _read(
        self, movie: TrainingMovie, start: int, params: dict[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Pre-processed image, label and first source frame of a chunk (noise and time rescaling applied)."""
        factor = 1.0 if params is None else params["time_factor"]
        level = 0.0 if params is None else params["noise_level"]
        n_source = self.duration if factor == 1.0 else int(math.floor((self.duration - 1) * factor)) + 2
        if start + n_source > movie.n_frames + self.edge and factor != 1.0:
            # a stretched chunk stays inside the movie and its margins where it can
            start = max(movie.n_frames + self.edge - n_source, -self.edge)
        stop = start + n_source
        settings, px, dt = self.preprocessing, movie.pixel_size_um, movie.frame_interval_ms
        if level > 0:
            context = context_frames(settings, px, dt)
            raw = read_frames(movie.data, start - context, stop + context)
            rng = np.random.default_rng(params["noise_seed"])
            sd = raw - np.float32(movie.stats.noise_offset)  # in place from here on: chunks are large
            np.maximum(sd, 0.0, out=sd)
            sd *= np.float32(level * movie.stats.noise_gain)
            np.sqrt(sd, out=sd)
            noise = rng.standard_normal(raw.shape, dtype=np.float32)
            noise *= sd
            raw += noise
            image = preprocess_frames(raw, context, context + n_source, movie.stats, px, dt, settings)
        else:
            image = preprocess_frames(movie.data, start, stop, movie.stats, px, dt, settings)
        label = np.full(image.shape, IGNORE, dtype=np.uint8)  # mirrored frames outside the movie: ignore
        first, last = max(start, 0), min(stop, movie.n_frames)
        if last > first:
            label[first - start : last - start] = movie.labels[first:last]
        if factor != 1.0:
            t = np.arange(self.duration) * factor
            lower = np.floor(t).astype(np.int64)
            weight = (t - lower).astype(np.float32)[:, None, None]
            image = (1 - weight) * image[lower] + weight * image[lower + 1]
            label = label[np.floor(t + 0.5).astype(np.int64)]  # nearest, halves up
        return image, label, start

    def _crop(
        self, image: np.ndarray, label: np.ndarray, movie: TrainingMovie, params: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``crop_size_um`` crop of a chunk (whole frames without one): at the drawn position,
        or centred on a voxel of a drawn class with ``crop_class_ratios``."""
        size = self.config.crop_size_um
        if size is None:
            return image, label
        shape = image.shape[1:]
        crop = [min(n, max(1, int(round(float(extent_um) / movie.pixel_size_um)))) for n, extent_um in zip(shape, size)]
        firsts = None
        if self.config.crop_class_ratios is not None:
            firsts = class_centred_crop(label, crop, self.config.crop_class_ratios, params["crop_seed"], self.edge)
        if firsts is None:  # u < 1: at most n - crop
            firsts = [int(u * (n - c + 1)) for n, c, u in zip(shape, crop, (params["crop_y"], params["crop_x"]))]
        region = (slice(None),) + tuple(slice(first, first + c) for first, c in zip(firsts, crop))
        return image[region], label[region]

    def __repr__(self) -> str:
        return f"ChunkDataset({len(self.movies)} movies, {len(self)} chunks, train={self.train})"


def class_centred_crop(label: np.ndarray, crop: Sequence[int], ratios: Sequence[float], seed: int,
                       edge: int = 0) -> list[int] | None:
    """First row and column of a ``crop``-sized (Y, X) window centred on a voxel of a class drawn
    with ``ratios`` (background, sparks, waves, puffs) among the classes in ``label``'s frames
    ``edge:-edge`` (those the loss sees), by MONAI's ``generate_label_classes_crop_centers`` (the
    rule of ``RandCropByLabelClasses``; a centre near the border moves inwards). The crop keeps
    every frame, so a class counts at a pixel if any of those frames holds it. None when no class
    of positive weight is present (the caller then crops at a uniform position)."""
    from monai.transforms.utils import generate_label_classes_crop_centers

    seen = label[edge : label.shape[0] - edge] if edge and label.shape[0] > 2 * edge else label
    indices = [np.flatnonzero((seen == code).any(axis=0)) for code in range(N_CLASSES)]
    weights = [float(w) if len(i) else 0.0 for w, i in zip(ratios, indices)]
    if not sum(weights) > 0:
        return None
    (centre,) = generate_label_classes_crop_centers(
        list(crop), 1, seen.shape[1:], indices, weights, rand_state=np.random.RandomState(seed % 2**32), warn=False
    )
    return [int(c) - int(k) // 2 for c, k in zip(centre, crop)]


def collate_chunks(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch of chunks from movies of any frame size, padded at the bottom/right to the largest
    height and width in the batch, so data sets that mix microscopes (or ``resample_to`` movies of
    several fields of view) train together. Images are reflect-padded as detection pads a narrow
    frame (zeros, a black band, would also enter the batch-norm statistics); labels are padded
    with ignore (4), so the padding never counts in the loss."""
    height = max(int(item["image"].shape[-2]) for item in items)
    width = max(int(item["image"].shape[-1]) for item in items)
    images, labels = [], []
    for item in items:
        dy, dx = height - item["image"].shape[-2], width - item["image"].shape[-1]
        image = item["image"]
        if dy or dx:
            image = torch.from_numpy(pad_frames(image[0].numpy(), height, width))[None]
        images.append(image)
        labels.append(torch.nn.functional.pad(item["label"], (0, dx, 0, dy), value=IGNORE))
    return {
        "image": torch.stack(images),
        "label": torch.stack(labels),
        "movie": [item["movie"] for item in items],
        "start": torch.tensor([int(item["start"]) for item in items]),
    }


def _intensity_and_flips(image: np.ndarray, label: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if params["scale"] != 1.0 or params["offset"] != 0.0:
        image = image * np.float32(params["scale"]) + np.float32(params["offset"])
    if params["flip_y"]:
        image, label = image[:, ::-1], label[:, ::-1]
    if params["flip_x"]:
        image, label = image[:, :, ::-1], label[:, :, ::-1]
    return image, label

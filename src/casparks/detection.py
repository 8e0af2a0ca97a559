"""Detection: a movie in, every spark, puff and wave out, separated and measured.

One pass per movie, data flowing one way:

1. **read** the movie with its units (:func:`casparks.io.read_movie`);
2. **resample** it to the model's native sampling when its pixel size or frame interval differ
   by more than 2 % (linear interpolation, :func:`scipy.ndimage.zoom`); the probabilities are
   resampled back, so every output has the input's shape and units;
3. **predict** class probabilities in overlapping time windows with Gaussian blending
   (:func:`casparks.inference.predict_movie`, the same pre-processing as training), under
   ``torch.inference_mode`` and bfloat16 autocast where the processor has native bf16
   (AVX-512 BF16/AMX CPUs, CUDA GPUs), else float32;
4. **post-process** probabilities into classes and instances (:mod:`casparks.postprocess`),
   with the model card's calibrated settings unless overridden;
5. **measure** every event (:mod:`casparks.measure`) and the event frequency per class.

:func:`detect` returns a frozen :class:`Detection`; :func:`detect_files` runs a list of movies
and writes, per movie, ``<stem>_class_label.tif`` (uint8, original codes),
``<stem>_event_label.tif`` (uint16, uint32 beyond 65 535 events), ``<stem>_events.csv`` and
``<stem>_detection.json`` (model, settings, timings, counts, frequencies), optionally
``<stem>_probabilities.tif`` (float32, T frames × 4 channels: background, spark, wave, puff;
:func:`casparks.io.write_probabilities`). Every file is written atomically, and nothing is written for a movie
whose outputs exist unless ``overwrite``: all targets are checked before the first movie runs.
Steps 4-5 and the writing of one movie run in a second thread while step 3 runs on the next
(``pipeline``), so the network does not wait for single-threaded CPU work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .classes import CLASS_NAMES, CODE_NAMES
from .errors import CasparksError, is_number, raise_together, reject_unknown_keys
from .io import MOVIE_SUFFIXES, UNIT_MISMATCH_TOLERANCE, Movie, movie_fingerprint, movie_stem, refuse_folders
from .measure import MeasureConfig
from .models import DEFAULT_MODEL, ModelInfo, at_step, resolve_model
from .paths import home_path
from .postprocess import PostprocessConfig, PostprocessError
from .projects import is_project_file, project_error

if TYPE_CHECKING:
    from .darklevel import DarkLevel

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = ("_class_label.tif", "_event_label.tif", "_events.csv", "_detection.json")
PROBABILITIES_SUFFIX = "_probabilities.tif"
SUMMARY_SUFFIX = "_detection.json"

__all__ = ["Detection", "DetectSettings", "Detector", "detect", "detect_files", "find_detections", "load_detector",
           "read_detection", "read_summary", "write_detection"]


@dataclass(frozen=True)
class DetectSettings:
    """How detection runs. None means: the model card's value, else the default named."""

    #: frames per inference window (None: the card's, else 256)
    window_frames: int | None = None
    #: fraction of a window shared with the next (None: the card's, else 0.25)
    overlap: float | None = None
    #: mirrored frames added before and after the movie, so that its first and last frames do
    #: not fall on a window's edge frames, which training left out of the loss (None: the
    #: model's ``data.ignore_frames_loss``, else 0)
    edge_frames: int | None = None
    batch_size: int = 1
    #: largest (y, x) field in pixels (at the model's sampling) run at once; larger frames are cut
    #: into overlapping tiles with Gaussian blending, so memory does not grow with the frame size
    #: (as few tiles as this size needs, each as small as that count allows: a 160-row frame runs
    #: as two 96-row tiles, not two of 128). "auto": frames of up to 128 × 512 = 65 536 pixels run
    #: whole, whatever their shape (a 256 × 256 px cell is not cut), larger ones in tiles of at
    #: most 128 × 512 (None: whole frames always)
    tile_yx: tuple[int, int] | str | None = "auto"
    #: fraction of a tile shared with its neighbour in y and x
    tile_overlap: float = 0.25
    #: "auto" (bf16 where the processor has it natively, else 32), "bf16" or "32"
    precision: str = "auto"
    #: resample movies of other samplings to the model's native sampling
    resample: bool = True
    #: before resampling, average a movie sampled finer than any of the model's training movies
    #: (card ``trained_sampling``) over as many frames or pixels as span the finest of them
    #: (:func:`casparks.preprocess.averaging_widths`): resampled as it is, it keeps one frame's noise
    average_fine_sampling: bool = True
    #: movies longer than this (plus two margins) are processed in segments of this many frames,
    #: so memory stays flat in the movie's length (None: always whole); the network's frames, at
    #: the model's sampling, so that the re-read margins cost alike at every frame interval
    segment_frames: int | None = 1000
    #: context on each side of a segment (ms); events longer than this may be cut at segment ends
    segment_margin_ms: float = 2000.0
    #: post-processing overrides (merged over the model card's calibrated values)
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def __post_init__(self) -> None:
        # wrong types are one clear line here, not an AttributeError deep inside detection after
        # the network has run (a dict for measure=, a string for window_frames=)
        for f in dataclasses.fields(self):  # NumPy scalars and 0-d arrays as the Python values they hold
            object.__setattr__(self, f.name, _plain(getattr(self, f.name)))
        if isinstance(self.tile_yx, np.ndarray):
            object.__setattr__(self, "tile_yx", tuple(self.tile_yx.tolist()))
        for name, minimum, optional in (("window_frames", 8, True), ("batch_size", 1, False),
                                        ("edge_frames", 0, True), ("segment_frames", 16, True)):
            object.__setattr__(self, name, _whole_number(name, getattr(self, name), minimum, optional))
        for name, optional in (("overlap", True), ("tile_overlap", False)):
            value = getattr(self, name)
            if not ((optional and value is None) or (is_number(value) and 0 <= value < 1)):
                raise CasparksError(f"{_named(name)} must be a fraction in [0, 1){' (or None)' if optional else ''}, "
                                    f"got {value!r}", fix=f"set {_named(name)} to a number such as 0.25")
        if self.tile_yx is not None and self.tile_yx != "auto":
            from .preprocess import MIN_FRAME_PX

            sizes = self.tile_yx if isinstance(self.tile_yx, Sequence) and not isinstance(self.tile_yx, str) else ()
            if len(sizes) != 2 or not all(_is_whole(v) and v >= MIN_FRAME_PX for v in sizes):
                # smaller tiles lose the field the network needs (64 × 128 px tiles already made a
                # false puff on a 128 × 256 px movie that whole frames did not; 96 × 192 did not)
                raise CasparksError(f"{_named('tile_yx')} must be two sizes of at least {MIN_FRAME_PX} px ('auto' or "
                                    f"None), got {self.tile_yx!r}", fix="use 'auto' (the default) or tiles of 128 × 512 px "
                                    "where memory allows")
            object.__setattr__(self, "tile_yx", (int(sizes[0]), int(sizes[1])))
        if not (is_number(self.segment_margin_ms) and self.segment_margin_ms >= 0):
            raise CasparksError(f"segment_margin_ms must be a non-negative number of ms, got {self.segment_margin_ms!r}",
                                fix="set segment_margin_ms to, e.g., 2000")
        if self.precision not in ("auto", "bf16", "32"):
            raise CasparksError(f"precision must be auto, bf16 or 32, got {self.precision!r}", fix="use auto")
        if not (isinstance(self.resample, bool) or self.resample in (0, 1)):
            raise CasparksError(f"resample must be True or False, got {self.resample!r}", fix="pass a boolean")
        object.__setattr__(self, "resample", bool(self.resample))
        try:  # a mapping, or (key, value) pairs, as dict() takes them
            object.__setattr__(self, "postprocess", dict(self.postprocess))
        except (TypeError, ValueError):
            raise CasparksError(f"postprocess must be a mapping of post-processing options, got "
                                f"{self.postprocess!r}", fix="pass, e.g., postprocess={'event_threshold': 0.8}") from None
        if isinstance(self.measure, Mapping):  # a plain dict of measure options is read as such
            object.__setattr__(self, "measure", MeasureConfig.from_dict(self.measure))
        elif not isinstance(self.measure, MeasureConfig):
            raise CasparksError(f"measure must be a MeasureConfig or a mapping of its options, got {self.measure!r}",
                                fix="pass, e.g., measure={'offset_adu': 0}")


def _plain(value: Any) -> Any:
    """A NumPy scalar or 0-d array as the Python value it holds; anything else as it is."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def _is_whole(value: Any) -> bool:
    """An int (not a bool), or a float with a whole value (64.0), NumPy's included."""
    value = _plain(value)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


#: the command-line flag of each setting that has one, named beside it in errors (a command-line
#: user was told to "set window_frames" and never saw --window)
_FLAGS = {"window_frames": "--window", "overlap": "--overlap", "tile_yx": "--tile", "edge_frames": "--edge-frames",
          "precision": "--precision"}


def _named(name: str) -> str:
    """A setting's name with its command-line flag: 'window_frames (--window)'."""
    return f"{name} ({_FLAGS[name]})" if name in _FLAGS else name


def _whole_number(name: str, value: Any, minimum: int, optional: bool) -> int | None:
    """``value`` as an int if it is a whole number ≥ ``minimum`` (or None where allowed)."""
    if value is None and optional:
        return None
    if not _is_whole(value) or value < minimum:
        raise CasparksError(f"{_named(name)} must be a whole number of at least {minimum}"
                            f"{' (or None)' if optional else ''}, got {value!r}",
                            fix=f"set {_named(name)} to a whole number ≥ {minimum}")
    return int(value)


#: the rule for what a movie's frequencies are per: the cell found in the movie
#: (:func:`casparks.measure.cell_mask`), else the field (most events peak outside the cell found);
#: each movie's summary records which it was (``Detection.frequency_per``)
FREQUENCY_PER = "cell"

#: the model a summary records for labels measured without a network (``casparks measure``)
LABELS_MODEL = "labels"


@dataclass(frozen=True, eq=False)
class Detection:
    """Everything found in one movie (arrays have the movie's T×Y×X shape).

    Frozen: its fields cannot be reassigned. Its arrays and tables are not copied (read back by
    :func:`read_detection`, the arrays are read-only): change a copy and ``dataclasses.replace``,
    so that ``counts`` and the written files stay those of one detection; to keep some of the
    events, :meth:`select_events` takes the others out of the labels and frequencies too."""

    name: str
    source: Path | None
    pixel_size_um: float
    frame_interval_ms: float
    class_label: np.ndarray
    event_label: np.ndarray
    events: pd.DataFrame
    frequency: pd.DataFrame
    event_threshold: float
    model: str
    settings: dict[str, Any]
    timings_s: dict[str, float]
    probabilities: np.ndarray | None = None
    #: the dark level ``offset_adu: auto`` read from the movie (:meth:`DarkLevel.to_dict`), else None
    dark_level: dict[str, Any] | None = None
    #: the channel of a multi-channel file the movie was read from (None: one channel)
    channel: int | None = None
    #: :func:`casparks.io.movie_fingerprint` of the movie detected (None in summaries written before it)
    movie_fingerprint: str | None = None
    #: what the frequencies are per: "cell", or "field" where the cell found was not the events'
    frequency_per: str = FREQUENCY_PER
    #: the cell found spans more of y than of x: its per 100 µm frequencies are per its short axis
    #: (False in summaries written before it was recorded)
    cell_along_y: bool = False
    #: labels measured without a network (``casparks measure``): the files they came from
    #: (``{"class_label": path, "event_label": path or None}``); None for a detection
    labels: dict[str, Any] | None = None

    def __repr__(self) -> str:
        """One line: name, size, units, counts, threshold, model (the arrays and tables printed 123
        lines, 22 000 characters with the probabilities)."""
        from .classes import format_counts
        from .io import sampling_text

        sampling = sampling_text(self.class_label.shape, self.pixel_size_um, self.frame_interval_ms)
        source = ("labels measured, no model" if self.model == LABELS_MODEL
                  else f"event_threshold {self.event_threshold:g}, model {self.model!r}")
        return (f"Detection({self.name!r}, {sampling}: {format_counts(self.counts)}; {source}"
                f"{', with probabilities' if self.probabilities is not None else ''})")

    @property
    def counts(self) -> dict[str, int]:
        """Number of events per class name."""
        from .classes import count_classes

        return count_classes(self.events["class"] if len(self.events) else ())

    def select_events(self, keep: Any) -> Detection:
        """This detection with only the events ``keep`` selects: a boolean mask over the rows of
        :attr:`events` (``found.events.snr > 10``) or a list of their ids. The others leave the
        labels too (their voxels become background); the events left are numbered 1..K in the
        order they had, and the counts and frequencies are theirs. Why: a table filtered alone and
        put back with ``dataclasses.replace`` was written with the labels and frequencies of all
        the events (15 sparks in the table, 20 in the labels and in the frequencies)."""
        from .io import instance_dtype
        from .measure import event_frequency, frequency_cell_size

        ids = self.events["id"].to_numpy(dtype=np.int64) if len(self.events) else np.zeros(0, np.int64)
        mask = self._selected_rows(keep, ids)
        kept = ids[mask]
        old = np.asarray(self.event_label)
        renumber = _renumbering(old, ids, kept)
        event_label = renumber(old).astype(instance_dtype(kept.size))
        class_label = np.where((old > 0) & (event_label == 0), 0, np.asarray(self.class_label)).astype(np.uint8)
        events = self.events[mask].copy()
        events["id"] = renumber(kept)
        events = events.reset_index(drop=True)
        cell_size = frequency_cell_size(self.frequency)
        frequency = event_frequency(events, class_label.shape, self.pixel_size_um, self.frame_interval_ms,
                                    cell_size=cell_size)
        return dataclasses.replace(self, class_label=class_label, event_label=event_label, events=events,
                                   frequency=frequency, frequency_per=self.frequency_per if cell_size else "field")

    def _selected_rows(self, keep: Any, ids: np.ndarray) -> np.ndarray:
        """:meth:`select_events`' ``keep`` as a boolean mask over the table's rows: a Series is read
        by its index, as ``events[mask]`` reads it (a sorted table's mask had kept other rows)."""
        nullable = str(getattr(keep, "dtype", "")) == "boolean"  # pandas' True/False/NA
        if (isinstance(keep, pd.Series) and keep.dtype.kind == "b") or nullable:
            if isinstance(keep, pd.Series):
                if not keep.index.equals(self.events.index):
                    if not set(self.events.index) <= set(keep.index):
                        raise CasparksError(f"select_events: the mask's index is not that of the events of {self.name!r}",
                                            fix="build the mask from its events table, e.g. found.events.snr > 5")
                    keep = keep.reindex(self.events.index)
            if pd.isna(pd.Series(keep)).any():
                raise CasparksError("select_events: the mask has missing values", fix="fill them, e.g. mask.fillna(False)")
            keep = pd.Series(keep).to_numpy(dtype=bool)
        mask = np.asarray(keep)
        if mask.dtype == bool:
            if mask.shape != ids.shape:
                raise CasparksError(f"select_events: the mask has {mask.size} values for the {ids.size} events of "
                                    f"{self.name!r}", fix="give one True/False per row of its events table")
            return mask
        wanted = np.asarray(mask).ravel()
        if wanted.size and (wanted.dtype.kind not in "iuf" or not np.all(np.mod(wanted.astype(float), 1) == 0)):
            raise CasparksError(f"select_events: ids are whole numbers, got {wanted[:3].tolist()}",
                                fix="give ids from its events table's id column, or a True/False mask")
        unknown = sorted(set(wanted.astype(np.int64).tolist()) - set(ids.tolist()))
        if unknown:
            raise CasparksError(f"select_events: {self.name!r} has no event with id {unknown[0]}",
                                fix="give ids from its events table's id column")
        return np.isin(ids, wanted.astype(np.int64))

    def summary(self) -> dict[str, Any]:
        """The JSON summary: input, model, settings, threshold, counts, frequencies, timings."""
        return {
            "movie": str(self.source) if self.source else self.name,
            **({"channel": self.channel} if self.channel is not None else {}),
            **({"movie_fingerprint": self.movie_fingerprint} if self.movie_fingerprint else {}),
            "shape_tyx": list(self.class_label.shape),
            "pixel_size_um": self.pixel_size_um,
            "frame_interval_ms": self.frame_interval_ms,
            "model": self.model,
            "settings": self.settings,
            "event_threshold": self.event_threshold,
            **({"dark_level": self.dark_level} if self.dark_level is not None else {}),
            # what the frequencies are divided by ("field" in summaries written before it was recorded)
            "frequency_per": self.frequency_per,
            "cell_along_y": self.cell_along_y,
            **({"labels": self.labels} if self.labels is not None else {}),
            "counts": self.counts,
            "frequency": self.frequency.to_dict(orient="records"),
            "timings_s": self.timings_s,
        }


def _warn_calibrated_elsewhere(info: ModelInfo, step: int) -> None:
    """Warn where the card's thresholds were calibrated on another step's weights than these (a
    run's earlier checkpoint, or a run trained on after its calibration): they are the other
    weights' best, not these'."""
    record = info.card.get("calibration")
    try:  # a hand-written card's note is no record to compare
        calibrated = int(record["model_step"]) if isinstance(record, Mapping) and "model_step" in record else None
    except (TypeError, ValueError):
        calibrated = None
    # by step, not by the recorded checksum: a run's last.ckpt and its step checkpoint of the same
    # weights are different files
    if calibrated is not None and calibrated != int(step):
        log.warning("%s: its card's post-processing was calibrated on the weights of step %d, not on these of step "
                    "%d: calibrate them (casparks calibrate MODEL --val DIR --write-card)",
                    info.name, calibrated, int(step))


def _cell_along_y(cell: np.ndarray, name: str, pixel_size_um: float) -> bool:
    """Whether the cell found spans more of y than of x, with a warning: its per 100 µm
    frequencies are per its extent along x, its short axis (the report's page says so too)."""
    rows, columns = int(cell.any(axis=1).sum()), int(cell.any(axis=0).sum())
    if rows <= columns:
        return False
    log.warning("%s: the cell found spans more of y (%.0f µm) than of x (%.0f µm): events per 100 µm are per "
                "its extent along x, the long axis of a cell lying along the scan; rotate the movie so the "
                "cell lies along x, or compare the per 1000 µm² frequencies", name, rows * pixel_size_um,
                columns * pixel_size_um)
    return True


class Detector:
    """A loaded model ready to detect: network on its device, card, settings. Reuse it for many movies."""

    def __init__(self, info: ModelInfo, device: str = "auto", settings: DetectSettings | None = None):
        import torch

        from .nn import for_inference
        from .training import load_checkpoint

        self.settings = _checked_settings(settings)
        self.device = _device(device)
        loaded = load_checkpoint(info.checkpoint, map_location=self.device)
        #: a run's last.ckpt is named after its step (<run>-step_0000450), which the file alone fixes
        self.info = at_step(info, loaded.step)
        # channels-last 3-D activations run oneDNN's fast convolutions: 1.5–2.2× on this CPU
        # (benchmarks/results/detect.md); on GPUs not measured yet, so left as trained
        self.channels_last = self.device.type == "cpu"
        memory_format = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        # batch norms folded into the convolutions, ReLUs in place: ~30 % faster on this CPU
        self.network = for_inference(loaded.network).to(memory_format=memory_format)
        self.preprocessing = loaded.preprocessing
        self.training_config = loaded.config
        self.step = loaded.step
        #: the weights' identity wherever the file lies (two runs' model.ckpt of one step are not one model)
        self.checkpoint_sha256 = _file_sha256(info.checkpoint)[:16]
        card = info.card
        #: the model's own window: a longer one given is cut to the movie, not below this
        self.model_window_frames = int(card.get("window_frames") or 256)
        self.window_frames = int(self.settings.window_frames or self.model_window_frames)
        #: the model's own overlap and edge frames (the card's, the training's): what its card's thresholds hold for
        self.model_overlap = float(card.get("overlap", 0.25))
        self.overlap = float(self.settings.overlap if self.settings.overlap is not None else self.model_overlap)
        trained_edge = getattr(getattr(self.training_config, "data", None), "ignore_frames_loss", 0) or 0
        self.model_edge_frames = int(trained_edge)
        #: the shortest window (and movie) the network reads as it was trained: half its training chunk
        self.min_context_frames = int(getattr(getattr(self.training_config, "data", None), "data_duration", 0) or 0) // 2
        if self.window_frames < self.min_context_frames:
            log.warning("a window of %d frames is under half the %d-frame chunks %s was trained on: a wave's "
                        "front loses its context (expect it split into false sparks); use %d frames or more",
                        self.window_frames, 2 * self.min_context_frames, info.name, self.min_context_frames)
        self.edge_frames = int(self.settings.edge_frames if self.settings.edge_frames is not None else trained_edge)
        values = dict(card.get("postprocess") or {})
        try:  # a mistake in the user's own settings is theirs, not the model card's
            reject_unknown_keys({f.name for f in dataclasses.fields(PostprocessConfig)}, self.settings.postprocess,
                                "post-processing option", PostprocessError)
        except PostprocessError as exc:
            raise PostprocessError(f"--set (DetectSettings.postprocess): {exc.what}", fix=exc.fix) from None
        card_values = dict(values)
        values.update(self.settings.postprocess)
        try:
            self.postprocess = PostprocessConfig.from_dict(values)
        except PostprocessError as exc:
            try:  # the card's values alone are fine: the mistake came with the user's settings
                PostprocessConfig.from_dict(card_values)
            except PostprocessError:
                card_file = info.checkpoint.with_suffix(".yaml")
                raise PostprocessError(f"post-processing settings: {exc.what}", fix=exc.fix,
                                       path=card_file if card_file.is_file() else None) from None
            raise PostprocessError(f"--set (DetectSettings.postprocess): {exc.what}", fix=exc.fix) from None
        self.autocast_dtype = _autocast_dtype(self.settings.precision, self.device)
        self._torch = torch
        resample_to = getattr(self.training_config.data, "resample_to", None) if self.training_config else None
        #: (µm, ms) movies are resampled to: the card's, else the sampling the model was trained at
        #: (``data.resample_to`` of its training config), else None (movies are used as they are)
        self.native_sampling: tuple[float, float] | None = info.native_sampling or (
            (float(resample_to[0]), float(resample_to[1])) if resample_to else None)

    def describe(self, movie: Movie | None = None) -> dict[str, Any]:
        """Settings as recorded in each movie's summary; with ``movie``, also how it is read
        (``averaged_tyx``: :meth:`_averaging`'s widths, None where it is not averaged)."""
        averaged = self._averaging(movie) if movie is not None else None
        return {
            "model": self.info.name,
            "checkpoint": str(self.info.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "model_step": self.step,
            "device": str(self.device),
            "precision": "bf16" if self.autocast_dtype is not None else "32",
            "channels_last": self.channels_last,
            "window_frames": self.window_frames,
            "overlap": self.overlap,
            "edge_frames": self.edge_frames,
            "tile_yx": (list(self.settings.tile_yx) if isinstance(self.settings.tile_yx, tuple)
                        else self.settings.tile_yx),
            "tile_overlap": self.settings.tile_overlap,
            "native_sampling": list(self.native_sampling) if self.native_sampling else None,
            "resample": self.settings.resample,
            "average_fine_sampling": self.settings.average_fine_sampling,
            "segment_frames": self.settings.segment_frames,
            "segment_margin_ms": self.settings.segment_margin_ms,
            "postprocess": self.postprocess.to_dict(),
            "measure": self.settings.measure.to_dict(),
            **({"averaged_tyx": [round(w, 6) for w in averaged] if averaged else None} if movie is not None else {}),
        }

    def probabilities(self, movie: Movie, progress: Callable[[int, int], None] | None = None,
                      stats: Any = None, check: bool = True) -> np.ndarray:
        """(4, T, Y, X) float32 class probabilities of ``movie``, in the movie's own sampling.

        ``stats``: the normalisation statistics to use (those of the whole movie when ``movie``
        is a segment of it, as the network reads it: resampled where it is resampled,
        :func:`casparks.preprocess.resampled_stats`); None computes them from ``movie``.
        """
        from .preprocess import movie_stats, resample_movie, resample_probabilities, with_source_scale

        data = np.asarray(movie.data)
        if check:
            _check_values(data, movie)
        factors = self._resample_factors(movie)
        source_dtype = data.dtype
        px, dt = movie.pixel_size_um, movie.frame_interval_ms
        if factors is not None:
            average = self._averaging(movie)
            data = resample_movie(data, factors, average=average)
            px, dt = self.native_sampling
            log.info("%s: %sresampled by (t, y, x) × %s to %.3g µm, %.3g ms", movie.name,
                     f"averaged over (t, y, x) {tuple(round(w, 2) for w in average)} samples and " if average else "",
                     tuple(round(f, 3) for f in factors), px, dt)
        probs = self._network(data, stats if stats is not None else with_source_scale(movie_stats(data), source_dtype),
                              px, dt, progress)
        if factors is not None:
            probs = resample_probabilities(probs, movie.shape)
        return probs

    def _network(self, data: np.ndarray, stats: Any, px: float, dt: float,
                 progress: Callable[[int, int], None] | None) -> np.ndarray:
        """(4, T, Y, X) probabilities of ``data`` as the network reads it (already resampled)."""
        from .inference import predict_movie

        torch = self._torch
        context = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                   else contextlib.nullcontext())
        with context:
            return predict_movie(
                self.network, data, self.preprocessing, stats, px, dt, self.window_frames,
                overlap=self.overlap, device=self.device, batch_size=self.settings.batch_size, progress=progress,
                tile_yx=self.settings.tile_yx, tile_overlap=self.settings.tile_overlap,
                channels_last=self.channels_last, edge_frames=self.edge_frames,
                least_window=self.model_window_frames,
            )

    def _segment_probabilities(self, movie: Movie, lo: int, hi: int, progress: Callable[[int, int], None] | None,
                               stats: Any) -> np.ndarray:
        """(4, hi − lo, Y, X) probabilities of frames [lo, hi) of ``movie``. A resampled movie's
        segment is resampled on the whole movie's grid of network frames, from the first on the
        window grid at or before it (:meth:`_segments`), and back alike: a segment zoomed on its
        own fell up to half a frame between the whole movie's (p moved by up to 0.3 at 10 ms)."""
        from .preprocess import ResampledFrames, resample_probabilities, resampled_shape

        factors = self._resample_factors(movie)
        if factors is None:
            return self.probabilities(self._segment(movie, lo, hi), progress, stats, check=False)
        n = movie.shape[0]
        shape = resampled_shape(movie.shape, factors)
        scale, step = shape[0] / n, self._window_step()
        j0 = int(math.floor((lo + 0.5) * scale - 0.5 + 1e-9)) // step * step if lo > 0 else 0
        j1 = min(shape[0], int(math.floor((hi - 0.5) * scale - 0.5)) + 2)
        data = ResampledFrames(movie.data, factors, repair=True, average=self._averaging(movie))[j0:j1]  # repaired
        probs = self._network(data, stats, *self.native_sampling, progress)
        back = np.clip((np.arange(lo, hi) + 0.5) * scale - 0.5, 0, shape[0] - 1) - j0  # network frames
        return resample_probabilities(probs, (hi - lo, *movie.shape[1:]), at_t=back)

    def _resample_factors(self, movie: Movie) -> tuple[float, float, float] | None:
        from .preprocess import resample_factors

        if not self.settings.resample:
            return None
        return resample_factors(movie.pixel_size_um, movie.frame_interval_ms, self.native_sampling)

    def _averaging(self, movie: Movie) -> tuple[float, float, float] | None:
        """(t, y, x) running-mean widths that bring ``movie``, before it is resampled, from a sampling
        finer than the model's finest training movies to the finest of them
        (:func:`casparks.preprocess.averaging_widths`), else None: within the training range, with
        ``settings.average_fine_sampling`` off, or unresampled, the movie is read as it is."""
        from .preprocess import averaging_widths

        trained = self.info.card.get("trained_sampling") or {}
        px, dt = trained.get("pixel_size_um"), trained.get("frame_interval_ms")
        if not (self.settings.average_fine_sampling and self._resample_factors(movie) is not None and px and dt):
            return None
        return averaging_widths(movie.pixel_size_um, movie.frame_interval_ms, (float(min(px)), float(min(dt))))

    def detect(self, movie: Movie | str | Path | np.ndarray, save_probabilities: bool = False,
               progress: Callable[[int, int], None] | bool | None = None, *, pixel_size_um: float | None = None,
               frame_interval_ms: float | None = None, channel: int | None = None) -> Detection:
        """Detect, separate and measure the events of one movie (long movies in segments).

        ``movie`` as for :func:`detect`: a :class:`~casparks.io.Movie`, a TIFF path, or a T×Y×X
        array with its units. ``progress``: called with (windows done, windows in all) as the
        network reads, or True for a progress bar.
        """
        _check_progress(progress)
        movie = _as_movie(movie, pixel_size_um, frame_interval_ms, channel)
        with _window_bar(progress, movie.name) as update:
            return self.begin(movie, save_probabilities, update)()

    def begin(self, movie: Movie, save_probabilities: bool = False,
              progress: Callable[[int, int], None] | None = None) -> Callable[[], Detection]:
        """Run the network on ``movie`` now and return the rest of :meth:`detect` (post-processing
        and measurements, on the CPU) as a function, so that a folder run can finish one movie
        while the network reads the next (:func:`detect_files`). A movie long enough for segments
        is detected whole here; its function only hands the result over."""
        start = time.perf_counter()
        check_sampling(movie, self.info, averaged=self._averaging(movie))
        _check_offset(movie.data, self.settings.measure.offset_adu, movie)
        trained_dt = self.native_sampling[1] if self.native_sampling else movie.frame_interval_ms
        context_ms = self.min_context_frames * trained_dt
        if movie.duration_ms < context_ms:
            log.warning("%s: %.0f ms long, under half the %.0f ms chunks %s was trained on: expect a wave or a puff "
                        "cut short to be taken for sparks", movie.name, movie.duration_ms, 2 * context_ms,
                        self.info.name)
        segments = self._segments(movie)
        if len(segments) > 1:
            parts = self._detect_segments(movie, segments, save_probabilities, progress)
            detection = self._detection(movie, parts, time.perf_counter() - start, save_probabilities)
            return lambda: detection
        mark = time.perf_counter()
        probs = self.probabilities(movie, progress)
        inference = time.perf_counter() - mark
        before = mark - start

        def finish() -> Detection:
            mark = time.perf_counter()
            parts = self._finish_part(movie, probs, {"inference": inference}, keep=save_probabilities)
            # the time this movie took, not the time it waited for the previous one to finish
            elapsed = before + inference + time.perf_counter() - mark
            return self._detection(movie, parts, elapsed, save_probabilities)

        return finish

    def _detection(self, movie: Movie, parts: tuple, elapsed: float, save_probabilities: bool) -> Detection:
        class_label, event_label, events, threshold, probs, timings = parts
        return assemble_detection(movie, class_label, event_label, events, offset_adu=self.settings.measure.offset_adu,
                                  model=self.info.name, settings=self.describe(movie), event_threshold=float(threshold),
                                  timings=timings, elapsed_s=elapsed,
                                  probabilities=probs if save_probabilities else None)

    def _window_step(self) -> int:
        """Frames from one window's start to the next (the network's frames)."""
        return max(1, int(round(self.window_frames * (1 - self.overlap))))

    def _segments(self, movie: Movie) -> list[tuple[int, int, int, int]]:
        """(lo, core_start, core_end, hi) frames of each segment; one segment for short movies.

        Sizes count the network's frames (the movie's, resampled where it is), and segments
        start on the whole movie's window grid there (:meth:`_segment_probabilities`): a
        segment's windows are the whole movie's windows, so its probabilities are the same
        (away from its outer margins). Counted in the movie's own frames, a 10 ms movie's
        segments fell between the windows (labels differed in 107 frames) and a 1 ms movie's
        cores were 1 s against 2 s margins (the network read the movie 4.6 times).
        """
        n = movie.shape[0]
        size = self.settings.segment_frames
        factors = self._resample_factors(movie)
        # network frames per movie frame: the whole movie's own zoom (resampled_shape rounds it)
        scale = 1.0 if factors is None else max(1, int(round(n * factors[0]))) / n
        margin = int(math.ceil(self.settings.segment_margin_ms * scale / movie.frame_interval_ms))
        if size is None or n * scale <= size + 2 * margin:
            return [(0, 0, n, n)]
        step = self._window_step()
        size, margin = int(math.ceil(size / step)) * step, int(math.ceil(margin / step)) * step

        def first(j: int) -> int:  # the first movie frame read from network frames j and later only
            return min(n, max(0, int(math.ceil((j + 0.5) / scale - 0.5 - 1e-9))))

        def end(j: int) -> int:  # the movie frames read from network frames before j only end here
            return min(n, max(0, int(math.floor((j - 0.5) / scale - 0.5 + 1e-9)) + 1))

        total = int(math.ceil(n * scale))
        starts = list(range(0, total, size))
        if len(starts) > 1 and total - starts[-1] < step:  # a last core under a window step: the one before takes
            starts.pop()                                    # it (a whole network pass for a few frames before)
        bounds = [first(a) for a in starts[1:]]
        bounds = [0, *bounds, n]
        # the last core runs to the movie's end: read one segment size on, as before, the frames of a
        # core joined to it were never read with no margin; every segment reads at least its core
        ends = [*starts[1:], total]
        return [(min(lo, first(a - margin)), lo, hi, max(hi, end(e + margin)))
                for a, e, lo, hi in zip(starts, ends, bounds, bounds[1:]) if lo < hi]

    def _finish_part(self, movie: Movie, probs: np.ndarray, timings: dict[str, float], keep: bool) -> tuple:
        """Post-processing → measurements of one movie or segment, from its probabilities."""
        from .measure import measure_events
        from .postprocess import postprocess

        mark = time.perf_counter()
        result = postprocess(probs, self.postprocess, movie.pixel_size_um, movie.frame_interval_ms, movie=movie.data)
        timings["postprocess"] = time.perf_counter() - mark
        mark = time.perf_counter()
        events = measure_events(movie, result.class_label, result.event_label, movie.pixel_size_um,
                                movie.frame_interval_ms, probabilities=probs, config=self.settings.measure)
        timings["measure"] = time.perf_counter() - mark
        return result.class_label, result.event_label, events, result.event_threshold, (probs if keep else None), timings

    def _detect_segments(self, movie: Movie, segments: Sequence[tuple[int, int, int, int]], keep: bool,
                         progress: Any) -> tuple:
        """Detect segment by segment with context margins; an event belongs to the segment whose
        core holds its first frame, or, where that segment saw it cut and dropped it, to the next
        that sees it from its start (:func:`_taken_events`); a voxel is painted once, so none is
        counted twice; ids are renumbered in onset order over the whole movie.

        Two passes: the network and the post-processing of every segment make the movie's labels;
        then each segment is measured on those labels (an event's tail cut from a segment's own
        labels at its margin would have entered its baseline) with one dark level read on the
        whole movie, so that every amplitude is on one scale. Memory: the labels, one segment."""
        from dataclasses import replace

        from scipy import ndimage

        from .measure import empty_table, measure_events, movie_dark_level, warn_dark_level
        from .postprocess import postprocess
        from .preprocess import movie_stats, resampled_stats

        n = movie.shape[0]
        px, dt = movie.pixel_size_um, movie.frame_interval_ms
        _check_values(np.asarray(movie.data), movie)
        # streaming: the whole movie's normalisation, as training; of the resampled movie where
        # the network reads it resampled
        factors = self._resample_factors(movie)
        stats = (movie_stats(movie.data) if factors is None
                 else resampled_stats(movie.data, factors, average=self._averaging(movie)))
        class_label = np.zeros(movie.shape, dtype=np.uint8)
        event_label = np.zeros(movie.shape, dtype=np.uint16)  # widened to uint32 past 65 535 events
        probs_all = np.zeros((4, *movie.shape), dtype=np.float32) if keep else None
        owners, codes, confidence = [], [], []  # per id painted: segment, class, confidence
        timings = {"inference": 0.0, "postprocess": 0.0, "measure": 0.0}
        post, before = self.postprocess, 0
        if post.event_threshold == "otsu":  # one threshold for the whole movie, as in one piece
            mark = time.perf_counter()
            post = replace(post, event_threshold=self._segments_otsu(movie, segments, stats, progress))
            timings["inference"] += time.perf_counter() - mark
            before = len(segments)
        for i, (lo, a, b, hi) in enumerate(segments):
            part = self._segment(movie, lo, hi)
            update = _part_progress(progress, before + i, before + len(segments))
            mark = time.perf_counter()
            probs = self._segment_probabilities(movie, lo, hi, update, stats)
            timings["inference"] += time.perf_counter() - mark
            mark = time.perf_counter()
            result = postprocess(probs, post, px, dt, movie=part.data)
            timings["postprocess"] += time.perf_counter() - mark
            if probs_all is not None:
                probs_all[:, a:b] = probs[:, a - lo : b - lo]
            events_lab = result.event_label
            taken = _taken_events(events_lab, event_label[lo:hi], lo, a, b, segments[i - 1][3] if i else None)
            if taken.size == 0:
                continue
            next_id = len(codes) + 1
            if next_id + taken.size - 1 > np.iinfo(event_label.dtype).max:
                event_label = event_label.astype(np.uint32)
            mapping = np.zeros(int(events_lab.max()) + 1, dtype=event_label.dtype)
            mapping[taken] = np.arange(next_id, next_id + taken.size, dtype=event_label.dtype)
            # the confidence (mean event probability) from this segment's probabilities, as measure_events gives it
            background = ndimage.mean(probs[0], labels=events_lab, index=taken)
            confidence.extend((1.0 - np.asarray(background, dtype=np.float64)).tolist())
            codes.extend(result.event_classes[taken - 1].tolist())
            owners.extend([i] * taken.size)
            new_ids = mapping[events_lab]
            target = event_label[lo:hi]
            free = (new_ids > 0) & (target == 0)  # an overlap with an earlier segment's event keeps the earlier one
            target[free] = new_ids[free]
            class_label[lo:hi][free] = result.class_label[free]
            del probs, result, events_lab, new_ids
        new_id = _onset_ids(event_label, np.array(codes, dtype=np.uint8))
        _relabel(event_label, new_id)
        owners, ids = np.array(owners, dtype=np.int64), new_id[1:]
        confidence = {k: c for k, c in zip(ids.tolist(), confidence) if k}

        mark = time.perf_counter()
        config = self.settings.measure
        dark = None
        if config.offset_adu == "auto" and ids.any():  # as in one piece: no events, nothing measured
            dark = movie_dark_level(movie, class_label, event_label, px, dt, segments, config, warn=False)
            config = replace(config, offset_adu=dark.adu if dark.found else 0.0)
        tables = []
        for i, (lo, _, _, hi) in enumerate(segments):
            owned = ids[(owners == i) & (ids > 0)]
            if not owned.size:
                continue
            table = measure_events(self._segment(movie, lo, hi), class_label[lo:hi], event_label[lo:hi], px, dt,
                                   config=config)
            rows = table[table["id"].isin(owned)].copy()
            rows.attrs = dict(table.attrs)
            for column in ("start_ms", "peak_ms", "end_ms"):
                rows[column] = rows[column] + lo * dt
            rows["confidence"] = rows["id"].map(confidence).astype(float)
            tables.append(rows)
        timings["measure"] = time.perf_counter() - mark
        # an event a segment adopted starts before the last ones of the segment before it
        events = pd.concat(tables).sort_values("id", ignore_index=True) if tables else empty_table()
        resting = [t.attrs["resting_adu"] for t in tables if "resting_adu" in t.attrs]
        if dark is not None:  # warned about once, knowing whether it is also uncertain
            dark = warn_dark_level(dark, float(np.median(resting)) if resting else math.nan, movie.name)
        events.attrs = {} if dark is None else {
            "dark_level": {**dark.to_dict(), **({"resting_adu": float(np.median(resting))} if resting else {})}}
        log.info("%s: %d frames in %d segments", movie.name, n, len(segments))
        return class_label, event_label, events, float(post.event_threshold), probs_all, timings

    def _segments_otsu(self, movie: Movie, segments: Sequence[tuple[int, int, int, int]], stats: Any,
                       progress: Any) -> float:
        """Otsu's threshold of the whole movie's event probabilities, from the voxels one piece
        samples, read over the segments' cores in a first pass of the network: each segment's own
        threshold (0.20-0.27 against the movie's 0.26) made 42 events of one piece's 39, and the
        summary gave their mean. The network reads the movie twice; memory stays one segment's."""
        from .postprocess import otsu_counts, otsu_step, otsu_threshold

        log.info("%s: Otsu's threshold over %d segments: the network reads the movie twice (a fixed "
                 "--threshold reads it once)", movie.name, len(segments))
        frame = int(np.prod(movie.shape[1:]))
        step = otsu_step(movie.shape[0] * frame)
        counts = 0
        for i, (lo, a, b, hi) in enumerate(segments):
            probs = self._segment_probabilities(movie, lo, hi, _part_progress(progress, i, 2 * len(segments)), stats)
            # the core's voxels among every step-th of the whole movie
            sample = probs[0, a - lo : b - lo].reshape(-1)[(-a * frame) % step :: step]
            counts = counts + otsu_counts(np.subtract(np.float32(1.0), sample, dtype=np.float32))
            del probs, sample
        return otsu_threshold(counts, float(self.postprocess.otsu_min), float(self.postprocess.otsu_max))

    @staticmethod
    def _segment(movie: Movie, lo: int, hi: int) -> Movie:
        return Movie(movie.data[lo:hi], movie.pixel_size_um, movie.frame_interval_ms, name=movie.name,
                     source=movie.source, channel=movie.channel)


def assemble_detection(movie: Movie, class_label: np.ndarray, event_label: np.ndarray, events: pd.DataFrame, *,
                       offset_adu: float | str, model: str, settings: dict[str, Any], event_threshold: float,
                       timings: dict[str, float], elapsed_s: float = 0.0,
                       probabilities: np.ndarray | None = None, labels: dict[str, Any] | None = None) -> Detection:
    """A movie's :class:`Detection` from its labels and measured events: the dark level used, the
    cell (frequencies per 100 µm of the cell and per 1000 µm² of it, not of the field) and its
    warnings. Shared by the network's detections and :func:`casparks.labelled.measure_labels`
    (labels a person drew or corrected), so that both say and record the same."""
    from .darklevel import DarkLevel, significant
    from .measure import (cell_mask, cell_resting_adu, event_frequency, resting_image, warn_dark_level,
                          warn_implausible_amplitudes)

    mark = time.perf_counter()
    offset, dark_level = _offset(movie, events, offset_adu)
    resting = resting_image(movie, offset)
    cell = cell_mask(resting, movie.pixel_size_um)
    if isinstance(dark_level, DarkLevel):  # read here, for a movie without events: flagged here
        resting_adu = significant(cell_resting_adu(resting, movie.pixel_size_um, cell))
        # one warning with every reason, as for a movie with events (a failed reading was told nothing)
        dark_level = {**warn_dark_level(dark_level, resting_adu, movie.name).to_dict(), "resting_adu": resting_adu}
    warn_implausible_amplitudes(events, offset, movie.name)
    outside = _peaks_outside(events, cell, movie.pixel_size_um)
    if outside > len(events) / 2:  # events are in the cell: this is not the cell (debris, a neighbour)
        log.warning("%s: %d of %d events peak outside the cell found in the resting image (%.0f %% of the "
                    "field): frequencies are per the field instead", movie.name, outside, len(events),
                    100 * cell.mean())
        cell = None
    elif outside >= max(OUTSIDE_WARNING_EVENTS, OUTSIDE_WARNING_FRACTION * len(events)):
        log.warning("%s: %d of %d events peak outside the cell found in the resting image (%.0f %% of the "
                    "field): a second cell, or events in the background; the frequencies count them against "
                    "the cell found", movie.name, outside, len(events), 100 * cell.mean())
    along_y = cell is not None and _cell_along_y(cell, movie.name, movie.pixel_size_um)
    frequency = event_frequency(events, class_label.shape, movie.pixel_size_um, movie.frame_interval_ms,
                                cell_mask=cell)
    timings["total"] = elapsed_s + time.perf_counter() - mark
    return Detection(  # the movie's absolute path: readers elsewhere find it (report, napari)
        name=movie.name, source=Path(movie.source).absolute() if movie.source else None,
        pixel_size_um=movie.pixel_size_um,
        frame_interval_ms=movie.frame_interval_ms, class_label=class_label,
        event_label=event_label, events=events, frequency=frequency,
        event_threshold=event_threshold, model=model, settings=settings,
        timings_s={k: round(v, 3) for k, v in timings.items()},
        probabilities=probabilities,
        dark_level=dark_level,
        channel=movie.channel,
        movie_fingerprint=movie_fingerprint(movie.data),
        frequency_per="field" if cell is None else "cell",
        cell_along_y=along_y,
        labels=labels,
    )


def _offset(movie: Movie, events: pd.DataFrame, given: float | str) -> tuple[float, dict[str, Any] | DarkLevel | None]:
    """The dark level the measurements used (0 where it could not be read) and how it was read
    (None where it was given): the one read with the events, or, for a movie without events
    (none was measured), read here from all of it (a :class:`DarkLevel`), for the cell and the
    summary (it was left out)."""
    from .darklevel import estimate_dark_level

    if given != "auto":
        return float(given), None
    level = events.attrs.get("dark_level")
    if level is None and not len(events):
        read = estimate_dark_level(movie.data)
        return (read.adu if read.found else 0.0), read
    adu = (level or {}).get("adu")
    return (float(adu) if adu is not None and math.isfinite(float(adu)) else 0.0), level


def load_detector(model: str | Path | None = DEFAULT_MODEL, device: str = "auto",
                  settings: DetectSettings | None = None, warn_calibration: bool = True) -> Detector:
    """Load a model (bundled name, checkpoint file or run folder) for :meth:`Detector.detect`.

    ``warn_calibration``: warn where its card was calibrated on another step's weights (calibrate,
    which is about to choose them anew, does not)."""
    detector = Detector(resolve_model(model), device, settings)
    if warn_calibration:
        _warn_calibrated_elsewhere(detector.info, detector.step)
    return detector


def detect(
    movie: Movie | str | Path | np.ndarray,
    model: str | Path | Detector | None = DEFAULT_MODEL,
    *,
    pixel_size_um: float | None = None,
    frame_interval_ms: float | None = None,
    device: str = "auto",
    settings: DetectSettings | None = None,
    save_probabilities: bool = False,
    channel: int | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
) -> Detection:
    """Find, separate, classify and measure the events of one movie.

    ``movie``: a :class:`~casparks.io.Movie`, a TIFF path, or a T×Y×X array (then
    ``pixel_size_um`` and ``frame_interval_ms`` are required). ``model``: a bundled model's
    name (``casparks models``), a checkpoint, a run folder, or a loaded :class:`Detector`.
    ``progress``: a function of (windows done, windows in all), or True for a progress bar.
    """
    _check_progress(progress)
    if isinstance(model, Detector) and (settings is not None or device != "auto"):
        raise CasparksError("settings= and device= are fixed when a Detector is loaded; here they would be ignored",
                            fix="pass them to load_detector(model, device, settings), or give the model by name")
    movie = _as_movie(movie, pixel_size_um, frame_interval_ms, channel)
    detector = model if isinstance(model, Detector) else load_detector(model, device, settings)
    return detector.detect(movie, save_probabilities=save_probabilities, progress=progress)


#: what to do about a folder where a result file goes
FOLDER_FIX = "remove or rename it, or choose another --out folder"


def output_paths(out_dir: str | Path, stem: str, probabilities: bool = False) -> dict[str, Path]:
    """The files :func:`write_detection` writes for a movie of stem ``stem``."""
    out_dir = Path(out_dir)
    names = {"class_label": "_class_label.tif", "event_label": "_event_label.tif", "events": "_events.csv",
             "summary": SUMMARY_SUFFIX}
    if probabilities:
        names["probabilities"] = PROBABILITIES_SUFFIX
    return {key: out_dir / f"{stem}{suffix}" for key, suffix in names.items()}


#: ids below this are counted and looked up through tables as long as the largest id; above it
#: (a hand-edited uint32 label) through sorting, as such a table would take GBs
_ID_TABLE_LIMIT = 1 << 20


def _label_ids(label: np.ndarray) -> np.ndarray:
    """The ids an instance label holds (0 among them where it has background), ascending."""
    if int(label.max(initial=0)) < _ID_TABLE_LIMIT:
        return np.flatnonzero(np.bincount(label.ravel()))
    return np.unique(label)


def _renumbering(label: np.ndarray, ids: np.ndarray, kept: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function taking ids of ``label`` or ``ids`` to 1..K for ``kept`` (in their order of id), 0
    for the others: a lookup table, or a sorted search for ids beyond :data:`_ID_TABLE_LIMIT`."""
    top = max(int(label.max(initial=0)), int(ids.max(initial=0)))
    if top < _ID_TABLE_LIMIT:
        table = np.zeros(top + 1, dtype=np.int64)
        table[np.sort(kept)] = np.arange(1, kept.size + 1)
        return lambda values: table[values]
    present = np.union1d(np.union1d(ids, _label_ids(label)), [0])
    new = np.zeros(present.size, dtype=np.int64)
    new[np.searchsorted(present, np.sort(kept))] = np.arange(1, kept.size + 1)
    return lambda values: new[np.searchsorted(present, values)]


def _refuse_labels_without_rows(detection: Detection) -> None:
    """Refuse a detection whose event label holds events its table has no row for: a table
    filtered alone (``dataclasses.replace(found, events=found.events[...])``) was written beside
    the labels and frequencies of every event, and evaluate, report and read_movies each counted
    other events."""
    if "id" not in detection.events:
        return
    ids = pd.to_numeric(detection.events["id"], errors="coerce").dropna().to_numpy(dtype=np.int64)
    labels = np.asarray(detection.event_label)
    if labels.dtype.kind not in "ui":  # a float label from an edit: its ids as whole numbers
        labels = labels.astype(np.int64)
    top = int(labels.max(initial=0))
    if ids.size == top and np.array_equal(np.sort(ids), np.arange(1, top + 1)):
        return
    present = _label_ids(labels)
    missing = np.setdiff1d(present[present > 0], ids)
    if missing.size:
        shown = ", ".join(map(str, missing[:5].tolist())) + (", ..." if missing.size > 5 else "")
        raise CasparksError(f"the event label of {detection.name!r} holds {missing.size} event(s) its events table "
                            f"has no row for (ids {shown}): written, the files would disagree",
                            fix="keep events with detection.select_events(mask), which takes the others out of the "
                                "labels and the frequencies too")


def write_detection(detection: Detection, out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write a detection's files (each atomically); returns them by kind.

    Probabilities, when kept, go to one float32 ImageJ hyperstack of T frames × 4 channels
    (background, spark, wave, puff) with the movie's units (:func:`casparks.io.write_probabilities`).
    """
    from .io import write_class_label, write_csv, write_event_label, write_json, write_probabilities

    if not detection.name or detection.name in (".", "..") or any(sep in detection.name for sep in ("/", "\\")):
        raise CasparksError(f"the movie's name {detection.name!r} is not a file name: its results would be written "
                            "elsewhere than the output folder", fix="name the movie without '/' or '\\'")
    paths = output_paths(out_dir, detection.name, detection.probabilities is not None)
    refuse_folders(output_paths(out_dir, detection.name, detection.probabilities is not None or overwrite).values(),
                   FOLDER_FIX)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise CasparksError("exists already", path=existing[0], fix="choose another output or pass --overwrite "
                                                                    "(Python: overwrite=True) to replace it")
    labels = np.asarray(detection.class_label)
    codes = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)) if labels.dtype == np.uint8 else np.unique(labels)
    unknown = sorted(set(codes.tolist()) - set(CODE_NAMES))  # an edited class label was written with code 9
    if unknown:
        raise CasparksError(f"the detection of {detection.name!r} holds class codes {unknown}, which the format "
                            "does not have (0 background, 1 spark, 2 wave, 3 puff, 4 ignore)",
                            fix="correct its class label before writing it")
    if "class" in detection.events:  # as read_events_table refuses them (an event measured on ignore voxels)
        others = sorted(set(detection.events["class"].dropna().astype(str)) - set(CLASS_NAMES.values()))
        if others:
            raise CasparksError(f"the events table of {detection.name!r} holds events of class {others[0]!r}, none "
                                "of spark, wave, puff", fix="leave those rows out (or measure the events again on "
                                                            "labels of those three classes) before writing it")
    _refuse_labels_without_rows(detection)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    # every file is written under a hidden name first and the names are moved into place together,
    # the summary last: an interruption leaves a movie's results whole or not at all (written one
    # by one, a Ctrl-C between two files left labels without a summary, which readers skip)
    staged = {key: path.with_name(f".{path.name}.staged") for key, path in paths.items()}
    px, dt = detection.pixel_size_um, detection.frame_interval_ms
    try:
        write_class_label(staged["class_label"], detection.class_label, px, dt, overwrite=True)
        write_event_label(staged["event_label"], detection.event_label, px, dt, overwrite=True)
        write_csv(staged["events"], detection.events, overwrite=True)
        if detection.probabilities is not None:
            write_probabilities(staged["probabilities"], detection.probabilities, px, dt, overwrite=True)
        summary = detection.summary()
        summary["outputs"] = {k: p.name for k, p in paths.items()}
        write_json(staged["summary"], summary, overwrite=True)
        # an earlier run's probabilities are not this detection's: they go with the files they came with
        stale = output_paths(out_dir, detection.name, True)["probabilities"]
        if overwrite and "probabilities" not in paths:
            stale.unlink(missing_ok=True)
        for key in sorted(paths, key=lambda k: k == "summary"):
            staged[key].replace(paths[key])
    except OSError as exc:  # name the result, not its hidden staged name
        final = {str(staged[key]): str(paths[key]) for key in paths}
        if exc.filename in final:
            raise OSError(exc.errno, exc.strerror or str(exc), final[exc.filename]) from exc
        raise
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return paths


def find_detections(path: str | Path) -> list[Path]:
    """The ``<stem>_detection.json`` summaries of a detection folder (or the one summary given).

    Raises a one-line error when there are none, so every reader of results fails the same way.
    """
    path = home_path(path)
    if path.is_file() and path.name.endswith(SUMMARY_SUFFIX):
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.endswith(SUMMARY_SUFFIX) and not p.name.startswith("."))
        if found:
            return found
        raise CasparksError("holds no detection results (no *_detection.json)", path=path,
                            fix="run `casparks detect MOVIE --out` into this folder first")
    if path.is_file():  # a movie or a label file given where the results are read
        kind = "a movie" if is_movie_file(path) else "not a detection's summary (*_detection.json)"
        raise CasparksError(f"is {kind}, not detection results", path=path,
                            fix="run `casparks detect MOVIE --out DIR` first and give DIR (or its *_detection.json)")
    raise CasparksError("no such detection folder or *_detection.json file", path=path, fix="check the path")


def read_summary(summary_path: str | Path) -> dict[str, Any]:
    """The content of a ``<stem>_detection.json``, after checking that it parses and that every
    file of its detection is there (one-line errors otherwise); reads no array."""
    import json

    summary_path = Path(summary_path)
    if summary_path.is_dir():
        raise CasparksError("is a folder, not a detection summary", path=summary_path,
                            fix=f"give one of its *{SUMMARY_SUFFIX} files (Python: "
                                "casparks.detection.find_detections(folder) lists them)")
    if not summary_path.exists():
        raise CasparksError("does not exist", path=summary_path,
                            fix=f"give a *{SUMMARY_SUFFIX} written by `casparks detect`")
    try:
        summary = json.loads(summary_path.read_text())
        float(summary["pixel_size_um"]), float(summary["frame_interval_ms"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CasparksError(f"is not a casparks detection summary ({type(exc).__name__}: {exc})", path=summary_path,
                            fix="point to a *_detection.json written by `casparks detect`") from None
    stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
    missing = [p.name for p in output_paths(summary_path.parent, stem).values() if not p.exists()]
    if missing:
        raise CasparksError(f"the detection of {stem!r} is incomplete: {', '.join(missing)} missing",
                            path=summary_path.parent, fix="run `casparks detect` again with --overwrite")
    return summary


def read_events_table(path: str | Path) -> pd.DataFrame:
    """A detection's ``<stem>_events.csv``, checked: it parses and has every column of the table
    (a table emptied or cut by hand is a one-line error, not a parser's traceback)."""
    from .measure import COLUMNS, LATER_COLUMNS

    path = Path(path)
    fix = "restore it, or run `casparks detect` again with --overwrite"
    try:
        events = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        _refuse_semicolons(path)
        raise CasparksError(f"the events table cannot be read ({type(exc).__name__}: {exc})", path=path,
                            fix=fix) from None
    for column in LATER_COLUMNS:  # a table written before the column existed
        if column not in events.columns:
            events.insert(min(COLUMNS.index(column), len(events.columns)), column, np.nan)
    missing = [c for c in COLUMNS if c not in events.columns]
    if missing:
        _refuse_semicolons(path)
        raise CasparksError(f"the events table lacks column(s) {', '.join(missing[:5])}"
                            f"{' …' if len(missing) > 5 else ''}", path=path, fix=fix)
    if events.empty:  # a header alone reads as text columns; give the table's own dtypes
        from .measure import empty_table

        return pd.concat([empty_table(), events.drop(columns=COLUMNS)], axis=1)
    return _checked_events(events, path, fix)


def _refuse_semicolons(path: Path) -> None:
    """Name a table a spreadsheet saved with semicolons (Excel where the decimal mark is a comma):
    its header read as one column, and the error said every column was missing."""
    with open(path, encoding="utf-8", errors="replace") as file:
        header = file.readline()
    if ";" in header and "," not in header:
        raise CasparksError("the events table is semicolon-separated (a spreadsheet's export)", path=path,
                            fix="save it as comma-separated CSV with decimal points, or run `casparks detect` again "
                                "with --overwrite")


#: what every detected event has (the measurements after them may be NaN where they failed)
_WHERE_COLUMNS = ("id", "class", "start_ms", "peak_ms", "end_ms", "duration_ms", "peak_y_um", "peak_x_um",
                  "centroid_y_um", "centroid_x_um")


def _checked_events(events: pd.DataFrame, path: Path, fix: str) -> pd.DataFrame:
    """``events`` with its measurement columns as numbers, after refusing a table edited into
    nonsense: text in a number column (figures and traces failed with a traceback, after part of
    a report was written), a class that is none of the three (its events were dropped from
    every count), a row cut short (it passed as an event without a place)."""
    from .measure import COLUMNS

    def row(index: Any) -> str:
        return f"row {int(np.flatnonzero(events.index == index)[0]) + 2}"  # the file's line: the header is 1

    known = set(CLASS_NAMES.values())
    classes = events["class"]
    unknown = classes[classes.notna() & ~classes.isin(known)]
    if len(unknown):
        raise CasparksError(f"{row(unknown.index[0])}: class {unknown.iloc[0]!r} is none of "
                            f"{', '.join(sorted(known))}", path=path, fix=fix)
    numbers = {}
    for column in COLUMNS:
        if column == "class":
            continue
        values = pd.to_numeric(events[column], errors="coerce")
        wrong = events[column].notna() & values.isna()
        if wrong.any():
            first = wrong.idxmax()
            raise CasparksError(f"{row(first)}: {column} is {str(events[column][first])!r}, not a number",
                                path=path, fix=fix)
        numbers[column] = values.astype(np.float64) if column != "id" else values
    events = events.assign(**numbers)
    missing = events[list(_WHERE_COLUMNS)].isna()
    if missing.any(axis=None):
        first = missing.any(axis=1).idxmax()
        lacking = [c for c in _WHERE_COLUMNS if missing.loc[first, c]]
        raise CasparksError(f"{row(first)} has no {', '.join(lacking)} (a row cut short?)", path=path, fix=fix)
    ids = events["id"]
    bad = (ids != np.round(ids)) | (ids < 1)
    if bad.any():
        raise CasparksError(f"{row(bad.idxmax())}: id {ids[bad.idxmax()]:g} is no whole number ≥ 1", path=path, fix=fix)
    return events.assign(id=ids.astype(np.int64))


def _detection_groups(path: Any) -> dict[str, Path] | None:
    """The groups of several detection folders given (a mapping's keys, or each folder's name for a
    list or tuple), in the order given; None for one path, read as it always was."""
    if isinstance(path, (str, os.PathLike)):
        return None
    groups: dict[str, Path] = {}
    if isinstance(path, Mapping):
        for key, folder in path.items():
            name = str(key)
            if name in groups:  # 1 and "1", or a Path and its text: one group would have replaced the other
                raise CasparksError(f"two groups named {name!r} ({groups[name]} and {folder})",
                                    fix="give each group a name of its own")
            groups[name] = Path(folder)
        fix = "give each group a name of its own, without '/'"
    elif isinstance(path, (list, tuple)):
        for folder in map(Path, path):
            summary = folder.name.endswith(SUMMARY_SUFFIX)
            name = home_path(folder.parent if summary else folder).resolve().name
            if name in groups:
                what = "detection results of one folder" if summary else "detection folders"
                raise CasparksError(f"two {what} named {name!r} ({groups[name]} and {folder}): the group "
                                    "of each is its folder's name", fix="name the groups with a mapping, e.g. "
                                    f"{{'ctrl': '{groups[name]}', 'iso': '{folder}'}}")
            groups[name] = folder
        fix = "give a mapping {group: folder} to name the groups"
    else:
        raise CasparksError(f"detection results are a folder, a *{SUMMARY_SUFFIX} file, a mapping {{group: folder}} "
                            f"or a list of folders, not {type(path).__name__}", fix="give one of those")
    if not groups:
        raise CasparksError("no detection folder given (an empty mapping or list)", fix="give at least one folder")
    for name in groups:
        if not name or "/" in name:
            raise CasparksError(f"the group name {name!r} is empty or holds '/' (movies are named 'group/stem')",
                                fix=fix)
    return groups


def read_events(path: str | Path | Mapping[str, str | Path] | Sequence[str | Path]) -> pd.DataFrame:
    """Every event of a detection folder (or of one ``<stem>_detection.json``) in one table: a
    ``movie`` column (the stem) before the events table's own columns, movies in name order.

    The tidy table statistics want (one row per event): every movie's results are checked first
    (:func:`read_summary`, :func:`read_events_table`), so a folder with one incomplete detection
    is a one-line error, not a table missing a movie. A movie without events has no row, but
    ``movie`` is categorical with every movie a category, so ``groupby("movie", observed=False)``
    counts it as 0 (a cell without sparks is data); :func:`read_movies` has one row per movie.

    Several folders, the conditions of an experiment, pool into one table: ``{"ctrl": "det_ctrl",
    "iso": "det_iso"}`` (the keys name the groups) or a list of folders (each group named after its
    folder; two folders of one name are refused). The table then starts with a categorical
    ``group`` column (the groups in the order given) and ``movie`` is ``"<group>/<stem>"``
    (``"ctrl/01_video"``), one category per movie of every group, so that the same
    ``groupby("movie", observed=False)`` counts each cell once, 0 included. (Grouping by
    ``["group", "movie"]`` with ``observed=False`` would cross every group with every movie,
    inventing cells; per-group statistics of per-cell counts start from :func:`read_movies`,
    whose ``movie`` column the counts align on.)
    """
    groups = _detection_groups(path)
    if groups is None:
        return _read_folder_events(path)
    tables, movies = [], []
    for name, folder in groups.items():
        table = _read_folder_events(folder)
        labels = [f"{name}/{stem}" for stem in table["movie"].cat.categories]
        table["movie"] = table["movie"].cat.rename_categories(labels).astype(object)
        tables.append(table.assign(group=name)[["group", *table.columns]])
        movies.extend(labels)
    found = [t for t in tables if len(t)] or tables[:1]  # empty tables would blur the dtypes of full ones
    table = pd.concat(found, ignore_index=True)
    table["group"] = pd.Categorical(table["group"], categories=list(groups))
    table["movie"] = pd.Categorical(table["movie"], categories=movies)
    return table


def _read_folder_events(path: str | Path) -> pd.DataFrame:
    """:func:`read_events` of one folder (or one summary)."""
    tables, stems = [], []
    for summary_path in find_detections(path):
        read_summary(summary_path)
        stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
        events = read_events_table(output_paths(summary_path.parent, stem)["events"])
        tables.append(events.assign(movie=stem)[["movie", *events.columns]])
        stems.append(stem)
    found = [t for t in tables if len(t)] or tables[:1]  # empty tables would blur the dtypes of full ones
    table = pd.concat(found, ignore_index=True)
    table["movie"] = pd.Categorical(table["movie"], categories=stems)
    return table


def movie_row(name: str, shape: Sequence[int], pixel_size_um: float, frame_interval_ms: float,
              frequency: pd.DataFrame, model: str | None, frequency_per: str = FREQUENCY_PER,
              cell_along_y: bool = False) -> dict[str, Any]:
    """One movie's line of a table of movies: size, the cell, counts and both frequencies per class,
    ``frequency_per``: "field" where the cell columns hold the field's size (the cell found was
    not the events'), so that per-cell statistics can leave such movies out, and ``cell_along_y``:
    the cell found spans more of y than of x, so its per 100 µm frequencies are per its short axis
    (False for summaries written before it was recorded)."""
    T, H, W = (int(n) for n in shape)
    row: dict[str, Any] = {"movie": name, "frames": T, "duration_s": T * frame_interval_ms / 1000,
                           "pixel_size_um": pixel_size_um, "frame_interval_ms": frame_interval_ms,
                           "width_um": W * pixel_size_um, "height_um": H * pixel_size_um}
    from .measure import frequency_cell_size

    records = frequency.to_dict("records") if len(frequency) else []
    size = frequency_cell_size(frequency)
    if size is not None:  # the cell the frequencies are per
        row.update(cell_length_um=size[0], cell_area_um2=size[1])
    row["frequency_per"] = frequency_per
    row["cell_along_y"] = bool(cell_along_y)
    row.update({f"{r['class']}s": int(r["count"]) for r in records})
    for unit in ("per_100um_per_s", "per_1000um2_per_s"):
        row.update({f"{r['class']}s_{unit}": float(r[unit]) for r in records if unit in r})
    row["model"] = model
    return row


def read_movies(path: str | Path | Mapping[str, str | Path] | Sequence[str | Path]) -> pd.DataFrame:
    """One row per movie of a detection folder (or one ``<stem>_detection.json``), from the
    summaries and the events tables (no array is read): :func:`movie_row`'s columns, movies in
    name order. The table of cells that per-cell statistics (frequencies, counts) start from.

    Counts and frequencies are those of the events table, per the cell the detection found, as
    ``casparks report``'s summary-movies.csv gives them: a table filtered by hand (on ``snr``)
    gives its own (the summary's 18 sparks stayed where the table held 16).

    Several folders (a mapping ``{group: folder}`` or a list of folders) give one table with a
    first, categorical ``group`` column and ``movie`` as ``"<group>/<stem>"``, as
    :func:`read_events` names them."""
    groups = _detection_groups(path)
    if groups is None:
        return _read_folder_movies(path)
    tables = []
    for name, folder in groups.items():
        table = _read_folder_movies(folder)
        tables.append(table.assign(movie=name + "/" + table["movie"], group=name)[["group", *table.columns]])
    table = pd.concat(tables, ignore_index=True)
    table["group"] = pd.Categorical(table["group"], categories=list(groups))
    return table


def _read_folder_movies(path: str | Path) -> pd.DataFrame:
    """:func:`read_movies` of one folder (or one summary)."""
    from .measure import event_frequency, frequency_cell_size

    rows = []
    for summary_path in find_detections(path):
        summary = read_summary(summary_path)
        stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
        shape = summary["shape_tyx"]
        px, dt = float(summary["pixel_size_um"]), float(summary["frame_interval_ms"])
        recorded = pd.DataFrame(summary.get("frequency") or [])
        events = read_events_table(output_paths(summary_path.parent, stem)["events"])
        frequency = event_frequency(events, tuple(shape), px, dt, cell_size=frequency_cell_size(recorded))
        rows.append(movie_row(stem, shape, px, dt, frequency, summary.get("model"),
                              str(summary.get("frequency_per", "field")), bool(summary.get("cell_along_y", False))))
    return pd.DataFrame(rows)


def check_detection(summary_path: str | Path) -> tuple[dict[str, Any], tuple[int, ...]]:
    """The summary of a written detection and its movie's shape, after checking every file it
    needs (:func:`read_summary`, label stacks of one shape, :func:`read_events_table`): what a
    reader of many detections checks for all before it writes anything. Holds no array."""
    from .io import read_stack

    summary_path = Path(summary_path)
    summary = read_summary(summary_path)
    paths = output_paths(summary_path.parent, summary_path.name[: -len(SUMMARY_SUFFIX)])
    shape = _label_shape(*(read_stack(paths[kind]).shape for kind in ("class_label", "event_label")),
                         paths["event_label"])  # memory-mapped: no pixel is read
    read_events_table(paths["events"])
    return summary, shape


def _label_shape(class_shape: tuple[int, ...], event_shape: tuple[int, ...], event_path: Path) -> tuple[int, ...]:
    """The movie's shape, where a detection's class and event labels agree on it."""
    if tuple(class_shape) != tuple(event_shape):
        raise CasparksError(f"has shape {tuple(event_shape)}, the class labels {tuple(class_shape)}", path=event_path,
                            fix="run `casparks detect` again with --overwrite")
    return tuple(class_shape)


def read_detection(summary_path: str | Path, probabilities: bool = True) -> Detection:
    """Read back what :func:`write_detection` wrote, from its ``<stem>_detection.json``.

    The labels, events table and summary must all be there (:func:`read_summary`); the
    probabilities are read only when they were saved and ``probabilities`` is True (False: a
    reader that draws none, such as the report, leaves the 4 × movie-sized stack unread).
    ``Detection.source`` is the movie path
    recorded at detection time (it may have moved since: readers check it exists before using it).
    """
    from .io import read_probabilities, read_stack

    summary_path = Path(summary_path)
    summary = read_summary(summary_path)
    stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
    pixel_size_um, frame_interval_ms = float(summary["pixel_size_um"]), float(summary["frame_interval_ms"])
    paths = output_paths(summary_path.parent, stem)
    class_label = np.asarray(read_stack(paths["class_label"]))
    event_label = np.asarray(read_stack(paths["event_label"]))
    recorded = tuple(summary.get("shape_tyx") or ())
    for kind, labels in (("class_label", class_label), ("event_label", event_label)):  # the one that differs
        if recorded and labels.shape != recorded:
            raise CasparksError(f"has shape {labels.shape}, the detection's movie {recorded}", path=paths[kind],
                                fix="run `casparks detect` again with --overwrite")
    _label_shape(class_label.shape, event_label.shape, paths["event_label"])
    events = read_events_table(paths["events"])
    probability_path = summary_path.parent / f"{stem}{PROBABILITIES_SUFFIX}"
    saved = read_probabilities(probability_path) if probabilities and probability_path.exists() else None
    movie = str(summary.get("movie", ""))
    # a project file is the source of a detection saved from the viewer on one of its movies
    source = Path(movie) if movie.lower().endswith(MOVIE_SUFFIXES) or is_project_file(movie) else None
    return Detection(
        name=stem,
        source=source,
        pixel_size_um=pixel_size_um,
        frame_interval_ms=frame_interval_ms,
        class_label=class_label,
        event_label=event_label,
        events=events,
        frequency=pd.DataFrame(summary.get("frequency", [])),
        # null where no network ran (labels measured by casparks measure) or a NaN threshold was written
        event_threshold=float(summary.get("event_threshold") if summary.get("event_threshold") is not None
                              else float("nan")),
        model=str(summary.get("model", "")),
        settings=dict(summary.get("settings", {})),
        timings_s=dict(summary.get("timings_s", {})),
        probabilities=saved,
        dark_level=summary.get("dark_level"),
        channel=summary.get("channel"),
        movie_fingerprint=summary.get("movie_fingerprint"),
        frequency_per=str(summary.get("frequency_per", "field")),
        cell_along_y=bool(summary.get("cell_along_y", False)),
        labels=summary.get("labels"),
    )


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Movie paths from files, folders (their .tif/.tiff/.lsm files that are not labels) and glob patterns."""
    import glob

    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "USO":  # paths in an array (a table's column)
        inputs = inputs.ravel().tolist()
    if isinstance(inputs, (str, Path, Movie, np.ndarray)):  # one path, not its characters ("tset": "t: no such file")
        inputs = [inputs]
    found: list[Path] = []
    stacks: list[Path] = []  # label or probability stacks named one by one (a glob the shell expanded)
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):  # an array's text was taken for a file name ("File name too long")
            kind = "a Movie" if isinstance(item, Movie) else "an array" if hasattr(item, "shape") else \
                f"{type(item).__name__} {item!r:.40}"
            raise CasparksError(f"detect_files takes the paths of movie files, folders or patterns, got {kind}",
                                fix="detect an array or a Movie with casparks.detect(), and write its files with "
                                    "casparks.write_detection(found, out_dir)")
        text = str(item)
        if not text.strip():  # an unset shell variable: Path("") is the working directory, all of whose movies ran
            raise CasparksError("an empty movie path (an unset shell variable?)",
                                fix="give the movies' files, folders or patterns")
        path = home_path(text)
        if path.is_dir():
            movies = sorted(p for p in path.iterdir() if is_movie_file(p))
            _project_files(sorted(path.iterdir()), movies, path)
            if not movies:
                raise CasparksError("holds no movies (.tif/.tiff/.lsm files other than casparks's label and probability "
                                    "stacks)", path=path, fix="give the folder, files or pattern of the movies")
            found += movies
        elif any(ch in text for ch in "*?[") and not path.is_file():  # 'Stack [1].tif' is a file
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            movies = [m for m in matches if m.is_file() and is_movie_file(m)]
            _project_files(matches, movies, text)
            if not movies:
                matched = [m for m in matches if m.is_file() and m.name.lower().endswith(MOVIE_SUFFIXES)]
                left_out = (f" ({len(matched)} label or probability stack{'s' if len(matched) > 1 else ''} it "
                            "matches are left out)") if matched else ""
                brackets = ("; brackets are pattern characters, so a folder named 'run [2]' is matched by "
                            "'run [[]2]'") if "[" in text else ""
                raise CasparksError(f"no movie matches {text!r}{left_out}",
                                    fix=f"check the pattern (quote it to let casparks expand it){brackets}")
            found += movies
        elif path.is_file():
            if path.name.lower().endswith(MOVIE_SUFFIXES) and not is_movie_file(path) and not path.name.startswith("."):
                stacks.append(path)
                continue
            found.append(path)
        else:
            raise CasparksError("no such file or folder", path=path, fix="check the path")
    _leave_out_stacks(stacks, found)
    if not found:
        raise CasparksError("no movies to process", fix="give TIFF or LSM files, folders or glob patterns")
    # one movie given twice (a file and its folder, a link and its target) is detected once; a
    # movie is named as given: a link by its own name, not its target's ("cellA.tif -> 01_video.tif")
    given: dict[Path, Path] = {}
    for p in found:
        given.setdefault(p.resolve(), Path(os.path.abspath(p)))
    unique = list(given.values())
    stems = [movie_stem(p) for p in unique]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        clash = [str(p) for p, stem in zip(unique, stems) if stem == dupes[0]]
        raise CasparksError(f"several movies are named {dupes[0]!r} ({', '.join(clash[:4])}): their outputs would "
                            "collide", fix="detect them into different --out folders")
    return unique


def detect_files(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    model: str | Path | None = DEFAULT_MODEL,
    *,
    device: str = "auto",
    settings: DetectSettings | None = None,
    pixel_size_um: float | None = None,
    frame_interval_ms: float | None = None,
    channel: int | None = None,
    save_probabilities: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    progress: bool | None = None,
    pipeline: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Detect events in every movie and write the outputs to ``out_dir`` (see the module docstring).

    Every input is checked (readable, units known, outputs absent unless ``overwrite``) before
    the model is loaded, so a mistake in the tenth file costs nothing. Returns each movie's
    summary (the content of its ``_detection.json``), not its arrays.

    ``on_result(summary)`` is called as each movie's outputs are written (a command line prints
    its line then, so an interrupted run has said which movies are done).

    ``skip_existing``: continue an interrupted folder run. A movie whose results in ``out_dir``
    are complete (its ``_detection.json``, written last, and every file it lists) is not detected
    again; its summary comes back with ``"skipped": True``. Those results must come from the same
    model, settings, units and channel (the device and the precision may differ), else nothing
    runs and the error names what differs. A movie's files without a summary are what an
    interruption left: they are replaced.

    ``pipeline``: finish each movie (post-processing, measurements, writing: single-threaded CPU
    work) in a second thread while the network reads the next one, so the network never waits
    for the CPU and a CPU's idle core gets work. It holds two movies' results instead of one. Five
    500 × 64 × 512 movies on a 2-core AVX2 CPU: 37.1-39.6 s instead of 41.5-42.8 s (6 and 2 runs),
    peak memory 1.92-2.08 GB against 1.74-1.85 GB. The outputs are the same either
    way; a long movie (segments) is finished before the next begins.
    """
    from .io import read_movie, resolve_units, stack_channels, warn_how_read

    settings = _checked_settings(settings)
    if overwrite and skip_existing:
        raise CasparksError("--overwrite and --skip-existing contradict each other",
                            fix="pass --overwrite to redo every movie, --skip-existing to detect only those not done")
    paths = expand_inputs(inputs)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CasparksError("the output path is a file, not a folder", path=out_dir, fix="choose a folder for --out")
    info = resolve_model(model)
    movies, problems = [], []
    single = []
    for p in paths:  # every input's problem at once, not one per run
        try:
            # in a folder of one- and multi-channel stacks, the channel is the multi-channel ones'
            use = None if channel is not None and len(paths) > 1 and stack_channels(p) == 1 else channel
            if use is None and channel is not None:
                single.append(p.name)
            movie = read_movie(p, pixel_size_um, frame_interval_ms, channel=use, warn=False)
            check_sampling(movie, info, warn=False)
            _check_values(movie.data, movie)  # NaN or constant: named now, not after other movies' results
            _check_offset(movie.data, settings.measure.offset_adu, movie)
            resolve_units(p, pixel_size_um, frame_interval_ms)  # given units that differ from the file's, named
            warn_how_read(movie.source, movie.data.dtype, movie.frame_interval_ms)  # signed 16-bit, z-stack slices
            movies.append(movie)
        except CasparksError as exc:
            problems.append(exc)
    raise_together(problems, len(paths), "detected", fix="fix or leave out these files; nothing was written")
    if single and len(single) == len(paths):
        raise CasparksError(f"--channel {channel}: none of the {len(paths)} movies has several channels",
                            fix="leave out --channel")
    if single:
        log.warning("--channel %d applies to the multi-channel stacks; %d movie(s) of one channel are read as they "
                    "are: %s", channel, len(single), ", ".join(single[:5]) + (" …" if len(single) > 5 else ""))
    # a stale probabilities file is removed when results are replaced: a folder there is in the way too
    refuse_folders((q for m in movies for q in output_paths(out_dir, m.name, save_probabilities or overwrite
                                                             or skip_existing).values()), FOLDER_FIX)
    complete = {m.name: _complete_summary(out_dir, m.name) for m in movies} if skip_existing else {}
    if not overwrite:
        existing = [q for m in movies if complete.get(m.name) is None
                    for q in output_paths(out_dir, m.name, save_probabilities).values() if q.exists()]
        if existing and not skip_existing:
            raise CasparksError(f"{len(existing)} result file(s) exist already, e.g. {existing[0].name}", path=out_dir,
                                fix="choose another --out folder, pass --skip-existing to detect only the movies "
                                    "without results, or --overwrite to redo them all (Python: skip_existing=True, "
                                    "overwrite=True)")
    detector = Detector(info, device, settings)
    _warn_calibrated_elsewhere(detector.info, detector.step)
    _check_writable(out_dir)  # a read-only --out was found after the network's first movie
    names = [m.name for m in movies]
    skipped = [m for m in movies if complete.get(m.name) is not None]
    if skipped:
        _check_same_detection(skipped, complete, detector, out_dir)
        if save_probabilities:
            without = [m.name for m in skipped if not output_paths(out_dir, m.name, True)["probabilities"].exists()]
            if without:
                log.warning("%d skipped movie(s) have results without probabilities: %s (pass --overwrite to redo "
                            "them with probabilities)", len(without), ", ".join(without[:5]) + (" …" if len(without) > 5 else ""))
        movies = [m for m in movies if complete.get(m.name) is None]
        log.info("%d movie(s) with complete results in %s skipped, %d to detect", len(skipped), out_dir, len(movies))
    # files an interruption left of a movie without a summary are replaced
    replace = overwrite or skip_existing

    def finish_and_write(finish: Callable[[], Detection]) -> dict[str, Any]:
        detection = finish()
        paths = write_detection(detection, out_dir, overwrite=replace)
        log.info("%s: %s in %.1f s", detection.name, detection.counts, detection.timings_s["total"])
        summary = detection.summary()
        summary["name"] = detection.name
        summary["outputs"] = {k: str(p) for k, p in paths.items()}
        return summary

    results: list[dict[str, Any]] = []
    bar = _bar(progress, len(movies))

    def done(summary: dict[str, Any]) -> None:
        results.append(summary)
        if on_result is not None:
            on_result(summary)
        if bar is not None:
            bar.n = max(bar.n, len(results) - len(skipped))
            bar.refresh()

    for movie in skipped:
        summary = dict(complete[movie.name], name=movie.name, skipped=True)
        summary["outputs"] = {k: str(out_dir / name) for k, name in (summary.get("outputs") or {}).items()}
        done(summary)

    from concurrent.futures import ThreadPoolExecutor

    # one finisher thread, and at most one movie waiting for it: two movies' results at the most
    with ThreadPoolExecutor(max_workers=1) if pipeline else contextlib.nullcontext() as finisher:
        pending = None
        try:
            for i, movie in enumerate(movies):
                window_update: Callable[[int, int], None] | None = None
                if bar is not None:
                    bar.set_description(movie.name)

                    def advance(done_windows: int, total: int, _i: int = i) -> None:
                        bar.n = max(bar.n, _i + done_windows / total)
                        bar.refresh()

                    window_update = advance
                finish = detector.begin(movie, save_probabilities=save_probabilities, progress=window_update)
                if finisher is None:
                    done(finish_and_write(finish))
                else:
                    if pending is not None:
                        done(pending.result())  # the previous movie's error, if any, stops the run here
                        pending = None
                    pending = finisher.submit(finish_and_write, finish)
                del finish  # it holds this movie's probabilities: not while the network reads the next
            if pending is not None:
                done(pending.result())
                pending = None
        except KeyboardInterrupt:
            # the movie the second thread is writing is finished (leaving the executor waits for
            # it): say so, whether the signal came during the network or while waiting for it
            if pending is not None and not pending.cancelled():
                with contextlib.suppress(Exception):
                    done(pending.result())
            raise
    if bar is not None:
        bar.close()
    order = {name: i for i, name in enumerate(names)}
    results.sort(key=lambda summary: order[summary["name"]])  # skipped movies were reported first
    reports = sorted(out_dir.glob("*report.html"))
    if reports and (overwrite or (skip_existing and movies)):  # the report shows the folder as it was
        what = "the detection these results replaced" if overwrite else "the folder without the movies just detected"
        log.warning("%s: %s shows %s; run `casparks report %s --overwrite`", out_dir, reports[0].name, what, out_dir)
    return results


# ----------------------------------------------------------------------------------------------
# helpers


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: a minority of events peaking outside the cell found is named in a warning from this many and
#: this fraction of the events (a second cell in the field, dimmer than the first, is not found)
OUTSIDE_WARNING_EVENTS = 3
OUTSIDE_WARNING_FRACTION = 0.2


def _peaks_outside(events: pd.DataFrame, cell: np.ndarray, pixel_size_um: float) -> int:
    """How many events peak outside ``cell`` (Y×X); events without a peak position are not counted."""
    if not len(events):
        return 0
    at = events[["peak_y_um", "peak_x_um"]].to_numpy(dtype=float)
    at = at[np.isfinite(at).all(axis=1)]
    rows = np.clip((at[:, 0] / pixel_size_um).astype(int), 0, cell.shape[0] - 1)
    cols = np.clip((at[:, 1] / pixel_size_um).astype(int), 0, cell.shape[1] - 1)
    return int(np.count_nonzero(~cell[rows, cols]))


def _part_progress(progress: Callable[[int, int], None] | None, k: int,
                   parts: int) -> Callable[[int, int], None] | None:
    """Progress through part ``k`` of ``parts`` alike (the network on one segment) as the whole's."""
    if progress is None:
        return None
    return lambda done, total: progress(k * total + done, parts * total)


def _taken_events(events: np.ndarray, painted: np.ndarray, lo: int, a: int, b: int,
                  previous_hi: int | None) -> np.ndarray:
    """Ids of a segment's events (labels ``events`` of frames ``lo``..) that it takes: those whose
    first frame is in its core [a, b), and those that start earlier, after its own first frame,
    that the segment before saw cut at its upper margin (they reach its last frame,
    ``previous_hi`` − 1) and left without a voxel painted (``painted``: the movie's labels there):
    a slow wave too short or small in that segment's view was dropped, and vanished. An event the
    segment before saw whole is its to keep or drop (this one sees it with less context), and one
    this segment sees cut at its own lower margin is not taken either."""
    from scipy import ndimage

    boxes = ndimage.find_objects(events)
    first = np.array([box[0].start + lo if box is not None else -1 for box in boxes], dtype=np.int64)
    last = np.array([box[0].stop - 1 + lo if box is not None else -1 for box in boxes], dtype=np.int64)
    touched = np.bincount(events[painted > 0].astype(np.intp), minlength=len(boxes) + 1)[1:] > 0
    cut_before = last >= previous_hi - 1 if previous_hi is not None else np.zeros(len(boxes), dtype=bool)
    adopted = (first > lo if lo > 0 else first >= 0) & (first < a) & cut_before & ~touched
    return np.flatnonzero(((first >= a) & (first < b)) | adopted) + 1


def _onset_ids(event_label: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The new id of each id 1..k of a segmented movie's labels (index 0: background; 0 for an id
    none of whose voxels was painted), in onset order as in one piece (first frame, top, left,
    class): an event a segment adopted may start before the last events of the segment before."""
    from scipy import ndimage

    from .postprocess import _onset_order

    boxes = ndimage.find_objects(event_label, max_label=codes.size)
    present = np.array([box is not None for box in boxes], dtype=bool)
    starts = np.array([[s.start for s in box] for box in boxes if box is not None], dtype=np.int64).reshape(-1, 3)
    _, order_id = _onset_order(codes[present], starts)
    new_id = np.zeros(codes.size + 1, dtype=np.int64)
    new_id[1:][present] = order_id[1:]
    return new_id


def _relabel(labels: np.ndarray, new_id: np.ndarray) -> None:
    """``labels`` ← ``new_id[labels]`` in place, a block of frames at a time (not a second movie of labels)."""
    if np.array_equal(new_id, np.arange(new_id.size)):
        return
    lut = new_id.astype(labels.dtype)
    block = max(1, (1 << 24) // max(1, labels[0].size))
    for t in range(0, labels.shape[0], block):
        labels[t : t + block] = lut[labels[t : t + block]]


#: the entries of a summary's settings that say how a detection ran, not what it found: they
#: may differ when an interrupted folder run continues on another machine (skip_existing)
EXECUTION_SETTINGS = ("checkpoint", "device", "precision", "channels_last")


#: settings added since summaries were first written, with the value that reproduces the
#: versions before them (a summary without the key ran so): a run continued across an upgrade
#: then differs only where a value does. Options whose default has changed since they were added
#: (measure.offset_adu: 0, then "auto") are not listed: their absence says nothing.
ADDED_SETTINGS: dict[str, Any] = {
    "postprocess.spark_rescue_threshold": None,  # session 28: the rescue, off before
    "postprocess.spark_rescue_distance_um": 1.0,
    "postprocess.spark_rescue_distance_ms": 20.0,
    "postprocess.spark_rescue_max_duration_ms": 100.0,
    "postprocess.spark_rescue_max_pixel_size_um": None,  # session 29
    "postprocess.spark_rescue_max_frame_interval_ms": None,
    "averaged_tyx": None,  # session 35: movies finer than the training movies were resampled as they were
}


def _complete_summary(out_dir: Path, stem: str) -> dict[str, Any] | None:
    """The summary of a movie's complete results in ``out_dir`` (its JSON and every file it
    lists), else None. A summary that does not parse is an error: it is not an interrupted
    write (every file is written atomically, the summary last)."""
    paths = output_paths(out_dir, stem)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        summary = read_summary(paths["summary"])
    except CasparksError as exc:
        raise CasparksError(exc.what, path=paths["summary"],
                            fix="remove it to detect the movie again, or pass --overwrite") from None
    if not all((out_dir / name).is_file() for name in (summary.get("outputs") or {}).values()):
        return None
    return summary


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (``postprocess.spark_threshold``)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def detection_differences(summary: Mapping[str, Any], detector: Detector, movie: Movie) -> list[str]:
    """What differs between the detection a written summary records and the one ``detector``
    would make of ``movie`` (model, settings, units, shape, channel), as ``key: before → now``.

    ``frequency_per`` compares the rule, not a movie's outcome: a summary that records the key at
    all was written under :data:`FREQUENCY_PER`'s rule (the cell, else the field), whichever its
    movie got; one without it, before the rule, has frequencies per the field."""
    from .io import as_json

    def record(model: Any, settings: Mapping[str, Any], px: Any, dt: Any, shape: Any, channel: Any) -> dict[str, Any]:
        kept = {k: v for k, v in (settings or {}).items() if k not in EXECUTION_SETTINGS and k != "model"}
        return _flatten(as_json({"model": model, "pixel_size_um": px, "frame_interval_ms": dt, "shape_tyx": shape,
                                 "channel": channel, "settings": kept}))

    before = record(summary.get("model"), summary.get("settings") or {}, summary.get("pixel_size_um"),
                    summary.get("frame_interval_ms"), summary.get("shape_tyx"), summary.get("channel"))
    now = record(detector.info.name, detector.describe(movie), movie.pixel_size_um, movie.frame_interval_ms,
                 list(movie.shape), movie.channel)
    before["frequency_per"] = FREQUENCY_PER if "frequency_per" in summary else "field"
    now["frequency_per"] = FREQUENCY_PER
    # a summary written before an option existed ran as the value that option keeps that behaviour at
    for key, value in ADDED_SETTINGS.items():
        before.setdefault(f"settings.{key}", value)
    if before.get("settings.tile_yx") == [128, 512] and now.get("settings.tile_yx") == "auto" \
            and _fits_old_tile(detector, movie):  # the default before session 34: the same run for such frames
        before["settings.tile_yx"] = "auto"
    for side in (before, now):  # how the movie was read (averaged_tyx) is compared, not the switch
        side.pop("settings.average_fine_sampling", None)
    differences = [f"{key.removeprefix('settings.')}: {before.get(key)!r} → {now.get(key)!r}"
                   for key in sorted(set(before) | set(now)) if not _same_value(before.get(key), now.get(key))]
    # another movie of the same name (a second group's 01_video.tif): the recorded one is still there
    recorded = Path(str(summary.get("movie", "")))
    if movie.source is not None and recorded.is_file() and recorded.resolve() != Path(movie.source).resolve():
        differences.insert(0, f"movie: {str(recorded)!r} → {str(movie.source)!r}")
    # the same file with other pixels (a movie copied over it): its results are another movie's
    elif summary.get("movie_fingerprint") and summary["movie_fingerprint"] != movie_fingerprint(movie.data):
        differences.insert(0, "the movie's pixels: not those detected (another movie under its name)")
    return differences


def _same_value(a: Any, b: Any) -> bool:
    """Equal, or numbers within float rounding (a frame interval read as 6.800000000000004 by an
    earlier version is 6.8 now)."""
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool) \
            or isinstance(b, float) and isinstance(a, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _fits_old_tile(detector: Detector, movie: Movie) -> bool:
    """Whether ``movie``'s frames, as the network reads them, fit in one 128 × 512 px tile (the
    default tiling before "auto", which runs such frames whole as it did)."""
    from .preprocess import resampled_shape

    factors = detector._resample_factors(movie)
    shape = movie.shape if factors is None else resampled_shape(movie.shape, factors)
    return shape[1] <= 128 and shape[2] <= 512


def _check_same_detection(skipped: Sequence[Movie], complete: Mapping[str, dict[str, Any]], detector: Detector,
                          out_dir: Path) -> None:
    """Refuse to continue a folder run whose finished movies were detected otherwise: one table
    of results would mix two detections without a word."""
    for movie in skipped:
        differences = detection_differences(complete[movie.name], detector, movie)
        if differences:
            shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
            hint = (" (--no-fine-averaging reads movies finer than the model's training movies as before "
                    "session 35)" if any(d.startswith("averaged_tyx: None") for d in differences) else "")
            if complete[movie.name].get("model") == LABELS_MODEL:
                raise CasparksError(f"the results of {movie.name} there were measured from labels by `casparks "
                                    "measure`, not detected", path=out_dir,
                                    fix="detect into another --out folder, or pass --overwrite to replace them")
            raise CasparksError(f"the results of {movie.name} there were detected otherwise ({shown})", path=out_dir,
                                fix=f"continue with the same model and settings{hint}, choose another --out folder, "
                                    "or pass --overwrite to redo every movie")


def _project_files(paths: Sequence[Path], movies: Sequence[Path], where: Path | str) -> None:
    """Project files (Leica LIF) among a folder's files or a pattern's matches: an error naming
    `casparks convert` where there is no movie beside them, else a warning that they are left out."""
    projects = [p for p in paths if is_project_file(p) and p.is_file() and not p.name.startswith(".")]
    if not projects:
        return
    if not movies:
        if len(projects) == 1:
            raise project_error(projects[0])
        found = f"holds {len(projects)}" if isinstance(where, Path) else f"{where!r} matches {len(projects)}"
        raise CasparksError(f"{found} project files ({projects[0].name}, …) and no TIFF movies",
                            path=where if isinstance(where, Path) else None,
                            fix=f"write their movies as TIFFs first: casparks convert {where} --out DIR")
    log.warning("%s: left out %d project file(s) (%s, …); write their movies as TIFFs with casparks convert "
                "to detect them", where, len(projects), projects[0].name)


def _leave_out_stacks(stacks: list[Path], movies: list[Path]) -> None:
    """Leave out label and probability stacks given beside their movies: an unquoted ``d/*.tif``
    that the shell expanded over an earlier run's results (the advice after an interruption
    failed so) or a data set's labels. A stack whose movie is not given is refused: it was meant
    as a movie."""
    given = {m.resolve() for m in movies}
    alone = [s for s in stacks if not any(m.resolve() in given for m in _movies_of_label(s))]
    if alone:
        raise CasparksError("is named as a label or probability stack (…_class_label.tif, …_event_label.tif, "
                            "…_probabilities.tif), not a movie", path=alone[0],
                            fix=f"give the movie it belongs to{_movie_beside(alone[0])}")
    if stacks:
        log.info("%d label or probability stack(s) given beside their movies are left out (%s)", len(stacks),
                 ", ".join(s.name for s in stacks[:3]) + (" …" if len(stacks) > 3 else ""))


def _movies_of_label(label: Path) -> list[Path]:
    """The movies beside a label or probability file that it may belong to (NN_video.tif for a
    data set's NN_class_label.tif, x.tif for a detection's x_class_label.tif)."""
    from .dataset import sample_id

    parsed = sample_id(label)
    candidates = [label.with_name(f"{parsed[0]}_video.tif")] if parsed else []
    stem = re.sub(r"_(class_label|event_label|probabilities)\.tiff?$", "", label.name, flags=re.IGNORECASE)
    candidates += [label.with_name(f"{stem}{suffix}") for suffix in MOVIE_SUFFIXES]
    return [c for c in candidates if c.is_file() and c != label]


def _movie_beside(label: Path) -> str:
    """' (NN_video.tif)' naming the movie beside a label file where there is one, else ''."""
    found = _movies_of_label(label)
    return f" ({found[0]})" if found else ""


def is_movie_file(path: Path) -> bool:
    """A .tif/.tiff/.lsm that is not one of casparks's label or probability stacks (nor a hidden file)."""
    name = path.name.lower()
    if not name.endswith(MOVIE_SUFFIXES) or name.startswith("."):
        return False
    return not any(name.endswith(s) for s in ("_class_label.tif", "_event_label.tif", "_probabilities.tif",
                                              "_class_label.tiff", "_event_label.tiff"))


def _unit(value: Any, what: str) -> float | None:
    """A unit given as a number, a NumPy scalar or text ("0.2") as a positive float (None: not given)."""
    if value is None:
        return None
    try:
        number = float(_plain(value))
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number > 0):
        raise CasparksError(f"the {what} must be a positive number, got {value!r}", fix=f"pass the {what}")
    return number


def _as_movie(movie: Any, pixel_size_um: float | None, frame_interval_ms: float | None, channel: int | None) -> Movie:
    from .io import read_movie

    if channel is not None and not (_is_whole(channel) and _plain(channel) >= 0):
        raise CasparksError(f"channel must be a channel number (0, 1, …), got {channel!r}", fix="pass, e.g., channel=1")
    channel = None if channel is None else int(_plain(channel))
    pixel_size_um = _unit(pixel_size_um, "pixel size (µm)")
    frame_interval_ms = _unit(frame_interval_ms, "frame interval (ms)")
    if isinstance(movie, (str, Path)):
        if any(c in str(movie) for c in "*?[") and not home_path(movie).exists():
            raise CasparksError(f"detect takes one movie, got the pattern {str(movie)!r}",
                                fix="use casparks.detect_files([pattern], out_dir) for a pattern or a folder")
        return read_movie(home_path(movie), pixel_size_um, frame_interval_ms, channel=channel)
    if isinstance(movie, Movie):
        if channel is not None:
            raise CasparksError(f"channel={channel} picks a channel of a multi-channel stack, but this Movie holds "
                                "one channel", fix="leave out channel=")
        units = {k: v for k, v in (("pixel_size_um", pixel_size_um), ("frame_interval_ms", frame_interval_ms))
                 if v is not None}
        for key, what, unit in (("pixel_size_um", "pixel size", "µm"), ("frame_interval_ms", "frame interval", "ms")):
            given, own = units.get(key), getattr(movie, key)
            if given is not None and not math.isclose(given, own, rel_tol=UNIT_MISMATCH_TOLERANCE):  # as for a file's
                log.warning("%s: %s %g %s (%s=) overrides the Movie's own %g %s", movie.source or movie.name, what,
                            given, unit, key, own, unit)
        if pixel_size_um is not None:
            units["pixel_size_given"] = True
        return dataclasses.replace(movie, **units) if units else movie
    if isinstance(movie, (list, tuple)) and movie and all(isinstance(m, (str, Path)) for m in movie):
        raise CasparksError(f"detect takes one movie, got a list of {len(movie)} path{'s' if len(movie) > 1 else ''}",
                            fix="use casparks.detect_files(paths, out_dir) for several movies")
    data = np.asarray(movie)
    missing = [name for name, value in (("pixel_size_um=", pixel_size_um), ("frame_interval_ms=", frame_interval_ms))
               if value is None]
    if missing:  # only what is missing: both were named where one was given
        raise CasparksError("an array carries no units", fix=f"pass {' and '.join(missing)}")
    if data.ndim == 4 and channel is not None:  # T×C×Y×X, ImageJ's order
        if data.shape[-1] <= 4 < data.shape[1]:  # channels last (T×Y×X×C): a channel of it took a row
            raise CasparksError(f"channel= picks axis 1 of a T×C×Y×X array, but the array {data.shape} looks "
                                "T×Y×X×C (channels last)", fix="pass np.moveaxis(array, -1, 1)")
        if channel >= data.shape[1]:
            raise CasparksError(f"channel={channel} does not exist: the T×C×Y×X array {data.shape} has "
                                f"{data.shape[1]} channels", fix=f"pass a channel from 0 to {data.shape[1] - 1}")
        data = data[:, channel]
    elif channel is not None:
        raise CasparksError(f"channel={channel} picks a channel of a T×C×Y×X array, got shape {data.shape}",
                            fix="leave out channel= for a T×Y×X movie")
    if data.ndim != 3:
        fix = ("pass channel= to pick the calcium channel of this T×C×Y×X array" if data.ndim == 4
               else "give a T×Y×X array (frames, rows, columns)")
        raise CasparksError(f"a movie is T×Y×X, got an array of shape {data.shape}", fix=fix)
    if data.dtype.kind not in "uif":  # as a TIFF of this type is refused (bool was detected; complex raised)
        raise CasparksError(f"the array has pixel type {data.dtype}, not an integer or float image",
                            fix="pass the calcium signal as integers or floats")
    return Movie(data, pixel_size_um, frame_interval_ms, name="movie", pixel_size_given=True)


from .preprocess import MAX_RESAMPLE_FACTOR  # noqa: E402 - one rule for detection and training


#: the fewest frames, rows and columns a movie needs: a spark lasts a few frames and spans a few
#: pixels; a 1-row stack (a line scan saved as T × 1 × X) or a 2-frame one gave 0 events quietly
MIN_MOVIE_SHAPE = (8, 8, 8)


def check_sampling(movie: Movie, info: ModelInfo, warn: bool = True,
                   averaged: tuple[float, float, float] | None = None) -> None:
    """Refuse a movie too small to hold an event (:data:`MIN_MOVIE_SHAPE`) or sampled far from
    the model (:data:`MAX_RESAMPLE_FACTOR`); warn, naming the movie, when it lies outside the
    samplings the model was trained on (card ``trained_sampling``), except along an axis sampled
    finer that is ``averaged`` into the range (:meth:`Detector._averaging`: said at info level)."""
    from .preprocess import TRAINED_RANGE_SLACK

    native = info.native_sampling
    where = movie.source or movie.name
    for size, least, what in zip(movie.shape, MIN_MOVIE_SHAPE, ("frames", "rows", "columns")):
        if size < least:
            raise CasparksError(f"has {size} {what[:-1] if size == 1 else what}; casparks detects events in x-y-t movies of at least "
                                f"{least} {what} (line scans are not supported)", path=where,
                                fix="give the whole x-y-t recording")
    checks = (("pixel size", "µm", "--pixel-size / pixel_size_um=", movie.pixel_size_um, 0),
              ("frame interval", "ms", "--frame-interval / frame_interval_ms=", movie.frame_interval_ms, 1))
    if native is not None:
        for what, unit, flag, value, axis in checks:
            ratio = value / native[axis]
            if not 1 / MAX_RESAMPLE_FACTOR <= ratio <= MAX_RESAMPLE_FACTOR:
                raise CasparksError(
                    f"its {what} of {value:g} {unit} is {ratio:.3g} times the model's {native[axis]:g} {unit}: "
                    "the units are most likely wrong",
                    path=where, fix=f"check the file's calibration, or pass {flag} in {unit}",
                )
    trained = info.card.get("trained_sampling") or {}
    if not warn:
        return
    for (what, unit, _, value, axis), key in zip(checks, ("pixel_size_um", "frame_interval_ms")):
        bounds = trained.get(key)
        if bounds and not bounds[0] / TRAINED_RANGE_SLACK <= value <= bounds[1] * TRAINED_RANGE_SLACK:
            span = f"{bounds[0]:g}" if bounds[0] == bounds[1] else f"{bounds[0]:g}-{bounds[1]:g}"
            width = (averaged[0] if axis == 1 else averaged[1]) if averaged is not None else 1.0
            if width > 1.0:  # averaged into the range before the network reads it
                log.info("%s: its %s of %g %s is finer than the %s %s the model %s was trained on: the network "
                         "reads it averaged over %.3g %s (the measurements read the movie as it is)", movie.name,
                         what, value, unit, span, unit, info.name, width * value, unit)
                continue
            # 1 µm per pixel is what an ImageJ file without a calibration reports (unit µm, 1 pixel per unit)
            hint = ("; exactly 1 µm is what a file without a calibration reports: check it, or pass --pixel-size / "
                    "pixel_size_um=") if unit == "µm" and value == 1.0 and not movie.pixel_size_given else ""
            log.warning("%s: its %s of %g %s lies outside the %s %s the model %s was trained on: expect "
                        "missed and false events%s", movie.name, what, value, unit, span, unit, info.name, hint)


def _check_values(data: np.ndarray, movie: Movie) -> None:
    """Reject movies the network cannot read: NaN/inf or constant (no contrast at all). Read in
    blocks of frames: a memory-mapped movie is not held whole (a folder run checks every movie first)."""
    if data.dtype.kind == "f":
        block = max(1, (64 << 20) // max(1, data[:1].nbytes))
        bad = sum(int(data[t:t + block].size - np.count_nonzero(np.isfinite(data[t:t + block])))
                  for t in range(0, data.shape[0], block))
        if bad:
            raise CasparksError(f"{bad} voxel(s) are NaN or infinite", path=movie.source or movie.name,
                                fix="replace them (e.g. by the neighbouring frames' values) before detection")
    step = max(1, data.shape[0] // 64)
    sample = np.asarray(data[::step])
    if float(sample.max()) == float(sample.min()) and float(data.max()) == float(data.min()):
        raise CasparksError(f"every voxel has the value {float(data.min()):g}: there is nothing to detect",
                            path=movie.source or movie.name, fix="check that this is the calcium channel")
    if data.dtype.kind in "ui" and 0 <= float(sample.min()) and float(sample.max()) <= max(CODE_NAMES) \
            and np.count_nonzero(sample) < 0.5 * sample.size:
        from .io import _warn_once

        _warn_once((str(movie.source or movie.name), "label-like values", ""),
                   "%s: its values are whole numbers from 0 to %d, mostly 0, as in a class label stack (0 "
                   "background, 1 sparks, 2 waves, 3 puffs, 4 ignore): if it is one, give the movie instead "
                   "(label stacks are told by their names, NN_class_label.tif)", movie.source or movie.name,
                   int(sample.max()))


def _check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and write a file in it (removed at once), else a one-line error."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise CasparksError(f"results cannot be written here ({exc.strerror or exc})", path=out_dir,
                            fix="choose a folder you may write to for --out") from None


def _check_offset(data: np.ndarray, offset_adu: float | str, movie: Movie) -> None:
    """Refuse a dark level given at or above the movie's resting signal: the 90th percentile of
    each pixel's median over 16 frames spread over the movie (noise and events left out; the raw
    voxels' percentile let 370 ADU pass on a cell resting at 377 at most). F0 above it would be ~0
    or negative, and every ΔF/F0 absurd (5e7 was written)."""
    if isinstance(offset_adu, str) or float(offset_adu) == 0:  # "auto": read from the noise; 0: none to take
        return
    frames = np.asarray(data[np.linspace(0, data.shape[0] - 1, min(16, data.shape[0])).round().astype(int)])
    # a signed movie's dark level may lie below 0 (auto reads it there too)
    if float(offset_adu) < 0 and (np.dtype(frames.dtype).kind == "u" or not (frames < 0).any()):
        raise CasparksError(f"the dark level given, {float(offset_adu):g} ADU, is below 0, and the movie's values "
                            "are never negative", path=movie.source or movie.name,
                            fix="give the detector's dark level (0 or more for this movie), or auto (the default) "
                                "to read it from the movie's noise")
    level = float(np.percentile(np.median(frames, axis=0), 90))
    if float(offset_adu) >= level:
        raise CasparksError(f"the dark level given, {float(offset_adu):g} ADU, is at or above the movie's resting "
                            f"signal ({level:g} ADU: the 90th percentile of its pixels' medians): every ΔF/F0 would be meaningless",
                            path=movie.source or movie.name,
                            fix="give the detector's dark level (a frame with the shutter closed), or auto (the "
                                "default) to read it from the movie's noise")


def _device(device: str) -> Any:
    import torch

    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise CasparksError(f"unknown device {device!r}", fix="use auto, cpu or cuda")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CasparksError("device cuda was asked for but PyTorch sees no CUDA GPU",
                            fix="use --device cpu (or auto), or install a CUDA build of PyTorch")
    return torch.device(device)


def _autocast_dtype(precision: str, device: Any) -> Any:
    """bfloat16 where it is native (and so faster), None (float32) otherwise.

    Asking for bf16 where the device only emulates it is refused: it is ~200x slower
    (casparks.hardware)."""
    import torch

    from .hardware import emulated_bf16_message, native_bf16

    if precision == "32":
        return None
    native = native_bf16(device.type)
    if precision == "bf16" and not native:
        raise CasparksError(f"precision bf16: {emulated_bf16_message(device.type)}",
                            fix="use --precision auto (float32 here) or 32")
    return torch.bfloat16 if native else None


def _checked_settings(settings: Any) -> DetectSettings:
    """``settings`` as given (None: the defaults); a dict of options was an AttributeError inside
    the detector, any other type is one clear error too."""
    if settings is None:
        return DetectSettings()
    if isinstance(settings, DetectSettings):
        return settings
    raise CasparksError(f"settings= takes a casparks.DetectSettings, got {type(settings).__name__} {settings!r:.40}",
                        fix="pass, e.g., settings=casparks.DetectSettings(postprocess={'event_threshold': 0.9}): "
                            "post-processing options go in postprocess=, measurement options in measure=")


def _check_progress(progress: Any) -> None:
    """Refuse a ``progress`` of :func:`detect` that is neither a function nor a bool, before the model loads."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise CasparksError(f"progress must be a function of (done, total), True or False, got {progress!r}",
                            fix="pass progress=True for a progress bar")


@contextlib.contextmanager
def _window_bar(progress: Callable[[int, int], None] | bool | None, name: str) -> Any:
    """The function :meth:`Detector.begin` calls as the network reads: ``progress`` itself, None
    for False or None, and for True that of a progress bar of the network's windows (True was
    "'bool' object is not callable", where :func:`detect_files` takes it for its bar of movies)."""
    if progress is not True:
        yield progress or None
        return
    from tqdm import tqdm

    with tqdm(total=1, desc=name, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]") as bar:
        def update(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        yield update


def _bar(progress: bool | None, total: int) -> Any:
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="movie", bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} movies [{elapsed}<{remaining}]")

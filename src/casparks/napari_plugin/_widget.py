"""Dock widgets: run detection on the open movie, and measure and save corrected labels as a training sample.

Both are thin: :class:`DetectWidget` calls :meth:`casparks.detection.Detector.detect` in a
worker thread (the viewer stays responsive; the progress callback is marshalled to the GUI
thread, and it stops the run when Cancel was clicked), turns the result into layers with
:mod:`._layers` and saves it with :func:`casparks.detection.write_detection`; :class:`SaveSampleWidget` calls
:func:`casparks.labelled.measure_labels` (in the GUI thread: about a second) and
:func:`casparks.dataset.write_sample`. User errors (:class:`~casparks.errors.CasparksError`) are
napari notifications with the fix, not tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QEvent, QObject
from superqt.utils import ensure_main_thread

from ..classes import BACKGROUND, CODE_NAMES, EVENT_CLASSES, IGNORE, format_counts
from ..dataset import MAX_SAMPLE_INDEX
from ..errors import CasparksError
from ..io import _SQUARE_TOLERANCE
from ..projects import is_project_file
from . import _layers
from ._layers import META_KEY, LayerData

if TYPE_CHECKING:
    import napari

    from ..detection import Detection, DetectSettings

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class _CloseWatcher(QObject):
    """Calls ``on_close`` when a docked widget loses its parent (napari's dock close removes the
    widget from the window without deleting it: a run in it went on, and its results replaced a
    newer panel's), and ``on_dock`` when it gets one (docked again, it works again)."""

    def __init__(self, on_close, on_dock):
        super().__init__()
        self._on_close, self._on_dock = on_close, on_dock
        self._docked = False

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange:
            if obj.parent() is not None:
                self._docked = True
                self._on_dock()
            elif self._docked:
                self._on_close()
        return False


class Cancelled(Exception):
    """Raised in the worker at the next inference window once Cancel is clicked: a function
    worker's ``quit()`` only drops its result, the detection would run on to its end."""


def _stop_if(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("detection cancelled")


def _notify_error(exc: BaseException, what: str) -> str:
    """One line in napari's notifications: the user's mistake as is, a bug with its type."""
    from napari.utils.notifications import show_error

    if isinstance(exc, CasparksError):
        message = str(exc)
    else:
        log.error("%s failed", what, exc_info=exc)
        message = f"{what} failed ({type(exc).__name__}: {exc})"
    show_error(message)
    return message


def layer_units(layer) -> tuple[float | None, float | None]:
    """(pixel size µm, frame interval ms) of a layer: casparks' metadata, else its scale when its
    units are µm and ms (a movie opened by another reader and given units by hand)."""
    info = (getattr(layer, "metadata", None) or {}).get(META_KEY) or {}
    if info.get("pixel_size_um") and info.get("frame_interval_ms"):
        return float(info["pixel_size_um"]), float(info["frame_interval_ms"])
    try:
        units = [str(u) for u in layer.units]
    except AttributeError:
        return None, None
    if len(units) == 3 and units[0] == "millisecond" and units[1] == units[2] == "micrometer":
        return float(layer.scale[1]), float(layer.scale[0])
    return None, None


#: decimals the unit boxes show (Qt's default of 2 rounded 0.1385 µm to 0.14)
UNIT_DECIMALS = 6


class _UnitBoxes:
    """A panel's pixel size and frame interval boxes (Detect's, Save training sample's): they show
    the movie layer's own units (0 where it has none) and follow them while nobody typed over them,
    so the movie layer is the one record of its units (a run with units typed in one panel gives
    the layer them, and the other panel shows them)."""

    def __init__(self):
        self.pixel_size = FloatSpinBox(label="pixel size (µm)", min=0.0, max=1000.0, step=0.01, value=0.0)
        self.frame_interval = FloatSpinBox(label="frame interval (ms)", min=0.0, max=1e6, step=0.1, value=0.0)
        for box in (self.pixel_size, self.frame_interval):  # 2 decimals made 0.1385 µm 0.14 (and 0.004 µm 0)
            box.native.setDecimals(UNIT_DECIMALS)
        #: the layer's own units, exact: used while the boxes still show them (Qt rounds what it shows)
        self._own: tuple[float | None, float | None] = (None, None)

    def fill(self, layer) -> None:
        """The layer's units in the boxes; none (0) for a movie without them, so that a movie chosen
        after another is never measured with the other's units."""
        px, dt = layer_units(layer) if layer is not None else (None, None)
        self._own = (px, dt) if px and dt else (None, None)
        self.pixel_size.value, self.frame_interval.value = (px, dt) if px and dt else (0.0, 0.0)

    def _shown(self) -> tuple[float, float]:
        return float(self.pixel_size.value), float(self.frame_interval.value)

    def _exact(self) -> list[float]:
        """The boxes' values, the layer's exact ones where the boxes show them."""
        return [own if own and abs(own - value) <= 0.5 * 10 ** -UNIT_DECIMALS else value
                for own, value in zip(self._own, self._shown())]

    def follow(self, layer) -> None:
        """Fill the boxes again from the layer where they still show what they were filled with."""
        if self._exact() == [own or 0.0 for own in self._own]:
            self.fill(layer)

    def units(self, layer) -> tuple[float, float]:
        """The units to use for ``layer``: its own, unless others were typed; a one-line error
        where there are none."""
        self.follow(layer)
        px, dt = self._exact()
        if not (px > 0 and dt > 0):
            raise CasparksError(f"{layer.name!r} has no pixel size / frame interval",
                                fix="enter them (µm, ms) in the panel's pixel size and frame interval boxes")
        return px, dt


def _give_units(image, labels, pixel_size_um: float, frame_interval_ms: float, source=None) -> None:
    """The movie layer, and its ``labels`` layers, in the frame of the units it was detected,
    measured or saved with, where it is not yet: the results shown overlay it, and the unit boxes
    show them. The movie keeps its movie id (its labels stay its own)."""
    world = _layers.frame(pixel_size_um, frame_interval_ms)
    aligned = np.allclose(image.scale, world["scale"]) and np.allclose(image.translate, world["translate"])
    if aligned and layer_units(image)[0] is not None:
        return
    image.scale, image.translate = world["scale"], world["translate"]
    image.units, image.axis_labels = world["units"], world["axis_labels"]
    info = (image.metadata or {}).get(META_KEY) or {}
    new = _layers._meta("movie", pixel_size_um, frame_interval_ms, source or info.get("source"))[META_KEY]
    if info.get("movie_id"):
        new["movie_id"] = info["movie_id"]
    image.metadata = {**(image.metadata or {}), META_KEY: new}
    for layer in labels:
        if layer is not None:
            _follow_units(layer, {**world, "metadata": _layers._meta("labels", pixel_size_um, frame_interval_ms, None)})


class _NotifyWarnings(logging.Handler):
    """casparks' warnings during a detection, as napari notifications."""

    def __init__(self, show):
        super().__init__(logging.WARNING)
        self._show = show

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._show(record.getMessage())
        except Exception:  # noqa: BLE001 - a closed viewer: the log still has it
            pass


@contextlib.contextmanager
def _warnings_shown(show):
    """casparks' warnings within the block passed to ``show`` (a GUI user never sees the terminal's log)."""
    forward = _NotifyWarnings(show)
    logger = logging.getLogger("casparks")
    logger.addHandler(forward)
    try:
        yield
    finally:
        logger.removeHandler(forward)


def _refuse_non_square(layer) -> None:
    """A layer scaled with other y and x sizes: its pixels are not square, which casparks refuses
    for files (it was detected as square, and the layer's x scale overwritten)."""
    try:
        units = [str(u) for u in layer.units]
    except AttributeError:
        return
    if len(units) == 3 and units[1] == units[2] == "micrometer":
        y, x = float(layer.scale[1]), float(layer.scale[2])
        if abs(y - x) > _SQUARE_TOLERANCE * x:  # the rule files are held to (casparks.io)
            raise CasparksError(f"layer {layer.name!r} has pixels of {y:g} × {x:g} µm, not square",
                                fix="resample the movie to square pixels first")


def _movie_id(layer) -> str:
    """A movie layer's own id (kept in its metadata): its result layers carry it, so the save
    widget never takes another movie's labels of the same shape for its own."""
    import uuid

    info = dict((layer.metadata or {}).get(META_KEY) or {})
    if not info.get("movie_id"):
        info["movie_id"] = uuid.uuid4().hex
        layer.metadata = {**(layer.metadata or {}), META_KEY: info}
    return info["movie_id"]


def _same_movie(labels, image) -> bool:
    """Whether a labels layer may belong to the movie layer: the same movie id, else the same
    source file, where both record one."""
    mine = (labels.metadata or {}).get(META_KEY) or {}
    theirs = (image.metadata or {}).get(META_KEY) or {}
    for key in ("movie_id", "source"):
        if mine.get(key) and theirs.get(key):
            return mine[key] == theirs[key]
    return True


def _layers_of(viewer, kind: str) -> list[tuple[str, Any]]:
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, cls)
            and ((layer.metadata or {}).get(META_KEY) or {}).get("kind") != "probability"]  # not a movie


def _movie_array(layer) -> np.ndarray:
    """The layer's data as a T×Y×X array, or a one-line error saying why not."""
    if getattr(layer, "multiscale", False) or getattr(layer, "rgb", False):
        raise CasparksError(f"layer {layer.name!r} is multiscale or RGB, not a T×Y×X movie",
                            fix="open the movie as a single-channel stack")
    data = layer.data
    if data.ndim != 3:
        raise CasparksError(f"layer {layer.name!r} has shape {tuple(data.shape)}, not T×Y×X",
                            fix="open a single-channel x-y-t movie (split channels first)")
    return data if isinstance(data, np.ndarray) else np.asarray(data)


def _free_name(viewer, name: str) -> str:
    """``name``, or ``name 2``, ``name 3``… whichever no layer has."""
    candidate, n = name, 1
    while candidate in viewer.layers:
        n += 1
        candidate = f"{name} {n}"
    return candidate


def _replace_layers(viewer, layer_data: list[LayerData]) -> tuple[list, list[str]]:
    """Add layers, replacing those of the same name (a second run updates the first's results),
    except labels someone edited: those stay, renamed '… (edited)', so corrections are never
    thrown away. The classes and events layers are one pair (the events' ids outline the
    classes' events): where either was edited, both stay, so that the edited classes are not
    saved with another detection's ids. Returns the added layers and the new names of the kept ones."""
    from napari.layers import Labels, Layer

    replaced = [viewer.layers[kwargs["name"]] for _, kwargs, _ in layer_data if kwargs["name"] in viewer.layers]
    labels = [layer for layer in replaced if isinstance(layer, Labels)]
    # annotations opened from their files are the user's too (they were replaced without a word)
    annotation = any(((layer.metadata or {}).get(META_KEY) or {}).get("annotation") for layer in labels)
    keep_labels = annotation or any(_layers.is_edited(layer.data, layer.metadata) for layer in labels)
    added, kept = [], []
    new_kwargs = {kwargs["name"]: kwargs for _, kwargs, _ in layer_data}
    for layer in replaced:
        if keep_labels and isinstance(layer, Labels):
            _follow_units(layer, new_kwargs[layer.name])
            layer.name = _free_name(viewer, f"{layer.name} ({'annotation' if annotation else 'edited'})")
            kept.append(layer.name)
        else:
            viewer.layers.remove(layer)
    for data, kwargs, layer_type in layer_data:
        added.append(viewer.add_layer(Layer.create(data, kwargs, layer_type)))
    return added, kept


def _follow_units(kept, kwargs: dict) -> None:
    """A kept labels layer takes the new run's scale and units, as the movie does: its voxels are
    the movie's voxels whatever the units (it kept the old scale, and lay beside the movie after a
    run with other units)."""
    for key in ("scale", "translate", "units"):
        if key in kwargs:
            setattr(kept, key, kwargs[key])
    info = {**((kept.metadata or {}).get(META_KEY) or {})}
    new = (kwargs.get("metadata") or {}).get(META_KEY) or {}
    info.update({key: new[key] for key in ("pixel_size_um", "frame_interval_ms") if key in new})
    kept.metadata = {**(kept.metadata or {}), META_KEY: info}


def _alive(widget) -> bool:
    """Whether a dock widget's Qt objects still exist (closing the viewer deletes them while a
    detection may still report)."""
    try:
        widget.native.objectName()
    except RuntimeError:
        return False
    return True


def _watch_layers(viewer, refresh) -> None:
    """Call ``refresh`` when layers come, go or are renamed (those open already included)."""
    def safe(*_: Any) -> None:
        try:
            refresh()
        except RuntimeError:  # the dock widget was closed and its Qt objects deleted
            pass

    events = viewer.layers.events
    for event in (events.inserted, events.removed, events.reordered):
        event.connect(safe)
    for layer in viewer.layers:
        layer.events.name.connect(safe)
    events.inserted.connect(lambda event: event.value.events.name.connect(safe))


def _reset_keeping(viewer, reset, boxes: list[ComboBox]) -> None:
    """Rebuild the layer choices with ``reset``, keeping each box's layer while it is open:
    magicgui matches the old choice by its label, so a renamed layer would otherwise be dropped."""
    chosen = [(box, box.value) for box in boxes]
    reset()
    for box, layer in chosen:
        if layer is not None and box.value is not layer and layer in viewer.layers and layer in box.choices:
            box.value = layer


def _pick_image(viewer, box: ComboBox) -> None:
    """Choose the selected image layer, else the top one, when nothing is chosen yet."""
    if box.value is not None:
        return
    images = _layers_of(viewer, "image")
    active = viewer.layers.selection.active
    chosen = next((layer for _, layer in images if layer is active), images[-1][1] if images else None)
    if chosen is not None:
        box.value = chosen


class DetectWidget(Container):
    """Find the sparks, puffs and waves of the chosen movie layer and add classes, events and peaks.

    ``settings`` (Python only) overrides detection settings, e.g. ``DetectSettings(window_frames=64)``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, settings: DetectSettings | None = None):
        from ..models import list_models

        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._settings = settings
        self._detectors: dict[tuple[str, str], Any] = {}
        self.worker = None
        self.running = False
        self._cancel = threading.Event()  # the running detection's; a new one per run
        self.last_detection: Detection | None = None
        self._last_movie_id: str | None = None  # the movie layer last_detection was made on
        #: each movie layer's last detection (by its movie id): Save writes the chosen movie's
        self._detections: dict[str, Detection] = {}
        self._closed = False  # the panel was closed: its run is cancelled, its results dropped
        self.image = ComboBox(label="movie", choices=lambda _w: _layers_of(self._viewer, "image"), nullable=True)
        self.model = ComboBox(label="model", choices=[m.name for m in list_models()],
                              tooltip="a bundled model (`casparks models`)")
        self.model_file = FileEdit(label="or trained model", mode="r", filter="*.ckpt", nullable=True,
                                   tooltip="a checkpoint from `casparks train` (leave empty for the model above)")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self._units = _UnitBoxes()
        self.pixel_size, self.frame_interval = self._units.pixel_size, self._units.frame_interval
        self.offset = LineEdit(label="dark level (ADU)", value="auto",
                               tooltip="auto: read from the movie's photon noise; or the detector's dark level in ADU "
                                       "(the mean of a frame with the shutter closed); 0 for offset-free movies")
        self.keep_probabilities = CheckBox(label="show probabilities", value=False,
                                           tooltip="add the event probability as a (hidden) layer; 16 bytes per voxel")
        self.run_button = PushButton(text="Detect events")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.folder = FileEdit(label="results folder", mode="d", nullable=True,
                               tooltip="where Save results writes what `casparks detect --out` writes")
        self.overwrite = CheckBox(label="overwrite existing results", value=False)
        self.save_button = PushButton(text="Save results", enabled=False)
        self.status = Label(value="")
        self.extend([self.image, self.model, self.model_file, self.device, self.pixel_size, self.frame_interval,
                     self.offset, self.keep_probabilities, self.run_button, self.cancel_button, self.progress, self.folder,
                     self.overwrite, self.save_button, self.status])
        self.status.native.setWordWrap(True)
        self.image.changed.connect(self._fill_units)
        self.image.changed.connect(self._enable_save)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.save_button.changed.connect(self.save)
        _watch_layers(self._viewer, self._refresh)
        self._close_watcher = _CloseWatcher(self._on_close, self._on_dock)  # napari removes a closed dock's widget
        self.native.installEventFilter(self._close_watcher)
        self._refresh()
        self._fill_units()

    def _on_close(self) -> None:
        """The panel was closed during or after a run: a run still going is cancelled, and its
        results are never shown over those of a panel opened since."""
        self._closed = True
        self._cancel.set()

    def _on_dock(self) -> None:
        """Docked (again): its next runs show their results."""
        self._closed = False

    def reset_choices(self, *_: Any) -> None:
        """What napari calls when layers change (and :meth:`_refresh`): a renamed movie stays chosen."""
        _reset_keeping(self._viewer, super().reset_choices, [self.image])

    def _refresh(self) -> None:
        self.reset_choices()
        _pick_image(self._viewer, self.image)
        self._units.follow(self.image.value)  # Save training sample gave the movie units

    def _fill_units(self, *_: Any) -> None:
        self._units.fill(self.image.value)

    def _model_choice(self) -> str:
        path = self.model_file.value
        return str(path) if path not in (None, Path("."), Path("")) else self.model.value

    def run(self, *_: Any) -> None:
        """Start detection in a worker thread (results arrive as layers; errors as notifications)."""
        from napari.qt.threading import create_worker

        from ..io import Movie

        if self.running:
            return
        try:
            layer = self.image.value
            if layer is None:
                raise CasparksError("no movie layer to detect in", fix="open a movie (File > Open) first")
            px, dt = self._units.units(layer)
            _refuse_non_square(layer)
            offset = _offset_of(self.offset.value)
            source = ((layer.metadata or {}).get(META_KEY) or {}).get("source")
            movie = Movie(_movie_array(layer), float(px), float(dt), name=layer.name,
                          source=Path(source) if source else None)
        except CasparksError as exc:
            self.status.value = _notify_error(exc, "detection")
            return
        model, device = self._model_choice(), self.device.value
        self.running = True
        # Save would write the previous detection while its layers are about to be replaced
        self.run_button.enabled, self.cancel_button.enabled, self.save_button.enabled = False, True, False
        self.progress.value = 0
        self.status.value = f"loading {Path(model).name} on {device}…"
        keep = self.keep_probabilities.value
        self._cancel = cancel = threading.Event()
        self.worker = create_worker(self._detect, movie, model, device, keep, cancel, offset, _start_thread=True, _connect={
            "returned": lambda detection: self._show(layer, detection),
            "errored": self._failed,
            "finished": self._done,
        })

    def cancel(self, *_: Any) -> None:
        """Stop the running detection at its next inference window; no layer changes."""
        if not self.running:
            return
        self._cancel.set()
        self.cancel_button.enabled = False
        self.status.value = "cancelling…"

    def _detect(self, movie, model: str, device: str, keep_probabilities: bool = False,
                cancel: threading.Event | None = None, offset: float | str = "auto") -> Detection:
        """Worker thread: load (once per model, device and dark level) and detect; raises
        :class:`Cancelled` once ``cancel`` is set (checked per inference window, and after
        loading and detecting)."""
        import dataclasses

        from ..detection import DetectSettings, load_detector

        # a checkpoint file trained further since is loaded again (its step and weights were the old ones)
        stat = Path(model).stat() if Path(model).is_file() else None
        key = (model, device, (stat.st_mtime_ns, stat.st_size) if stat else None, offset)
        if key not in self._detectors:
            self._detectors = {k: v for k, v in self._detectors.items() if k[:2] != (model, device)}
            settings = self._settings or DetectSettings()
            if offset != settings.measure.offset_adu:  # the box's dark level, over the settings'
                settings = dataclasses.replace(settings, measure=dataclasses.replace(settings.measure, offset_adu=offset))
            self._detectors[key] = load_detector(model, device, settings)
        detector = self._detectors[key]
        _stop_if(cancel)
        self._progress(0, 1, f"detecting on {detector.device}…")

        def progress(done: int, total: int) -> None:
            _stop_if(cancel)  # raised inside detector.detect, which stops there
            self._progress(done, total)

        # a cancelled or closed run's warnings are not its
        with _warnings_shown(lambda message: None if cancel is not None and cancel.is_set() else self._warn(message)):
            detection = detector.detect(movie, save_probabilities=keep_probabilities, progress=progress)
        _stop_if(cancel)  # cancelled while the events were separated and measured
        return detection

    @ensure_main_thread
    def _warn(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        show_warning(message)

    @ensure_main_thread
    def _progress(self, done: int, total: int, text: str | None = None) -> None:
        """Progress of the inference windows; called from the worker, run in the GUI thread."""
        if not _alive(self):
            return
        self.progress.value = round(100 * done / max(total, 1))
        if text:
            self.status.value = text
        elif done >= total:
            self.status.value = "separating and measuring events…"

    def _show(self, layer, detection: Detection) -> None:
        """GUI thread: give the movie layer the units used, add (or replace) the result layers."""
        if self._cancel.is_set() or self._closed:  # cancelled after the worker's last look: as if it had stopped
            self._failed(Cancelled("detection cancelled"))
            return
        self.last_detection, self._last_movie_id = detection, None
        if not _alive(self):
            return
        self.cancel_button.enabled = False  # too late: a click now would say 'cancelled' over the results
        if layer not in self._viewer.layers:  # removed during the run: its results belong to no layer
            self.status.value = f"the movie layer {layer.name!r} was removed during the run: its results are not shown"
            return
        _give_units(layer, (), detection.pixel_size_um, detection.frame_interval_ms, detection.source)
        results = _layers.detection_layers(detection, name=layer.name)
        movie_id = _movie_id(layer)
        for _, kwargs, _ in results:
            kwargs["metadata"][META_KEY]["movie_id"] = movie_id
        self._last_movie_id = movie_id
        self._detections[movie_id] = detection
        stale = _layers.layer_names(layer.name)["probability"]
        if detection.probabilities is None and stale in self._viewer.layers:  # of an earlier run, other units
            self._viewer.layers.remove(stale)
        _, kept = _replace_layers(self._viewer, results)
        counts = format_counts(detection.counts)
        self.progress.value = 100
        self.status.value = f"found {counts} in {detection.timings_s.get('total', 0):.1f} s"
        if detection.dark_level:
            from ..darklevel import describe

            self.status.value += f"; dark level {describe(detection.dark_level)}"
        if kept:
            self.status.value += f"; your layers kept as {', '.join(repr(n) for n in kept)}"
        from napari.utils.notifications import show_info

        show_info(f"{layer.name}: {self.status.value}")

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):  # the user's choice, not an error to notify
            if _alive(self) and not self._closed:
                self.progress.value, self.status.value = 0, "detection cancelled; no layers changed"
            return
        message = _notify_error(exc, "detection")
        if _alive(self):
            self.status.value = message

    def _done(self) -> None:
        self.running = False
        if _alive(self):
            self.run_button.enabled, self.cancel_button.enabled = True, False
            self._enable_save()

    def _enable_save(self, *_: Any) -> None:
        """Save results is enabled where the chosen movie has a detection and no run is going."""
        if _alive(self):
            self.save_button.enabled = not self.running and self._find_detection(self.image.value) is not None

    def save(self, *_: Any) -> dict[str, Path] | None:
        """Write the chosen movie's last detection as `casparks detect --out` does; returns the
        files by kind (:func:`casparks.detection.write_detection`), or None after an error."""
        from napari.utils.notifications import show_info

        from ..detection import write_detection

        try:
            layer = self.image.value
            detection = self._detection_of(layer)
            if layer.name != detection.name:  # renamed since the run: its files take the name the user sees
                import dataclasses

                detection = dataclasses.replace(detection, name=layer.name)
            folder = self.folder.value
            if folder in (None, Path("."), Path("")):
                raise CasparksError("no results folder chosen", fix="choose the folder to save the results into")
            if not self.overwrite.value:
                _refuse_existing(detection, folder)
            try:
                paths = write_detection(detection, folder, overwrite=self.overwrite.value)
            except OSError as exc:  # a read-only or forbidden folder, a full disk: the user's to fix
                raise CasparksError(f"results cannot be written here ({exc.strerror or exc})", path=folder,
                                    fix="choose a folder you may write to") from None
        except Exception as exc:  # noqa: BLE001 - every failure is reported in the viewer
            self.status.value = _notify_error(exc, "saving the results")
            return None
        self.status.value = f"saved {len(paths)} files of {detection.name!r} in {Path(folder)}"
        show_info(self.status.value)
        return paths

    def _find_detection(self, layer) -> Detection | None:
        """``layer``'s last detection in this widget: by its movie id, else (the file removed and
        opened again) the last one of the same source file; None where it has none."""
        if layer is None:
            return None
        recorded = ((layer.metadata or {}).get(META_KEY) or {}).get("movie_id")
        if recorded in self._detections:
            return self._detections[recorded]
        source = ((layer.metadata or {}).get(META_KEY) or {}).get("source")
        if not source:
            return None
        # a project file holds many movies: the same file is the same movie only under the same name
        project = is_project_file(source)
        same_file = [d for d in self._detections.values()
                     if d.source and Path(d.source) == Path(source) and (not project or d.name == layer.name)]
        return same_file[-1] if same_file else None

    def _detection_of(self, layer) -> Detection:
        """The chosen movie's last detection: another movie's results saved while this one is
        chosen would be taken for this one's."""
        if layer is None:
            raise CasparksError("no movie chosen", fix="choose the movie whose results to save")
        detection = self._find_detection(layer)
        if detection is None:
            raise CasparksError(f"the movie {layer.name!r} has no detection in this panel to save",
                                fix="run Detect events on it first")
        return detection


def _offset_of(text: str) -> float | str:
    """The dark level box's value: "auto", or a dark level in ADU (a one-line error otherwise)."""
    value = str(text).strip().lower()
    if value in ("", "auto"):
        return "auto"
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3}){2,}", value):  # "1,000,000": thousands separators only
        value = value.replace(",", "")
    elif re.fullmatch(r"[+-]?[1-9]\d{0,2},\d{3}", value):  # "1,000": a thousands separator or a decimal comma?
        raise CasparksError(f"the dark level {text!r} can be read two ways",
                            fix=f"type it without a thousands separator ({value.replace(',', '')}), or with a decimal "
                                f"point ({value.replace(',', '.')})")
    try:
        number = float(value.replace(",", "."))  # a decimal comma, as some locales type it
    except ValueError:
        number = float("nan")
    if not np.isfinite(number):
        raise CasparksError(f"the dark level {text!r} is not a number", fix="give the detector's dark level in ADU, "
                                                                          "0, or auto")
    return number


def _refuse_existing(detection: Detection, folder: Path) -> None:
    """write_detection refuses existing results too, but its fix names the command line's --overwrite."""
    from ..detection import output_paths

    paths = output_paths(folder, detection.name, detection.probabilities is not None)
    existing = [path for path in paths.values() if path.exists()]
    if existing:
        raise CasparksError("exists already", path=existing[0],
                            fix="choose another folder, or tick 'overwrite existing results' to replace it")


#: the classes the Correct action sets, erase first (what a false detection needs)
EVENT_CHOICES = [("erase (background)", BACKGROUND)] + [(CODE_NAMES[c], c) for c in (*EVENT_CLASSES, IGNORE)]


def _own_labels(viewer, image, kind: str):
    """The labels layer of ``kind`` ('classes', 'events') that belongs to the movie ``image``:
    the one of the reader's name, else the only casparks layer of that kind and the movie's shape
    not named after another movie (a renamed one)."""
    labels = _layers_of(viewer, "labels")
    by_name = dict(labels).get(_layers.layer_names(image.name)[kind])
    if by_name is not None:
        return by_name
    shape = getattr(image.data, "shape", None)
    others = {_layers.layer_names(name)[kind] for name, _ in _layers_of(viewer, "image")}  # other movies' own
    mine = [layer for name, layer in labels if ((layer.metadata or {}).get(META_KEY) or {}).get("kind") == kind
            and layer.data.shape == shape and name not in others and _same_movie(layer, image)]
    return mine[0] if len(mine) == 1 else None


def _partly_erased_message(partly: dict[int, tuple[int, int]]) -> str:
    shown = ", ".join(f"{i} ({left} of {total} voxels left)" for i, (left, total) in list(partly.items())[:5])
    more = f" and {len(partly) - 5} more" if len(partly) > 5 else ""
    return f"event(s) {shown}{more} are erased only in part in the classes layer; nothing written"


def _movie_and_labels(image, classes_layer, events_layer, pixel_size_um: float, frame_interval_ms: float):
    """The chosen movie with the panel's units, and its classes and events layers' arrays (events
    None without a layer), checked: labels of the movie's shape and made for it."""
    from ..io import Movie

    data = _movie_array(image)
    classes = np.asarray(classes_layer.data)
    events = None if events_layer is None else np.asarray(events_layer.data)
    for what, array, labels in (("classes", classes, classes_layer), ("events", events, events_layer)):
        if array is not None and array.shape != data.shape:
            raise CasparksError(f"the {what} layer has shape {array.shape}, the movie {data.shape}",
                                fix=f"choose the {what} layer made for this movie")
        if labels is not None and not _same_movie(labels, image):
            raise CasparksError(f"the {what} layer {labels.name!r} was made for another movie than "
                                f"{image.name!r}", fix=f"choose the {what} layer made for this movie, or "
                                                       "detect events in it first")
    source = ((image.metadata or {}).get(META_KEY) or {}).get("source")
    return (Movie(data, pixel_size_um, frame_interval_ms, name=image.name, source=Path(source) if source else None),
            classes, events)


def _ids_on_background(classes: np.ndarray, events: np.ndarray) -> int:
    """Voxels with an event id on background classes (painted on the events layer alone): the
    completed ids drop them."""
    return int(np.count_nonzero((events > 0) & (classes == BACKGROUND)))


def _refuse_partly_erased(classes: np.ndarray, events: np.ndarray | None) -> None:
    """Events erased only in part in the classes layer (what the fill bucket leaves), as a one-line error."""
    from ..dataset import partly_erased_events

    partly = {} if events is None else partly_erased_events(classes, events)
    if partly:
        raise CasparksError(_partly_erased_message(partly),
                            fix="erase or relabel whole events with 'Apply to whole event', or tick "
                                "'keep partly erased events' to save (or measure) what is left of them")


def _layer_id(layer) -> str:
    """A layer's own id (kept in its metadata): the peaks layer Measure shows with an events layer
    records its events layer's, so it is found again after either is renamed."""
    import uuid

    info = dict((layer.metadata or {}).get(META_KEY) or {})
    if not info.get("layer_id"):
        info["layer_id"] = uuid.uuid4().hex
        layer.metadata = {**(layer.metadata or {}), META_KEY: info}
    return info["layer_id"]


def _own_peaks(viewer, image, events_layer):
    """The peaks layer shown with ``events_layer`` (of the movie ``image``): the one Measure made
    for it, else the casparks peaks layer of the movie named after it ('… events (annotation)' →
    '… peaks (annotation)', :func:`._layers.peaks_name`) that Measure made for no other events
    layer; None where it has none. A detection's peaks never stand for an annotation's events
    beside them, nor the other way round."""
    from napari.layers import Points

    def info(layer) -> dict:
        return (layer.metadata or {}).get(META_KEY) or {}

    key = _layer_id(events_layer)
    peaks = [layer for layer in viewer.layers if isinstance(layer, Points) and info(layer).get("kind") == "peaks"
             and _same_movie(layer, image)]
    tied = [layer for layer in peaks if info(layer).get("events_id") == key]
    if tied:
        return tied[0]
    name = _layers.peaks_name(events_layer.name, image.name)
    named = [layer for layer in peaks if layer.name == name and info(layer).get("events_id") in (None, key)]
    return named[0] if named else None


def _some(ids: np.ndarray, shown: int = 5) -> str:
    """'17, 18, 19 …': the first ids of a list, for a status line."""
    return ", ".join(map(str, ids[:shown])) + (" …" if ids.size > shown else "")


def _write_ids(events_layer, ids: np.ndarray) -> str:
    """Write the voxels whose id differs into the events layer in one undoable step (Ctrl+Z on
    the layer restores them). Returns "" so, or the dtype the layer was widened to where its own
    cannot hold the largest id (setting the data anew, which napari cannot undo)."""
    current = np.asarray(events_layer.data)
    if np.array_equal(ids, current):
        return ""
    if int(ids.max(initial=0)) > np.iinfo(current.dtype).max:
        events_layer.data = ids.astype(np.promote_types(current.dtype, ids.dtype))
        return str(events_layer.data.dtype)
    where = np.nonzero(ids != current)
    events_layer.data_setitem(where, ids[where])
    return ""


class SaveSampleWidget(Container):
    """Correct whole events, and save the movie and its corrected class and event layers as
    sample ``NN`` of a data set."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._followed = None  # the events layer whose picked label fills in the event id
        self.image = ComboBox(label="movie", choices=lambda _w: _layers_of(self._viewer, "image"), nullable=True)
        self._units = _UnitBoxes()  # for a movie without units: what Measure and Save use, as Detect's boxes
        self.pixel_size, self.frame_interval = self._units.pixel_size, self._units.frame_interval
        self.classes = ComboBox(label="classes", choices=lambda _w: _layers_of(self._viewer, "labels"), nullable=True,
                                tooltip="codes 0 background, 1 spark, 2 wave, 3 puff, 4 ignore")
        self.events = ComboBox(label="events", choices=lambda _w: _layers_of(self._viewer, "labels"), nullable=True,
                               tooltip="instance ids (empty: derived from the classes by connected components)")
        self.event_id = SpinBox(label="event", min=0, max=2**31 - 1, value=0,
                                tooltip="the event to correct: pick it on the events layer with the colour picker")
        self.new_class = ComboBox(label="set to", choices=EVENT_CHOICES, value=BACKGROUND)
        self.apply_button = PushButton(text="Apply to whole event")
        self.complete = CheckBox(label="complete event ids", value=True,
                                 tooltip="drop ids on background voxels; give unnumbered event voxels new ids")
        self.keep_partial = CheckBox(label="keep partly erased events", value=False,
                                     tooltip="save (or measure) events erased only in part (trimmed on purpose) with "
                                             "what is left")
        self.offset = LineEdit(label="dark level (ADU)", value="auto",
                               tooltip="for Measure events: auto reads it from the movie's photon noise; or the "
                                       "detector's dark level in ADU; 0 for offset-free movies")
        self.measure_button = PushButton(text="Measure events",
                                         tooltip="measure the classes and events layers' events as a detection's "
                                                 "(hover the events layer to see them)")
        self.folder = FileEdit(label="data-set folder", mode="d", nullable=True)
        self.index = SpinBox(label="sample number", min=0, max=MAX_SAMPLE_INDEX, value=0,
                             tooltip="0: the next free number")
        self.overwrite = CheckBox(label="overwrite", value=False)
        self.save_button = PushButton(text="Save training sample")
        self.status = Label(value="")
        self.extend([self.image, self.pixel_size, self.frame_interval, self.classes, self.events, self.event_id,
                     self.new_class, self.apply_button, self.complete, self.keep_partial, self.offset,
                     self.measure_button, self.folder, self.index, self.overwrite, self.save_button, self.status])
        self.status.native.setWordWrap(True)
        self.image.changed.connect(self._pick_labels)
        self.image.changed.connect(lambda *_: self._units.fill(self.image.value))
        self.events.changed.connect(self._follow_events)
        self.apply_button.changed.connect(self.apply_to_event)
        self.measure_button.changed.connect(self.measure)
        self.save_button.changed.connect(self.save)
        _watch_layers(self._viewer, self._refresh)
        self._refresh()
        self._pick_labels()
        self._units.fill(self.image.value)

    def reset_choices(self, *_: Any) -> None:
        """What napari calls when layers change (and :meth:`_refresh`): renamed layers stay chosen."""
        _reset_keeping(self._viewer, super().reset_choices, [self.image, self.classes, self.events])

    def _refresh(self) -> None:
        self.reset_choices()
        _pick_image(self._viewer, self.image)
        self._pick_labels(keep=True)
        self._units.follow(self.image.value)  # a detection gave the movie units

    def _pick_labels(self, *_: Any, keep: bool = False) -> None:
        """Preselect the movie's own classes / events layers; with ``keep``, only where nothing
        (still open) is chosen."""
        layer = self.image.value
        if layer is None:
            return
        for box, key in ((self.classes, "classes"), (self.events, "events")):
            if keep and box.value is not None and box.value in self._viewer.layers:
                continue
            own = _own_labels(self._viewer, layer, key)
            if own is not None:
                box.value = own
            elif box.value is not None and not _same_movie(box.value, layer):
                box.value = None  # another movie's labels: saved with this movie, they were its annotation

    def _follow_events(self, *_: Any) -> None:
        """The event id follows the label picked on the chosen events layer (napari's colour picker)."""
        if self._followed is not None:
            self._followed.events.selected_label.disconnect(self._picked)
        self._followed = self.events.value
        if self._followed is not None:
            self._followed.events.selected_label.connect(self._picked)

    def _picked(self, *_: Any) -> None:
        if _alive(self) and self._followed is not None:
            self.event_id.value = int(self._followed.selected_label)

    def apply_to_event(self, *_: Any) -> int:
        """Set the class of every voxel of the chosen event (erase: its id too), in one undoable
        step per layer; napari's fill reaches only face-touching voxels of an event joined across
        diagonals. Returns the number of voxels, 0 after an error."""
        from napari.utils.notifications import show_info

        from ..dataset import event_voxels

        try:
            classes_layer, events_layer = self.classes.value, self.events.value
            if classes_layer is None or events_layer is None:
                raise CasparksError("choose the classes and events layers", fix="detect or open the movie's labels")
            if classes_layer.data.shape != events_layer.data.shape:
                raise CasparksError("the classes and events layers differ in shape",
                                    fix="choose the two layers made for this movie")
            event_id, code = int(self.event_id.value), int(self.new_class.value)
            voxels = event_voxels(np.asarray(events_layer.data), event_id)
            classes_layer.data_setitem(voxels, code)
            if code == BACKGROUND:
                events_layer.data_setitem(voxels, 0)
        except CasparksError as exc:
            self.status.value = _notify_error(exc, "correcting the event")
            return 0
        done = "erased" if code == BACKGROUND else f"set to {CODE_NAMES[code]}"
        self.status.value = f"event {event_id}: {voxels[0].size} voxels {done} (Ctrl+Z on each layer undoes it)"
        show_info(self.status.value)
        return int(voxels[0].size)

    def measure(self, *_: Any) -> Detection | None:
        """Measure the events of the chosen classes and events layers as a detection measures its
        own (:func:`casparks.labelled.measure_labels`) and show them as a detection's: the events
        layer's features become the measured table (an event Measure neither renumbered nor
        relabelled keeps the detection's confidence), the peaks layer shown with that events
        layer its peaks. The ids measured are the completed ones (ids on background dropped,
        painted events numbered by connected components per class after the ids left: what Save
        writes with 'complete event ids', and what ``casparks measure`` gives the sample saved
        without). With 'complete event ids' the events layer gets them where they differ (a newly
        painted event) in one step Ctrl+Z undoes; without, the layer is left as it is and the
        status line names the events it holds no id of (no hover row); without an events layer one
        is added. Returns the measurement, or None after an error.

        Runs in the GUI thread, as Apply and Save do: 1.2-1.5 s for a 500 × 64 × 512 movie, and
        the labels read are the ones shown (a worker would measure labels being painted on)."""
        from napari.utils.notifications import show_info, show_warning

        from ..dataset import complete_event_label
        from ..labelled import measure_labels
        from ..measure import MeasureConfig

        try:
            image, classes_layer, events_layer = self.image.value, self.classes.value, self.events.value
            if image is None or classes_layer is None:
                raise CasparksError("choose the movie and its classes layer",
                                    fix="open a movie and detect or load its labels")
            px, dt = self._units.units(image)
            _refuse_non_square(image)
            movie, classes, events = _movie_and_labels(image, classes_layer, events_layer, px, dt)
            config = MeasureConfig(offset_adu=_offset_of(self.offset.value))
            if not self.keep_partial.value:
                _refuse_partly_erased(classes, events)
            dropped = 0 if events is None else _ids_on_background(classes, events)
            ids = complete_event_label(classes, events)  # what Save writes; measured as they are
            with _warnings_shown(show_warning):  # the dark level's, implausible amplitudes
                detection = measure_labels(movie, classes, ids.astype(np.int64), config=config)
        except Exception as exc:  # noqa: BLE001 - every failure is reported in the viewer
            self.status.value = _notify_error(exc, "measuring the events")
            return None
        _give_units(image, (classes_layer, events_layer), px, dt)  # the events and peaks shown overlay it
        changed = self._show_measured(image, events_layer, ids, detection)
        n = len(detection.events)
        self.status.value = f"measured {n} event{'' if n == 1 else 's'}" + (
            f" ({format_counts(detection.counts)})" if n else "")
        if detection.dark_level:
            from ..darklevel import describe

            self.status.value += f"; dark level {describe(detection.dark_level)}"
        if changed:
            self.status.value += f"; {changed}"
        if dropped:  # ids painted on the events layer alone, dropped as Save drops them
            self.status.value += (f"; {dropped} voxels with an event id on background classes are no event "
                                  "(the classes layer says what is an event)")
        show_info(f"{image.name}: {self.status.value}")
        return detection

    def _show_measured(self, image, events_layer, ids: np.ndarray, detection: Detection) -> str:
        """The measured events in the viewer: the events layer's ids (where they differ, and
        'complete event ids' is ticked) and features, the peaks layer shown with that events
        layer; the events layer selected, so hovering shows them. Returns what the status line
        says of the events layer's ids ("" where nothing is to say)."""
        from napari.layers import Layer

        px, dt = detection.pixel_size_um, detection.frame_interval_ms
        movie_id = _movie_id(image)
        source = detection.source
        changed = ""
        if events_layer is None:
            data, kwargs, _ = _layers.event_layer(ids, image.name, px, dt, detection.events, source)
            kwargs["name"] = _free_name(self._viewer, kwargs["name"])
            kwargs["metadata"][META_KEY]["movie_id"] = movie_id
            events_layer = self._viewer.add_layer(Layer.create(data, kwargs, "labels"))
            self.events.value = events_layer
            changed = f"their ids in the new layer {events_layer.name!r}"
            table = _layers.event_features(detection.events)
        else:
            # events measured under ids their voxels lack in the layer (painted, perhaps under an erased event's id)
            new = np.unique(ids[(ids > 0) & (ids != np.asarray(events_layer.data))])
            table = shown = _layers.measured_event_features(detection.events, events_layer.features, new)
            if self.complete.value:
                widened = _write_ids(events_layer, ids)
                if new.size:
                    changed = (f"new event id{'' if new.size == 1 else 's'} {_some(new)} in the events layer "
                               "(as Save numbers them; ")
                    changed += (f"the layer widened to {widened} for them, which cannot be undone)" if widened
                                else "Ctrl+Z on the events layer undoes it)")
            elif new.size:  # measured all the same (casparks measure numbers the saved sample's so), not shown
                shown = shown[~shown["index"].isin(new)].reset_index(drop=True)
                its, them = ("its", "it") if new.size == 1 else ("their", "them")
                changed = (f"event{'' if new.size == 1 else 's'} {_some(new)} measured without {its} id in the "
                           f"events layer ('complete event ids' is unticked): hovering shows no row for {them}")
            events_layer.features = shown
        old = _own_peaks(self._viewer, image, events_layer)
        name = _layers.peaks_name(events_layer.name, image.name)
        peaks = _layers.peak_layer(table, image.name, px, dt, detection.class_label.shape[0], source)
        index = self._viewer.layers.index(old) if old is not None else self._viewer.layers.index(events_layer)
        if old is not None:
            self._viewer.layers.remove(old)  # stale: an erased event's peak stayed
        if peaks is not None:
            data, kwargs, kind = peaks
            kwargs["name"] = old.name if old is not None else _free_name(self._viewer, name)
            kwargs["metadata"][META_KEY].update(movie_id=movie_id, events_id=_layer_id(events_layer))
            self._viewer.layers.insert(index, Layer.create(data, kwargs, kind))
        self._viewer.layers.selection.active = events_layer
        return changed

    def save(self, *_: Any):
        """Write the sample; returns it (a :class:`casparks.dataset.Sample`), or None after an error."""
        from napari.utils.notifications import show_info, show_warning

        from ..dataset import complete_event_label, stray_files, write_sample

        try:
            image, classes_layer, events_layer = self.image.value, self.classes.value, self.events.value
            if image is None or classes_layer is None:
                raise CasparksError("choose the movie and its classes layer", fix="open a movie and detect or load its labels")
            folder = self.folder.value
            if folder in (None, Path("."), Path("")):
                raise CasparksError("no data-set folder chosen", fix="choose the folder to save the sample into")
            px, dt = self._units.units(image)
            movie, classes, events = _movie_and_labels(image, classes_layer, events_layer, px, dt)
            dropped = 0 if events is None or not self.complete.value else _ids_on_background(classes, events)
            if not self.keep_partial.value:
                _refuse_partly_erased(classes, events)
            if self.complete.value:
                events = complete_event_label(classes, events)
            try:
                with _warnings_shown(show_warning):  # what casparks check would say of the saved sample
                    sample = write_sample(folder, movie, classes, events, index=self.index.value or None,
                                          overwrite=self.overwrite.value)
            except OSError as exc:  # a read-only or forbidden folder, a full disk: the user's to fix
                raise CasparksError(f"the sample cannot be written here ({exc.strerror or exc})", path=folder,
                                    fix="choose a folder you may write to") from None
        except Exception as exc:  # noqa: BLE001 - every failure is reported in the viewer
            self.status.value = _notify_error(exc, "saving the sample")
            return None
        _give_units(image, (classes_layer, events_layer), px, dt)  # the units saved, as Measure gives them
        widened = ""
        if self.complete.value and events_layer is not None:
            features = _layers.corrected_event_features(events_layer.features, classes, events)
            widened = _write_ids(events_layer, events)  # show the ids that were saved; Ctrl+Z undoes them
            events_layer.features = features  # and their classes, never the detection's stale ones
        self.status.value = f"saved sample {sample.id} in {Path(folder)}"
        if widened:
            self.status.value += f"; the events layer widened to {widened} for its new ids, which cannot be undone"
        if dropped:  # ids painted on the events layer alone were dropped unsaid
            self.status.value += (f"; {dropped} voxels with an event id on background classes were saved without it "
                                  "(the classes layer says what is an event: paint it to add one)")
        show_info(f"{self.status.value} ({sample.video.name}, {sample.class_label.name}, {sample.event_label.name})")
        stray = stray_files(folder)
        if stray:
            shown = ", ".join(stray[:4]) + (f" and {len(stray) - 4} more" if len(stray) > 4 else "")
            show_warning(f"{Path(folder)} is not a clean data set: {shown} are no complete NN sample; "
                         "casparks check and training read them too; keep training samples in a folder of their own")
            self.status.value += f"; the folder also holds {len(stray)} other movie/label file(s)"
        return sample

"""Dock widgets: run detection on the open movie, and save corrected labels as a training sample.

Both are thin: :class:`DetectWidget` calls :meth:`casparks.detection.Detector.detect` in a
worker thread (the viewer stays responsive; the progress callback is marshalled to the GUI
thread) and turns the result into layers with :mod:`._layers`; :class:`SaveSampleWidget` calls
:func:`casparks.dataset.write_sample`. User errors (:class:`~casparks.errors.CasparksError`) are
napari notifications with the fix, not tracebacks.
"""

from __future__ import annotations

import logging
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
    ProgressBar,
    PushButton,
    SpinBox,
)
from superqt.utils import ensure_main_thread

from ..classes import format_counts
from ..errors import CasparksError
from . import _layers
from ._layers import META_KEY, LayerData

if TYPE_CHECKING:
    import napari

    from ..detection import Detection, DetectSettings

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


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


def _replace_layers(viewer, layer_data: list[LayerData]) -> list:
    """Add layers, replacing those of the same name (a second run updates the first's results)."""
    from napari.layers import Layer

    added = []
    for data, kwargs, layer_type in layer_data:
        name = kwargs["name"]
        if name in viewer.layers:
            viewer.layers.remove(name)
        added.append(viewer.add_layer(Layer.create(data, kwargs, layer_type)))
    return added


def _watch_layers(viewer, refresh) -> None:
    """Call ``refresh`` when layers come, go or are renamed."""
    def safe(*_: Any) -> None:
        try:
            refresh()
        except RuntimeError:  # the dock widget was closed and its Qt objects deleted
            pass

    events = viewer.layers.events
    for event in (events.inserted, events.removed, events.reordered):
        event.connect(safe)
    events.inserted.connect(lambda event: event.value.events.name.connect(safe))


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
        self.last_detection: Detection | None = None
        self.image = ComboBox(label="movie", choices=lambda _w: _layers_of(self._viewer, "image"), nullable=True)
        self.model = ComboBox(label="model", choices=[m.name for m in list_models()],
                              tooltip="a bundled model (`casparks models`)")
        self.model_file = FileEdit(label="or trained model", mode="r", filter="*.ckpt", nullable=True,
                                   tooltip="a checkpoint from `casparks train` (leave empty for the model above)")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.pixel_size = FloatSpinBox(label="pixel size (µm)", min=0.0, max=1000.0, step=0.01, value=0.0)
        self.frame_interval = FloatSpinBox(label="frame interval (ms)", min=0.0, max=1e6, step=0.1, value=0.0)
        self.keep_probabilities = CheckBox(label="show probabilities", value=False,
                                           tooltip="add the event probability as a (hidden) layer; 16 bytes per voxel")
        self.run_button = PushButton(text="Detect events")
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.status = Label(value="")
        self.extend([self.image, self.model, self.model_file, self.device, self.pixel_size, self.frame_interval,
                     self.keep_probabilities, self.run_button, self.progress, self.status])
        self.status.native.setWordWrap(True)
        self.image.changed.connect(self._fill_units)
        self.run_button.changed.connect(self.run)
        _watch_layers(self._viewer, self._refresh)
        self._refresh()
        self._fill_units()

    def _refresh(self) -> None:
        self.reset_choices()
        _pick_image(self._viewer, self.image)

    def _fill_units(self, *_: Any) -> None:
        layer = self.image.value
        px, dt = layer_units(layer) if layer is not None else (None, None)
        if px and dt:
            self.pixel_size.value, self.frame_interval.value = px, dt

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
            px, dt = self.pixel_size.value, self.frame_interval.value
            if not (px > 0 and dt > 0):
                raise CasparksError(f"{layer.name!r} has no pixel size / frame interval",
                                    fix="enter them (µm, ms) in the widget")
            source = ((layer.metadata or {}).get(META_KEY) or {}).get("source")
            movie = Movie(_movie_array(layer), float(px), float(dt), name=layer.name,
                          source=Path(source) if source else None)
        except CasparksError as exc:
            self.status.value = _notify_error(exc, "detection")
            return
        model, device = self._model_choice(), self.device.value
        self.running = True
        self.run_button.enabled = False
        self.progress.value = 0
        self.status.value = f"loading {Path(model).name} on {device}…"
        keep = self.keep_probabilities.value
        self.worker = create_worker(self._detect, movie, model, device, keep, _start_thread=True, _connect={
            "returned": lambda detection: self._show(layer, detection),
            "errored": lambda exc: setattr(self.status, "value", _notify_error(exc, "detection")),
            "finished": self._done,
        })

    def _detect(self, movie, model: str, device: str, keep_probabilities: bool = False) -> Detection:
        """Worker thread: load (once per model and device) and detect."""
        from ..detection import load_detector

        key = (model, device)
        if key not in self._detectors:
            self._detectors[key] = load_detector(model, device, self._settings)
        detector = self._detectors[key]
        self._progress(0, 1, f"detecting on {detector.device}…")
        return detector.detect(movie, save_probabilities=keep_probabilities,
                               progress=lambda done, total: self._progress(done, total))

    @ensure_main_thread
    def _progress(self, done: int, total: int, text: str | None = None) -> None:
        """Progress of the inference windows; called from the worker, run in the GUI thread."""
        self.progress.value = round(100 * done / max(total, 1))
        if text:
            self.status.value = text
        elif done >= total:
            self.status.value = "separating and measuring events…"

    def _show(self, layer, detection: Detection) -> None:
        """GUI thread: give the movie layer the units used, add (or replace) the result layers."""
        self.last_detection = detection
        world = _layers.frame(detection.pixel_size_um, detection.frame_interval_ms)
        aligned = np.allclose(layer.scale, world["scale"]) and np.allclose(layer.translate, world["translate"])
        if layer in self._viewer.layers and not (aligned and layer_units(layer)[0] is not None):
            layer.scale, layer.translate = world["scale"], world["translate"]
            layer.units, layer.axis_labels = world["units"], world["axis_labels"]
            layer.metadata = {**(layer.metadata or {}), **_layers._meta(
                "movie", detection.pixel_size_um, detection.frame_interval_ms, detection.source)}
        _replace_layers(self._viewer, _layers.detection_layers(detection, name=layer.name))
        counts = format_counts(detection.counts)
        self.progress.value = 100
        self.status.value = f"found {counts} in {detection.timings_s.get('total', 0):.1f} s"
        if detection.dark_level:
            from ..darklevel import describe

            self.status.value += f"; dark level {describe(detection.dark_level)}"
        from napari.utils.notifications import show_info

        show_info(f"{layer.name}: {self.status.value}")

    def _done(self) -> None:
        self.running = False
        self.run_button.enabled = True


class SaveSampleWidget(Container):
    """Save the movie and its corrected class and event layers as sample ``NN`` of a data set."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.image = ComboBox(label="movie", choices=lambda _w: _layers_of(self._viewer, "image"), nullable=True)
        self.classes = ComboBox(label="classes", choices=lambda _w: _layers_of(self._viewer, "labels"), nullable=True,
                                tooltip="codes 0 background, 1 spark, 2 wave, 3 puff, 4 ignore")
        self.events = ComboBox(label="events", choices=lambda _w: _layers_of(self._viewer, "labels"), nullable=True,
                               tooltip="instance ids (empty: derived from the classes by connected components)")
        self.complete = CheckBox(label="complete event ids", value=True,
                                 tooltip="drop ids on background voxels; give unnumbered event voxels new ids")
        self.folder = FileEdit(label="data-set folder", mode="d", nullable=True)
        self.index = SpinBox(label="sample number", min=0, max=9999, value=0, tooltip="0: the next free number")
        self.overwrite = CheckBox(label="overwrite", value=False)
        self.save_button = PushButton(text="Save training sample")
        self.status = Label(value="")
        self.extend([self.image, self.classes, self.events, self.complete, self.folder, self.index, self.overwrite,
                     self.save_button, self.status])
        self.status.native.setWordWrap(True)
        self.image.changed.connect(self._pick_labels)
        self.save_button.changed.connect(self.save)
        _watch_layers(self._viewer, self._refresh)
        self._refresh()
        self._pick_labels()

    def _refresh(self) -> None:
        self.reset_choices()
        _pick_image(self._viewer, self.image)
        self._pick_labels(keep=True)

    def _pick_labels(self, *_: Any, keep: bool = False) -> None:
        """Preselect the movie's own classes / events layers (by the reader's names); with
        ``keep``, only where nothing (still open) is chosen."""
        layer = self.image.value
        if layer is None:
            return
        names = _layers.layer_names(layer.name)
        labels = dict(_layers_of(self._viewer, "labels"))
        for box, key in ((self.classes, "classes"), (self.events, "events")):
            if keep and box.value is not None and box.value in self._viewer.layers:
                continue
            if names[key] in labels:
                box.value = labels[names[key]]

    def save(self, *_: Any):
        """Write the sample; returns it (a :class:`casparks.dataset.Sample`), or None after an error."""
        from napari.utils.notifications import show_info

        from ..dataset import complete_event_label, write_sample
        from ..io import Movie

        try:
            image, classes_layer, events_layer = self.image.value, self.classes.value, self.events.value
            if image is None or classes_layer is None:
                raise CasparksError("choose the movie and its classes layer", fix="open a movie and detect or load its labels")
            folder = self.folder.value
            if folder in (None, Path("."), Path("")):
                raise CasparksError("no data-set folder chosen", fix="choose the folder to save the sample into")
            px, dt = layer_units(image)
            if not (px and dt):
                raise CasparksError(f"{image.name!r} has no pixel size / frame interval",
                                    fix="open the movie with its units, or enter them in Detect events and run it")
            data = _movie_array(image)
            classes = np.asarray(classes_layer.data)
            events = None if events_layer is None else np.asarray(events_layer.data)
            for what, array in (("classes", classes), ("events", events)):
                if array is not None and array.shape != data.shape:
                    raise CasparksError(f"the {what} layer has shape {array.shape}, the movie {data.shape}",
                                        fix=f"choose the {what} layer made for this movie")
            if self.complete.value:
                events = complete_event_label(classes, events)
            movie = Movie(data, px, dt, name=image.name)
            sample = write_sample(folder, movie, classes, events, index=self.index.value or None,
                                  overwrite=self.overwrite.value)
        except Exception as exc:  # noqa: BLE001 - every failure is reported in the viewer
            self.status.value = _notify_error(exc, "saving the sample")
            return None
        if self.complete.value and events_layer is not None and not np.array_equal(events, events_layer.data):
            events_layer.data = events  # show the ids that were saved
        self.status.value = f"saved sample {sample.id} in {Path(folder)}"
        show_info(f"{self.status.value} ({sample.video.name}, {sample.class_label.name}, {sample.event_label.name})")
        return sample

"""The napari plugin: manifest, reader, Detect and Save-sample widgets, sample data; and the pure
parts under them (dataset.write_sample, complete_event_label, layer builders) without Qt.

Qt tests run headless (pytest-xvfb starts a virtual screen). Where napari cannot make a viewer
they are skipped, except under CI (env CI set), where that is a failure.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from casparks.classes import CLASS_COLORS, IGNORE, PUFF, SPARK, WAVE
from casparks.classes import BACKGROUND
from casparks.dataset import (
    check_dataset,
    complete_event_label,
    event_voxels,
    list_samples,
    next_sample_index,
    partly_erased_events,
    stray_files,
    write_sample,
)
from casparks.detection import DetectSettings, load_detector, write_detection
from casparks.errors import CasparksError
from casparks.io import Movie, read_movie, read_stack, read_units, write_movie
from casparks.models import DEFAULT_MODEL
from casparks.napari_plugin import _layers
from casparks.simulate import load_simulation_config, simulate_movie

SMALL = {"n_frames": 80, "height_px": 32, "width_px": 96}
PX, DT = 0.2, 6.8


@pytest.fixture(scope="module")
def sim():
    """A tiny movie with a dozen sparks (the 'dense' preset)."""
    return simulate_movie(load_simulation_config("dense", SMALL), seed=0)


@pytest.fixture(scope="module")
def detection(sim):
    detector = load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(window_frames=64))
    return detector.detect(sim.movie)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------
# pure: writing samples


def test_write_sample_writes_the_original_layout_with_units(tmp_path, sim):
    first = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    second = write_sample(tmp_path / "set", sim.movie, sim.class_label, None)  # ids derived from classes
    assert (first.id, second.id) == ("01", "02")
    assert _files(tmp_path / "set") == ["01_class_label.tif", "01_event_label.tif", "01_video.tif",
                                        "02_class_label.tif", "02_event_label.tif", "02_video.tif"]
    assert check_dataset(tmp_path / "set") == []
    samples = list_samples(tmp_path / "set", require=("video", "class_label", "event_label"))
    assert [s.id for s in samples] == ["01", "02"]
    movie = read_movie(first.video)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((PX, DT))
    np.testing.assert_array_equal(movie.data, sim.movie.data)
    classes, events = read_stack(first.class_label), read_stack(first.event_label)
    assert classes.dtype == np.uint8 and events.dtype == np.uint16
    np.testing.assert_array_equal(classes, sim.class_label)
    np.testing.assert_array_equal(events, sim.event_label)
    for path in (first.class_label, first.event_label):
        assert read_units(path) == pytest.approx((PX, DT))
    derived = read_stack(second.event_label)
    np.testing.assert_array_equal(derived > 0, np.isin(sim.class_label, (SPARK, WAVE, PUFF)))
    # what `casparks train` loads: units from the files, training labels prepared
    from casparks.config import DataConfig
    from casparks.data import load_movies

    loaded = load_movies(samples, DataConfig())
    assert (loaded[0].pixel_size_um, loaded[0].frame_interval_ms) == pytest.approx((PX, DT))
    assert loaded[0].labels.shape == sim.movie.shape and (loaded[0].labels == SPARK).any()
    assert write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label, index=7).id == "07"
    assert next_sample_index(tmp_path / "set") == 8


def test_write_sample_refuses_without_writing_anything(tmp_path, sim):
    folder = tmp_path / "set"
    write_sample(folder, sim.movie, sim.class_label, sim.event_label, index=1)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(CasparksError, match=r"sample 01 exists already .*; choose another index"):
        write_sample(folder, sim.movie, sim.class_label, sim.event_label, index=1)
    with pytest.raises(CasparksError, match=r"shape \(80, 32, 95\) differs from the movie's \(80, 32, 96\)"):
        write_sample(folder, sim.movie, sim.class_label[..., :-1], sim.event_label)
    with pytest.raises(CasparksError, match=r"event_label.tif: shape .* differs"):
        write_sample(folder, sim.movie, sim.class_label, sim.event_label[:-1])
    mixed = sim.class_label.copy()
    first_id = int(sim.event_label.max())
    voxels = np.argwhere(sim.event_label == first_id)
    mixed[tuple(voxels[0])] = WAVE if mixed[tuple(voxels[0])] != WAVE else SPARK
    with pytest.raises(CasparksError, match="carry more than one class.*nothing written"):
        write_sample(folder, sim.movie, mixed, sim.event_label)
    unknown = sim.class_label.copy()
    unknown[0, 0, 0] = 9
    with pytest.raises(CasparksError, match=r"unknown class codes \[9\]"):
        write_sample(folder, sim.movie, unknown, sim.event_label)
    with pytest.raises(CasparksError, match="non-negative whole number"):
        write_sample(folder, sim.movie, sim.class_label, sim.event_label, index=-1)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # no file touched, no temp left
    write_sample(folder, sim.movie, sim.class_label, sim.event_label, index=1, overwrite=True)
    assert check_dataset(folder) == []


def test_complete_event_label_follows_corrected_classes():
    classes = np.zeros((6, 5, 5), np.uint8)
    events = np.zeros((6, 5, 5), np.int32)
    classes[0:2, 0:2, 0:2] = SPARK
    events[0:2, 0:2, 0:2] = 5
    events[4, 4, 4] = 3  # erased in the classes: a false positive removed
    classes[3:5, 0:2, 3:5] = PUFF  # painted in the classes only: a missed event
    classes[5, 4, 4] = IGNORE
    events[5, 4, 4] = 7  # an id under ignore stays
    out = complete_event_label(classes, events)
    assert out.dtype == np.uint16
    assert set(np.unique(out)) == {0, 5, 7, 8}
    assert (out[3:5, 0:2, 3:5] == 8).all() and out[4, 4, 4] == 0 and out[5, 4, 4] == 7
    assert (complete_event_label(classes, None)[0:2, 0:2, 0:2] > 0).all()
    with pytest.raises(CasparksError, match="differ in shape"):
        complete_event_label(classes, events[:-1])


def test_next_sample_index_and_strays_in_a_lab_folder(tmp_path, sim):
    """A lab folder: a movie named after a date must not make the next sample 20260113, and
    saving there says the folder is not a clean data set."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    for name in ("20260112_video.tif", "ctrl_video.tif", "cell2_ij.tif", "cell2_ij_class_label.tif", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert next_sample_index(folder) == 1
    assert stray_files(folder) == ["20260112_video.tif", "cell2_ij_class_label.tif", "ctrl_video.tif"]
    write_sample(folder, sim.movie, sim.class_label, sim.event_label)
    write_sample(folder, sim.movie, sim.class_label, sim.event_label, index=123)
    assert next_sample_index(folder) == 124
    assert "01_video.tif" not in stray_files(folder) and "123_video.tif" not in stray_files(folder)
    clean = tmp_path / "set"
    write_sample(clean, sim.movie, sim.class_label, sim.event_label)
    assert stray_files(clean) == [] and stray_files(tmp_path / "new") == []
    # a set numbered with three digits goes on with three (a review: it restarted at 01, all stray)
    padded = tmp_path / "padded"
    for index in (1, 2):
        write_sample(padded, sim.movie, sim.class_label, sim.event_label)
        assert (padded / f"0{index}_video.tif").is_file()
    for name in os.listdir(padded):
        os.rename(padded / name, padded / f"0{name}")
    assert next_sample_index(padded) == 3 and stray_files(padded) == []
    assert write_sample(padded, sim.movie, sim.class_label, sim.event_label).id == "003"


def _diagonal_sparks(shape=(6, 8, 8)):
    """Spark 3: two blocks joined only at a corner (as detected events are, across diagonals);
    spark 5 touches spark 3's first block face to face; spark 6 stands alone."""
    classes = np.zeros(shape, np.uint8)
    events = np.zeros(shape, np.uint16)
    for event_id, (t, y, x) in ((3, (1, 1, 1)), (3, (3, 3, 3)), (5, (1, 1, 3)), (6, (0, 6, 6))):
        region = (slice(t, t + 2), slice(y, y + 2), slice(x, x + 2))
        classes[region], events[region] = SPARK, event_id
    return classes, events


def test_partly_erased_events_are_found_and_whole_events_addressed():
    from scipy import ndimage

    classes, events = _diagonal_sparks()
    assert partly_erased_events(classes, events) == {}
    # napari's fill with 0 at a voxel of spark 3: the face-connected region of its class
    regions, _ = ndimage.label(classes == SPARK)
    filled = classes.copy()
    filled[regions == regions[1, 1, 1]] = BACKGROUND
    assert (filled[events == 3] == SPARK).sum() == 8  # the second block is left: a fragment
    assert partly_erased_events(filled, events) == {3: (8, 16)}  # spark 5 was erased whole
    assert event_voxels(events, 3)[0].size == 16
    with pytest.raises(CasparksError, match="no event 9"):
        event_voxels(events, 9)
    with pytest.raises(CasparksError, match="no event chosen"):
        event_voxels(events, 0)


# ----------------------------------------------------------------------------------------------
# pure: layer data


def _world(data, kwargs):
    return np.asarray(data) * np.asarray(kwargs["scale"]) + np.asarray(kwargs["translate"])


def test_layers_carry_units_colours_features_and_peaks():
    shape = (20, 10, 30)
    classes = np.zeros(shape, np.uint8)
    events = np.zeros(shape, np.uint16)
    classes[2:6, 2:5, 3:7], events[2:6, 2:5, 3:7] = SPARK, 1
    classes[8:18, 1:9, 10:30], events[8:18, 1:9, 10:30] = WAVE, 2
    table = pd.DataFrame({"id": [1, 2], "class": ["spark", "wave"], "peak_ms": [3.4 * DT, 12 * DT],
                          "peak_y_um": [0.7, 1.0], "peak_x_um": [1.1, 4.0], "amplitude_dff": [0.8, 1.5]})
    movie = Movie(np.ones(shape, np.uint16), PX, DT, name="cell")
    layers = _layers.movie_layers(movie, classes, events, table)
    assert [(k["name"], t) for _, k, t in layers] == [("cell", "image"), ("cell classes", "labels"),
                                                     ("cell peaks", "points"), ("cell events", "labels")]
    for _, kwargs, _ in layers:
        assert kwargs["scale"] == (DT, PX, PX) and kwargs["translate"] == (DT / 2, PX / 2, PX / 2)
        assert kwargs["units"] == ("millisecond", "micrometer", "micrometer") and kwargs["axis_labels"] == ("t", "y", "x")
        assert kwargs["metadata"]["casparks"]["pixel_size_um"] == PX
    class_data, class_kwargs, _ = layers[1]
    assert class_data.flags.writeable and class_data.dtype == np.uint8
    colors = class_kwargs["colormap"]
    for code, rgb in CLASS_COLORS.items():
        expected = (0, 0, 0, 0) if code == 0 else (*(c / 255 for c in rgb), 1)
        assert colors[code] == pytest.approx(expected)
    assert dict(zip(class_kwargs["features"]["index"], class_kwargs["features"]["class"]))[PUFF] == "puff"
    points, point_kwargs, _ = layers[2]
    assert list(point_kwargs["features"]["id"]) == [1]  # sparks and puffs only
    np.testing.assert_allclose(_world(points, point_kwargs), [[3.4 * DT, 0.7, 1.1]])
    voxel = np.round(points[0]).astype(int)  # the frame and pixel the peak lies in
    assert tuple(voxel) == (3, 3, 5) and events[tuple(voxel)] == 1
    event_data, event_kwargs, _ = layers[3]
    features = event_kwargs["features"]
    assert list(features["index"]) == [1, 2] and list(features["class"]) == ["spark", "wave"]
    assert event_data.flags.writeable
    bare = _layers.image_layer(np.zeros(shape), "raw", None, None)
    assert "scale" not in bare[1] and bare[1]["axis_labels"] == ("t", "y", "x")


def test_corrected_event_features_follow_the_saved_labels():
    classes, events = _diagonal_sparks()
    table = pd.DataFrame({"id": [3, 5, 6], "class": ["spark"] * 3, "amplitude_dff": [0.5, 0.6, 0.7]})
    features = _layers.event_features(table)
    classes[events == 6] = PUFF  # relabelled
    classes[events == 5], events[events == 5] = 0, 0  # erased
    classes[5, 0:2, 0:2], events[5, 0:2, 0:2] = WAVE, 7  # newly painted, numbered at saving
    out = _layers.corrected_event_features(features, classes, events)
    assert list(out["index"]) == [3, 6, 7] and list(out["id"]) == [3, 6, 7]
    assert list(out["class"]) == ["spark", "puff", "wave"]
    assert out["amplitude_dff"].iloc[1] == 0.7 and np.isnan(out["amplitude_dff"].iloc[2])
    empty = _layers.corrected_event_features(features, classes, np.zeros_like(events))
    assert len(empty) == 0 and "class" in empty
    # the detector's confidence stays with the class it found: a relabelled event's is dropped
    scored = _layers.event_features(table.assign(confidence=[0.9, 0.8, 0.7]))
    out = _layers.corrected_event_features(scored, classes, events)
    assert out["confidence"].iloc[0] == 0.9 and out["confidence"].iloc[1:].isna().all()


def test_measured_event_features_keep_the_confidence_of_unchanged_events():
    """Measure replaced the detection's table with the measured one, whose confidence is empty:
    an event of the same id and class keeps the detection's; a relabelled or new one has none."""
    before = _layers.event_features(pd.DataFrame({"id": [3, 5, 6], "class": ["spark", "spark", "puff"],
                                                  "confidence": [0.9, 0.8, 0.7]}))
    measured = pd.DataFrame({"id": [3, 5, 7], "class": ["spark", "wave", "spark"], "confidence": np.nan,
                             "amplitude_dff": [1.0, 2.0, 3.0]})
    out = _layers.measured_event_features(measured, before)
    assert list(out["index"]) == [3, 5, 7] and list(out["amplitude_dff"]) == [1.0, 2.0, 3.0]
    assert out["confidence"].iloc[0] == 0.9 and out["confidence"].iloc[1:].isna().all()
    # id 3 measured on voxels the layer gave no id (painted after event 3 was brushed away): not event 3's
    assert _layers.measured_event_features(measured, before, renumbered=[3])["confidence"].isna().all()
    # an annotation's table (no confidence) or none: the measured table as it is
    pd.testing.assert_frame_equal(_layers.measured_event_features(measured, before.drop(columns="confidence")),
                                  _layers.event_features(measured))
    pd.testing.assert_frame_equal(_layers.measured_event_features(measured, None), _layers.event_features(measured))


def test_peaks_are_named_after_their_events_layer():
    assert _layers.peaks_name("cell events", "cell") == _layers.layer_names("cell")["peaks"] == "cell peaks"
    assert _layers.peaks_name("cell events (annotation)", "cell") == "cell peaks (annotation)"
    assert _layers.peaks_name("cell events (edited) 2", "cell") == "cell peaks (edited) 2"
    assert _layers.peaks_name("cell events (annotation)", "renamed") == "cell peaks (annotation)"
    assert _layers.peaks_name("truth", "cell") == "truth peaks"


def test_layer_digest_tells_edited_labels():
    classes, events = _diagonal_sparks()
    data, kwargs, _ = _layers.class_layer(classes, "cell", PX, DT)
    assert not _layers.is_edited(data, kwargs["metadata"])
    data[0, 0, 0] = WAVE  # painted in place, as napari does
    assert _layers.is_edited(data, kwargs["metadata"])
    assert _layers.is_edited(classes, {})  # a layer casparks did not make is the user's


def test_sample_data_is_the_simulated_movie():
    from casparks.napari_plugin._sample_data import simulated_movie, simulated_movie_with_truth

    (data, kwargs, kind), = simulated_movie(SMALL)
    assert kind == "image" and data.shape == (80, 32, 96) and kwargs["scale"] == (DT, PX, PX)
    layers = simulated_movie_with_truth(SMALL)
    assert [t for *_, t in layers] == ["image", "labels", "labels"]


# ----------------------------------------------------------------------------------------------
# manifest and reader


def test_manifest_validates_and_is_discovered():
    npe2 = _need("npe2")
    manifest = npe2.PluginManifest.from_distribution("casparks")
    assert manifest.name == "casparks"
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {"Detect events", "Save training sample"}
    assert {s.key for s in contributions.sample_data} == {"simulated", "simulated_truth"}
    (reader,) = contributions.readers
    assert reader.accepts_directories and "*.tif" in reader.filename_patterns
    for command in contributions.commands:  # every python_name imports
        assert callable(_import(command.python_name))
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "casparks" in pm._manifests


def _need(module: str):
    """Import a GUI-side module; skip without it, except under CI where it must be there."""
    if os.environ.get("CI"):
        return __import__(module)
    return pytest.importorskip(module)


def _import(python_name: str):
    import importlib

    module, attribute = python_name.split(":")
    return getattr(importlib.import_module(module), attribute)


def test_reader_declines_what_it_cannot_read(tmp_path):
    from casparks.napari_plugin._reader import napari_get_reader

    tifffile.imwrite(tmp_path / "image.tif", np.zeros((8, 8), np.uint16))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert napari_get_reader(str(tmp_path / "image.tif")) is None  # 2-D: napari's own reader
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "empty")) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None


def test_reader_names_the_channels_of_a_multichannel_movie(tmp_path, monkeypatch):
    from casparks.napari_plugin import _reader

    tifffile.imwrite(tmp_path / "cell_2ch.tif", np.zeros((10, 2, 8, 8), np.uint16), imagej=True,
                     metadata={"axes": "TCYX"})
    warnings: list[str] = []
    monkeypatch.setattr(_reader, "_warn", warnings.append)
    assert _reader.napari_get_reader(str(tmp_path / "cell_2ch.tif")) is None  # napari's own reader may open it
    assert len(warnings) == 1 and "cell_2ch.tif" in warnings[0] and "split the channels" in warnings[0]


def test_reader_opens_a_z_stack_or_non_square_movie_bare_saying_why(tmp_path, monkeypatch):
    """The reader took a file whose slices are 0.2 µm apart (a z-stack) or whose pixels are not
    square, then raised the command line's "pass --frame-interval MS" instead of opening it."""
    from casparks.napari_plugin import _reader

    warnings: list[str] = []
    monkeypatch.setattr(_reader, "_warn", warnings.append)
    stack = np.zeros((20, 16, 32), np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, resolution=(5, 5),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 0.2})
    tifffile.imwrite(tmp_path / "tall.tif", stack, imagej=True, resolution=(5, 2.5),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.0068})
    for name in ("z.tif", "tall.tif"):
        layers = _reader.napari_get_reader(str(tmp_path / name))(str(tmp_path / name))
        assert [kind for _, _, kind in layers] == ["image"] and np.asarray(layers[0][0]).shape == (20, 16, 32)
    assert any("z.tif: is a z-stack" in w and "its units are not used" in w for w in warnings)
    assert any("tall.tif" in w and "its units are not used" in w for w in warnings)


def test_a_moved_detection_and_its_movie_save_as_a_sample(viewer, tmp_path, sim, detection):
    """Moved with its movie, a detection opened (the movie found beside it) but its labels
    recorded the old path, and the save widget refused them as another movie's."""
    import shutil

    from casparks.napari_plugin._widget import SaveSampleWidget

    old = tmp_path / "old"
    old.mkdir()
    write_movie(old / "cell.tif", sim.movie)
    write_detection(dataclasses.replace(detection, name="cell", source=old / "cell.tif"), old)
    moved = tmp_path / "moved"
    shutil.move(str(old), str(moved))
    viewer.open(str(moved / "cell_detection.json"), plugin="casparks")
    widget = SaveSampleWidget(viewer)
    assert widget.image.value is viewer.layers["cell"] and widget.classes.value is viewer.layers["cell classes"]
    widget.folder.value = tmp_path / "set"
    assert widget.save() is not None, widget.status.value


def test_reader_opens_a_detection_of_one_channel_with_its_movie(tmp_path, sim, detection):
    """A detection made with --channel could not be opened: its movie was read without the
    channel, and a two-channel file asks which one."""
    from casparks.detection import write_detection
    from casparks.napari_plugin._reader import napari_get_reader

    movie = np.asarray(sim.movie.data)
    stack = np.stack([np.zeros_like(movie), movie], axis=1)  # TCYX, calcium in channel 1
    tifffile.imwrite(tmp_path / "cell.tif", stack, imagej=True, resolution=(1 / PX, 1 / PX),
                     metadata={"axes": "TCYX", "unit": "um", "finterval": DT / 1000})
    made = dataclasses.replace(detection, name="cell", source=tmp_path / "cell.tif", channel=1)
    write_detection(made, tmp_path / "out")
    summary = str(tmp_path / "out" / "cell_detection.json")
    layers = napari_get_reader(summary)(summary)
    image = next(data for data, _, kind in layers if kind == "image")
    np.testing.assert_array_equal(np.asarray(image), movie)


def test_reader_opens_a_zeiss_lsm_movie_not_its_thumbnails(tmp_path, sim):
    from zeiss_lsm import write_lsm

    from casparks.napari_plugin._reader import napari_get_reader

    path = write_lsm(tmp_path / "cell.lsm", np.asarray(sim.movie.data), voxel_size_m=(PX * 1e-6, PX * 1e-6),
                     time_interval_s=DT / 1e3)
    layers = napari_get_reader(str(path))(str(path))
    assert [(k["name"], t) for _, k, t in layers] == [("cell", "image")]
    assert layers[0][1]["scale"] == pytest.approx((DT, PX, PX))
    np.testing.assert_array_equal(np.asarray(layers[0][0]), sim.movie.data)


def test_reader_opens_each_movie_of_a_leica_project_with_its_units(tmp_path, monkeypatch):
    """A .lif project (LAS X's session file) opens as its x-y-t movies, one layer per channel,
    named as casparks convert names its TIFFs, with their units; what is no movie is named in a
    warning; a project without movies is a one-line error."""
    from leica_lif import LifImage, write_lif

    from casparks.napari_plugin import _reader

    rng = np.random.default_rng(3)
    movie = rng.integers(0, 4000, (20, 16, 24), dtype=np.uint16)
    two = rng.integers(0, 255, (12, 2, 8, 20), dtype=np.uint8)
    project = write_lif(tmp_path / "session 1.lif", [
        LifImage("Series001", movie, "TYX", {"X": (23 * 0.2e-6, "m"), "Y": (15 * 0.2e-6, "m"), "T": (19 * 6.8e-3, "s")}),
        LifImage("xt scan", rng.integers(0, 4000, (50, 40), dtype=np.uint16), "TX", {"X": (39e-7, "m"), "T": (0.049, "s")}),
        LifImage("Series002", two, "TCYX", {"X": (19e-7, "m"), "Y": (7e-7, "m"), "T": (11 * 2.5e-3, "s")}, folder="cell 2"),
    ])
    warnings: list[str] = []
    monkeypatch.setattr(_reader, "_warn", warnings.append)
    layers = _reader.napari_get_reader(str(project))(str(project))
    assert [(k["name"], t) for _, k, t in layers] == [
        ("session_1_Series001", "image"), ("session_1_cell_2_Series002_channel0", "image"),
        ("session_1_cell_2_Series002_channel1", "image")]
    assert layers[0][1]["scale"] == pytest.approx((6.8, 0.2, 0.2))
    assert layers[2][1]["scale"] == pytest.approx((2.5, 0.1, 0.1))
    np.testing.assert_array_equal(np.asarray(layers[0][0]), movie)
    np.testing.assert_array_equal(np.asarray(layers[2][0]), two[:, 1])
    assert len(warnings) == 1 and "xt scan (a line scan (x-t), not an x-y-t movie)" in warnings[0]

    lines = write_lif(tmp_path / "lines.lif", [
        LifImage("xt", rng.integers(0, 4000, (50, 40), dtype=np.uint16), "TX", {"X": (39e-7, "m"), "T": (0.049, "s")})])
    with pytest.raises(CasparksError, match=r"lines\.lif: holds no x-y-t movie \(xt: a line scan"):
        _reader.napari_get_reader(str(lines))(str(lines))


def test_reader_opens_a_movie_and_an_original_layout_sample(tmp_path, sim):
    from casparks.napari_plugin._reader import napari_get_reader

    write_movie(tmp_path / "cell.tif", sim.movie)
    layers = napari_get_reader(str(tmp_path / "cell.tif"))(str(tmp_path / "cell.tif"))
    assert [(k["name"], t) for _, k, t in layers] == [("cell", "image")]
    assert layers[0][1]["scale"] == (DT, PX, PX)

    sample = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    truth = sim.events.rename(columns={"event_id": "id"})
    sim.events.to_csv(tmp_path / "set" / "01_events.csv", index=False)
    for opened in (sample.video, sample.event_label):  # a label file opens its whole sample
        layers = napari_get_reader(str(opened))(str(opened))
        assert [(k["name"], t) for _, k, t in layers] == [("01_video", "image"), ("01_video classes", "labels"),
                                                         ("01_video events", "labels")]
        np.testing.assert_array_equal(layers[1][0], sim.class_label)
        np.testing.assert_array_equal(layers[2][0], sim.event_label)
        features = layers[2][1]["features"]
        labelled = truth[truth["id"] > 0]  # unlabelled (faint) truth events have id 0, the background's
        assert (truth["id"] == 0).any()
        assert list(features["index"]) == list(labelled["id"]) and "amplitude_dff0" in features


def test_a_simulated_sample_corrected_in_place_reopens_with_its_corrected_classes(tmp_path, sim):
    """Saved over with a class changed, a simulated sample reopened hovering the simulator's old
    class (its NN_events.csv, read as the events' table): each event's class now comes from the
    labels, and the list's other columns stay."""
    from casparks.napari_plugin._reader import napari_get_reader

    sample = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    sim.events.to_csv(tmp_path / "set" / "01_events.csv", index=False)
    spark_id = int(sim.events.loc[sim.events["class"].eq("spark") & sim.events["event_id"].gt(0), "event_id"].iloc[0])
    corrected = sim.class_label.copy()
    corrected[(sim.event_label == spark_id) & (corrected == SPARK)] = PUFF  # a person calls it a puff
    write_sample(tmp_path / "set", sim.movie, corrected, sim.event_label, index=1, overwrite=True)
    layers = napari_get_reader(str(sample.video))(str(sample.video))
    features = layers[-1][1]["features"].set_index("index")
    assert features.loc[spark_id, "class"] == "puff" and features.loc[spark_id, "class_code"] == PUFF
    assert "amplitude_dff0" in features  # the truth's other columns


def test_a_detection_saved_into_a_data_set_never_hides_the_annotation(tmp_path, sim, detection, monkeypatch):
    """casparks detect DS --out DS: opening the movie, or its annotation file, showed the
    detection in the annotation's place (Save training sample would then have written the
    network's labels back as a person's). The annotation is shown, and the detection opens
    from its own files."""
    from casparks.napari_plugin import _reader
    from casparks.napari_plugin._reader import napari_get_reader

    warnings: list[str] = []
    monkeypatch.setattr(_reader, "_warn", warnings.append)
    sample = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    write_detection(dataclasses.replace(detection, name="01_video", source=sample.video), tmp_path / "set")
    assert not np.array_equal(detection.class_label, sim.class_label)
    for opened in (sample.video, sample.class_label, sample.event_label):
        layers = napari_get_reader(str(opened))(str(opened))
        classes = next(layer for layer in layers if layer[1]["name"].endswith("classes"))
        np.testing.assert_array_equal(classes[0], sim.class_label)
        assert classes[1]["metadata"]["casparks"]["annotation"] is True
    assert warnings and "its annotation is shown; the detection beside it opens from 01_video_detection.json" in warnings[0]
    detected = str(tmp_path / "set" / "01_video_class_label.tif")
    layers = napari_get_reader(detected)(detected)
    np.testing.assert_array_equal(next(layer for layer in layers if layer[1]["name"].endswith("classes"))[0],
                                  detection.class_label)


def test_reader_opens_a_detection_folder(tmp_path, sim, detection, monkeypatch):
    from casparks.napari_plugin import _reader
    from casparks.napari_plugin._reader import napari_get_reader

    write_movie(tmp_path / "movies" / "cell.tif", sim.movie)
    moved = Movie(sim.movie.data, PX, DT, name="cell", source=tmp_path / "movies" / "cell.tif")
    write_detection(dataclasses.replace(detection, name="cell", source=moved.source), tmp_path / "det")
    reader = napari_get_reader(str(tmp_path / "det"))
    layers = reader(str(tmp_path / "det"))
    assert [(k["name"], t) for _, k, t in layers] == [("cell", "image"), ("cell classes", "labels"),
                                                     ("cell peaks", "points"), ("cell events", "labels")]
    image, classes, peaks, events = layers
    assert Path(image[1]["metadata"]["casparks"]["source"]) == moved.source
    np.testing.assert_array_equal(classes[0], detection.class_label)
    np.testing.assert_array_equal(events[0], detection.event_label)
    features = events[1]["features"]
    assert list(features["index"]) == list(detection.events["id"])
    assert {"class", "amplitude_dff", "fwhm_um", "fdhm_ms"} <= set(features)
    rows = detection.events[detection.events["class"].isin(["spark", "puff"])]
    expected = rows[["peak_ms", "peak_y_um", "peak_x_um"]].to_numpy()
    np.testing.assert_allclose(_world(peaks[0], peaks[1]), expected, atol=1e-9)
    # probabilities, when saved, come as a hidden event-probability layer; their file opens the detection
    probs = np.zeros((4, *detection.class_label.shape), np.float32)
    probs[0], probs[1] = 0.25, 0.75
    write_detection(dataclasses.replace(detection, name="cell", source=moved.source, probabilities=probs),
                    tmp_path / "det", overwrite=True)
    probability_file = str(tmp_path / "det" / "cell_probabilities.tif")
    layers = napari_get_reader(probability_file)(probability_file)
    assert [k["name"] for _, k, _ in layers][:2] == ["cell", "cell event probability"]
    assert not layers[1][1]["visible"] and np.allclose(layers[1][0], 0.75)
    # the movie moved away: the results alone, with a warning
    (tmp_path / "movies" / "cell.tif").rename(tmp_path / "elsewhere.tif")
    warnings: list[str] = []
    monkeypatch.setattr(_reader, "_warn", warnings.append)
    summary = str(tmp_path / "det" / "cell_detection.json")
    layers = napari_get_reader(summary)(summary)
    assert [t for *_, t in layers] == ["image", "labels", "points", "labels"]  # probability, classes, peaks, events
    assert len(warnings) == 1 and "cell.tif was not found" in warnings[0]
    # another movie of the same shape in its place: not shown under these results (it was, silently)
    from casparks.io import movie_fingerprint

    write_movie(tmp_path / "movies" / "cell.tif", Movie(sim.movie.data[::-1].copy(), PX, DT))
    fingerprinted = dataclasses.replace(detection, name="cell", source=moved.source,
                                        movie_fingerprint=movie_fingerprint(sim.movie.data))
    write_detection(fingerprinted, tmp_path / "det", overwrite=True)
    warnings.clear()
    layers = napari_get_reader(summary)(summary)
    assert [t for *_, t in layers] == ["labels", "points", "labels"]
    assert any("not the movie cell_detection.json was made on" in w for w in warnings)
    # the probabilities copied away from their summary: said so, not called a movie to split in Fiji
    from casparks.io import write_probabilities

    write_probabilities(tmp_path / "cell_probabilities.tif", probs, PX, DT)
    warnings.clear()
    assert napari_get_reader(str(tmp_path / "cell_probabilities.tif")) is None
    assert len(warnings) == 1 and "holds a detection's class probabilities" in warnings[0]
    assert "cell_detection.json is not beside it" in warnings[0] and "Split Channels" not in warnings[0]


# ----------------------------------------------------------------------------------------------
# in a viewer (headless Qt)


@pytest.fixture
def viewer(request):
    """A napari viewer; a failure to make one skips locally, but fails under CI."""
    try:
        make_napari_viewer = request.getfixturevalue("make_napari_viewer")
        return make_napari_viewer()
    except Exception as exc:  # no napari, no Qt, no display
        if os.environ.get("CI"):
            raise
        pytest.skip(f"napari cannot make a viewer here: {exc}")


def test_open_with_the_plugin_in_a_viewer(viewer, tmp_path, sim):
    sample = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    sim.events.to_csv(tmp_path / "set" / "01_events.csv", index=False)  # simulated sets have their truth table
    viewer.open(str(sample.video), plugin="casparks")
    assert [layer.name for layer in viewer.layers] == ["01_video", "01_video classes", "01_video events"]
    image, classes, events = viewer.layers
    assert tuple(image.scale) == (DT, PX, PX) and [str(u) for u in image.units] == ["millisecond", "micrometer",
                                                                                     "micrometer"]
    assert np.allclose(classes.colormap.map(np.array([SPARK]))[0][:3], np.array(CLASS_COLORS[SPARK]) / 255)
    # hovering an event names its class and measurements
    event_id = int(sim.event_label.max())
    voxel = np.argwhere(sim.event_label == event_id)[0]
    world = events.data_to_world(voxel)
    viewer.dims.set_point(0, world[0])  # show the event's frame, then hover over it
    status = events.get_status(world, world=True)
    assert status["value"].startswith(f"{event_id}; ") and "class: spark" in status["value"]
    assert "amplitude_dff0: " in status["value"]


def test_detect_widget_adds_result_layers(viewer, qtbot, sim):
    from casparks.napari_plugin._widget import DetectWidget

    viewer.add_image(sim.movie.data, name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is viewer.layers["cell"]
    assert (widget.pixel_size.value, widget.frame_interval.value) == pytest.approx((PX, DT))
    widget.device.value = "cpu"
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_detection is not None, widget.status.value
    assert [layer.name for layer in viewer.layers] == ["cell", "cell classes", "cell peaks", "cell events"]
    assert widget.progress.value == 100 and widget.status.value.startswith("found ")
    events = viewer.layers["cell events"]
    assert len(events.features) == len(widget.last_detection.events) > 0
    np.testing.assert_array_equal(viewer.layers["cell classes"].data, widget.last_detection.class_label)
    assert tuple(viewer.layers["cell"].translate) == pytest.approx((DT / 2, PX / 2, PX / 2))  # aligned with results
    widget.keep_probabilities.value = True
    widget.run()  # a second run replaces the layers instead of piling them up
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["cell", "cell event probability", "cell classes", "cell peaks",
                                                       "cell events"]
    assert not viewer.layers["cell event probability"].visible


def test_a_leica_project_opens_in_a_viewer_and_its_movie_is_detected_with_its_units(viewer, qtbot, tmp_path, sim):
    """A physiologist drops LAS X's session file on napari and runs Detect events on a movie of it."""
    from leica_lif import LifImage, write_lif

    from casparks.napari_plugin._reader import napari_get_reader
    from casparks.napari_plugin._widget import DetectWidget

    n, rows, cols = sim.movie.data.shape
    lengths = {"X": ((cols - 1) * PX * 1e-6, "m"), "Y": ((rows - 1) * PX * 1e-6, "m"), "T": ((n - 1) * DT * 1e-3, "s")}
    movie = np.asarray(sim.movie.data, dtype=np.uint16)
    project = write_lif(tmp_path / "session.lif", [LifImage("Series001", movie, "TYX", lengths),
                                                   LifImage("Series002", movie[::-1].copy(), "TYX", lengths)])
    viewer.open(str(project), plugin="casparks")
    assert [layer.name for layer in viewer.layers] == ["session_Series001", "session_Series002"]
    assert tuple(viewer.layers[0].scale) == pytest.approx((DT, PX, PX))
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    widget.image.value = viewer.layers["session_Series001"]
    assert (widget.pixel_size.value, widget.frame_interval.value) == pytest.approx((PX, DT))
    widget.device.value = "cpu"
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_detection is not None, widget.status.value
    found = load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(window_frames=64)).detect(sim.movie)
    np.testing.assert_array_equal(widget.last_detection.class_label, found.class_label)

    # the project's other movie has no detection (both layers have the project as their source)
    widget.image.value = viewer.layers["session_Series002"]
    assert not widget.save_button.enabled and widget.save() is None
    # saved results open again with their movie, found in the project (opening them failed on the project)
    widget.image.value = viewer.layers["session_Series001"]
    widget.folder.value = tmp_path / "results"
    assert widget.save() is not None, widget.status.value
    reopened = napari_get_reader(str(tmp_path / "results" / "session_Series001_detection.json"))(
        str(tmp_path / "results" / "session_Series001_detection.json"))
    assert [kwargs["name"] for _, kwargs, kind in reopened if kind == "image"] == ["session_Series001"]
    np.testing.assert_array_equal(next(data for data, _, kind in reopened if kind == "image"), movie)
    # a layer renamed after its run saves under its new name, and its movie is found by its pixels
    viewer.layers["session_Series001"].name = "cell A"
    assert widget.save() is not None, widget.status.value
    assert (tmp_path / "results" / "cell A_events.csv").is_file()
    reopened = napari_get_reader(str(tmp_path / "results" / "cell A_detection.json"))(
        str(tmp_path / "results" / "cell A_detection.json"))
    np.testing.assert_array_equal(next(data for data, _, kind in reopened if kind == "image"), movie)


def test_detect_widget_reports_errors_as_one_line(viewer, qtbot, tmp_path):
    from casparks.napari_plugin._widget import DetectWidget

    viewer.add_image(np.zeros((10, 8, 8), np.uint16), name="raw")
    widget = DetectWidget(viewer)
    widget.run()
    assert not widget.running and "'raw' has no pixel size / frame interval; enter them" in widget.status.value
    widget.pixel_size.value, widget.frame_interval.value = PX, DT
    widget.model_file.value = tmp_path / "mine.ckpt"  # raised in the worker thread
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    assert "mine.ckpt" in widget.status.value and "\n" not in widget.status.value
    assert widget.run_button.enabled and len(viewer.layers) == 1


def test_corrected_labels_saved_as_a_training_sample(viewer, tmp_path, sim, detection):
    from casparks.napari_plugin._widget import SaveSampleWidget

    for data, kwargs, kind in _layers.movie_layers(Movie(sim.movie.data, PX, DT, name="cell")):
        viewer.add_layer(_layer(data, kwargs, kind))
    for data, kwargs, kind in _layers.detection_layers(detection, name="cell"):
        viewer.add_layer(_layer(data, kwargs, kind))
    classes, events = viewer.layers["cell classes"], viewer.layers["cell events"]
    ids = list(detection.events["id"])
    assert len(ids) >= 2
    # corrections: one event becomes a puff, another is a false positive erased from the classes
    # only, and a missed spark is painted in the classes only
    relabelled, erased = ids[0], ids[1]
    classes.data[events.data == relabelled] = PUFF
    classes.data[events.data == erased] = 0
    missed = (slice(70, 74), slice(26, 30), slice(88, 94))
    assert not events.data[missed].any()
    classes.data[missed] = SPARK

    widget = SaveSampleWidget(viewer)
    assert (widget.image.value, widget.classes.value, widget.events.value) == (viewer.layers["cell"], classes, events)
    widget.folder.value = tmp_path / "set"
    sample = widget.save()
    assert sample is not None, widget.status.value
    assert sample.id == "01" and "saved sample 01" in widget.status.value
    assert check_dataset(tmp_path / "set") == []
    assert [s.id for s in list_samples(tmp_path / "set", require=("video", "class_label", "event_label"))] == ["01"]
    saved_classes, saved_events = read_stack(sample.class_label), read_stack(sample.event_label)
    assert read_units(sample.video) == pytest.approx((PX, DT)) == read_units(sample.event_label)
    assert (saved_classes[detection.event_label == relabelled] == PUFF).all()
    assert not saved_events[detection.event_label == erased].any()
    new_ids = np.unique(saved_events[missed])
    assert len(new_ids) == 1 and new_ids[0] > max(ids)
    np.testing.assert_array_equal(events.data, saved_events)  # the layer shows what was saved

    # bad cases: an existing sample without overwrite; labels of another movie
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "set").iterdir()}
    widget.index.value = 1
    assert widget.save() is None and "sample 01 exists already" in widget.status.value
    viewer.add_labels(np.zeros((80, 32, 90), np.uint8), name="other")
    widget.index.value = 0
    widget.classes.value = viewer.layers["other"]
    assert widget.save() is None and "the classes layer has shape (80, 32, 90)" in widget.status.value
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "set").iterdir()} == before
    widget.classes.value = classes
    widget.index.value = 1
    widget.overwrite.value = True
    assert widget.save().id == "01"


def test_save_shows_what_check_would_warn_of_the_saved_sample(viewer, tmp_path, sim, detection, monkeypatch):
    """Save checked the labels but dropped check's warnings: a spark id painted on a second,
    separate region was saved as one long spark without a word in the viewer."""
    import napari.utils.notifications

    from casparks.napari_plugin._widget import SaveSampleWidget

    shown = []
    monkeypatch.setattr(napari.utils.notifications, "show_warning", shown.append)
    for data, kwargs, kind in _layers.movie_layers(Movie(sim.movie.data, PX, DT, name="cell")):
        viewer.add_layer(_layer(data, kwargs, kind))
    for data, kwargs, kind in _layers.detection_layers(detection, name="cell"):
        viewer.add_layer(_layer(data, kwargs, kind))
    classes, events = viewer.layers["cell classes"], viewer.layers["cell events"]
    spark = int(detection.events.loc[detection.events["class"] == "spark", "id"].iloc[0])
    second = (slice(70, 74), slice(26, 30), slice(88, 94))
    assert not events.data[second].any() and not (events.data[60:80, 20:36, 80:100] == spark).any()
    classes.data[second], events.data[second] = SPARK, spark
    widget = SaveSampleWidget(viewer)
    widget.folder.value = tmp_path / "set"
    assert widget.save() is not None, widget.status.value
    said = [m for m in shown if "cover separate regions" in m]
    assert len(said) == 1 and "01_event_label.tif" in said[0] and f"{spark} (2 regions)" in said[0]


def _layer(data, kwargs, kind):
    from napari.layers import Layer

    return Layer.create(data, kwargs, kind)


def test_sample_data_opens_in_the_viewer(viewer):
    viewer.open_sample("casparks", "simulated")
    (layer,) = viewer.layers
    assert layer.data.shape == (500, 64, 512) and tuple(layer.scale) == (DT, PX, PX)


def _add(viewer, layer_data):
    for data, kwargs, kind in layer_data:
        viewer.add_layer(_layer(data, kwargs, kind))


def test_fill_remnants_refused_and_whole_events_corrected(viewer, tmp_path):
    """README 'Correct': napari's fill erases only the face-touching part of a detected event;
    saving refuses the remnants by id, and 'Apply to whole event' erases or relabels all of it."""
    from casparks.napari_plugin._widget import SaveSampleWidget

    classes_data, events_data = _diagonal_sparks()
    table = pd.DataFrame({"id": [3, 5, 6], "class": ["spark"] * 3, "amplitude_dff": [0.5, 0.6, 0.7]})
    _add(viewer, _layers.movie_layers(Movie(np.ones(classes_data.shape, np.uint16), PX, DT, name="cell"),
                                      classes_data, events_data, table))
    classes, events = viewer.layers["cell classes"], viewer.layers["cell events"]
    widget = SaveSampleWidget(viewer)
    widget.folder.value = tmp_path / "set"
    classes.n_edit_dimensions = 3
    classes.fill((1, 1, 1), 0)  # what the README used to say: it erases spark 5 too, and not all of 3
    assert (classes.data[events_data == 3] == SPARK).sum() == 8
    assert widget.save() is None
    assert "event(s) 3 (8 of 16 voxels left) are erased only in part" in widget.status.value
    assert not (tmp_path / "set").exists()

    events.selected_label = 3  # napari's colour picker on the events layer
    assert widget.event_id.value == 3
    widget.new_class.value = BACKGROUND
    assert widget.apply_to_event() == 16
    assert not classes.data[events_data == 3].any() and not (events.data == 3).any()
    classes.undo()  # one undoable step
    assert (classes.data[events_data == 3] == SPARK).sum() == 8
    classes.redo()
    widget.event_id.value, widget.new_class.value = 6, PUFF
    assert widget.apply_to_event() == 8 and (classes.data[events_data == 6] == PUFF).all()
    classes.data[5, 0:2, 0:2] = WAVE  # a missed event, painted
    widget.event_id.value = 42
    assert widget.apply_to_event() == 0 and "no event 42" in widget.status.value

    sample = widget.save()
    assert sample is not None, widget.status.value
    saved_classes, saved_events = read_stack(sample.class_label), read_stack(sample.event_label)
    assert not saved_classes[events_data == 3].any() and not saved_events[events_data == 3].any()
    assert check_dataset(tmp_path / "set") == []
    # hovering shows the saved classes, not the detection's
    features = events.features.set_index("index")
    new_id = int(saved_events[5, 0, 0])
    assert sorted(features.index) == [6, new_id]
    assert features.loc[6, "class"] == "puff" and features.loc[new_id, "class"] == "wave"
    assert features.loc[6, "amplitude_dff"] == 0.7 and np.isnan(features.loc[new_id, "amplitude_dff"])


def test_a_new_detection_keeps_edited_labels(viewer, detection):
    from casparks.napari_plugin._widget import _replace_layers

    _add(viewer, _layers.movie_layers(Movie(detection.class_label.astype(np.uint16), PX, DT, name="cell")))
    _replace_layers(viewer, _layers.detection_layers(detection, name="cell"))
    classes, events = viewer.layers["cell classes"], viewer.layers["cell events"]
    classes.paint((5, 10, 10), SPARK)
    edited = classes.data.copy()
    added, kept = _replace_layers(viewer, _layers.detection_layers(detection, name="cell"))
    # the edited classes keep their own events layer beside them (a new detection's ids paired
    # with them made a save refuse events erased whole, or take ids of another detection)
    assert kept == ["cell classes (edited)", "cell events (edited)"]
    assert viewer.layers["cell classes (edited)"] is classes and np.array_equal(classes.data, edited)
    assert viewer.layers["cell events (edited)"] is events
    assert viewer.layers["cell classes"] is added[0] and viewer.layers["cell classes"] is not classes
    assert [layer.name for layer in viewer.layers] == ["cell", "cell classes (edited)", "cell events (edited)",
                                                       "cell classes", "cell peaks", "cell events"]  # peaks replaced
    _, kept = _replace_layers(viewer, _layers.detection_layers(detection, name="cell"))
    assert kept == []
    # a run with other units: the edited layers stay on the movie's voxels, with its new units
    classes = viewer.layers["cell classes"]
    classes.paint((5, 10, 10), SPARK)
    other = dataclasses.replace(detection, pixel_size_um=0.1, frame_interval_ms=3.4)
    _, kept = _replace_layers(viewer, _layers.detection_layers(other, name="cell"))
    assert kept == ["cell classes (edited) 2", "cell events (edited) 2"]
    for name in kept:
        layer = viewer.layers[name]
        assert tuple(layer.scale) == pytest.approx((3.4, 0.1, 0.1))
        assert tuple(layer.translate) == pytest.approx((1.7, 0.05, 0.05))
        info = layer.metadata["casparks"]
        assert (info["pixel_size_um"], info["frame_interval_ms"]) == (0.1, 3.4)


def test_renamed_layers_stay_chosen(viewer, tmp_path, sim):
    from casparks.napari_plugin._widget import DetectWidget, SaveSampleWidget

    for name in ("01_video", "02_video"):
        _add(viewer, _layers.movie_layers(Movie(sim.movie.data, PX, DT, name=name), sim.class_label, sim.event_label))
    viewer.layers["02_video classes"].name = "checked"  # renamed before the widget opened
    save, detect = SaveSampleWidget(viewer), DetectWidget(viewer)
    for widget in (save, detect):  # docked, napari too resets their choices when layers change
        viewer.window.add_dock_widget(widget)
    save.image.value = detect.image.value = viewer.layers["02_video"]
    assert save.classes.value is viewer.layers["checked"]  # found by what it is, not its name
    save.image.value = movie = viewer.layers["01_video"]
    classes, events = viewer.layers["01_video classes"], viewer.layers["01_video events"]
    assert (save.classes.value, save.events.value) == (classes, events)
    classes.name, events.name, movie.name = "01 classes (checked)", "ids", "cell A"
    viewer.layers["02_video"].name = "cell B"
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="scratch")  # any later change of the layer list
    assert (save.image.value, save.classes.value, save.events.value) == (movie, classes, events)
    assert detect.image.value is viewer.layers["cell B"]
    save.folder.value = tmp_path / "set"
    assert save.save() is not None, save.status.value


def test_detect_widget_survives_its_deletion(qtbot):
    """Closing the viewer while a detection runs deletes the widget's Qt objects; its progress
    and end still arrive from the worker."""
    from qtpy import sip

    from casparks.napari_plugin._widget import DetectWidget

    class Viewer:  # enough of a viewer for the widget
        from napari.components import LayerList

        layers = LayerList()

    widget = DetectWidget(Viewer())
    widget.running = True
    sip.delete(widget.native)
    widget._progress(1, 2)
    widget._failed(CasparksError("gone"))
    widget._done()
    assert not widget.running


def test_dark_level_advice_is_not_only_the_cli_flag(caplog):
    """Detection in napari logs the dark-level advice too: it names the Python setting, not --offset alone."""
    from casparks.darklevel import DarkLevel
    from casparks.measure import _warn_dark_level

    _warn_dark_level(DarkLevel(float("nan"), float("nan"), float("nan"), "none", "too few pixels"), "cell")
    assert "--offset ADU" in caplog.text and "casparks.DetectSettings(measure={'offset_adu': ADU})" in caplog.text


def test_detect_widget_uses_each_movies_own_exact_units(viewer, qtbot, sim, monkeypatch):
    """Qt's 2 decimals made 0.1385 µm 0.14 (detected so, and written into the layer); a movie
    without units chosen after one with them was detected with the other's units."""
    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import DetectWidget

    seen = []
    monkeypatch.setattr(_widget.DetectWidget, "_detect", lambda self, movie, *a, **k: seen.append(movie) or None)
    monkeypatch.setattr(_widget.DetectWidget, "_show", lambda self, layer, detection: None)  # the units are the point
    viewer.add_image(sim.movie.data, name="odd", scale=(3.077, 0.1385, 0.1385), units=("ms", "um", "um"))
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    assert widget.image.value is viewer.layers["odd"]
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert (seen[-1].pixel_size_um, seen[-1].frame_interval_ms) == (0.1385, 3.077)
    viewer.add_image(sim.movie.data, name="bare")
    widget.image.value = viewer.layers["bare"]
    assert (widget.pixel_size.value, widget.frame_interval.value) == (0.0, 0.0)
    widget.run()
    assert "'bare' has no pixel size / frame interval" in widget.status.value and len(seen) == 1
    widget.pixel_size.value, widget.frame_interval.value = 0.0865, 2.5  # typed: used as typed, not rounded
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert (seen[-1].pixel_size_um, seen[-1].frame_interval_ms) == (0.0865, 2.5)
    viewer.add_image(sim.movie.data, name="oblong", scale=(DT, 0.2, 0.3), units=("ms", "um", "um"))
    widget.image.value = viewer.layers["oblong"]
    widget.run()
    assert "pixels of 0.2 × 0.3 µm, not square" in widget.status.value and len(seen) == 2
    assert tuple(viewer.layers["oblong"].scale) == (DT, 0.2, 0.3)


def test_detect_widget_shows_warnings_drops_stale_probabilities_and_reloads_a_changed_checkpoint(
        viewer, qtbot, sim, tmp_path, monkeypatch):
    """Warnings reached only the terminal; a probability layer of an earlier run stayed with its
    old scale; a checkpoint trained further was detected with the weights loaded before."""
    import shutil

    from casparks.models import resolve_model
    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import DetectWidget

    shown = []
    monkeypatch.setattr(_widget.DetectWidget, "_warn", lambda self, message: shown.append(message))
    viewer.add_image(sim.movie.data[:40], name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    widget.device.value = "cpu"
    mine = tmp_path / "mine.ckpt"
    shutil.copy(resolve_model(DEFAULT_MODEL).checkpoint, mine)
    shutil.copy(resolve_model(DEFAULT_MODEL).checkpoint.with_suffix(".yaml"), tmp_path / "mine.yaml")
    widget.model_file.value = mine
    widget.keep_probabilities.value = True
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_detection is not None, widget.status.value
    assert any("cell: 272 ms long, under half" in message for message in shown)
    first = widget._detectors
    assert "cell event probability" in viewer.layers
    widget.keep_probabilities.value = False
    os.utime(mine, ns=(mine.stat().st_atime_ns, mine.stat().st_mtime_ns + 10**9))  # the file trained further
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "cell event probability" not in viewer.layers
    assert len(widget._detectors) == 1 and widget._detectors is not first and list(widget._detectors) != list(first)


def test_the_save_widget_never_takes_another_movies_labels_of_the_same_shape(viewer, tmp_path, sim, detection):
    """With movie B renamed and A's events removed, A's save took 'B events' and wrote A's ids into it."""
    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import SaveSampleWidget

    for name in ("A", "B"):
        viewer.add_image(sim.movie.data, name=name, scale=(DT, PX, PX), units=("ms", "um", "um"))
        layers = _layers.detection_layers(dataclasses.replace(detection, source=None), name=name)
        movie_id = _widget._movie_id(viewer.layers[name])
        for data, kwargs, kind in layers:
            kwargs["metadata"][_layers.META_KEY]["movie_id"] = movie_id
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers["B"].name = "cell B"
    widget = SaveSampleWidget(viewer)
    widget.image.value = viewer.layers["A"]
    assert widget.events.value is viewer.layers["A events"]
    viewer.layers.remove("A events")
    widget._refresh()
    assert widget.events.value is not viewer.layers["B events"]


def test_the_save_widget_lets_go_of_another_movies_labels_when_the_movie_changes(viewer, tmp_path, sim, detection):
    """Choosing a movie without labels kept the last movie's classes and events in the boxes, and
    Save wrote them as its annotation (0 of 5 224 voxels on its events; check found nothing)."""
    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import SaveSampleWidget

    viewer.add_image(sim.movie.data, name="A", scale=(DT, PX, PX), units=("ms", "um", "um"))
    for data, kwargs, kind in _layers.detection_layers(dataclasses.replace(detection, source=None), name="A"):
        kwargs["metadata"][_layers.META_KEY]["movie_id"] = _widget._movie_id(viewer.layers["A"])
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.add_image(sim.movie.data[:, :, ::-1].copy(), name="B", scale=(DT, PX, PX), units=("ms", "um", "um"))
    _widget._movie_id(viewer.layers["B"])
    widget = SaveSampleWidget(viewer)
    widget.folder.value = tmp_path / "set"
    widget.image.value = viewer.layers["A"]
    assert widget.classes.value is viewer.layers["A classes"]
    widget.image.value = viewer.layers["B"]
    assert widget.classes.value is None and widget.events.value is None
    # chosen by hand, they are refused, and nothing is written
    widget.classes.value, widget.events.value = viewer.layers["A classes"], viewer.layers["A events"]
    assert widget.save() is None
    assert "the classes layer 'A classes' was made for another movie than 'B'" in widget.status.value
    assert not (tmp_path / "set").exists()
    # A's own labels save, and ids painted on the events layer alone are said to be dropped
    widget.image.value = viewer.layers["A"]
    widget.classes.value, widget.events.value = viewer.layers["A classes"], viewer.layers["A events"]
    events = viewer.layers["A events"]
    free = (slice(0, 3), slice(0, 2), slice(0, 4))
    assert not viewer.layers["A classes"].data[free].any()
    events.data[free] = 500
    assert widget.save() is not None, widget.status.value
    assert "24 voxels with an event id on background classes were saved without it" in widget.status.value
    # a folder that cannot be made is the user's to fix: one line, no bug report
    (tmp_path / "file").write_text("x")
    widget.folder.value = tmp_path / "file" / "sub"
    assert widget.save() is None
    assert "the sample cannot be written here" in widget.status.value and "failed" not in widget.status.value


def test_a_detection_keeps_annotations_opened_from_their_files(viewer, qtbot, tmp_path, sim):
    """Detect replaced the ground truth opened beside the movie, under the same names, without a word."""
    from casparks.napari_plugin._widget import DetectWidget

    sample = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    viewer.open(str(sample.video), plugin="casparks")
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    widget.device.value = "cpu"
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_detection is not None, widget.status.value
    np.testing.assert_array_equal(viewer.layers["01_video classes (annotation)"].data, sim.class_label)
    np.testing.assert_array_equal(viewer.layers["01_video classes"].data, widget.last_detection.class_label)
    assert "your layers kept as '01_video classes (annotation)'" in widget.status.value


def _detect_as(detection, probabilities=None):
    """A DetectWidget._detect that returns ``detection`` under the movie's name (no network run):
    with the probabilities when the widget keeps them."""
    def detect(self, movie, model, device, keep=False, *_):
        return dataclasses.replace(detection, name=movie.name, probabilities=probabilities if keep else None)
    return detect


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_detect_widget_saves_the_results_as_casparks_detect_does(viewer, qtbot, tmp_path, sim, detection,
                                                                  monkeypatch):
    """A physiologist wants the detection's files (not only layers) without the command line;
    existing results are replaced only when asked."""
    from casparks.detection import read_detection
    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import DetectWidget

    probabilities = np.zeros((4, *detection.class_label.shape), np.float32)
    probabilities[1] = 0.5
    monkeypatch.setattr(_widget.DetectWidget, "_detect", _detect_as(detection, probabilities))
    viewer.add_image(sim.movie.data, name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget = DetectWidget(viewer)
    assert not widget.save_button.enabled  # nothing to save yet
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert widget.save_button.enabled, widget.status.value
    out = tmp_path / "results"
    widget.folder.value = out
    paths = widget.save()
    assert paths is not None, widget.status.value
    assert _files(out) == ["cell_class_label.tif", "cell_detection.json", "cell_event_label.tif", "cell_events.csv"]
    assert widget.status.value == f"saved 4 files of 'cell' in {out}"
    saved = read_detection(out / "cell_detection.json")
    np.testing.assert_array_equal(saved.class_label, widget.last_detection.class_label)
    np.testing.assert_array_equal(saved.event_label, widget.last_detection.event_label)
    assert list(saved.events["id"]) == list(widget.last_detection.events["id"]) and len(saved.events) > 0
    assert (saved.pixel_size_um, saved.frame_interval_ms) == pytest.approx((PX, DT))
    assert read_units(out / "cell_class_label.tif") == pytest.approx((PX, DT))

    # a second detection, with probabilities: refused over the first one's files, which stay as they were
    widget.keep_probabilities.value = True
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    before = _stamps(out)
    assert widget.save() is None
    assert "cell_class_label.tif: exists already; choose another folder, or tick 'overwrite existing results'" \
        in widget.status.value and "\n" not in widget.status.value
    assert _stamps(out) == before
    widget.overwrite.value = True
    assert widget.save() is not None, widget.status.value
    assert _files(out) == ["cell_class_label.tif", "cell_detection.json", "cell_event_label.tif", "cell_events.csv",
                           "cell_probabilities.tif"]
    assert widget.status.value == f"saved 5 files of 'cell' in {out}"
    saved = read_detection(out / "cell_detection.json")
    np.testing.assert_allclose(saved.probabilities, probabilities)
    np.testing.assert_array_equal(saved.class_label, widget.last_detection.class_label)

    # a folder that cannot be: one line, no traceback
    (tmp_path / "a file").write_text("x")
    widget.folder.value = tmp_path / "a file"
    assert widget.save() is None
    assert "a file: results cannot be written here" in widget.status.value and "\n" not in widget.status.value


def test_detect_widget_saves_only_the_chosen_movies_detection(viewer, qtbot, tmp_path, sim, detection, monkeypatch):
    """Saving while another movie is chosen would file the last detection under a movie it is not of."""
    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import DetectWidget

    monkeypatch.setattr(_widget.DetectWidget, "_detect", _detect_as(detection))
    for name in ("A", "B"):
        viewer.add_image(sim.movie.data, name=name, scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget = DetectWidget(viewer)
    widget.image.value = viewer.layers["A"]
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    widget.folder.value = tmp_path / "results"
    widget.image.value = viewer.layers["B"]
    assert not widget.save_button.enabled  # B has no detection to save
    assert widget.save() is None
    assert widget.status.value.startswith("the movie 'B' has no detection in this panel to save; run Detect")
    assert not (tmp_path / "results").exists()
    widget.run()  # B detected too: A's detection is still A's to save (only the last one was kept)
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    widget.image.value = viewer.layers["A"]
    assert widget.save_button.enabled
    assert widget.save() is not None, widget.status.value
    assert _files(tmp_path / "results")[0] == "A_class_label.tif"
    # the same file removed and opened again is the same movie (it was refused: "of 'A', not of 'A'")
    source = tmp_path / "A.tif"
    viewer.layers["A"].metadata = {**viewer.layers["A"].metadata, "casparks": {
        **viewer.layers["A"].metadata.get("casparks", {}), "source": str(source)}}
    widget._detections[_widget._movie_id(viewer.layers["A"])] = dataclasses.replace(
        widget._detections[_widget._movie_id(viewer.layers["A"])], source=source)
    viewer.layers.remove("A")
    again = viewer.add_image(sim.movie.data, name="A", scale=(DT, PX, PX), units=("ms", "um", "um"),
                             metadata={"casparks": {"source": str(source)}})
    widget.image.value = again
    widget.overwrite.value = True
    assert widget.save() is not None, widget.status.value


def test_detect_widget_cancels_a_running_detection(viewer, qtbot, sim, detection, monkeypatch):
    """A long movie started by mistake: Cancel stops it at the next inference window, adds and
    replaces no layer, is no error, and the widget detects again afterwards."""
    import threading

    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import DetectWidget

    viewer.add_image(sim.movie.data, name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    _add(viewer, _layers.detection_layers(detection, name="cell"))  # an earlier run's results
    earlier = list(viewer.layers)
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))  # 2 windows of the 80 frames
    widget.device.value = "cpu"
    windows, at_first, go_on = [], threading.Event(), threading.Event()

    def progress(self, done, total, text=None):  # in the worker: wait at the first window until cancelled
        windows.append((done, total))
        if done == 1:
            at_first.set()
            go_on.wait(30)

    errors = []
    monkeypatch.setattr(_widget.DetectWidget, "_progress", progress)
    monkeypatch.setattr(_widget, "_notify_error", lambda exc, what: errors.append(exc) or str(exc))
    widget.run()
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(at_first.is_set, timeout=60_000)
    widget.cancel_button.native.click()
    go_on.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert windows == [(0, 1), (1, 2)]  # stopped before the second window
    assert widget.status.value.startswith("detection cancelled") and errors == []
    assert list(viewer.layers) == earlier and widget.last_detection is None
    assert widget.run_button.enabled and not widget.cancel_button.enabled and not widget.save_button.enabled

    monkeypatch.undo()
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_detection is not None and widget.status.value.startswith("found "), widget.status.value
    assert [layer.name for layer in viewer.layers] == ["cell", "cell classes", "cell peaks", "cell events"]
    assert viewer.layers["cell classes"] is not earlier[1]
    assert widget.save_button.enabled
    widget.run()  # while it runs, Save would write the detection whose layers it replaces
    assert not widget.save_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.save_button.enabled


@pytest.mark.parametrize("gone", ["the panel", "the movie layer"])
def test_a_detection_whose_panel_or_movie_is_gone_changes_no_layer(viewer, qtbot, sim, detection, monkeypatch, gone):
    """Closing the Detect panel during a run left the run going, and its results then replaced
    those of a panel opened since (units and classes of the first run); a movie layer removed
    during a run got result layers of a movie no longer there, and a Save that could never work."""
    import threading

    from casparks.napari_plugin import _widget
    from casparks.napari_plugin._widget import DetectWidget

    viewer.add_image(sim.movie.data, name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    viewer.add_image(sim.movie.data, name="other", scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    dock = viewer.window.add_dock_widget(widget)
    widget.device.value = "cpu"
    widget.image.value = viewer.layers["cell"]
    at_first, go_on = threading.Event(), threading.Event()

    def progress(self, done, total, text=None):  # in the worker: wait at the first window
        if done == 1:
            at_first.set()
            go_on.wait(30)

    monkeypatch.setattr(_widget.DetectWidget, "_progress", progress)
    widget.run()
    qtbot.waitUntil(at_first.is_set, timeout=60_000)
    if gone == "the panel":
        viewer.window.remove_dock_widget(dock)
    else:
        viewer.layers.remove("cell")
    before = [layer.name for layer in viewer.layers]
    go_on.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == before  # no result layers, no layer replaced
    assert not widget.save_button.enabled
    if gone == "the movie layer":
        assert "was removed during the run: its results are not shown" in widget.status.value
    else:  # docked again, the same panel works again
        monkeypatch.undo()
        viewer.window.add_dock_widget(widget)
        widget.run()
        qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
        assert widget.status.value.startswith("found ") and "cell classes" in viewer.layers


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("", "auto"), (" 100 ", 100.0), ("1,5", 1.5),
                                            ("1000", 1000.0), ("1.000", 1.0), ("-3,25", -3.25), ("0,125", 0.125),
                                            ("1,000,000", 1e6)])
def test_dark_level_box_reads_a_decimal_comma(text, expected):
    from casparks.napari_plugin._widget import _offset_of

    assert _offset_of(text) == expected


@pytest.mark.parametrize("text, plain, point", [("1,000", "1000", "1.000"), ("12,500", "12500", "12.500")])
def test_dark_level_box_refuses_a_comma_it_cannot_read_one_way(text, plain, point):
    """"1,000" was read as 1.0 ADU (a decimal comma) where a user meant a thousand."""
    from casparks.napari_plugin._widget import _offset_of

    with pytest.raises(CasparksError, match="can be read two ways") as info:
        _offset_of(text)
    assert f"({plain})" in str(info.value) and f"({point})" in str(info.value)


def test_detect_widget_takes_the_dark_level_in_its_box(viewer, qtbot, sim):
    """The dark-level warning told napari users to pass DetectSettings(measure=...) in Python: the
    widget had no place for it. Its box takes auto, a dark level in ADU, and refuses the rest."""
    from casparks.napari_plugin._widget import DetectWidget

    viewer.add_image(sim.movie.data, name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget = DetectWidget(viewer, settings=DetectSettings(window_frames=64))
    widget.device.value = "cpu"
    assert widget.offset.value == "auto"
    widget.offset.value = f"{sim.offset_adu:.1f}"
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    found = widget.last_detection
    assert found is not None and found.settings["measure"]["offset_adu"] == pytest.approx(sim.offset_adu, abs=0.05)
    assert found.dark_level is None  # given, not read
    widget.offset.value = "dark"
    widget.run()
    assert not widget.running and widget.status.value.startswith("the dark level 'dark' is not a number")


# ----------------------------------------------------------------------------------------------
# Measure events: corrected labels measured in the viewer


def _corrected_in_viewer(viewer, sim, detection, erased: int):
    """The movie and its detection's layers in a viewer, event ``erased`` erased whole with Apply
    and a missed spark painted on the classes layer: the Save widget and the painted voxels."""
    from casparks.napari_plugin._widget import SaveSampleWidget

    _add(viewer, _layers.movie_layers(Movie(sim.movie.data, PX, DT, name="cell")))
    _add(viewer, _layers.detection_layers(detection, name="cell"))
    widget = SaveSampleWidget(viewer)
    widget.offset.value = f"{sim.offset_adu:.1f}"
    widget.event_id.value, widget.new_class.value = erased, BACKGROUND
    assert widget.apply_to_event() > 0, widget.status.value
    painted = np.zeros(sim.movie.data.shape, bool)
    painted[70:74, 26:30, 88:94] = True
    assert not viewer.layers["cell events"].data[painted].any()
    viewer.layers["cell classes"].data[painted] = SPARK
    return widget, painted


def test_measure_events_shows_the_corrected_events_measurements(viewer, tmp_path, sim, detection):
    """README 'Correct': a newly painted event had no measurements until the sample was saved and
    measured with `casparks measure`; Measure events shows every event's, as a detection's."""
    from casparks.labelled import measure_labels
    from casparks.measure import MeasureConfig

    ids = sorted(int(i) for i in detection.events["id"])
    erased = ids[0]  # not the largest id: a painted event is numbered after the largest
    widget, painted = _corrected_in_viewer(viewer, sim, detection, erased)
    classes, events = viewer.layers["cell classes"], viewer.layers["cell events"]
    assert erased in set(viewer.layers["cell peaks"].features["id"])
    classes_before, events_before = classes.data.copy(), events.data.copy()

    measured = widget.measure()
    assert measured is not None, widget.status.value
    new_id = max(ids) + 1
    assert widget.status.value.startswith(f"measured {len(ids)} events ({len(ids)} sparks, 0 waves, 0 puffs); ")
    assert f"new event id {new_id} in the events layer" in widget.status.value
    # the labels are as corrected; only the painted voxels got the id Save gives them
    np.testing.assert_array_equal(classes.data, classes_before)
    assert (events.data[painted] == new_id).all()
    np.testing.assert_array_equal(events.data[~painted], events_before[~painted])
    # a row per event id in the layer, the painted one measured, none for the erased one
    features = events.features.set_index("index")
    assert sorted(features.index) == sorted(set(ids) - {erased} | {new_id}) == sorted(set(np.unique(events.data)) - {0})
    assert features.loc[new_id, "class"] == "spark" and np.isfinite(features.loc[new_id, "amplitude_dff"])
    assert features["amplitude_dff"].notna().all() and features["peak_ms"].notna().all()
    assert 70 * DT <= features.loc[new_id, "peak_ms"] < 74 * DT
    # the table is measure_labels' on the corrected labels, the same numbers
    direct = measure_labels(sim.movie.data, classes.data, events.data, pixel_size_um=PX, frame_interval_ms=DT,
                            config=MeasureConfig(offset_adu=round(sim.offset_adu, 1)))
    np.testing.assert_allclose(features["amplitude_dff"].to_numpy(float),
                               direct.events.set_index("id").loc[features.index, "amplitude_dff"].to_numpy(float))
    np.testing.assert_array_equal(measured.event_label, np.where(np.isin(classes.data, (SPARK, WAVE, PUFF)),
                                                                 events.data, 0))
    # hovering the painted event shows its measurements (the events layer is the selected one)
    assert viewer.layers.selection.active is events
    world = events.data_to_world(np.argwhere(painted)[0])
    viewer.dims.set_point(0, world[0])
    status = events.get_status(world, world=True)
    assert status["value"].startswith(f"{new_id}; ") and "amplitude_dff: " in status["value"]
    # the peaks layer is the measured one: the painted spark's peak in, the erased one's out
    peaks = viewer.layers["cell peaks"]
    assert sorted(peaks.features["id"]) == sorted(features.index)
    assert len(peaks.data) == len(features)
    assert [layer.name for layer in viewer.layers] == ["cell", "cell classes", "cell peaks", "cell events"]
    # Save writes the ids shown and measured
    widget.folder.value = tmp_path / "set"
    sample = widget.save()
    assert sample is not None, widget.status.value
    np.testing.assert_array_equal(read_stack(sample.event_label), events.data)
    assert sorted(events.features["index"]) == sorted(features.index)  # Save kept the measurements
    assert np.isfinite(events.features.set_index("index").loc[new_id, "amplitude_dff"])


def test_measure_events_numbers_a_painted_event_as_save_does(viewer, tmp_path, sim, detection):
    """The event of the largest id erased with the brush on the classes layer alone (its ids stay
    on background voxels) and a spark painted: Save drops those ids and numbers the painted spark
    after the ids left (it takes the erased id); measure_labels given the layers' arrays numbers it
    after the erased id. Measure events shows and measures the ids Save writes."""
    largest = int(detection.events["id"].max())
    first = int(detection.events["id"].min())
    widget, painted = _corrected_in_viewer(viewer, sim, detection, first)  # Apply erases both layers
    classes, events = viewer.layers["cell classes"], viewer.layers["cell events"]
    brushed = events.data == largest
    classes.data[brushed] = BACKGROUND
    assert widget.measure() is not None, widget.status.value
    assert not events.data[brushed].any() and (events.data[painted] == largest).all()
    assert f"; {int(brushed.sum())} voxels with an event id on background classes are no event" in widget.status.value
    features = events.features.set_index("index")
    assert sorted(features.index) == sorted(set(np.unique(events.data)) - {0})
    assert features.loc[largest, "class"] == "spark" and 70 * DT <= features.loc[largest, "peak_ms"] < 74 * DT
    assert np.isnan(features.loc[largest, "confidence"])  # the painted spark's, not the erased one's
    widget.folder.value = tmp_path / "set"
    sample = widget.save()
    assert sample is not None, widget.status.value
    np.testing.assert_array_equal(read_stack(sample.event_label), events.data)


def test_measure_events_without_an_events_layer_adds_one(viewer, sim):
    """Classes alone (drawn in Fiji, or the events layer deleted): the events are connected
    components per class, shown in a new events layer with their measurements, and their peaks."""
    from casparks.dataset import complete_event_label
    from casparks.napari_plugin._widget import SaveSampleWidget

    _add(viewer, _layers.movie_layers(Movie(sim.movie.data, PX, DT, name="cell"), sim.class_label))
    widget = SaveSampleWidget(viewer)
    widget.offset.value = f"{sim.offset_adu:.1f}"
    assert widget.events.value is None and widget.classes.value is viewer.layers["cell classes"]
    measured = widget.measure()
    assert measured is not None, widget.status.value
    events = viewer.layers["cell events"]
    assert widget.events.value is events and viewer.layers.selection.active is events
    np.testing.assert_array_equal(events.data, complete_event_label(sim.class_label, None))
    in_layer = sorted(set(np.unique(events.data)) - {0})
    assert sorted(events.features["index"]) == in_layer == sorted(measured.events["id"])
    assert len(measured.events) > 0 and "their ids in the new layer 'cell events'" in widget.status.value
    assert sorted(viewer.layers["cell peaks"].features["id"]) == sorted(
        measured.events.loc[measured.events["class"].isin(["spark", "puff"]), "id"])


def test_measure_events_reports_errors_as_one_line(viewer, sim, detection):
    """No units, no movie, labels of another shape, an event of two classes, a dark level that is
    no number: one line each, and no layer changes."""
    from casparks.napari_plugin._widget import SaveSampleWidget

    viewer.add_image(sim.movie.data, name="raw")  # no units
    _add(viewer, _layers.detection_layers(detection, name="raw"))
    widget = SaveSampleWidget(viewer)
    classes, events = viewer.layers["raw classes"], viewer.layers["raw events"]
    assert (widget.image.value, widget.classes.value, widget.events.value) == (viewer.layers["raw"], classes, events)
    features = events.features.copy()
    names = [layer.name for layer in viewer.layers]

    def refused(expected: str) -> None:
        assert widget.measure() is None
        assert expected in widget.status.value and "\n" not in widget.status.value
        assert [layer.name for layer in viewer.layers] == names
        pd.testing.assert_frame_equal(events.features, features)

    refused("'raw' has no pixel size / frame interval; enter them (µm, ms) in the panel's pixel size and frame "
            "interval boxes")
    viewer.layers["raw"].scale, viewer.layers["raw"].units = (DT, PX, PX), ("ms", "um", "um")
    widget.offset.value = "dark"
    refused("the dark level 'dark' is not a number")
    widget.offset.value = "auto"
    first = int(detection.events["id"].iloc[0])
    classes.data[tuple(np.argwhere(events.data == first)[0])] = PUFF  # one voxel of a spark painted a puff
    refused(f"1 annotated event(s) carry more than one class: ids {first}")
    classes.data[events.data == first] = SPARK
    trimmed = tuple(np.argwhere(events.data == first)[0])
    classes.data[trimmed] = BACKGROUND  # what the fill bucket leaves: Save refuses it, and so does Measure
    total = int((events.data == first).sum())
    refused(f"event(s) {first} ({total - 1} of {total} voxels left) are erased only in part")
    classes.data[trimmed] = SPARK
    viewer.add_labels(np.zeros((80, 32, 90), np.uint8), name="other")
    names.append("other")
    widget.classes.value = viewer.layers["other"]
    refused("the classes layer has shape (80, 32, 90), the movie (80, 32, 96)")
    widget.classes.value = classes
    widget.image.value = None
    refused("choose the movie and its classes layer")
    widget.image.value = viewer.layers["raw"]
    assert widget.measure() is not None, widget.status.value  # units given: measured


def test_measure_events_shows_each_events_layers_own_peaks(viewer, tmp_path, sim, detection):
    """An annotated movie detected: measuring the annotation's layers replaced the detection's
    '01_video peaks' with the annotation's peaks under its name. Each events layer measured gets
    its own peaks layer, named after it, and keeps it when renamed."""
    from casparks.napari_plugin._widget import SaveSampleWidget, _replace_layers

    sample = write_sample(tmp_path / "set", sim.movie, sim.class_label, sim.event_label)
    viewer.open(str(sample.video), plugin="casparks")
    _replace_layers(viewer, _layers.detection_layers(detection, name="01_video"))  # what Detect adds
    detected = viewer.layers["01_video peaks"]
    detected_rows = detected.features.copy()
    widget = SaveSampleWidget(viewer)
    widget.offset.value = f"{sim.offset_adu:.1f}"
    widget.classes.value = viewer.layers["01_video classes (annotation)"]
    widget.events.value = truth = viewer.layers["01_video events (annotation)"]
    measured = widget.measure()
    assert measured is not None, widget.status.value
    assert viewer.layers["01_video peaks"] is detected  # the detection's peaks untouched
    pd.testing.assert_frame_equal(detected.features, detected_rows)
    own = viewer.layers["01_video peaks (annotation)"]
    peaked = measured.events["class"].isin(["spark", "puff"])
    assert sorted(own.features["id"]) == sorted(measured.events.loc[peaked, "id"]) != sorted(detected_rows["id"])
    assert [layer.name for layer in viewer.layers] == [
        "01_video", "01_video classes (annotation)", "01_video peaks (annotation)", "01_video events (annotation)",
        "01_video classes", "01_video peaks", "01_video events"]
    # the detection's layers measured: their own peaks replaced, the annotation's untouched
    widget.classes.value, widget.events.value = viewer.layers["01_video classes"], viewer.layers["01_video events"]
    assert widget.measure() is not None, widget.status.value
    assert viewer.layers["01_video peaks (annotation)"] is own and viewer.layers["01_video peaks"] is not detected
    assert sorted(viewer.layers["01_video peaks"].features["id"]) == sorted(detected_rows["id"])
    # renamed, the annotation's events keep their peaks layer (replaced under its name, no second one)
    truth.name = "truth"
    widget.classes.value, widget.events.value = viewer.layers["01_video classes (annotation)"], truth
    assert widget.measure() is not None, widget.status.value
    assert "truth peaks" not in viewer.layers and viewer.layers["01_video peaks (annotation)"] is not own
    assert sorted(viewer.layers["01_video peaks (annotation)"].features["id"]) == sorted(own.features["id"])
    assert len(viewer.layers) == 7


def test_measure_events_keeps_the_detections_confidence_of_unchanged_events(viewer, sim, detection):
    """Measure emptied the confidence of every event (16 of 16 had one before, 0 after), untouched
    ones included: the low-confidence events are those a corrector checks."""
    from casparks.classes import CLASS_NAMES

    ids = sorted(int(i) for i in detection.events["id"])
    widget, painted = _corrected_in_viewer(viewer, sim, detection, erased=ids[0])
    widget.event_id.value, widget.new_class.value = ids[1], PUFF  # relabelled
    assert widget.apply_to_event() > 0, widget.status.value
    events = viewer.layers["cell events"]
    assert events.features["confidence"].notna().all()
    assert widget.measure() is not None, widget.status.value
    features = events.features.set_index("index")
    new_id = max(ids) + 1
    given = detection.events.set_index("id")["confidence"]
    kept = ids[2:]
    assert features.loc[ids[1], "class"] == CLASS_NAMES[PUFF] and np.isnan(features.loc[ids[1], "confidence"])
    assert np.isnan(features.loc[new_id, "confidence"])  # painted: no detector's confidence
    np.testing.assert_allclose(features.loc[kept, "confidence"].to_numpy(float), given.loc[kept].to_numpy(float))
    # the peaks carry the same rows
    peaks = viewer.layers["cell peaks"].features.set_index("id")
    np.testing.assert_allclose(peaks.loc[kept, "confidence"].to_numpy(float), given.loc[kept].to_numpy(float))


def test_measure_events_renumbers_in_one_undoable_step_or_not_at_all(viewer, sim, detection):
    """Measure set the events layer's data anew: Ctrl+Z could not undo its ids (nor the erase
    before it), and it wrote ids with 'complete event ids' unticked."""
    ids = sorted(int(i) for i in detection.events["id"])
    widget, painted = _corrected_in_viewer(viewer, sim, detection, erased=ids[0])
    events = viewer.layers["cell events"]
    erased_ids = events.data.copy()
    assert widget.measure() is not None, widget.status.value
    new_id = max(ids) + 1
    assert (events.data[painted] == new_id).all()
    events.undo()  # Measure's ids
    np.testing.assert_array_equal(events.data, erased_ids)
    events.undo()  # and the erase before it
    np.testing.assert_array_equal(events.data, detection.event_label)
    assert "Ctrl+Z on the events layer undoes it" in widget.status.value
    # unticked: measured all the same, the layer left as it is, the status says what hovering lacks
    events.redo()
    widget.complete.value = False
    measured = widget.measure()
    assert measured is not None, widget.status.value
    np.testing.assert_array_equal(events.data, erased_ids)
    assert new_id in set(measured.events["id"]) and new_id not in set(events.features["index"])
    assert f"event {new_id} measured without its id in the events layer ('complete event ids' is " \
           "unticked): hovering shows no row for it" in widget.status.value
    assert new_id in set(viewer.layers["cell peaks"].features["id"])


def test_save_renumbers_the_events_layer_in_one_undoable_step(viewer, tmp_path, sim, detection):
    """Save set the events layer's data anew to show the saved ids: Ctrl+Z could undo neither
    them nor the Apply erase before it."""
    ids = sorted(int(i) for i in detection.events["id"])
    widget, painted = _corrected_in_viewer(viewer, sim, detection, erased=ids[0])
    events = viewer.layers["cell events"]
    erased_ids = events.data.copy()
    widget.folder.value = tmp_path / "set"
    sample = widget.save()
    assert sample is not None, widget.status.value
    new_id = max(ids) + 1
    assert (events.data[painted] == new_id).all()
    np.testing.assert_array_equal(events.data, tifffile.imread(sample.event_label))
    assert "cannot be undone" not in widget.status.value
    events.undo()  # Save's ids
    np.testing.assert_array_equal(events.data, erased_ids)
    events.undo()  # and the erase before it
    np.testing.assert_array_equal(events.data, detection.event_label)


def _narrow_events_corrected(viewer, sim, detection):
    """The detection in a uint8 events layer whose largest id is 255, one event erased and one
    painted (its new id, 256, does not fit): the widget, the painted voxels, the events layer."""
    largest = int(detection.events["id"].max())
    narrow = np.where(detection.event_label == largest, 255, detection.event_label).astype(np.uint8)
    renamed = detection.events.assign(id=detection.events["id"].replace(largest, 255))
    widget, painted = _corrected_in_viewer(viewer, sim, dataclasses.replace(detection, event_label=narrow,
                                                                            events=renamed),
                                            erased=int(detection.events["id"].min()))
    return widget, painted, viewer.layers["cell events"]


def test_save_widens_an_events_layer_too_narrow_for_a_new_id_and_says_so(viewer, tmp_path, sim, detection):
    """A painted event numbered 256 in a uint8 events layer: Save widens the layer (which napari
    cannot undo) rather than wrapping the id to 0, and the status line says so."""
    widget, painted, events = _narrow_events_corrected(viewer, sim, detection)
    widget.folder.value = tmp_path / "set"
    assert widget.save() is not None, widget.status.value
    assert events.data.dtype == np.uint16 and (events.data[painted] == 256).all()
    assert "the events layer widened to uint16 for its new ids, which cannot be undone" in widget.status.value


def test_measure_events_widens_an_events_layer_too_narrow_for_a_new_id(viewer, sim, detection):
    """A painted event numbered 256 in a uint8 events layer: the layer is widened (napari cannot
    undo that) rather than its id wrapped to 0, and the status line says so."""
    widget, painted, events = _narrow_events_corrected(viewer, sim, detection)
    assert events.data.dtype == np.uint8
    assert widget.measure() is not None, widget.status.value
    assert events.data.dtype == np.uint16 and (events.data[painted] == 256).all()
    assert "new event id 256 in the events layer (as Save numbers them; the layer widened to uint16 for them, " \
           "which cannot be undone)" in widget.status.value


def test_a_movie_without_units_is_measured_and_saved_with_the_save_panels_own_unit_boxes(viewer, tmp_path, sim):
    """A movie whose file has no units could be measured and saved only after Detect's boxes were
    filled and a detection run. The Save panel has the boxes (the movie's units where it has them,
    following them), refuses in one line while they are empty, and gives the movie and its labels
    the units it measured or saved with."""
    from casparks.napari_plugin._widget import DetectWidget, SaveSampleWidget

    data = tmp_path / "bare"
    data.mkdir()
    tifffile.imwrite(data / "01_video.tif", np.asarray(sim.movie.data, np.uint16))
    tifffile.imwrite(data / "01_class_label.tif", sim.class_label.astype(np.uint8))
    tifffile.imwrite(data / "01_event_label.tif", sim.event_label.astype(np.uint16))
    assert read_units(data / "01_video.tif") == (None, None)
    viewer.open(str(data / "01_video.tif"), plugin="casparks")
    image, classes, events = (viewer.layers[name] for name in ("01_video", "01_video classes", "01_video events"))
    detect, widget = DetectWidget(viewer), SaveSampleWidget(viewer)
    widget.offset.value = f"{sim.offset_adu:.1f}"
    widget.folder.value = tmp_path / "set"
    assert (widget.image.value, widget.classes.value, widget.events.value) == (image, classes, events)
    assert (widget.pixel_size.value, widget.frame_interval.value) == (0.0, 0.0)
    for act in (widget.measure, widget.save):
        assert act() is None
        assert widget.status.value == ("'01_video' has no pixel size / frame interval; enter them (µm, ms) in the "
                                       "panel's pixel size and frame interval boxes")
    assert not (tmp_path / "set").exists() and len(viewer.layers) == 3
    widget.pixel_size.value, widget.frame_interval.value = 0.1385, 3.077  # typed: used as typed, not rounded
    measured = widget.measure()
    assert measured is not None, widget.status.value
    assert (measured.pixel_size_um, measured.frame_interval_ms) == (0.1385, 3.077)
    for layer in (image, classes, events, viewer.layers["01_video peaks"]):  # the peaks overlay the movie
        assert tuple(layer.scale) == pytest.approx((3.077, 0.1385, 0.1385)), layer.name
    assert (detect.pixel_size.value, detect.frame_interval.value) == pytest.approx((0.1385, 3.077))  # one record
    sample = widget.save()
    assert sample is not None, widget.status.value
    for path in (sample.video, sample.class_label, sample.event_label):
        assert read_units(path) == pytest.approx((0.1385, 3.077))
    # another movie chosen shows its own units, or none: never the first one's
    viewer.add_image(sim.movie.data, name="cell", scale=(DT, PX, PX), units=("ms", "um", "um"))
    widget.image.value = viewer.layers["cell"]
    assert (widget.pixel_size.value, widget.frame_interval.value) == pytest.approx((PX, DT))
    viewer.add_image(sim.movie.data, name="raw")
    widget.image.value = viewer.layers["raw"]
    assert (widget.pixel_size.value, widget.frame_interval.value) == (0.0, 0.0)
    # units given to the movie elsewhere (a Detect run with its boxes) are followed where nothing was typed
    viewer.layers["raw"].scale, viewer.layers["raw"].units = (DT, PX, PX), ("ms", "um", "um")
    _add(viewer, _layers.result_layers(sim.class_label, sim.event_label, None, "raw", PX, DT))
    assert (widget.pixel_size.value, widget.frame_interval.value) == pytest.approx((PX, DT))

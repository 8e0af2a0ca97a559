"""casparks measure / casparks.labelled: labels a person drew or corrected, measured as detect measures."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import casparks
from casparks.cli import main
from casparks.classes import IGNORE, PUFF, SPARK, WAVE
from casparks.dataset import write_sample
from casparks.detection import write_detection
from casparks.errors import CasparksError
from casparks.io import Movie, read_stack, write_class_label, write_stack
from casparks.labelled import event_ids, measure_files, measure_labels
from casparks.measure import MeasureConfig, measure_events
from casparks.simulate import load_simulation_config, simulate_movie


@pytest.fixture(scope="module")
def sim():
    """A dense movie (120 × 48 × 160) with sparks and puffs, its truth and its labels."""
    return simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 48, "width_px": 160}),
                          seed=[0, 1])


def test_labels_are_measured_as_detect_measures_them_and_keep_their_ids(sim):
    """The events table is measure_events' on the labels given, under the annotation's own ids
    (renumbered ids would not join the annotation's files or a truth table)."""
    events = sim.event_label.astype(np.int64) * 3  # ids 3, 6, 9, …: not 1..n
    found = measure_labels(sim.movie, sim.class_label, events, config=MeasureConfig(offset_adu=sim.offset_adu))
    direct = measure_events(sim.movie, sim.class_label, events, sim.movie.pixel_size_um,
                            sim.movie.frame_interval_ms, config=MeasureConfig(offset_adu=sim.offset_adu))
    pd.testing.assert_frame_equal(found.events, direct)
    ids = np.unique(events[events > 0])
    assert sorted(found.events["id"]) == ids.tolist() and np.all(ids % 3 == 0)
    assert np.array_equal(found.event_label, events) and np.array_equal(found.class_label, sim.class_label)
    assert found.model == "labels" and np.isnan(found.event_threshold) and found.events["confidence"].isna().all()
    per_class = {name: len(np.unique(events[sim.class_label == code]))
                 for name, code in (("spark", SPARK), ("wave", WAVE), ("puff", PUFF))}
    assert found.counts == per_class and per_class["spark"] >= 5 and per_class["puff"] >= 1
    assert found.frequency_per in ("cell", "field") and len(found.frequency) == 3
    assert "labels measured, no model" in repr(found)
    # the ids are the annotation's: each joins the simulator's truth table (how well measure reads
    # each column against it is benchmarks/bench_measure.py's, results/measure.md)
    truth_ids = set(sim.events.loc[sim.events.labelled, "event_id"])
    assert set(found.events["id"] // 3) <= truth_ids


def test_ids_on_ignore_voxels_are_dropped_and_unlabelled_event_voxels_get_new_ids():
    classes = np.zeros((20, 16, 16), np.uint8)
    events = np.zeros(classes.shape, np.uint16)
    classes[2:6, 2:5, 2:5], events[2:6, 2:5, 2:5] = SPARK, 7
    classes[8:12, 8:12, 8:12], events[8:12, 8:12, 8:12] = IGNORE, 9  # an id on ignore voxels only
    classes[14:18, 2:5, 10:14] = PUFF  # event voxels without an id
    checked, ids = event_ids(classes, events, classes.shape, "m")
    assert checked.dtype == np.uint8 and np.array_equal(checked, classes)
    assert sorted(np.unique(ids).tolist()) == [0, 7, 10]  # 9 dropped; the puff numbered after the largest id
    assert (ids[14:18, 2:5, 10:14] == 10).all() and not ids[8:12, 8:12, 8:12].any()


def test_a_painted_event_is_numbered_as_napari_saves_it():
    """An event erased with the brush on the classes layer leaves its id on background voxels: the
    painted event's new id comes after the ids left, as Save training sample writes it."""
    from casparks.dataset import complete_event_label

    classes = np.zeros((20, 16, 16), np.uint8)
    events = np.zeros(classes.shape, np.uint16)
    classes[2:6, 2:5, 2:5], events[2:6, 2:5, 2:5] = SPARK, 3
    events[8:12, 8:12, 8:12] = 6  # erased on the classes layer only: its id is left on background
    classes[14:18, 2:5, 10:14] = SPARK  # painted, no id yet
    _, ids = event_ids(classes, events, classes.shape, "m")
    assert sorted(np.unique(ids).tolist()) == [0, 3, 4]
    assert np.array_equal(ids, complete_event_label(classes, events))


def test_measure_and_evaluate_movie_number_an_unlabelled_event_alike(sim):
    """From arrays, evaluate_movie numbered an event without an id after an id left on background
    (10 here), measure_labels after the ids left on event or ignore voxels (8): a pairs table's
    truth_id then named another event than the measured table's id."""
    from casparks.evaluation import evaluate_movie, pairs_table

    classes = np.zeros(sim.movie.shape, np.uint8)
    events = np.zeros(classes.shape, np.uint16)
    classes[10:16, 4:8, 4:8], events[10:16, 4:8, 4:8] = SPARK, 5
    classes[40:46, 20:24, 60:64], events[40:46, 20:24, 60:64] = IGNORE, 7  # kept: ignore voxels keep their id
    events[60:66, 30:34, 100:104] = 9  # an erased event's id, left on background
    classes[80:86, 10:14, 120:124] = SPARK  # painted, no id
    measured = measure_labels(sim.movie, classes, events, config=MeasureConfig(offset_adu=sim.offset_adu))
    scored = evaluate_movie(classes, events, classes, None, id="cell")
    pairs = pairs_table(scored.matching, "cell", "cell")
    assert sorted(measured.events["id"]) == sorted(pairs["truth_id"].dropna().astype(int)) == [5, 8]
    assert int(measured.event_label[82, 12, 122]) == 8


def _a_spark_id_on_two_regions(shape):
    classes = np.zeros(shape, np.uint8)
    events = np.zeros(shape, np.uint16)
    for t, x in ((10, 10), (70, 120)):  # apart in time and space, both id 3
        classes[t:t + 5, 20:24, x:x + 4], events[t:t + 5, 20:24, x:x + 4] = SPARK, 3
    classes[40:45, 5:9, 60:64], events[40:45, 5:9, 60:64] = SPARK, 4
    return classes, events


def _pieces_said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cover separate regions" in r.getMessage()]


def test_a_spark_id_on_separate_regions_is_measured_as_one_event_and_said(tmp_path, sim, caplog):
    """Two sparks sharing an id were measured as one long spark without a word. They stay one
    event (evaluate scores them so and its pairs table joins the id), named as check names them,
    once per movie."""
    classes, events = _a_spark_id_on_two_regions(sim.movie.shape)
    movie = Movie(sim.movie.data, sim.movie.pixel_size_um, sim.movie.frame_interval_ms, name="cell")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        found = measure_labels(movie, classes, events, config=MeasureConfig(offset_adu=sim.offset_adu))
    assert sorted(found.events["id"]) == [3, 4]  # not split
    assert _pieces_said(caplog) == [
        "cell: 1 spark id(s) cover separate regions (two sparks sharing an id?): 3 (2 regions); each id is measured "
        "and scored as one spark: where they are two sparks, give each its own id"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="casparks"):
        write_sample(tmp_path / "data", movie, classes, events)  # napari's Save: saved, and said as check says it
    said = _pieces_said(caplog)
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'data' / '01_event_label.tif'}: 1 spark id(s)")
    assert (tmp_path / "data" / "01_event_label.tif").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="casparks"):
        measure_files([tmp_path / "data"], tmp_path / "out", config=MeasureConfig(offset_adu=sim.offset_adu))
    said = _pieces_said(caplog)
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'data' / '01_event_label.tif'}: 1 spark id(s)")
    assert "3 (2 regions)" in said[0]


def test_without_event_labels_events_are_components_per_class_with_a_warning(caplog):
    classes = np.zeros((20, 16, 16), np.uint8)
    classes[2:6, 2:5, 2:5] = SPARK
    classes[2:6, 2:5, 5:8] = WAVE  # touching, but of another class: its own event
    with caplog.at_level(logging.WARNING, logger="casparks"):
        _, ids = event_ids(classes, None, classes.shape, "cell")
    assert len(np.unique(ids[ids > 0])) == 2
    assert "cell: no event labels, the events are connected components per class" in caplog.text


@pytest.mark.parametrize("change, message", [
    ("two_classes", "carry more than one class: ids 1"),
    ("boolean", "must be integer codes 0-4.*boolean"),
    ("shape", r"the class labels have shape \(20, 16, 15\), the movie \(20, 16, 16\)"),
    ("code", r"unknown codes \[7\]"),
])
def test_labels_that_cannot_be_measured_are_refused(change, message):
    classes = np.zeros((20, 16, 16), np.uint8)
    events = np.zeros(classes.shape, np.uint16)
    classes[2:6, 2:5, 2:5], events[2:6, 2:5, 2:5] = SPARK, 1
    if change == "two_classes":
        classes[2:6, 2:5, 4] = PUFF
    elif change == "boolean":
        classes = classes > 0
    elif change == "shape":
        classes, events = classes[..., :15], events[..., :15]
    else:
        classes[0, 0, 0] = 7
    with pytest.raises(CasparksError, match=message):
        event_ids(classes, events, (20, 16, 16), "m")


def test_a_binary_mask_of_0_and_255_says_how_to_turn_it_into_codes(tmp_path, sim, capsys):
    """Fiji's thresholded mask (0/255) was refused as "unknown codes [255]" with no hint, as an
    array (measure_labels) and as a file (casparks measure)."""
    mask = (sim.class_label > 0).astype(np.uint8) * 255
    with pytest.raises(CasparksError, match=r"unknown codes \[255\]") as caught:
        measure_labels(sim.movie, mask, pixel_size_um=0.2, frame_interval_ms=6.8)
    assert "it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks" in str(caught.value)
    data = tmp_path / "data"
    data.mkdir()
    write_stack(data / "01_video.tif", sim.movie.data, sim.movie.pixel_size_um, sim.movie.frame_interval_ms)
    write_class_label(data / "01_class_label.tif", mask)
    assert main(["measure", str(data), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "unknown codes [255]" in error and "it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks" in error


def _data_set(folder, sim, n=2):
    for _ in range(n):
        write_sample(folder, sim.movie, sim.class_label, sim.event_label)
    return folder


def test_measure_writes_a_detections_files_that_the_readers_read(tmp_path, sim, capsys):
    data = _data_set(tmp_path / "data", sim)
    out = tmp_path / "measured"
    assert main(["measure", str(data), "--out", str(out), "--offset", str(sim.offset_adu)]) == 0
    printed = capsys.readouterr().out
    assert "01_video: " in printed and "(0.2 µm, 6.8 ms;" in printed and f"results in {out}" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{m}_video_{kind}" for m in ("01", "02")
        for kind in ("class_label.tif", "event_label.tif", "events.csv", "detection.json"))
    back = casparks.read_detection(out / "01_video_detection.json")
    assert back.model == "labels" and np.isnan(back.event_threshold)  # null in the JSON, read back as NaN
    assert back.labels["class_label"] == str((data / "01_class_label.tif").absolute()) and "labels" not in back.settings
    assert np.array_equal(read_stack(out / "01_video_event_label.tif"), sim.event_label)
    events = casparks.read_events(out)
    assert set(events["movie"]) == {"01_video", "02_video"} and len(events) == 2 * len(back.events)
    movies = casparks.read_movies(out)
    assert movies["model"].eq("labels").all() and len(movies) == 2


def test_measure_refuses_what_would_lose_or_mislead_and_writes_nothing(tmp_path, sim, capsys):
    data = _data_set(tmp_path / "data", sim)
    out = tmp_path / "measured"
    out.mkdir()
    (out / "01_video_events.csv").write_text("mine")
    assert main(["measure", str(data), "--out", str(out)]) == 2
    assert "01_video_events.csv" in capsys.readouterr().err and (out / "01_video_events.csv").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["01_video_events.csv"]
    # the data set's own folder: the copies would lie beside the annotation as a detection of it
    assert main(["measure", str(data), "--out", str(data)]) == 2
    assert "is the annotated movies' own folder" in capsys.readouterr().err
    # a folder's movie without class labels (still being annotated) is left out, named
    (data / "03_video.tif").write_bytes((data / "01_video.tif").read_bytes())
    assert main(["measure", str(data), "--out", str(tmp_path / "other")]) == 0
    assert "1 movie(s) without class labels (NN_class_label.tif) left out: 03" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "other").glob("*_events.csv")) == ["01_video_events.csv",
                                                                                "02_video_events.csv"]
    # given by its file, or a folder where no movie has labels: an error, nothing written
    assert main(["measure", str(data / "03_video.tif"), "--out", str(tmp_path / "none")]) == 2
    assert "the movie has no class labels (NN_class_label.tif): 03" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    # a label file given where a movie belongs
    assert main(["measure", str(data / "01_class_label.tif"), "--out", str(tmp_path / "other")]) == 2
    assert "is not a movie of the original layout (NN_video.tif)" in capsys.readouterr().err
    # one movie of the folder, by its file; existing results replaced with --overwrite
    assert main(["measure", str(data / "02_video.tif"), "--out", str(out)]) == 0
    assert main(["measure", str(data / "02_video.tif"), "--out", str(out)]) == 2
    assert main(["measure", str(data / "02_video.tif"), "--out", str(out), "--overwrite"]) == 0
    assert (out / "01_video_events.csv").read_text() == "mine"


def test_a_constant_movie_is_named_before_anything_is_written(tmp_path, sim):
    data = _data_set(tmp_path / "data", sim, n=1)
    write_sample(data, Movie(np.full(sim.movie.shape, 100, np.uint16), 0.2, 6.8), sim.class_label, sim.event_label)
    with pytest.raises(CasparksError, match="02_video.tif"):
        measure_files([data], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pairs_join_the_annotations_and_the_detections_measurements(tmp_path, sim):
    """The validation a physiologist runs: measure the annotation, score a detection with
    --pairs, and read each annotated event's measurements beside its detected event's."""
    data = _data_set(tmp_path / "data", sim, n=1)
    measure_files([data], tmp_path / "truth", config=MeasureConfig(offset_adu=sim.offset_adu))
    # a "detection": the annotation less its first event, measured and written as detect writes
    ids = np.unique(sim.event_label[sim.event_label > 0])
    pred_events = np.where(sim.event_label == ids[0], 0, sim.event_label)
    pred_classes = np.where(sim.event_label == ids[0], 0, sim.class_label).astype(np.uint8)
    detection = measure_labels(data / "01_video.tif", pred_classes, pred_events,
                               config=MeasureConfig(offset_adu=sim.offset_adu))
    write_detection(detection, tmp_path / "det")
    pairs = casparks.evaluate(data, tmp_path / "det").pairs
    annotated = casparks.read_events(tmp_path / "truth").add_suffix("_annotated")  # as the README joins them
    detected = casparks.read_events(tmp_path / "det").add_suffix("_detected")
    joined = (pairs.merge(annotated, how="left", left_on=["truth_movie", "truth_id"],
                          right_on=["movie_annotated", "id_annotated"])
                   .merge(detected, how="left", left_on=["pred_movie", "pred_id"],
                          right_on=["movie_detected", "id_detected"]))
    assert (joined["movie"] == "01").all()  # the pairs' own columns keep their names
    assert joined["id_annotated"].notna().all()  # every annotated event has its measurements
    paired = joined[joined["outcome"] == "paired"]
    assert len(paired) == len(ids) - 1 and (paired["id_annotated"] == paired["id_detected"]).all()
    # the same masks measure alike (the baseline differs by the one event left out of the detection)
    rel = (paired["amplitude_dff_detected"] / paired["amplitude_dff_annotated"] - 1).abs()
    assert rel.median() < 0.02
    missed = joined[joined["outcome"] == "missed"]
    assert missed["truth_id"].tolist() == [ids[0]] and missed["id_detected"].isna().all()


def test_a_movie_is_measured_from_its_calcium_channel_and_one_path_is_one_input(tmp_path, sim):
    """A two-channel recording: --channel picks the calcium one (detect's option); and one folder
    given as a string is one input, not its characters."""
    import tifffile

    data = tmp_path / "data"
    data.mkdir()
    calcium = np.asarray(sim.movie.data)
    stack = np.stack([np.full_like(calcium, 500), calcium], axis=1)  # T×C×Y×X: membrane dye, calcium
    tifffile.imwrite(data / "01_video.tif", stack, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TCYX", "unit": "um", "finterval": 0.0068})
    write_sample(data, sim.movie, sim.class_label, sim.event_label)  # 02: one channel, for comparison
    (data / "01_class_label.tif").write_bytes((data / "02_class_label.tif").read_bytes())
    (data / "01_event_label.tif").write_bytes((data / "02_event_label.tif").read_bytes())
    (data / "02_video.tif").unlink(), (data / "02_class_label.tif").unlink(), (data / "02_event_label.tif").unlink()
    with pytest.raises(CasparksError, match="channel"):
        measure_files(str(data), tmp_path / "out")
    results = measure_files(str(data), tmp_path / "out", channel=1, config=MeasureConfig(offset_adu=sim.offset_adu))
    assert [r["name"] for r in results] == ["01_video"] and results[0]["channel"] == 1
    alone = measure_labels(sim.movie, sim.class_label, sim.event_label, config=MeasureConfig(offset_adu=sim.offset_adu))
    back = casparks.read_events(tmp_path / "out")
    assert np.allclose(back["amplitude_dff"], alone.events["amplitude_dff"], equal_nan=True)


def test_ids_of_billions_are_kept_without_allocating_per_id(sim):
    """Hand-edited uint32 ids (4 × 10⁹, near uint32's top) ended in a MemoryError: measuring
    allocates per id up to the largest. They are measured through 1..N and come back as given."""
    events = sim.event_label.astype(np.uint32)
    first = int(events[events > 0].min())
    events[events == first] = 4_000_000_000
    found = measure_labels(sim.movie, sim.class_label, events, config=MeasureConfig(offset_adu=sim.offset_adu))
    plain = measure_labels(sim.movie, sim.class_label, sim.event_label, config=MeasureConfig(offset_adu=sim.offset_adu))
    assert 4_000_000_000 in found.events["id"].tolist() and first not in found.events["id"].tolist()
    assert found.event_label.dtype == np.uint32 and int(found.event_label.max()) == 4_000_000_000
    renamed = plain.events.replace({"id": {first: 4_000_000_000}}).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(found.events.sort_values("id").reset_index(drop=True), renamed)



def test_ids_beyond_uint32_are_refused_before_anything_is_written(tmp_path, sim):
    """A uint64 event-label file with ids of 5 × 10⁹ fits no file casparks writes: it ended in a
    raw ValueError after the folder's first movie was written."""
    import tifffile

    data = _data_set(tmp_path / "data", sim)
    events = tifffile.imread(data / "02_event_label.tif").astype(np.uint64)
    events[events > 0] += 5_000_000_000
    tifffile.imwrite(data / "02_event_label.tif", events)
    with pytest.raises(CasparksError, match=r"02_event_label.tif: event ids reach 50000000\d\d, beyond uint32"):
        measure_files([data], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(CasparksError, match="beyond uint32's largest"):
        measure_labels(sim.movie, sim.class_label, events)


def test_the_report_of_measured_labels_names_them_and_not_a_model(tmp_path, sim, caplog):
    from casparks.report import write_report

    data = _data_set(tmp_path / "data", sim)
    with caplog.at_level(logging.WARNING, logger="casparks"):
        measure_files([data], tmp_path / "m", config=MeasureConfig(offset_adu=sim.offset_adu))
    # each label warning said once (the check before the measuring runs quietly)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(set(lines))
    report = write_report(tmp_path / "m", video=False)
    summary = report.main.read_text()
    assert "labels were measured (no model) with the same settings" in summary
    assert "different models or settings" not in summary
    text = report.pages["01_video"].read_text()
    assert "labels measured (no model)" in text and "event threshold" not in text
    assert "measuring time" in text and "detection time" not in text
    assert '"model": "labels"' not in summary  # the summary's settings block: no model ran


def test_detect_does_not_continue_a_folder_of_measured_labels(tmp_path, sim, capsys):
    data = _data_set(tmp_path / "data", sim, n=1)
    measure_files([data], tmp_path / "out", config=MeasureConfig(offset_adu=sim.offset_adu))
    assert main(["detect", str(data / "01_video.tif"), "--out", str(tmp_path / "out"), "--skip-existing"]) == 2
    err = capsys.readouterr().err
    assert "were measured from labels by `casparks measure`, not detected" in err
    assert "detect into another --out folder, or pass --overwrite" in err

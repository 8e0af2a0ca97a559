"""Folder evaluation: pairing, reading, errors, aggregation, table, JSON and the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from casparks.classes import IGNORE, PUFF, SPARK, WAVE
from casparks.cli import main
from casparks.errors import CasparksError
from casparks.evaluation import (
    Evaluation,
    evaluate,
    evaluate_movie,
    instances_from_classes,
)
from casparks.io import write_class_label, write_event_label, write_stack
from casparks.simulate import load_simulation_config, simulate_movie

SHAPE = (12, 8, 40)


def annotated():
    """Truth classes and event ids: a spark, a wave, a puff and an ignore band."""
    classes = np.zeros(SHAPE, np.uint8)
    events = np.zeros(SHAPE, np.uint16)
    classes[0:4, 0:4, 0:4] = SPARK
    events[0:4, 0:4, 0:4] = 1
    classes[0:12, 0:8, 10:20] = WAVE
    events[0:12, 0:8, 10:20] = 2
    classes[2:10, 2:6, 25:30] = PUFF
    events[2:10, 2:6, 25:30] = 3
    classes[:, :, 36:] = IGNORE
    return classes, events


def write_truth(folder, classes, events=None, sample="01", video=True):
    folder.mkdir(parents=True, exist_ok=True)
    if video:
        write_stack(folder / f"{sample}_video.tif", np.ones(classes.shape, np.uint16), 0.2, 6.8)
    write_class_label(folder / f"{sample}_class_label.tif", classes)
    if events is not None:
        write_event_label(folder / f"{sample}_event_label.tif", events)


def write_pred(folder, classes, events=None, stem="01_video"):
    folder.mkdir(parents=True, exist_ok=True)
    write_class_label(folder / f"{stem}_class_label.tif", classes)
    if events is not None:
        write_event_label(folder / f"{stem}_event_label.tif", events)


def test_boolean_labels_are_refused_in_arrays_as_in_files(tmp_path):
    """A boolean mask as class labels was scored as sparks (True = code 1): a predicted wave
    mask counted as a spark, while a boolean label file was refused. Arrays follow the files."""
    classes, events = annotated()
    mask = classes == WAVE
    with pytest.raises(CasparksError, match="predicted class labels must be integer codes 0-4.*boolean") as caught:
        evaluate_movie(classes, events, mask, None)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)  # one line; the API's ValueError
    assert "mask.astype(np.uint8)" in str(caught.value)
    with pytest.raises(CasparksError, match="truth class labels must be integer codes 0-4"):
        evaluate_movie(mask, None, classes, None)
    with pytest.raises(CasparksError, match="predicted event ids must be integers.*boolean"):
        evaluate_movie(classes, events, classes, classes > 0)
    tifffile.imwrite(tmp_path / "01_class_label.tif", mask)  # the file's rule, for comparison
    write_pred(tmp_path / "pred", classes)
    with pytest.raises(CasparksError, match="pixel type bool"):
        evaluate(tmp_path, tmp_path / "pred")


def test_evaluate_movie_pure_api():
    classes, events = annotated()
    result = evaluate_movie(classes, events, classes, None)
    assert result.scores["classes"]["puff"]["reference"]["f1"] == 1.0
    assert result.to_dict()["id"] == "movie"
    assert "spark" in result.format_table()


def test_instances_from_classes_is_exposed():
    classes, _ = annotated()
    labels = instances_from_classes(classes)
    assert labels.max() == 3 and labels[0, 0, 0] > 0 and labels[0, 0, 36] == 0


def test_pairs_stem_named_prediction_with_truth(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", classes, stem="01_video")  # 01_video_class_label.tif
    result = evaluate(tmp_path / "truth", tmp_path / "pred")
    assert isinstance(result, Evaluation)
    assert [m.id for m in result.movies] == ["01"]
    assert result.movies[0].pred_file.name == "01_video_class_label.tif"
    for name in ("spark", "wave", "puff"):
        assert result.scores["classes"][name]["one_to_one"]["f1"] == 1.0


def test_instances_derived_when_event_files_are_missing(tmp_path):
    classes, events = annotated()
    pred = classes.copy()
    pred[pred == IGNORE] = 0
    pred[5:7, 0:2, 0:3] = SPARK  # an extra spark: one false positive
    write_truth(tmp_path / "with", classes, events)
    write_truth(tmp_path / "without", classes, video=False)
    write_pred(tmp_path / "pred", pred, stem="01")
    with_ids = evaluate(tmp_path / "with", tmp_path / "pred")
    derived = evaluate(tmp_path / "without", tmp_path / "pred")
    assert with_ids.to_dict()["classes"] == derived.to_dict()["classes"]
    spark = derived.scores["classes"]["spark"]
    assert spark["predictions"] == 2 and spark["reference"]["precision"] == 0.5


def test_a_prediction_without_ids_or_with_wrapped_8_bit_ids_is_named(tmp_path, caplog):
    """Both were scored without a word: touching predicted events merged, ids past 255 shared."""
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", classes, stem="01")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "prediction 01_class_label.tif has no event-label file" in caplog.text
    caplog.clear()
    write_pred(tmp_path / "pred8", classes, stem="01")
    ids = np.where(events > 0, events.astype(np.int64) + 252, 0).astype(np.uint8)  # 253, 254, 255: as 8-bit
    tifffile.imwrite(tmp_path / "pred8" / "01_event_label.tif", ids)
    with caplog.at_level(logging.WARNING, logger="casparks"):
        evaluate(tmp_path / "truth", tmp_path / "pred8")
    assert "ids stored as 8-bit reach 255 and may have wrapped" in caplog.text


def test_prediction_event_file_is_used(tmp_path):
    classes, events = annotated()
    pred_events = np.zeros(SHAPE, np.uint16)
    pred_events[0:4, 0:4, 0:2] = 5
    pred_events[0:4, 0:4, 2:4] = 6  # the spark predicted as two touching events
    pred = np.where(classes == SPARK, SPARK, 0).astype(np.uint8)
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", pred, pred_events, stem="01")
    spark = evaluate(tmp_path / "truth", tmp_path / "pred").scores["classes"]["spark"]
    assert spark["predictions"] == 2
    assert spark["reference"]["precision"] == 1.0  # both halves match (many-to-many)
    assert spark["one_to_one"]["precision"] == 0.5


def test_predicted_ignore_code_counts_as_background(tmp_path):
    classes, events = annotated()
    pred = classes.copy()
    pred[0:2, 0:2, 30:34] = IGNORE
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", pred, stem="01")
    result = evaluate(tmp_path / "truth", tmp_path / "pred")
    assert result.scores["all_events"]["predictions"] == 3
    assert result.scores["classes"]["spark"]["voxel_iou"] == 1.0


def test_counts_aggregate_across_movies(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="01")
    write_truth(tmp_path / "truth", classes, events, sample="02")
    write_pred(tmp_path / "pred", classes, stem="01")  # perfect
    write_pred(tmp_path / "pred", np.where(classes == WAVE, WAVE, 0).astype(np.uint8), stem="02")  # wave only
    calls = []
    result = evaluate(tmp_path / "truth", tmp_path / "pred", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    spark = result.scores["classes"]["spark"]
    assert spark["annotations"] == 2 and spark["predictions"] == 1
    assert spark["reference"]["recall"] == 0.5 and spark["reference"]["precision"] == 1.0
    assert result.counts.annotations.tolist() == [2, 2, 2]
    per_movie = result.to_dict()["movies"]
    assert [m["id"] for m in per_movie] == ["01", "02"]
    assert per_movie[1]["classes"]["spark"]["reference"]["recall"] == 0.0


def test_missing_prediction_is_an_error(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="01")
    write_truth(tmp_path / "truth", classes, events, sample="02")
    write_pred(tmp_path / "pred", classes, stem="01")
    with pytest.raises(CasparksError, match="02_class_label.tif") as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "movie 02" in str(info.value) and info.value.fix


def test_prediction_without_truth_warns(tmp_path, caplog):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", classes, stem="01")
    write_pred(tmp_path / "pred", classes, stem="07")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        result = evaluate(tmp_path / "truth", tmp_path / "pred")
    assert len(result.movies) == 1
    assert "07" in caplog.text


def test_shape_mismatch_names_both_files(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", classes[:-1], stem="01")
    with pytest.raises(CasparksError) as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "01_class_label.tif" in str(info.value) and str(tmp_path / "truth") in str(info.value)
    assert str(tmp_path / "pred") in str(info.value)


def test_an_annotation_of_the_wrong_size_is_not_blamed_on_the_prediction(tmp_path):
    """The annotation was the wrong file, but the error told the user to predict again; now it
    names the movie's shape, which decides, and either fix."""
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes[:, :, :-2], events[:, :, :-2], video=False)  # narrower than its movie
    write_stack(tmp_path / "truth" / "01_video.tif", np.ones(SHAPE, np.uint16), 0.2, 6.8)
    write_pred(tmp_path / "pred", classes, stem="01_video")
    with pytest.raises(CasparksError) as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    message = str(info.value)
    assert f"the movie 01_video.tif is {SHAPE}" in message and "fix the annotation" in message


def test_an_annotation_shorter_than_its_movie_is_refused_though_the_prediction_has_its_shape(tmp_path):
    """Labels a frame short of their movie (check's error) were scored against a prediction of
    the same short shape, which the movie was never compared with: frame t of them may not be
    frame t of the movie."""
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes[:-1], events[:-1], video=False)
    write_stack(tmp_path / "truth" / "01_video.tif", np.ones(SHAPE, np.uint16), 0.2, 6.8)
    write_pred(tmp_path / "pred", classes[:-1], stem="01")
    with pytest.raises(CasparksError) as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    message = str(info.value)
    assert f"the annotation has shape {(SHAPE[0] - 1, *SHAPE[1:])}, but its movie 01_video.tif is {SHAPE}" in message
    assert "fix the annotation" in message


def test_a_detection_beside_an_annotation_never_supplies_its_ids_or_a_truth(tmp_path):
    """An annotation without its own event file took the ids of the detection saved beside it
    (two annotated sparks counted as one); in one folder as truth and prediction, a movie with
    only a detection was scored against itself."""
    shape = (8, 64, 64)
    truth = np.zeros(shape, np.uint8)
    truth[2:4, 5:9, 5:9] = SPARK
    truth[2:4, 30:34, 30:34] = SPARK
    found = np.zeros(shape, np.uint8)
    found[2:4, 5:9, 5:9] = SPARK  # finds one of the two
    data = tmp_path / "data"
    data.mkdir()
    for movie in ("01", "02"):
        write_stack(data / f"{movie}_video.tif", np.zeros(shape, np.uint16), 0.2, 6.8)
        write_class_label(data / f"{movie}_video_class_label.tif", found)
        write_event_label(data / f"{movie}_video_event_label.tif", (truth > 0).astype(np.uint16))  # merged ids
    write_class_label(data / "01_class_label.tif", truth)  # only 01 annotated, without an event file
    result = evaluate(data, data)
    assert [m.id for m in result.movies] == ["01"]
    spark = result.scores["classes"]["spark"]
    assert spark["annotations"] == 2 and spark["predictions"] == 1


def test_unknown_codes_are_an_error(tmp_path):
    classes, events = annotated()
    pred = classes.copy()
    pred[0, 0, 0] = 9
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", pred, stem="01")
    with pytest.raises(CasparksError, match=r"unknown codes \[9\]"):
        evaluate(tmp_path / "truth", tmp_path / "pred")


def test_a_truth_of_0_and_255_says_how_to_turn_the_mask_into_codes(tmp_path):
    """Fiji's thresholded mask (0/255) as annotation was refused with no hint."""
    classes, events = annotated()
    write_truth(tmp_path / "truth", (classes == SPARK).astype(np.uint8) * 255)
    write_pred(tmp_path / "pred", classes, stem="01")
    with pytest.raises(CasparksError, match=r"unknown codes \[255\]") as caught:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks" in str(caught.value)


def test_an_annotation_that_check_rejects_is_not_scored(tmp_path):
    """An event of two classes was scored silently (18 annotated sparks for 17)."""
    classes, events = annotated()
    events[0:4, 0:4, 10:12] = 1  # spark 1 reaches into the wave
    write_truth(tmp_path / "truth", classes, events)
    write_truth(tmp_path / "pred", *annotated(), video=False)
    with pytest.raises(CasparksError, match="annotation is not valid: 1 event.*more than one class.*casparks check"):
        evaluate(tmp_path / "truth", tmp_path / "pred")


def test_a_label_stack_in_colour_is_named_as_labels(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_truth(tmp_path / "pred", classes, events, video=False)
    import tifffile

    rgb = np.stack([classes] * 3, axis=-1)  # an RGB export of the label image
    tifffile.imwrite(tmp_path / "pred" / "01_class_label.tif", rgb, photometric="rgb")
    with pytest.raises(CasparksError, match="labels are one value per voxel") as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "--channel" not in str(info.value)


def test_bad_threshold_is_an_error(tmp_path):
    with pytest.raises(CasparksError, match="iomin_threshold"):
        evaluate(tmp_path, tmp_path, iomin_threshold=0)


def test_table_lists_classes_averages_and_confusion():
    classes, events = annotated()
    pred = np.where(classes == PUFF, SPARK, classes).astype(np.uint8)  # puff called a spark
    movie = evaluate_movie(classes, events, pred, None, id="01")
    table = Evaluation((movie,)).format_table()
    for text in ("spark", "wave", "puff", "average", "detected", "correctly classified", "missed", "spurious", "undefined"):
        assert text in table
    lines = table.splitlines()
    puff_row = next(line for line in lines if line.startswith("puff"))
    assert puff_row.split()[1] == "–"  # no puff predicted: precision undefined
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    widths = {len(line) for line in lines[header + 2:header + 5]}
    assert len(widths) == 1  # class rows aligned


def test_table_names_a_predicted_class_left_out_of_the_average():
    classes, events = annotated()
    classes[classes == PUFF] = 0  # no puff annotated
    events[classes == 0] = 0
    pred = classes.copy()
    pred[2:10, 2:6, 25:30] = PUFF  # a false puff
    lines = Evaluation((evaluate_movie(classes, events, pred, None, id="01"),)).format_table().splitlines()
    puff_row = next(line for line in lines if line.startswith("puff")).split()
    assert puff_row[6] == "0.000" and puff_row[-3:] == ["0", "1", "0"]  # one-to-one F1 0; 0 annotated, 1 predicted
    assert next(line for line in lines if line.startswith("average")).split()[6] == "1.000"
    assert "  not in the average, none annotated: puff (1 predicted)" in lines


def test_cli_end_to_end_writes_json(tmp_path, capsys):
    classes, events = annotated()
    pred = classes.copy()
    pred[pred == PUFF] = 0  # no puff predicted
    d1, d2, out = tmp_path / "truth", tmp_path / "pred", tmp_path / "scores.json"
    write_truth(d1, classes, events)
    write_pred(d2, pred, stem="01_video")
    assert main(["evaluate", "--truth", str(d1), "--pred", str(d2), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "spark" in printed and str(out) in printed
    data = json.loads(out.read_text())
    assert data["settings"]["iomin_threshold"] == 0.5
    assert data["classes"]["puff"]["reference"]["precision"] is None  # undefined → null
    assert data["classes"]["puff"]["reference"]["recall"] == 0.0
    assert data["classes"]["spark"]["one_to_one"]["f1"] == 1.0
    assert data["confusion"]["columns"][-1] == "missed"
    assert len(data["movies"]) == 1 and data["movies"][0]["id"] == "01"
    assert not any(isinstance(v, float) and math.isnan(v) for v in data["average"]["reference"].values())


def test_cli_missing_prediction_exits_2(tmp_path, capsys):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    (tmp_path / "pred").mkdir()
    write_pred(tmp_path / "pred", classes, stem="05")
    assert main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred")]) == 2
    assert "no prediction for movie 01" in capsys.readouterr().err


def test_only_predicted_scores_a_subset_and_names_the_rest(tmp_path, caplog):
    classes, events = annotated()
    for sample in ("01", "02", "03"):
        write_truth(tmp_path / "truth", classes, events, sample=sample)
    write_pred(tmp_path / "pred", classes, stem="02_video")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        result = evaluate(tmp_path / "truth", tmp_path / "pred", only_predicted=True)
    assert [m.id for m in result.movies] == ["02"]
    assert "2 annotated movie(s) without a prediction are not scored: 01, 03" in caplog.text
    # without the flag: an error that names the way out
    with pytest.raises(CasparksError, match=r"movie 01 \(and 1 more\)") as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "--only-predicted" in info.value.fix
    # with it but no prediction at all: still an error
    write_pred(tmp_path / "other", classes, stem="09")
    with pytest.raises(CasparksError, match="no prediction for movie 01"):
        evaluate(tmp_path / "truth", tmp_path / "other", only_predicted=True)


def test_a_data_set_annotated_in_part_is_scored_on_its_annotated_movies(tmp_path, caplog):
    """A truth folder whose movie 02 is not annotated (yet) was refused whole ("sample(s) 02 have
    no class_label file"), with --only-predicted too, and by calibrate."""
    from casparks.calibration import _samples

    classes, events = annotated()
    for sample in ("01", "03"):
        write_truth(tmp_path / "truth", classes, events, sample=sample)
        write_pred(tmp_path / "pred", classes, stem=f"{sample}_video")
    write_stack(tmp_path / "truth" / "02_video.tif", np.ones(classes.shape, np.uint16), 0.2, 6.8)
    write_pred(tmp_path / "pred", classes, stem="02_video")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        result = evaluate(tmp_path / "truth", tmp_path / "pred")
    assert [m.id for m in result.movies] == ["01", "03"]
    assert "movie(s) 02 have no annotation (NN_class_label.tif) and are left out" in caplog.text
    assert [s.id for s in _samples([tmp_path / "truth"])] == ["01", "03"]
    empty = tmp_path / "unannotated"
    empty.mkdir()
    write_stack(empty / "01_video.tif", np.ones(classes.shape, np.uint16), 0.2, 6.8)
    with pytest.raises(CasparksError, match="holds no annotated movies"):
        evaluate(empty, tmp_path / "pred")


def test_a_renamed_prediction_is_paired_by_hand(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="07")
    pred = classes.copy()
    pred[pred == PUFF] = 0
    write_pred(tmp_path / "pred", pred, stem="cell3")
    with pytest.raises(CasparksError, match="no prediction for movie 07") as info:
        evaluate(tmp_path / "truth", tmp_path / "pred")
    assert "--pair NAME=07" in info.value.fix
    result = evaluate(tmp_path / "truth", tmp_path / "pred", pairs={"cell3": "07"})
    assert [m.id for m in result.movies] == ["07"]
    # a detection of cell4_video.tif is cell4_video_class_label.tif: either name pairs it
    write_pred(tmp_path / "pred2", pred, stem="cell4_video")
    for name in ("cell4_video", "cell4"):
        assert [m.id for m in evaluate(tmp_path / "truth", tmp_path / "pred2", pairs={name: "07"}).movies] == ["07"]
    assert result.scores["classes"]["puff"]["one_to_one"]["recall"] == 0.0
    assert result.scores["classes"]["spark"]["one_to_one"]["f1"] == 1.0


@pytest.mark.parametrize("pairs, needle", [({"cell9": "07"}, "no prediction cell9"),
                                           ({"cell3": "08"}, "no annotated movie 08"),
                                           # echoed as typed (it said --pair cell3=08)
                                           ({"cell3_video": "08"}, "--pair cell3_video=08: no annotated movie 08")])
def test_a_pair_naming_nothing_is_an_error(tmp_path, pairs, needle):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="07")
    write_pred(tmp_path / "pred", classes, stem="cell3")
    with pytest.raises(CasparksError, match=needle):
        evaluate(tmp_path / "truth", tmp_path / "pred", pairs=pairs)


def test_two_predictions_for_one_movie_are_an_error(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="07")
    write_pred(tmp_path / "pred", classes, stem="cell3")
    (tmp_path / "pred" / "cell3_detection.json").write_text("{}")  # detected from cell3.tif, as 07_video's
    write_pred(tmp_path / "pred", classes, stem="07_video")
    with pytest.raises(CasparksError, match=r"movie 07 would be scored against two predictions "
                                            r"\(07_video_class_label.tif and cell3_class_label.tif\)"):
        evaluate(tmp_path / "truth", tmp_path / "pred", pairs={"cell3": "07"})


def test_cli_pair_and_only_predicted(tmp_path, capsys):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="07")
    write_truth(tmp_path / "truth", classes, events, sample="08")
    write_pred(tmp_path / "pred", classes, stem="cell3")
    base = ["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred")]
    assert main(base + ["--pair", "cell3=07", "--only-predicted", "--json", str(tmp_path / "s.json")]) == 0
    assert [m["id"] for m in json.loads((tmp_path / "s.json").read_text())["movies"]] == ["07"]
    capsys.readouterr()
    assert main(base + ["--pair", "cell3"]) == 2
    assert "is not NAME=ID" in capsys.readouterr().err


def test_against_with_only_predicted_compares_the_movies_both_predicted(tmp_path, capsys, caplog):
    """--against with --only-predicted warned that movie 08 had no prediction, then refused: the
    two predictions score different movies."""
    classes, events = annotated()
    for sample in ("07", "08"):
        write_truth(tmp_path / "truth", classes, events, sample=sample)
    for sample in ("07", "08"):
        write_pred(tmp_path / "a", classes, stem=f"{sample}_video")
    write_pred(tmp_path / "b", classes, stem="07_video")
    base = ["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "a"),
            "--against", str(tmp_path / "b"), "--only-predicted", "--json", str(tmp_path / "s.json")]
    with caplog.at_level(logging.WARNING, logger="casparks"):
        assert main(base) == 0
    assert "compared on the 1 movie(s) both predictions have; left out: 08" in caplog.text
    assert [m["id"] for m in json.loads((tmp_path / "s.json").read_text())["movies"]] == ["07"]


def test_swapped_folders_and_an_empty_prediction_folder_say_so(tmp_path):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "det", classes, stem="01_video")
    (tmp_path / "det" / "01_video_detection.json").write_text("{}")
    with pytest.raises(CasparksError, match="holds the output of `casparks detect`") as info:
        evaluate(tmp_path / "det", tmp_path / "truth")
    assert "swapped" in info.value.fix
    shutil.copy(tmp_path / "truth" / "01_video.tif", tmp_path / "det" / "03_video.tif")  # a stray movie beside it
    with pytest.raises(CasparksError, match="holds the output of `casparks detect`"):  # it scored the folder itself
        evaluate(tmp_path / "det", tmp_path / "truth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CasparksError, match="for --pred") as info:
        evaluate(tmp_path / "truth", tmp_path / "empty")
    assert "casparks detect --out" in info.value.fix


def test_cli_an_existing_json_is_refused_before_the_work(tmp_path, capsys):
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", classes)
    (tmp_path / "s.json").write_text("{}")
    assert main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                 "--json", str(tmp_path / "s.json")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "s.json: exists already" in err  # no score table printed first


def test_a_detection_saved_beside_the_annotations_is_scored_not_used_as_truth(tmp_path, caplog):
    """detect --out into the data set: --truth keeps the annotations, --pred takes the detection,
    and an annotation without a detection is no prediction of itself."""
    classes, events = annotated()
    write_truth(tmp_path / "data", classes, events, sample="06")
    write_truth(tmp_path / "data", classes, events, sample="07")
    empty = np.zeros(SHAPE, np.uint8)
    write_pred(tmp_path / "data", empty, stem="06_video")
    write_pred(tmp_path / "pred", empty, stem="06_video")
    with caplog.at_level("WARNING", logger="casparks"):
        result = evaluate(tmp_path / "data", tmp_path / "pred", only_predicted=True)
    assert [m.id for m in result.movies] == ["06"]
    assert result.movies[0].truth_file.name == "06_class_label.tif"
    assert result.scores["classes"]["spark"]["one_to_one"]["recall"] == 0.0
    assert "06_video_class_label.tif: not used, 06_class_label.tif" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        same = evaluate(tmp_path / "data", tmp_path / "data", only_predicted=True)
    assert [(m.truth_file.name, m.pred_file.name) for m in same.movies] == [("06_class_label.tif",
                                                                              "06_video_class_label.tif")]
    assert "not used" not in caplog.text
    # movie 07 was not detected: its annotation is no prediction of itself
    with pytest.raises(CasparksError, match="no prediction for movie 07"):
        evaluate(tmp_path / "data", tmp_path / "data")


def test_an_annotation_is_never_scored_as_its_own_prediction(tmp_path, caplog):
    """--truth and --pred one annotated folder without a detection scored every annotation against
    itself, and a copy of the data set detected for some movies scored the others' annotations:
    F1 1.0 whatever the model."""
    classes, events = annotated()
    data = tmp_path / "data"
    for sample in ("01", "02"):
        write_truth(data, classes, events, sample=sample)
    with pytest.raises(CasparksError, match=r"01_class_label.tif: is the annotation itself, not a prediction of it "
                                            r"\(and 1 more\); give --pred the folder `casparks detect --out` wrote"):
        evaluate(data, data)
    with pytest.raises(CasparksError, match="is the annotation itself"):
        evaluate(data, data, only_predicted=True)
    copy = tmp_path / "copy"  # the data set copied, then detected into for movie 01 only
    for sample in ("01", "02"):
        write_truth(copy, classes, events, sample=sample)
    write_pred(copy, np.zeros(SHAPE, np.uint8), stem="01_video")  # found nothing
    with pytest.raises(CasparksError, match=r"no prediction for movie 02 \(expected 02_video_class_label.tif: "
                                            r"--pred holds detections, so a 02_class_label.tif there is an annotation"):
        evaluate(data, copy)
    result = evaluate(data, copy, only_predicted=True)
    assert [(m.id, m.pred_file.name) for m in result.movies] == [("01", "01_video_class_label.tif")]
    assert result.scores["average"]["one_to_one"]["f1"] == 0.0
    # a detection of a movie not named NN_video (cell3.tif) is one by the summary beside it
    write_pred(copy, classes, events, stem="cell3")
    (copy / "cell3_detection.json").write_text("{}")
    result = evaluate(data, copy, pairs={"cell3": "02"})
    assert [(m.id, m.pred_file.name) for m in result.movies] == [("01", "01_video_class_label.tif"),
                                                                 ("02", "cell3_class_label.tif")]
    assert result.movies[1].scores["average"]["one_to_one"]["f1"] == 1.0
    # a copy of the annotation as the prediction (a copied folder without detections): scored, but said
    assert "movie 02: the prediction" in caplog.text and "is the annotation voxel for voxel" in caplog.text
    assert "movie 01: the prediction" not in caplog.text


def test_the_label_file_that_differs_from_the_movie_is_the_one_named(tmp_path):
    """A cropped annotation was reported as `error: PRED_FILE: …`: the movie's shape decides which
    file is wrong, and that one leads the line; without the movie both are named, neither leads."""
    classes, events = annotated()
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    write_truth(truth, classes[:, :-1], events[:, :-1], video=False)  # an annotator cropped a row
    write_stack(truth / "01_video.tif", np.ones(SHAPE, np.uint16), 0.2, 6.8)
    write_pred(pred, classes)
    with pytest.raises(CasparksError) as info:
        evaluate(truth, pred)
    assert info.value.path == truth / "01_class_label.tif"
    assert str(info.value).startswith(f"{truth / '01_class_label.tif'}: the annotation has shape")
    write_pred(tmp_path / "pred2", classes[:-1])  # now the prediction is the odd one
    write_class_label(truth / "01_class_label.tif", classes, overwrite=True)
    write_event_label(truth / "01_event_label.tif", events, overwrite=True)
    with pytest.raises(CasparksError) as info:
        evaluate(truth, tmp_path / "pred2")
    assert info.value.path == tmp_path / "pred2" / "01_video_class_label.tif" and "detect on" in str(info.value)
    (truth / "01_video.tif").unlink()  # no movie to decide: both named, neither blamed
    with pytest.raises(CasparksError) as info:
        evaluate(truth, tmp_path / "pred2")
    assert info.value.path is None
    assert str(truth / "01_class_label.tif") in str(info.value) and "pred2" in str(info.value)


def test_cli_against_prints_both_f1s_and_the_interval_of_their_difference(tmp_path, capsys):
    classes, events = annotated()
    no_puff = np.where(classes == PUFF, 0, classes).astype(np.uint8)
    truth, good, poor, out = tmp_path / "truth", tmp_path / "good", tmp_path / "poor", tmp_path / "scores.json"
    for sample in ("01", "02", "03"):
        write_truth(truth, classes, events, sample=sample)
        write_pred(good, classes, stem=f"{sample}_video")
        write_pred(poor, no_puff if sample != "03" else classes, stem=f"{sample}_video")
    assert main(["evaluate", "--truth", str(truth), "--pred", str(good), "--against", str(poor),
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "95 % interval (bootstrap over the 3 movies" in printed
    assert f"One-to-one F1 against {poor}" in printed
    data = json.loads(out.read_text())
    against = data["against"]
    assert against["one_to_one_f1"]["puff"] == pytest.approx(0.5)  # 1 of 3 puffs found, none false
    assert against["difference"]["puff"] == pytest.approx(0.5) and against["difference"]["spark"] == 0.0
    lo, hi = against["difference_interval"]["puff"]
    assert 0 <= lo <= 0.5 <= hi <= 1.0  # resamples of the 3 movies: 0 (only 03) to 1 (no 03)
    assert data["one_to_one_f1_interval"]["spark"] == [1.0, 1.0] and data["one_to_one_f1_interval"]["movies"] == 3
    # a prediction that misses a movie: refused before any table (it was printed, then refused);
    # with --only-predicted, compared on the movies both predicted (session 32)
    (poor / "03_video_class_label.tif").unlink()
    assert main(["evaluate", "--truth", str(truth), "--pred", str(good), "--against", str(poor)]) == 2
    captured = capsys.readouterr()
    assert "03" in captured.err and captured.out == ""
    assert main(["evaluate", "--truth", str(truth), "--pred", str(good), "--against", str(poor),
                 "--only-predicted", "--json", str(tmp_path / "common.json"), "--overwrite"]) == 0
    assert [m["id"] for m in json.loads((tmp_path / "common.json").read_text())["movies"]] == ["01", "02"]


def test_a_detection_of_another_movie_is_warned_about_when_scored_and_refused_when_drawn(tmp_path, caplog, capsys):
    """Detections of a validation folder scored against a test folder of the same shapes and ids
    gave plausible numbers; a report drew one movie's events on another; neither said a word."""
    from casparks.cli import main
    from casparks.simulate import load_simulation_config, simulate_dataset

    config = load_simulation_config("default", {"n_frames": 48, "height_px": 16, "width_px": 64})
    simulate_dataset(tmp_path / "val", n_movies=1, seed=1, previews=False, config=config)
    simulate_dataset(tmp_path / "test", n_movies=1, seed=2, previews=False, config=config)
    assert main(["detect", str(tmp_path / "val" / "01_video.tif"), "--out", str(tmp_path / "det"),
                 "--window", "48"]) == 0
    with caplog.at_level("WARNING", logger="casparks"):
        evaluate(tmp_path / "val", tmp_path / "det")
    assert "detected on another movie" not in caplog.text
    with caplog.at_level("WARNING", logger="casparks"):
        evaluate(tmp_path / "test", tmp_path / "det")
    assert "movie 01: the prediction 01_video_class_label.tif was detected on another movie than" in caplog.text
    capsys.readouterr()
    assert main(["report", str(tmp_path / "det"), "--no-video", "--movie", str(tmp_path / "test" / "01_video.tif")]) == 2
    err = capsys.readouterr().err
    assert "01_video.tif: is not the movie the detection of '01_video' was made on (its pixels differ)" in err
    assert not (tmp_path / "det" / "report.html").exists()


def test_a_detection_of_a_channel_is_checked_against_one_channel_movies(tmp_path, caplog, capsys):
    """A detection made with --channel 1 read the one-channel annotated movie with channel 1, failed
    quietly and skipped the check; report --movie refused the calcium channel saved on its own."""
    from casparks.cli import main
    from casparks.io import read_movie
    from casparks.simulate import load_simulation_config, simulate_dataset

    config = load_simulation_config("default", {"n_frames": 48, "height_px": 16, "width_px": 64})
    simulate_dataset(tmp_path / "val", n_movies=1, seed=1, previews=False, config=config)
    simulate_dataset(tmp_path / "test", n_movies=1, seed=2, previews=False, config=config)
    calcium = read_movie(tmp_path / "val" / "01_video.tif").data
    two = np.stack([np.full_like(calcium, 50), calcium], axis=1)
    tifffile.imwrite(tmp_path / "cell.tif", two, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TCYX", "unit": "um", "finterval": 0.0068})
    assert main(["detect", str(tmp_path / "cell.tif"), "--channel", "1", "--out", str(tmp_path / "det"),
                 "--window", "48"]) == 0
    with caplog.at_level("WARNING", logger="casparks"):
        evaluate(tmp_path / "test", tmp_path / "det", pairs={"cell": "01"})
    assert "was detected on another movie than" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        evaluate(tmp_path / "val", tmp_path / "det", pairs={"cell": "01"})
    assert "was detected on another movie" not in caplog.text
    capsys.readouterr()
    assert main(["report", str(tmp_path / "det"), "--no-video", "--movie", str(tmp_path / "val" / "01_video.tif")]) == 0


def test_an_annotated_event_of_two_classes_is_refused_in_arrays_as_in_files():
    """From files it is refused (casparks check's error); from arrays it was scored as two events."""
    classes, events = annotated()
    two = classes.copy()
    first = np.flatnonzero(events.ravel() == events[events > 0].min())
    two.ravel()[first[: first.size // 2]] = PUFF if two.ravel()[first[0]] != PUFF else SPARK
    with pytest.raises(CasparksError, match="1 annotated event.*more than one class") as caught:
        evaluate_movie(two, events, classes, None, id="07")
    assert isinstance(caught.value, ValueError) and "movie 07" in str(caught.value)
    assert evaluate_movie(two, events, classes, None, check_annotation=False).counts is not None
    assert evaluate_movie(classes, events, classes, None).scores["classes"]["puff"]["reference"]["f1"] == 1.0


def test_wrapped_8_bit_ids_are_read_once_and_named(tmp_path, caplog):
    """An 8-bit event file whose ids wrapped: its spark ids' separate regions are sparks of their
    own, said once per movie with the file's name (the split and its warning were redone at every
    scoring, 14 times for a calibration of 14 rows, naming no file)."""
    shape = (12, 8, 1200)
    classes = np.zeros(shape, np.uint8)
    ids = np.zeros(shape, np.uint32)
    for k, x in enumerate(range(0, 1200, 4), start=1):  # 300 sparks in a row, one voxel apart
        classes[2:5, 2:5, x:x + 3] = SPARK
        ids[2:5, 2:5, x:x + 3] = k
    import tifffile

    write_truth(tmp_path / "truth", classes, video=False)
    tifffile.imwrite(tmp_path / "truth" / "01_event_label.tif", (ids % 256).astype(np.uint8))  # as the reference saved them
    write_pred(tmp_path / "pred", classes, stem="01", events=ids.astype(np.uint16))
    with caplog.at_level("WARNING", logger="casparks"):
        result = evaluate(tmp_path / "truth", tmp_path / "pred")
    assert result.scores["classes"]["spark"]["annotations"] == 300
    told = [r.getMessage() for r in caplog.records if "have wrapped" in r.getMessage()]
    assert len(told) == 1 and "01_event_label.tif" in told[0] and "44 spark id(s)" in told[0], told


def test_the_table_says_the_one_to_one_ignored_count_where_it_differs():
    """A spark's split-off piece half on its ignore shell: the reference matched it (not ignored),
    one-to-one left it unpaired and ignored it; the table showed the reference's 0 beside a
    one-to-one precision of 1.0 over 2 predictions."""
    shape = (30, 20, 40)
    tc, te = np.zeros(shape, np.uint8), np.zeros(shape, np.uint16)
    tc[3:17, 3:17, 3:17] = 4
    tc[5:15, 5:15, 5:15] = 1
    te[5:15, 5:15, 5:15] = 1
    pc, pe = tc.copy(), te.copy()
    pc[pc == 4] = 0
    pe[5:15, 5, 5] = 2  # 10 voxels of the spark
    pe[5:15, 4, 5], pc[5:15, 4, 5] = 2, 1  # and 10 on the ignore shell
    movie = evaluate_movie(tc, te, pc, pe)
    spark = movie.scores["classes"]["spark"]
    assert spark["reference_counts"]["ignored"] == 0 and spark["one_to_one_counts"]["ignored"] == 1
    row = next(line for line in movie.format_table().splitlines() if line.startswith("spark"))
    assert row.split()[-3:] == ["1", "2", "0/1"]


def test_cli_json_to_stdout_carries_the_json_alone_and_stays_a_stream(tmp_path):
    """`--json /dev/stdout` was refused ("exists already"); with --overwrite as root, /dev/stdout
    was replaced by a file. A stream is written into, and the table goes to stderr."""
    import subprocess
    import sys

    classes, events = annotated()
    d1, d2 = tmp_path / "truth", tmp_path / "pred"
    write_truth(d1, classes, events)
    write_pred(d2, classes.copy(), stem="01_video")
    done = subprocess.run([sys.executable, "-m", "casparks", "evaluate", "--truth", str(d1), "--pred", str(d2),
                           "--json", "/dev/stdout"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["classes"]["spark"]["one_to_one"]["f1"] == 1.0
    assert "spark" in done.stderr and "scores written to /dev/stdout" in done.stderr


def test_swapped_truth_arrays_are_named_by_their_codes_and_the_default_id_is_said_once():
    """Truth event ids given as class labels (and the codes as ids) were refused as "movie movie:
    1 annotated event(s) carry more than one class", though the class labels held codes 5-32;
    the table of a movie of the default id was headed "Scores — movie movie"."""
    classes, events = annotated()
    events[events == 3] = 9  # ids beyond the class codes, as in any annotation of more than 4 events
    events[0:4, 0:4, 2:4] = 3  # two sparks: swapped, id 1 (spark) covers "codes" 1 and 3
    with pytest.raises(CasparksError, match="truth class labels hold unknown codes") as caught:
        evaluate_movie(events, classes, classes, events)
    assert "more than one class" not in str(caught.value)
    assert evaluate_movie(classes, events, classes, events).format_table().splitlines()[0] == "Scores — movie"
    assert evaluate_movie(classes, events, classes, events, id="07").format_table().startswith("Scores — movie 07\n")
    two = classes.copy()
    first = np.flatnonzero(events.ravel() == events[events > 0].min())
    two.ravel()[first[: first.size // 2]] = PUFF if two.ravel()[first[0]] != PUFF else SPARK
    with pytest.raises(CasparksError, match=r"^movie: 1 annotated event\(s\) carry more than one class"):
        evaluate_movie(two, events, classes, None)


def test_against_takes_the_pairs_it_holds_and_is_named_in_its_own_errors(tmp_path, capsys):
    """--pair applied to --against too refused a comparison of a renamed detection with one named
    as the movie ("no prediction cell3 ... in --pred", about the --against folder)."""
    classes, events = annotated()
    write_truth(tmp_path / "truth", classes, events, sample="07")
    write_pred(tmp_path / "renamed", classes, stem="cell3")
    write_pred(tmp_path / "plain", classes, stem="07_video")
    base = ["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "renamed"), "--pair", "cell3=07"]
    assert main([*base, "--against", str(tmp_path / "plain")]) == 0
    assert "One-to-one F1 against" in capsys.readouterr().out
    assert main([*base, "--against", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "for --against" in err and "give --against the folder" in err and "--pred" not in err
    assert main([*base, "--against", str(tmp_path / "truth")]) == 2
    assert "give --against the folder" in capsys.readouterr().err


def test_a_paired_difference_of_two_annotated_folders_is_refused():
    """Two data sets with the same ids and shapes gave a "significant" difference of unrelated movies."""
    classes, events = annotated()
    one = evaluate_movie(classes, events, classes, events, id="01")
    other = evaluate_movie(classes, events, np.zeros_like(classes), None, id="01")
    a = Evaluation((dataclasses.replace(one, truth_file=Path("/a/01_class_label.tif")),))
    b = Evaluation((dataclasses.replace(other, truth_file=Path("/b/01_class_label.tif")),))
    with pytest.raises(CasparksError, match="score different annotations of movie 01"):
        a.f1_intervals(b)
    c = Evaluation((dataclasses.replace(other, truth_file=Path("/a/01_class_label.tif")),))
    a.f1_intervals(c)  # the same annotation: compared


def test_swapped_folders_are_told_once_without_a_warning_per_movie(tmp_path, caplog):
    classes, events = annotated()
    for sample in ("01", "02"):
        write_pred(tmp_path / "det", classes, stem=f"{sample}_video")
        (tmp_path / "det" / f"{sample}_video_detection.json").write_text("{}")
        write_truth(tmp_path / "truth", classes, events, sample=sample)
    with caplog.at_level(logging.WARNING, logger="casparks"):
        with pytest.raises(CasparksError, match="holds the output of `casparks detect`"):
            evaluate(tmp_path / "det", tmp_path / "truth")
    assert not caplog.records


# ----------------------------------------------------------------------------------------------
# --pairs: which annotated event was paired with which predicted one


def _pairs_movie():
    """Annotated spark 5, wave 9, puff 12 and an ignore band; predicted spark 3 (on spark 5), puff 7
    (on wave 9), spark 20 on background and spark 21 on the ignore band: each outcome once."""
    classes, events = annotated()
    events[events == 1], events[events == 2], events[events == 3] = 5, 9, 12
    pred = np.zeros(SHAPE, np.uint8)
    ids = np.zeros(SHAPE, np.uint16)
    pred[0:4, 0:4, 0:4], ids[0:4, 0:4, 0:4] = SPARK, 3
    pred[0:12, 0:8, 10:20], ids[0:12, 0:8, 10:20] = PUFF, 7
    pred[5:8, 5:8, 32:34], ids[5:8, 5:8, 32:34] = SPARK, 20
    pred[5:8, 5:8, 36:40], ids[5:8, 5:8, 36:40] = SPARK, 21
    return classes, events, pred, ids


#: the rows of :func:`_pairs_movie` (movie 01): truth_id, truth_class, pred_id, pred_class, iomin, outcome, why
PAIRS_ROWS = [
    (5, "spark", 3, "spark", 1.0, "paired", None),
    (9, "wave", 7, "puff", 1.0, "other_class", "other_class"),
    (12, "puff", None, None, None, "missed", "unseen"),
    (None, None, 20, "spark", None, "false", "on_background"),
    (None, None, 21, "spark", None, "ignored", None),
]


def _rows(table):
    """A pairs table as tuples, missing values as None (whatever pandas holds them as)."""
    columns = ["truth_id", "truth_class", "pred_id", "pred_class", "iomin", "outcome", "why"]
    return [tuple(None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
                  for v in row) for row in table[columns].astype(object).itertuples(index=False)]


def test_pairs_give_the_files_own_ids_and_every_outcome(tmp_path):
    """Ids 5, 9, 12 and 3, 7, 20, 21 as the files hold them, not the scoring's 1..n."""
    from casparks.evaluation import PAIR_COLUMNS

    classes, events, pred, ids = _pairs_movie()
    one = evaluate_movie(classes, events, pred, ids, id="01")
    assert list(one.pairs.columns) == list(PAIR_COLUMNS)
    assert _rows(one.pairs) == PAIRS_ROWS
    assert one.pairs["pred_movie"].isna().all() and one.pairs["truth_movie"].isna().all()  # arrays: no file to name
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", pred, ids)
    result = evaluate(tmp_path / "truth", tmp_path / "pred")
    assert _rows(result.pairs) == PAIRS_ROWS
    assert set(result.pairs["movie"]) == {"01"} and set(result.pairs["pred_movie"]) == {"01_video"}
    assert set(result.pairs["truth_movie"]) == {"01_video"}
    assert result.movies[0] == one  # the pairs change no count
    # one-to-one counts the rows add up to
    puff, spark, wave = (result.scores["classes"][n]["one_to_one_counts"] for n in ("puff", "spark", "wave"))
    assert (spark["tp"], spark["fp"], spark["ignored"], wave["fn"], puff["fp"], puff["fn"]) == (1, 1, 1, 1, 1, 1)


def test_pairs_without_event_files_are_the_components_evaluate_derives(tmp_path):
    classes, _, pred, _ = _pairs_movie()
    write_truth(tmp_path / "truth", classes)
    write_pred(tmp_path / "pred", pred)
    table = evaluate(tmp_path / "truth", tmp_path / "pred").pairs
    truth_components, pred_components = instances_from_classes(classes), instances_from_classes(pred)
    assert table["truth_id"].dropna().tolist() == [truth_components[0, 0, 0], truth_components[0, 0, 10],
                                                   truth_components[2, 2, 25]] == [1, 2, 3]
    assert table["pred_id"].dropna().tolist() == [pred_components[0, 0, 0], pred_components[0, 0, 10],
                                                  pred_components[5, 5, 32], pred_components[5, 5, 36]]
    assert table["outcome"].tolist() == [row[5] for row in PAIRS_ROWS]


def test_pairs_agree_with_the_counts_on_a_simulated_movie():
    """Paired rows are the one-to-one true positives of each class, other-class and missed rows its
    misses, other-class and false rows its false events, and the why column the error kinds."""
    from casparks.metrics import MISSED_KINDS, SPURIOUS_KINDS

    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 48, "width_px": 160}),
                         seed=[0, 1])
    truth, truth_ids = sim.class_label.copy(), np.where(sim.event_label > 0, sim.event_label * 5 + 2, 0)
    truth[:, :4, :] = IGNORE  # an ignore band: predictions there are ignored, not false
    ids = np.unique(truth_ids[truth_ids > 0])
    assert ids.size >= 8
    pred, pred_ids = sim.class_label.copy(), np.where(truth_ids > 0, truth_ids * 3 + 100, 0)  # other ids
    for k, eid in enumerate(ids):
        where = truth_ids == eid
        if k % 4 == 1:  # missed
            pred[where], pred_ids[where] = 0, 0
        elif k % 4 == 2:  # another class
            pred[where] = PUFF if truth[where].max() != PUFF else SPARK
        elif k == 3:  # in two pieces: one paired, one split off
            frames = np.flatnonzero(where.any(axis=(1, 2)))
            pred_ids[frames[frames.size // 2]:][where[frames[frames.size // 2]:]] = 5
    pred[50:60, 40:44, 120:126], pred_ids[50:60, 40:44, 120:126] = SPARK, 7  # on background
    pred[50:60, 0:3, 60:66], pred_ids[50:60, 0:3, 60:66] = WAVE, 8  # on the ignore band
    one = evaluate_movie(truth, truth_ids, pred, pred_ids, id="01")
    table, result = one.pairs, one.scores["classes"]
    for k, name in enumerate(("spark", "wave", "puff")):
        counts, errors = result[name]["one_to_one_counts"], result[name]["one_to_one_errors"]
        of_truth, of_pred = table[table["truth_class"] == name], table[table["pred_class"] == name]
        assert len(of_truth) == result[name]["annotations"]
        assert of_pred["pred_id"].notna().sum() == result[name]["predictions"]
        assert (of_truth["outcome"] == "paired").sum() == counts["tp"] == (of_pred["outcome"] == "paired").sum()
        assert of_truth["outcome"].isin(["other_class", "missed"]).sum() == counts["fn"]
        assert of_pred["outcome"].isin(["other_class", "false"]).sum() == counts["fp"]
        assert (of_pred["outcome"] == "ignored").sum() == counts["ignored"]
        for kind in ("other_class", *MISSED_KINDS):
            assert (of_truth["why"] == kind).sum() == errors["missed"][kind], (name, kind)
        for kind in ("other_class", *SPURIOUS_KINDS):
            assert (of_pred["why"] == kind).sum() == errors["false"][kind], (name, kind)
    totals = table["outcome"].value_counts()
    assert totals["paired"] > 0 and totals["other_class"] > 0 and totals["missed"] > 0
    assert totals["false"] >= 2 and totals["ignored"] >= 1
    assert {"unseen", "other_class", "split_off", "on_background"} <= set(table["why"])
    assert set(table["pred_id"].dropna()) <= set(np.unique(pred_ids[pred_ids > 0]).tolist())
    assert set(table["truth_id"].dropna()) <= set(ids.tolist())


def test_pairs_join_the_detections_events_table(tmp_path):
    """The README's join: pred_movie and pred_id are read_events' movie and id."""
    import casparks
    from casparks.dataset import write_sample
    from casparks.detection import Detection, write_detection
    from casparks.measure import MeasureConfig, event_frequency, measure_events

    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 48, "width_px": 160}),
                         seed=[0, 1])
    sample = write_sample(tmp_path / "truth", sim.movie, sim.class_label, sim.event_label)
    found, found_ids = sim.class_label.copy(), sim.event_label.astype(np.uint16) * 2 + 1  # other ids than the truth's
    found_ids[sim.event_label == 0] = 0
    first = np.unique(sim.event_label[sim.event_label > 0])[0]
    found[sim.event_label == first], found_ids[sim.event_label == first] = 0, 0  # one missed
    found[10:20, 40:44, 120:126], found_ids[10:20, 40:44, 120:126] = SPARK, 999  # one false
    px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
    events = measure_events(sim.movie.data, found, found_ids, px, dt)
    write_detection(Detection(name="01_video", source=sample.video, pixel_size_um=px, frame_interval_ms=dt,
                              class_label=found, event_label=found_ids, events=events,
                              frequency=event_frequency(events, sim.movie.shape, px, dt), event_threshold=0.5,
                              model="truth", settings={"measure": MeasureConfig().to_dict(), "window_frames": 64},
                              timings_s={"total": 0.5}), tmp_path / "det")

    pairs = casparks.evaluate(tmp_path / "truth", tmp_path / "det").pairs
    detected = casparks.read_events(tmp_path / "det")
    joined = pairs.merge(detected, left_on=["pred_movie", "pred_id"], right_on=["movie", "id"], how="left",
                         suffixes=("", "_detected"))
    assert len(joined) == len(pairs)
    has_pred = joined["pred_id"].notna()
    assert has_pred.sum() == len(detected) and joined.loc[has_pred, "id"].notna().all()
    assert (joined.loc[has_pred, "class"] == joined.loc[has_pred, "pred_class"]).all()
    assert joined.loc[joined["outcome"] == "false", "id"].tolist() == [999]
    assert joined.loc[joined["outcome"] == "missed", "truth_id"].tolist() == [first]


def test_cli_writes_the_pairs_and_refuses_an_existing_file_without_overwrite(tmp_path, capsys):
    from casparks.evaluation import PAIR_COLUMNS

    classes, events, pred, ids = _pairs_movie()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", pred, ids)
    out = tmp_path / "pairs.csv"
    args = ["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"), "--pairs", str(out)]
    assert main(args) == 0
    assert f"pairs written to {out}" in capsys.readouterr().out
    table = pd.read_csv(out, dtype={"movie": str})
    assert list(table.columns) == list(PAIR_COLUMNS)
    assert _rows(table.astype({"truth_id": "Int64", "pred_id": "Int64"})) == PAIRS_ROWS
    assert set(table["movie"]) == {"01"} and set(table["pred_movie"]) == {"01_video"}
    assert out.read_text().splitlines()[1] == "01,01_video,5,spark,01_video,3,spark,1,paired,"
    out.write_text("mine")
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "pairs.csv: exists already" in captured.err  # refused before the work
    assert out.read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == len(PAIRS_ROWS)
    assert main([*args, "--overwrite", "--json", str(out)]) == 2
    assert "--json and --pairs name one file" in capsys.readouterr().err
    # with --against, the pairs are --pred's
    write_pred(tmp_path / "other", np.zeros(SHAPE, np.uint8))
    assert main([*args, "--overwrite", "--against", str(tmp_path / "other")]) == 0
    assert _rows(pd.read_csv(out).astype({"truth_id": "Int64", "pred_id": "Int64"})) == PAIRS_ROWS


def test_pairs_of_a_movie_without_predictions_are_all_missed(tmp_path, capsys):
    """A quiet cell where the detector found nothing: every annotated event a 'missed' row (the
    pairs table indexed the empty predictions and crashed, after --json was written)."""
    classes, events, _, _ = _pairs_movie()
    one = evaluate_movie(classes, events, np.zeros_like(classes), None)
    assert len(one.pairs) == 3 and (one.pairs["outcome"] == "missed").all()
    assert one.pairs["pred_id"].isna().all() and one.pairs["why"].eq("unseen").all()
    write_truth(tmp_path / "truth", classes, events)
    write_pred(tmp_path / "pred", np.zeros_like(classes), np.zeros(classes.shape, np.uint16))
    args = ["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred")]
    assert main([*args, "--pairs", str(tmp_path / "p.csv"), "--json", str(tmp_path / "s.json")]) == 0
    assert pd.read_csv(tmp_path / "p.csv")["outcome"].eq("missed").sum() == 3
    for stream in ("-", "/dev/stdout"):  # the CSV mixed with the table on one stream
        assert main([*args, "--pairs", stream]) == 2
        assert "--pairs writes a CSV file, not to a stream" in capsys.readouterr().err

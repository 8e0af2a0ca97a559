"""Data-set folders in the original layout and `casparks check`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from casparks.cli import main
from casparks.dataset import check_dataset, check_sample, list_samples, sample_id
from casparks.errors import CasparksError
from casparks.io import write_class_label, write_event_label, write_stack

SHAPE = (10, 8, 12)


def make_sample(folder, sid="01", classes=None, events=None, units=True):
    video = np.full(SHAPE, 500, np.uint16)
    if classes is None:
        classes = np.zeros(SHAPE, np.uint8)
        classes[2:5, 1:3, 1:3] = 1
        classes[3:9, 4:7, 6:11] = 3
    if events is None:
        events = np.zeros(SHAPE, np.uint16)
        events[2:5, 1:3, 1:3] = 1
        events[3:9, 4:7, 6:11] = 2
    px, dt = (0.2, 6.8) if units else (None, None)
    write_stack(folder / f"{sid}_video.tif", video, px, dt)
    write_class_label(folder / f"{sid}_class_label.tif", classes, px, dt)
    write_event_label(folder / f"{sid}_event_label.tif", events, px, dt)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("01_video.tif", ("01", "video")),
        ("01_class_label.tif", ("01", "class_label")),
        ("12_event_label.tiff", ("12", "event_label")),
        ("01_video_class_label.tif", ("01", "class_label")),
        ("cell_a_video_event_label.TIF", ("cell_a", "event_label")),
        ("01_events.csv", None),
        ("notes.txt", None),
        ("_video.tif", None),
        ("01_video.ome.tif", ("01", "video")),  # an OME-TIFF x.ome.tif is named x (it was no movie at all)
        ("01_class_label.OME.TIFF", ("01", "class_label")),
    ],
)
def test_sample_id(name, expected):
    assert sample_id(name) == expected


def test_list_samples_sorted_naturally(tmp_path):
    for sid in ("10", "2", "01"):
        make_sample(tmp_path, sid)
    samples = list_samples(tmp_path, require=("video", "class_label", "event_label"))
    assert [s.id for s in samples] == ["01", "2", "10"]
    assert samples[0].video.name == "01_video.tif"


def test_a_macs_hidden_companion_files_are_no_movies(tmp_path):
    """A folder copied from a Mac to a shared drive has a ._NAME beside every file: check failed
    and prepare-labels refused the whole set for them (detection skips hidden files)."""
    make_sample(tmp_path, "01")
    for name in ("01_video.tif", "01_class_label.tif", "01_event_label.tif"):
        (tmp_path / f"._{name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    samples = list_samples(tmp_path, require=("video", "class_label", "event_label"))
    assert [s.id for s in samples] == ["01"] and samples[0].video.name == "01_video.tif"


def test_list_samples_errors(tmp_path):
    with pytest.raises(CasparksError, match="missing: does not exist"):
        list_samples(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(CasparksError, match="a.txt: is not a folder"):
        list_samples(tmp_path / "a.txt")
    (tmp_path / "a.txt").unlink()
    with pytest.raises(CasparksError, match="no movies"):
        list_samples(tmp_path)
    write_stack(tmp_path / "03_video.tif", np.zeros(SHAPE, np.uint16), 0.2, 6.8)
    with pytest.raises(CasparksError, match="03 have no class_label"):
        list_samples(tmp_path, require=("video", "class_label"))


def test_clean_dataset_has_no_problems(tmp_path):
    make_sample(tmp_path, "01")
    make_sample(tmp_path, "02")
    assert check_dataset(tmp_path) == []
    assert main(["check", str(tmp_path)]) == 0


def test_check_reports_each_problem_per_file(tmp_path):
    classes = np.zeros(SHAPE, np.uint8)
    classes[2:5, 1:3, 1:3] = 1
    classes[4, 2, 2] = 2  # event 1 now carries two classes
    classes[0, 0, 0] = 9  # unknown code
    make_sample(tmp_path, "01", classes=classes)
    write_stack(tmp_path / "02_video.tif", np.zeros(SHAPE, np.uint16), 0.2, 6.8)
    write_class_label(tmp_path / "02_class_label.tif", np.zeros((4, 8, 12), np.uint8))
    problems = check_dataset(tmp_path)
    text = "\n".join(map(str, problems))
    assert "01_class_label.tif: unknown class codes [9]" in text
    assert "01_event_label.tif: 1 event(s) carry more than one class: 1 (spark/wave)" in text
    assert "02_class_label.tif: shape (4, 8, 12) differs from the movie's (10, 8, 12)" in text
    assert "no 02_event_label.tif" in text
    assert main(["check", str(tmp_path)]) == 1


def test_check_says_how_to_turn_a_binary_mask_of_0_and_255_into_codes(tmp_path, capsys):
    """Fiji's thresholded mask (0/255) was refused as "unknown class codes [255]" with no hint."""
    classes = np.zeros(SHAPE, np.uint8)
    classes[2:5, 1:3, 1:3] = 255
    make_sample(tmp_path, "01", classes=classes, events=(classes // 255).astype(np.uint16))
    classes[3:9, 4:7, 6:11] = 3
    make_sample(tmp_path, "02", classes=classes, events=(classes > 0).astype(np.uint16))
    assert main(["check", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    first = [line for line in lines if "01_class_label.tif" in line]
    second = [line for line in lines if "02_class_label.tif" in line]
    assert any("unknown class codes [255]" in line and "it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks" in line for line in first)
    assert second and not any("binary mask" in line for line in second)  # 0, 3 and 255: no mask


def test_an_event_on_an_unknown_code_is_not_said_to_lie_on_background(tmp_path):
    """An event drawn with code 5 got, beside "unknown class codes [5]", "event(s) lie only on
    background": its voxels' unknown code was read as background."""
    classes = np.zeros(SHAPE, np.uint8)
    classes[2:5, 1:3, 1:3] = 1
    classes[3:9, 4:7, 6:11] = 5  # event 2 drawn with an unknown code
    make_sample(tmp_path, "01", classes=classes)
    text = "\n".join(map(str, check_dataset(tmp_path)))
    assert "unknown class codes [5]" in text and "lie only on background" not in text


def test_check_flags_event_on_background_and_orphan_voxels(tmp_path):
    classes = np.zeros(SHAPE, np.uint8)
    classes[2:5, 1:3, 1:3] = 1
    classes[7:9, 0:2, 0:2] = 1  # event voxels without instance
    events = np.zeros(SHAPE, np.uint16)
    events[2:5, 1:3, 1:3] = 1
    events[5, 5, 5] = 2  # instance on background only
    make_sample(tmp_path, "01", classes=classes, events=events)
    text = "\n".join(map(str, check_dataset(tmp_path)))
    assert "1 event(s) lie only on background: ids 2" in text
    assert "warning" in text and "8 event-class voxels belong to no instance" in text


def test_large_uint32_ids_are_checked_and_scored_without_memory_per_id(tmp_path):
    """Counts were sized by the largest id: ids near 4e9 asked NumPy for 156 GiB (a traceback),
    3e8 for 11 GiB."""
    from casparks.evaluation import evaluate

    classes = np.zeros(SHAPE, np.uint8)
    classes[2:5, 1:3, 1:3] = 1
    classes[3:9, 4:7, 6:11] = 3
    events = np.zeros(SHAPE, np.uint32)
    events[2:5, 1:3, 1:3] = 4_000_000_000
    events[3:9, 4:7, 6:11] = 300_000_000
    events[5, 5, 5] = 3_999_999_999  # an id on background alone, named by its own value
    make_sample(tmp_path, "01", classes=classes, events=events)
    text = "\n".join(map(str, check_dataset(tmp_path)))
    assert "1 event(s) lie only on background: ids 3999999999" in text
    events[5, 5, 5] = 0
    write_event_label(tmp_path / "01_event_label.tif", events, 0.2, 6.8, overwrite=True)
    pred = tmp_path / "pred"  # the annotation copied as a detection's files (itself is refused as its prediction)
    pred.mkdir()
    for kind in ("class_label", "event_label"):
        shutil.copy(tmp_path / f"01_{kind}.tif", pred / f"01_video_{kind}.tif")
    scores = evaluate(tmp_path, pred).scores["classes"]
    assert scores["spark"]["one_to_one"]["f1"] == scores["puff"]["one_to_one"]["f1"] == 1.0


def test_check_warns_about_a_spark_id_on_two_separate_sparks(tmp_path):
    classes = np.zeros(SHAPE, np.uint8)
    events = np.zeros(SHAPE, np.uint16)
    for lo, x in ((1, 1), (6, 10)):  # two sparks apart in time and space, both id 3
        classes[lo:lo + 2, 1:3, x:x + 2] = 1
        events[lo:lo + 2, 1:3, x:x + 2] = 3
    classes[1:9, 5:8, 20:24] = 3  # a puff in two pieces with one id: allowed (detections merge gaps)
    events[1:4, 5:8, 20:24] = 4
    events[6:9, 5:8, 20:24] = 4
    classes[4:6, 5:8, 20:24] = 0
    make_sample(tmp_path, "01", classes=classes, events=events)
    problems = [p for p in check_dataset(tmp_path) if "separate regions" in p.message]
    assert len(problems) == 1 and problems[0].severity == "warning"
    assert ": 3 (2 regions); each id is measured and scored as one spark: where they are two sparks, give each its " \
           "own id" in problems[0].message


def test_check_takes_spark_pieces_joined_by_ignore_voxels_of_their_id_as_one_spark(tmp_path):
    """prepare-labels' peak balls of one spark need not touch; the spark's id stays on the rest
    of its mask, now ignore, which joins them. Ignore without the id joins nothing."""
    classes = np.zeros(SHAPE, np.uint8)
    events = np.zeros(SHAPE, np.uint16)
    classes[1:9, 1:3, 1:3] = 4
    events[1:9, 1:3, 1:3] = 3
    classes[1:3, 1:3, 1:3] = classes[7:9, 1:3, 1:3] = 1  # two balls of spark 3
    make_sample(tmp_path, "01", classes=classes, events=events)
    assert not [p for p in check_dataset(tmp_path) if "separate regions" in p.message]
    events[3:7, 1:3, 1:3] = 0
    write_event_label(tmp_path / "01_event_label.tif", events, 0.2, 6.8, overwrite=True)
    problems = [p for p in check_dataset(tmp_path) if "separate regions" in p.message]
    assert len(problems) == 1 and ": 3 (2 regions);" in problems[0].message


def test_check_warns_about_uint8_instances_and_missing_units(tmp_path):
    make_sample(tmp_path, "01", units=False)
    events = np.zeros(SHAPE, np.uint8)
    events[2:5, 1:3, 1:3] = 255
    tifffile.imwrite(tmp_path / "01_event_label.tif", events)
    problems = check_dataset(tmp_path)
    messages = [p.message for p in problems]
    assert any("8-bit" in m for m in messages)
    assert any("no pixel size or frame interval" in m and "data.pixel_size_um" in m for m in messages)
    assert all(p.severity == "warning" for p in problems if "8-bit" in p.message or "pixel size" in p.message)


def test_check_reports_unreadable_file_without_crashing(tmp_path):
    make_sample(tmp_path, "01")
    (tmp_path / "01_class_label.tif").write_bytes(b"garbage")
    problems = check_dataset(tmp_path)
    assert any("cannot be read as a TIFF" in p.message for p in problems)


def test_check_empty_folder_is_a_user_error(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no movies" in err and "Traceback" not in err


def _detection_beside(folder, sid="01"):
    """What `casparks detect FOLDER --out FOLDER` adds: labels named after the movie, all background."""
    write_class_label(folder / f"{sid}_video_class_label.tif", np.zeros(SHAPE, np.uint8), 0.2, 6.8)
    write_event_label(folder / f"{sid}_video_event_label.tif", np.zeros(SHAPE, np.uint16), 0.2, 6.8)


def test_a_detection_beside_the_annotation_does_not_replace_it(tmp_path, caplog):
    make_sample(tmp_path)
    _detection_beside(tmp_path)
    with caplog.at_level("WARNING", logger="casparks"):
        (sample,) = list_samples(tmp_path, require=("video", "class_label", "event_label"))
    assert sample.class_label.name == "01_class_label.tif"
    assert sample.event_label.name == "01_event_label.tif"
    warned = [r.getMessage() for r in caplog.records]
    assert any("01_video_class_label.tif: not used, 01_class_label.tif" in m for m in warned)
    assert any("01_video_event_label.tif: not used, 01_event_label.tif" in m for m in warned)
    # the prediction reader takes the detection's files
    (pred,) = list_samples(tmp_path, require=(), prefer="detection", warn=False)
    assert pred.class_label.name == "01_video_class_label.tif"


def test_a_detection_alone_standing_for_the_annotation_is_named(tmp_path, caplog):
    """Movie 02 has no annotation, only a detection's outputs: used (training on checked
    detections is a workflow), but said."""
    make_sample(tmp_path)
    write_stack(tmp_path / "02_video.tif", np.full(SHAPE, 500, np.uint16), 0.2, 6.8)
    write_class_label(tmp_path / "02_video_class_label.tif", np.zeros(SHAPE, np.uint8))
    with caplog.at_level("WARNING", logger="casparks"):
        samples = list_samples(tmp_path, require=("video", "class_label"))
    assert [s.id for s in samples] == ["01", "02"]
    warned = [r.getMessage() for r in caplog.records]
    assert any("02_video_class_label.tif: a detection's output, used as movie 02's annotation" in m for m in warned)
    assert not any("01_class_label" in m for m in warned)
    assert any("a detection's output, used as movie 02's annotation" in str(p) for p in check_dataset(tmp_path))


def test_check_names_a_detection_beside_the_annotation(tmp_path, capsys):
    make_sample(tmp_path)
    _detection_beside(tmp_path)
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "01_video_class_label.tif: not used, 01_class_label.tif" in out
    assert "1 sample(s) checked: 0 error(s), 2 warning(s)" in out


def test_check_reads_a_malformed_frame_interval_as_missing(tmp_path, capsys):
    make_sample(tmp_path)
    video = tmp_path / "01_video.tif"
    tifffile.imwrite(video, np.full(SHAPE, 500, np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": "0,005", "tunit": "sec"})
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "no frame interval in the metadata" in out


def test_a_two_channel_movie_in_a_data_set_is_told_to_be_split_not_given_a_channel(tmp_path):
    """check and prepare-labels told the user to pass --channel, which neither takes: a data set
    holds one-channel movies."""
    import tifffile

    from casparks.cli import main

    make_sample(tmp_path, "01")
    one = tifffile.imread(tmp_path / "01_video.tif")
    tifffile.imwrite(tmp_path / "01_video.tif", np.stack([one, one], axis=1), imagej=True,
                     resolution=(5.0, 5.0), metadata={"axes": "TCYX", "unit": "um", "finterval": 0.0068})
    problems = [p.message for p in check_sample(list_samples(tmp_path)[0])]
    assert any("has 2 channels" in m and "save the calcium channel alone" in m for m in problems), problems
    assert not any("--channel" in m for m in problems)
    assert main(["prepare-labels", str(tmp_path), "--out", str(tmp_path / "prepared")]) == 2
    assert not (tmp_path / "prepared").exists()


def test_sparks_in_pieces_counts_regions_of_each_id_joined_by_its_own_ignore_voxels():
    """Each spark id is labelled in its own box (the whole-movie labelling took 26 bytes per
    voxel); ids of any size, pieces joined by the id's ignore voxels, not by another id's."""
    from casparks.dataset import sparks_in_pieces

    classes = np.zeros((12, 10, 30), np.uint8)
    events = np.zeros((12, 10, 30), np.uint32)
    big = 4_000_000_000
    classes[1:3, 1:3, 1:3] = classes[1:3, 1:3, 8:10] = classes[1:3, 1:3, 16:18] = 1  # one id, three pieces
    events[1:3, 1:3, 1:3] = events[1:3, 1:3, 8:10] = events[1:3, 1:3, 16:18] = big
    classes[1:3, 1:3, 10:16], events[1:3, 1:3, 10:16] = 4, big  # its own ignore voxels join two of them
    classes[6:8, 5:7, 1:3] = classes[6:8, 5:7, 6:8] = 1  # id 7: two pieces, joined only through id 8's ignore
    events[6:8, 5:7, 1:3] = events[6:8, 5:7, 6:8] = 7
    classes[6:8, 5:7, 3:6], events[6:8, 5:7, 3:6] = 4, 8
    classes[9:11, 1:4, 20:25], events[9:11, 1:4, 20:25] = 1, 9  # one piece
    classes[9:11, 6:8, 20:22], events[9:11, 6:8, 20:22] = 4, 9  # an ignore-only region of id 9 is no piece
    assert sparks_in_pieces(events, classes) == {7: 2, big: 2}


def test_write_sample_warns_of_the_sample_as_saved_not_of_the_array_given(tmp_path, caplog):
    """255 events given as an 8-bit array were saved as uint16, yet write_sample warned that
    '8-bit ids reach 255 and may have wrapped', which check of the saved sample does not say."""
    import logging

    from casparks.dataset import write_sample
    from casparks.io import Movie

    shape = (20, 16, 200)
    classes, events = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for i in range(1, 256):
        t, y, x = (i % 4) * 5, (i // 4 % 4) * 4, (i // 16) * 12
        classes[t:t + 3, y:y + 3, x:x + 3], events[t:t + 3, y:y + 3, x:x + 3] = 1, i
    movie = Movie(np.full(shape, 100, np.uint16), 0.2, 6.8, name="m")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        sample = write_sample(tmp_path / "set", movie, classes, events)
    assert tifffile.imread(sample.event_label).dtype == np.uint16
    assert check_dataset(tmp_path / "set") == []
    assert "8-bit" not in caplog.text

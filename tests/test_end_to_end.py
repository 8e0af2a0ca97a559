"""The foundation's promise, through the command line: simulate → check → prepare labels → evaluate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from casparks.cli import main
from casparks.dataset import list_samples
from casparks.io import read_movie, read_stack, write_class_label

pytestmark = pytest.mark.slow

SMALL = ["--frames", "120", "--height", "48", "--width", "256"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(folder), "--movies", "2", "--seed", "3", "--preset", "dense", *SMALL]) == 0
    return folder


def test_simulated_set_is_valid_and_has_units(simulated, capsys):
    assert main(["check", str(simulated)]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    movie = read_movie(simulated / "01_video.tif")
    assert movie.shape == (120, 48, 256)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((0.2, 6.8))


def test_simulated_set_against_itself_is_perfect(simulated, tmp_path, capsys):
    out = tmp_path / "self.json"
    # the folder itself is refused as its own prediction; its labels copied as a detection's score 1
    assert main(["evaluate", "--truth", str(simulated), "--pred", str(simulated), "--json", str(out)]) == 2
    assert "is the annotation itself, not a prediction of it" in capsys.readouterr().err
    pred = tmp_path / "pred"
    pred.mkdir()
    for sample in list_samples(simulated):
        for kind in ("class_label", "event_label"):
            shutil.copy(sample.path(kind), pred / f"{sample.id}_video_{kind}.tif")
    assert main(["evaluate", "--truth", str(simulated), "--pred", str(pred), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    for name in ("spark", "puff"):
        per_class = scores["classes"][name]
        assert per_class["annotations"] > 0
        for method in ("reference", "one_to_one"):
            assert per_class[method]["f1"] == pytest.approx(1.0)
        assert per_class["voxel_iou"] == pytest.approx(1.0)
    assert scores["average"]["reference"]["detected"] == pytest.approx(1.0)


def test_empty_prediction_has_recall_zero(simulated, tmp_path):
    pred = tmp_path / "pred"
    for sample in list_samples(simulated):
        shape = read_stack(sample.class_label).shape
        write_class_label(pred / f"{sample.id}_video_class_label.tif", np.zeros(shape, np.uint8))
    out = tmp_path / "empty.json"
    assert main(["evaluate", "--truth", str(simulated), "--pred", str(pred), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    for name in ("spark", "puff"):
        assert scores["classes"][name]["annotations"] > 0
        assert scores["classes"][name]["reference"]["recall"] == 0.0
        assert scores["classes"][name]["one_to_one"]["recall"] == 0.0


def test_prepared_labels_form_a_valid_training_set(simulated, tmp_path):
    out = tmp_path / "train"
    assert main(["prepare-labels", str(simulated), "--out", str(out), "--sparks-type", "peaks"]) == 0
    assert main(["check", str(out)]) == 0
    raw = read_stack(simulated / "01_class_label.tif")
    prepared = read_stack(out / "01_class_label.tif")
    assert prepared.shape == raw.shape
    # peaks shrink sparks to balls: fewer spark voxels, more ignore voxels, puffs untouched
    assert 0 < np.count_nonzero(prepared == 1) < np.count_nonzero(raw == 1)
    assert np.count_nonzero(prepared == 4) > np.count_nonzero(raw == 4)
    np.testing.assert_array_equal(prepared == 3, raw == 3)
    # refusing to overwrite: exit 2 and the existing results untouched
    before = (out / "01_class_label.tif").read_bytes()
    assert main(["prepare-labels", str(simulated), "--out", str(out)]) == 2
    assert (out / "01_class_label.tif").read_bytes() == before

"""casparks calibrate: post-processing settings chosen on annotated movies, written into a run's card."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil

import numpy as np
import pytest
import yaml

import casparks
from casparks.cli import main
from casparks.config import load_config
from casparks.dataset import write_sample
from casparks.models import DEFAULT_MODEL, resolve_model
from casparks.simulate import load_simulation_config, simulate_dataset, simulate_movie
from casparks.training import train


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A run fine-tuned from the default model for one step (its weights unchanged): its card.yaml inherited."""
    root = tmp_path_factory.mktemp("ft")
    simulate_dataset(root / "sim", n_movies=2, seed=0, previews=False,
                     config=load_simulation_config("default", {"n_frames": 48, "height_px": 16, "width_px": 64}))
    assert main(["models", DEFAULT_MODEL, "--config", str(root / "ft.yaml")]) == 0
    small = {"data.data_dir": [str(root / "sim")], "data.val_ids": ["02"], "run.output_dir": str(root / "runs"),
             "run.train_epochs": 1, "data.batch_size": 1, "data.data_duration": 32, "data.num_workers": 0,
             "loss.lr_start": 1e-12}
    return train(load_config(root / "ft.yaml", small)).run_dir


def _no_network(monkeypatch):
    import casparks.detection

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(casparks.detection, "load_detector", refuse)


def test_calibrate_returns_a_row_per_combination_in_order_and_the_best_mean_f1(annotated):
    lines = []
    result = casparks.calibrate(DEFAULT_MODEL, [annotated], event_thresholds=[0.5, 0.9], spark_thresholds=[None, 0.8],
                                puff_thresholds=[None], grid={"spark_min_duration_ms": [10, 100000]},
                                window_frames=64, progress=lines.append)
    rows = result.rows
    settings = ["event_threshold", "spark_threshold", "puff_threshold", "spark_min_duration_ms"]
    expected = list(itertools.product([0.5, 0.9], [None, 0.8], [None], [10, 100000]))
    assert [tuple(r) for r in rows[settings].itertuples(index=False)] == expected
    assert result.n_movies == 1 and len(lines) == 3 + len(expected)  # summary, header, rule, a line per row
    # the movie annotates sparks and puffs, no wave: the mean is theirs, whatever waves are predicted
    assert np.allclose(rows["mean_one_to_one_f1"], (rows["one_to_one_f1_spark"] + rows["one_to_one_f1_puff"]) / 2)
    assert (rows.loc[rows["spark_min_duration_ms"] == 100000, "one_to_one_recall_spark"] == 0).all()  # no 100 s spark
    assert (rows.loc[rows["spark_min_duration_ms"] == 10, "one_to_one_f1_spark"] > 0.3).all()
    means = rows["mean_one_to_one_f1"].to_numpy(dtype=float)
    top = [i for i in range(len(rows)) if means[i] == np.nanmax(means)]
    best = next(i for i in top if dict(zip(settings, expected[i])) == result.best)  # one of the best rows
    assert result.best["spark_min_duration_ms"] == 10
    assert result.best_row["mean_one_to_one_f1"] == pytest.approx(np.nanmax(rows["mean_one_to_one_f1"]))
    assert result.to_dict()["rows"][best]["one_to_one_f1"]["spark"] == pytest.approx(rows["one_to_one_f1_spark"][best])
    assert "| 0.5 | – | – | 10 |" in result.format_table()


def test_row_mean_leaves_out_a_class_no_validation_movie_annotates():
    """calibrate ranked 2 of 4 sparks (0.67) above all 4 with one false puff where no puff is
    annotated (0.50): the row's mean is evaluate's average, over the annotated classes."""
    from casparks.calibration import _group_scores, row_scores
    from casparks.metrics import count_events

    def counts(found, false_puff):
        truth, pred = np.zeros((8, 4, 40), np.uint8), np.zeros((8, 4, 40), np.uint8)
        truth[0:2, 0:2, 0:32:10] = pred[0:2, 0:2, 0:10 * found:10] = 1  # one-voxel-wide sparks in a row
        if false_puff:
            pred[4:8, 2:4, 0:3] = 3
        return count_events(truth, None, pred, None)

    all_found, half = row_scores(counts(4, True)), row_scores(counts(2, False))
    assert all_found["mean_one_to_one_f1"] == 1.0 and half["mean_one_to_one_f1"] == pytest.approx(2 / 3)
    assert all_found["one_to_one_f1_puff"] == 0.0  # the false puff still shows in its column
    grouped = _group_scores([counts(4, True), counts(2, False)])
    assert grouped["group1_mean_one_to_one_f1"] == 1.0 and grouped["mean_one_to_one_f1"] == pytest.approx(5 / 6)


def test_write_card_says_a_run_trained_from_scratch_is_calibrated_now(finetuned, annotated, tmp_path):
    """A run trained from scratch kept "the defaults until calibrated" in its card's description
    after --write-card had calibrated it (only fine-tuned runs' descriptions were updated)."""
    import shutil

    from casparks.training import _add_trained_sampling

    run = tmp_path / "scratch"
    shutil.copytree(finetuned, run)
    (run / "card.yaml").unlink()
    _add_trained_sampling(run, [], None)  # the card casparks train gives a run without one
    assert "defaults until calibrated" in yaml.safe_load((run / "card.yaml").read_text())["description"]
    assert main(["calibrate", str(run), "--val", str(annotated), "--event-thresholds", "0.5", "--spark-thresholds",
                 "none", "--puff-thresholds", "none", "--write-card"]) == 0
    description = yaml.safe_load((run / "card.yaml").read_text())["description"]
    assert description.startswith("trained by casparks train; post-processing calibrated on 1 validation movie")
    assert "defaults until calibrated" not in description


def test_write_card_updates_the_run_card_that_detection_reads(finetuned, annotated, tmp_path, capsys):
    from casparks.detection import load_detector

    before = yaml.safe_load((finetuned / "card.yaml").read_text())
    assert before["postprocess"]["event_threshold"] not in (0.5, 0.97)  # the calibration changes it
    out = tmp_path / "rows.json"
    assert main(["calibrate", str(finetuned), "--val", str(annotated), "--event-thresholds",
                 "0.5", "0.97", "--spark-thresholds", "none", "--puff-thresholds", "none", "0.6",
                 "--grid", "spark_min_duration_ms=10,20", "--json", str(out), "--write-card"]) == 0
    text = capsys.readouterr().out
    assert "card written" in text and "best mean one-to-one F1" in text
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 8 and saved["movies"] == 1
    means = [r["mean_one_to_one_f1"] if r["mean_one_to_one_f1"] is not None else -1 for r in saved["rows"]]
    keys = ("event_threshold", "spark_threshold", "puff_threshold", "spark_min_duration_ms")
    chosen = next(r for r in saved["rows"] if {k: r[k] for k in keys} == saved["best"])
    assert chosen["mean_one_to_one_f1"] == max(means)  # a best row (ties keep the card's own values)
    after = yaml.safe_load((finetuned / "card.yaml").read_text())
    assert {k: v for k, v in after.items() if k not in ("postprocess", "calibration", "description")} == {
        k: v for k, v in before.items() if k not in ("postprocess", "description")}  # every other key kept
    assert "not calibrated for this run" in before["description"]
    assert after["description"].startswith("fine-tuned from") and "calibrated on 1 validation movie" in after["description"]
    assert after["postprocess"] == {**before["postprocess"], **saved["best"]}
    record = after["calibration"]
    assert record["movies"] == 1 and record["val_dirs"] == [str(annotated.resolve())]
    assert record["mean_one_to_one_f1"] == pytest.approx(chosen["mean_one_to_one_f1"], abs=1e-4)
    assert set(record["one_to_one_f1"]) == {"spark", "wave", "puff"} and len(record["date"]) == 10
    # the weights and windows the thresholds were chosen with
    assert record["model_step"] == 1 and record["weights"] == f"{finetuned.name}-step_0000001"
    assert (record["window_frames"], record["overlap"]) == (before["window_frames"], before["overlap"])
    detector = load_detector(finetuned, device="cpu")
    for key in keys:
        value = getattr(detector.postprocess, key)
        assert (value is None and chosen[key] is None) or value == pytest.approx(chosen[key]), key
    assert detector.postprocess.event_threshold in (0.5, 0.97)
    # a second calibration replaced the first without a word, even a better one: now only with --overwrite
    written = (finetuned / "card.yaml").read_text()
    again = ["calibrate", str(finetuned), "--val", str(annotated), "--event-thresholds", "0.9", "--spark-thresholds",
             "none", "--puff-thresholds", "none", "--write-card"]
    capsys.readouterr()
    assert main(again) == 2
    err = capsys.readouterr().err
    assert f"card.yaml: holds a calibration already (of {record['date']} on 1 movie(s)" in err and "--overwrite" in err
    assert (finetuned / "card.yaml").read_text() == written
    assert main([*again, "--overwrite"]) == 0
    assert yaml.safe_load((finetuned / "card.yaml").read_text())["postprocess"]["event_threshold"] == 0.9


def test_write_card_refuses_bundled_models_unknown_grid_keys_and_empty_folders_before_the_network(
        annotated, tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    val = ["--val", str(annotated)]
    assert main(["calibrate", DEFAULT_MODEL, *val, "--write-card"]) == 2
    err = capsys.readouterr().err
    assert "bundled model" in err and "fine-tune it first" in err and len(err.strip().splitlines()) == 1
    assert main(["calibrate", DEFAULT_MODEL, *val, "--grid", "spark_min_size_um=1,2"]) == 2
    assert "grid spark_min_size_um: not a post-processing option" in capsys.readouterr().err
    with pytest.raises(casparks.CasparksError, match="event_threshold: not a post-processing option"):
        casparks.calibrate(DEFAULT_MODEL, [annotated], grid={"event_threshold": [0.5]})
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(tmp_path / "empty")]) == 2
    assert "empty: holds no movies" in capsys.readouterr().err
    assert main(["calibrate", "no-such-model", *val]) == 2
    assert "no model 'no-such-model'" in capsys.readouterr().err
    loose = tmp_path / "lab.ckpt"
    shutil.copy(resolve_model(DEFAULT_MODEL).checkpoint, loose)
    (tmp_path / "lab.yaml").write_text("description: mine\n")
    assert main(["calibrate", str(loose), *val, "--write-card"]) == 2  # a loose card only with --overwrite
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "lab.yaml").read_text() == "description: mine\n"


def test_a_detection_folder_given_as_val_is_named_as_one_before_the_network(detection_output, monkeypatch, capsys):
    """Its labels without movies were "sample(s) 01 have no video file", as evaluate says "swapped?"."""
    _no_network(monkeypatch)
    det = detection_output
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(det)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "det: holds the output of `casparks detect`, not annotated movies" in err
    assert "no video file" not in err


def test_a_card_is_written_only_with_the_windows_its_detection_reads(annotated, tmp_path, monkeypatch, capsys):
    """Thresholds chosen with a window of 32 frames went into a card whose detection reads 208
    (one movie's puff F1 0.57 with the model's window, 0.00 with 32): refused before the network."""
    loose = tmp_path / "lab.ckpt"
    shutil.copy(resolve_model(DEFAULT_MODEL).checkpoint, loose)
    import casparks.detection

    monkeypatch.setattr(casparks.detection.Detector, "detect", lambda *a, **k: pytest.fail("the network ran"))
    for option in (["--window", "32"], ["--overlap", "0.5"], ["--edge-frames", "0"]):
        assert main(["calibrate", str(loose), "--val", str(annotated), *option, "--write-card"]) == 2
        err = capsys.readouterr().err
        assert "thresholds for the card must be chosen with the windows its detection reads" in err, err
        error = [line for line in err.splitlines() if not line.startswith("WARNING")]  # the loose file's own card
        assert len(error) == 1 and "leave out --window/--overlap/--edge-frames" in error[0], err
    assert not (tmp_path / "lab.yaml").exists()


def test_detection_warns_when_its_card_was_calibrated_on_other_weights(finetuned, annotated, tmp_path, caplog):
    """A run's card calibrated on an earlier checkpoint, or before training went on, holds
    thresholds chosen for other weights: detection says so."""
    from casparks.detection import load_detector

    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    card = yaml.safe_load((run / "card.yaml").read_text())
    for step, warned in ((1, False), (7, True), (None, False), ("a note", False)):  # the run's weights are step 1's
        card["calibration"] = {} if step is None else {"model_step": step}
        (run / "card.yaml").write_text(yaml.safe_dump(card))
        caplog.clear()
        with caplog.at_level("WARNING", logger="casparks"):
            load_detector(run, device="cpu")
        told = [r.getMessage() for r in caplog.records if "calibrated on the weights of step" in r.getMessage()]
        assert bool(told) == warned, (step, told)
        if warned:
            assert "calibrated on the weights of step 7, not on these of step 1" in told[0]
            caplog.clear()  # casparks detect (detect_files builds its own Detector) says it too
            with caplog.at_level("WARNING", logger="casparks"):
                assert main(["detect", str(annotated / "01_video.tif"), "--model", str(run), "--out",
                             str(tmp_path / "det"), "--window", "64"]) == 0
            assert "calibrated on the weights of step 7, not on these of step 1" in caplog.text
    card["calibration"] = "calibrated by hand on 3 movies"  # a hand-written card's note: no record, no crash
    (run / "card.yaml").write_text(yaml.safe_dump(card))
    load_detector(run, device="cpu")
    card["calibration"] = {"model_step": 7}  # calibrate itself, choosing the thresholds anew, does not warn
    (run / "card.yaml").write_text(yaml.safe_dump(card))
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        casparks.calibrate(run, [annotated], event_thresholds=[0.9], spark_thresholds=[None], puff_thresholds=[None])
    assert "calibrated on the weights of step" not in caplog.text


def test_write_card_beside_a_loose_checkpoint_starts_from_its_resolved_card(annotated, tmp_path, capsys):
    loose = tmp_path / "lab.ckpt"
    shutil.copy(resolve_model(DEFAULT_MODEL).checkpoint, loose)
    source = resolve_model(loose).card
    assert main(["calibrate", str(loose), "--val", str(annotated), "--event-thresholds", "0.5",
                 "--spark-thresholds", "none", "--puff-thresholds", "none", "--write-card"]) == 0
    card = yaml.safe_load((tmp_path / "lab.yaml").read_text())
    assert card["postprocess"] == {**(source.get("postprocess") or {}), "event_threshold": 0.5,
                                   "spark_threshold": None, "puff_threshold": None}
    assert resolve_model(loose).card["postprocess"]["event_threshold"] == 0.5
    assert not math.isnan(card["calibration"]["mean_one_to_one_f1"])


def test_float_class_labels_are_refused_by_every_command_that_reads_an_annotation(annotated, tmp_path, monkeypatch,
                                                                                 capsys):
    """Class labels saved as 32-bit floats (Fiji's default): check and train refused them, while
    evaluate and calibrate scored them (and calibrate crashed on them once, after the network had
    run). One rule now: refused by all four, before any network runs, with check's fix."""
    import tifffile

    folder = tmp_path / "val"
    shutil.copytree(annotated, folder)
    classes = tifffile.imread(folder / "01_class_label.tif")
    tifffile.imwrite(folder / "01_class_label.tif", classes.astype(np.float32))
    _no_network(monkeypatch)
    with pytest.raises(casparks.CasparksError, match="class labels of dtype float32 are not an integer type"):
        casparks.calibrate(DEFAULT_MODEL, [folder], event_thresholds=[0.9])
    assert main(["evaluate", "--truth", str(folder), "--pred", str(annotated)]) == 2
    assert "class labels of dtype float32 are not an integer type" in capsys.readouterr().err
    assert main(["check", str(folder)]) != 0
    assert "dtype float32 is not an integer type" in capsys.readouterr().out
    # a prediction of another program in whole-number floats is scored as before; fractions are not
    prediction = tmp_path / "pred"
    shutil.copytree(annotated, prediction)
    tifffile.imwrite(prediction / "01_class_label.tif", classes.astype(np.float32))
    assert main(["evaluate", "--truth", str(annotated), "--pred", str(prediction)]) == 0
    tifffile.imwrite(prediction / "01_class_label.tif", classes.astype(np.float32) * 0.5)
    assert main(["evaluate", "--truth", str(annotated), "--pred", str(prediction)]) == 2
    assert "predicted class labels are not whole numbers" in capsys.readouterr().err


def test_annotations_evaluate_refuses_are_refused_before_the_network_every_movie_at_once(tmp_path, monkeypatch):
    """An event id on a spark and a puff was scored silently (evaluate refuses it), and labels of
    1.5 crashed after the network."""
    import tifffile

    from casparks.io import write_stack

    _no_network(monkeypatch)
    folder, shape = tmp_path / "val", (8, 10, 10)
    folder.mkdir()
    classes, events = np.zeros(shape, np.uint8), np.zeros(shape, np.uint16)
    classes[0:2, 0:2, 0:2], classes[3:8, 5:8, 5:8] = 1, 3
    events[0:2, 0:2, 0:2] = events[3:8, 5:8, 5:8] = 1  # one id, two classes
    for movie in ("01", "02", "03"):
        write_stack(folder / f"{movie}_video.tif", np.zeros(shape, np.uint16), 0.2, 6.8)
    tifffile.imwrite(folder / "01_class_label.tif", classes)
    tifffile.imwrite(folder / "01_event_label.tif", events)
    tifffile.imwrite(folder / "02_class_label.tif", np.where(classes > 0, 1.5, 0).astype(np.float32))
    tifffile.imwrite(folder / "03_class_label.tif", classes[:, :, :8])  # not the movie's size
    with pytest.raises(casparks.CasparksError) as info:
        casparks.calibrate(DEFAULT_MODEL, [folder], event_thresholds=[0.9])
    text = str(info.value)
    assert "3 of 3 movies cannot be scored" in text and "the network did not run" in text
    assert "01_event_label.tif: the annotation is not valid: 1 event(s) carry more than one class" in text
    assert "02_class_label.tif: class labels of dtype float32 are not an integer type" in text
    assert "03_class_label.tif: the annotation has shape (8, 10, 8), its movie 03_video.tif (8, 10, 10)" in text


def test_a_class_without_annotations_keeps_the_models_threshold_and_units_can_be_given(tmp_path, monkeypatch):
    """Validation movies without puffs score every puff threshold alike, and the first tried
    (none: the event threshold) replaced the model's calibrated 0.6 (a fine-tuning lab's movies
    had no puffs). Movies without units were refused after the network had run on the others,
    and the advice named --pixel-size, which calibrate did not have."""
    from casparks.classes import PUFF

    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 48, "width_px": 160}),
                         seed=[0, 1])
    classes, events = sim.class_label.copy(), sim.event_label.copy()
    assert (classes == PUFF).any()
    events[classes == PUFF] = 0
    classes[classes == PUFF] = 0
    folder = tmp_path / "no-puffs"
    write_sample(folder, sim.movie, classes, events)
    import tifffile

    tifffile.imwrite(folder / "02_video.tif", sim.movie.data)  # a plain TIFF without units
    shutil.copy(folder / "01_class_label.tif", folder / "02_class_label.tif")
    shutil.copy(folder / "01_event_label.tif", folder / "02_event_label.tif")
    with monkeypatch.context() as patched:
        _no_network(patched)
        with pytest.raises(casparks.CasparksError, match="02_video.tif: the pixel size and the frame interval"):
            casparks.calibrate(DEFAULT_MODEL, [folder], event_thresholds=[0.9], window_frames=64)
    lines = []
    result = casparks.calibrate(DEFAULT_MODEL, [folder], event_thresholds=[0.9], spark_thresholds=[None],
                                puff_thresholds=[None, 0.9], window_frames=64, pixel_size_um=0.2,
                                frame_interval_ms=6.8, progress=lines.append)
    assert result.n_movies == 2
    assert result.rows["one_to_one_f1_puff"].isna().all()  # nothing to score puffs on
    assert len(result.rows) == 1  # nor puff thresholds: only the model's is scored (3× the rows before)
    card_value = resolve_model(DEFAULT_MODEL).card["postprocess"]["puff_threshold"]
    assert result.best["puff_threshold"] == card_value != None  # noqa: E711 (not the first value tried)
    assert any("no puff is annotated" in line for line in lines)
    # the card's record: null, not the 0.0 that false puffs give (it read as "puffs scored zero")
    rows = result.rows.copy()
    rows.loc[:, "one_to_one_f1_puff"] = 0.0  # as where the network finds puffs these movies lack
    record = dataclasses.replace(result, rows=rows).record()
    assert record["one_to_one_f1"]["puff"] is None
    assert record["one_to_one_f1"]["spark"] is not None


def test_ties_keep_the_models_own_settings_and_one_folder_may_be_a_string(annotated):
    """Where several combinations score the same, the first tried replaced the model's tuned value
    with nothing to choose it on (a user: spark threshold 0.9 → none, spark_min_duration_ms 20 →
    10, every row at 0.25). Ties now keep the model's own settings. One folder given as a string
    was read as one folder per character."""
    card = resolve_model(DEFAULT_MODEL).card["postprocess"]
    own = card["spark_min_duration_ms"]
    # a grid that cannot change anything on this movie: the shortest spark lasts more than both
    result = casparks.calibrate(DEFAULT_MODEL, str(annotated), event_thresholds=[card["event_threshold"]],
                                spark_thresholds=[None, card["spark_threshold"]], puff_thresholds=[card["puff_threshold"]],
                                grid={"spark_min_duration_ms": [1, own]}, window_frames=64)
    means = result.rows["mean_one_to_one_f1"]
    tied = result.rows[means == means.max()]
    assert len(tied) >= 2  # a tie, and the card's own row among the best
    assert result.best["spark_min_duration_ms"] == own and result.best["spark_threshold"] == card["spark_threshold"]
    assert result.best_row["spark_min_duration_ms"] == own
    assert result.n_movies == 1 and result.val_dirs == (annotated,)


def test_groups_of_folders_are_scored_apart_and_the_best_has_the_highest_mean_of_their_means(
        annotated, tmp_path, capsys):
    """Two simulators' (or microscopes') validation movies: the best setting was chosen by hand on
    the mean of each set's mean F1 (session 17, session 24), since pooled counts let the set with
    more events outvote the other. `--val A --val B` scores the groups apart."""
    other = tmp_path / "other"
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 80, "height_px": 32, "width_px": 96}), seed=[5, 1])
    write_sample(other, sim.movie, sim.class_label, sim.event_label)
    kwargs = dict(event_thresholds=[0.5, 0.9], spark_thresholds=[None], puff_thresholds=[None], window_frames=64)
    pooled = casparks.calibrate(DEFAULT_MODEL, [annotated, other], **kwargs)
    grouped = casparks.calibrate(DEFAULT_MODEL, [[annotated], other], **kwargs)
    alone = [casparks.calibrate(DEFAULT_MODEL, folder, **kwargs) for folder in (annotated, other)]
    rows = grouped.rows
    for k, single in enumerate(alone, 1):  # each group's mean is that group's own calibration
        assert np.allclose(rows[f"group{k}_mean_one_to_one_f1"], single.rows["mean_one_to_one_f1"], equal_nan=True)
    assert np.allclose(rows["mean_one_to_one_f1"], (rows["group1_mean_one_to_one_f1"] + rows["group2_mean_one_to_one_f1"]) / 2)
    for column in ("one_to_one_f1_spark", "one_to_one_f1_puff", "reference_f1_spark"):  # classes: over every movie
        assert np.allclose(rows[column], pooled.rows[column], equal_nan=True)
    assert grouped.best_row["mean_one_to_one_f1"] == pytest.approx(rows["mean_one_to_one_f1"].max())
    assert grouped.n_movies == 2 and grouped.groups == ((annotated,), (other,)) and len(pooled.groups) == 1
    # the command: --val again starts a group; the table and the JSON name them
    out = tmp_path / "cal.json"
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--val", str(other), "--event-thresholds", "0.5",
                 "0.9", "--spark-thresholds", "none", "--puff-thresholds", "none", "--window", "64",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "group 1 | group 2 | mean |" in printed and "mean: of the groups' means" in printed
    saved = json.loads(out.read_text())
    assert saved["groups"] == [[str(annotated)], [str(other)]]
    assert saved["rows"][0]["group_mean_one_to_one_f1"] == pytest.approx(list(rows.loc[0, ["group1_mean_one_to_one_f1",
                                                                                            "group2_mean_one_to_one_f1"]]))
    assert saved["best_mean_one_to_one_f1"] == pytest.approx(grouped.best_row["mean_one_to_one_f1"], abs=1e-4)


def test_kept_probabilities_are_read_back_by_a_later_run_without_the_network(annotated, tmp_path, monkeypatch, capsys):
    import casparks.detection

    kept = tmp_path / "probabilities"
    options = dict(event_thresholds=[0.5, 0.9], spark_thresholds=[None], puff_thresholds=[None], window_frames=64)
    first = casparks.calibrate(DEFAULT_MODEL, [annotated], probabilities_dir=kept, **options)
    files = sorted(kept.iterdir())
    assert len(files) == 1 and files[0].name.startswith("01_video_") and files[0].suffix == ".npy"
    saved = np.load(files[0])
    assert saved.dtype == np.float16 and saved.shape == (4, 120, 48, 160)

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(casparks.detection.Detector, "detect", refuse)
    second = casparks.calibrate(DEFAULT_MODEL, [annotated], probabilities_dir=kept, **options)
    assert second.rows.equals(first.rows) and second.best == first.best
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--window", "64", "--event-thresholds", "0.5",
                 "0.9", "--spark-thresholds", "none", "--puff-thresholds", "none", "--probabilities", str(kept)]) == 0
    assert "best mean one-to-one F1" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="the network ran"):  # other windows, other probabilities: not read back
        casparks.calibrate(DEFAULT_MODEL, [annotated], probabilities_dir=kept, **{**options, "window_frames": 48})
    assert sorted(kept.iterdir()) == files


def test_kept_probabilities_are_read_one_movie_at_a_time_so_memory_stays_flat(annotated, tmp_path, monkeypatch):
    """Held as float32 arrays, 96 movies' probabilities took 24 GB and the system killed the run;
    held as maps, each held a file open (a thousand movies ran out of open files)."""
    from casparks.calibration import _kept_probabilities
    from casparks.detection import DetectSettings, load_detector

    detector = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64))
    video = annotated / "01_video.tif"
    movie = casparks.read_movie(video)
    made = _kept_probabilities(detector, movie, video, tmp_path)
    read = _kept_probabilities(detector, movie, video, tmp_path)
    assert made == read and made.parent == tmp_path  # the file, not its values
    kept = np.load(made)
    assert kept.dtype == np.float16 and kept.shape == (4, *movie.shape)

    import errno

    def no_more_files(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(np, "load", no_more_files)
    with pytest.raises(OSError, match="Too many open files"):  # not "cannot be read", and the network not run again
        _kept_probabilities(detector, movie, video, tmp_path)


def test_a_cut_short_kept_file_is_computed_again(annotated, tmp_path, caplog):
    kept = tmp_path / "probabilities"
    options = dict(event_thresholds=[0.9], spark_thresholds=[None], puff_thresholds=[None], window_frames=64)
    first = casparks.calibrate(DEFAULT_MODEL, [annotated], probabilities_dir=kept, **options)
    (path,) = kept.iterdir()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a run killed mid-write (not atomic)
    second = casparks.calibrate(DEFAULT_MODEL, [annotated], probabilities_dir=kept, **options)
    assert second.rows.equals(first.rows)
    assert "cannot be read; computing these probabilities again" in caplog.text
    assert np.load(path).shape == (4, 120, 48, 160)


def test_movies_without_events_a_folder_given_twice_and_wrong_output_paths_are_refused_before_the_network(
        annotated, tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    quiet = tmp_path / "quiet"
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 48, "height_px": 16, "width_px": 64}), seed=0)
    write_sample(quiet, sim.movie, np.zeros_like(sim.class_label), np.zeros_like(sim.event_label))
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(quiet)]) == 2
    err = capsys.readouterr().err
    assert "no spark, wave or puff is annotated in the validation movies" in err and len(err.strip().splitlines()) == 1
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), str(annotated)]) == 2
    assert "is given twice as a validation folder" in capsys.readouterr().err
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--val", str(annotated)]) == 2
    assert "is given twice" in capsys.readouterr().err
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--json", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder; give a file name" in capsys.readouterr().err
    movie = annotated / "01_video.tif"
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--json", str(movie / "rows.json")]) == 2
    assert "01_video.tif: is a file, not a folder" in capsys.readouterr().err
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--probabilities", str(movie)]) == 2
    assert "01_video.tif: is not a folder" in capsys.readouterr().err


def test_a_calibration_without_a_defined_score_is_not_written_into_a_card(annotated, tmp_path, monkeypatch):
    import casparks.calibration as calibration

    result = casparks.calibrate(DEFAULT_MODEL, [annotated], event_thresholds=[0.9], spark_thresholds=[None],
                                puff_thresholds=[None], window_frames=64)
    undefined = result.rows.copy()
    undefined["mean_one_to_one_f1"] = float("nan")
    loose = tmp_path / "lab.ckpt"
    shutil.copy(resolve_model(DEFAULT_MODEL).checkpoint, loose)
    import dataclasses

    with pytest.raises(casparks.CasparksError, match="nothing to write into the card"):
        calibration.write_card(loose, dataclasses.replace(result, rows=undefined))
    assert not (tmp_path / "lab.yaml").exists()


def test_annotations_without_event_labels_are_scored_by_connected_components(annotated, tmp_path, caplog):
    """check, evaluate and train take them; calibrate alone refused them."""
    bare = shutil.copytree(annotated, tmp_path / "bare")
    (bare / "01_event_label.tif").unlink()
    options = dict(event_thresholds=[0.9], spark_thresholds=[None], puff_thresholds=[None], window_frames=64)
    with caplog.at_level("WARNING", logger="casparks"):
        result = casparks.calibrate(DEFAULT_MODEL, [bare], **options)
    assert "movie(s) 01 have no event labels" in caplog.text
    assert result.n_movies == 1 and result.rows["one_to_one_f1_spark"].iloc[0] > 0.3


def test_the_default_grids_also_score_the_models_own_thresholds(annotated):
    """The default puff grid (none, 0.9, 0.95) never scored the card's 0.6, so a tie replaced it."""
    from casparks.calibration import DEFAULT_PUFF_THRESHOLDS, DEFAULT_SPARK_THRESHOLDS

    own = resolve_model(DEFAULT_MODEL).card["postprocess"]
    result = casparks.calibrate(DEFAULT_MODEL, [annotated], event_thresholds=[0.9], window_frames=64)
    assert sorted(set(result.rows["puff_threshold"].dropna())) == sorted(
        {v for v in DEFAULT_PUFF_THRESHOLDS if v is not None} | {own["puff_threshold"]})
    assert set(result.rows["spark_threshold"].dropna()) == {v for v in DEFAULT_SPARK_THRESHOLDS if v is not None}
    explicit = casparks.calibrate(DEFAULT_MODEL, [annotated], event_thresholds=[0.9], spark_thresholds=[0.9],
                                  puff_thresholds=[0.9], window_frames=64)
    assert len(explicit.rows) == 1  # thresholds given are scored as given


@pytest.mark.slow
def test_a_sigterm_stops_calibrate_and_its_workers(annotated, tmp_path):
    """Killed by a scheduler's SIGTERM, calibrate died at once (no "interrupted", exit -15) and its
    two forked workers ran on for 7 s, orphaned."""
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = ["--event-thresholds", *map(str, np.linspace(0.3, 0.95, 14).round(3)), "--spark-thresholds",
            "none", "0.5", "0.7", "0.9", "--puff-thresholds", "none", "0.5", "0.7"]
    process = subprocess.Popen([sys.executable, "-m", "casparks", "calibrate", DEFAULT_MODEL, "--val",
                                str(annotated), "--workers", "2", "--window", "64", *grid],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: list[str] = []
    deadline = time.time() + 240
    while not workers and process.poll() is None and time.time() < deadline:  # until the pool has started
        time.sleep(0.2)
        found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        workers = found if len(found) >= 2 else []
    assert workers, "the grid ended before its workers were seen"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert "interrupted" in process.stderr.read()
    time.sleep(1.0)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]


def test_a_runs_own_training_movies_are_refused_for_its_card_and_warned_about_otherwise(finetuned, monkeypatch,
                                                                                        capsys, caplog):
    """calibrate --write-card on the run's data.data_dir chose thresholds on what it learnt and
    recorded them as validation, where train refuses such a validation set."""
    import casparks.detection

    folder = finetuned.parent.parent / "sim"  # data.data_dir, with 02 held out by data.val_ids
    before = (finetuned / "card.yaml").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran")

    with monkeypatch.context() as patched:
        patched.setattr(casparks.detection, "load_detector", refuse)
        assert main(["calibrate", str(finetuned), "--val", str(folder), "--write-card", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "1 of the 2 validation movies are training movies of" in err and "01_video.tif" in err
    assert "02_video.tif" not in err and (finetuned / "card.yaml").read_text() == before
    casparks.calibrate(finetuned, [folder], event_thresholds=[0.9], spark_thresholds=[None], puff_thresholds=[None])
    assert "are training movies of" in caplog.text and "chosen on what the network learnt" in caplog.text


def test_a_json_or_probabilities_folder_that_cannot_be_written_is_refused_before_the_network(
        annotated, tmp_path, monkeypatch, capsys):
    """--json on a read-only file system ran the network and the whole grid, then failed (exit 1):
    the permission bits said yes (root), and only a write tells."""
    import errno
    import tempfile

    _no_network(monkeypatch)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--json", str(tmp_path / "rows.json")]) == 2
    assert "rows.json: cannot be written" in capsys.readouterr().err
    assert main(["calibrate", DEFAULT_MODEL, "--val", str(annotated), "--probabilities", str(tmp_path / "kept")]) == 2
    assert "kept: cannot be written" in capsys.readouterr().err and not (tmp_path / "kept").exists()

"""The scripts that make bundled models (models/*.py): weight averaging and threshold calibration."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from casparks.models import DEFAULT_MODEL, resolve_model
from casparks.simulate import load_simulation_config
from casparks.training import load_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "models"


def run_script(name: str, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(MODELS / name), run_name="__main__")


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """The default model's checkpoint, and a copy with every float tensor + 1."""
    folder = tmp_path_factory.mktemp("ckpts")
    ckpt = torch.load(resolve_model(DEFAULT_MODEL).checkpoint, map_location="cpu", weights_only=False)
    torch.save(ckpt, folder / "a.ckpt")
    shifted = {k: (v + 1 if v.is_floating_point() else v + 7) for k, v in ckpt["state_dict"].items()}
    torch.save(dict(ckpt, state_dict=shifted), folder / "b.ckpt")
    return folder / "a.ckpt", folder / "b.ckpt", ckpt["state_dict"]


def test_average_is_the_weighted_mean_of_the_weights_and_loads_as_a_model(two_checkpoints, tmp_path, monkeypatch):
    a, b, state = two_checkpoints
    out = tmp_path / "soup.ckpt"
    run_script("average.py", monkeypatch, a, b, "--out", out, "--weights", 3, 1)
    soup = torch.load(out, map_location="cpu", weights_only=False)
    for key, value in state.items():
        expected = value + 0.25 if value.is_floating_point() else value  # integers (batch counts) from the first
        assert torch.allclose(soup["state_dict"][key], expected, atol=1e-6), key
    assert [w["weight"] for w in soup["casparks"]["averaged_from"]] == [0.75, 0.25]
    model = load_checkpoint(out)
    assert sum(p.numel() for p in model.network.parameters()) > 1e6


def test_average_refuses_different_networks_and_existing_outputs(two_checkpoints, tmp_path, monkeypatch):
    a, _, state = two_checkpoints
    ckpt = torch.load(a, map_location="cpu", weights_only=False)
    other = tmp_path / "other.ckpt"
    torch.save(dict(ckpt, state_dict=dict(list(state.items())[:-1])), other)
    with pytest.raises(SystemExit, match="different networks"):
        run_script("average.py", monkeypatch, a, other, "--out", tmp_path / "x.ckpt")
    (tmp_path / "taken.ckpt").write_bytes(b"results")
    with pytest.raises(SystemExit, match="exists"):
        run_script("average.py", monkeypatch, a, a, "--out", tmp_path / "taken.ckpt")
    assert (tmp_path / "taken.ckpt").read_bytes() == b"results"
    assert not (tmp_path / "x.ckpt").exists()


def test_calibrate_scores_every_grid_value_of_other_options(annotated, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rows.json"
    import shutil

    copy = shutil.copytree(annotated, tmp_path / "copy")  # a second folder (one folder twice is refused)
    run_script("calibrate.py", monkeypatch, "--model", DEFAULT_MODEL, "--val", annotated, copy,
               "--window", 64, "--event-thresholds", 0.9, "--spark-thresholds", "none",
               "--puff-thresholds", "none", "--grid", "spark_min_duration_ms=10,100000",
               "spark_split_on=movie,probability", "wave_fringe_min_probability=none", "--json", out)
    rows = json.loads(out.read_text())["rows"]
    assert all(r["wave_fringe_min_probability"] is None for r in rows)  # none: the card's option off
    assert [(r["spark_min_duration_ms"], r["spark_split_on"]) for r in rows] == [
        (10, "movie"), (10, "probability"), (100000, "movie"), (100000, "probability")]
    on_movie, on_probability, none, _ = (r["one_to_one_f1"]["spark"] for r in rows)
    assert on_movie > 0.3 and on_probability > 0.3  # the model finds the sparks of a dense movie
    assert not none  # no spark lasts 100 s: none is left (F1 0 or undefined)
    found = rows[1]
    precision, recall = found["one_to_one_precision"]["spark"], found["one_to_one_recall"]["spark"]
    assert found["one_to_one_f1"]["spark"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert not rows[3]["one_to_one_recall"]["spark"]  # nothing found: recall 0
    text = capsys.readouterr().out
    assert "spark_min_duration_ms | spark_split_on | wave_fringe_min_probability |" in text and "2 movies" in text
    assert "| 10 | probability | – |" in text


def test_calibrate_workers_give_the_same_rows_in_the_same_order(annotated, tmp_path, monkeypatch):
    rows = {}
    for workers in (1, 3):
        out = tmp_path / f"rows{workers}.json"
        run_script("calibrate.py", monkeypatch, "--model", DEFAULT_MODEL, "--val", annotated, "--window", 64,
                   "--event-thresholds", 0.5, 0.9, "--spark-thresholds", "none", 0.8, "--puff-thresholds", "none",
                   "--grid", "spark_rescue_threshold=none",  # the card's rescue at 0.8 evens out these thresholds here
                   "--json", out, "--workers", workers)
        rows[workers] = json.loads(out.read_text())["rows"]
    assert len(rows[1]) == 4 and rows[3] == rows[1]
    assert len({json.dumps(r["one_to_one_f1"]) for r in rows[1]}) > 1  # the settings change the scores


def test_calibrate_rejects_unknown_grid_options_before_running_the_network(annotated, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script("calibrate.py", monkeypatch, "--model", "no-such-model", "--val", annotated,
                   "--grid", "spark_min_size=1,2")
    assert exit_info.value.code == 2
    assert "spark_min_size: not a post-processing option" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the thresholds have their own options
        run_script("calibrate.py", monkeypatch, "--model", "no-such-model", "--val", annotated,
                   "--grid", "event_threshold=0.5,0.9")
    assert "event_threshold: not a post-processing option here" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a typo gets the closest option, as --set does
        run_script("calibrate.py", monkeypatch, "--model", "no-such-model", "--val", annotated,
                   "--grid", "spark_min_diam_um=1,2")
    assert "did you mean spark_min_diameter_um?" in capsys.readouterr().err


def test_recall_by_snr_counts_found_and_missed_events(tmp_path, monkeypatch, capsys):
    import tifffile

    from casparks.io import read_stack
    from casparks.simulate import simulate_dataset

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    simulate_dataset(truth, 1, seed=3, config=load_simulation_config(
        "dense", {"n_frames": 120, "height_px": 48, "width_px": 160}), previews=False)
    events = np.asarray(read_stack(truth / "01_event_label.tif"))
    assert events.max() >= 5
    pred.mkdir()
    erased = np.where(events == 2, 0, events).astype(events.dtype)  # the detection misses annotated event 2
    tifffile.imwrite(pred / "01_video_event_label.tif", erased)
    recall = runpy.run_path(str(MODELS / "recall_by_snr.py"))
    frame = recall["table"](truth, pred)
    assert len(frame) == len(np.unique(events)) - 1  # every annotated event, once
    assert frame["found"].sum() == len(frame) - 1
    table = pd.read_csv(truth / "01_events.csv")
    missed = table.set_index("event_id").loc[2]
    assert frame.loc[~frame["found"], "snr"].item() == pytest.approx(missed["snr"])
    tifffile.imwrite(pred / "01_video_event_label.tif", np.zeros_like(events))
    assert not recall["table"](truth, pred)["found"].any()
    run_script("recall_by_snr.py", monkeypatch, "--truth", truth, "--pred", pred, "--bins", 2)
    assert "spark" in capsys.readouterr().out


@pytest.mark.parametrize("config_path", sorted(MODELS.glob("*/train.yaml")), ids=lambda p: p.parent.name)
def test_committed_training_configs_load_and_name_sets_of_a_data_recipe(config_path):
    """A GPU session has minutes: a typo in a committed config (a set the recipe does not make)
    must fail here, not there. Data folders are ``data/<recipe>/<set>``, relative to the config."""
    import shutil
    import subprocess

    import yaml

    from casparks.config import load_config

    config = load_config(config_path)
    folders = [*config.data.data_dir, *config.data.val_dir]
    assert folders
    for folder in map(Path, folders):
        recipe = MODELS / folder.parent.name / "data.yaml"
        assert folder.parent.parent.name == "data" and recipe.is_file(), folder
        assert folder.name in yaml.safe_load(recipe.read_text()), f"{recipe} makes no set {folder.name!r}"
    session = config_path.parent / "gpu_session.sh"
    if session.exists() and shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(session)]).returncode == 0


def test_filter_gain_is_the_sd_of_filtered_white_noise():
    from scipy import ndimage

    observer = runpy.run_path(str(MODELS / "ideal_observer.py"))
    noise = np.random.default_rng(0).standard_normal((60, 4000))
    filtered = ndimage.gaussian_filter1d(noise, 3.0, axis=0, mode="reflect")
    gain = observer["_filter_gain"](60, 3.0)
    assert np.allclose(filtered.std(axis=1), gain, rtol=0.05)
    assert gain[0] > 1.3 * gain[30]  # the border sees its own noise twice


def _one_spark_movie(amplitude: float, seed: int = 0):
    """A 40-photon cell band with Poisson noise and one Gaussian spark (σ 2 frames, 3 px)."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(120), np.arange(32), np.arange(96), indexing="ij")
    shape = np.exp(-0.5 * (((t - 60) / 2) ** 2 + ((y - 16) / 3) ** 2 + ((x - 48) / 3) ** 2))
    f0 = np.where((y >= 4) & (y < 28), 40.0, 4.0)
    video = rng.poisson(f0 * (1 + amplitude * shape)).astype(np.float32)
    labels = (shape > 0.2).astype(np.uint8)
    return video, labels, labels.copy()


def test_matched_filter_scores_a_spark_as_its_signal_to_noise_ratio_and_noise_makes_no_false_events():
    observer = runpy.run_path(str(MODELS / "ideal_observer.py"))
    # matched-filter SNR of A·g in Poisson noise of 40 photons: A·√40·sqrt(Σg²), Σg² = π^1.5·2·3·3
    amplitude = 0.25
    expected = amplitude * np.sqrt(40.0) * np.sqrt(np.pi**1.5 * 18)
    video, classes, events = _one_spark_movie(amplitude)
    scores, false, searched, cell = observer["movie_scores"](video, classes, events, [(2.0, 3.0, 3.0)], [1], 10, (10, 6, 6))
    assert expected == pytest.approx(15.8, abs=0.1)
    assert 0.8 * expected < scores[1] < 1.25 * expected
    assert cell == pytest.approx(120 * 24 * 96)  # Otsu finds the bright band
    assert false[observer["THRESHOLDS"] >= 5.0].sum() == 0
    faint, _, _ = _one_spark_movie(0.0, seed=1)
    scores, false, _, _ = observer["movie_scores"](faint, classes, events, [(2.0, 3.0, 3.0)], [1], 10, (10, 6, 6))
    assert scores[1] < 4.5  # no signal: the mask's maximum of noise
    walled = classes.copy()
    walled[:, 30:, :] = 2  # a wave on the frame's edge all movie long: nothing is quiet, nothing is searched
    scores, false, searched, _ = observer["movie_scores"](video, walled, events, [(2.0, 3.0, 3.0)], [1], 10, (10, 6, 6))
    assert 0.8 * expected < scores[1] < 1.25 * expected  # F0 and noise from all voxels outside the events
    assert searched == 0 and not false.any()
    result = observer["sweep"](np.array([3.0, 9.0, 12.0]), np.where(observer["THRESHOLDS"] < 8, 2.0, 0.0))
    at_8 = np.flatnonzero(observer["THRESHOLDS"] == 8.0)[0]
    assert (result["recall"][at_8], result["precision"][at_8]) == (pytest.approx(2 / 3), 1.0)


SCRIPTS = sorted([*MODELS.glob("*.py"), *MODELS.glob("*/*.py"), *(MODELS.parent / "benchmarks").glob("*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_benchmark_and_model_script_starts(script, monkeypatch, capsys):
    """The README's commands run these scripts: bench_labels.py imported a function that had moved
    to another module, and failed on its first line."""
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    monkeypatch.syspath_prepend(str(script.parent))  # as `python script.py` has it: its folder's modules
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out


def test_puff_snr_by_sampling_scores_thresholds_with_the_scaled_snr():
    script = runpy.run_path(str(MODELS / "puff_snr_by_sampling.py"))
    rows = [{"pixel_size_um": 0.1, "snr": 2.2, "matched": True},
            {"pixel_size_um": 0.1, "snr": 1.6, "matched": False},
            {"pixel_size_um": 0.1, "snr": 4.4, "matched": True}]
    at = {t: i for i, t in enumerate(script["THRESHOLDS"])}
    plain = script["f1_by_threshold"](rows, 3, alpha=0.0)
    assert plain[at[1.5]] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # all kept: 2 TP, 1 FP, 1 FN
    assert plain[at[2.0]] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))  # the false one dropped
    # per µm² at 0.1 µm halves every SNR: only the brightest is kept at 2
    assert script["f1_by_threshold"](rows, 3, alpha=1.0)[at[2.0]] == pytest.approx(2 * 1 / (2 * 1 + 0 + 2))

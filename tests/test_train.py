"""Training engine: a tiny run end to end, exact resume, fine-tuning, self-describing checkpoints,
bad input through the CLI, two-process DDP on the CPU, and the example configs."""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import casparks
from casparks.cli import main
from casparks.config import load_config
from casparks.io import read_stack, write_class_label
from casparks.models import resolve_model
from casparks.simulate import load_simulation_config, simulate_dataset
from casparks.training import (
    CHECKPOINT_FORMAT_VERSION,
    LoadedModel,
    TrainResult,
    checkpoint_path,
    finetune_config,
    list_checkpoints,
    load_checkpoint,
    train,
)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
SIM = {"n_frames": 48, "height_px": 16, "width_px": 64}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    config = load_simulation_config("default", SIM)
    simulate_dataset(root / "sim", n_movies=3, seed=0, config=config, previews=False)
    simulate_dataset(root / "sim_test", n_movies=1, seed=1, config=config, previews=False)
    return root


def overrides(data: Path, **extra) -> dict[str, object]:
    values = {
        "data.data_dir": str(data / "sim"),
        "data.val_ids": ["03"],
        "run.output_dir": str(data / "runs"),
        "run.print_every": 100,
        "network.dropout": 0.2,  # dropout draws random numbers: exact resume must restore them
    }
    values.update(extra)
    return values


def config(data: Path, **extra):
    return load_config(TINY, overrides(data, **extra))


def cli_args(data: Path, **extra) -> list[str]:
    args = ["train", str(TINY)]
    for key, value in overrides(data, **extra).items():
        if isinstance(value, list):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def full_run(data):
    """4 steps of the tiny config through the CLI (saves and validates every 2 steps)."""
    assert main(cli_args(data, **{"run.run_name": "full"})) == 0
    return data / "runs" / "full"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).network.state_dict()


# ----------------------------------------------------------------------------------------------
# a run


def test_cli_run_writes_checkpoints_metrics_config_and_logs(data, full_run):
    assert sorted(p.name for p in (full_run / "checkpoints").iterdir()) == [
        "last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]
    assert list(list_checkpoints(full_run)) == [2, 4]
    table = rows(full_run / "metrics.csv")
    assert [r["step"] for r in table] == ["2", "4"]
    assert {"loss", "spark/f1_reference", "wave/f1_one_to_one", "puff/voxel_iou"} <= set(table[0])
    assert np.isfinite(float(table[-1]["loss"]))
    saved = load_config(full_run / "config.yaml")
    assert saved == config(data, **{"run.run_name": "full"})
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(full_run / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/loss", "val/spark/f1_reference", "val/puff/f1_one_to_one", "val/wave/voxel_iou"} <= tags
    assert [e.step for e in events.Scalars("val/loss")] == [2, 4]
    assert "step 4 validation" in (full_run / "logs" / "train.log").read_text()
    assert any((full_run / "labels_cache").iterdir())


def test_final_step_is_saved_and_validated_and_result_is_typed(data):
    result = train(config(data, **{"run.run_name": "odd", "run.train_epochs": 3}))
    assert isinstance(result, TrainResult)
    assert result.step == 3
    assert result.checkpoint == result.run_dir / "checkpoints" / "step_0000003.ckpt"
    assert list(list_checkpoints(result.run_dir)) == [2, 3]
    assert [r["step"] for r in rows(result.run_dir / "metrics.csv")] == ["2", "3"]
    assert set(result.metrics) >= {"loss", "spark/f1_reference", "mean/voxel_iou"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.step = 4  # type: ignore[misc]
    assert "step 3 validation: loss" in (result.run_dir / "logs" / "train.log").read_text()  # the last one too


def test_an_interrupted_last_validation_says_how_to_go_on(data, monkeypatch, caplog):
    """A Ctrl-C in the validation after the last step printed only "interrupted"."""
    import casparks.training as engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_validate_now", interrupted)
    with caplog.at_level("WARNING", logger="casparks"), pytest.raises(KeyboardInterrupt):
        train(config(data, **{"run.run_name": "cut-last", "run.train_epochs": 3}))
    assert ("stopped in the validation of the last step, 3: its weights are saved; the same command and "
            "--set run.load_run_name=cut-last --set run.load_mode=resume validates them") in caplog.text


def test_lightning_notices_go_to_the_log_not_the_terminal(data, capfd):
    assert main(cli_args(data, **{"run.run_name": "quiet", "run.train_epochs": 1})) == 0
    out, err = capfd.readouterr()
    assert "GPU available" not in out + err and "LeafSpec" not in out + err
    log_text = (data / "runs" / "quiet" / "logs" / "train.log").read_text()
    assert "GPU available" in log_text
    assert "litlogger" not in log_text  # Lightning's advertisement is not part of the run's record


def test_max_minutes_stops_early_with_a_saved_checkpoint(data):
    result = train(config(data, **{"run.run_name": "timed", "run.train_epochs": 1000, "run.max_minutes": 1e-4}))
    assert 1 <= result.step < 1000
    assert result.checkpoint == result.run_dir / "checkpoints" / f"step_{result.step:07d}.ckpt"
    assert result.checkpoint.is_file()


def test_memory_format_sets_the_layout_and_not_the_result(data):
    """channels_last (auto on the CPU) trains in channels-last 3-D layout, to the same weights."""
    def conv_weights(result):
        state = torch.load(result.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        # layouts differ only where a weight has several input channels and a kernel of several voxels
        return {k: v for k, v in state.items() if v.ndim == 5 and v.shape[1] > 1 and v.shape[2:].numel() > 1}

    fast = train(config(data, **{"run.run_name": "cl", "run.train_epochs": 2, "network.dropout": 0.0}))
    plain = train(config(data, **{"run.run_name": "contiguous", "run.train_epochs": 2, "network.dropout": 0.0,
                                  "run.memory_format": "contiguous"}))
    fast_w, plain_w = conv_weights(fast), conv_weights(plain)
    assert fast_w and all(w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous()
                          for w in fast_w.values())
    assert all(w.is_contiguous() for w in plain_w.values())
    # Adam moves a weight by up to lr (1e-3) per step whatever its gradient's size, so weights whose
    # gradients are ~0 (rounding differs between layouts) may differ by up to 2 steps × lr
    for key in fast_w:
        assert torch.allclose(fast_w[key], plain_w[key], atol=2e-3), key
    assert fast.metrics["loss"] == pytest.approx(plain.metrics["loss"], rel=1e-3)


def test_a_model_trained_with_resample_to_detects_at_that_sampling(data):
    """data.resample_to: training movies are resampled to it, and detection with the run does
    the same to new movies (the sampling comes from the checkpoint's config; no card needed)."""
    from casparks.detection import load_detector
    from casparks.simulate import simulate_movie

    result = train(config(data, **{"run.run_name": "resampled", "run.train_epochs": 1, "data.resample_to": [0.4, 13.6]}))
    cached = list((result.run_dir / "labels_cache").glob("*_video_*.tif"))
    assert len(cached) == 3 and read_stack(cached[0]).shape == (24, 8, 32)  # 48 × 16 × 64 halved
    detector = load_detector(result.run_dir, device="cpu")
    assert detector.native_sampling == (0.4, 13.6) and detector.describe()["native_sampling"] == [0.4, 13.6]
    # a run trained from scratch has a card with its movies' samplings: detection warned outside
    # none (a 1 µm movie was enlarged 5× without a word)
    assert detector.info.card["trained_sampling"] == {"pixel_size_um": [0.2, 0.2], "frame_interval_ms": [6.8, 6.8]}
    assert detector.info.card["native_pixel_size_um"] == 0.4
    movie = simulate_movie(load_simulation_config("default", SIM), seed=5).movie
    assert detector._resample_factors(movie) == pytest.approx((0.5, 0.5, 0.5))
    found = detector.detect(movie)
    assert found.class_label.shape == movie.shape and found.pixel_size_um == movie.pixel_size_um


def test_movies_of_different_frame_sizes_train_in_one_batch(data, tmp_path):
    simulate_dataset(tmp_path / "mixed", n_movies=1, seed=3, config=load_simulation_config("default", SIM),
                     previews=False)
    simulate_dataset(tmp_path / "mixed", n_movies=1, seed=4, first_id=2, previews=False,
                     config=load_simulation_config("default", {**SIM, "height_px": 24, "width_px": 40}))
    simulate_dataset(tmp_path / "mixed", n_movies=1, seed=5, first_id=3, previews=False,
                     config=load_simulation_config("default", SIM))
    # 01 (16 × 64 px) and 02 (24 × 40 px) train; with seed 0 a batch holds chunks of both (default collation fails)
    result = train(config(data, **{"run.run_name": "mixed", "run.train_epochs": 2, "data.batch_size": 2,
                                   "data.data_dir": str(tmp_path / "mixed"), "data.val_ids": ["03"]}))
    assert result.step == 2 and np.isfinite(result.metrics["loss"])


# ----------------------------------------------------------------------------------------------
# resume and fine-tune


@pytest.mark.slow
def test_resume_gives_the_weights_of_an_uninterrupted_run(data, full_run):
    half = train(config(data, **{"run.run_name": "half", "run.train_epochs": 2}))
    assert half.step == 2
    resumed = train(config(data, **{"run.run_name": "half", "run.load_run_name": "half"}))
    assert resumed.step == 4
    straight, again = weights(full_run / "checkpoints" / "step_0000004.ckpt"), weights(resumed.checkpoint)
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
    # validation rows continue without duplicates, as in the uninterrupted run
    assert [r["step"] for r in rows(half.run_dir / "metrics.csv")] == ["2", "4"]
    assert rows(half.run_dir / "metrics.csv")[-1]["loss"] == rows(full_run / "metrics.csv")[-1]["loss"]


def test_a_run_moved_to_another_folder_resumes_there_without_lightnings_warning(data, full_run, tmp_path, recwarn):
    """Lightning said "The dirpath has changed from ... won't be reloaded" about a resume that works."""
    import shutil

    half = train(config(data, **{"run.run_name": "moving", "run.train_epochs": 2}))
    shutil.move(str(half.run_dir), str(tmp_path / "moving"))
    resumed = train(config(data, **{"run.run_name": "moving", "run.load_run_name": "moving",
                                    "run.output_dir": str(tmp_path)}))
    assert resumed.step == 4 and resumed.run_dir == tmp_path / "moving"
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]
    straight, again = weights(full_run / "checkpoints" / "step_0000004.ckpt"), weights(resumed.checkpoint)
    assert all(torch.equal(straight[k], again[k]) for k in straight)


@pytest.mark.slow
def test_a_crash_loses_only_the_steps_since_the_last_checkpoint(data, full_run, monkeypatch):
    import casparks.training as engine

    original = engine._Draws.__getitem__

    def failing(self, key):
        if key[0] >= 6:  # the 4th batch of 2 chunks: the run dies during step 3 or 4
            raise RuntimeError("simulated crash")
        return original(self, key)

    monkeypatch.setattr(engine._Draws, "__getitem__", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config(data, **{"run.run_name": "crash"}))
    run_dir = data / "runs" / "crash"
    assert list(list_checkpoints(run_dir)) == [2]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(engine._Draws, "__getitem__", original)
    resumed = train(config(data, **{"run.run_name": "crash", "run.load_run_name": "crash"}))
    straight, again = weights(full_run / "checkpoints" / "step_0000004.ckpt"), weights(resumed.checkpoint)
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_ctrl_c_says_in_the_log_where_the_run_stopped_and_how_to_resume(data, full_run, monkeypatch, capsys):
    import casparks.training as engine

    original = engine._Draws.__getitem__

    def interrupted(self, key):
        if key[0] >= 6:  # Ctrl-C while the 4th batch is drawn, after the step-2 checkpoint
            raise KeyboardInterrupt
        return original(self, key)

    monkeypatch.setattr(engine._Draws, "__getitem__", interrupted)
    assert main(cli_args(data, **{"run.run_name": "stopped"})) == 130  # not Lightning's exit(1)
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    log_text = (data / "runs" / "stopped" / "logs" / "train.log").read_text()
    line = next(line for line in log_text.splitlines() if "training stopped" in line)
    assert "of 4, interrupted" in line and "last checkpoint is step 2" in line
    assert "run.load_run_name=stopped" in line and line.split(": ", 1)[1] in err  # also on the terminal

    # before the first save (save_every is 2) a Ctrl-C kept nothing: the steps taken are saved now
    def early(self, key):
        if key[0] >= 4:  # while the 3rd batch is drawn (one is drawn ahead): step 1 taken, none saved
            raise KeyboardInterrupt
        return original(self, key)

    monkeypatch.setattr(engine._Draws, "__getitem__", early)
    assert main(cli_args(data, **{"run.run_name": "early"})) == 130
    assert "last checkpoint is step 1" in capsys.readouterr().err
    assert list(list_checkpoints(data / "runs" / "early")) == [1]
    # a scheduler's SIGTERM to the process group: the data workers die first, and their
    # RuntimeError was a Lightning traceback, with nothing saved
    import os
    import signal

    def terminated(self, key):
        if key[0] >= 4:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
        return original(self, key)

    monkeypatch.setattr(engine._Draws, "__getitem__", terminated)
    assert main(cli_args(data, **{"run.run_name": "term"})) == 143  # 128 + SIGTERM: 130 said Ctrl-C to a scheduler
    err = capsys.readouterr().err
    assert "Traceback" not in err and "last checkpoint is step 1" in err
    assert list(list_checkpoints(data / "runs" / "term")) == [1]

    # a SIGTERM to this process alone: Lightning stops at the end of the step (its SIGTERMException)
    def signalled(self, key):
        if key[0] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, key)

    monkeypatch.setattr(engine._Draws, "__getitem__", signalled)
    assert main(cli_args(data, **{"run.run_name": "term-alone"})) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err
    assert list_checkpoints(data / "runs" / "term-alone")
    # interrupted again right after resuming, before a new step: the checkpoint resumed from is kept as it was
    saved = (data / "runs" / "early" / "checkpoints" / "step_0000001.ckpt").read_bytes()

    def at_once(self, key):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine._Draws, "__getitem__", at_once)
    assert main(cli_args(data, **{"run.run_name": "early", "run.load_run_name": "early"})) == 130
    assert (data / "runs" / "early" / "checkpoints" / "step_0000001.ckpt").read_bytes() == saved
    monkeypatch.setattr(engine._Draws, "__getitem__", original)
    resumed = train(config(data, **{"run.run_name": "early", "run.load_run_name": "early"}))
    straight, again = weights(full_run / "checkpoints" / "step_0000004.ckpt"), weights(resumed.checkpoint)
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_a_validation_cut_short_is_run_again_on_resume(data, full_run, monkeypatch):
    """A Ctrl-C while step 2 was validated (its checkpoint saved just before) left a checkpoint
    from which the resumed run skipped that validation: metrics.csv had no row for step 2. Stopped
    between movies (a SIGTERM) or in a later one, the resumed run scored only the movies not done,
    counted from the first (/tmp demo: a row of the wrong movies). Now it validates them all again."""
    import casparks.training as engine

    original = engine._evaluate_movie

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_evaluate_movie", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config(data, **{"run.run_name": "cut-validation"}))
    run_dir = data / "runs" / "cut-validation"
    assert list(list_checkpoints(run_dir)) == [2]
    monkeypatch.setattr(engine, "_evaluate_movie", original)
    resumed = train(config(data, **{"run.run_name": "cut-validation", "run.load_run_name": "cut-validation"}))
    assert rows(run_dir / "metrics.csv") == rows(full_run / "metrics.csv")  # steps 2 and 4, the same scores
    straight, again = weights(full_run / "checkpoints" / "step_0000004.ckpt"), weights(resumed.checkpoint)
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_a_validation_cut_in_its_second_movie_scores_every_movie_on_resume(data, monkeypatch):
    """With one validation movie Lightning's own restart state already re-ran it, so the test
    above passed without the fix. With two, a Ctrl-C in the second left the resumed run scoring
    "the movies not done" counted from the first: step 2's loss 0.5466 instead of 0.5254 (a
    reviewer's script with the fix made a no-op)."""
    import casparks.training as engine

    two = {"data.val_ids": ["02", "03"]}
    straight = train(config(data, **two, **{"run.run_name": "two-val"}))
    original, calls = engine._evaluate_movie, []

    def cut_in_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_evaluate_movie", cut_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        train(config(data, **two, **{"run.run_name": "two-val-cut"}))
    monkeypatch.setattr(engine, "_evaluate_movie", original)
    resumed = train(config(data, **two, **{"run.run_name": "two-val-cut", "run.load_run_name": "two-val-cut"}))
    assert rows(resumed.run_dir / "metrics.csv") == rows(straight.run_dir / "metrics.csv")



def test_a_cut_validation_of_the_last_step_is_resumed(data, full_run, monkeypatch):
    """A Ctrl-C in the last step's validation left metrics.csv without its row, and resuming (the
    command train.log prints) was refused as "finished" (a reviewer). Resuming runs that
    validation alone; a finished run is still refused."""
    import casparks.training as engine

    original, calls = engine._evaluate_movie, []

    def cut_in_the_last(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # step 4's validation (step 2's is the first call)
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_evaluate_movie", cut_in_the_last)
    with pytest.raises(KeyboardInterrupt):
        train(config(data, **{"run.run_name": "last-cut"}))
    run_dir = data / "runs" / "last-cut"
    assert [r["step"] for r in rows(run_dir / "metrics.csv")] == ["2"]
    monkeypatch.setattr(engine, "_evaluate_movie", original)
    resumed = train(config(data, **{"run.run_name": "last-cut", "run.load_run_name": "last-cut"}))
    assert resumed.step == 4 and rows(run_dir / "metrics.csv") == rows(full_run / "metrics.csv")
    with pytest.raises(casparks.CasparksError, match="has finished"):
        train(config(data, **{"run.run_name": "last-cut", "run.load_run_name": "last-cut"}))


def test_max_minutes_limits_each_job_of_a_run(data):
    """run.max_minutes is each job's limit: Lightning's Timer restored the time of the jobs before,
    so a run resumed by a scheduler with its own command and limit took no step at all and
    validated its last step again, job after job (a reviewer: steps 3, 3, 3)."""
    limit = {"run.train_epochs": 1000, "run.max_minutes": 0.001, "run.save_every": 1000, "run.test_every": 1000}
    first = train(config(data, **limit, **{"run.run_name": "jobs"}))
    assert 0 < first.step < 1000
    second = train(config(data, **limit, **{"run.run_name": "jobs", "run.load_run_name": "jobs"}))
    assert second.step > first.step
    # no validation is due before step 1000 (Lightning validated each job's last step)
    assert not (second.run_dir / "metrics.csv").exists()


def test_data_folders_are_recorded_absolute_and_compared_on_resume(data, tmp_path, monkeypatch):
    """Folders given relative (--set data.data_dir=[sim]) were recorded as typed, and a resume
    compared them against the directory it ran in: the run's own config.yaml was refused (its
    'sim' read against the run folder), and another directory's 'sim' accepted (a reviewer)."""
    monkeypatch.chdir(data)
    relative = {"data.data_dir": "sim", "run.output_dir": str(tmp_path / "runs")}
    first = train(config(data, **relative, **{"run.run_name": "rel", "run.train_epochs": 2}))
    assert load_config(first.run_dir / "config.yaml").data.data_dir == (str(data / "sim"),)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data / "sim", elsewhere / "sim")
    monkeypatch.chdir(elsewhere)
    with pytest.raises(casparks.CasparksError, match="data.data_dir"):  # another folder named sim
        train(config(data, **relative, **{"run.run_name": "rel", "run.load_run_name": "rel",
                                          "run.train_epochs": 4}))
    resumed = train(load_config(first.run_dir / "config.yaml", {"run.load_run_name": "rel", "run.train_epochs": 4}))
    assert resumed.step == 4

def test_the_plateau_scheduler_gets_each_validation_once_across_a_resume(data, monkeypatch):
    """Every checkpoint of a step that validates is written before that validation (Lightning's
    on_train_batch_end), and a run resumed from it skipped the validation: loss.scheduler plateau
    never got that step's val/loss. Trained 2 steps then resumed to 4, or stopped by a SIGTERM in
    step 2's last validation movie (Lightning finishes the validation, then stops), step 4's
    scheduler had last_epoch 0 and best inf, not 1 and step 2's loss as an uninterrupted run's.
    Now the resumed run validates that step again: the scheduler gets it once, metrics.csv once."""
    import signal

    import casparks.training as engine
    from casparks.errors import Terminated

    plateau = {"loss.scheduler": "plateau"}
    straight = train(config(data, **plateau, **{"run.run_name": "plateau"}))
    expected = torch.load(straight.checkpoint, weights_only=True)["lr_schedulers"]
    assert expected[0]["last_epoch"] == 1  # step 2's loss; step 4's comes after its checkpoint

    def resumed(name: str) -> TrainResult:
        return train(config(data, **plateau, **{"run.run_name": name, "run.load_run_name": name}))

    train(config(data, **plateau, **{"run.run_name": "plateau-longer", "run.train_epochs": 2}))
    longer = resumed("plateau-longer")
    original = engine._evaluate_movie

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it and stops after the movie
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_evaluate_movie", terminated)
    with pytest.raises(Terminated):
        train(config(data, **plateau, **{"run.run_name": "plateau-term"}))
    monkeypatch.setattr(engine, "_evaluate_movie", original)
    assert list(list_checkpoints(data / "runs" / "plateau-term")) == [2]
    term = resumed("plateau-term")
    for run in (longer, term):
        assert torch.load(run.checkpoint, weights_only=True)["lr_schedulers"] == expected, run.run_dir.name
        assert rows(run.run_dir / "metrics.csv") == rows(straight.run_dir / "metrics.csv"), run.run_dir.name


def patch_training_loss(monkeypatch, change):
    """Wrap the training loss: ``change(n, value)`` gets the value of training call ``n`` (1-based;
    validation calls pass untouched) and returns the value the step uses. Returns the call count."""
    import casparks.losses as losses

    real, calls = losses.build_loss, {"n": 0}

    def build(config, class_weights=None):
        inner = real(config, class_weights)

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, logits, target):
                value = self.inner(logits, target)
                if not torch.is_grad_enabled():  # validation
                    return value
                calls["n"] += 1
                return change(calls["n"], value)

        return Wrapped()

    monkeypatch.setattr(losses, "build_loss", build)
    return calls


def stopping_loss(monkeypatch, at_call, stop):
    """Call ``stop()`` in the training loss of training call ``at_call`` (1-based): after that
    step's forward pass (batch-norm statistics moved, dropout drawn), before its update."""

    def change(n, value):
        if n == at_call:
            stop()
        return value

    patch_training_loss(monkeypatch, change)


def _ctrl_c():
    raise KeyboardInterrupt


def _sigterm():
    """A SIGTERM to the process group: a data worker dies and torch's SIGCHLD handler raises in
    the main process wherever it is, here inside the forward pass."""
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")


@pytest.mark.parametrize("stop, at_call", [(_ctrl_c, 2), (_sigterm, 2), (_ctrl_c, 3)],
                         ids=["ctrl_c", "sigterm", "ctrl_c_after_a_validation"])
def test_a_run_stopped_inside_a_step_resumes_to_an_uninterrupted_run(data, full_run, monkeypatch, stop, at_call):
    """Stopped in step 2's forward pass, the checkpoint saved on the way out (step 1) held the
    batch-norm statistics and random state after that forward pass (num_batches_tracked 2, not
    1): the resumed run's weights were exact but its 54 batch-norm buffers were not (a user's
    fine-tuning, Ctrl-C'd at step 14 of 40). And Lightning counted the unfinished batch, so the
    resumed run validated at steps 3 and 4, not 2 and 4 (the user's: 29, 40 for 15, 30, 40). Stopped
    after step 2's validation, the resumed run logged train/loss one step late to TensorBoard."""
    from casparks.errors import Terminated

    stopping_loss(monkeypatch, at_call, stop)
    name = f"inside-{stop.__name__}-{at_call}"
    with pytest.raises(Terminated if stop is _sigterm else KeyboardInterrupt):
        train(config(data, **{"run.run_name": name}))
    run_dir, kept = data / "runs" / name, at_call - 1
    assert list(list_checkpoints(run_dir))[-1] == kept
    saved = torch.load(run_dir / "checkpoints" / f"step_{kept:07d}.ckpt", weights_only=True)["state_dict"]
    assert {int(v) for k, v in saved.items() if k.endswith("num_batches_tracked")} == {kept}
    monkeypatch.undo()
    resumed = train(config(data, **{"run.run_name": name, "run.load_run_name": name}))
    straight = torch.load(full_run / "checkpoints" / "step_0000004.ckpt", weights_only=True)
    again = torch.load(resumed.checkpoint, weights_only=True)
    assert straight["state_dict"].keys() == again["state_dict"].keys()
    for key in straight["state_dict"]:  # every tensor: weights and buffers
        assert torch.equal(straight["state_dict"][key], again["state_dict"][key]), key
    assert rows(run_dir / "metrics.csv") == rows(full_run / "metrics.csv")  # validated at 2 and 4, the same scores
    # the step of train/loss in the loggers
    assert again["loops"]["fit_loop"]["epoch_loop.state_dict"] == straight["loops"]["fit_loop"]["epoch_loop.state_dict"]


def _ctrl_c_inside_adam(monkeypatch, at_step):
    """A real SIGINT halfway through Adam's update of step ``at_step``: half the parameters done."""
    import signal

    import torch.optim.adam as adam_module

    real, calls = adam_module.adam, []

    def half_then_ctrl_c(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *args, **kwargs):
        calls.append(1)
        lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
        half = len(params) // 2
        real(*(x[:half] for x in lists), *args, **kwargs)
        if len(calls) == at_step:
            os.kill(os.getpid(), signal.SIGINT)
        real(*(x[half:] for x in lists), *args, **kwargs)

    monkeypatch.setattr(adam_module, "adam", half_then_ctrl_c)


def _ctrl_c_after_adam(monkeypatch, at_step):
    """A real SIGINT just after Adam's update of step ``at_step``, before Lightning counts the step."""
    import signal

    from torch.optim.optimizer import register_optimizer_step_post_hook

    calls = []

    def ctrl_c(optimizer, args, kwargs):
        calls.append(1)
        if len(calls) == at_step:
            os.kill(os.getpid(), signal.SIGINT)

    return register_optimizer_step_post_hook(ctrl_c)  # the test removes it


@pytest.mark.parametrize("interrupt", [_ctrl_c_inside_adam, _ctrl_c_after_adam], ids=["inside_adam", "after_adam"])
def test_a_ctrl_c_during_the_update_stops_the_run_once_the_step_is_complete(data, full_run, monkeypatch, interrupt):
    """Ctrl-C landed in step 2's update (half of Adam's parameters done) or just after it (before
    Lightning counted the step): the checkpoint saved on the way out was labelled step 1 and held
    step 1's batch-norm statistics with (some of) step 2's weights, and the resumed run trained
    step 2 again on top. Now the Ctrl-C is held until the step is complete, and the run stops
    with step 2 saved, resuming to the uninterrupted run in every tensor."""
    import signal

    handle = interrupt(monkeypatch, 2)
    name = f"update-{interrupt.__name__}"
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config(data, **{"run.run_name": name}))
    finally:
        if handle is not None:
            handle.remove()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    run_dir = data / "runs" / name
    assert list(list_checkpoints(run_dir))[-1] == 2
    monkeypatch.undo()
    resumed = train(config(data, **{"run.run_name": name, "run.load_run_name": name}))
    straight = torch.load(full_run / "checkpoints" / "step_0000004.ckpt", weights_only=True)
    again = torch.load(resumed.checkpoint, weights_only=True)
    for key in straight["state_dict"]:  # every tensor: weights and buffers
        assert torch.equal(straight["state_dict"][key], again["state_dict"][key]), key
    for a, b in zip(straight["optimizer_states"][0]["state"].values(), again["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)  # Adam's moments
    assert rows(run_dir / "metrics.csv") == rows(full_run / "metrics.csv")


def test_a_checkpoint_of_a_batch_stopped_before_its_update_counts_it_as_not_started():
    """A checkpoint written before the fix (a user's step 14: ready 15, completed 14) resumes on
    the validation schedule; one saved at a step's end (completed one behind) is Lightning's."""
    from casparks.training import _drop_unfinished_batch

    def loop(ready, done):
        batch = {"ready": ready, "started": ready, "processed": done, "completed": done}
        step = {"ready": ready, "completed": done}
        return {"epoch_loop.batch_progress": {"total": dict(batch), "current": dict(batch), "is_last_batch": False},
                "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                    "step": {"total": dict(step), "current": dict(step)}}}}

    stopped = loop(15, 14)
    _drop_unfinished_batch(stopped)
    assert stopped == loop(14, 14)
    at_batch_end = loop(15, 14)
    at_batch_end["epoch_loop.batch_progress"]["total"]["processed"] = 15
    kept = copy.deepcopy(at_batch_end)
    _drop_unfinished_batch(at_batch_end)
    assert at_batch_end == kept


@pytest.mark.parametrize("saved, validation, expected", [
    ((3, 2), "done", 2),  # at step 3's end: the restart adds 1
    ((4, 3), "not done", 2),  # at step 4's end, before its validation: + 1, + 1 for the validation run again
    ((4, 4), "done", 3),  # between steps 4 and 5 (a Ctrl-C): + 1 for the iteration that skips step 4's validation
    ((4, 4), "cut", 3),  # in step 4's validation: + 1 for the validation run again
    ((3, 3), "done", 3),  # between steps 3 and 4: + 0
])
def test_the_loggers_step_after_a_restart_is_an_uninterrupted_runs(saved, validation, expected):
    """Lightning's restart adds the counts noted: then the step train/loss is logged at is the
    number of steps done, as in an uninterrupted run (test_every 2); it was one more after a
    step that validates."""
    from casparks.training import _set_loggers_step

    ready, done = saved
    val_done = {"ready": 1, "started": 1, "processed": 1, "completed": 1}
    val_cut = {"ready": 2, "started": 2, "processed": 1, "completed": 1}
    loop = {"epoch_loop.batch_progress": {"total": {"ready": ready, "started": ready, "processed": ready,
                                                    "completed": done}},
            "epoch_loop.val_loop.batch_progress": {"total": val_done if validation == "done" else val_cut},
            "epoch_loop.state_dict": {"_batches_that_stepped": -1}}
    _set_loggers_step(loop, 2)
    assert loop["epoch_loop.state_dict"]["_batches_that_stepped"] == expected


def test_a_run_is_resumed_only_with_the_settings_it_was_trained_with(data, full_run, capsys):
    """Resumed with another learning rate, normalisation and resampling, a user's run kept the
    restored optimiser, trained half its steps on other inputs and recorded settings it never
    used (detection then normalised as it never trained). Refused, naming every change; nothing
    is written. Where it runs, how long, what it saves and logs may change."""
    records = {f: (full_run / f).read_bytes() for f in ("config.yaml", "metrics.csv")}
    checkpoints = sorted((full_run / "checkpoints").iterdir())
    line = one_line_error(capsys, cli_args(data, **{
        "run.run_name": "full", "run.load_run_name": "full", "run.train_epochs": 6, "loss.lr_start": 0.01,
        "data.norm_video": "zscore", "data.resample_to": [0.4, 13.6], "data.batch_size": 1, "run.seed": 3}),
        "loss.lr_start 0.001 → 0.01", "data.norm_video movie → zscore", "data.resample_to null → [0.4, 13.6]",
        "data.batch_size 2 → 1", "run.seed 0 → 3", "run.load_mode finetune")
    assert "train_epochs" not in line
    # a finished run: said so, with nothing rewritten (its step-4 row was written twice)
    one_line_error(capsys, cli_args(data, **{"run.run_name": "full", "run.load_run_name": "full",
                                             "data.batch_size": 1}), "data.batch_size 2 → 1")
    one_line_error(capsys, cli_args(data, **{"run.run_name": "full", "run.load_run_name": "full"}),
                   "has finished", "step 4", "raise run.train_epochs")
    assert {f: (full_run / f).read_bytes() for f in records} == records
    assert sorted((full_run / "checkpoints").iterdir()) == checkpoints
    # harmless changes are taken
    train(config(data, **{"run.run_name": "harmless", "run.train_epochs": 2}))
    more = train(config(data, **{"run.run_name": "harmless", "run.load_run_name": "harmless", "run.train_epochs": 3,
                                 "run.max_minutes": 60, "run.save_every": 3, "run.test_every": 3,
                                 "run.print_every": 1, "run.tensorboard": False, "data.num_workers": 0,
                                 "run.memory_format": "contiguous"}))
    assert more.step == 3 and [r["step"] for r in rows(more.run_dir / "metrics.csv")] == ["2", "3"]


def test_the_printed_resume_command_resumes_a_fine_tuning(data, full_run, monkeypatch, capsys):
    """The Ctrl-C message said "--set run.load_run_name=NAME (run.load_mode resume)": followed as
    printed with a config that fine-tunes (run.load_mode finetune), the run was refused as a
    fine-tuning into its own folder. The printed options now resume it as they stand."""
    import shlex

    import casparks.training as engine

    original = engine._Draws.__getitem__

    def interrupted(self, key):
        if key[0] >= 6:  # after the step-2 checkpoint
            raise KeyboardInterrupt
        return original(self, key)

    args = cli_args(data, **{"run.run_name": "ft-stopped", "run.load_run_name": "full", "run.load_mode": "finetune"})
    monkeypatch.setattr(engine._Draws, "__getitem__", interrupted)
    assert main(args) == 130
    err = capsys.readouterr().err
    printed = err.split("resume it with the same command and ", 1)[1].splitlines()[0]
    assert printed == "--set run.load_run_name=ft-stopped --set run.load_mode=resume"
    monkeypatch.setattr(engine._Draws, "__getitem__", original)
    assert main(args + shlex.split(printed)) == 0, capsys.readouterr().err
    assert list(list_checkpoints(data / "runs" / "ft-stopped")) == [2, 4]


def test_the_log_says_why_a_run_ended(data, full_run, monkeypatch):
    assert "training finished at step 4" in (full_run / "logs" / "train.log").read_text()
    timed = train(config(data, **{"run.run_name": "timed-log", "run.train_epochs": 1000, "run.max_minutes": 1e-4}))
    text = (timed.run_dir / "logs" / "train.log").read_text()
    assert f"stopped by run.max_minutes (0.0001 min) at step {timed.step} of 1000" in text
    # a warning, on the terminal too, with how to go on (it read as a finished run: exit 0, no word)
    assert "WARNING" in text.split("stopped by run.max_minutes")[0].splitlines()[-1]
    assert "resume it with the same command and --set run.load_run_name=timed-log --set run.load_mode=resume" in text
    import casparks.training as engine

    def failing(self, key):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(engine._Draws, "__getitem__", failing)
    with pytest.raises(RuntimeError):
        train(config(data, **{"run.run_name": "crash-log"}))
    text = (data / "runs" / "crash-log" / "logs" / "train.log").read_text()
    assert "training stopped at step 0 of 4, by an error: RuntimeError: simulated crash" in text
    assert "no checkpoint was saved" in text


def test_resume_a_given_step(data, full_run):
    other = train(config(data, **{"run.run_name": "from2", "run.load_run_name": str(full_run),
                                  "run.load_epoch": 2, "run.train_epochs": 3}))
    assert other.step == 3
    assert list(list_checkpoints(other.run_dir)) == [3]


def flaky_loss(monkeypatch, bad_calls):
    """Make the training loss NaN on the training calls numbered in ``bad_calls`` (1-based; a
    callable: every call for which it is true)."""

    def change(n, value):
        bad = bad_calls(n) if callable(bad_calls) else n in bad_calls
        return value * float("nan") if bad else value

    return patch_training_loss(monkeypatch, change)


def test_a_non_finite_loss_skips_its_batch(data, monkeypatch, caplog):
    calls = flaky_loss(monkeypatch, {3})
    with caplog.at_level("WARNING", logger="casparks"):
        result = train(config(data, **{"run.run_name": "flaky"}))
    assert result.step == 4 and calls["n"] == 4  # step 3 counts (as Lightning counts it) but makes no update
    assert any("step 3: the loss is nan; no update" in r.message for r in caplog.records)
    meta = torch.load(result.checkpoint, weights_only=False)["casparks"]
    assert meta["skipped"] == 1 and meta["draws"] == 4 * config(data).data.batch_size
    for name, value in load_checkpoint(result.checkpoint).network.state_dict().items():
        assert torch.isfinite(value.float()).all(), name


def test_a_skipped_step_changes_no_weight_and_no_statistic(data, monkeypatch):
    """The batch of a skipped step leaves no trace: steps 1-2, a NaN step 3, then nothing."""
    flaky_loss(monkeypatch, {3})
    two = train(config(data, **{"run.run_name": "two", "run.train_epochs": 2, "network.dropout": 0.0}))
    three = train(config(data, **{"run.run_name": "three", "run.train_epochs": 3, "network.dropout": 0.0,
                                  "run.load_run_name": "two"}))
    before, after = weights(two.checkpoint), weights(three.checkpoint)
    for key in before:  # weights and batch-norm running statistics
        assert torch.equal(before[key], after[key]), key


def test_a_finite_loss_with_a_nan_gradient_makes_no_update(data, monkeypatch, caplog):
    """Adam turns one NaN gradient into NaN weights and moments for good; the loss check did not
    see it (the loss was finite). Step 3's loss is finite and its gradient NaN (0 · ∞ in the
    backward pass of √0): steps 1-2, then nothing, as for a NaN loss."""
    def nan_gradient(n, value):
        return value + 0.0 * torch.sqrt(value - value.detach()) if n == 3 else value

    patch_training_loss(monkeypatch, nan_gradient)
    two = train(config(data, **{"run.run_name": "grad-two", "run.train_epochs": 2, "network.dropout": 0.0}))
    with caplog.at_level("WARNING", logger="casparks"):
        three = train(config(data, **{"run.run_name": "grad-three", "run.train_epochs": 3, "network.dropout": 0.0,
                                      "run.load_run_name": "grad-two"}))
    assert any("step 3: a gradient is not finite; no update" in r.message for r in caplog.records)
    before, after = weights(two.checkpoint), weights(three.checkpoint)
    for key in before:  # weights and batch-norm running statistics
        assert torch.equal(before[key], after[key]), key
    meta = torch.load(three.checkpoint, weights_only=False)["casparks"]
    assert meta["skipped"] == 1


def test_a_diverging_run_stops_with_a_one_line_error(data, monkeypatch, capsys):
    flaky_loss(monkeypatch, lambda n: n > 1)
    line = one_line_error(capsys, cli_args(data, **{"run.run_name": "diverged", "run.train_epochs": 40}),
                          "diverged", "lr_start")
    assert "not finite in steps 2-21" in line


def test_finetune_loads_weights_only(data, full_run):
    source = weights(full_run / "checkpoints" / "step_0000004.ckpt")
    result = train(config(data, **{"run.run_name": "ft", "run.load_run_name": "full", "run.load_mode": "finetune",
                                   "run.train_epochs": 1, "loss.lr_start": 1e-12}))
    assert result.step == 1  # a new optimisation: the step counter starts again
    tuned = load_checkpoint(result.checkpoint).network
    for name, parameter in tuned.named_parameters():
        assert torch.allclose(parameter, source[name], atol=1e-6), name


def test_a_run_is_not_fine_tuned_into_its_own_folder(data, full_run, capsys):
    """It restarted at step 0 beside the old checkpoints (step_0000003-v1.ckpt, last-v1.ckpt)."""
    one_line_error(capsys, cli_args(data, **{"run.run_name": "full", "run.load_run_name": "full",
                                             "run.load_mode": "finetune"}), "into its own folder", "load_mode resume")


def test_a_resumed_run_replaces_last_ckpt(data):
    """Stopped at step 2 and resumed to 4: last.ckpt is step 4 (it stayed at 2, beside last-v1.ckpt)."""
    train(config(data, **{"run.run_name": "again", "run.train_epochs": 2}))
    resumed = train(config(data, **{"run.run_name": "again", "run.load_run_name": "again"}))
    folder = resumed.run_dir / "checkpoints"
    assert resumed.step == 4 and not list(folder.glob("*-v1.ckpt"))
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4


def test_finetune_config_of_the_bundled_model(tmp_path):
    bundled = load_checkpoint(resolve_model("sim-v1").checkpoint)
    tuned = finetune_config("sim-v1")
    assert tuned.network == bundled.config.network  # the model's own network, so its weights load
    assert tuned.data.norm_video == bundled.config.data.norm_video
    assert (tuned.run.load_run_name, tuned.run.load_mode, tuned.run.load_epoch) == ("sim-v1", "finetune", None)
    assert tuned.run.run_name == "sim-v1-finetune" and tuned.run.max_minutes is None
    assert tuned.data.data_dir == () and tuned.data.val_dir == () and tuned.data.test_dir == ()
    assert tuned.loss.lr_start <= 1e-4
    assert tuned.data.resample_to == (0.2, 6.8)  # the card's native sampling
    # not the trained run's precision (sim-v3: bf16-mixed, refused where bfloat16 is emulated: AVX2 CPUs)
    assert tuned.run.precision == "auto"
    path = tmp_path / "ft.yaml"
    assert main(["models", "sim-v1", "--config", str(path)]) == 0
    assert path.read_text().startswith("# Fine-tune sim-v1")
    assert load_config(path) == tuned
    assert main(["models", "sim-v1", "--config", str(path)]) == 2  # exists: not replaced without --overwrite
    assert main(["models", "sim-v1", "--config", str(path), "--overwrite"]) == 0


def test_finetune_the_bundled_model_on_new_movies(data, tmp_path):
    """What a user does with a few annotated movies: the bundled weights are the start."""
    path = tmp_path / "ft.yaml"
    assert main(["models", "sim-v1", "--config", str(path)]) == 0
    small = {"data.data_dir": [str(data / "sim")], "data.val_ids": ["03"], "run.output_dir": str(tmp_path / "runs"),
             "run.train_epochs": 1, "data.batch_size": 1, "data.data_duration": 32, "data.num_workers": 0,
             "loss.lr_start": 1e-12}
    result = train(load_config(path, small))  # run.precision auto: float32 on an AVX2 CPU
    assert result.step == 1 and result.run_dir == tmp_path / "runs" / "sim-v1-finetune"
    start = load_checkpoint(resolve_model("sim-v1").checkpoint).network
    tuned = load_checkpoint(result.checkpoint).network
    for (name, before), (_, after) in zip(start.named_parameters(), tuned.named_parameters()):
        difference = (before - after).abs()
        assert torch.allclose(before, after, atol=1e-6), (
            f"{name}: {int((difference > 1e-6).sum())} of {difference.numel()} moved, at most "
            f"{float(difference.max()):.3g}; {int(torch.isnan(after).sum())} NaN")
    # it detects as sim-v1 did (window, overlap, calibrated post-processing), not with Otsu's defaults
    from casparks.detection import load_detector

    base, run_card = resolve_model("sim-v1").card, resolve_model(result.run_dir).card
    assert (result.run_dir / "card.yaml").is_file() and "fine-tuned from sim-v1" in run_card["description"]
    assert run_card["postprocess"] == base["postprocess"] and run_card["window_frames"] == base["window_frames"]
    assert "accuracy" not in run_card and resolve_model(result.checkpoint).card == run_card
    assert resolve_model(result.run_dir).name == "sim-v1-finetune-step_0000001"  # not 'step_0000001' alone
    detector = load_detector(result.run_dir, device="cpu")
    assert detector.window_frames == base["window_frames"]
    # and its validation scores the events detection would report: the same post-processing
    from casparks.training import _scoring_postprocess

    assert _scoring_postprocess(result.run_dir) == detector.postprocess
    assert _scoring_postprocess(tmp_path).event_threshold == "otsu"  # a run without a card: the defaults
    assert detector.postprocess.event_threshold == base["postprocess"]["event_threshold"]
    assert result.metrics is not None and np.isfinite(result.metrics["loss"])



def test_a_fine_tuned_run_detects_at_its_own_sampling_and_its_checkpoints_carry_its_card(data, tmp_path, caplog):
    """A run fine-tuned at another sampling than its model's (data.resample_to) kept the model's
    native sampling in its card, and detection resampled movies to it (a user's spark F1 0.92 in
    validation, 0.25 with casparks detect); a checkpoint copied out of its run lost the run's card
    (Otsu's threshold, another window, no puff filters); detection outside the run's own movies'
    sampling gave no warning."""
    import json

    from casparks.detection import check_sampling
    from casparks.io import Movie

    path = tmp_path / "ft.yaml"
    assert main(["models", "sim-v1", "--config", str(path)]) == 0
    small = {"data.data_dir": [str(data / "sim")], "data.val_ids": ["03"], "run.output_dir": str(tmp_path / "runs"),
             "run.train_epochs": 1, "data.batch_size": 1, "data.data_duration": 32, "data.num_workers": 0,
             "data.resample_to": [0.25, 8.5]}
    result = train(load_config(path, small))
    card = resolve_model(result.run_dir).card
    assert (card["native_pixel_size_um"], card["native_frame_interval_ms"]) == (0.25, 8.5)
    assert resolve_model(result.run_dir).native_sampling == (0.25, 8.5)
    # the samplings of the movies it was fine-tuned on (the simulator's 0.2 µm, 6.8 ms), not sim-v1's range
    assert card["trained_sampling"] == {"pixel_size_um": [0.2, 0.2], "frame_interval_ms": [6.8, 6.8]}
    caplog.clear()
    check_sampling(Movie(np.zeros((10, 10, 10), np.float32), 0.1, 6.8, name="fine"), resolve_model(result.run_dir))
    assert "pixel size of 0.1 µm lies outside the 0.2 µm" in caplog.text
    # a checkpoint copied out of the run detects as it does in the run
    copied = tmp_path / "shared" / "lab_model.ckpt"
    copied.parent.mkdir()
    shutil.copy(result.checkpoint, copied)
    assert resolve_model(copied).card == card and resolve_model(copied).name == "lab_model"
    # a card written before the fix (the source model's native sampling): the training's sampling wins, named
    stale = {**card, "native_pixel_size_um": 0.2, "native_frame_interval_ms": 6.8}
    (result.run_dir / "card.yaml").write_text(json.dumps(stale))
    caplog.clear()
    assert resolve_model(result.run_dir).native_sampling == (0.25, 8.5)
    assert "says a native sampling of 0.2 µm, 6.8 ms, but it was trained at 0.25 µm, 8.5 ms" in caplog.text
    # a fine-tuned checkpoint without any card (saved before checkpoints carried one) is named
    bare = torch.load(copied, weights_only=True)
    del bare["casparks"]["card"]
    torch.save(bare, copied)
    caplog.clear()
    assert resolve_model(copied).card == {"native_pixel_size_um": 0.25, "native_frame_interval_ms": 8.5}
    assert "lab_model: no model card" in caplog.text and "default settings" in caplog.text
    bare["casparks"]["card"] = {}  # saved since checkpoints carry cards, by a run without one: nothing to say
    torch.save(bare, copied)
    caplog.clear()
    resolve_model(copied)
    assert "no model card" not in caplog.text
    # an older card of a run trained on its movies as they are (resample_to null) kept its source's
    # native sampling, and detection resampled to it: dropped, named
    bare["casparks"]["card"] = stale
    bare["casparks"]["config"]["data"]["resample_to"] = None
    torch.save(bare, copied)
    caplog.clear()
    assert resolve_model(copied).native_sampling is None
    assert "trained on its movies as they are (data.resample_to null): movies are not resampled" in caplog.text
    # --model RUN/checkpoints is the run; a movie given as the model is named as one
    assert resolve_model(result.run_dir / "checkpoints").checkpoint == resolve_model(result.run_dir).checkpoint
    movie = tmp_path / "movie.tif"
    shutil.copy(next((data / "sim").glob("*_video.tif")), movie)
    with pytest.raises(casparks.CasparksError, match="it is a TIFF image: a movie"):
        resolve_model(movie)

def test_a_model_file_is_fine_tuned_not_resumed(data, full_run, capsys, tmp_path):
    ckpt = str(full_run / "checkpoints" / "step_0000004.ckpt")
    # a run's own checkpoint is not "a model file (weights only)": the run is resumed by its name and step
    one_line_error(capsys, cli_args(data, **{"run.run_name": "r", "run.load_run_name": ckpt}),
                   "is a checkpoint of run full", "load it with --set run.load_run_name=full --set run.load_epoch=4")
    copied = tmp_path / "model.ckpt"
    shutil.copy(ckpt, copied)
    one_line_error(capsys, cli_args(data, **{"run.run_name": "r", "run.load_run_name": str(copied)}),
                   "model file", "not resumed", "load_mode: finetune")
    one_line_error(capsys, cli_args(data, **{"run.run_name": "r", "run.load_run_name": ckpt, "run.load_mode": "finetune",
                                             "run.load_epoch": 2}), "is a checkpoint of run full")
    line = one_line_error(capsys, cli_args(data, **{"run.run_name": "r", "run.load_run_name": "sim-v1",
                                                    "run.load_mode": "finetune"}), "model sim-v1", "layer")
    assert "casparks models sim-v1 --config" in line
    tuned = train(config(data, **{"run.run_name": "from_file", "run.load_run_name": ckpt, "run.load_mode": "finetune",
                                  "run.train_epochs": 1, "loss.lr_start": 1e-12}))
    source = weights(Path(ckpt))
    for name, parameter in load_checkpoint(tuned.checkpoint).network.named_parameters():
        assert torch.allclose(parameter, source[name], atol=1e-6), name


def test_training_false_evaluates_a_run_and_testing_writes_scores(data, full_run):
    result = train(config(data, **{"run.run_name": "eval", "run.load_run_name": "full", "run.training": False,
                                   "run.testing": True, "data.test_dir": [str(data / "sim_test")]}))
    assert result.step == 4
    assert result.metrics is not None and "loss" in result.metrics
    assert (result.run_dir / "test_metrics.json").is_file()
    assert result.test_metrics["settings"]["n_movies"] == 1
    assert not (result.run_dir / "checkpoints").exists()


def test_the_terminal_shows_the_test_scores(monkeypatch, tmp_path, capsys):
    """test_metrics.json was written and the scores said only in train.log."""
    import casparks.config
    import casparks.training
    from casparks.cli import main
    from casparks.training import TrainResult

    scores = {"settings": {"n_movies": 2}, "classes": {"spark": {"one_to_one": {"f1": 0.8123}},
                                                       "wave": {"one_to_one": {"f1": None}},
                                                       "puff": {"one_to_one": {"f1": 0.5}}}}
    monkeypatch.setattr(casparks.config, "load_config", lambda path, overrides: None)
    monkeypatch.setattr(casparks.training, "train", lambda cfg: TrainResult(tmp_path, None, 4, None, scores))
    assert main(["train", "c.yaml"]) == 0
    assert "test (2 movie(s), one-to-one F1): spark 0.812, wave –, puff 0.500" in capsys.readouterr().out


@pytest.mark.parametrize("scheduler", ["step", "cosine", "plateau"])
def test_schedulers_run(data, scheduler):
    result = train(config(data, **{"run.run_name": f"sched_{scheduler}", "run.train_epochs": 2,
                                   "loss.scheduler": scheduler, "loss.scheduler_step": 1}))
    assert result.step == 2
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["lr_schedulers"], scheduler


# ----------------------------------------------------------------------------------------------
# checkpoints describe themselves


def test_checkpoint_loads_without_the_run_folder(full_run, tmp_path):
    copy = tmp_path / "model.ckpt"
    shutil.copy(full_run / "checkpoints" / "step_0000004.ckpt", copy)
    loaded = load_checkpoint(copy)
    assert isinstance(loaded, LoadedModel)
    assert not loaded.network.training
    assert loaded.step == 4
    assert loaded.config.network.unet_steps == 2 and loaded.config.network.first_layer_channels == 4
    assert loaded.preprocessing.norm_video == "movie"
    meta = loaded.metadata
    assert meta["casparks_version"] == casparks.__version__
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert meta["classes"]["names"][1] == "spark" and meta["classes"]["names"][2] == "wave"
    with torch.inference_mode():
        out = loaded.network(torch.zeros(1, 1, 16, 16, 64))
    assert out.shape == (1, 4, 16, 16, 64)
    raw = torch.load(copy, weights_only=True)  # no pickled code: safe to load
    assert raw["casparks"]["config"]["network"]["unet_steps"] == 2


def test_checkpoint_path_picks_the_latest_or_a_given_step(full_run):
    assert checkpoint_path(full_run).name == "step_0000004.ckpt"
    assert checkpoint_path(full_run, 2).name == "step_0000002.ckpt"
    with pytest.raises(casparks.CasparksError, match="no checkpoint of step 3"):
        checkpoint_path(full_run, 3)


# ----------------------------------------------------------------------------------------------
# bad input: one line, exit 2


def one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("casparks train: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_and_empty_data_folders(data, tmp_path, capsys):
    one_line_error(capsys, cli_args(data, **{"data.data_dir": str(tmp_path / "nowhere"), "run.run_name": "x"}),
                   "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, cli_args(data, **{"data.data_dir": str(tmp_path / "empty"), "run.run_name": "x"}),
                   "empty", "no movies")


def test_label_shape_mismatch(data, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(data / "sim", bad)
    classes = np.asarray(read_stack(bad / "01_class_label.tif"))
    write_class_label(bad / "01_class_label.tif", classes[:-1], 0.2, 6.8, overwrite=True)
    one_line_error(capsys, cli_args(data, **{"data.data_dir": str(bad), "run.run_name": "bad",
                                             "run.output_dir": str(tmp_path / "runs")}),
                   "01_class_label.tif", "shape")


def test_config_typo(data, capsys):
    one_line_error(capsys, ["train", str(TINY), "--set", "data.batchsize=2"], "batchsize", "batch_size")


def test_resuming_a_run_that_does_not_exist(data, capsys):
    one_line_error(capsys, cli_args(data, **{"run.run_name": "new", "run.load_run_name": "ghost"}), "ghost", "not found")


def test_resuming_with_an_incompatible_network(data, full_run, capsys):
    line = one_line_error(capsys, cli_args(data, **{"run.run_name": "full", "run.load_run_name": "full",
                                                    "network.first_layer_channels": 8}),
                          "run full", "layer", "shape")
    assert "network." not in line.split("layer")[0]


def test_existing_run_without_load_run_name(data, full_run, capsys):
    one_line_error(capsys, cli_args(data, **{"run.run_name": "full"}), "already has checkpoints", "load_run_name")


def test_training_false_without_a_run(data, capsys):
    one_line_error(capsys, cli_args(data, **{"run.run_name": "x", "run.training": False}), "load_run_name")


def test_load_epoch_without_a_run_and_testing_without_test_data(data, capsys):
    one_line_error(capsys, cli_args(data, **{"run.run_name": "x", "run.load_epoch": 2}), "load_run_name")
    one_line_error(capsys, cli_args(data, **{"run.run_name": "x", "run.testing": True}), "test_dir")
    assert not (data / "runs" / "x").exists()  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(data, capsys):
    one_line_error(capsys, cli_args(data, **{"run.run_name": "x", "run.device": "cuda"}), "cuda")


def test_half_precision_on_the_cpu(data, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(capsys, cli_args(data, **{"run.run_name": "x", "run.device": "cpu", "run.precision": "16-mixed"}),
                   "16-mixed", "GPU")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_only_where_the_cpu_has_it(native, monkeypatch):
    """auto picks bf16 mixed precision on a CPU with native bfloat16 and float32 elsewhere."""
    from casparks import training
    from casparks.config import RunConfig, TrainConfig

    monkeypatch.setattr(training, "native_bf16", lambda device_type: native)
    config = TrainConfig(run=RunConfig(device="cpu", precision="auto"))
    assert training._accelerator(config) == ("cpu", "bf16-mixed" if native else "32")
    explicit = TrainConfig(run=RunConfig(device="cpu", precision="bf16-mixed"))
    if native:
        assert training._accelerator(explicit) == ("cpu", "bf16-mixed")
    else:  # emulated bfloat16 is ~200x slower: refused, not run for hours
        with pytest.raises(casparks.CasparksError, match="emulated.*auto"):
            training._accelerator(explicit)


def test_emulated_bf16_is_a_one_line_error(data, capsys, monkeypatch):
    from casparks import training

    monkeypatch.setattr(training, "native_bf16", lambda device_type: False)
    one_line_error(capsys, cli_args(data, **{"run.run_name": "x", "run.device": "cpu", "run.precision": "bf16-mixed"}),
                   "bf16-mixed", "emulated", "run.precision")
    assert not (data / "runs" / "x").exists()  # nothing written


def test_wandb_without_wandb(data, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    one_line_error(capsys, cli_args(data, **{"run.run_name": "wb", "run.wandb_enable": True}),
                   "wandb", "pip install casparks[wandb]")


# ----------------------------------------------------------------------------------------------
# data-parallel training


@pytest.mark.slow
def test_two_process_ddp_on_the_cpu(data):
    run_dir = data / "runs" / "ddp"
    args = cli_args(data, **{"run.run_name": "ddp", "run.devices": 2})
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "casparks", *args], capture_output=True, text=True,
                          cwd=data, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    log_text = (run_dir / "logs" / "train.log").read_text()
    assert "rank 0 of 2" in log_text and "rank 1 of 2" in log_text
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]
    assert [r["step"] for r in rows(run_dir / "metrics.csv")] == ["2", "4"]  # one row per validation
    assert load_checkpoint(run_dir / "checkpoints" / "step_0000004.ckpt").step == 4


# ----------------------------------------------------------------------------------------------
# example configs


def test_reference_config_builds_the_reference_network():
    from casparks.nn import build_network, count_parameters

    reference = load_config(REPO / "configs" / "reference.yaml")
    assert reference.network.unet_steps == 6 and reference.network.first_layer_channels == 8
    assert reference.loss.criterion == "lovasz_softmax"
    assert count_parameters(build_network(reference.network)) == 22_631_764


def test_default_config_loads_and_builds():
    from casparks.nn import build_network

    default = load_config(REPO / "configs" / "default.yaml")
    network = build_network(default.network)
    assert sum(p.numel() for p in network.parameters()) > 0


@pytest.mark.parametrize("recipe", sorted((REPO / "models").glob("*/train.yaml")), ids=lambda p: p.parent.name)
def test_model_recipes_load_and_fit_the_weights_they_start_from(recipe):
    """A bundled model's recipe is checked here, not first on a GPU session's clock."""
    from casparks.nn import build_network
    from casparks.training import find_source

    recipe_config = load_config(recipe)
    network = build_network(recipe_config.network)
    if recipe_config.run.load_run_name is not None:
        assert recipe_config.run.load_mode == "finetune"
        _, start = find_source(recipe_config.run)
        network.load_state_dict(load_checkpoint(start).network.state_dict())  # strict: same layers and shapes


def test_a_cosine_run_is_not_resumed_to_another_length(data, capsys):
    """The restored cosine scheduler keeps its planned length: resumed to more steps, the learning
    rate climbed back to its start (1e-3 at step 4 of a run planned for 2). Refused, with the fix."""
    cosine = {"loss.scheduler": "cosine", "run.run_name": "cos"}
    first = train(config(data, **cosine, **{"run.train_epochs": 2}))
    assert first.step == 2
    with pytest.raises(casparks.CasparksError, match="planned over 2 steps, not 4") as info:
        train(config(data, **cosine, **{"run.train_epochs": 4, "run.load_run_name": "cos"}))
    assert "run.load_mode finetune" in str(info.value)
    again = train(config(data, **{**cosine, "run.train_epochs": 4, "run.load_run_name": "cos",
                                  "run.load_mode": "finetune", "run.run_name": "cos-more"}))
    assert again.step == 4


def test_validation_predicts_movies_as_detection_does_with_edge_frames(data, monkeypatch):
    """Without the mirrored edge frames the network paints a movie's first and last frames
    (which it never learnt: ignore_frames_loss): validation F1 of sim-v3 fell 0.75 -> 0.29."""
    import casparks.inference as inference

    seen = []
    real = inference.predict_movie

    def recording(*args, **kwargs):
        seen.append(kwargs.get("edge_frames", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "predict_movie", recording)
    result = train(config(data, **{"run.run_name": "edges", "run.train_epochs": 1}))
    assert result.step == 1 and seen and set(seen) == {config(data).data.ignore_frames_loss} and seen[0] > 0


def test_an_input_error_leaves_no_half_made_run_folder(data, tmp_path, capsys):
    """Movies are checked after the run folder is made (their label cache lives in it): a run
    that fails before its first step removes the folder it made, never one that was there."""
    bad = tmp_path / "bad"
    shutil.copytree(data / "sim", bad)
    classes = np.asarray(read_stack(bad / "01_class_label.tif"))
    write_class_label(bad / "01_class_label.tif", classes[:-1], 0.2, 6.8, overwrite=True)
    runs = tmp_path / "runs"
    args = cli_args(data, **{"data.data_dir": str(bad), "run.run_name": "bad", "run.output_dir": str(runs)})
    one_line_error(capsys, args, "01_class_label.tif", "shape")
    assert not (runs / "bad").exists()
    (runs / "bad").mkdir(parents=True)  # a folder of the user's: kept, with what it held
    (runs / "bad" / "notes.txt").write_text("mine")
    one_line_error(capsys, args, "01_class_label.tif", "shape")
    assert (runs / "bad" / "notes.txt").read_text() == "mine"


def test_a_second_run_of_the_same_name_is_refused_while_the_first_writes_its_folder(data, tmp_path, monkeypatch):
    """Two runs of one run.run_name at once wrote one folder, and an input error in the run that
    made it removed the folder while the other was writing into it (its config.yaml and train.log
    gone, its checkpoints left without them). The second run now waits its turn."""
    import casparks.data as data_module

    bad = tmp_path / "bad"
    shutil.copytree(data / "sim", bad)
    classes = np.asarray(read_stack(bad / "01_class_label.tif"))
    write_class_label(bad / "01_class_label.tif", classes[:-1], 0.2, 6.8, overwrite=True)
    runs = tmp_path / "runs"
    same = {"run.run_name": "same", "run.output_dir": str(runs), "run.train_epochs": 1}
    original, second = data_module.load_movies, {}

    def reading(*args, **kwargs):  # the first run, in its folder, reads its movies: a second one starts
        if not second:
            second["started"] = True
            try:
                second["result"] = train(config(data, **same))
            except casparks.CasparksError as exc:
                second["error"] = str(exc)
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module, "load_movies", reading)
    with pytest.raises(casparks.CasparksError, match="shape"):
        train(config(data, **same, **{"data.data_dir": str(bad)}))
    assert "result" not in second, "the second run trained in the first one's folder"
    assert second["error"] == (f"{runs / 'same'}: run 'same' is being written by another casparks train now; "
                               "choose another run.run_name, or wait until that run has ended")
    assert not (runs / "same").exists()  # the first run made it and was alone in it
    monkeypatch.setattr(data_module, "load_movies", original)
    assert train(config(data, **same)).step == 1  # the name is free again


def test_a_termination_crosses_processes():
    """errors.Terminated could not be unpickled (its message was taken for the signal number)."""
    import pickle

    from casparks.errors import Terminated, interrupted_exit_code

    back = pickle.loads(pickle.dumps(Terminated(15)))
    assert back.signum == 15 and interrupted_exit_code(back) == 143 and str(back) == "terminated by signal 15"


def test_a_run_is_not_resumed_on_other_movies_than_it_trained_on(data, tmp_path):
    """Movies added to (or removed from) a run's data folder: resumed, it went on training on 3
    movies where it had 2, without a word."""
    import shutil

    folder = tmp_path / "sim"
    shutil.copytree(data / "sim", folder)
    first = train(config(data, **{"run.run_name": "grows", "run.train_epochs": 1, "data.data_dir": str(folder)}))
    assert first.step == 1
    for kind in ("video", "class_label", "event_label"):
        shutil.copy(folder / f"01_{kind}.tif", folder / f"04_{kind}.tif")
    with pytest.raises(casparks.CasparksError, match=r"cannot be resumed: its data folders hold other movies than it was "
                                            r"trained on: training movies \+ 04"):
        train(config(data, **{"run.run_name": "grows", "run.load_run_name": "grows", "run.load_mode": "resume",
                              "run.train_epochs": 2, "data.data_dir": str(folder)}))
    for kind in ("video", "class_label", "event_label"):
        (folder / f"04_{kind}.tif").unlink()
    resumed = train(config(data, **{"run.run_name": "grows", "run.load_run_name": "grows", "run.load_mode": "resume",
                                    "run.train_epochs": 2, "data.data_dir": str(folder)}))
    assert resumed.step == 2


def test_a_run_resumed_on_edited_annotations_says_so(data, tmp_path, caplog):
    """An annotation edited between a run's checkpoint and its resume: it went on, on the new
    labels, without a word (only added or removed movies were refused)."""
    import shutil

    import tifffile

    folder = tmp_path / "sim"
    shutil.copytree(data / "sim", folder)
    train(config(data, **{"run.run_name": "edited", "run.train_epochs": 1, "data.data_dir": str(folder)}))
    resume = {"run.run_name": "edited", "run.load_run_name": "edited", "run.load_mode": "resume",
              "data.data_dir": str(folder)}
    classes = tifffile.imread(folder / "01_class_label.tif")
    classes[:, :4] = 4  # a band marked ignore: a valid annotation, another one
    tifffile.imwrite(folder / "01_class_label.tif", classes)
    with caplog.at_level("WARNING", logger="casparks"):
        assert train(config(data, **resume, **{"run.train_epochs": 2})).step == 2
    told = [r.getMessage() for r in caplog.records if "resumes on annotations changed" in r.getMessage()]
    assert len(told) == 1 and "label files of training movie(s) 01)" in told[0], told
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):  # unchanged since the last checkpoint: nothing to say
        assert train(config(data, **resume, **{"run.train_epochs": 3})).step == 3
    assert "resumes on annotations changed" not in caplog.text


def test_a_checkpoint_that_is_no_casparks_model_is_named_as_such(tmp_path):
    """run.load_run_name naming an existing .ckpt that casparks did not write said "run or model
    ... not found (looked for ...)", as if the file were not there; detect says what is wrong."""
    from types import SimpleNamespace

    from casparks.training import find_source

    raw = tmp_path / "raw_state.ckpt"
    torch.save({"state_dict": {}}, raw)
    run = SimpleNamespace(load_run_name=str(raw), output_dir=str(tmp_path), load_epoch=None, training=True,
                          load_mode="finetune")
    with pytest.raises(casparks.CasparksError, match="raw_state.ckpt: is not a casparks checkpoint"):
        find_source(run)
    with pytest.raises(casparks.CasparksError, match="not found"):
        find_source(SimpleNamespace(**{**vars(run), "load_run_name": str(tmp_path / "missing.ckpt")}))


def test_a_validation_id_written_another_way_is_the_same_setting_on_resume():
    """A resume with val_ids [3] of a run validated on ["03"] was refused ("['03'] → ['3']")."""
    from casparks.config import TrainConfig, apply_overrides
    from casparks.training import _resume_changes

    saved = apply_overrides(TrainConfig(), {"data.val_ids": '["03"]'})
    assert _resume_changes(saved, apply_overrides(TrainConfig(), {"data.val_ids": "[3]"})) == []
    assert _resume_changes(saved, apply_overrides(TrainConfig(), {"data.val_ids": "[04]"})) == [
        "data.val_ids ['03'] → ['04']"]


def test_val_ids_with_a_leading_zero_name_the_movie_typed(data, tmp_path):
    """--set data.val_ids=[010] validated on movie 008 (YAML's octal 8) without a word."""
    from casparks.data import split_samples

    folder = tmp_path / "ids"
    folder.mkdir()
    for old, new in (("01", "008"), ("02", "010"), ("03", "011")):
        for kind in ("video", "class_label", "event_label"):
            shutil.copy(data / "sim" / f"{old}_{kind}.tif", folder / f"{new}_{kind}.tif")
    chosen = config(data, **{"data.data_dir": str(folder), "data.val_ids": "[010]"})
    assert chosen.data.val_ids == ("010",)
    assert [s.id for s in split_samples(chosen.data)[1]] == ["010"]


def test_resuming_an_earlier_step_moves_the_later_checkpoints_aside(data, full_run, caplog):
    """Resumed from step 2 and stopped, a run kept its step-4 checkpoint: the printed resume
    command (the latest step) then took the abandoned branch, and metrics.csv lost rows."""
    run_dir = data / "runs" / "branch"
    shutil.copytree(full_run, run_dir)
    result = train(config(data, **{"run.run_name": "branch", "run.load_run_name": "branch", "run.load_epoch": 2,
                                   "run.train_epochs": 3}))
    assert list(list_checkpoints(run_dir)) == [2, 3]
    assert checkpoint_path(run_dir) == result.checkpoint == run_dir / "checkpoints" / "step_0000003.ckpt"
    aside = run_dir / "checkpoints" / "abandoned-2"
    assert sorted(p.name for p in aside.iterdir()) == ["last.ckpt", "metrics.csv", "step_0000004.ckpt"]
    assert [r["step"] for r in rows(aside / "metrics.csv")] == ["2", "4"]
    assert [r["step"] for r in rows(run_dir / "metrics.csv")] == ["2", "3"]
    assert "step_0000004.ckpt" in caplog.text and "abandoned-2" in caplog.text


def test_a_run_resumed_under_a_new_name_keeps_its_card(data, full_run):
    """A fine-tuned run (its card's post-processing inherited from sim-v3) resumed under a new
    run.run_name got a default card: detection and validation lost the model's settings."""
    import json

    source = data / "runs" / "carded"
    shutil.copytree(full_run, source)
    card = {**json.loads((source / "card.yaml").read_text()), "postprocess": {"event_threshold": 0.3}}
    (source / "card.yaml").write_text(json.dumps(card))
    result = train(config(data, **{"run.run_name": "carded-cont", "run.load_run_name": "carded",
                                   "run.load_epoch": 2, "run.train_epochs": 3}))
    assert resolve_model(result.run_dir).card["postprocess"] == {"event_threshold": 0.3}


def test_evaluating_a_run_in_place_keeps_its_training_history(data, full_run):
    """Evaluated in place (run.training false), a run got a second step-4 row in metrics.csv, and
    its loss was of an unweighted criterion (class weights were set only when training)."""
    run_dir = data / "runs" / "evaluated"
    shutil.copytree(full_run, run_dir)
    history = (run_dir / "metrics.csv").read_bytes()
    result = train(config(data, **{"run.run_name": "evaluated", "run.load_run_name": "evaluated",
                                   "run.training": False}))
    assert (run_dir / "metrics.csv").read_bytes() == history
    evaluated = rows(run_dir / "metrics_eval.csv")
    assert [r["step"] for r in evaluated] == ["4"] and result.step == 4
    assert float(evaluated[0]["loss"]) == pytest.approx(float(rows(run_dir / "metrics.csv")[-1]["loss"]), rel=1e-4)
    # a checkpoint saved before it recorded its class weights: resolved again from the training movies
    ckpt = run_dir / "checkpoints" / "step_0000004.ckpt"
    state = torch.load(ckpt, weights_only=True)
    del state["casparks"]["class_weights"]
    torch.save(state, ckpt)
    train(config(data, **{"run.run_name": "evaluated", "run.load_run_name": "evaluated", "run.training": False}))
    assert rows(run_dir / "metrics_eval.csv")[1]["loss"] == evaluated[0]["loss"]


def test_a_new_run_starts_its_own_metrics_csv(data, caplog):
    """A run killed before its first checkpoint, started again with the same command, appended to
    the old metrics.csv (rows 2, 2, 4)."""
    run_dir = data / "runs" / "restarted"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("step,loss\n2,0.5\n")
    train(config(data, **{"run.run_name": "restarted", "run.train_epochs": 2}))
    assert [r["step"] for r in rows(run_dir / "metrics.csv")] == ["2"]
    assert (run_dir / "metrics.csv.old").read_text() == "step,loss\n2,0.5\n"
    assert "metrics.csv.old" in caplog.text


def test_max_minutes_saves_at_once_and_adds_no_validation(data, monkeypatch):
    """Stopped by run.max_minutes, Lightning validated the step that stopped (a row of metrics.csv
    an uninterrupted run lacks) and saved it only after that validation (a kill then lost the steps)."""
    import casparks.training as engine

    limited = {"run.train_epochs": 1000, "run.max_minutes": 1e-4, "run.save_every": 1000}
    result = train(config(data, **limited, **{"run.run_name": "timed-noval", "run.test_every": 1000}))
    assert 1 <= result.step < 1000 and result.checkpoint.is_file()
    assert not (result.run_dir / "metrics.csv").exists() and result.metrics is None
    original, saved_when_validating = engine._evaluate_movie, []

    def evaluate(*args, **kwargs):
        saved_when_validating.append(list(list_checkpoints(data / "runs" / "timed-due")))
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_evaluate_movie", evaluate)
    due = train(config(data, **limited, **{"run.run_name": "timed-due", "run.test_every": 1}))
    assert saved_when_validating[-1] == [due.step]  # a validation that is due runs after the save


def test_validation_reads_windows_in_float32_inside_a_mixed_precision_trainer(data, monkeypatch):
    """A bf16-mixed run validated under the trainer's autocast (bf16), its final validation in
    float32; the README says float32."""
    import casparks.inference as inference
    import casparks.training as engine
    from casparks.data import load_movies, split_samples
    from casparks.nn import build_network

    cfg = config(data)
    sample = split_samples(cfg.data)[1][0]
    item = engine._EvalMovie(load_movies([sample], cfg.data, data / "cache-f32")[0], sample)
    seen, original = [], inference._softmax_probabilities

    def spy(network, x):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(network, x)

    monkeypatch.setattr(inference, "_softmax_probabilities", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        engine._evaluate_movie(build_network(cfg.network).eval(), item, cfg, None, torch.device("cpu"))
    assert seen and not any(seen)


def test_the_class_weight_warning_names_the_classes(caplog):
    """It said "classes [1]"."""
    from casparks.losses import class_weights_from_counts

    class_weights_from_counts(np.array([100, 0, 5, 0]))
    assert "no voxel of sparks (1), puffs (3) in the training labels" in caplog.text


def test_training_labels_without_any_event_are_refused():
    """All-background labels trained to the end, told only "no voxel of sparks, waves, puffs:
    given the largest weight"."""
    from casparks.training import _refuse_nothing_to_learn

    with pytest.raises(casparks.CasparksError, match="hold no spark, wave or puff.*nothing to learn") as info:
        _refuse_nothing_to_learn(np.array([1000, 0, 0, 0]), ("movies",))
    assert str(info.value).startswith("movies:") and "\n" not in str(info.value)
    _refuse_nothing_to_learn(np.array([1000, 0, 0, 3]), ("movies",))  # one class is something


def test_a_validation_set_without_events_is_named(tmp_path, caplog):
    """Validated on movies without events, a run wrote blank F1 scores without a word."""
    from types import SimpleNamespace

    from casparks.training import _EvalMovie, _warn_if_no_events

    def item(labels):
        return _EvalMovie(SimpleNamespace(labels=labels), SimpleNamespace(video=tmp_path / "val" / "01_video.tif"))

    _warn_if_no_events([item(np.zeros((100, 4, 4), np.uint8)), item(np.full((3, 4, 4), 4, np.uint8))])
    assert "validation movies (in " + str(tmp_path / "val") + ") hold no annotated event" in caplog.text
    caplog.clear()
    labels = np.zeros((100, 4, 4), np.uint8)
    labels[90, 1, 1] = 2
    _warn_if_no_events([item(labels)])
    assert not caplog.text


def test_a_checkpoint_that_cannot_be_written_names_itself_and_leaves_no_part(tmp_path, monkeypatch):
    """On a full disk training said '/tmp/tmpr06uozm8: No space left on device' (fsspec's own
    temporary file) and left checkpoints/.last.ckpt.part behind."""
    import errno

    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    from casparks.training import _atomic_checkpoint_io

    def full(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(b"cut")
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpr06uozm8")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir()
    with pytest.raises(OSError) as info:
        _atomic_checkpoint_io().save_checkpoint({}, target)
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert list(target.parent.iterdir()) == []


def test_the_progress_bar_is_drawn_on_a_terminal_only(tmp_path, monkeypatch):
    """Lightning's bar wrote carriage returns and cursor moves into a job's captured stdout (2 kB
    of them for 4 steps); train.log and the step lines say how a run goes."""
    import io

    from pytorch_lightning.callbacks import TQDMProgressBar

    from casparks.training import _callbacks

    config = load_config(None)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not any(isinstance(c, TQDMProgressBar) for c in _callbacks(config, tmp_path))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert any(isinstance(c, TQDMProgressBar) for c in _callbacks(config, tmp_path))

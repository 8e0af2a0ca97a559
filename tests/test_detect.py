"""Detection end to end on tiny simulated movies with the bundled model: API, files, resampling,
bad input through the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

import casparks
from casparks.cli import main
from casparks.detection import (DetectSettings, Detection, Detector, check_sampling, detect, detect_files, expand_inputs,
                                find_detections, load_detector,
                                output_paths, read_detection, read_summary, write_detection)
from casparks.hardware import native_bf16
from casparks.io import Movie, read_movie, read_probabilities, read_stack, read_units, write_movie, write_stack
from casparks.measure import COLUMNS, MeasureConfig
from casparks.models import DEFAULT_MODEL, list_models, resolve_model
from casparks.simulate import load_simulation_config, simulate_movie

SMALL = {"n_frames": 80, "height_px": 32, "width_px": 96}


@pytest.fixture(scope="module")
def sim():
    return simulate_movie(load_simulation_config("default", SMALL), seed=[0, 1])


@pytest.fixture(scope="module")
def detector():
    return load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(window_frames=64))


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory, sim):
    path = tmp_path_factory.mktemp("movies") / "cell_video.tif"
    write_movie(path, sim.movie)
    return path


def test_bundled_model_is_listed_and_resolved():
    models = list_models()
    assert models and models[0].name == DEFAULT_MODEL
    info = resolve_model(None)
    assert info.checkpoint.is_file() and info.bundled
    assert info.native_sampling == (0.2, 6.8)
    assert info.card["description"]
    assert 1e6 < info.checkpoint.stat().st_size < 20e6  # "a few MB"


def test_a_run_named_without_its_folder_is_told_the_folder(tmp_path, monkeypatch):
    """--model sim-v3-finetune beside runs/sim-v3-finetune said only "neither a bundled model nor ..."."""
    (tmp_path / "runs" / "mine" / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(casparks.CasparksError, match=r"no model 'mine'.*give the run's folder: --model runs/mine"):
        resolve_model("mine")
    with pytest.raises(casparks.CasparksError, match=r"no model 'other'.*bundled models: "):
        resolve_model("other")


def test_a_runs_last_checkpoint_is_named_after_its_step(tmp_path):
    """--model RUN/checkpoints/last.ckpt was named '<run>-last' in every summary, a name that
    meant other weights as training went on; the step the file holds fixes which."""
    bundled = resolve_model(DEFAULT_MODEL)
    checkpoints = tmp_path / "mine" / "checkpoints"
    checkpoints.mkdir(parents=True)
    last = checkpoints / "last.ckpt"
    last.write_bytes(bundled.checkpoint.read_bytes())
    assert resolve_model(last).name == "mine-last"  # the file alone does not say its step
    detector = casparks.load_detector(last, device="cpu")
    assert detector.step > 0
    expected = f"mine-step_{detector.step:07d}"  # what the step's own checkpoint is called
    assert detector.info.name == expected and detector.describe()["model"] == expected
    assert detector.info.checkpoint == last
    step_file = checkpoints / f"step_{detector.step:07d}.ckpt"
    step_file.write_bytes(last.read_bytes())
    assert casparks.load_detector(step_file, device="cpu").info.name == expected
    assert casparks.load_detector(DEFAULT_MODEL, device="cpu").info == bundled  # bundled models unchanged


def test_detect_returns_consistent_labels_and_events(sim, detector):
    result = detect(sim.movie, detector)
    assert isinstance(result, Detection)
    shape = sim.movie.shape
    assert result.class_label.shape == shape and result.class_label.dtype == np.uint8
    assert result.event_label.shape == shape and result.event_label.dtype in (np.uint16, np.uint32)
    assert set(np.unique(result.class_label)) <= {0, 1, 2, 3}
    ids = np.unique(result.event_label[result.event_label > 0])
    assert list(result.events["id"]) == list(ids)
    assert list(result.events.columns)[: len(COLUMNS)] == COLUMNS
    # every event voxel has a class, every class voxel an event
    assert np.array_equal(result.event_label > 0, result.class_label > 0)
    assert sum(result.counts.values()) == len(result.events)
    assert result.probabilities is None
    assert set(result.timings_s) >= {"inference", "postprocess", "measure", "total"}
    assert result.settings["model"] == DEFAULT_MODEL
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.model = "x"  # type: ignore[misc]


def test_edge_frames_default_to_the_frames_training_left_out_of_the_loss(detector):
    trained = detector.training_config.data.ignore_frames_loss
    assert trained > 0 and detector.edge_frames == trained
    assert detector.describe()["edge_frames"] == trained
    assert load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, edge_frames=0)).edge_frames == 0
    with pytest.raises(casparks.CasparksError, match="edge_frames"):
        DetectSettings(edge_frames=-2)


def test_probabilities_are_kept_when_asked_and_sum_to_one(sim, detector):
    result = detector.detect(sim.movie, save_probabilities=True)
    p = result.probabilities
    assert p.shape == (4, *sim.movie.shape) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-4)


def test_a_movie_of_another_sampling_is_resampled_and_results_keep_its_shape(sim, detector):
    data = np.asarray(sim.movie.data)
    # the same cell at twice the frame rate and half the pixel size: every voxel repeated twice per axis
    fine = Movie(data.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2), 0.1, 3.4, name="fine")
    assert detector._resample_factors(fine) == pytest.approx((0.5, 0.5, 0.5))
    assert detector._resample_factors(sim.movie) is None
    probs = detector.probabilities(fine)
    assert probs.shape == (4, *fine.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    # resampled to the native sampling it is the original movie again, so the results agree
    original = detector.probabilities(sim.movie)
    # (up to the interpolation back to the fine grid, which moves class borders by half a voxel)
    assert np.abs(probs[:, ::2, ::2, ::2] - original).mean() < 0.02
    assert (probs.argmax(0)[::2, ::2, ::2] == original.argmax(0)).mean() > 0.95


def test_a_saturated_voxel_changes_nothing_else(sim):
    """One voxel at a 12-bit detector's ceiling once hid every event of a movie from the network
    (the 'movie' normalisation took it as the movie's maximum). In float32: bfloat16 rounding
    alone can tip an event that sits at the threshold, which is not what is tested here."""
    detector = load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(window_frames=64, precision="32"))
    clean = detect(sim.movie, detector)
    data = np.array(sim.movie.data)
    data[40, 16, 48] = 4095
    hot = detect(dataclasses.replace(sim.movie, data=data), detector)
    assert clean.counts == hot.counts
    assert np.mean(clean.class_label != hot.class_label) < 1e-4  # at most the hot voxel's surroundings


def test_long_movies_run_in_segments_that_agree_with_the_whole_movie():
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 300, "height_px": 32, "width_px": 96}),
                         seed=[3, 1])
    whole = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, segment_frames=None))
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, segment_frames=80,
                                                               segment_margin_ms=300.0))
    assert len(parts._segments(sim.movie)) == 3 and len(whole._segments(sim.movie)) == 1
    a, b = whole.detect(sim.movie, save_probabilities=True), parts.detect(sim.movie, save_probabilities=True)
    assert b.class_label.shape == sim.movie.shape and b.probabilities.shape == (4, *sim.movie.shape)
    # ids 1..N, one table row each, in the movie's time
    ids = np.unique(b.event_label[b.event_label > 0])
    assert list(ids) == list(range(1, len(ids) + 1)) == list(b.events["id"])
    assert b.events["start_ms"].max() < sim.movie.shape[0] * sim.movie.frame_interval_ms
    assert np.array_equal(b.class_label > 0, b.event_label > 0)
    # segments sit on the whole movie's window grid: the same probabilities, the same events
    assert np.abs(a.probabilities - b.probabilities).mean() < 0.005
    assert (a.class_label == b.class_label).mean() > 0.999
    assert len(a.events) == len(b.events)


@pytest.mark.parametrize("margin_ms", [0.0, 50.0, 300.0])
@pytest.mark.parametrize("interval_ms", [6.8, 10.0])
def test_every_segment_reads_the_frames_of_its_core(margin_ms, interval_ms):
    """With segment_margin_ms=0, a last core too short for a window step was joined to the one
    before, which still read only its own size: the movie's last frames never reached the
    network (12 of 25 events lost), and saved probabilities failed to broadcast."""
    from casparks.io import Movie

    detector = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, segment_frames=80,
                                                                  segment_margin_ms=margin_ms))
    for n in (170, 200, 333, 497):
        movie = Movie(np.zeros((n, 8, 8), np.float32), 0.2, interval_ms)
        segments = detector._segments(movie)
        assert segments[0][1] == 0 and segments[-1][2] == n
        assert all(a[2] == b[1] for a, b in zip(segments, segments[1:]))  # cores tile the movie
        assert all(lo <= core_lo < core_hi <= hi for lo, core_lo, core_hi, hi in segments), (n, segments)


def test_segments_are_measured_on_the_movies_labels_with_one_dark_level(monkeypatch):
    """Each segment was measured on its own labels and with its own dark level: a wave's tail
    in a segment's margin, dropped there as too short, entered that segment's baseline (one
    spark's amplitude +79 %), and the dark levels of segments differed by 5 ADU. Now every
    segment is measured on the stitched labels, with the dark level of the whole movie."""
    import casparks.measure as measure

    sim = simulate_movie(load_simulation_config("default", {"n_frames": 300, "height_px": 32, "width_px": 96}),
                         seed=[3, 1])
    whole = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, segment_frames=None)).detect(sim.movie)
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, segment_frames=80,
                                                               segment_margin_ms=300.0))
    calls = []
    original = measure.measure_events

    def recording(movie, class_label, event_label, *args, **kwargs):
        calls.append((np.array(class_label), np.array(event_label), kwargs["config"].offset_adu))
        return original(movie, class_label, event_label, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_events", recording)
    b = parts.detect(sim.movie)
    segments = parts._segments(sim.movie)
    assert len(calls) == len(segments) == 3
    for (lo, _, _, hi), (classes, events, offset) in zip(segments, calls):
        assert np.array_equal(classes, b.class_label[lo:hi]) and np.array_equal(events, b.event_label[lo:hi])
    # one dark level for every segment, read part by part on the whole movie: the whole-movie
    # estimate within a fraction of its standard error (45 ADU for this short movie; a 2600-frame
    # one in 3 segments gives it to 5 significant digits)
    assert len({offset for _, _, offset in calls}) == 1
    assert calls[0][2] == pytest.approx(b.dark_level["adu"], rel=1e-4)
    assert abs(b.dark_level["adu"] - whole.dark_level["adu"]) < 0.2 * whole.dark_level["se_adu"]
    assert b.dark_level["resting_adu"] == pytest.approx(whole.dark_level["resting_adu"], rel=0.05)
    a, b = whole.events.set_index("id"), b.events.set_index("id")
    assert list(a.index) == list(b.index)
    assert np.allclose(a["confidence"], b["confidence"], atol=0.01)
    for column in ("start_ms", "end_ms", "extent_x_um"):
        assert np.allclose(a[column], b[column], rtol=1e-12), column


def test_an_uncertain_dark_level_is_flagged_in_segments_as_in_one_piece(monkeypatch, caplog):
    """The warning that a dark level's standard error is a large part of the resting signal:
    a segmented movie's dark level is read part by part, and its resting signal is the
    segments' median, so the flag is set after both, not by any one segment's measurements."""
    import casparks.darklevel as darklevel

    monkeypatch.setattr(darklevel, "UNCERTAIN_FRACTION", 0.0)  # any standard error is called uncertain
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 300, "height_px": 32, "width_px": 96}),
                         seed=[3, 2])
    levels = []
    for segment_frames in (None, 80):
        caplog.clear()
        with caplog.at_level("WARNING", logger="casparks"):
            found = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(
                window_frames=64, segment_frames=segment_frames, segment_margin_ms=300.0)).detect(sim.movie)
        levels.append(found.dark_level)
        assert found.dark_level["reason"].startswith("uncertain: its standard error is")
        assert caplog.text.count("is uncertain: its standard error") == 1, caplog.text
    assert levels[1]["adu"] == pytest.approx(levels[0]["adu"], abs=0.2 * levels[0]["se_adu"])


def test_a_dark_level_is_told_once_with_every_reason_in_segments_as_in_one_piece(monkeypatch, caplog):
    """Read with a reason (unconfirmed, pooled by their own means), then flagged uncertain, a
    movie's dark level was warned about twice, the second warning repeating the first."""
    import casparks.darklevel as darklevel
    import casparks.measure as measure

    original = darklevel.dark_level_from_moments

    def lower_bound(*args, **kwargs):
        return dataclasses.replace(original(*args, **kwargs), reason="unconfirmed: as the test says")

    monkeypatch.setattr(darklevel, "dark_level_from_moments", lower_bound)
    monkeypatch.setattr(measure, "dark_level_from_moments", lower_bound)  # a segmented movie's, read part by part
    monkeypatch.setattr(darklevel, "UNCERTAIN_FRACTION", 0.0)  # any standard error is called uncertain
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 300, "height_px": 32, "width_px": 96}),
                         seed=[3, 2])
    for segment_frames in (None, 80):
        caplog.clear()
        with caplog.at_level("WARNING", logger="casparks"):
            found = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(
                window_frames=64, segment_frames=segment_frames, segment_margin_ms=300.0)).detect(sim.movie)
        told = [r.getMessage() for r in caplog.records if "dark level" in r.getMessage()]
        assert len(told) == 1, (segment_frames, told)
        assert found.dark_level["reason"].startswith("uncertain: its standard error is")
        assert found.dark_level["reason"].endswith("; and unconfirmed: as the test says")
        assert found.dark_level["reason"] in told[0]


@pytest.mark.parametrize("pixel_size_um, segment_frames", [(0.2, None), (0.15, None), (0.15, 80)])
def test_a_masked_border_is_told_once_per_movie_however_it_is_read(caplog, pixel_size_um, segment_frames):
    """A region constant through the movie is left out of the normalisation, and said so. A
    resampled movie was told it twice (the repair's scan and the resampled movie's, in two pixel
    counts), and a long one once more per segment."""
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 300, "height_px": 32, "width_px": 96}),
                         seed=[3, 2])
    data = sim.movie.data.copy()
    data[:, :, :10] = 100  # a masked border: about 10 % of the field
    movie = Movie(data, pixel_size_um, 6.8, name="masked")
    with caplog.at_level("INFO", logger="casparks"):
        load_detector(DEFAULT_MODEL, "cpu", DetectSettings(
            window_frames=64, segment_frames=segment_frames, segment_margin_ms=300.0)).detect(movie)
    told = [r.getMessage() for r in caplog.records if "constant through the movie" in r.getMessage()]
    assert len(told) == 1, told
    percent = float(told[0].split(" % of the field is constant")[0])  # of the field the network reads
    assert percent == (10.4 if pixel_size_um == 0.2 else pytest.approx(10.4, abs=1.0)), told


def test_a_segmented_movie_without_events_has_the_dark_level_of_one_piece():
    rng = np.random.default_rng(0)
    noise = rng.poisson(200.0, (300, 32, 96)).astype(np.uint16)
    movie = casparks.Movie(noise, 0.2, 6.8, name="quiet")
    settings = dict(window_frames=64, segment_margin_ms=300.0)
    whole = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(segment_frames=None, **settings)).detect(movie)
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(segment_frames=80, **settings)).detect(movie)
    assert len(whole.events) == len(parts.events) == 0
    # read from the whole movie in both (session 31: recorded, where it was left out)
    assert whole.dark_level is not None and whole.dark_level == parts.dark_level


def test_segments_of_a_resampled_movie_share_the_whole_movies_normalisation(monkeypatch):
    """At 0.25 µm / 8 ms each segment was normalised by its own percentiles (p99.9 1142-1688
    against the whole movie's 1614): now every segment gets the resampled whole movie's."""
    from casparks.preprocess import movie_stats, resample_movie, resampled_stats

    sim = simulate_movie(load_simulation_config("waves", {"n_frames": 360, "height_px": 32, "width_px": 96,
                                                          "pixel_size_um": 0.25, "frame_interval_ms": 8.0}), seed=2)
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, segment_frames=120,
                                                               segment_margin_ms=300.0))
    factors = parts._resample_factors(sim.movie)
    assert factors is not None
    streamed, whole = resampled_stats(sim.movie.data, factors), movie_stats(resample_movie(sim.movie.data, factors))
    for key in ("percentile_low", "percentile_high", "mean", "std", "noise_gain"):
        assert getattr(streamed, key) == pytest.approx(getattr(whole, key), rel=2e-3), key
    assert streamed.full_scale == 65535.0 and whole.full_scale < 65535.0  # the uint16 scale, not the maximum
    seen = []
    original = Detector.probabilities

    original = Detector._network

    def recording(self, data, stats, px, dt, progress):
        seen.append(stats)
        return original(self, data, stats, px, dt, progress)

    monkeypatch.setattr(Detector, "_network", recording)
    parts.detect(sim.movie)
    assert len(seen) >= 3 and all(s is seen[0] and s.percentile_high == streamed.percentile_high for s in seen)


def test_segments_of_a_resampled_movie_sit_on_its_resampled_window_grid():
    """Segments were planned in the movie's frames but windows run in the network's: at 10 ms a
    segment's windows fell between the whole movie's (labels differed in 107 frames), and at 1 ms
    the network read the movie 4.6 times (1.5 times at 6.8 ms). Now the plan counts network
    frames and a segment is resampled on the whole movie's grid: the same probabilities."""
    sim = simulate_movie(load_simulation_config("waves", {"n_frames": 240, "height_px": 32, "width_px": 96,
                                                          "frame_interval_ms": 10.0}), seed=4)
    # margins longer than a window with its edge frames: no window of the core sees a segment's end
    settings = dict(window_frames=64, precision="32", segment_margin_ms=600.0)
    whole = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(segment_frames=None, **settings))
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(segment_frames=80, **settings))
    segments = parts._segments(sim.movie)
    assert len(segments) >= 3 and parts._resample_factors(sim.movie) is not None
    a, b = whole.detect(sim.movie, save_probabilities=True), parts.detect(sim.movie, save_probabilities=True)
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    assert np.array_equal(a.class_label, b.class_label) and len(a.events) == len(b.events)
    # the network re-reads as much of a 1 ms movie as of one at its own 6.8 ms
    reads = {}
    for dt, n in ((6.8, 3000), (1.0, 20400)):
        plan = parts._segments(Movie(np.zeros((n, 8, 8), np.uint16), 0.2, dt, name="plan"))
        reads[dt] = sum(hi - lo for lo, _, _, hi in plan) / n
    assert reads[1.0] == pytest.approx(reads[6.8], rel=0.05)


def test_a_last_segment_of_a_few_frames_joins_the_one_before():
    """A last core shorter than a window step cost a whole network pass over its margin (at 50 ms,
    700 frames: a last segment of 4 core frames read 56)."""
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(segment_frames=80, window_frames=64, precision="32",
                                                              segment_margin_ms=600.0))
    step = parts._window_step()
    size = -(-80 // step) * step  # segments hold whole window steps
    for n in (3 * size + step - 1, 3 * size + step):  # a last core just under a step, and one step long
        plan = parts._segments(Movie(np.zeros((n, 8, 8), np.uint16), 0.2, 6.8, name="plan"))
        cores = [(a, b) for _, a, b, _ in plan]
        assert cores[0][0] == 0 and cores[-1][1] == n and all(b == c for (_, b), (c, _) in zip(cores, cores[1:]))
        assert all(lo <= a and b <= hi for lo, a, b, hi in plan)
        assert len(plan) == (3 if n - 3 * size < step else 4), (n, cores)


def _network_giving(monkeypatch, probs: np.ndarray, data: np.ndarray) -> None:
    """The network's probabilities of ``data`` (and of each segment of it, a view) are ``probs``:
    post-processing and stitching as in detection, without a network's noise."""
    def probabilities(self, movie, progress=None, stats=None, check=True):
        lo = (movie.data.__array_interface__["data"][0] - data.__array_interface__["data"][0]) // data.strides[0]
        return probs[:, lo : lo + movie.shape[0]].copy()

    monkeypatch.setattr(Detector, "probabilities", probabilities)


def _probabilities(layers: dict[int, np.ndarray]) -> np.ndarray:
    """(4, T, Y, X) probabilities with the event classes' ``layers`` (code → T×Y×X), summing to 1."""
    probs = np.zeros((4, *next(iter(layers.values())).shape), dtype=np.float32)
    for code, layer in layers.items():
        probs[code] = layer
    probs[1:] *= np.minimum(1.0, 0.999 / np.maximum(probs[1:].sum(axis=0), 1e-9))
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    return probs


def test_a_slow_wave_cut_at_a_segments_margin_is_taken_by_the_next_segment(monkeypatch):
    """A slow wave starting late in a segment's core, seen there only up to its margin (13 µm,
    under the 15 µm wave minimum), was dropped by that segment and not taken by the next (its
    first frame is not in that core): it vanished. The next segment, which sees it whole, now
    takes it; a spark of the first segment that starts after it comes after it in id."""
    shape = (420, 24, 96)
    t, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    arrive = 90 + x / 0.4  # 0.4 px (0.08 µm) a frame from the left edge
    wave = ((t >= arrive) & (t < arrive + 25)).astype(np.float32) * 0.98
    spark = np.zeros(shape, dtype=np.float32)
    for centre in ((96, 12, 80), (150, 6, 10), (330, 18, 50)):
        r2 = sum(((g - c) / s) ** 2 for g, c, s in zip((t, y, x), centre, (5, 6, 6)))
        spark = np.maximum(spark, 0.99 * np.exp(-0.5 * r2))
    probs = _probabilities({1: spark, 2: wave})
    data = (200 + 400 * (1 - probs[0]) + np.random.default_rng(0).normal(0, 10, shape)).astype(np.uint16)
    _network_giving(monkeypatch, probs, data)
    movie = casparks.Movie(data, 0.2, 6.8, name="slow wave")
    found = []
    for segment_frames in (None, 102):
        detector = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(
            window_frames=64, segment_frames=segment_frames, segment_margin_ms=1040.0,
            measure=MeasureConfig(offset_adu=0.0)))
        found.append(detector.detect(movie))
    # the wave, frames 90-352: the first segment sees it to frame 255, the second whole
    assert detector._segments(movie)[:2] == [(0, 0, 102, 255), (0, 102, 204, 357)]
    whole, parts = found
    assert list(parts.events["class"]) == list(whole.events["class"]) == ["wave", "spark", "spark", "spark"]
    assert np.array_equal(parts.event_label, whole.event_label) and np.array_equal(parts.class_label, whole.class_label)
    ids = np.unique(parts.event_label[parts.event_label > 0])
    assert list(ids) == list(parts.events["id"]) == [1, 2, 3, 4]
    assert parts.events["start_ms"].is_monotonic_increasing
    for column in ("start_ms", "end_ms", "confidence"):
        assert np.allclose(parts.events[column], whole.events[column]), column


def test_otsu_is_one_threshold_for_a_segmented_movie(monkeypatch):
    """With event_threshold 'otsu' each segment took its own threshold (0.20-0.27 against the
    whole movie's 0.26: 42 events against 39) and the summary recorded their mean, which no
    segment used. Now the network's first pass over the segments gives one piece's threshold,
    from the same voxels (every 7th here), and every segment uses it."""
    import casparks.postprocess as postprocess

    shape = (420, 24, 96)
    rng = np.random.default_rng(0)
    t, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    spark = np.zeros(shape, dtype=np.float32)
    # many confident sparks in the first half, a few faint ones in the second
    for low, high, sigma, peak, count in ((0, 200, (4, 6, 6), 0.99, 40), (230, 400, (6, 10, 10), 0.24, 6)):
        for _ in range(count):
            centre = (rng.uniform(low, high), rng.uniform(0, 24), rng.uniform(0, 96))
            r2 = sum(((g - c) / s) ** 2 for g, c, s in zip((t, y, x), centre, sigma))
            spark = np.maximum(spark, peak * np.exp(-0.5 * r2))
    probs = _probabilities({1: spark})
    data = (200 + 400 * spark + rng.normal(0, 10, shape)).astype(np.uint16)
    _network_giving(monkeypatch, probs, data)
    monkeypatch.setattr(postprocess, "_OTSU_SAMPLES", int(np.prod(shape)) // 7)
    histograms, otsu = [], getattr(postprocess, "otsu_threshold", None)

    def recording(counts, low, high):
        histograms.append(np.array(counts))
        return otsu(counts, low, high)

    monkeypatch.setattr(postprocess, "otsu_threshold", recording, raising=False)
    movie = casparks.Movie(data, 0.2, 6.8, name="otsu")
    found = []
    for segment_frames in (None, 102):
        detector = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(
            window_frames=64, segment_frames=segment_frames, segment_margin_ms=300.0,
            postprocess={"event_threshold": "otsu", "spark_threshold": None, "puff_threshold": None},
            measure=MeasureConfig(offset_adu=0.0)))
        found.append(detector.detect(movie))
    assert len(detector._segments(movie)) == 4  # 420 frames in cores of 102: the last 12 join the fourth
    whole, parts = found
    assert 0.2 < whole.event_threshold < 0.8  # Otsu's, not a bound
    assert parts.event_threshold == whole.event_threshold and parts.settings["postprocess"]["event_threshold"] == "otsu"
    assert np.array_equal(parts.class_label, whole.class_label) and len(parts.events) == len(whole.events)
    # the same histogram, of the same voxels
    assert len(histograms) == 2 and np.array_equal(*histograms)
    assert histograms[0].sum() == len(range(0, int(np.prod(shape)), 7))


def test_large_frames_run_in_spatial_tiles_without_seams():
    """Tiles of 64 × 128 px over a 64 × 256 px movie give the whole-frame probabilities and events.

    (Tiles lower than the training chunks' 64 rows do not: the network then sees a border inside
    the cell, hence the default tile of 128 × 512.) In float32: in bfloat16 the rounding alone
    tips events that sit at the threshold one way or the other. The card's puff filter is
    replaced by one threshold: this movie's one puff has a mean p(puff) of 0.4507 against the
    card's minimum of 0.45, which a 0.001 change of probability tips."""
    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 64, "height_px": 64, "width_px": 256}), seed=[0, 1])
    no_edge = {"puff_threshold": 0.9, "puff_min_mean_probability": 0.0, "puff_min_duration_ms": 34.0}
    detector = load_detector(DEFAULT_MODEL, device="cpu",
                             settings=DetectSettings(window_frames=64, precision="32", postprocess=no_edge))
    tiled = load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(
        window_frames=64, tile_yx=(64, 128), precision="32", postprocess=no_edge))
    assert np.abs(tiled.probabilities(sim.movie) - detector.probabilities(sim.movie)).mean() < 0.005
    whole, parts = detector.detect(sim.movie), tiled.detect(sim.movie)
    assert parts.counts == whole.counts and sum(whole.counts.values()) >= 5  # a comparison with something in it
    assert tiled.describe()["tile_yx"] == [64, 128]
    with pytest.raises(casparks.CasparksError, match="tile_yx"):
        DetectSettings(tile_yx=(8, 512))
    with pytest.raises(casparks.CasparksError, match="at least 64 px"):  # accepted from 16 px before
        DetectSettings(tile_yx=(32, 512))


def test_short_movies_and_odd_frame_sizes_work(detector):
    rng = np.random.default_rng(0)
    movie = Movie(rng.poisson(20, (11, 13, 37)).astype(np.uint16), 0.2, 6.8, name="odd")
    result = detector.detect(movie)
    assert result.class_label.shape == (11, 13, 37)


@pytest.mark.parametrize("native", [True, False])
def test_precision_choice(native, monkeypatch):
    from casparks import hardware
    from casparks.detection import _autocast_dtype

    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: native)
    cpu = torch.device("cpu")
    assert _autocast_dtype("32", cpu) is None
    assert _autocast_dtype("auto", cpu) is (torch.bfloat16 if native else None)
    if native:
        assert _autocast_dtype("bf16", cpu) is torch.bfloat16
    else:  # emulated bfloat16: ~200x slower than float32, so refused with the fix
        with pytest.raises(casparks.CasparksError, match="emulated.*--precision auto"):
            _autocast_dtype("bf16", cpu)


def test_the_native_bf16_check_matches_pytorch():
    assert native_bf16("cpu") == bool(torch.backends.mkldnn.is_available()
                                       and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert native_bf16("cuda") == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@pytest.mark.skipif(not native_bf16("cpu"), reason="this CPU only emulates bfloat16, which detection refuses")
def test_bf16_and_float32_agree(sim):
    fast = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, precision="bf16"))
    exact = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, precision="32"))
    a, b = fast.probabilities(sim.movie), exact.probabilities(sim.movie)
    assert np.abs(a - b).mean() < 0.02  # bf16 moves probabilities by ~1 % on average (max ~0.12)
    # what detection keeps (event probability above the model's threshold) is the same
    threshold = fast.postprocess.event_threshold
    assert ((a[0] < 1 - threshold) == (b[0] < 1 - threshold)).mean() > 0.99


# ----------------------------------------------------------------------------------------------
# files


def test_detect_files_writes_every_output_and_never_overwrites(movie_file, tmp_path, sim):
    out = tmp_path / "out"
    settings = DetectSettings(window_frames=64)
    results = detect_files([movie_file], out, settings=settings, device="cpu", save_probabilities=True, progress=False)
    paths = output_paths(out, "cell_video", probabilities=True)
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    classes = read_movie(paths["class_label"])
    assert classes.data.dtype == np.uint8 and classes.pixel_size_um == pytest.approx(0.2)
    assert classes.frame_interval_ms == pytest.approx(6.8)
    assert set(np.unique(np.asarray(classes.data))) <= {0, 1, 2, 3}
    assert results[0]["outputs"]["class_label"] == str(paths["class_label"])
    table = pd.read_csv(paths["events"])
    assert list(table.columns)[: len(COLUMNS)] == COLUMNS and len(table) == sum(results[0]["counts"].values())
    summary = json.loads(paths["summary"].read_text())
    assert summary["counts"] == results[0]["counts"]
    assert summary["model"] == DEFAULT_MODEL and summary["settings"]["window_frames"] == 64
    assert read_probabilities(paths["probabilities"]).shape == (4, *sim.movie.shape)
    assert read_units(paths["probabilities"]) == pytest.approx((sim.movie.pixel_size_um, sim.movie.frame_interval_ms))
    assert set(results[0]) >= {"name", "counts", "timings_s", "settings", "outputs"}  # no arrays kept across movies

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(casparks.CasparksError, match="exist already"):
        detect_files([movie_file], out, settings=settings, device="cpu", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    detect_files([movie_file], out, settings=settings, device="cpu", progress=False, overwrite=True)


def test_a_folder_where_a_result_file_goes_is_refused_before_the_network_runs(movie_file, tmp_path, capsys,
                                                                                monkeypatch):
    """With --overwrite the network ran, then writing the events table failed ("Is a directory",
    exit 1) and left the movie's labels without a summary; without it, the line said the results
    exist already. Now one line, exit 2, nothing written, whichever flag."""
    def no_network(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(Detector, "begin", no_network)
    out = tmp_path / "out"
    (out / "cell_video_events.csv").mkdir(parents=True)
    for flags in ([], ["--overwrite"], ["--skip-existing"]):
        err = _fails(["detect", str(movie_file), "--out", str(out), "--device", "cpu", *flags], capsys,
                     "cell_video_events.csv: is a folder where a result file goes",
                     "remove or rename it, or choose another --out folder")
        assert "exist already" not in err
        assert [p.name for p in out.iterdir()] == ["cell_video_events.csv"]
        assert not any((out / "cell_video_events.csv").iterdir())
    # a stale probabilities file is removed where results are replaced: a folder of that name is in the way too
    (out / "cell_video_events.csv").rmdir()
    (out / "cell_video_probabilities.tif").mkdir()
    _fails(["detect", str(movie_file), "--out", str(out), "--device", "cpu", "--overwrite"], capsys,
           "cell_video_probabilities.tif: is a folder where a result file goes")
    # the Python API's write_detection likewise, before it writes anything
    found = Detection("cell_video", None, 0.2, 6.8, np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.uint16),
                      pd.DataFrame(), pd.DataFrame(), 0.5, "m", {}, {})
    with pytest.raises(casparks.CasparksError, match="is a folder where a result file goes"):
        write_detection(found, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["cell_video_probabilities.tif"]


def test_a_folder_run_finishing_movies_in_a_second_thread_writes_the_same_results(tmp_path, monkeypatch):
    """pipeline: the network reads movie i + 1 while another thread post-processes, measures and
    writes movie i. Same files, same summaries in the same order; the first error stops the run
    with the movies before it written."""
    folder = tmp_path / "movies"
    folder.mkdir()
    for seed in range(3):
        write_movie(folder / f"m{seed}_video.tif", simulate_movie(load_simulation_config("default", SMALL),
                                                                  seed=[seed, 7]).movie)
    settings = DetectSettings(window_frames=64)
    runs = {}
    for pipeline in (False, True):
        out = tmp_path / f"out-{pipeline}"
        runs[pipeline] = (out, detect_files([folder], out, settings=settings, device="cpu", progress=False,
                                            pipeline=pipeline))
    (serial_dir, serial), (overlap_dir, overlapped) = runs[False], runs[True]
    assert [r["name"] for r in overlapped] == [r["name"] for r in serial] == ["m0_video", "m1_video", "m2_video"]
    assert [r["counts"] for r in overlapped] == [r["counts"] for r in serial]
    assert all(set(r["timings_s"]) == {"inference", "postprocess", "measure", "total"} for r in overlapped)
    for name in ("m0_video", "m1_video", "m2_video"):
        for kind, path in output_paths(serial_dir, name).items():
            other = output_paths(overlap_dir, name)[kind]
            if kind == "summary":
                continue  # holds timings
            assert other.read_bytes() == path.read_bytes(), other.name

    import casparks.measure

    real, calls = casparks.measure.measure_events, []

    def failing_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise casparks.CasparksError("measurement failed on purpose")
        return real(*args, **kwargs)

    monkeypatch.setattr(casparks.measure, "measure_events", failing_on_the_second)
    out = tmp_path / "failing"
    with pytest.raises(casparks.CasparksError, match="on purpose"):
        detect_files([folder], out, settings=settings, device="cpu", progress=False, pipeline=True)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("m0_video")) == sorted(
        p.name for p in output_paths(out, "m0_video").values())
    assert not any(p.name.startswith(("m1_video", "m2_video")) for p in out.iterdir())


def test_the_summary_says_which_dark_level_was_read(detector, tmp_path):
    dense = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 32, "width_px": 128}),
                           seed=[0, 2])
    found = detector.detect(dense.movie)
    assert sum(found.counts.values()) > 0  # measured events, so a dark level was read
    level = found.summary()["dark_level"]
    assert level["method"] in ("variance", "skewness") and level["adu"] > 0 and level["resting_adu"] > 0
    paths = write_detection(found, tmp_path)
    assert read_detection(paths["summary"]).dark_level == level
    given = load_detector(DEFAULT_MODEL, device="cpu",
                          settings=DetectSettings(window_frames=64, measure=MeasureConfig(offset_adu=0.0)))
    assert "dark_level" not in given.detect(dense.movie).summary()


def test_the_summary_says_whether_the_frequencies_are_per_the_cell_or_the_field(tmp_path, monkeypatch, detector):
    """A movie whose events peak outside the cell found has frequencies per the field (with a
    warning), and its summary said "frequency_per": "cell" all the same. Such a movie's results
    are still this rule's: a run continued over them goes on."""
    import casparks.detection as detection
    from casparks.detection import detection_differences

    dense = simulate_movie(load_simulation_config("dense", SMALL), seed=[0, 1])  # with events
    movie_file = tmp_path / "cell_video.tif"
    write_movie(movie_file, dense.movie)
    assert detector.detect(dense.movie).summary()["frequency_per"] == "cell"
    monkeypatch.setattr(detection, "_peaks_outside", lambda events, cell, px: len(events))
    settings = DetectSettings(window_frames=64)
    out = tmp_path / "out"
    [result] = detect_files([movie_file], out, settings=settings, device="cpu", progress=False)
    assert sum(result["counts"].values()) > 0 and result["frequency_per"] == "field"
    T, H, W = dense.movie.shape
    assert result["frequency"][0]["length_um"] == pytest.approx(W * 0.2)  # the field's width, not the cell's
    assert result["frequency"][0]["area_um2"] == pytest.approx(H * W * 0.04)
    summary_path = output_paths(out, "cell_video")["summary"]
    assert read_summary(summary_path)["frequency_per"] == "field"
    assert read_detection(summary_path).frequency_per == "field"
    # the table of movies says so too: its cell columns hold the field's size
    row = casparks.read_movies(out).iloc[0]
    assert row["frequency_per"] == "field" and row["cell_area_um2"] == pytest.approx(H * W * 0.04)
    [again] = detect_files([movie_file], out, settings=settings, device="cpu", progress=False, skip_existing=True)
    assert again["skipped"] is True
    movie = read_movie(movie_file)
    summary = read_summary(summary_path)
    assert detection_differences(summary, detector, movie) == []
    del summary["frequency_per"]  # written before frequencies were per the cell: another rule
    assert detection_differences(summary, detector, movie) == ["frequency_per: 'field' → 'cell'"]


def test_the_summary_says_whether_the_cell_spans_more_of_y_than_of_x(sim, detector, tmp_path, caplog):
    """A cell lying across the scan has per 100 µm frequencies per its short extent along x: detect
    logged it, and the report, reading the summary, showed them (and pooled them) silently."""
    import logging

    upright = dataclasses.replace(sim.movie, data=np.ascontiguousarray(sim.movie.data.transpose(0, 2, 1)))
    with caplog.at_level(logging.WARNING, logger="casparks"):
        found = detector.detect(upright)
    assert "the cell found spans more of y" in caplog.text and found.summary()["cell_along_y"] is True
    assert detector.detect(sim.movie).summary()["cell_along_y"] is False
    summary_path = write_detection(found, tmp_path)["summary"]
    assert read_detection(summary_path).cell_along_y is True
    assert casparks.read_movies(tmp_path)["cell_along_y"].tolist() == [True]  # the table of movies too
    summary = json.loads(summary_path.read_text())
    del summary["cell_along_y"]  # a summary written before it was recorded
    summary_path.write_text(json.dumps(summary))
    assert read_detection(summary_path).cell_along_y is False
    assert casparks.read_movies(tmp_path)["cell_along_y"].tolist() == [False]


def test_written_detections_read_back_identically(sim, detector, tmp_path):
    found = detector.detect(sim.movie, save_probabilities=True)
    paths = write_detection(found, tmp_path)
    assert find_detections(tmp_path) == [paths["summary"]] == find_detections(paths["summary"])
    back = read_detection(paths["summary"])
    assert back.name == found.name and back.model == found.model and back.counts == found.counts
    assert back.pixel_size_um == pytest.approx(found.pixel_size_um)
    np.testing.assert_array_equal(back.class_label, found.class_label)
    np.testing.assert_array_equal(back.event_label, found.event_label)
    np.testing.assert_allclose(back.probabilities, found.probabilities, atol=1e-6)
    pd.testing.assert_frame_equal(back.events, found.events, check_dtype=False)
    assert back.settings["window_frames"] == 64 and back.event_threshold == pytest.approx(found.event_threshold)

    paths["events"].unlink()
    with pytest.raises(casparks.CasparksError, match="incomplete: .*_events.csv missing"):
        read_detection(paths["summary"])
    with pytest.raises(casparks.CasparksError, match="no detection results"):
        find_detections(tmp_path / "..")
    (tmp_path / "x_detection.json").write_text("{not json")
    with pytest.raises(casparks.CasparksError, match="not a casparks detection summary"):
        read_detection(tmp_path / "x_detection.json")
    # a folder and a missing file said "not a casparks detection summary (IsADirectoryError: ...)"
    with pytest.raises(casparks.CasparksError, match="is a folder, not a detection summary; give one of its"):
        read_detection(tmp_path)
    with pytest.raises(casparks.CasparksError, match="y_detection.json: does not exist"):
        read_detection(tmp_path / "y_detection.json")
    # labels of another shape: the file that differs from the detection's movie is named, not always the events'
    from casparks.io import write_class_label

    paths["events"].write_text(found.events.to_csv(index=False))
    write_class_label(paths["class_label"], found.class_label[:-1], found.pixel_size_um, found.frame_interval_ms,
                      overwrite=True)
    with pytest.raises(casparks.CasparksError, match=r"_class_label.tif: has shape \(79, .*the detection's movie"):
        read_detection(paths["summary"])


def test_a_detection_without_events_reads_back_with_the_tables_dtypes(sim, detector, tmp_path):
    """A header-only CSV read back as text columns, unlike the API's typed empty table."""
    rng = np.random.default_rng(0)
    flat = Movie(rng.poisson(100, sim.movie.shape).astype(np.uint16), sim.movie.pixel_size_um,
                 sim.movie.frame_interval_ms)  # noise without events
    found = detector.detect(flat)
    assert found.events.empty
    back = read_detection(write_detection(found, tmp_path)["summary"])
    pd.testing.assert_series_equal(back.events.dtypes, found.events.dtypes)


def test_cli_detect_then_evaluate(movie_file, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["detect", str(movie_file.parent / "*.tif"), "--out", str(out), "--window", "64",
                 "--device", "cpu", "--threshold", "0.9", "--tile", "64", "256"]) == 0
    printed = capsys.readouterr().out
    assert "cell_video:" in printed and "results in" in printed
    counts = json.loads((out / "cell_video_detection.json").read_text())["counts"]
    assert f"cell_video: {casparks.classes.format_counts(counts)} (0.2 µm, 6.8 ms; " in printed  # the sampling used
    summary = json.loads((out / "cell_video_detection.json").read_text())
    assert summary["settings"]["postprocess"]["event_threshold"] == 0.9
    assert summary["settings"]["tile_yx"] == [64, 256]


def test_cli_models_lists_the_bundled_model(capsys):
    assert main(["models"]) == 0
    assert f"{DEFAULT_MODEL} (default)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written


def _fails(args, capsys, *expected):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for text in expected:
        assert text in err
    return err


@pytest.mark.parametrize(
    "name, data, kwargs, expected",
    [
        ("flat.tif", np.zeros((8, 9), np.uint16), {}, "2-D image"),
        ("channels.tif", np.zeros((5, 2, 8, 9), np.uint16), {"imagej": True, "metadata": {"axes": "TCYX"}}, "--channel"),
        ("nan.tif", np.full((20, 8, 9), np.nan, np.float32), {}, "NaN"),
        ("constant.tif", np.full((20, 8, 9), 7, np.uint16), {}, "nothing to detect"),
        ("complex.tif", np.zeros((20, 8, 9), np.complex64), {}, "pixel type"),
    ],
)
def test_bad_movies(tmp_path, capsys, name, data, kwargs, expected):
    path = tmp_path / name
    tifffile.imwrite(path, data, **kwargs)
    out = tmp_path / "out"
    _fails(["detect", str(path), "--out", str(out), "--pixel-size", "0.2", "--frame-interval", "6.8",
            "--device", "cpu"], capsys, name, expected)
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_tiff_missing_file_missing_model_and_units(tmp_path, capsys, movie_file):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    _fails(["detect", str(bad), "--out", str(tmp_path / "o")], capsys, "bad.tif")
    _fails(["detect", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "o")], capsys, "nope.tif")
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--model", "no-such-model"], capsys,
           "no-such-model", "casparks models")
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, np.ones((20, 8, 9), np.uint16))
    _fails(["detect", str(bare), "--out", str(tmp_path / "o")], capsys, "--pixel-size", "--frame-interval")
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--threshold", "2"], capsys, "--threshold")
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--device", "cuda"] if not torch.cuda.is_available()
           else ["detect", str(movie_file), "--out", str(tmp_path / "o"), "--device", "tpu"], capsys, "device")
    assert not (tmp_path / "o").exists()


def test_a_config_or_the_folder_of_runs_given_as_the_model_is_named_as_such(tmp_path, capsys, movie_file):
    """A config passed as --model showed PyTorch's unpickling lecture and 'a crash may have cut
    the last one'; the folder of runs said 'the run has no checkpoint; train it first'."""
    config = tmp_path / "ft.yaml"
    config.write_text("run:\n  run_name: ft\n")
    err = _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--model", str(config)], capsys,
                 "ft.yaml: is not a checkpoint file (it is a text file: a config?)", "casparks models")
    assert "weights_only" not in err and "crash" not in err
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--model", str(empty)], capsys,
           "empty.ckpt: is not a checkpoint file (it is empty)")
    run = tmp_path / "runs" / "mine" / "checkpoints"
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(resolve_model(DEFAULT_MODEL).checkpoint.read_bytes())
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "runs")], capsys,
           "is a folder of runs (mine), not a run", str(tmp_path / "runs" / "mine"))
    assert not (tmp_path / "o").exists()


def test_a_bad_post_processing_value_in_a_model_card_names_the_card(tmp_path, capsys, movie_file):
    info = resolve_model(DEFAULT_MODEL)
    model = tmp_path / "mine.ckpt"
    model.write_bytes(info.checkpoint.read_bytes())
    card = dict(info.card, postprocess={**info.card["postprocess"], "spark_split_on": "pixels"})
    model.with_suffix(".yaml").write_text(json.dumps(card))  # JSON is YAML
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--model", str(model)], capsys,
           "mine.yaml", "spark_split_on must be one of movie, probability", "e.g. spark_split_on: probability")
    assert not (tmp_path / "o").exists()


def test_each_movie_is_reported_as_it_is_written_and_an_interruption_says_which(tmp_path, capsys, movie_file,
                                                                                monkeypatch):
    """The lines were printed after the last movie: a run stopped with Ctrl-C said only
    'interrupted', although some movies' results were complete. A rerun with --overwrite warns
    that the folder's report shows the earlier results."""
    import shutil

    second = tmp_path / "second_video.tif"
    shutil.copy(movie_file, second)
    original = Detector.begin

    def stop_at_the_second(self, movie, *args, **kwargs):
        if movie.name == "second_video":
            raise KeyboardInterrupt
        return original(self, movie, *args, **kwargs)

    monkeypatch.setattr(Detector, "begin", stop_at_the_second)
    out = tmp_path / "out"
    settings = ["--window", "64", "--no-pipeline"]
    assert main(["detect", str(movie_file), str(second), "--out", str(out), *settings]) == 130
    captured = capsys.readouterr()
    assert captured.out.startswith("cell_video: ") and "second_video" not in captured.out
    assert f"interrupted: the results of cell_video are complete in {out}" in captured.err
    # with the pipeline the first movie is still being written by the second thread when the
    # network is stopped on the second: it is finished, and named (it was not)
    piped = tmp_path / "piped"
    assert main(["detect", str(movie_file), str(second), "--out", str(piped), "--window", "64"]) == 130
    captured = capsys.readouterr()
    assert captured.out.startswith("cell_video: ")
    assert f"interrupted: the results of cell_video are complete in {piped}" in captured.err
    assert "with --skip-existing detects the rest" in captured.err
    # after --overwrite the movies not redone hold the results being replaced: the advice is to redo all
    assert main(["detect", str(movie_file), str(second), "--out", str(piped), "--window", "64", "--overwrite"]) == 130
    assert "the same command redoes every movie" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"cell_video{suffix}" for suffix in ("_class_label.tif", "_event_label.tif", "_events.csv", "_detection.json"))
    monkeypatch.setattr(Detector, "begin", original)
    (out / "report.html").write_text("an earlier report")
    assert main(["detect", str(movie_file), "--out", str(out), "--overwrite", *settings]) == 0
    assert "report.html shows the detection these results replaced" in capsys.readouterr().err


def test_a_typo_in_set_is_the_users_not_the_model_cards(tmp_path, capsys, movie_file):
    """It was blamed on the bundled card's file in site-packages, without a suggestion."""
    err = _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--set", "spark_min_distanse_um=1"],
                 capsys, "--set", "spark_min_distanse_um", "did you mean spark_min_distance_um?")
    assert ".yaml" not in err
    assert not (tmp_path / "o").exists()


def test_a_bad_value_in_set_is_the_users_not_the_model_cards(tmp_path, capsys, movie_file):
    """A valid key with a bad value was blamed on the bundled card's file, as typos were."""
    err = _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), "--set", "event_threshold=1.5"],
                 capsys, "--set", "event_threshold")
    assert ".yaml" not in err
    with pytest.raises(casparks.CasparksError, match=r"DetectSettings.postprocess\): event_threshold") as caught:
        load_detector(DEFAULT_MODEL, "cpu", DetectSettings(postprocess={"event_threshold": 1.5}))
    assert caught.value.path is None


def test_set_none_turns_an_option_of_the_card_off(tmp_path, movie_file):
    """calibrate's --grid writes 'none' for an option off; detect's --set read it as the word
    'none' and refused it ('must be a number ... (or null)')."""
    out = tmp_path / "o"
    assert main(["detect", str(movie_file), "--out", str(out), "--window", "64", "--set", "spark_rescue_threshold=none",
                 "--set", "puff_threshold=None", "--set", "wave_split_gap_ms=null"]) == 0
    recorded = read_summary(next(out.glob("*_detection.json")))["settings"]["postprocess"]
    assert recorded["spark_rescue_threshold"] is None and recorded["puff_threshold"] is None
    assert recorded["wave_split_gap_ms"] is None and recorded["spark_threshold"] == 0.9  # the card's, untouched


@pytest.mark.parametrize("kwargs, expected", [
    ({"window_frames": "256"}, r"window_frames \(--window\) must be a whole number of at least 8"),
    ({"window_frames": 100.5}, r"window_frames \(--window\) must be a whole number"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"tile_yx": 128}, r"tile_yx \(--tile\) must be two sizes"),
    ({"overlap": "0.2"}, r"overlap \(--overlap\) must be a fraction"),
    ({"measure": {"offset_adu": float("inf")}}, r"offset_adu must be a number or 'auto', got inf"),
    ({"segment_margin_ms": None}, "segment_margin_ms must be a non-negative number"),
    ({"resample": "no"}, "resample must be True or False"),
    ({"postprocess": 5}, "postprocess must be a mapping"),
    ({"measure": 0}, "measure must be a MeasureConfig or a mapping"),
])
def test_settings_of_the_wrong_type_are_one_clear_error(kwargs, expected):
    """They were AttributeErrors and TypeErrors from inside detection, one of them after the
    network had run; 100.5 frames was quietly truncated."""
    with pytest.raises(casparks.CasparksError, match=expected):
        DetectSettings(**kwargs)


def test_numpy_values_and_whole_floats_are_settings_as_before():
    """The type checks first refused what had worked: a NumPy tile size, 0-d arrays, 64.0 frames."""
    settings = DetectSettings(tile_yx=np.array([128, 512]), window_frames=np.array(64), overlap=np.float32(0.25),
                              segment_frames=2000.0, postprocess=[("event_threshold", 0.8)], resample=np.bool_(True))
    assert settings.tile_yx == (128, 512) and settings.window_frames == 64 and type(settings.window_frames) is int
    assert settings.segment_frames == 2000 and settings.postprocess == {"event_threshold": 0.8}
    assert settings.overlap == pytest.approx(0.25) and settings.resample is True


def test_measure_settings_may_be_a_plain_mapping():
    assert DetectSettings(measure={"offset_adu": 0}).measure == MeasureConfig(offset_adu=0)


def test_settings_and_device_are_not_ignored_beside_a_loaded_detector(sim, detector):
    """They were dropped without a word: the detection ran with the Detector's own settings."""
    with pytest.raises(casparks.CasparksError, match="fixed when a Detector is loaded"):
        detect(sim.movie, detector, settings=DetectSettings(postprocess={"event_threshold": 0.5}))
    with pytest.raises(casparks.CasparksError, match="fixed when a Detector is loaded"):
        detect(sim.movie, detector, device="cpu")


def test_a_detector_detects_paths_and_arrays_as_detect_does(sim, detector, movie_file):
    """Detector.detect took only a Movie: a path failed with "'str' object has no attribute 'source'"."""
    whole = detector.detect(sim.movie)
    from_path = detector.detect(str(movie_file))
    from_array = detector.detect(sim.movie.data, pixel_size_um=sim.movie.pixel_size_um,
                                 frame_interval_ms=sim.movie.frame_interval_ms)
    for other in (from_path, from_array):
        assert np.array_equal(other.event_label, whole.event_label)
        pd.testing.assert_frame_equal(other.events, whole.events)


def test_channel_of_an_array(sim, detector):
    """A T×C×Y×X array with channel= was refused as not T×Y×X, without a fix; channel= on a
    one-channel Movie was ignored."""
    data = sim.movie.data
    units = {"pixel_size_um": sim.movie.pixel_size_um, "frame_interval_ms": sim.movie.frame_interval_ms}
    stack = np.stack([np.zeros_like(data), data], axis=1)  # T×C×Y×X
    picked = detect(stack, detector, channel=1, **units)
    assert np.array_equal(picked.event_label, detect(data, detector, **units).event_label)
    with pytest.raises(casparks.CasparksError, match="pass channel= to pick the calcium channel"):
        detect(stack, detector, **units)
    with pytest.raises(casparks.CasparksError, match="channel=2 does not exist"):
        detect(stack, detector, channel=2, **units)
    with pytest.raises(casparks.CasparksError, match="holds one channel"):
        detect(sim.movie, detector, channel=0)
    with pytest.raises(casparks.CasparksError, match="must be a positive number"):
        detect(sim.movie, detector, pixel_size_um=0)
    for bad in (True, 1.5, -1):
        with pytest.raises(casparks.CasparksError, match="channel must be a channel number"):
            detect(stack, detector, channel=bad, **units)
    as_numpy = detect(stack, detector, channel=np.int64(1), pixel_size_um=np.array(units["pixel_size_um"]),
                      frame_interval_ms=str(units["frame_interval_ms"]))
    assert np.array_equal(as_numpy.event_label, picked.event_label)


def test_a_folder_without_movies_is_named(tmp_path, capsys, movie_file):
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "01_video_class_label.tif", np.zeros((8, 9, 9), np.uint8))
    _fails(["detect", str(tmp_path / "labels"), "--out", str(tmp_path / "o")], capsys, "labels: holds no movies")


def test_one_bad_movie_among_good_ones_stops_before_any_output(tmp_path, capsys, movie_file):
    bad = tmp_path / "zz_flat.tif"
    tifffile.imwrite(bad, np.zeros((8, 9), np.uint16))
    out = tmp_path / "out"
    _fails(["detect", str(movie_file), str(bad), "--out", str(out)], capsys, "zz_flat.tif")
    assert not out.exists()


def test_every_bad_movie_of_a_folder_is_named_at_once(tmp_path, capsys, movie_file):
    """Ten movies with two bad ones: both problems in one run, one line each, nothing written."""
    tifffile.imwrite(tmp_path / "a_flat.tif", np.zeros((8, 9), np.uint16))
    tifffile.imwrite(tmp_path / "b_bare.tif", np.ones((20, 8, 9), np.uint16))
    out = tmp_path / "out"
    code = main(["detect", str(movie_file), str(tmp_path / "a_flat.tif"), str(tmp_path / "b_bare.tif"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "2 of 3 movies cannot be detected" in err
    assert any("a_flat.tif" in line and "2-D image" in line for line in err.splitlines())
    assert any("b_bare.tif" in line and "--pixel-size" in line for line in err.splitlines())
    # what to do stands on a line of its own, not glued to the last movie's
    assert err.strip().splitlines()[-1] == "Fix or leave out these files; nothing was written"
    assert not out.exists()


@pytest.mark.parametrize("flags, expected", [(["--pixel-size", "200"], "pixel size of 200 µm is 1e+03 times"),
                                             (["--frame-interval", "0.0068"], "frame interval of 0.0068 ms is 0.001 times")])
def test_units_a_thousand_times_off_are_refused_not_resampled(tmp_path, capsys, movie_file, flags, expected):
    """nm typed as µm once ran out of memory with a traceback (59.6 TiB); s typed as ms found nothing, quietly."""
    _fails(["detect", str(movie_file), "--out", str(tmp_path / "o"), *flags], capsys, "cell_video.tif", expected,
           "units are most likely wrong")
    assert not (tmp_path / "o").exists()


def test_messages_name_what_the_user_gave_and_what_is_missing(tmp_path, movie_file, detector, caplog):
    """An explicit pixel size of 1 µm was hinted to be a missing calibration; a list or a pattern
    given to detect was 'an array without units' or 'file not found'; a file without only its
    frame interval was told to pass pixel_size_um= too."""
    with caplog.at_level("WARNING", logger="casparks"):
        check_sampling(read_movie(movie_file, pixel_size_um=1.0), detector.info)
    assert "its pixel size of 1 µm" in caplog.text and "without a calibration" not in caplog.text
    for given in ([str(movie_file)], str(movie_file.parent / "*.tif")):
        with pytest.raises(casparks.CasparksError, match="detect_files"):
            detect(given, detector)
    path = tmp_path / "no_interval.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 8), np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"unit": "um", "axes": "TYX"})
    with pytest.raises(casparks.CasparksError) as error:
        read_movie(path)
    assert "--frame-interval ms (Python: frame_interval_ms=)" in str(error.value) and "pixel" not in str(error.value)


def test_a_sampling_outside_the_trained_range_is_detected_with_a_warning(sim, detector, caplog):
    movie = Movie(sim.movie.data, 0.6, sim.movie.frame_interval_ms, name="coarse")
    with caplog.at_level("WARNING", logger="casparks"):
        detector.detect(movie)
    assert any("coarse" in r.message and "0.6 µm" in r.message and "0.1-0.3 µm" in r.message for r in caplog.records)
    assert "without a calibration" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        check_sampling(Movie(sim.movie.data, 1.0, sim.movie.frame_interval_ms, name="bare"), detector.info)
    assert "bare: its pixel size of 1 µm" in caplog.text and "what a file without a calibration reports" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        detector.detect(sim.movie)
    assert not any("trained on" in r.message for r in caplog.records)


def test_a_file_named_like_a_pattern_is_a_file(tmp_path, movie_file):
    """Fiji names stacks 'Stack [1].tif': an existing file is taken as it is, not as a glob."""
    named = tmp_path / "Stack [1].tif"
    named.write_bytes(movie_file.read_bytes())
    assert expand_inputs([str(named)]) == [named.resolve()]


def test_a_linked_movie_is_named_as_linked(tmp_path, movie_file):
    """Links named cellA.tif and cellB.tif to day1/01_video.tif and day2/01_video.tif: the folder
    of links was refused ("several movies are named '01_video' (…/day1/01_video.tif, …)",
    files the user never gave), and one link's results were named after its target."""
    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
        (tmp_path / day / "01_video.tif").write_bytes(movie_file.read_bytes())
    links = tmp_path / "links"
    links.mkdir()
    (links / "cellA.tif").symlink_to(tmp_path / "day1" / "01_video.tif")
    (links / "cellB.tif").symlink_to(tmp_path / "day2" / "01_video.tif")
    assert [p.name for p in expand_inputs(links)] == ["cellA.tif", "cellB.tif"]
    # a link and its target given together are one movie, detected once, under the name given first
    assert expand_inputs([links / "cellA.tif", tmp_path / "day1" / "01_video.tif"]) == [links / "cellA.tif"]


def test_the_channel_of_a_two_channel_movie_is_recorded_and_reported(tmp_path, sim, capsys):
    two = np.stack([np.full_like(sim.movie.data, 50), sim.movie.data], axis=1)  # TCYX, calcium in channel 1
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, two, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "TCYX", "unit": "um", "finterval": sim.movie.frame_interval_ms / 1000})
    out = tmp_path / "out"
    summary = detect_files([path], out, device="cpu", channel=1, settings=DetectSettings(window_frames=64),
                           progress=False)[0]
    assert summary["channel"] == 1 and read_detection(out / "two_detection.json").channel == 1
    assert main(["report", str(out), "--no-video"]) == 0  # no --channel needed: the recorded one
    capsys.readouterr()
    _fails(["report", str(out), "--channel", "0", "--overwrite", "--no-video"], capsys,
           "made on channel 1, not 0")


def test_channel_in_a_folder_of_one_and_two_channel_stacks(tmp_path, sim, movie_file, capsys, caplog):
    """--channel 1 failed on every single-channel movie of the folder, and without it the two-
    channel stack failed: no one command detected the folder. Now --channel picks the channel of
    the multi-channel stacks and the others are read as they are (and named)."""
    import shutil

    folder = tmp_path / "lab"
    folder.mkdir()
    two = np.stack([np.full_like(sim.movie.data, 50), sim.movie.data], axis=1)  # TCYX, calcium in channel 1
    tifffile.imwrite(folder / "two.tif", two, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "TCYX", "unit": "um", "finterval": sim.movie.frame_interval_ms / 1000})
    shutil.copy(movie_file, folder / "one.tif")
    with caplog.at_level("WARNING", logger="casparks"):
        summaries = detect_files([folder], tmp_path / "out", device="cpu", channel=1,
                                 settings=DetectSettings(window_frames=64), progress=False)
    assert {s["name"]: s.get("channel") for s in summaries} == {"one": None, "two": 1}
    assert "--channel 1 applies to the multi-channel stacks; 1 movie(s) of one channel are read as they are: one.tif" \
        in caplog.text
    one, two_ = (pd.read_csv(tmp_path / "out" / f"{n}_events.csv") for n in ("one", "two"))
    pd.testing.assert_frame_equal(one, two_)  # the same recording either way
    capsys.readouterr()  # (a console handler an earlier test's command left may have written there)
    # a channel where no movie has several is still a mistake, as for one file
    only_one = tmp_path / "single"
    only_one.mkdir()
    shutil.copy(movie_file, only_one / "a.tif")
    shutil.copy(movie_file, only_one / "b.tif")
    _fails(["detect", str(only_one), "--out", str(tmp_path / "o2"), "--channel", "1"], capsys,
           "none of the 2 movies has several channels", "leave out --channel")
    _fails(["detect", str(only_one / "a.tif"), "--out", str(tmp_path / "o3"), "--channel", "1"], capsys,
           "has one channel; channel 1 does not exist")


def test_a_folder_with_a_zeiss_lsm_movie_detects_it_as_its_tiff(tmp_path):
    """A Zeiss LSM file is a movie: a folder run finds it, reads its units from the file, and the
    events are those of the same frames as a TIFF; the report finds the movie from its summary."""
    from zeiss_lsm import write_lsm

    movie = simulate_movie(load_simulation_config("dense", SMALL), seed=[0, 1]).movie  # with events
    folder = tmp_path / "zeiss"
    folder.mkdir()
    write_lsm(folder / "cell.lsm", np.asarray(movie.data),
              voxel_size_m=(movie.pixel_size_um * 1e-6,) * 2, time_interval_s=movie.frame_interval_ms / 1e3)
    write_movie(folder / "same.tif", movie)
    summaries = detect_files([folder], tmp_path / "out", device="cpu", settings=DetectSettings(window_frames=64),
                             progress=False)
    assert sorted(s["name"] for s in summaries) == ["cell", "same"]
    lsm, tiff = (pd.read_csv(tmp_path / "out" / f"{name}_events.csv") for name in ("cell", "same"))
    assert len(lsm) > 0
    pd.testing.assert_frame_equal(lsm, tiff)
    assert main(["report", str(tmp_path / "out"), "--no-video"]) == 0


@pytest.mark.parametrize("shape, what", [((60, 1, 96), "has 1 row;"), ((2, 32, 96), "has 2 frames;")])
def test_a_line_scan_or_a_two_frame_stack_is_refused(tmp_path, capsys, shape, what):
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.random.default_rng(0).poisson(50, shape).astype(np.uint16))
    _fails(["detect", str(path), "--out", str(tmp_path / "o"), "--pixel-size", "0.2", "--frame-interval", "6.8"],
           capsys, "tiny.tif", what, "line scans are not supported")


def test_an_interrupted_folder_run_continues_with_skip_existing(tmp_path, capsys, movie_file):
    """A folder run stopped at movie 150 of 200 could only be redone whole (--overwrite). With
    --skip-existing the complete movies are kept as they are, the files an interruption left are
    replaced, and results of another model or other settings are refused, not mixed."""
    import shutil

    folder = tmp_path / "movies"
    folder.mkdir()
    for name in ("a_video", "b_video"):
        shutil.copy(movie_file, folder / f"{name}.tif")
    out = tmp_path / "out"
    first = DetectSettings(window_frames=64, precision="32")
    detect_files([folder / "a_video.tif"], out, settings=first, device="cpu", progress=False)
    done = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    left = output_paths(out, "b_video")["class_label"]  # what an interruption left of the second movie
    left.write_bytes(b"half of a run")

    with pytest.raises(casparks.CasparksError, match="exist already") as refused:
        detect_files([folder], out, settings=first, device="cpu", progress=False)
    assert "--skip-existing" in refused.value.fix
    other = DetectSettings(window_frames=64, postprocess={"spark_min_distance_um": 3.0})
    with pytest.raises(casparks.CasparksError, match=r"a_video there were detected otherwise \(postprocess"
                                                     r"\.spark_min_distance_um: .* → 3\.0\)"):
        detect_files([folder], out, settings=other, device="cpu", progress=False, skip_existing=True)
    with pytest.raises(casparks.CasparksError, match="contradict"):
        detect_files([folder], out, settings=first, device="cpu", progress=False, skip_existing=True, overwrite=True)
    assert left.read_bytes() == b"half of a run" and {p.name: p.stat().st_mtime_ns for p in out.iterdir()
                                                      if p.name.startswith("a_")} == done

    # the device and the precision are how a run went, not what it found: a run continued elsewhere goes on
    results = detect_files([folder], out, settings=DetectSettings(window_frames=64), device="cpu", progress=False,
                           skip_existing=True)
    assert [(r["name"], r.get("skipped", False)) for r in results] == [("a_video", True), ("b_video", False)]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith("a_")} == done
    assert results[0]["outputs"]["events"] == str(output_paths(out, "a_video")["events"])
    assert read_stack(left).dtype == np.uint8 and read_summary(output_paths(out, "b_video")["summary"])
    assert results[1]["counts"] == results[0]["counts"]  # the same movie, detected again

    (out / "report.html").write_text("a report of a_video alone")
    assert main(["detect", str(folder), "--out", str(out), "--window", "64", "--skip-existing"]) == 0
    assert "report.html" not in capsys.readouterr().err  # nothing new was detected: the report still holds
    for path in output_paths(out, "b_video").values():
        path.unlink()
    assert main(["detect", str(folder), "--out", str(out), "--window", "64", "--skip-existing"]) == 0
    assert "report.html shows the folder without the movies just detected" in capsys.readouterr().err
    (out / "report.html").unlink()
    assert main(["detect", str(folder), "--out", str(out), "--window", "64", "--skip-existing"]) == 0
    printed = capsys.readouterr().out
    assert "a_video: " in printed and printed.count("(done before, skipped)") == 2
    # another model is named once; another movie of the same name (a second group's a_video.tif) is refused
    assert main(["detect", str(folder), "--out", str(out), "--window", "64", "--skip-existing",
                 "--model", "sim-v2"]) == 2
    assert capsys.readouterr().err.count("model: ") == 1
    # results written before frequencies were per the cell are not mixed with new ones
    summary_path = output_paths(out, "a_video")["summary"]
    recorded = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({k: v for k, v in recorded.items() if k != "frequency_per"}))
    with pytest.raises(casparks.CasparksError, match=r"frequency_per: 'field' → 'cell'"):
        detect_files([folder], out, settings=first, device="cpu", progress=False, skip_existing=True)
    # results written before an option was added ran as the value that keeps the old behaviour:
    # they continue where that is today's value (the rescue's reach), and are refused where it
    # is not (the card's rescue at 0.8: off before) or where the option's absence says nothing
    # (the dark level's default went from 0 to auto after it was added)
    older = json.loads(json.dumps(recorded))
    for key in ("spark_rescue_distance_um", "spark_rescue_max_duration_ms"):
        del older["settings"]["postprocess"][key]
    del older["settings"]["average_fine_sampling"]  # session 35; this movie lies in the trained range
    summary_path.write_text(json.dumps(older))
    assert [r.get("skipped", False) for r in detect_files([folder], out, settings=first, device="cpu",
                                                          progress=False, skip_existing=True)] == [True, True]
    # before "auto" tiles (session 34) the default was 128 × 512 px, which ran these small frames whole alike
    assert recorded["settings"]["tile_yx"] == "auto"
    older["settings"]["tile_yx"] = [128, 512]
    summary_path.write_text(json.dumps(older))
    assert [r.get("skipped", False) for r in detect_files([folder], out, settings=first, device="cpu",
                                                          progress=False, skip_existing=True)] == [True, True]
    for section, key, message in (("postprocess", "spark_rescue_threshold", r"spark_rescue_threshold: None → 0\.8"),
                                  ("measure", "offset_adu", r"measure\.offset_adu: None → 'auto'")):
        changed = json.loads(json.dumps(older))
        del changed["settings"][section][key]
        summary_path.write_text(json.dumps(changed))
        with pytest.raises(casparks.CasparksError, match=rf"detected otherwise \(.*{message}"):
            detect_files([folder], out, settings=first, device="cpu", progress=False, skip_existing=True)
    summary_path.write_text(json.dumps(recorded))
    # results come back in the order of the movies given, the skipped ones where they stand
    for path in output_paths(out, "a_video").values():
        path.unlink()
    results = detect_files([folder], out, settings=first, device="cpu", progress=False, skip_existing=True)
    assert [(r["name"], r.get("skipped", False)) for r in results] == [("a_video", False), ("b_video", True)]
    other_group = tmp_path / "group-b"
    other_group.mkdir()
    shutil.copy(movie_file, other_group / "a_video.tif")
    with pytest.raises(casparks.CasparksError, match=r"a_video there were detected otherwise \(movie: .*movies/a_video"
                                                     r"\.tif' → .*group-b/a_video\.tif'\)"):
        detect_files([other_group], out, settings=first, device="cpu", progress=False, skip_existing=True)
    # another movie copied over the one detected: its results are not kept as done
    replaced = read_stack(folder / "a_video.tif")[::-1].copy()
    write_stack(folder / "a_video.tif", replaced, *read_units(movie_file), overwrite=True)
    with pytest.raises(casparks.CasparksError, match=r"a_video there were detected otherwise \(the movie's pixels"):
        detect_files([folder], out, settings=first, device="cpu", progress=False, skip_existing=True)


def test_a_movies_files_appear_together_or_not_at_all(sim, detector, tmp_path, monkeypatch):
    """Written one after the other, a Ctrl-C between two files left labels without a summary,
    which readers skip without a word. Now nothing is in place until every file is written."""
    import casparks.io

    found = detect(sim.movie, detector)
    real = casparks.io.write_json

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(casparks.io, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_detection(found, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # no label, table, summary or hidden file left
    monkeypatch.setattr(casparks.io, "write_json", real)
    paths = write_detection(found, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
    with pytest.raises(casparks.CasparksError, match="exists already"):
        write_detection(found, tmp_path / "out")


@pytest.mark.parametrize("error", [
    OSError("1638400 requested and 735040 written"),  # tifffile's full disk: no errno, no file
    OSError(28, "No space left on device"),
])
def test_a_full_disk_names_the_result_that_could_not_be_written(detector, sim, tmp_path, monkeypatch, error):
    """The message said "1638400 requested and 735040 written; check the free space", naming no
    file; written under a hidden name, a file named in the error was that hidden name."""
    import casparks.io

    found = detect(sim.movie, detector)

    def full(path, *args, **kwargs):
        open(path, "wb").write(b"II*")  # a part of the file, then the disk is full
        raise error

    monkeypatch.setattr(casparks.io.tifffile, "imwrite", full)
    with pytest.raises(OSError) as raised:
        write_detection(found, tmp_path / "out")
    assert raised.value.filename == str(tmp_path / "out" / f"{found.name}_class_label.tif")
    # tifffile's short write says what it is: no space left (with its numbers)
    assert raised.value.strerror == (error.strerror or f"No space left on device ({error})")
    assert list((tmp_path / "out").iterdir()) == []


def test_frequencies_are_per_the_cell_found_in_the_movie(detector, tmp_path):
    """The summary's frequencies divided by the field's width and area; a cell that covers 69 %
    of the field now gets its own area (the simulator's, within 1 %), and the report says so."""
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 80, "height_px": 64, "width_px": 128}),
                         seed=[2, 1])
    found = detector.detect(sim.movie)
    rows = found.frequency.set_index("class")
    truth_area = sim.cell_mask.sum() * 0.2**2
    assert rows.loc["spark", "area_um2"] == pytest.approx(truth_area, rel=0.01)
    assert truth_area < 0.7 * 64 * 128 * 0.2**2
    assert rows.loc["spark", "length_um"] == pytest.approx(128 * 0.2)
    n = rows.loc["spark", "count"]
    assert rows.loc["spark", "per_1000um2_per_s"] == pytest.approx(n / (truth_area / 1000) / (80 * 6.8 / 1000), rel=0.01)
    write_detection(found, tmp_path)
    back = read_detection(tmp_path / f"{found.name}_detection.json")
    pd.testing.assert_frame_equal(back.frequency, found.frequency, check_dtype=False)
    assert found.events.empty  # its dark level, read from all of it for the cell, is recorded (it was left out)
    from casparks.darklevel import estimate_dark_level

    assert found.dark_level["adu"] == estimate_dark_level(sim.movie.data).to_dict()["adu"]
    # a movie with events: the dark level its measurements read; or the one given
    dense = simulate_movie(load_simulation_config("dense", {"n_frames": 80, "height_px": 64, "width_px": 128}),
                           seed=[2, 1])
    for settings in (None, DetectSettings(window_frames=64, measure={"offset_adu": dense.offset_adu})):
        found = detect(dense.movie, detector) if settings is None else detect(dense.movie, settings=settings,
                                                                               device="cpu")
        assert len(found.events) and found.frequency["area_um2"].iloc[0] == pytest.approx(truth_area, rel=0.01)


def test_a_cell_lying_along_y_is_told_its_per_100um_frequency_uses_x(detector, caplog):
    """The same movie turned by 90°: events per 100 µm per s 4× higher (its extent along x is
    the cell's width), without a word; per 1000 µm² per s unchanged."""
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 80, "height_px": 64, "width_px": 128}),
                         seed=[2, 1])
    turned = Movie(np.ascontiguousarray(np.swapaxes(sim.movie.data, 1, 2)), 0.2, 6.8, name="turned")
    with caplog.at_level("WARNING", logger="casparks"):
        found = detector.detect(turned)
    assert "turned: the cell found spans more of y" in caplog.text and "rotate the movie" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        detector.detect(sim.movie)
    assert "spans more of y" not in caplog.text
    assert found.frequency["length_um"].iloc[0] < 0.6 * 128 * 0.2


def test_frequencies_fall_back_to_the_field_when_the_events_lie_outside_the_cell_found(detector, monkeypatch, caplog):
    """A cell mask that holds none of the events is not the cell (debris or a brighter neighbour
    taken for it): the frequencies are per the field, with a warning, not per a few µm²."""
    import casparks.measure

    dense = simulate_movie(load_simulation_config("dense", {"n_frames": 80, "height_px": 64, "width_px": 128}),
                           seed=[2, 1])
    speck = np.zeros((64, 128), dtype=bool)
    speck[:4, :4] = True
    monkeypatch.setattr(casparks.measure, "cell_mask", lambda resting, px: speck)
    found = detector.detect(dense.movie)
    assert len(found.events) and found.frequency["area_um2"].iloc[0] == pytest.approx(64 * 128 * 0.2**2)
    assert "peak outside the cell found in the resting image" in caplog.text


def test_a_minority_of_events_outside_the_cell_found_is_named(detector, monkeypatch, caplog):
    """A second, dimmer cell in the field is not found (measure.md: known limits), and its events
    count against the first cell's area; where a fifth of the events or more peak outside the
    cell found, a warning says so. The frequencies stay per the cell found."""
    import casparks.measure

    dense = simulate_movie(load_simulation_config("dense", {"n_frames": 100, "height_px": 64, "width_px": 128}),
                           seed=[2, 1])
    everything = detector.detect(dense.movie).events
    columns = np.sort((everything["peak_x_um"] / 0.2).astype(int).to_numpy())
    assert len(columns) >= 6
    start = (columns[2] + columns[3]) // 2 + 1  # the three leftmost events peak in "another cell"
    cell = np.zeros((64, 128), dtype=bool)
    cell[:, start:] = True
    monkeypatch.setattr(casparks.measure, "cell_mask", lambda resting, px: cell)
    found = detector.detect(dense.movie)
    assert found.frequency["area_um2"].iloc[0] == pytest.approx(64 * (128 - start) * 0.2**2)
    assert f"3 of {len(everything)} events peak outside the cell found" in caplog.text
    assert "count them against the cell found" in caplog.text
    caplog.clear()
    cell[:, :] = True  # none outside: no warning
    detector.detect(dense.movie)
    assert "peak outside" not in caplog.text


def test_nan_and_constant_movies_of_a_folder_are_named_before_any_result_is_written(tmp_path, capsys, movie_file):
    """They were found by the network's step, one per run, after the good movies' results were written."""
    nan = read_movie(movie_file).data.astype(np.float32)
    nan[3, 2, 1] = np.nan
    write_movie(tmp_path / "b_nan.tif", Movie(nan, 0.2, 6.8))
    write_movie(tmp_path / "c_flat.tif", Movie(np.full((20, 16, 32), 7, np.uint16), 0.2, 6.8))
    out = tmp_path / "out"
    code = main(["detect", str(movie_file), str(tmp_path / "b_nan.tif"), str(tmp_path / "c_flat.tif"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "2 of 3 movies cannot be detected" in err
    assert any("b_nan.tif" in line and "1 voxel(s) are NaN" in line for line in err.splitlines())
    assert any("c_flat.tif" in line and "every voxel has the value 7" in line for line in err.splitlines())
    assert not out.exists()


def test_a_stop_while_the_last_movie_is_written_names_it_complete(tmp_path, capsys, movie_file, monkeypatch):
    """Ctrl-C while the main thread waited for the second thread's write said 'no movie was finished'."""
    import _thread
    import time

    import casparks.detection as detection

    original = detection.write_detection

    def interrupted_while_writing(*args, **kwargs):
        _thread.interrupt_main()  # Ctrl-C reaches the main thread, which waits for this write
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(detection, "write_detection", interrupted_while_writing)
    out = tmp_path / "out"
    assert main(["detect", str(movie_file), "--out", str(out), "--window", "64"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: the results of cell_video are complete in {out}" in err
    assert (out / "cell_video_detection.json").is_file()


@pytest.mark.slow
def test_a_sigterm_is_handled_as_ctrl_c_without_hidden_files_left(tmp_path, movie_file):
    """A scheduler's SIGTERM ended the process at once: hidden .staged files stayed, and nothing was said."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "casparks", "detect", str(movie_file), "--out", str(out),
                            "--window", "64", "--save-probabilities"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(p.name.startswith(".") for p in out.iterdir()):
            run.send_signal(signal.SIGTERM)
            break
        time.sleep(0.002)
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "interrupted:" in err and "nothing half-written is left" in err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    complete = (out / "cell_video_detection.json").is_file()
    assert ("the results of cell_video are complete" in err) == complete
    assert sorted(os.listdir(out)) in ([], sorted(f"cell_video{s}" for s in (
        "_class_label.tif", "_event_label.tif", "_events.csv", "_detection.json", "_probabilities.tif")))


def test_overwrite_without_probabilities_removes_the_earlier_runs(tmp_path, movie_file, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(movie_file), "--out", str(out), "--window", "64", "--save-probabilities"]) == 0
    assert (out / "cell_video_probabilities.tif").is_file()
    assert main(["detect", str(movie_file), "--out", str(out), "--window", "64", "--overwrite"]) == 0
    assert not (out / "cell_video_probabilities.tif").exists()  # it was the first run's, beside the second's labels


@pytest.mark.parametrize("dtype", [bool, np.complex64, object])
def test_an_array_of_a_pixel_type_a_tiff_may_not_have_is_refused_in_one_line(sim, detector, dtype):
    """bool was detected; complex and object raised NumPy's casting errors."""
    data = sim.movie.data.astype(dtype)
    with pytest.raises(casparks.CasparksError, match=f"pixel type {np.dtype(dtype)}, not an integer or float"):
        detector.detect(data, pixel_size_um=0.2, frame_interval_ms=6.8)


def test_a_dark_level_at_the_resting_signal_is_refused_before_the_network(tmp_path, capsys, movie_file):
    """--offset 1000 on a movie resting at 400-600 ADU wrote amplitudes of 5e7 ΔF/F0, without a word."""
    data = read_movie(movie_file).data
    resting = np.median(data, axis=0)  # each pixel's resting level: noise and events left out
    out = tmp_path / "out"
    # above most pixels' resting level, below the raw voxels' 90th percentile (which let it pass)
    offset = float(np.percentile(resting, 95))
    assert offset < float(np.percentile(data, 90))
    assert main(["detect", str(movie_file), "--out", str(out), "--offset", f"{offset:.1f}"]) == 2
    err = capsys.readouterr().err
    assert "cell_video.tif: the dark level given" in err and "at or above the movie's resting signal" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_detection_edited_to_codes_the_format_lacks_is_not_written(sim, detector, tmp_path):
    """A Detection's class label edited to 9 was written as it was (the arrays of a frozen
    Detection are not copied)."""
    found = detector.detect(sim.movie)
    labels = np.array(found.class_label)
    labels[0, 0, 0] = 9
    with pytest.raises(casparks.CasparksError, match=r"holds class codes \[9\]"):
        write_detection(dataclasses.replace(found, class_label=labels), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    labels[0, 0, 0] = 4  # ignore, as an edited detection may carry
    write_detection(dataclasses.replace(found, class_label=labels), tmp_path / "out")
    # an event measured on ignore voxels is named "ignore": written, its table was refused on reading
    from casparks.measure import empty_table

    row = empty_table().reindex([0]).assign(id=1, **{"class": "ignore"})
    events = pd.concat([found.events, row], ignore_index=True)
    with pytest.raises(casparks.CasparksError, match="holds events of class 'ignore', none of spark, wave, puff"):
        write_detection(dataclasses.replace(found, events=events), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_dark_level_below_zero_is_taken_for_a_signed_movie_only(tmp_path, capsys, movie_file, sim):
    """--offset refused -122 ADU, which auto itself read on an int16 movie with negative values
    (Fiji's signed 16 bits); a movie that is never negative still refuses it."""
    out = tmp_path / "out"
    assert main(["detect", str(movie_file), "--out", str(out), "--offset", "-5"]) == 2
    err = capsys.readouterr().err
    assert "is below 0, and the movie's values are never negative" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    shift = float(np.median(sim.movie.data)) + 50.0
    signed = (sim.movie.data.astype(np.float32) - shift).astype(np.int16)
    assert (signed < 0).any()
    settings = DetectSettings(window_frames=64, measure=MeasureConfig(offset_adu=sim.offset_adu - shift))
    shifted = casparks.detect(casparks.Movie(signed, sim.movie.pixel_size_um, sim.movie.frame_interval_ms),
                              load_detector(DEFAULT_MODEL, device="cpu", settings=settings))
    plain = casparks.detect(sim.movie, load_detector(DEFAULT_MODEL, device="cpu", settings=dataclasses.replace(
        settings, measure=MeasureConfig(offset_adu=sim.offset_adu))))
    assert shifted.counts == plain.counts
    both = shifted.events.merge(plain.events, on="id")
    assert np.allclose(both["amplitude_dff_x"], both["amplitude_dff_y"], rtol=0.02, equal_nan=True)
    # a negative dark level is still refused at or above the movie's resting signal (ΔF/F0 of 1e8 was written)
    assert np.percentile(np.median(signed, axis=0), 90) < -10
    above = DetectSettings(window_frames=64, measure=MeasureConfig(offset_adu=-1.0))
    with pytest.raises(casparks.CasparksError, match="at or above the movie's resting signal"):
        casparks.detect(casparks.Movie(signed, sim.movie.pixel_size_um, sim.movie.frame_interval_ms),
                        load_detector(DEFAULT_MODEL, device="cpu", settings=above))


def test_detect_warns_how_a_signed_movie_and_a_z_stacks_slices_are_read(tmp_path, capsys, monkeypatch, sim):
    """casparks detect read its movies quietly before its checks and never gave read_movie's
    warnings the README promises: a dark level typed as Fiji shows a signed 16-bit movie (178
    for 32946 stored) measured ΔF/F0 ~100x too low without a word, and a z-stack's slices were
    read as frames silently. Each is told once, before the network; a given unit's override once."""
    from casparks import detection

    def no_network(*args, **kwargs):  # the warnings come before it
        raise KeyboardInterrupt

    monkeypatch.setattr(detection, "Detector", no_network)
    data = sim.movie.data
    signed = tmp_path / "signed16.tif"
    tifffile.imwrite(signed, (data.astype(np.int32) + 32768).astype(np.uint16), imagej=True, resolution=(5, 5),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.0068, "cf": 0, "c0": -32768.0, "c1": 1.0,
                               "vunit": "Gray Value"})
    z_stack = tmp_path / "ij_z.tif"
    tifffile.imwrite(z_stack, data, imagej=True, resolution=(5, 5), metadata={"axes": "ZYX", "unit": "um",
                                                                              "spacing": 1.0})
    assert main(["detect", str(signed), "--out", str(tmp_path / "r"), "--offset", "178"]) == 130
    err = capsys.readouterr().err
    assert err.count("signed16.tif: a signed 16-bit movie") == 1 and "ImageJ's value + 32768" in err
    assert main(["detect", str(z_stack), "--out", str(tmp_path / "r2"), "--frame-interval", "6.8",
                 "--pixel-size", "0.25"]) == 130
    err = capsys.readouterr().err
    assert err.count("ij_z.tif: its slices (80 slices 1 µm apart) are read as frames 6.8 ms apart") == 1
    assert err.count("overrides the 0.2 µm in the file's metadata") == 1


def test_frames_taken_whole_are_timed_at_their_middle(tmp_path):
    """Every peak time counted its row's place in a raster scan; a camera's or spinning disk's
    frames are taken whole, and nothing on the command line said so (--set refused raster_scan)."""
    dense = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 32, "width_px": 128}),
                           seed=[0, 2])
    movie_file = write_movie(tmp_path / "dense.tif", dense.movie)
    runs = {}
    for name, flags in (("raster", []), ("whole", ["--no-raster-scan"])):
        out = tmp_path / name
        assert main(["detect", str(movie_file), "--out", str(out), "--window", "64", *flags]) == 0
        runs[name] = (read_summary(next(out.glob("*_detection.json")))["settings"]["measure"]["raster_scan"],
                      pd.read_csv(next(out.glob("*_events.csv"))))
    assert runs["raster"][0] is True and runs["whole"][0] is False
    raster, whole = runs["raster"][1], runs["whole"][1]
    assert len(raster) == len(whole) > 0 and raster["start_ms"].equals(whole["start_ms"])
    waves = raster["class"] == "wave"  # a wave's times are read over the field, not one row
    assert not np.allclose(raster.loc[~waves, "peak_ms"], whole.loc[~waves, "peak_ms"])


def test_windows_and_movies_shorter_than_half_the_training_chunks_are_warned_about(sim, caplog):
    """--window 16 made a wave ten waves and eleven sparks, without a word (sim-v3 trained on 128 frames)."""
    with caplog.at_level("WARNING", logger="casparks"):
        short = load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(window_frames=32))
    assert "a window of 32 frames is under half the 128-frame chunks sim-v3 was trained on" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        detector = load_detector(DEFAULT_MODEL, device="cpu", settings=DetectSettings(window_frames=64))
        detector.detect(Movie(sim.movie.data[:40], 0.2, 6.8, name="brief"))
    assert "window of" not in caplog.text
    assert "brief: 272 ms long, under half the 870 ms chunks sim-v3 was trained on" in caplog.text
    assert short.window_frames == 32


def test_an_output_folder_that_cannot_be_written_is_named_before_the_network_runs(tmp_path, capsys, movie_file,
                                                                                 monkeypatch):
    import os

    if os.geteuid() == 0:  # root writes anywhere: a read-only folder is simulated by a file in the way
        blocked = tmp_path / "file"
        blocked.write_text("")
        out = blocked / "out"
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(Detector, "begin", refuse)
    assert main(["detect", str(movie_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "results cannot be written here" in err and len(err.strip().splitlines()) == 1


def test_api_paths_and_names_a_review_found_wrong(tmp_path, sim, detector, monkeypatch):
    """A relative movie path was recorded as given (report and napari could not find the movie from
    elsewhere); detect_files("folder") read the folder's characters; a movie named '../escape'
    wrote outside the output folder; a T×Y×X×C array's channel took a row."""
    monkeypatch.chdir(tmp_path)
    write_movie(tmp_path / "cell.tif", sim.movie)
    found = detector.detect("cell.tif")
    assert found.source == tmp_path / "cell.tif" and found.summary()["movie"] == str(tmp_path / "cell.tif")
    (tmp_path / "folder").mkdir()
    write_movie(tmp_path / "folder" / "one.tif", sim.movie)
    assert expand_inputs("folder") == [(tmp_path / "folder" / "one.tif").resolve()]
    assert expand_inputs(tmp_path / "folder") == [(tmp_path / "folder" / "one.tif").resolve()]
    with pytest.raises(casparks.CasparksError, match="is not a file name"):
        write_detection(dataclasses.replace(found, name="../escape"), tmp_path / "out")
    assert not (tmp_path / "escape_detection.json").exists()
    channels_last = np.stack([sim.movie.data, sim.movie.data], axis=-1)
    with pytest.raises(casparks.CasparksError, match="looks T×Y×X×C"):
        detector.detect(channels_last, pixel_size_um=0.2, frame_interval_ms=6.8, channel=1)


def test_a_movie_without_events_records_the_dark_level_it_was_read_with(detector):
    """The dark level of a movie without events was read (for its cell) but left out of the summary."""
    rng = np.random.default_rng(3)
    quiet = Movie((rng.poisson(150.0, (64, 32, 96)) * 2 + 100).astype(np.uint16), 0.2, 6.8, name="quiet")
    found = detector.detect(quiet)
    assert len(found.events) == 0
    level = found.summary()["dark_level"]
    assert {"adu", "se_adu", "method", "resting_adu"} <= set(level) and level["resting_adu"] > 0


def test_a_movie_without_events_is_told_an_uncertain_dark_level_too(detector, monkeypatch, caplog):
    """Only measured events were flagged: a movie without events read 345 ± 66 ADU (28 % of its
    resting signal) without a word, and the report draws its ΔF/F0 with it. Its resting signal
    is the cell's, as for a movie with events."""
    import casparks.darklevel as darklevel
    from casparks.measure import cell_mask, resting_image

    monkeypatch.setattr(darklevel, "UNCERTAIN_FRACTION", 0.0)  # any standard error is called uncertain
    rng = np.random.default_rng(3)
    light = np.where(np.arange(96) < 64, 20.0, 150.0)[None, None, :]  # background left, the cell: the right third
    quiet = Movie((rng.poisson(np.broadcast_to(light, (64, 32, 96))) * 2 + 100).astype(np.uint16), 0.2, 6.8,
                  name="quiet")
    with caplog.at_level("WARNING", logger="casparks"):
        found = detector.detect(quiet)
    assert len(found.events) == 0
    level = found.summary()["dark_level"]
    assert level["reason"].startswith("uncertain: its standard error") and "quiet: the dark level" in caplog.text
    resting = resting_image(quiet, level["adu"])
    cell = cell_mask(resting, 0.2)
    assert 0.25 < cell.mean() < 0.45  # the cell found is the bright third, whose median is the resting signal
    assert level["resting_adu"] == pytest.approx(float(np.median(resting[cell])), rel=1e-3)
    assert level["resting_adu"] > 2 * float(np.median(resting))


def test_a_segment_adopts_only_events_the_segment_before_saw_cut():
    """An event the segment before saw whole and dropped (frames 85-91, its view running to 120)
    was adopted by the next segment, which sees it at its lower edge with less context: a false
    event at the join. One that reaches the segment before's last frame (cut there) is adopted."""
    from casparks.detection import _taken_events

    lo, a, b, previous_hi = 80, 100, 200, 120  # segments (0, 0, 100, 120) and (80, 100, 200, 220)
    events = np.zeros((140, 8, 8), np.uint16)
    events[5:12, 2:4, 2:4] = 1   # frames 85-91: seen whole before
    events[30:40, 5:7, 5:7] = 2  # frames 110-119: in this core
    events[10:70, 0:2, 6:8] = 3  # frames 90-149: the segment before saw it cut at frame 119
    painted = np.zeros_like(events)
    assert _taken_events(events, painted, lo, a, b, previous_hi).tolist() == [2, 3]
    painted[10:40, 0:2, 6:8] = 7  # kept by the segment before: its
    assert _taken_events(events, painted, lo, a, b, previous_hi).tolist() == [2]


def test_a_pattern_matching_only_label_stacks_says_they_were_left_out(tmp_path):
    for name in ("01_class_label.tif", "01_event_label.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(casparks.CasparksError, match=r"no movie matches .*\(2 label or probability stacks it matches "
                                                     r"are left out\)"):
        expand_inputs([str(tmp_path / "*label.tif")])
    with pytest.raises(casparks.CasparksError, match=r"no movie matches") as caught:
        expand_inputs([str(tmp_path / "*nothing*.tif")])
    assert "left out" not in str(caught.value)


def test_a_movie_sampled_finer_than_any_training_movie_is_averaged_before_resampling(monkeypatch):
    """Linear resampling from 1 ms to 6.8 ms read two frames in seven: the network got one 1 ms
    frame's noise, where it learned movies of 2.5 ms or more (spark recall 0.76 against 0.85 after
    a running mean, session 34). Such a movie is now averaged over the model's finest 2.5 ms first, and a
    segment of it reads the frames its running mean needs: the same probabilities as whole."""
    from casparks.preprocess import resample_movie

    detector = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, precision="32"))
    trained = detector.info.card["trained_sampling"]
    assert (min(trained["pixel_size_um"]), min(trained["frame_interval_ms"])) == (0.1, 2.5)

    def blank(px, dt):
        return Movie(np.zeros((16, 16, 16), np.uint16), px, dt, name="m")

    assert detector._averaging(blank(0.2, 1.0)) == pytest.approx((2.5, 1.0, 1.0))
    assert detector._averaging(blank(0.05, 6.8)) == pytest.approx((1.0, 2.0, 2.0))
    for px, dt in ((0.2, 6.8), (0.1, 2.5), (0.3, 10.0)):  # the trained range: read as the model learned it
        assert detector._averaging(blank(px, dt)) is None
    off = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(average_fine_sampling=False))
    assert off._averaging(blank(0.2, 1.0)) is None and off.describe()["average_fine_sampling"] is False

    sim = simulate_movie(load_simulation_config("default", {"n_frames": 3000, "height_px": 32, "width_px": 96,
                                                            "frame_interval_ms": 1.0}), seed=5)
    seen = []
    original = Detector._network

    def recording(self, data, stats, px, dt, progress):
        seen.append(np.array(data))
        return original(self, data, stats, px, dt, progress)

    monkeypatch.setattr(Detector, "_network", recording)
    whole = detector.detect(sim.movie, save_probabilities=True)
    factors = detector._resample_factors(sim.movie)
    np.testing.assert_allclose(seen[0], resample_movie(sim.movie.data, factors, average=(2.5, 1.0, 1.0)), atol=1e-3)
    assert not np.allclose(seen[0], resample_movie(sim.movie.data, factors), atol=1.0)
    parts = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, precision="32", segment_frames=80,
                                                               segment_margin_ms=600.0))
    assert len(parts._segments(sim.movie)) >= 3
    split = parts.detect(sim.movie, save_probabilities=True)
    assert np.abs(whole.probabilities - split.probabilities).max() < 1e-4
    assert np.array_equal(whole.class_label, split.class_label)


def test_a_run_continued_across_the_averaging_of_fine_movies_differs_only_where_a_movie_is_averaged():
    """Results written before session 35 resampled a 1 ms movie as it was: continuing such a
    folder would mix two readings of it. A movie in the trained range is read alike either way,
    and the summary records how each movie was averaged, not only the switch: a first version of
    session 35 averaged a 1 ms movie over 6.8 frames under the same switch."""
    from casparks.detection import FREQUENCY_PER, detection_differences

    detector = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64))
    off = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64, average_fine_sampling=False))
    for dt, expected in ((1.0, ["averaged_tyx: None → [2.5, 1.0, 1.0]"]), (6.8, []), (2.5, [])):
        movie = Movie(np.zeros((64, 16, 16), np.uint16), 0.2, dt, name="m")
        settings = detector.describe(movie)
        for key in ("average_fine_sampling", "averaged_tyx"):  # a summary written before session 35
            del settings[key]
        summary = {"model": detector.info.name, "settings": settings, "pixel_size_um": 0.2, "frame_interval_ms": dt,
                   "shape_tyx": list(movie.shape), "channel": None, "frequency_per": FREQUENCY_PER}
        assert detection_differences(summary, detector, movie) == expected, dt
        assert detection_differences(summary, off, movie) == []  # --no-fine-averaging continues it
        summary["settings"] = detector.describe(movie)
        assert detection_differences(summary, detector, movie) == []
        if dt == 1.0:
            assert summary["settings"]["averaged_tyx"] == [2.5, 1.0, 1.0]
            summary["settings"]["averaged_tyx"] = [6.8, 1.0, 1.0]  # as an intermediate version of session 35 read it
            assert detection_differences(summary, detector, movie) == ["averaged_tyx: [6.8, 1.0, 1.0] → [2.5, 1.0, 1.0]"]


def test_a_movie_finer_than_the_training_movies_is_told_it_is_averaged_not_warned(caplog):
    """Averaged to the model's sampling, a 1 ms movie is read as the model learned: an info line
    says so; a coarser movie outside the range still gets the warning."""
    import logging

    detector = load_detector(DEFAULT_MODEL, "cpu")
    with caplog.at_level(logging.INFO, logger="casparks.detection"):
        fine = Movie(np.zeros((16, 16, 16), np.uint16), 0.05, 1.0, name="fine")
        check_sampling(fine, detector.info, averaged=detector._averaging(fine))
        coarse = Movie(np.zeros((16, 16, 16), np.uint16), 0.4, 12.0, name="coarse")
        check_sampling(coarse, detector.info, averaged=detector._averaging(coarse))
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", "fine: its pixel size of 0.05 µm is finer than the 0.1-0.3 µm the model sim-v3 was trained on: "
                    "the network reads it averaged over 0.1 µm (the measurements read the movie as it is)") in records
    assert any(level == "INFO" and "frame interval of 1 ms" in text and "averaged over 2.5 ms" in text
               for level, text in records)
    assert [text.split(":")[0] for level, text in records if level == "WARNING"] == ["coarse", "coarse"]


def test_no_fine_averaging_reads_a_fine_movie_as_before_and_the_summary_says_how_it_was_read(tmp_path):
    sim = simulate_movie(load_simulation_config("default", {"n_frames": 400, "height_px": 32, "width_px": 96,
                                                            "frame_interval_ms": 1.0}), seed=6)
    movie_file = tmp_path / "fast_video.tif"
    write_movie(movie_file, sim.movie)
    for flags, out, averaged in (([], "on", [2.5, 1.0, 1.0]), (["--no-fine-averaging"], "off", None)):
        assert main(["detect", str(movie_file), "--out", str(tmp_path / out), "--window", "64", *flags]) == 0
        settings = read_summary(output_paths(tmp_path / out, "fast_video")["summary"])["settings"]
        assert settings["averaged_tyx"] == averaged and settings["average_fine_sampling"] is (averaged is not None)


def test_a_movie_without_events_whose_dark_level_cannot_be_read_is_warned_about_once(caplog):
    """Read-noise only, no events: the summary gave the reason and offset 0 was used, without a word."""
    import logging

    rng = np.random.default_rng(3)
    movie = Movie(rng.normal(200.0, 3.0, size=(300, 32, 96)).astype(np.uint16), 0.2, 6.8, name="dark")
    with caplog.at_level(logging.WARNING):
        found = load_detector(DEFAULT_MODEL, "cpu", DetectSettings(window_frames=64)).detect(movie)
    assert len(found.events) == 0 and found.dark_level["reason"]
    told = [r.getMessage() for r in caplog.records if "dark level" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith("dark: ") and found.dark_level["reason"] in told[0]


def test_recorded_units_are_compared_within_float_rounding():
    """A folder detected before OME DeltaT steps were rounded recorded 6.800000000000004 ms; the
    same movie read now (6.8) was "detected otherwise" and --skip-existing refused to go on."""
    from casparks.detection import _same_value

    assert _same_value(6.800000000000004, 6.8) and _same_value(6.8, 6.800000000000004)
    assert not _same_value(6.8, 6.81) and not _same_value(0.2, 0.25)
    assert _same_value("auto", "auto") and not _same_value("auto", 1.0) and _same_value([1, 2], [1, 2])


def test_a_movie_of_df_over_f0_is_told_that_its_amplitudes_are_implausible(detector, caplog):
    """A ΔF/F0 movie given as the recording (F0 ≈ 0) measured sparks at ΔF/F0 up to 2 × 10⁶ with
    only the dark level's "could not be read" to go by; the raw movie is not warned about."""
    import logging

    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 100, "height_px": 32, "width_px": 96}),
                         seed=[2, 1])
    with caplog.at_level(logging.WARNING, logger="casparks"):
        raw = detector.detect(sim.movie)
    assert len(raw.events) and float(raw.events["amplitude_dff"].median()) < 5
    assert "median ΔF/F0" not in caplog.text
    caplog.clear()
    resting = sim.resting_adu - sim.offset_adu
    dff = (sim.movie.data.astype(np.float32) - sim.offset_adu) / resting[None] - 1.0
    with caplog.at_level(logging.WARNING, logger="casparks"):
        found = detector.detect(Movie(dff.astype(np.float32), 0.2, 6.8, name="dff"))
    assert len(found.events) and float(found.events["amplitude_dff"].median()) > 10
    told = [r.getMessage() for r in caplog.records if "median ΔF/F0" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith("dff: the events' median ΔF/F0 is")
    assert "give the raw recording" in told[0]


def test_a_detection_s_repr_is_one_line_of_what_it_found():
    """repr(Detection) printed its arrays and tables: 123 lines, 22 000 characters with the probabilities."""
    shape = (50, 64, 96)
    found = Detection("cell3", None, 0.2, 6.8, np.zeros(shape, np.uint8), np.zeros(shape, np.uint16),
                      pd.DataFrame({"class": ["spark", "spark", "wave"]}), pd.DataFrame(), 0.9, "sim-v3", {}, {},
                      probabilities=np.zeros((4, *shape), np.float32))
    assert repr(found) == ("Detection('cell3', 50×64×96 at 0.2 µm, 6.8 ms: 2 sparks, 1 wave, 0 puffs; "
                           "event_threshold 0.9, model 'sim-v3', with probabilities)")
    assert repr(dataclasses.replace(found, probabilities=None)).endswith("model 'sim-v3')")


def test_detect_files_refuses_arrays_and_movies_naming_detect_and_write_detection(tmp_path, sim):
    """An array or a Movie in the list was read as a file name: "[Errno 36] File name too long"."""
    for given in ([sim.movie.data], [sim.movie], sim.movie, sim.movie.data):
        with pytest.raises(casparks.CasparksError, match=r"detect_files takes the paths of movie files, folders or "
                                                         r"patterns, got (an array|a Movie); detect an array or a Movie "
                                                         r"with casparks.detect\(\), .*casparks.write_detection"):
            detect_files(given, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_settings_that_are_no_detect_settings_are_one_clear_error(tmp_path, sim, movie_file):
    """settings={"event_threshold": 0.5} was "'dict' object has no attribute 'window_frames'"."""
    units = {"pixel_size_um": 0.2, "frame_interval_ms": 6.8}
    expected = (r"settings= takes a casparks.DetectSettings, got dict \{'event_threshold': 0.5\}; pass, e.g., "
                r"settings=casparks.DetectSettings\(postprocess=")
    with pytest.raises(casparks.CasparksError, match=expected):
        detect(sim.movie.data, settings={"event_threshold": 0.5}, **units)
    with pytest.raises(casparks.CasparksError, match=expected):
        load_detector(settings={"event_threshold": 0.5})
    with pytest.raises(casparks.CasparksError, match=expected):
        detect_files([movie_file], tmp_path / "out", settings={"event_threshold": 0.5}, progress=False)
    assert not (tmp_path / "out").exists()


def test_progress_true_shows_a_bar_as_detect_files_does(sim, detector, capsys):
    """progress=True was "'bool' object is not callable" after the model had loaded."""
    found = detect(sim.movie, detector, progress=True)
    assert "100%" in capsys.readouterr().err
    assert np.array_equal(found.event_label, detect(sim.movie, detector, progress=False).event_label)
    assert capsys.readouterr().err == ""
    with pytest.raises(casparks.CasparksError, match=r"progress must be a function of \(done, total\), True or False"):
        detect(sim.movie, "no-such-model", progress=5)


def test_units_given_for_a_movie_or_an_array_are_named_as_for_a_file(movie_file, sim, caplog):
    """detect(read_movie(path), pixel_size_um=0.15) replaced the movie's 0.2 µm without a word, where
    detect(path, ...) warned; the warnings named the command line's flag alone; an array with
    one unit was told to pass both."""
    from casparks.detection import _as_movie

    movie = read_movie(movie_file)
    with caplog.at_level("WARNING", logger="casparks"):
        assert _as_movie(movie, 0.15, None, None).pixel_size_um == 0.15
        assert _as_movie(movie, None, 4.0, None).frame_interval_ms == 4.0
        _as_movie(movie, 0.2, 6.8, None)  # its own units: nothing to say
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"{movie_file}: pixel size 0.15 µm (pixel_size_um=) overrides the Movie's own 0.2 µm",
                      f"{movie_file}: frame interval 4 ms (frame_interval_ms=) overrides the Movie's own 6.8 ms"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        _as_movie(str(movie_file), 0.15, None, None)
    assert "pixel size 0.15 µm (--pixel-size / pixel_size_um=) overrides the 0.2 µm in the file's metadata" in caplog.text
    with pytest.raises(casparks.CasparksError, match=r"^an array carries no units; pass frame_interval_ms=$"):
        detect(sim.movie.data, pixel_size_um=0.2)
    with pytest.raises(casparks.CasparksError, match=r"^an array carries no units; pass pixel_size_um=$"):
        detect(sim.movie.data, frame_interval_ms=6.8)
    with pytest.raises(casparks.CasparksError, match=r"pass pixel_size_um= and frame_interval_ms=$"):
        detect(sim.movie.data)


def test_the_python_names_messages_give_exist(tmp_path):
    """read_detection(folder) named casparks.find_detections and the dark-level advice
    DetectSettings(measure=MeasureConfig(...)): neither is in casparks."""
    import casparks.detection
    from casparks.measure import OFFSET_HOW

    with pytest.raises(casparks.CasparksError, match=r"casparks.detection.find_detections\(folder\) lists them"):
        read_detection(tmp_path)
    assert casparks.detection.find_detections
    advice = OFFSET_HOW.split("Python: ")[1]
    assert eval(advice.replace("ADU", "0"), {"casparks": casparks}) == DetectSettings(measure={"offset_adu": 0})


def test_select_events_takes_the_others_out_of_the_labels_and_the_frequencies(detector, tmp_path):
    """A table filtered alone and put back with dataclasses.replace was written with every event's
    labels and frequencies: 15 sparks in the table, 20 in the labels and the JSON's frequency."""
    from casparks.detection import read_detection, write_detection

    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 100, "height_px": 32, "width_px": 96}),
                         seed=[3, 1])
    found = detector.detect(sim.movie)
    n = len(found.events)
    assert n >= 4 and found.events["id"].tolist() == list(range(1, n + 1))
    dropped = 2
    kept = found.select_events(found.events["id"] != dropped)
    assert kept.events["id"].tolist() == list(range(1, n)) and len(kept.events) == n - 1
    assert kept.events["peak_ms"].tolist() == found.events.loc[found.events["id"] != dropped, "peak_ms"].tolist()
    gone = np.asarray(found.event_label) == dropped
    assert not kept.event_label[gone].any() and not kept.class_label[gone].any()
    stays = np.asarray(found.event_label) == 3
    assert (kept.event_label[stays] == 2).all() and (kept.class_label[stays] == found.class_label[stays]).all()
    frequency = kept.frequency.set_index("class")
    assert frequency["count"].to_dict() == kept.counts
    before = found.frequency.set_index("class")
    name = found.events.loc[found.events["id"] == dropped, "class"].iloc[0]
    assert frequency.loc[name, "per_100um_per_s"] == pytest.approx(
        before.loc[name, "per_100um_per_s"] * frequency.loc[name, "count"] / before.loc[name, "count"])
    by_ids = found.select_events([i for i in range(1, n + 1) if i != dropped])
    np.testing.assert_array_equal(by_ids.event_label, kept.event_label)

    filtered_alone = dataclasses.replace(found, events=found.events[found.events["id"] != dropped])
    with pytest.raises(casparks.CasparksError, match=r"holds 1 event\(s\) its events table has no row for \(ids 2\).*"
                                            r"select_events"):
        write_detection(filtered_alone, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    write_detection(kept, tmp_path / "out")
    again = read_detection(tmp_path / "out" / f"{kept.name}_detection.json")
    assert again.counts == kept.counts and int(np.asarray(again.event_label).max()) == n - 1
    with pytest.raises(casparks.CasparksError, match="has no event with id 99"):
        found.select_events([99])
    with pytest.raises(casparks.CasparksError, match="one True/False per row"):
        found.select_events(np.ones(n + 1, bool))


def _three_events(label_dtype=np.uint16, big_id: int | None = None) -> Detection:
    from casparks.measure import event_frequency

    shape = (20, 8, 30)
    event_label = np.zeros(shape, label_dtype)
    class_label = np.zeros(shape, np.uint8)
    ids = [1, 2, big_id or 3]
    for k, (i, code) in enumerate(zip(ids, (1, 1, 3))):
        event_label[2 + 5 * k: 5 + 5 * k, 2:5, 3 + 8 * k: 7 + 8 * k] = i
        class_label[event_label == i] = code
    events = pd.DataFrame({"id": ids, "class": ["spark", "spark", "puff"], "snr": [9.0, 1.0, 6.0]})
    frequency = event_frequency(events, shape, 0.2, 6.8, cell_size=(4.0, 20.0))
    return Detection("three", None, 0.2, 6.8, class_label, event_label, events, frequency, 0.9, "m", {}, {})


def test_select_events_reads_a_series_by_its_index_and_refuses_what_it_cannot_read():
    """A mask of a sorted table kept the rows at the mask's positions (snr 1 for snr > 5), an id of
    1.7 kept event 1, and a nullable mask with a missing value was a TypeError."""
    found = _three_events()
    by_snr = found.events.sort_values("snr", ascending=False).snr > 5
    kept = found.select_events(by_snr)
    assert kept.events["snr"].tolist() == [9.0, 6.0] and kept.events["id"].tolist() == [1, 2]
    assert kept.frequency.set_index("class")["count"].to_dict() == {"spark": 1, "wave": 0, "puff": 1}
    assert kept.frequency["length_um"].iloc[0] == 4.0 and kept.frequency_per == "cell"
    with pytest.raises(casparks.CasparksError, match="ids are whole numbers"):
        found.select_events([1.7])
    with pytest.raises(casparks.CasparksError, match="missing values"):
        found.select_events(pd.array([True, pd.NA, False], dtype="boolean"))
    assert found.select_events(pd.array([True, False, True], dtype="boolean")).events["snr"].tolist() == [9.0, 6.0]
    huge = _three_events(np.uint32, big_id=4_000_000_000).select_events([1, 4_000_000_000])  # no 32 GB table
    assert huge.events["id"].tolist() == [1, 2] and int(huge.event_label.max()) == 2 and huge.event_label.dtype == np.uint16


def test_a_float_event_label_whose_events_lack_rows_is_refused_in_one_line(tmp_path):
    found = _three_events()
    edited = dataclasses.replace(found, event_label=found.event_label.astype(np.float32),
                                 events=found.events[found.events["id"] != 2])
    with pytest.raises(casparks.CasparksError, match=r"no row for \(ids 2\)"):
        write_detection(edited, tmp_path / "out")


def test_detect_files_takes_an_array_of_paths_as_a_list_of_them(tmp_path, movie_file):
    """An array of path strings (a table's column, np.array(glob(...))) was refused as "an array"."""
    assert expand_inputs(np.array([str(movie_file)])) == [movie_file]
    assert expand_inputs(pd.Series([str(movie_file)]).to_numpy()) == [movie_file]
    with pytest.raises(casparks.CasparksError, match="got an array"):
        expand_inputs([np.zeros((4, 8, 8))])

"""The simulator: determinism, files and units, honest labels, physics numbers, presets, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from casparks import classes
from casparks.cli import main
from casparks.errors import CasparksError
from casparks.io import read_movie, read_stack
from casparks.simulate import (
    EVENT_COLUMNS,
    SimulatedMovie,
    event_snr,
    list_presets,
    load_simulation_config,
    sample_spark_amplitudes,
    simulate_dataset,
    simulate_movie,
    write_preview,
)
from casparks.simulation_params import SimulationConfig, parameter_table

SMALL = {"n_frames": 80, "height_px": 32, "width_px": 128}
FULL_26 = np.ones((3, 3, 3), dtype=bool)


def small(**overrides) -> SimulationConfig:
    return load_simulation_config("default", {**SMALL, **overrides})


@pytest.fixture(scope="module")
def busy() -> SimulatedMovie:
    """A small movie with many events and bright light that has labelled sparks, puffs and a wave."""
    config = small(spark_rate="300,300", puff_rate="40,40", wave_probability=1.0, f0_photons="20,20",
                   wave_refractory_ms="0,0", wave_max_distance_um="15,15", cluster_probability=0.5)
    for seed in range(20):
        sim = simulate_movie(config, seed=seed)
        if set(sim.events.loc[sim.events["labelled"], "class"]) == {"spark", "puff", "wave"}:
            return sim
    raise AssertionError("no seed gave all three classes")


def test_same_seed_same_movie_other_seed_other_movie():
    config = small()
    a, b, c = simulate_movie(config, 7), simulate_movie(config, 7), simulate_movie(config, 8)
    assert np.array_equal(a.movie.data, b.movie.data)
    assert np.array_equal(a.class_label, b.class_label)
    assert np.array_equal(a.event_label, b.event_label)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not np.array_equal(a.movie.data, c.movie.data)


def test_shapes_dtypes_units(busy):
    assert busy.movie.shape == (80, 32, 128)
    assert busy.movie.data.dtype == np.uint16
    assert busy.class_label.dtype == np.uint8 and busy.class_label.shape == busy.movie.shape
    assert busy.event_label.dtype == np.uint16 and busy.event_label.shape == busy.movie.shape
    assert busy.movie.pixel_size_um == 0.2 and busy.movie.frame_interval_ms == 6.8
    assert set(np.unique(busy.class_label)) <= set(classes.KNOWN_CODES)
    assert list(busy.events.columns[: len(EVENT_COLUMNS)]) == EVENT_COLUMNS


def test_csv_agrees_with_labels(busy):
    events = busy.events
    labelled = events[events["labelled"]]
    assert len(labelled) >= 5 and (~events["labelled"]).sum() >= 1
    assert set(labelled["class"]) >= {"spark", "puff", "wave"}
    ids_in_label = set(np.unique(busy.event_label)) - {0}
    assert ids_in_label == set(labelled["event_id"])
    assert (events.loc[~events["labelled"], "event_id"] == 0).all()
    assert labelled["event_id"].is_unique
    boxes = ndimage.find_objects(busy.event_label.astype(np.int64))
    for _, row in labelled.iterrows():
        box = boxes[row["event_id"] - 1]
        region = busy.event_label[box] == row["event_id"]
        codes = np.unique(busy.class_label[box][region])
        assert list(codes) == [row["class_code"]] == [classes.class_code(row["class"])]
        _, n = ndimage.label(region, structure=FULL_26)
        assert n == 1, f"event {row['event_id']} has {n} pieces"
    # no voxel of an event class lacks an instance, no instance sits on background/ignore
    eventful = np.isin(busy.class_label, classes.EVENT_CLASSES)
    assert np.array_equal(eventful, busy.event_label > 0)


def test_ignore_shell_surrounds_events(busy):
    events = busy.event_label > 0
    grown = ndimage.binary_dilation(events, structure=ndimage.generate_binary_structure(3, 1))
    ring = grown & ~events
    codes = busy.class_label[ring]
    # the ring around every event is ignore or another event, never background
    assert not np.any(codes == classes.BACKGROUND)
    assert np.mean(codes == classes.IGNORE) > 0.5


def test_unlabelled_events_are_ignore_without_id(busy):
    events = busy.events
    unlabelled = events[~events["labelled"]]
    assert (unlabelled["event_id"] == 0).all()
    assert set(unlabelled["unlabelled_reason"]) <= {"faint", "hidden"}
    faint = unlabelled[unlabelled["unlabelled_reason"] == "faint"]
    assert len(faint) >= 1 and (faint["snr"] < 3.0).all()
    assert (events.loc[events["labelled"], "snr"] >= 3.0).all()
    assert (events.loc[events["labelled"], "unlabelled_reason"].fillna("") == "").all()


def test_faint_events_become_ignore_over_their_extent():
    config = small(spark_rate="80,80", puff_rate="0,0", wave_probability=0.0, f0_photons="0.5,0.5",
                   spark_depth_um="0,0", spark_amplitude_dff0="0.5,0.5", read_noise_adu="20,20")
    sim = simulate_movie(config, seed=4)
    assert len(sim.events) >= 3 and not sim.events["labelled"].any()
    assert sim.event_label.max() == 0
    assert np.isin(sim.class_label, [classes.BACKGROUND, classes.IGNORE]).all()
    assert (sim.class_label == classes.IGNORE).sum() > 100


def test_truth_table_matches_the_noise_free_events():
    """Isolated in-focus sparks: table amplitude, position, FWHM and FDHM agree with the rendered ΔF/F0."""
    config = small(n_frames=400, width_px=256, spark_rate="20,20", puff_rate="0,0", bright_spot_density="0,0",
                   wave_probability=0.0, cluster_probability=0.0, spark_depth_um="0,0", f0_photons="40,40",
                   cell_width_um="30,30", cell_offset_um="0,0", cell_end_probability=0.0)
    checked = 0
    for seed in range(10):
        sim = simulate_movie(config, seed=seed, keep_dff=True)
        checked += _check_isolated_sparks(sim)
        if checked >= 5:
            break
    assert checked >= 5


def test_peak_is_the_continuous_course_that_frames_sample():
    """peak_dff0 is the noise-free ΔF/F0 at the centre at the continuous course's peak: a spark
    rises for 5-15 ms, so 6.8 ms frames miss its peak (the largest sample, amplitude_dff0, is
    lower), 0.5 ms frames do not; a puff's plateau is sampled at any rate."""
    ratios = {}
    for dt in (6.8, 0.5):
        config = small(n_frames=int(1400 / dt), width_px=128, frame_interval_ms=dt, spark_rate="20,20",
                       puff_rate="4,4", wave_probability=0.0, cluster_probability=0.0, spark_depth_um="0,0",
                       cell_width_um="30,30", cell_offset_um="0,0", cell_end_probability=0.0)
        events = simulate_movie(config, seed=2).events
        inside = events[events["peak_dff0"].notna() & events["class"].isin(["spark", "puff"])]
        assert inside["peak_dff0"].ge(0.97 * inside["amplitude_dff0"]).all()  # a pixel off the centre: a few %
        ratios[dt] = {c: (part["amplitude_dff0"] / part["peak_dff0"]).median() for c, part in inside.groupby("class")}
    assert ratios[6.8]["spark"] < 0.95 and ratios[0.5]["spark"] > 0.98
    assert ratios[6.8]["puff"] > 0.98


def _check_isolated_sparks(sim: SimulatedMovie) -> int:
    dff = sim.dff
    checked = 0
    for _, row in sim.events[sim.events["labelled"]].iterrows():
        others = sim.events.drop(index=row.name)
        near = (np.hypot(others["x_um"] - row["x_um"], others["y_um"] - row["y_um"]) < 6) & (
            (others["peak_ms"] - row["peak_ms"]).abs() < 150)
        yi, xi = int(row["y_um"] / 0.2), int(row["x_um"] / 0.2)
        ti = int(round(row["peak_ms"] / 6.8))
        if near.any() or not (8 <= xi < 248 and 6 <= yi < 26 and 5 <= ti < 390):
            continue
        window = dff[ti - 4:ti + 5, yi - 3:yi + 4, xi - 3:xi + 4]
        assert window.max() == pytest.approx(row["amplitude_dff0"], rel=0.01)
        t, y, x = np.unravel_index(np.argmax(window), window.shape)
        assert abs(x - 3) <= 1 and abs(y - 3) <= 1  # the peak sits at (x_um, y_um)
        frame = dff[ti - 4 + t]
        profile = frame[yi - 3 + y, max(0, xi - 15):xi + 16]  # ±3 µm around the spark
        width = (profile >= profile.max() / 2).sum() * 0.2
        assert width == pytest.approx(row["fwhm_um"], abs=0.45)
        column = frame[:, xi - 3 + x]
        height = (column >= column.max() / 2).sum() * 0.2
        assert height == pytest.approx(row["fwhm_y_um"], abs=0.45)
        course = dff[max(0, ti - 15):ti + 16, yi - 3 + y, xi - 3 + x]  # ±100 ms
        fdhm = (course >= course.max() / 2).sum() * 6.8
        assert fdhm == pytest.approx(row["fdhm_ms"], abs=2 * 6.8)
        checked += 1
    return checked


def test_spark_labels_have_annotator_size(busy):
    sparks = busy.events[(busy.events["class"] == "spark") & busy.events["labelled"]]
    boxes = ndimage.find_objects(busy.event_label.astype(np.int64))
    widths, durations = [], []
    for event_id in sparks["event_id"]:
        region = busy.event_label[boxes[event_id - 1]] == event_id
        widths.append(region.any(axis=(0, 1)).sum() * 0.2)
        durations.append(region.any(axis=(1, 2)).sum() * 6.8)
    assert 1.0 <= np.median(widths) <= 4.0
    assert 15 <= np.median(durations) <= 100


def test_spark_truth_numbers_in_physiological_ranges(busy):
    sparks = busy.events[busy.events["class"] == "spark"]
    assert sparks["fwhm_um"].between(1.0, 4.0).all()
    assert sparks["fdhm_ms"].between(8, 60).all()
    assert sparks["rise_time_ms"].between(5, 15).all()
    assert sparks["decay_tau_ms"].between(18, 40).all()
    assert (sparks["amplitude_dff0"] <= 5.0).all() and sparks["amplitude_dff0"].median() < 1.5
    # amplitude in the table is the rendered noise-free peak: bright sparks show in the movie
    assert sparks["speed_um_per_s"].isna().all()


def test_spark_amplitudes_decrease_monotonically():
    config = SimulationConfig()
    focus, depth, observed = sample_spark_amplitudes(np.random.default_rng(0), 400_000, config)
    for bins in (np.linspace(0.05, 2.0, 14), np.linspace(0.05, 2.0, 25)):
        counts, _ = np.histogram(observed, bins=bins)
        assert np.all(np.diff(counts) < 0), counts
    # in focus the distribution is modal (log-normal, 90 % within 0.5-2.0 ΔF/F0)
    assert np.mean((focus > 0.5) & (focus < 2.0)) == pytest.approx(0.9, abs=0.01)
    counts, _ = np.histogram(focus, bins=np.linspace(0.05, 2.5, 30))
    assert 0 < np.argmax(counts) < len(counts) - 1
    assert np.all(observed <= focus + 1e-12) and depth.min() >= 0 and depth.max() <= 2.0


def test_snr_grows_with_light_and_amplitude():
    config = SimulationConfig()
    args = dict(fwhm_um=1.8, fdhm_ms=25, gain=10, read_noise_adu=5, excess_noise=1.2, config=config)
    assert event_snr(0.5, f0_photons=20, **args) > event_snr(0.5, f0_photons=2, **args)
    assert event_snr(1.0, f0_photons=5, **args) == pytest.approx(2 * event_snr(0.5, f0_photons=5, **args))
    # a 0.3 ΔF/F0 spark at one photon per pixel is invisible, at 50 photons it is obvious
    assert event_snr(0.3, f0_photons=1, **args) < 3 < event_snr(0.3, f0_photons=50, **args)


def test_waves_move_at_the_configured_speed():
    config = load_simulation_config("waves", {
        "n_frames": 120, "height_px": 24, "width_px": 400, "wave_speed_um_per_s": "100,100",
        "wave_outside_probability": 1.0, "extra_wave_probability": 0.0, "spark_rate": "0,0",
        "puff_rate": "0,0", "f0_photons": "30,30", "wave_max_distance_um": "1000,1000",
        "cell_end_probability": 0.0, "cell_width_um": "30,30", "cell_offset_um": "0,0",
        "bright_spot_density": "0,0"})
    for seed in range(6):
        sim = simulate_movie(config, seed)
        waves = sim.events[(sim.events["class"] == "wave") & sim.events["labelled"]]
        if len(waves):
            break
    assert len(waves) == 1
    wave = waves.iloc[0]
    assert wave["speed_um_per_s"] == 100
    region = sim.event_label[:, 12, :] == wave["event_id"]  # (t, x) in the middle row
    columns = np.flatnonzero(region.any(axis=0))
    arrival = np.array([np.flatnonzero(region[:, c])[0] for c in columns]) * 6.8
    x = (columns + 0.5) * 0.2
    inside = (arrival > arrival.min()) & (arrival < arrival.max())  # not cut by the movie's start/end
    slope = np.polyfit(x[inside], arrival[inside], 1)[0]  # ms per µm
    assert 1000 / abs(slope) == pytest.approx(100, rel=0.1)


@pytest.mark.parametrize("saltatory", [0.0, 1.0])
def test_a_saltatory_front_jumps_from_z_line_to_z_line_at_the_same_mean_speed(saltatory):
    config = load_simulation_config("waves", {
        "n_frames": 450, "height_px": 24, "width_px": 400, "frame_interval_ms": 2.0,
        "wave_speed_um_per_s": "100,100", "wave_outside_probability": 1.0, "extra_wave_probability": 0.0,
        "spark_rate": "0,0", "puff_rate": "0,0", "f0_photons": "30,30", "wave_max_distance_um": "1000,1000",
        "cell_end_probability": 0.0, "cell_width_um": "30,30", "cell_offset_um": "0,0", "cell_tilt_deg": "0,0",
        "cell_curvature_per_um": "0,0", "bright_spot_density": "0,0", "sarcomere_um": "1.9,1.9",
        "wave_saltatory_probability": saltatory})
    for seed in range(8):
        sim = simulate_movie(config, seed)
        waves = sim.events[(sim.events["class"] == "wave") & sim.events["labelled"]]
        if len(waves):
            break
    region = sim.event_label[:, 12, :] == waves.iloc[0]["event_id"]
    columns = np.flatnonzero(region.any(axis=0))
    arrival = np.array([np.flatnonzero(region[:, c])[0] for c in columns]) * 2.0
    inside = (arrival > arrival.min()) & (arrival < arrival.max())
    slope = np.polyfit((columns[inside] + 0.5) * 0.2, arrival[inside], 1)[0]
    assert 1000 / abs(slope) == pytest.approx(100, rel=0.15)
    steps = np.abs(np.diff(arrival[inside]))  # between neighbouring columns, 0.2 µm apart: 2 ms if smooth
    jumps = np.mean(steps >= 8.0)
    if saltatory:  # one jump of ~19 ms per z-line (every 9.5 columns), nearly equal times between
        assert 0.05 < jumps < 0.2 and np.median(steps) <= 2.0
    else:
        assert jumps == 0.0


def test_overrides_presets_and_errors():
    assert {"default", "noisy", "dense", "waves", "sparse", "fast-small"} <= set(list_presets())
    assert all(list_presets().values())
    config = load_simulation_config("default", {"n_frames": "120", "f0_photons": "2,4", "pixel_size_um": 0.25})
    assert config.n_frames == 120 and config.f0_photons == (2.0, 4.0) and config.pixel_size_um == 0.25
    assert load_simulation_config("noisy", {}).f0_photons[1] <= 6
    assert load_simulation_config("fast-small", {}).pixel_size_um == 0.1
    assert load_simulation_config("dense", {}).spark_rate[0] > SimulationConfig().spark_rate[1]
    with pytest.raises(CasparksError, match="spark_rate"):
        load_simulation_config("default", {"spark_rte": 3})
    with pytest.raises(CasparksError, match="n_frames"):
        load_simulation_config("default", {"n_frames": "many"})
    with pytest.raises(CasparksError, match="f0_photons"):
        load_simulation_config("default", {"f0_photons": "5,1"})
    with pytest.raises(CasparksError, match="noisy"):
        load_simulation_config("nosy", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_frames = 3  # type: ignore[misc]
    assert SimulationConfig().n_frames == 500  # defaults untouched
    table = parameter_table()
    assert all(f"`{f.name}`" in table for f in dataclasses.fields(SimulationConfig))
    assert all(f.metadata["source"] and f.metadata["unit"] for f in dataclasses.fields(SimulationConfig))


def test_yaml_preset_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("description: mine\nparameters:\n  n_frames: 42\n  spark_rate: [1, 2]\n")
    config = load_simulation_config(path, {})
    assert config.n_frames == 42 and config.spark_rate == (1.0, 2.0)
    path.write_text("description: bad\nparameters:\n  n_frame: 42\n")
    with pytest.raises(CasparksError, match="n_frames"):
        load_simulation_config(path, {})


def test_dataset_files_units_and_independence_of_count(tmp_path):
    config = small()
    calls = []
    paths = simulate_dataset(tmp_path / "a", n_movies=2, seed=5, config=config, previews=True,
                             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert [p.name for p in paths] == ["01_video.tif", "02_video.tif"]
    for stem in ("01", "02"):
        for suffix in ("video.tif", "class_label.tif", "event_label.tif", "events.csv", "preview.png"):
            assert (tmp_path / "a" / f"{stem}_{suffix}").is_file()
    movie = read_movie(tmp_path / "a" / "02_video.tif")
    assert movie.pixel_size_um == pytest.approx(0.2) and movie.frame_interval_ms == pytest.approx(6.8)
    assert movie.data.dtype == np.uint16 and movie.shape == (80, 32, 128)
    classes_ = read_stack(tmp_path / "a" / "02_class_label.tif")
    assert classes_.dtype == np.uint8
    table = pd.read_csv(tmp_path / "a" / "02_events.csv")
    assert list(table.columns[: len(EVENT_COLUMNS)]) == EVENT_COLUMNS
    # movie 2 is the same when simulated alone
    simulate_dataset(tmp_path / "b", n_movies=1, seed=5, config=config, first_id=2, previews=False)
    assert np.array_equal(read_stack(tmp_path / "b" / "02_video.tif"), movie.data)
    assert not (tmp_path / "b" / "02_preview.png").exists()
    # the saved parameters reproduce the run, and the folder passes the data-set check
    saved = load_simulation_config(tmp_path / "b" / "simulation_02-02.yaml", {})
    assert saved == config
    from casparks.dataset import check_dataset

    assert [p for p in check_dataset(tmp_path / "a") if p.severity == "error"] == []


def test_refuses_to_overwrite_and_writes_nothing(tmp_path):
    config = small(n_frames=20)
    (tmp_path / "02_events.csv").write_text("keep me")
    with pytest.raises(CasparksError, match="exist"):
        simulate_dataset(tmp_path, n_movies=2, seed=0, config=config, previews=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02_events.csv"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    assert (tmp_path / "02_events.csv").read_text() == "keep me"
    simulate_dataset(tmp_path, n_movies=2, seed=0, config=config, previews=False, overwrite=True)
    assert (tmp_path / "01_video.tif").exists() and "event_id" in (tmp_path / "02_events.csv").read_text()


def test_a_folder_where_a_result_file_goes_is_refused_before_anything_is_written(tmp_path, capsys):
    """--overwrite wrote the parameter file, simulated, then failed at the folder ("Is a directory",
    exit 1), leaving simulation_01-01.yaml behind."""
    out = tmp_path / "sim"
    (out / "01_events.csv").mkdir(parents=True)
    for flags in ([], ["--overwrite"]):
        code = main(["simulate", str(out), "--frames", "20", "--height", "16", "--width", "32", "--no-preview",
                     *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert "01_events.csv: is a folder where a result file goes; remove or rename it" in err
        assert [p.name for p in out.iterdir()] == ["01_events.csv"]
    (out / "01_events.csv").rmdir()
    (out / "simulation_01-01.yaml").mkdir()
    with pytest.raises(CasparksError, match="simulation_01-01.yaml: is a folder where a result file goes"):
        simulate_dataset(out, n_movies=1, config=small(n_frames=20), previews=False, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["simulation_01-01.yaml"]


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(["simulate", str(out), "--movies", "1", "--seed", "1", "--frames", "30", "--height", "16",
                 "--width", "64", "--set", "spark_rate=20,20", "--no-preview"])
    assert code == 0
    assert (out / "01_video.tif").exists() and (out / "01_events.csv").exists()
    assert read_movie(out / "01_video.tif").shape == (30, 16, 64)
    assert not (out / "01_preview.png").exists()
    assert main(["simulate", str(out), "--frames", "30", "--height", "16", "--width", "64"]) == 2
    assert "exist" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "x"), "--set", "sparkrate=3"]) == 2
    assert "spark_rate" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "x"), "--list-presets"]) == 0
    assert "fast-small" in capsys.readouterr().out
    # a negative seed was numpy's traceback, exit 1, with the config file already written
    assert main(["simulate", str(tmp_path / "neg"), "--seed", "-1", "--frames", "30"]) == 2
    assert "the seed must be a whole number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "neg").exists() or not any((tmp_path / "neg").iterdir())


def test_simulate_refuses_a_flag_and_a_set_that_disagree_and_movies_detect_refuses(tmp_path, capsys):
    """--frames silently won over --set n_frames=; 2-7 frames (or 4-7 rows) were simulated,
    and detect then refused the movie as too small to hold an event."""
    out = tmp_path / "x"
    assert main(["simulate", str(out), "--frames", "30", "--set", "n_frames=40"]) == 2
    assert "--frames 30 and --set n_frames=40 disagree" in capsys.readouterr().err
    assert not out.exists()
    assert main(["simulate", str(out), "--pixel-size", "0.2", "--set", "pixel_size_um=abc"]) == 2
    assert "--set pixel_size_um=abc is not a number" in capsys.readouterr().err  # not "disagree"
    for flag, value in (("--frames", "7"), ("--height", "7"), ("--width", "4")):
        assert main(["simulate", str(out), flag, value, "--no-preview"]) == 2
        assert "8" in capsys.readouterr().err
        assert not out.exists()
    assert main(["simulate", str(out), "--frames", "8", "--height", "8", "--width", "8", "--set", "n_frames=8",
                 "--no-preview"]) == 0
    assert read_movie(out / "01_video.tif").shape == (8, 8, 8)


def test_a_data_sets_parameter_file_as_preset_makes_the_same_movies_again(tmp_path, capsys):
    """The file's seed was provenance only: --preset FILE made other movies unless --seed was
    given too (and movie 01 where the set began at 03)."""
    first = tmp_path / "a"
    assert main(["simulate", str(first), "--movies", "2", "--first-id", "3", "--seed", "7", "--frames", "20",
                 "--height", "16", "--width", "32", "--no-preview"]) == 0
    preset = first / "simulation_03-04.yaml"
    again = tmp_path / "b"
    capsys.readouterr()
    assert main(["simulate", str(again), "--preset", str(preset), "--no-preview", "-v"]) == 0
    for name in ("03_video.tif", "04_video.tif", "03_events.csv", "04_class_label.tif"):
        assert (again / name).is_file() and (again / name).read_bytes() == (first / name).read_bytes(), name
    assert "simulation_03-04.yaml: the seed 7, first id 3, movies 2 it records are used" in capsys.readouterr().err
    # what is given still decides: another seed, one movie
    other = tmp_path / "c"
    assert main(["simulate", str(other), "--preset", str(preset), "--seed", "8", "--movies", "1", "--no-preview"]) == 0
    assert sorted(p.name for p in other.glob("*_video.tif")) == ["03_video.tif"]
    assert (other / "03_video.tif").read_bytes() != (first / "03_video.tif").read_bytes()
    # a recorded seed that is no seed is named, not a traceback
    capsys.readouterr()
    preset.write_text(preset.read_text().replace("seed: 7", "seed: -7"))
    assert main(["simulate", str(tmp_path / "d"), "--preset", str(preset), "--no-preview"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "simulation_03-04.yaml: its provenance seed -7 is not a whole number" in err
    assert not (tmp_path / "d").exists()
    from casparks.simulation_params import recorded_run

    preset.write_text(preset.read_text().replace("seed: -7", "seed: 7"))
    assert recorded_run(preset) == {"seed": 7, "first_id": 3, "n_movies": 2} and recorded_run("default") == {}


@pytest.mark.parametrize("overrides", [
    {"n_frames": 8, "height_px": 8, "width_px": 8},
    {"n_frames": 40, "height_px": 16, "width_px": 24, "pixel_size_um": 0.05, "frame_interval_ms": 1.0},
    {"n_frames": 20, "height_px": 100, "width_px": 40, "pixel_size_um": 0.5, "frame_interval_ms": 50.0},
    {"n_frames": 30, "height_px": 32, "width_px": 64, "cell_width_um": "2,2"},
])
def test_odd_geometries_give_sane_movies(overrides):
    sim = simulate_movie(load_simulation_config("waves", overrides), seed=1)
    data = sim.movie.data
    assert data.shape == (overrides["n_frames"], overrides["height_px"], overrides["width_px"])
    assert np.mean(data == 0) < 1e-3 and data.max() < 65535  # default light hardly clips
    assert data.std() > 0


def test_puffs_are_long_flickering_single_events():
    config = small(n_frames=150, spark_rate="0,0", puff_rate="40,40", wave_probability=0.0, f0_photons="40,40",
                   puff_depth_um="0,0.3", puff_on_ms="20,40", puff_off_ms="15,30")
    for seed in range(10):  # find a movie with two puffs that neither the movie nor the field cut
        sim = simulate_movie(config, seed=seed, keep_dff=True)
        puffs = sim.events[sim.events["labelled"]]
        whole = puffs[(puffs["onset_ms"] > 0) & (puffs["end_ms"] < 150 * 6.8 - 50)
                      & puffs["x_um"].between(0.5, 25) & puffs["y_um"].between(0.5, 6)]
        if len(whole) >= 2:
            break
    assert len(whole) >= 2
    assert len(puffs) >= 3 and (puffs["class"] == "puff").all()
    assert (puffs["speed_um_per_s"].isna()).all() and (puffs["fwhm_um"] > 1.5).all()
    assert whole["duration_ms"].min() >= 80
    # flickering release: the centre course dips between openings, yet the label stays one piece
    dipped = 0
    for _, row in whole.iterrows():
        course = sim.dff[:, int(row["y_um"] / 0.2), int(row["x_um"] / 0.2)]
        filled = np.minimum(np.maximum.accumulate(course), np.maximum.accumulate(course[::-1])[::-1])
        dipped += bool(np.max(filled - course) > 0.05 * course.max())
        region = sim.event_label == row["event_id"]
        assert ndimage.label(region, structure=FULL_26)[1] == 1
    assert dipped >= 1


def test_movie_is_resting_level_times_one_plus_dff_on_average():
    """The detector is unbiased: mean (ADU − offset) = gain·F0·bleach·(1 + ΔF/F0) over many voxels."""
    config = small(spark_rate="200,200", wave_probability=1.0, f0_photons="10,10", frame_flicker="0,0",
                   line_flicker="0,0", scan_lowpass="0,0", gain_adu_per_photon="10,10",
                   excess_noise_factor="1,1", read_noise_adu="0,0")
    sim = simulate_movie(config, seed=5, keep_dff=True)
    resting = (sim.resting_adu - sim.offset_adu)[None] * sim.bleach[:, None, None]
    signal = sim.movie.data.astype(float) - sim.offset_adu
    expected = resting * (1.0 + sim.dff)
    events = sim.event_label > 0
    quiet = (sim.class_label == classes.BACKGROUND) & (resting > 0.5 * resting.max())
    assert events.sum() > 1000 and quiet.sum() > 1000
    for where in (events, quiet):
        assert signal[where].mean() == pytest.approx(expected[where].mean(), rel=0.02)
    # events are brighter than the rest of the cell
    assert (signal[events] / resting[events]).mean() > 1.3
    # pure shot noise: variance = gain² · photons = gain · mean signal (gain 10 ADU/photon)
    residual = signal[quiet] - expected[quiet]
    assert residual.var() / expected[quiet].mean() == pytest.approx(10.0, rel=0.05)


def test_uneven_illumination_dims_rest_and_events_alike_and_is_off_by_default():
    """``illumination_gradient`` (a field that is not flat) scales resting level and events
    together; at its default 0 it draws no random number, so every earlier movie is unchanged."""
    flat = simulate_movie(small(), seed=5)
    also_flat = simulate_movie(small(illumination_gradient="0,0"), seed=5)
    assert np.array_equal(flat.movie.data, also_flat.movie.data)
    lit = simulate_movie(small(illumination_gradient="0.5,0.5", frame_flicker="0,0", line_flicker="0,0"), seed=5)
    ratio = (lit.resting_adu - lit.offset_adu) / np.maximum(flat.resting_adu - flat.offset_adu, 1e-9)
    inside = flat.resting_adu - flat.offset_adu > 0.2 * (flat.resting_adu - flat.offset_adu).max()
    assert ratio[inside].max() == pytest.approx(1.0, abs=0.02)
    assert ratio[inside].min() == pytest.approx(0.5, abs=0.05)  # the far corner of the field gets half


def test_the_preview_title_counts_in_words(tmp_path, monkeypatch):
    """'1 waves' in the preview's title: the counts now read as everywhere else ('1 wave')."""
    import dataclasses

    from matplotlib.figure import Figure

    sim = simulate_movie(load_simulation_config("default", {"n_frames": 60, "height_px": 16, "width_px": 48}), seed=1)
    events = sim.events.copy()
    events["labelled"] = False
    one = pd.DataFrame([{**events.iloc[0].to_dict(), "class": "wave", "labelled": True}]) if len(events) else None
    events = pd.concat([events, one], ignore_index=True)
    titles = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: titles.append(self.axes[0].get_title()))
    write_preview(tmp_path / "p.png", dataclasses.replace(sim, events=events))
    assert "labelled: 0 sparks, 0 puffs, 1 wave (" in titles[0]


def test_a_movie_larger_than_memory_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """100000 × 4000 × 4000 ran out of memory with a traceback after 20 s and left its parameter file."""
    import casparks.hardware
    from casparks.cli import main

    monkeypatch.setattr(casparks.hardware, "available_memory_bytes", lambda: 2 * 10**9)
    out = tmp_path / "big"
    assert main(["simulate", str(out), "--frames", "2000", "--height", "256", "--width", "512"]) == 2
    err = capsys.readouterr().err
    assert "a 2000 × 256 × 512 movie needs about 8.4 GB to simulate, more than the 2.0 GB available" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["simulate", str(out), "--frames", "40", "--height", "16", "--width", "32", "--no-preview"]) == 0


def _interrupt_at_the_second_movie(monkeypatch):
    """Ctrl-C while the second movie's event labels are written."""
    import casparks.simulate

    original, calls = casparks.simulate.write_event_label, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(casparks.simulate, "write_event_label", stop_at_the_second)


def test_an_interrupted_simulation_leaves_whole_movies_and_says_how_many(tmp_path, capsys, monkeypatch):
    """Ctrl-C left the second movie without its labels and said only "interrupted"."""
    from casparks.cli import main

    _interrupt_at_the_second_movie(monkeypatch)
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--movies", "3", "--frames", "40", "--height", "16", "--width", "32",
                 "--no-preview"]) == 130
    assert "interrupted: 1 of 3 movie(s) are complete" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".yaml")) == [
        "01_class_label.tif", "01_event_label.tif", "01_events.csv", "01_video.tif"]


def test_overwrite_never_mixes_two_runs_in_one_folder(tmp_path, capsys, monkeypatch):
    """--overwrite into an earlier run's folder: interrupted, it left the old movies after the new
    ones under the new parameter file; with fewer movies, the old ones stayed under an old
    parameter file that no longer held for the replaced ones, and check found the folder clean."""
    from casparks.cli import main

    out = tmp_path / "sim"
    base = ["simulate", str(out), "--frames", "20", "--height", "16", "--width", "32", "--no-preview"]
    assert main([*base, "--movies", "3", "--seed", "0"]) == 0
    old = {p.name: p.read_bytes() for p in out.glob("0*_video.tif")}
    # fewer movies over an earlier run: refused, nothing changed
    assert main([*base, "--movies", "2", "--seed", "9", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "simulation_01-03.yaml describes movies 01-03, of which this run would replace 01-02" in err
    assert {p.name: p.read_bytes() for p in out.glob("0*_video.tif")} == old
    # the same movies again, interrupted at the second: none of the old ones is left among the new
    _interrupt_at_the_second_movie(monkeypatch)
    assert main([*base, "--movies", "3", "--seed", "9", "--overwrite"]) == 130
    assert "interrupted: 1 of 3 movie(s) are complete" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("0*_video.tif")) == ["01_video.tif"]
    assert (out / "01_video.tif").read_bytes() != old["01_video.tif"]


def test_a_preset_of_broken_yaml_is_named_in_one_line(tmp_path, capsys):
    from casparks.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("n_frames: [1, 2\nfoo: bar\n")
    assert main(["simulate", str(tmp_path / "out"), "--preset", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: the preset is not valid YAML at line 2; fix the syntax" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("seed", [-1, 1.5, [0, -2], True])
def test_simulate_movie_names_a_bad_seed(seed):
    """NumPy's 'expected non-negative integer' came through (simulate_dataset checked, simulate_movie not)."""
    from casparks.errors import CasparksError

    with pytest.raises(CasparksError, match="the seed must be a whole number >= 0"):
        simulate_movie(load_simulation_config("default", {"n_frames": 10, "height_px": 8, "width_px": 16}), seed=seed)


def test_a_parameter_typed_with_a_leading_zero_is_the_decimal_number():
    """YAML 1.1 reads 010 as octal 8: `casparks simulate --set n_frames=0100` made 64 frames."""
    config = load_simulation_config("default", {"n_frames": "0100", "f0_photons": "04,010"})
    assert config.n_frames == 100 and config.f0_photons == (4.0, 10.0)


def test_a_movie_without_events_has_a_truth_table_of_the_columns_own_types():
    """Its table was all float64: events[events["labelled"]] then selected columns, not rows, and
    the usual truth filter failed with KeyError 'event_id'."""
    config = load_simulation_config("default", {"n_frames": 20, "height_px": 16, "width_px": 32, "spark_rate": [0, 0],
                                                "puff_rate": [0, 0], "wave_probability": 0.0})
    events = simulate_movie(config, seed=[0, 1]).events
    assert events.empty and events["labelled"].dtype == bool and events["event_id"].dtype == np.int64
    assert events[events["labelled"]].set_index("event_id").empty


def test_a_saturated_simulation_says_so_and_still_writes_its_preview(tmp_path, caplog):
    """f0_photons=3000 clipped a quarter of the voxels at 65535 without a word, and 8000 crashed
    the preview (a ΔF/F0 ≤ 0 everywhere gave vmax < vmin)."""
    import logging

    config = load_simulation_config("default", {"n_frames": 40, "height_px": 16, "width_px": 64,
                                                "f0_photons": (8000.0, 8000.0)})
    with caplog.at_level(logging.WARNING, logger="casparks"):
        sim = simulate_movie(config, seed=1)
    assert (np.asarray(sim.movie.data) == 65535).mean() > 0.5
    assert any("saturated at 65535 ADU" in r.getMessage() for r in caplog.records)
    assert write_preview(tmp_path / "p.png", sim).stat().st_size > 0


def test_a_visible_event_below_the_label_floor_is_ignore_not_background():
    """Events whose peak lies under label_floor_dff0 were called 'hidden' and left as background,
    though visible (SNR 9-55 with many photons): a detector finding them was scored wrong."""
    config = load_simulation_config("default", {**SMALL, "label_floor_dff0": 10.0, "f0_photons": (200.0, 200.0)})
    sim = simulate_movie(config, seed=3)
    events = sim.events
    below = events[events["unlabelled_reason"] == "below_floor"]
    assert len(below) and not events["labelled"].any() and (below["snr"] >= config.visibility_snr).all()
    assert set(events["unlabelled_reason"]) <= {"faint", "below_floor", "hidden"}
    dt, px = config.frame_interval_ms, config.pixel_size_um
    for row in below.itertuples():
        t = min(int(row.peak_ms // dt), sim.class_label.shape[0] - 1)
        y, x = int(row.y_um // px), int(row.x_um // px)
        if 0 <= t and 0 <= y < sim.class_label.shape[1] and 0 <= x < sim.class_label.shape[2]:
            assert sim.class_label[t, y, x] == 4  # ignore at its peak
    assert not (sim.class_label == 1).any()


def test_simulating_into_a_file_is_a_one_line_error(tmp_path, capsys):
    """`casparks simulate afile` said "File exists; check the free space and the permissions"."""
    from casparks.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["simulate", str(tmp_path / "afile"), "--frames", "40", "--height", "16", "--width", "64"]) == 2
    err = capsys.readouterr().err
    assert "afile: is a file, not a folder" in err and "free space" not in err


def test_a_run_refused_midway_removes_only_its_own_files(tmp_path, monkeypatch):
    """Two simulate jobs in one folder: the one refused ("exists already") deleted the movie the
    other had just written, which then reported success with movie 01 gone."""
    import casparks.simulate
    from casparks.errors import CasparksError

    out = tmp_path / "race"
    original = casparks.simulate.write_movie

    def the_other_run_first(path, movie, overwrite=False):
        original(path, movie)  # the other job writes this movie's video a moment before us
        return original(path, movie, overwrite=overwrite)

    monkeypatch.setattr(casparks.simulate, "write_movie", the_other_run_first)
    config = load_simulation_config("default", {"n_frames": 40, "height_px": 16, "width_px": 32})
    with pytest.raises(CasparksError, match="exists already"):
        simulate_dataset(out, 1, seed=1, config=config, previews=False)
    assert (out / "01_video.tif").exists()  # the other run's file is left alone


def test_a_run_that_wrote_no_movie_leaves_no_parameter_file(tmp_path, monkeypatch):
    """A simulate run that failed on a full disk at its first movie left simulation_01-01.yaml,
    and the rerun was refused until --overwrite."""
    import casparks.simulate

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(casparks.simulate, "write_movie", full)
    config = load_simulation_config("default", {"n_frames": 40, "height_px": 16, "width_px": 32})
    with pytest.raises(OSError):
        simulate_dataset(tmp_path / "s", 2, seed=1, config=config, previews=False)
    assert list((tmp_path / "s").iterdir()) == []
    monkeypatch.undo()
    assert len(simulate_dataset(tmp_path / "s", 2, seed=1, config=config, previews=False)) == 2


def test_a_simulated_movie_s_repr_is_one_line():
    """A notebook printed 147 lines of arrays and table for a SimulatedMovie."""
    sim = simulate_movie(small(spark_rate="300,300", wave_probability=0.0, puff_rate="0,0"), seed=0)
    text = repr(sim)
    n = int((sim.events["class"] == "spark").sum())
    labelled = int(sim.events["labelled"].sum())
    assert n > 1 and "\n" not in text
    assert text == (f"SimulatedMovie(80×32×128 at 0.2 µm, 6.8 ms, uint16: {n} sparks, 0 waves, 0 puffs simulated, "
                    f"{labelled} of them labelled)")


def test_a_config_may_be_a_preset_name_or_a_mapping_and_wrong_arguments_are_one_line(tmp_path):
    """simulate_movie("default"), simulate_movie({...}) and simulate_dataset(config="default") were
    AttributeErrors, n_movies=1.5 a TypeError, overrides "n_frames=40" NumPy's "dictionary update
    sequence element #0"."""
    tiny = {"n_frames": 20, "height_px": 16, "width_px": 32}
    by_config = simulate_movie(load_simulation_config("default", tiny), seed=3)
    by_mapping = simulate_movie(tiny, seed=3)
    assert np.array_equal(by_mapping.movie.data, by_config.movie.data)
    preset = tmp_path / "tiny.yaml"
    preset.write_text("description: tiny\nparameters: {n_frames: 20, height_px: 16, width_px: 32}\n")
    assert np.array_equal(simulate_movie(str(preset), seed=3).movie.data, by_config.movie.data)  # a preset's file or name
    paths = simulate_dataset(tmp_path / "by_mapping", 1, seed=3, config=tiny, previews=False)
    assert np.array_equal(read_stack(paths[0]), simulate_movie(tiny, seed=[3, 1]).movie.data)
    with pytest.raises(CasparksError, match="config must be a SimulationConfig, a preset's name or file"):
        simulate_movie(20)
    with pytest.raises(CasparksError, match=r"n_movies must be a whole number >= 1, got 1.5"):
        simulate_dataset(tmp_path / "sd", 1.5, config=tiny)
    with pytest.raises(CasparksError, match=r"first_id must be a whole number >= 0, got 0.5"):
        simulate_dataset(tmp_path / "sd", 1, config=tiny, first_id=0.5)
    assert not (tmp_path / "sd").exists()
    with pytest.raises(CasparksError, match=r"overrides must be a mapping of parameters, got the text 'n_frames=40'"):
        load_simulation_config("default", "n_frames=40")
    with pytest.raises(CasparksError, match="overrides must be a mapping of parameters"):
        load_simulation_config("default", ["n_frames=40"])

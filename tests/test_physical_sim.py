"""The physically based referee simulator (benchmarks/physical_sim.py): its physics and its files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from casparks.io import read_movie

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "physical_sim.py"


@pytest.fixture(scope="module")
def ps():
    spec = importlib.util.spec_from_file_location("physical_sim", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["physical_sim"] = module  # dataclasses and worker processes look it up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("physical_sim", None)


def spark_stats(template, rho, depth_index=0):
    """Peak ΔF/F0, FWHM (µm) and FDHM (ms) of a template seen at one depth."""
    obs = template.observed[depth_index]
    t_peak = int(np.argmax(obs[:, 0]))
    peak = float(obs[t_peak, 0])
    profile = obs[t_peak]
    fwhm = 2 * float(np.interp(peak / 2, profile[::-1], rho[::-1]))
    above = np.flatnonzero(obs[:, 0] >= peak / 2)
    return peak, fwhm, (above[-1] - above[0]) * 0.5


def test_no_release_leaves_the_cell_at_rest(ps):
    sol = ps.solve_release(np.zeros(100), after_ms=5.0)
    assert np.abs(sol.ca_excess).max() < 1e-9
    assert np.abs(sol.dff0).max() < 1e-9


def test_a_spark_has_physiological_size_and_kinetics_and_grows_with_its_current(ps):
    _, rho = ps.psf_operator()
    small = spark_stats(ps.spark_template(2.5, 13.0), rho)
    large = spark_stats(ps.spark_template(10.0, 13.0), rho)
    for peak, fwhm, fdhm in (small, large):
        assert 0.5 < peak < ps.CYTOSOL.dye_dynamic_range
        assert 1.0 < fwhm < 2.5  # µm; Cheng & Lederer 2008: ~1.8 µm
        assert 10.0 < fdhm < 40.0  # ms; ~20-30 ms
    assert large[0] > 1.5 * small[0] and large[1] > small[1]


def test_an_out_of_focus_site_is_seen_dimmer_and_wider(ps):
    _, rho = ps.psf_operator()
    tmpl = ps.spark_template(6.5, 13.0)
    peaks = [spark_stats(tmpl, rho, k)[0] for k in range(0, ps.DEPTHS_UM.size, 5)]
    assert all(a > b for a, b in zip(peaks, peaks[1:]))
    assert spark_stats(tmpl, rho, 10)[1] > spark_stats(tmpl, rho, 0)[1]


def test_the_point_spread_function_keeps_a_uniform_field_uniform(ps):
    ops, _ = ps.psf_operator()
    r, _, _ = ps._grid()
    seen = ops @ np.ones(r.size, dtype=np.float32)
    np.testing.assert_allclose(seen, 1.0, atol=1e-4)


def test_a_lowered_threshold_turns_a_spark_into_a_wave_at_a_physiological_speed(ps):
    rng = np.random.default_rng(0)
    sites = ps.site_lattice(rng, 60.0, (0.0, 12.8))
    tmpl = ps.spark_template(ps.WAVE_CURRENT_PA, ps.WAVE_TAU_MS)
    first = int(np.argmin(np.linalg.norm(sites - [10.0, 6.4, 0.0], axis=1)))
    wave = np.array(ps.fire_diffuse_fire(sites, first, 0.0, 0.03, 900.0, tmpl))
    x = sites[wave[:, 0].astype(int), 0]
    assert x.max() > 55.0  # it crossed the cell
    ahead = x > 20.0
    speed = np.polyfit(wave[ahead, 1], x[ahead], 1)[0] * 1000.0  # µm/s
    assert 50.0 < speed < 150.0
    resting = np.array(ps.fire_diffuse_fire(sites, first, 0.0, 0.3, 300.0, tmpl))
    assert np.ptp(sites[resting[:, 0].astype(int), 0]) < 2.0  # at most its own z-line


def test_a_wave_behind_its_front_rises_and_is_pumped_back_to_rest(ps):
    assert np.abs(ps.bulk_release(0.0, 13.0)).max() < 1e-9
    low, high = ps.bulk_release(30.0, 13.0), ps.bulk_release(90.0, 13.0)
    assert 0.5 < low.max() < high.max() < 9.0
    assert abs(float(high[-1])) < 0.05  # back to rest within 2.5 s
    fdhm = lambda b: np.count_nonzero(b >= b.max() / 2) * ps.SAVE_MS  # noqa: E731
    assert 80.0 < fdhm(low) < fdhm(high) < 600.0  # a wave's decay: hundreds of ms


@pytest.fixture(scope="module")
def small_movie(ps):
    geom = ps.Geometry(0.2, 6.8, 120, 40, 160)
    return geom, ps.simulate_movie(7, 3, geom)  # index 3: a movie with a wave


def test_the_truth_matches_the_events_table(ps, small_movie):
    _, sample = small_movie
    table, classes, events = sample["events"], sample["class_label"], sample["event_label"]
    assert sample["movie"].dtype == np.uint16 and classes.shape == events.shape == sample["movie"].shape
    labelled = table[table["labelled"]]
    assert sorted(labelled["event_id"]) == list(range(1, len(labelled) + 1))
    assert set(np.unique(events)) == {0, *labelled["event_id"]}
    codes = {"spark": 1, "wave": 2, "puff": 3}
    for _, row in labelled.iterrows():
        assert set(np.unique(classes[events == row["event_id"]])) == {codes[row["class"]]}
    assert not np.any((events > 0) & ~np.isin(classes, (1, 2, 3)))
    faint = table[table["reason"] == "faint"]
    assert (faint["snr"] < ps.VISIBILITY_SNR).all()
    assert (labelled["snr"] >= ps.VISIBILITY_SNR).all()
    assert (labelled["class"] == "wave").sum() == 1


def test_the_same_seed_gives_the_same_movie_and_a_better_detector_sees_the_same_events_and_more(ps, small_movie):
    geom, sample = small_movie
    again = ps.simulate_movie(7, 3, geom)
    np.testing.assert_array_equal(again["movie"], sample["movie"])
    brighter = ps.simulate_movie(7, 3, geom, detector={"f0_photons": 200.0, "read_photons": 0.0})
    same = ["class", "start_ms", "x_um", "y_um", "depth_um", "peak_dff0"]
    pd.testing.assert_frame_equal(brighter["events"][same], sample["events"][same])
    assert brighter["events"]["labelled"].sum() > sample["events"]["labelled"].sum()  # less noise: more visible
    assert (brighter["events"]["labelled"] | ~sample["events"]["labelled"]).all()
    assert brighter["movie"].mean() > sample["movie"].mean()


def test_the_command_writes_the_original_format_and_refuses_a_full_folder(ps, tmp_path, monkeypatch):
    monkeypatch.setitem(ps.GEOMETRIES, "reference", [ps.Geometry(0.2, 6.8, 60, 32, 96)])
    out = tmp_path / "phys"
    assert ps.main(["--out", str(out), "--movies", "2", "--seed", "3"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{n:02d}_{kind}" for n in (1, 2) for kind in
                     ("class_label.tif", "event_label.tif", "events.csv", "video.tif")]
    movie = read_movie(out / "01_video.tif")
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((0.2, 6.8))
    assert tifffile.imread(out / "01_class_label.tif").dtype == np.uint8
    table = pd.read_csv(out / "01_events.csv")
    assert {"class", "event_id", "labelled", "snr", "depth_um", "f0_photons"} <= set(table.columns)
    with pytest.raises(SystemExit, match="not empty"):
        ps.main(["--out", str(out), "--movies", "1"])


def test_the_command_makes_chosen_movies_with_a_fixed_detector_and_rejects_unknown_keys(ps, tmp_path, monkeypatch):
    monkeypatch.setitem(ps.GEOMETRIES, "reference", [ps.Geometry(0.2, 6.8, 40, 24, 64)])
    out = tmp_path / "phys"
    assert ps.main(["--out", str(out), "--movies", "3", "--ids", "2", "--detector", "texture=0", "f0_photons=50"]) == 0
    assert sorted(p.name for p in out.iterdir())[0] == "02_class_label.tif" and len(list(out.iterdir())) == 4
    assert pd.read_csv(out / "02_events.csv")["f0_photons"].iloc[0] == 50.0
    with pytest.raises(SystemExit, match="KEY one of"):
        ps.main(["--out", str(tmp_path / "other"), "--detector", "laser=3"])


def test_half_width_interpolates_and_says_when_an_edge_cuts_it(ps):
    x = np.arange(41) * 0.2
    values = np.exp(-0.5 * ((x - 4.0) / 0.85) ** 2)  # FWHM 2.355 × 0.85 = 2.0 µm
    assert ps.half_width(values, 20, 0.2) == pytest.approx(2.0, abs=0.02)
    assert np.isnan(ps.half_width(values[15:], 5, 0.2))  # the left half is cut off


def test_the_events_table_holds_each_sparks_noise_free_widths(ps, small_movie):
    _, sample = small_movie
    sparks = sample["events"][(sample["events"]["class"] == "spark") & sample["events"]["labelled"]]
    widths = sparks[["fwhm_um", "fdhm_ms"]].dropna()
    assert len(widths) >= 3
    assert widths["fwhm_um"].between(0.8, 4.0).all() and widths["fdhm_ms"].between(5.0, 80.0).all()
    waves = sample["events"][sample["events"]["class"] == "wave"]
    assert waves["fwhm_um"].isna().all() and waves["speed_um_per_s"].between(40.0, 160.0).all()
    assert sparks["speed_um_per_s"].isna().all()


def test_the_events_table_holds_each_sparks_continuous_course_at_its_centre(ps, small_movie):
    """What the frames sample: the continuous peak is at least the sampled one (less the cell
    band's dimming, 1 inside the cell), the 10 %-to-peak time lies within the release (the
    templates release for 16-40 ms), the continuous FDHM is close to the sampled one; waves have none."""
    _, sample = small_movie
    table = sample["events"]
    sparks = table[(table["class"] == "spark") & table["labelled"]]
    assert len(sparks) >= 3 and sparks["course_peak_dff0"].notna().all()
    assert (sparks["course_peak_dff0"] >= 0.98 * sparks["peak_dff0"] * 0.7).all()
    assert float((sparks["course_peak_dff0"] / sparks["peak_dff0"]).median()) >= 0.98
    assert sparks["course_time_to_peak_ms"].between(3.0, 40.0).all()
    assert sparks["course_fdhm_ms"].sub(sparks["fdhm_ms"]).abs().median() < 6.8
    assert table.loc[table["class"] == "wave", ["course_peak_dff0", "course_time_to_peak_ms"]].isna().all().all()


def test_the_continuous_course_of_a_known_template(ps):
    """A spark released at depth 0 in the middle of the cell (band 1): its course's peak is the
    template's, 10 % to peak is read between the template's samples, and the band scales the peak."""
    template = ps.spark_template(6.5, 13.0)
    event = ps.Event(ps.SPARK, [ps.Firing(5.0, 5.0, 0.0, 100.0, template)])
    course = template.observed[0, :, 0]
    at = int(np.argmax(course))
    truth = ps.centre_course(event, 1.0)
    assert truth["course_peak_dff0"] == pytest.approx(float(course[at]), rel=1e-6)
    rise_start = at * ps.SAVE_MS - truth["course_time_to_peak_ms"]
    assert course[int(rise_start / ps.SAVE_MS)] <= 0.1 * course[at] <= course[int(rise_start / ps.SAVE_MS) + 1]
    assert ps.centre_course(event, 0.5)["course_peak_dff0"] == pytest.approx(0.5 * float(course[at]), rel=1e-6)
    assert np.isnan(ps.centre_course(ps.Event(ps.WAVE, [ps.Firing(5.0, 5.0, 0.0, 100.0, template)]), 1.0)["course_peak_dff0"])


@pytest.mark.parametrize("n_kinds", [1, 2, 3, 4])
def test_every_kind_meets_every_sampling_whatever_the_number_of_kinds(ps, n_kinds):
    n_geometries = len(ps.GEOMETRIES["other"])
    seen = {(i % n_kinds, ps._sampling_index(i, n_kinds, n_geometries)) for i in range(n_kinds * n_geometries)}
    assert seen == {(k, g) for k in range(n_kinds) for g in range(n_geometries)}


def test_the_default_four_kinds_keep_their_samplings(ps):
    """The recorded ``other`` sets (default kinds) are made as before the rotation's fix."""
    assert [ps._sampling_index(i, 4, 4) for i in range(8)] == [(i + i // 4) % 4 for i in range(8)]

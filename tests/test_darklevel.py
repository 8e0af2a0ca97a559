"""The dark level read from photon noise: known offsets under Poisson, read and PMT gain noise,
fields with and without background, clipped and processed movies, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest

from casparks.darklevel import dark_level_from_moments, estimate_dark_level, noise_moments


def photon_movie(seed=0, shape=(200, 32, 96), photons=20.0, gain=4.0, offset=300.0, read_photons=0.0, pmt=False,
                 background_columns=0, dtype=np.uint16, spread=0.5):
    """A recording of light that varies across the field (1 ± ``spread`` times ``photons`` per
    pixel and frame, and ±10 % from pixel to pixel × ``spread`` / 0.5), bleaching slowly: Poisson
    photons times ``gain`` (or, with ``pmt``, each photon times a gamma-distributed gain of that
    mean, excess noise factor √1.5), plus ``offset`` and Gaussian read noise. Returns the movie
    and its median resting signal above the offset (ADU)."""
    rng = np.random.default_rng(seed)
    T, H, W = shape
    lam = photons * np.linspace(1 - spread, 1 + spread, W)[None, :] * (1 + 0.2 * spread * rng.standard_normal((H, W)))
    if background_columns:
        lam[:, :background_columns] = 0.02 * photons
    counts = rng.poisson(lam[None] * np.exp(-np.arange(T) / 2000.0)[:, None, None])
    if pmt:
        adu = np.where(counts > 0, rng.gamma(2.0 * np.maximum(counts, 1), gain / 2.0), 0.0)
    else:
        adu = gain * counts
    adu = adu + offset + rng.normal(0.0, read_photons * gain, counts.shape)
    if np.dtype(dtype).kind == "u":
        adu = np.clip(np.rint(adu), 0, np.iinfo(dtype).max)
    return adu.astype(dtype), float(np.median(lam)) * gain


def test_without_read_noise_the_variance_line_gives_the_offset():
    movie, f0 = photon_movie(read_photons=0.0)
    level = estimate_dark_level(movie)
    assert level.method == "variance" and level.binning == "cross"
    assert level.adu == pytest.approx(300.0, abs=0.03 * f0)
    # the skewness line's error is in it (read noise it cannot rule out), yet under a tenth of F0
    assert abs(level.adu - 300.0) < 3 * level.se_adu < 0.3 * f0 and not level.reason


@pytest.mark.parametrize("pmt", [False, True])
def test_with_read_noise_the_skewness_line_gives_the_offset(pmt):
    # the variance line alone would put it read_photons² photons (here 25 · 4 = 100 ADU, 1.25 F0) too low
    movie, f0 = photon_movie(shape=(300, 48, 128), read_photons=5.0, pmt=pmt)
    level = estimate_dark_level(movie)
    assert level.method == "skewness"
    assert level.adu == pytest.approx(300.0, abs=0.15 * f0)
    assert abs(level.adu - 300.0) < 3.5 * level.se_adu + 1.0  # its standard error is honest
    assert level.read_noise_adu == pytest.approx(5.0 * 4.0, rel=0.25)


def test_cell_free_background_in_the_field():
    movie, f0 = photon_movie(read_photons=3.0, background_columns=16)
    level = estimate_dark_level(movie)
    assert level.found
    assert level.adu == pytest.approx(300.0, abs=0.15 * f0)


def test_events_are_left_out():
    movie, f0 = photon_movie()
    flashes = np.zeros(movie.shape, bool)
    flashes[::9] = np.random.default_rng(1).random(movie.shape[1:]) < 0.3  # brief events in 30 % of the pixels
    bright = np.where(flashes, 1.5 * movie, movie).astype(np.uint16)
    assert estimate_dark_level(bright).adu > 300.0 + 0.2 * f0
    assert estimate_dark_level(bright, flashes).adu == pytest.approx(300.0, abs=0.03 * f0)


@pytest.mark.parametrize("shift", [0, -1000])
def test_a_signed_movie_may_have_a_dark_level_below_zero(shift):
    """int16 with the acquisition software's offset subtracted: negative values are noise, not a
    detector clipping at 0 (that read 0, 'floor', and gave ΔF/F0 of -6.6e8)."""
    movie, f0 = photon_movie(read_photons=0.0)
    shifted = (movie.astype(np.int32) + shift).astype(np.int16)
    level = estimate_dark_level(shifted)
    assert level.method == "variance"
    assert level.adu == pytest.approx(300.0 + shift, abs=0.03 * f0)


def test_a_short_movie():
    """40 frames with read noise: binned by each pixel's own mean of 32 frames, the dark level
    came out 0.29 F0 high (median of 6 movies; the mean shares the pixel's noise); binned by the
    other parity's means, it shares none."""
    errors = []
    for seed in range(3):
        movie, f0 = photon_movie(seed=seed, shape=(40, 64, 256), read_photons=5.0)
        level = estimate_dark_level(movie)
        assert level.binning == "cross" and abs(level.adu - 300.0) <= 3.0 * level.se_adu
        errors.append((level.adu - 300.0) / f0)
    assert np.median(np.abs(errors)) < 0.12


def test_noise_reaching_zero_means_a_dark_level_of_zero():
    movie, _ = photon_movie(photons=2.0, offset=0.0, read_photons=2.0)
    level = estimate_dark_level(movie)
    assert (level.method, level.adu) == ("floor", 0.0)
    assert "0" in level.reason


def test_a_saturated_movie_gives_no_estimate():
    movie, _ = photon_movie(photons=20.0, gain=6000.0, offset=300.0)
    assert (movie == 65535).mean() > 0.5
    level = estimate_dark_level(movie)
    assert not level.found and "saturate" in level.reason


@pytest.mark.parametrize("kind", ["mean frame subtracted", "constant", "noise-free ramp", "two frames"])
def test_movies_without_photon_noise_give_no_estimate(kind):
    movie, _ = photon_movie(dtype=np.float32)
    if kind == "mean frame subtracted":
        movie = movie - movie.mean(axis=0)
    elif kind == "constant":
        movie = np.full(movie.shape, 500, np.uint16)
    elif kind == "noise-free ramp":
        movie = np.broadcast_to(np.linspace(100.0, 900.0, movie.shape[2], dtype=np.float32), movie.shape).copy()
    else:
        movie = movie[:2]
    level = estimate_dark_level(movie)
    assert not level.found and level.method == "none" and level.reason
    assert math.isnan(level.adu) and level.to_dict()["adu"] is None


def test_streaming_blocks_give_the_same_moments():
    movie, _ = photon_movie(shape=(50, 16, 40), read_photons=2.0)
    mask = np.zeros(movie.shape, bool)
    mask[10:20, 3:9, 5:30] = True
    whole = noise_moments(movie, mask, block_frames=1000)
    blocks = noise_moments(movie, mask, block_frames=7)
    for key in ("n", "at_low", "at_high"):
        np.testing.assert_array_equal(whole[key], blocks[key])
    assert whole["at_low"].sum() + whole["at_high"].sum() == 0
    for key in ("mean", "d2", "d3"):
        np.testing.assert_allclose(whole[key], blocks[key], rtol=1e-4, atol=1e-5 * np.abs(whole[key]).max())
    assert dark_level_from_moments(blocks).adu == pytest.approx(dark_level_from_moments(whole).adu, rel=1e-5)


def test_every_frame_is_counted_once_for_clipping():
    movie = np.full((23, 2, 3), 100, np.uint16)
    movie[[0, 5, 22], 0, 0] = 0
    movie[[1, 21], 1, 2] = 65535
    for block in (1, 4, 100):
        moments = noise_moments(movie, block_frames=block)
        assert moments["at_low"][0, 0] == 3 and moments["at_high"][1, 2] == 2
        assert moments["at_low"].sum() == 3 and moments["at_high"].sum() == 2


def test_noise_moments_by_hand():
    movie = np.array([1, 4, 2, 8, 3, 6, 5], np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    one = noise_moments(movie, half=1)  # each frame against the mean of the frames 2 before and 2 after
    d = np.array([2 - (1 + 3) / 2, 8 - (4 + 6) / 2, 3 - (2 + 5) / 2])  # frames 2, 3, 4
    assert one["n"][0, 0] == 3 and one["half"] == 1
    assert one["mean"][0, 0] == pytest.approx((2 + 8 + 3) / 3)
    assert one["d2"][0, 0] == pytest.approx(np.sum(d**2))
    assert one["d3"][0, 0] == pytest.approx(np.sum(d**3))
    assert one["limits"] is None
    # even frames (2, 4) and odd (3) apart: each parity's samples use frames of that parity only
    np.testing.assert_array_equal(one["parities"]["n"][:, 0, 0], [2, 1])
    np.testing.assert_allclose(one["parities"]["sum"][:, 0, 0], [2 + 3, 8])
    np.testing.assert_allclose(one["parities"]["d2"][:, 0, 0], [d[0] ** 2 + d[2] ** 2, d[1] ** 2])
    np.testing.assert_allclose(one["parities"]["d3"][:, 0, 0], [d[0] ** 3 + d[2] ** 3, d[1] ** 3])
    # the same frames as frames 1-7 of a longer movie: their parities swap
    later = noise_moments(movie, half=1, first_frame=1)
    np.testing.assert_array_equal(later["parities"]["n"][:, 0, 0], [1, 2])
    nine = np.arange(9, dtype=np.float32)[:, None, None] ** 2
    two = noise_moments(nine)  # the default k = 2: frame 4 against frames 0, 2, 6 and 8
    assert two["half"] == 2 and two["n"][0, 0] == 1
    assert two["d3"][0, 0] == pytest.approx((16 - (0 + 4 + 36 + 64) / 4) ** 3)
    assert noise_moments(movie)["half"] == 1  # what 7 frames allow


def test_gaussian_noise_without_skewness_gives_the_variance_line_unconfirmed():
    rng = np.random.default_rng(3)
    light = np.linspace(200.0, 600.0, 96)[None, None, :] * np.ones((300, 32, 1))  # ADU above the dark level
    movie = 300.0 + light + rng.normal(size=light.shape) * np.sqrt(4.0 * light)  # variance 4 · light, symmetric
    level = estimate_dark_level(movie.astype(np.float32))
    assert level.method == "variance" and level.reason.startswith("unconfirmed")
    assert level.adu == pytest.approx(300.0, abs=15.0)


def test_the_variance_line_alone_is_no_lower_bound_under_laser_flicker():
    """The reason said "a lower bound" (read noise can only lower the crossing): a user told so
    would raise the dark level. Noise growing with the light's square (flicker) reads it high."""
    rng = np.random.default_rng(4)
    light = np.linspace(200.0, 600.0, 96)[None, None, :] * np.ones((300, 32, 1))
    sd = np.sqrt(4.0 * light + (0.1 * light) ** 2)  # photons and a 10 % flicker of the light, symmetric
    movie = 300.0 + light + rng.normal(size=light.shape) * sd
    level = estimate_dark_level(movie.astype(np.float32))
    assert level.method == "variance" and "high with laser flicker" in level.reason
    assert level.adu > 300.0 + 3 * level.se_adu  # above the truth: no lower bound


def test_own_means_only_where_the_cross_binned_lines_give_an_unconfirmed_level_and_agree():
    from casparks.darklevel import _agree, _definite, _level, _Lines

    x = np.array([100.0, 110.0])
    definite = _Lines((80.0, 2.0, 1.0), (95.0, 3.0, 1.0), x)  # read noise: the skewness line's crossing
    assert _level(definite).method == "skewness" and _definite(_level(definite))
    lower_bound = _Lines((81.0, 2.0, 1.0), None, x)
    assert _level(lower_bound).reason.startswith("unconfirmed") and not _definite(_level(lower_bound))
    assert _agree(definite, lower_bound)  # the variance lines cross within 3 SE of each other
    assert not _agree(definite, _Lines((60.0, 2.0, 1.0), None, x))  # 7 SE apart: own means biased
    # the variance line without a skewness line significantly above: its error is in the estimate
    no_read_noise = _level(_Lines((80.0, 2.0, 1.0), (82.0, 4.0, 1.0), x))
    assert (no_read_noise.method, no_read_noise.read_noise_adu) == ("variance", 0.0)
    assert no_read_noise.se_adu == pytest.approx(math.hypot(2.0, 4.0))


def test_few_pixels_outside_events_give_no_estimate_not_a_floor():
    """A movie whose events cover nearly everything, with a handful of voxels at 0: the dark
    level was taken as 0 ("the noise of most pixels reaches the detector's 0"), no warning."""
    movie, _ = photon_movie(read_photons=1.0)
    movie[5, 0, :3] = 0
    exclude = np.ones(movie.shape, bool)
    exclude[:, :2, :40] = False  # 80 pixels outside the events
    level = estimate_dark_level(movie, exclude)
    assert not level.found and level.method == "none" and "only" in level.reason


def test_an_uncertain_dark_level_says_so():
    from casparks.darklevel import DarkLevel, flag_uncertain

    level = DarkLevel(300.0, 12.0, 5.0, "skewness")
    assert flag_uncertain(level, 200.0) is level  # 6 % of the resting signal
    flagged = flag_uncertain(level, 100.0)
    assert flagged.reason.startswith("uncertain: its standard error is 12 % of the resting signal")
    assert flagged.adu == 300.0 and flagged.to_dict()["reason"] == flagged.reason
    # after another reason, the size of the error is said too (it was not: 31 % said nothing)
    own = DarkLevel(300.0, 12.0, 5.0, "skewness", "read from pixels pooled by their own means ...", "own")
    assert flag_uncertain(own, 100.0).reason == ("uncertain: its standard error is 12 % of the resting signal "
                                                 "above it (100 ADU), so ΔF/F0 is uncertain by about as much; "
                                                 "and read from pixels pooled by their own means ...")
    assert flag_uncertain(flag_uncertain(own, 100.0), 100.0) == flag_uncertain(own, 100.0)
    floor = DarkLevel(0.0, math.nan, math.nan, "floor", "the noise of most pixels reaches the detector's 0")
    assert flag_uncertain(floor, 100.0) is floor


def test_a_contrast_stretched_export_is_not_read_as_a_detector_at_zero():
    """Fiji's 8-bit conversion after Auto contrast clips 0.35 % of the voxels at each end: the
    dark level was taken as the detector's 0 ("floor") without a warning, ΔF/F0 1.7× too high."""
    movie, _ = photon_movie(read_photons=1.0, spread=0.2)
    low, high = np.percentile(movie, [0.35, 99.65])
    stretched = np.clip((movie.astype(np.float64) - low) * 256 / (high - low + 1), 0, 255).astype(np.uint8)
    level = estimate_dark_level(stretched)
    assert not level.found and "clipped at both ends" in level.reason

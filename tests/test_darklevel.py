"""The dark level read from photon noise: known offsets under Poisson, read and PMT gain noise,
fields with and without background, clipped and processed movies, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest

from casparks.darklevel import dark_level_from_moments, describe, estimate_dark_level, noise_moments


def photon_movie(seed=0, shape=(200, 32, 96), photons=20.0, gain=4.0, offset=300.0, read_photons=0.0, pmt=False,
                 background_columns=0, dtype=np.uint16):
    """A recording of light that varies across the field (0.5-1.5 × ``photons`` per pixel and
    frame), bleaching slowly: Poisson photons times ``gain`` (or, with ``pmt``, each photon times
    a gamma-distributed gain of that mean), plus ``offset`` and Gaussian read noise. Returns the
    movie and its median resting signal above the offset (ADU)."""
    rng = np.random.default_rng(seed)
    T, H, W = shape
    lam = photons * np.linspace(0.5, 1.5, W)[None, :] * (1 + 0.1 * rng.standard_normal((H, W)))
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
    assert level.method == "variance"
    assert level.adu == pytest.approx(300.0, abs=0.03 * f0)
    assert level.se_adu < 0.03 * f0


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


def test_a_short_movie_bins_pixels_by_their_neighbourhood():
    """40 frames with read noise: binned by each pixel's own mean of 32 frames, the dark level
    came out 0.29 F0 high (median of 6 movies; the mean shares the pixel's noise)."""
    errors = []
    for seed in range(3):
        movie, f0 = photon_movie(seed=seed, shape=(40, 64, 256), read_photons=5.0)
        errors.append((estimate_dark_level(movie).adu - 300.0) / f0)
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
    movie = np.array([1, 4, 2, 8, 3], np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    one = noise_moments(movie, half=1)  # each frame against the mean of its two neighbours
    d = np.array([4 - 1.5, 2 - 6.0, 8 - 2.5])
    assert one["n"][0, 0] == 3 and one["half"] == 1
    assert one["mean"][0, 0] == pytest.approx((4 + 2 + 8) / 3)
    assert one["d2"][0, 0] == pytest.approx(np.sum(d**2))
    assert one["d3"][0, 0] == pytest.approx(np.sum(d**3))
    assert one["limits"] is None
    two = noise_moments(movie)  # the default k = 4 shrinks to what 5 frames allow: 2
    assert two["half"] == 2 and two["n"][0, 0] == 1
    assert two["d3"][0, 0] == pytest.approx((2 - (1 + 4 + 8 + 3) / 4) ** 3)


def test_gaussian_noise_without_skewness_gives_the_variance_line_as_a_lower_bound():
    rng = np.random.default_rng(3)
    light = np.linspace(200.0, 600.0, 96)[None, None, :] * np.ones((300, 32, 1))  # ADU above the dark level
    movie = 300.0 + light + rng.normal(size=light.shape) * np.sqrt(4.0 * light)  # variance 4 · light, symmetric
    level = estimate_dark_level(movie.astype(np.float32))
    assert level.method == "variance" and "lower bound" in level.reason
    assert level.adu == pytest.approx(300.0, abs=15.0)


def test_describe_for_people():
    assert describe({"adu": 212.46, "se_adu": 1.83, "method": "skewness"}) == "212.5 ± 1.8 ADU (skewness)"
    assert describe({"adu": None, "method": "none", "reason": "no noise"}) == "not read: 0 used (none; no noise)"
    assert describe({"adu": 0.0, "se_adu": None, "method": "floor", "reason": "r"}) == "0.0 ADU (floor; r)"
    assert describe(None) == ""


def test_moments_of_a_movies_parts_sum_to_the_whole_movies():
    """A long movie's dark level is read part by part (detection in segments)."""
    from casparks.darklevel import noise_moments, sum_moments

    rng = np.random.default_rng(3)
    light = rng.uniform(20, 200, (8, 12))
    movie = (rng.poisson(np.broadcast_to(light, (90, 8, 12)) * 3.0) + 100).astype(np.uint16)
    exclude = np.zeros(movie.shape, bool)
    exclude[30:40, 2:5, 3:6] = True
    whole = noise_moments(movie, exclude)
    k = whole["half"]
    cuts = [0, 35, 61, 90]
    parts = [noise_moments(movie[max(0, a - k):min(90, b + k)], exclude[max(0, a - k):min(90, b + k)])
             for a, b in zip(cuts, cuts[1:])]
    summed = sum_moments(parts)
    for key in ("n", "d2", "d3"):
        np.testing.assert_allclose(summed[key], whole[key], rtol=1e-5)
    np.testing.assert_allclose(summed["mean"], whole["mean"], rtol=1e-6)


@pytest.mark.parametrize("parts", [
    [(0, 0, 120, 150), (90, 120, 238, 240), (208, 238, 240, 240)],  # a last core of 2 frames (crashed)
    [(0, 0, 120, 120), (120, 120, 240, 240)],  # no margins (crashed)
    [(0, 0, 77, 101), (53, 77, 160, 190), (129, 160, 240, 240)],  # bins not aligned with the parts
])
def test_a_movies_dark_level_from_parts_is_the_whole_movies(parts):
    """measure.movie_dark_level reads a segmented movie's dark level part by part."""
    from casparks.measure import MeasureConfig, measure_events, movie_dark_level

    rng = np.random.default_rng(5)
    light = rng.uniform(20, 300, (16, 24))
    movie = (rng.poisson(np.broadcast_to(light, (240, 16, 24)) * 2.0) + 150).astype(np.uint16)
    classes = np.zeros(movie.shape, np.uint8)
    events = np.zeros(movie.shape, np.uint16)
    classes[100:130, 4:8, 5:9] = 1
    events[100:130, 4:8, 5:9] = 1
    whole = measure_events(movie, classes, events, 0.2, 6.8, config=MeasureConfig()).attrs["dark_level"]["adu"]
    from_parts = movie_dark_level(movie, classes, events, 0.2, 6.8, parts)
    assert from_parts.found and from_parts.adu == pytest.approx(whole, abs=0.05 * from_parts.se_adu + 1e-3)

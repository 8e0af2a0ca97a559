"""Pre-processing: normalisation modes, background removal, smoothing, windows without seams."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from casparks.config import DataConfig
from casparks.errors import CasparksError
from casparks.preprocess import (
    MovieStats,
    Preprocessing,
    background_window_frames,
    context_frames,
    estimate_noise,
    movie_stats,
    outlier_voxels,
    preprocess_frames,
    preprocess_movie,
    read_frames,
    reflect_index,
    static_pixels,
)

PX, DT = 0.2, 6.8


def movie(shape=(40, 16, 32), seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    data = rng.poisson(300.0, size=shape) + 100
    data[:, 4:8, 10:14] += (np.arange(shape[0]) * 5)[:, None, None]  # a rising patch
    return data.astype(dtype)


def run(data, settings, start=0, stop=None, px=PX, dt=DT, stats=None):
    stats = stats if stats is not None else movie_stats(data)
    stop = data.shape[0] if stop is None else stop
    return preprocess_frames(data, start, stop, stats, px, dt, settings)


# ----------------------------------------------------------------------------------------------
# settings


def test_settings_from_data_config_and_dict_round_trip():
    config = DataConfig(norm_video="zscore", remove_background="moving", background_window_ms=500.0,
                        data_smoothing="3d", smoothing_sigma_um=0.4, smoothing_sigma_ms=10.0)
    settings = Preprocessing.from_data_config(config)
    assert settings == Preprocessing("zscore", "moving", 500.0, "3d", 0.4, 10.0)
    assert Preprocessing.from_dict(settings.to_dict()) == settings
    with pytest.raises(CasparksError, match="unknown pre-processing option"):
        Preprocessing.from_dict({**settings.to_dict(), "nope": 1})
    with pytest.raises(CasparksError, match="norm_video"):
        Preprocessing(norm_video="max")
    with pytest.raises(CasparksError, match="background_window_ms"):
        Preprocessing(background_window_ms=0.0)


# ----------------------------------------------------------------------------------------------
# statistics


def simulated_movie(height=32, width=96):
    from casparks.simulate import load_simulation_config, simulate_movie

    return np.asarray(simulate_movie(load_simulation_config("default", {"n_frames": 60, "height_px": height,
                                                                       "width_px": width}), seed=[3, 1]).movie.data)


@pytest.mark.parametrize("defect", ["hot voxel", "cold voxel", "hot voxel at an edge", "stuck hot pixel",
                                    "dead pixel at an edge", "two hot voxels in one frame"])
def test_defective_voxels_do_not_set_the_movie_scale(defect):
    """One bad voxel (or pixel) must not set the 'movie' normalisation of every other voxel."""
    # a cold voxel is told from noise only far below it: Poisson(300) + 100 has σ ≈ 17, 0 is 23 σ below
    clean = movie((40, 32, 96)) if defect == "cold voxel" else simulated_movie()
    bad = clean.copy()
    if defect == "hot voxel":
        bad[20, 10, 40] = 4095
    elif defect == "cold voxel":
        bad[20, 10, 40] = 0
    elif defect == "hot voxel at an edge":
        bad[0, 0, 95] = 4095
    elif defect == "stuck hot pixel":
        bad[:, 10, 40] = 4095
    elif defect == "dead pixel at an edge":
        bad[:, 31, 0] = 0
    else:
        bad[30, 5, 5] = bad[30, 20, 70] = 60000
    before, after = movie_stats(clean), movie_stats(bad)
    assert (after.minimum, after.maximum) == (before.minimum, before.maximum)
    settings = Preprocessing(norm_video="movie")
    clean_input, bad_input = run(clean, settings), run(bad, settings)
    assert bad_input.min() >= 0.0 and bad_input.max() <= 1.0  # the defect is clipped to the scale
    differs = bad != clean
    np.testing.assert_array_equal(bad_input[~differs], clean_input[~differs])  # everything else untouched


@pytest.mark.parametrize("factors", [(1.47, 1.5, 1.5), (0.37, 0.5, 0.5)], ids=["coarser", "finer"])
def test_a_resampled_movie_is_repaired_before_its_bad_voxel_spreads(factors):
    """Interpolation turns one hot voxel into a blob that no outlier rule can tell from an event,
    so detection and training (both through resample_movie) repair the movie first."""
    from casparks.preprocess import repair_outliers, resample_movie

    clean = simulated_movie()
    hot = clean.copy()
    hot[20, 10, 40] = 4095
    assert repair_outliers(clean) is clean  # nothing to repair: untouched, not copied
    before, after = movie_stats(resample_movie(clean, factors)), movie_stats(resample_movie(hot, factors))
    assert (after.minimum, after.maximum) == pytest.approx((before.minimum, before.maximum), rel=1e-6)
    repaired = repair_outliers(hot)
    assert repaired[20, 10, 40] < clean.max() and np.array_equal(np.delete(repaired.ravel(), 20 * 32 * 96 + 10 * 96 + 40),
                                                                  np.delete(clean.ravel(), 20 * 32 * 96 + 10 * 96 + 40))


def test_a_clean_movie_keeps_its_plain_extremes_and_events_are_not_outliers():
    clean = simulated_movie()
    stats = movie_stats(clean)
    assert (stats.minimum, stats.maximum) == (float(clean.min()), float(clean.max()))
    peak = np.unravel_index(clean.argmax(), clean.shape)
    flagged = outlier_voxels(clean, stats.noise_gain, stats.noise_offset)
    assert not flagged[peak]  # the brightest event voxel is signal, not an outlier
    assert not static_pixels(stats.std_frame.astype(np.float64) ** 2).any()


def test_static_pixels_are_constant_ones_and_lone_ones_are_repaired_from_neighbours():
    from casparks.preprocess import _lone

    variance = np.ones((6, 8))
    variance[2, 3] = 0  # a dead pixel
    variance[:, 6:] = 0  # a constant band, two pixels wide (outside the scan, saturated)
    found = static_pixels(variance)
    assert found[2, 3] and found[:, 6:].all() and found.sum() == 13
    lone = _lone(found)
    assert lone[2, 3] and lone.sum() == 1  # the band's rim has a varying neighbour, but is no lone pixel
    assert not static_pixels(np.zeros((4, 4))).any()  # a constant movie: nothing to leave out


def test_stats_of_a_memmap_in_blocks_equal_numpy(tmp_path):
    data = movie((37, 8, 12))
    path = tmp_path / "m.npy"
    np.save(path, data)
    mapped = np.load(path, mmap_mode="r")
    stats = movie_stats(mapped, block_frames=5)
    as_float = data.astype(np.float64)
    assert stats.n_frames == 37
    assert stats.minimum == as_float.min() and stats.maximum == as_float.max()
    assert stats.mean == pytest.approx(as_float.mean(), rel=1e-12)
    assert stats.std == pytest.approx(as_float.std(), rel=1e-10)
    np.testing.assert_allclose(stats.mean_frame, as_float.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.std_frame, as_float.std(axis=0), rtol=1e-5)
    residual = as_float - as_float.mean(axis=0)
    assert stats.residual_std == pytest.approx(residual.std(), rel=1e-10)
    assert stats.full_scale == 65535.0
    assert MovieStats.from_dict(stats.to_dict()).mean == stats.mean
    whole = movie_stats(data)  # one block: the frame-to-frame noise crosses block borders alike
    assert stats.noise_gain == pytest.approx(whole.noise_gain, rel=1e-9)
    assert stats.noise_offset == pytest.approx(whole.noise_offset, rel=1e-9)


def test_stats_stay_accurate_on_a_large_offset():
    data = (np.random.default_rng(1).normal(0, 1, (50, 4, 4)) + 1e6).astype(np.float64)
    stats = movie_stats(data, block_frames=3)
    assert stats.std == pytest.approx(data.std(), rel=1e-8)


def test_full_scale_by_dtype():
    assert movie_stats(movie(dtype=np.uint8)[:4] // 4).full_scale == 255.0
    floats = movie()[:4].astype(np.float32)
    assert movie_stats(floats).full_scale == floats.max()


def test_noise_model_recovers_the_gain_of_shot_noise():
    rng = np.random.default_rng(2)
    gain, offset = 3.0, 100.0
    photons = np.linspace(20, 400, 32 * 32).reshape(32, 32)
    data = gain * rng.poisson(photons, size=(200, 32, 32)) + offset
    stats = movie_stats(data)
    assert stats.noise_gain == pytest.approx(gain, rel=0.1)
    assert stats.noise_offset == pytest.approx(offset, abs=30)
    # slow bleaching does not inflate the noise estimate
    bleached = data * np.linspace(1.0, 0.6, 200)[:, None, None]
    assert movie_stats(bleached).noise_gain == pytest.approx(gain * 0.8, rel=0.15)
    # a flat movie falls back to the Poisson approximation (positive gain)
    assert estimate_noise(np.full((4, 4), 5.0), np.full((4, 4), 2.0))[0] > 0


# ----------------------------------------------------------------------------------------------
# normalisation


def test_normalisation_modes_give_the_documented_numbers():
    data = np.array([[[100, 200]], [[300, 1100]]], dtype=np.uint16)  # T=2, Y=1, X=2
    x = data.astype(np.float32)
    expected = {
        "abs_max": (x - 100) / (65535 - 100),
        "movie": (x - 100) / 1000,
        "percentile": (x - np.percentile(x, 0.1)) / (np.percentile(x, 99.9) - np.percentile(x, 0.1)),
        "zscore": (x - x.mean()) / x.std(),
        "none": x,
    }
    for mode, want in expected.items():
        np.testing.assert_allclose(run(data, Preprocessing(norm_video=mode)), want, rtol=1e-5, atol=1e-7,
                                   err_msg=mode)
    # chunk: min-max of the requested window only
    window = run(data, Preprocessing(norm_video="chunk"), 1, 2)
    np.testing.assert_allclose(window, [[[0.0, 1.0]]])
    # a constant movie does not divide by zero
    assert np.isfinite(run(np.full((3, 2, 2), 7, np.uint16), Preprocessing(norm_video="movie"))).all()


def test_percentiles_stream_through_blocks_and_sample_large_movies(monkeypatch):
    import casparks.preprocess as pre

    data = movie((37, 8, 12))
    exact = np.percentile(data.astype(np.float64), pre.NORM_PERCENTILES)
    for block in (None, 5):  # small movie: every voxel counts, in one block or several
        stats = movie_stats(data, block_frames=block)
        assert (stats.percentile_low, stats.percentile_high) == tuple(exact)
    monkeypatch.setattr(pre, "_PERCENTILE_SAMPLES", 1000)  # every 4th voxel of 3552, across blocks alike
    sampled = np.percentile(data.reshape(-1)[::4].astype(np.float64), pre.NORM_PERCENTILES)
    for block in (None, 5, 7):
        stats = movie_stats(data, block_frames=block)
        assert (stats.percentile_low, stats.percentile_high) == tuple(sampled)


def test_percentile_normalisation_ignores_a_bright_structure_that_min_max_does_not():
    """A static 3 × 3 px dye punctum at 3 × the brightest event (0.05 % of the voxels: the
    percentiles stand as long as such structures stay well below 0.1 %)."""
    clean = simulated_movie(64, 256)
    bright = clean.astype(np.int64)
    bright[:, 10:13, 40:43] += 3 * int(clean.max())
    bright = bright.astype(np.uint16)
    outside = np.ones(clean.shape, dtype=bool)
    outside[:, 10:13, 40:43] = False

    def change(mode):
        a, b = run(clean, Preprocessing(norm_video=mode)), run(bright, Preprocessing(norm_video=mode))
        return float(np.abs(a[outside] - b[outside]).max() / (a.max() - a.min()))

    assert change("percentile") < 0.05
    assert change("movie") > 0.4


def test_float_movies_use_their_own_maximum_for_abs_max():
    data = np.array([[[1.0, 2.0]], [[3.0, 5.0]]], dtype=np.float32)
    np.testing.assert_allclose(run(data, Preprocessing(norm_video="abs_max")), (data - 1) / 4)


def test_average_background_subtracts_the_mean_frame_and_keeps_the_scale():
    data = movie()
    x = data.astype(np.float64)
    stats = movie_stats(data)
    got = run(data, Preprocessing(norm_video="movie", remove_background="average"), stats=stats)
    np.testing.assert_allclose(got, (x - x.mean(axis=0)) / (x.max() - x.min()), atol=1e-6)
    z = run(data, Preprocessing(norm_video="zscore", remove_background="average"), stats=stats)
    assert z.std() == pytest.approx(1.0, rel=1e-4) and abs(z.mean()) < 1e-4


def test_moving_background_removes_a_slow_drift_but_keeps_a_brief_event():
    t = np.arange(200)
    drift = 100 + 2.0 * t  # slow rise
    data = np.broadcast_to(drift[:, None, None], (200, 4, 4)).copy()
    data[100:103, 1, 1] += 300  # a 3-frame event
    settings = Preprocessing(norm_video="none", remove_background="moving", background_window_ms=41 * DT)
    assert background_window_frames(settings, DT) == 41
    got = run(data.astype(np.float32), settings)
    away = got[30:170, 0, 0]
    assert np.abs(away).max() < 1e-3  # the linear drift is gone away from the ends
    assert got[101, 1, 1] > 250  # the event stays
    # it really runs: the result is not the input
    assert not np.allclose(got, data)
    np.testing.assert_allclose(
        got, data - ndimage.uniform_filter1d(data.astype(np.float32), 41, axis=0, mode="reflect"), atol=1e-3
    )


# ----------------------------------------------------------------------------------------------
# windows and padding


@pytest.mark.parametrize(
    "settings",
    [
        Preprocessing(norm_video="movie", remove_background="moving", background_window_ms=70.0),
        Preprocessing(norm_video="zscore", data_smoothing="3d", smoothing_sigma_ms=10.0, smoothing_sigma_um=0.3),
        Preprocessing(norm_video="abs_max", remove_background="moving", background_window_ms=100.0,
                      data_smoothing="3d", smoothing_sigma_ms=8.0),
        Preprocessing(norm_video="movie", remove_background="average", data_smoothing="2d"),
    ],
)
def test_windows_equal_the_slice_of_the_whole_movie(settings):
    data = movie()
    stats = movie_stats(data)
    whole = run(data, settings, stats=stats)
    assert context_frames(settings, PX, DT) >= 0
    for a, b in ((0, 10), (7, 23), (15, 40), (39, 40)):
        np.testing.assert_allclose(run(data, settings, a, b, stats=stats), whole[a:b], atol=1e-5, err_msg=f"{a}:{b}")


def test_frames_outside_the_movie_are_its_mirror_image():
    data = movie((6, 2, 3))
    np.testing.assert_array_equal(reflect_index(np.arange(-3, 9), 6), [2, 1, 0, 0, 1, 2, 3, 4, 5, 5, 4, 3])
    np.testing.assert_array_equal(reflect_index(np.arange(-2, 3), 1), [0, 0, 0, 0, 0])
    got = read_frames(data, -2, 8)
    np.testing.assert_array_equal(got, data[[1, 0, 0, 1, 2, 3, 4, 5, 5, 4]].astype(np.float32))
    settings = Preprocessing(norm_video="movie")
    out = run(data, settings, -2, 8)
    assert out.shape == (10, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[3])  # frame -2 is frame 1
    np.testing.assert_allclose(out[-1], out[-4])  # frame 7 is frame 4


def test_only_the_needed_frames_are_read():
    class Recorder(np.ndarray):
        reads: list = []

        def __getitem__(self, item):
            if isinstance(item, slice):
                Recorder.reads.append((item.start, item.stop))
            return np.asarray(self.view(np.ndarray)[item])

    data = movie((100, 4, 4)).view(Recorder)
    settings = Preprocessing(norm_video="movie", remove_background="moving", background_window_ms=5 * DT)
    stats = movie_stats(np.asarray(data))
    Recorder.reads.clear()
    preprocess_frames(data, 40, 50, stats, PX, DT, settings)
    assert Recorder.reads == [(38, 52)]  # 2 frames of context each side


# ----------------------------------------------------------------------------------------------
# smoothing


def test_smoothing_sigma_follows_the_units():
    data = np.zeros((21, 21, 21), dtype=np.float32)
    data[10, 10, 10] = 1.0
    settings = Preprocessing(norm_video="none", data_smoothing="3d", smoothing_sigma_um=0.4, smoothing_sigma_ms=10.0)

    def spread(out, axis):
        profile = out.sum(axis=tuple(a for a in range(3) if a != axis))
        x = np.arange(21) - 10
        return np.sqrt((profile * x**2).sum() / profile.sum())

    fine = preprocess_movie(data, None, 0.2, 5.0, settings)  # σ = 2 px, 2 frames
    coarse = preprocess_movie(data, None, 0.4, 10.0, settings)  # σ = 1 px, 1 frame
    assert spread(fine, 1) == pytest.approx(2.0, rel=0.05) and spread(fine, 0) == pytest.approx(2.0, rel=0.05)
    assert spread(coarse, 2) == pytest.approx(1.0, rel=0.05) and spread(coarse, 0) == pytest.approx(1.0, rel=0.05)
    flat = preprocess_movie(data, None, 0.2, 5.0, Preprocessing(norm_video="none", data_smoothing="2d", smoothing_sigma_um=0.4))
    assert np.count_nonzero(flat.sum(axis=(1, 2)) > 1e-6) == 1  # 2-D: no smoothing in time
    assert spread(flat, 1) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_movie_with_a_bad_value_in_a_later_block_names_its_frames(bad):
    data = np.random.default_rng(0).normal(100.0, 5.0, (10, 4, 5)).astype(np.float32)
    data[7, 2, 3] = bad
    with pytest.raises(CasparksError, match="NaN or infinite values in frames 6-8"):
        movie_stats(data, block_frames=3)
    data[7, 2, 3] = 100.0
    assert np.isfinite(movie_stats(data, block_frames=3).noise_gain)


@pytest.mark.parametrize("size", [3, 6])
def test_a_saturated_static_spot_sets_no_scale(size):
    """A spot saturated in every frame (debris, a saturated dye punctum) is constant together, so
    not a stuck pixel: at 3 × 3 px it kept the maximum at 65535 (146 false sparks around it), at
    6 × 6 px (0.11 % of the voxels here as in a 64 × 512 field) it set the 99.9th percentile and
    hid every event. Now it sets neither, and is clipped to the movie's own extremes."""
    clean = simulated_movie(height=64, width=512)
    spotted = clean.copy()
    spotted[:, 20:20 + size, 300:300 + size] = 65535
    before, after = movie_stats(clean), movie_stats(spotted)
    spot = np.zeros(clean.shape[1:], dtype=bool)
    spot[20:20 + size, 300:300 + size] = True
    assert after.maximum == float(clean[:, ~spot].max()) and after.minimum == float(clean[:, ~spot].min())
    assert after.percentile_high == pytest.approx(before.percentile_high, rel=0.01)
    settings = Preprocessing(norm_video="percentile")
    clean_input, spotted_input = run(clean, settings), run(spotted, settings)
    np.testing.assert_allclose(spotted_input[:, ~spot], clean_input[:, ~spot], rtol=0.02, atol=0.02)
    assert spotted_input[:, spot].max() <= spotted_input[:, ~spot].max()


def test_a_static_spot_is_clipped_and_a_stuck_pixel_repaired_in_every_frame_before_resampling():
    from casparks.preprocess import repair_outliers

    clean = simulated_movie()
    bad = clean.copy()
    bad[:, 4:8, 50:54] = 65535  # a saturated spot
    bad[:, 20, 30] = 4095  # a hot pixel
    repaired = repair_outliers(bad)
    assert repaired[:, 4:8, 50:54].max() <= clean.max()
    assert (repaired[:, 20, 30] < 4095).all() and abs(float(repaired[:, 20, 30].mean()) - float(clean[:, 19:22, 29:32].mean())) < 0.2 * float(clean.mean())


@pytest.mark.parametrize("width, taps", [(1.0, [1.0]), (2.5, [0.75, 1.0, 0.75]), (3.0, [1.0, 1.0, 1.0]),
                                         (4.0, [0.5, 1.0, 1.0, 1.0, 0.5]), (6.8, [0.9, 1, 1, 1, 1, 1, 0.9])])
def test_box_weights_average_over_a_box_of_the_width_given(width, taps):
    from casparks.preprocess import box_weights

    np.testing.assert_allclose(box_weights(width), np.array(taps) / width, atol=1e-12)


def test_only_a_movie_sampled_finer_than_the_finest_trained_one_is_averaged_to_the_native_sampling():
    from casparks.preprocess import averaging_widths

    finest, native = (0.1, 2.5), (0.2, 6.8)
    assert averaging_widths(0.2, 1.0, finest, to=native) == pytest.approx((6.8, 1.0, 1.0))
    assert averaging_widths(0.05, 6.8, finest, to=native) == pytest.approx((1.0, 4.0, 4.0))
    assert averaging_widths(0.05, 1.0, finest, to=native) == pytest.approx((6.8, 4.0, 4.0))
    assert averaging_widths(0.05, 2.0, finest) == pytest.approx((1.25, 2.0, 2.0))  # to the finest itself
    for px, dt in ((0.1, 2.5), (0.2, 6.8), (0.3, 10.0), (0.0995, 2.49)):  # the trained range, to 2 %
        assert averaging_widths(px, dt, finest, to=native) is None
    assert averaging_widths(0.05, 1.0, None) is None


def test_averaging_before_resampling_takes_the_noise_of_the_samples_it_averages():
    """Linear resampling from 1 ms to 6.8 ms reads two frames in seven: the noise of one frame.
    Averaged over 2.5 frames first, each new frame weighs 3-4 frames (the running mean's taps,
    interpolated between two neighbours): its noise falls as the sum of the squared weights says."""
    from casparks.preprocess import box_weights, resample_movie

    rng = np.random.default_rng(0)
    noise = rng.normal(100.0, 10.0, size=(3400, 16, 16)).astype(np.float32)
    factors = (1 / 6.8, 1.0, 1.0)
    plain = resample_movie(noise, factors)
    averaged = resample_movie(noise, factors, average=(2.5, 1.0, 1.0))
    assert plain.shape == averaged.shape == (500, 16, 16)
    at = (np.arange(500) + 0.5) * 6.8 - 0.5  # the new frames' places among the old (grid mode)
    a = at - np.floor(at)
    taps = box_weights(2.5)
    shifted = np.convolve(taps, [1.0, 0.0]), np.convolve(taps, [0.0, 1.0])  # the taps at lo and lo + 1
    averaged_var = np.mean([np.sum(((1 - f) * shifted[0] + f * shifted[1]) ** 2) for f in a])
    plain_var = np.mean((1 - a) ** 2 + a**2)
    expected = np.sqrt(averaged_var / plain_var)  # 0.68
    assert averaged.std() / plain.std() == pytest.approx(expected, rel=0.03)
    assert averaged.mean() == pytest.approx(100.0, abs=0.1)  # a running mean: the level is kept
    kept = noise.copy()
    resample_movie(noise, factors, average=(2.5, 2.0, 2.0))
    assert np.array_equal(noise, kept)  # a float32 movie is averaged in a copy, never in place
    with pytest.raises(ValueError, match="labels"):
        resample_movie(np.zeros((10, 4, 4), np.uint8), factors, order=0, average=(2.5, 1.0, 1.0))


@pytest.mark.parametrize("average", [(2.5, 1.0, 1.0), (1.0, 2.0, 2.0), (6.8, 1.5, 1.5)])
def test_streamed_averaged_frames_are_the_whole_movies_at_every_cut(average):
    """A segment reads the frames its running mean needs beyond its own: any slice of the streamed
    movie equals the whole movie averaged and resampled, at the movie's ends too."""
    from casparks.preprocess import ResampledFrames, average_samples, box_weights, resample_movie, resampled_stats

    movie = simulated_movie()
    factors = (0.4, 0.5, 0.5)
    whole = resample_movie(movie, factors, average=average)
    streamed = ResampledFrames(movie, factors, average=average)
    assert streamed.shape == whole.shape
    n = whole.shape[0]
    for lo, hi in ((0, 3), (0, n), (5, 9), (n - 4, n), (n // 2, n // 2 + 1)):
        np.testing.assert_allclose(streamed[lo:hi], whole[lo:hi], rtol=1e-5, atol=1e-3)
    direct = movie.astype(np.float32)  # the running means by definition, the whole movie at once
    for axis, width in enumerate(average):
        direct = ndimage.correlate1d(direct, box_weights(width), axis=axis, mode="nearest")
    np.testing.assert_allclose(average_samples(movie, average), direct, rtol=1e-5, atol=1e-3)
    stats = resampled_stats(movie, factors, block_frames=3, average=average)
    assert stats.percentile_high == pytest.approx(movie_stats(whole).percentile_high, rel=1e-4)


@pytest.mark.parametrize("source, target", [((40, 16, 24), (272, 16, 24)), ((40, 16, 24), (27, 11, 16)),
                                            ((40, 32, 48), (40, 64, 96)), ((33, 16, 20), (200, 50, 61))],
                         ids=["1 ms", "coarser", "0.05 um", "both"])
def test_probabilities_are_brought_back_as_a_trilinear_zoom_one_axis_at_a_time(source, target):
    """ndimage.zoom interpolated every voxel in 3-D (16 s of a 1 ms movie's 39 s); the separable
    version, a block of frames at a time, gives its values (and still sums to 1)."""
    from casparks.preprocess import resample_probabilities

    rng = np.random.default_rng(1)
    probs = rng.random((4, *source)).astype(np.float32)
    probs /= probs.sum(axis=0)
    zoom = [t / s for t, s in zip(target, source)]
    expected = np.stack([ndimage.zoom(p, zoom, order=1, mode="nearest", grid_mode=True) for p in probs])
    expected /= expected.sum(axis=0)
    got = resample_probabilities(probs, target, block_frames=7)
    assert got.shape == (4, *target) and np.abs(got - expected).max() < 1e-6
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-6)
    last = source[0] - 1
    at = np.array([-1.0, 0.0, 2.25, last, last + 5.0])  # given positions, clipped to the frames there are
    part = resample_probabilities(probs, (5, *source[1:]), at_t=at)
    np.testing.assert_allclose(part[:, 2], 0.75 * probs[:, 2] + 0.25 * probs[:, 3], atol=1e-6)
    assert np.array_equal(part[:, 0], part[:, 1]) and np.array_equal(part[:, 3], part[:, 4])
    np.testing.assert_allclose(part[:, 3], probs[:, last], atol=1e-6)

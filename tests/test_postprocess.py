"""Post-processing: thresholds, classes, gap merging, spark splitting, minimum sizes, ids, configs."""

from __future__ import annotations

from dataclasses import replace
import json

import numpy as np
import pytest
import yaml

from casparks.classes import BACKGROUND, IGNORE, PUFF, SPARK, WAVE
from casparks.errors import CasparksError
from casparks.evaluation import evaluate_movie
from casparks.postprocess import (
    PostprocessConfig,
    PostprocessError,
    PostprocessResult,
    postprocess,
    probabilities_to_classes,
    separate_events,
)
from casparks.simulate import simulate_movie
from casparks.simulation_params import load_simulation_config

PX, DT = 0.2, 6.8  # µm, ms: the reference data set
NO_SMOOTHING = {"spark_smooth_sigma_um": 0.0, "spark_smooth_sigma_ms": 0.0}


def one_hot(classes: np.ndarray) -> np.ndarray:
    """(4, T, Y, X) float32 probabilities that are 1 on the given class (ignore → background)."""
    p = np.zeros((4, *classes.shape), dtype=np.float32)
    for code in range(4):
        p[code] = classes == code
    p[0][classes == IGNORE] = 1.0
    return p


def gaussian_blob(shape, centre, sigma, amplitude=100.0) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return amplitude * np.exp(-sum((g - c) ** 2 / (2 * s**2) for g, c, s in zip(grids, centre, sigma)))


# ----------------------------------------------------------------------------------------------
# probabilities → classes


def test_fixed_threshold_and_otsu_threshold_differ_on_faint_events():
    classes = np.zeros((10, 8, 8), np.uint8)
    classes[2:6, 2:6, 2:6] = SPARK
    p = np.zeros((4, *classes.shape), np.float32)
    p[0] = np.where(classes == SPARK, 0.65, 0.95)  # event probability 0.35 in the spark, 0.05 elsewhere
    p[1] = 1.0 - p[0]

    fixed, used = probabilities_to_classes(p, PostprocessConfig(event_threshold=0.5))
    assert used == 0.5
    assert not fixed.any()

    otsu, used = probabilities_to_classes(p, PostprocessConfig())
    assert 0.2 <= used < 0.35
    assert np.array_equal(otsu, classes)


def test_otsu_is_clamped_so_a_movie_without_events_stays_empty():
    rng = np.random.default_rng(0)
    p = np.zeros((4, 10, 8, 8), np.float32)
    event = rng.uniform(0.0, 0.06, size=p.shape[1:]).astype(np.float32)
    p[0], p[1] = 1 - event, event
    classes, used = probabilities_to_classes(p, PostprocessConfig(otsu_min=0.25))
    assert used == pytest.approx(0.25)
    assert not classes.any()
    # a constant movie has nothing to separate: the middle of the clamp range
    _, used = probabilities_to_classes(one_hot(np.zeros((4, 4, 4), np.uint8)), PostprocessConfig())
    assert used == pytest.approx(0.5)


def test_class_is_the_argmax_among_event_classes_not_among_all():
    p = np.zeros((4, 1, 1, 3), np.float32)
    # background is the single most probable class, but the events together win
    p[:, 0, 0, 0] = [0.4, 0.2, 0.15, 0.25]  # → puff
    p[:, 0, 0, 1] = [0.3, 0.1, 0.5, 0.1]  # → wave
    p[:, 0, 0, 2] = [0.6, 0.3, 0.05, 0.05]  # event probability 0.4 < 0.5 → background
    classes, _ = probabilities_to_classes(p, PostprocessConfig(event_threshold=0.5))
    assert classes.dtype == np.uint8
    assert classes[0, 0].tolist() == [PUFF, WAVE, BACKGROUND]


def test_sparks_at_a_wave_fringe_become_wave_when_the_network_half_saw_a_wave():
    p = np.zeros((4, 12, 12, 120), np.float32)
    p[0] = 1.0

    def put(box, spark, wave):
        p[(slice(None), *box)] = np.array([0.0, spark, wave, 1.0 - spark - wave], np.float32)[:, None, None, None]

    put((slice(0, 12), slice(0, 12), slice(0, 80)), 0.0, 1.0)  # a wave: 81.6 ms, 16 µm
    hesitant = (slice(2, 6), slice(3, 7), slice(80, 84))  # touches the wave, p(wave) 0.3
    put(hesitant, 0.6, 0.3)
    sure = (slice(7, 11), slice(7, 11), slice(80, 84))  # touches it too, p(wave) 0.1
    put(sure, 0.8, 0.1)
    apart = (slice(2, 6), slice(3, 7), slice(100, 104))  # far from it, p(wave) 0.35
    put(apart, 0.6, 0.35)
    speck = (slice(3, 4), slice(4, 5), slice(104, 105))  # a wave-coloured voxel on it: no wave
    put(speck, 0.3, 0.6)
    classes, _ = probabilities_to_classes(p, PostprocessConfig(event_threshold=0.5))

    def classes_of(box, fringe, probabilities=p):
        config = PostprocessConfig(event_threshold=0.5, wave_fringe_min_probability=fringe)
        return np.unique(separate_events(classes, probabilities, config, PX, DT)[0][box]).tolist()

    assert classes_of(hesitant, 0.2) == [WAVE]
    assert classes_of(sure, 0.2) == [SPARK]
    assert classes_of(apart, 0.2) == [SPARK]  # its speck is too small to be a wave (absorbed)
    assert classes_of(hesitant, None) == [SPARK]  # off by default
    assert classes_of(hesitant, 0.35) == [SPARK]
    assert classes_of(sure, 0.0) == [WAVE]
    assert classes.max() == WAVE and classes_of(hesitant, 0.2)  # the input is not modified
    assert np.unique(classes[hesitant]).tolist() == [SPARK]
    with pytest.raises(PostprocessError, match="wave_fringe_min_probability needs the probabilities"):
        separate_events(classes, None, PostprocessConfig(wave_fringe_min_probability=0.2), PX, DT,
                        movie=np.ones(classes.shape))

    # the same scene away from the movie's corner (waves and sparks are labelled in a box around
    # the wave's components): the same classes, in the same place
    pad = ((0, 0), (3, 2), (2, 1), (5, 4))
    shifted_p = np.pad(p, pad)
    shifted_p[0][np.pad(np.zeros(p.shape[1:], bool), pad[1:], constant_values=True)] = 1.0
    shifted, _ = probabilities_to_classes(shifted_p, PostprocessConfig(event_threshold=0.5))
    config = PostprocessConfig(event_threshold=0.5, wave_fringe_min_probability=0.2)
    moved = separate_events(shifted, shifted_p, config, PX, DT)[0][3:-2, 2:-1, 5:-4]
    assert np.array_equal(moved, separate_events(classes, p, config, PX, DT)[0])
    assert np.unique(moved[hesitant]).tolist() == [WAVE]


def test_two_class_probabilities_give_sparks():
    p = np.zeros((2, 2, 2, 2), np.float32)
    p[0], p[1] = 1.0, 0.0
    p[:, 1, 1, 1] = [0.1, 0.9]
    classes, _ = probabilities_to_classes(p, PostprocessConfig(event_threshold=0.5))
    assert classes.sum() == SPARK and classes[1, 1, 1] == SPARK


@pytest.mark.parametrize("shape", [(4, 5, 5), (5, 2, 5, 5), (1, 2, 5, 5)])
def test_probabilities_of_the_wrong_shape_are_rejected(shape):
    with pytest.raises(PostprocessError, match="shape"):
        probabilities_to_classes(np.zeros(shape, np.float32), PostprocessConfig())


# ----------------------------------------------------------------------------------------------
# sparks


def spark_pair(offset_frames: int, offset_px: int, shape=(24, 20, 48)):
    """A movie with two maxima inside one spark component (a box 3 frames and 6 px around them)."""
    t0, y0, x0 = 6, 10, 10
    movie = np.full(shape, 100.0, np.float32)
    movie += gaussian_blob(shape, (t0, y0, x0), (1.0, 1.5, 1.5))
    movie += gaussian_blob(shape, (t0 + offset_frames, y0, x0 + offset_px), (1.0, 1.5, 1.5))
    classes = np.zeros(shape, np.uint8)
    classes[t0 - 3 : t0 + offset_frames + 4, y0 - 6 : y0 + 7, x0 - 6 : x0 + offset_px + 7] = SPARK
    return movie, classes, (t0, y0, x0), (t0 + offset_frames, y0, x0 + offset_px)


@pytest.mark.parametrize(
    "offset_frames, offset_px, expected",
    [
        (0, 12, 2),  # 2.4 µm apart at the same time: two sparks
        (0, 6, 1),  # 1.2 µm apart (< 1.8 µm) at the same time: one
        (4, 0, 2),  # same place, 27.2 ms apart (> 20 ms): two
        (2, 0, 1),  # same place, 13.6 ms apart (< 20 ms): one
        (2, 12, 2),  # close in time but far in space: two
    ],
)
def test_sparks_split_by_peaks_farther_than_the_min_distance(offset_frames, offset_px, expected):
    movie, classes, first, second = spark_pair(offset_frames, offset_px)
    config = PostprocessConfig(**NO_SMOOTHING)
    cleaned, events = separate_events(classes, one_hot(classes), config, PX, DT, movie=movie)
    assert np.array_equal(cleaned, classes)  # splitting never changes classes
    assert sorted(np.unique(events).tolist()) == list(range(expected + 1))
    if expected == 2:  # the watershed puts each maximum in its own spark, covering the component
        assert events[first] != events[second]
        assert np.array_equal(events > 0, classes == SPARK)


def test_far_apart_sparks_are_split_with_the_default_smoothing():
    movie, classes, first, second = spark_pair(0, 14)
    result = postprocess(one_hot(classes), PostprocessConfig(), PX, DT, movie=movie)
    assert result.n_events == 2
    assert {int(result.event_label[first]), int(result.event_label[second])} == {1, 2}
    # one peak per spark, inside it, in id order
    assert result.spark_peaks.shape == (2, 3)
    assert result.spark_ids.tolist() == [1, 2]
    ids = [int(result.event_label[tuple(peak)]) for peak in result.spark_peaks]
    assert ids == [1, 2]
    assert np.abs(result.spark_peaks - np.array(sorted([first, second], key=lambda p: p[2]))).max() <= 1


def test_a_small_spark_has_its_peak_at_its_centre_or_its_bright_part():
    classes = np.zeros((8, 12, 12), np.uint8)
    classes[2:5, 3:8, 3:8] = SPARK  # 3 frames × 1 µm: too small to hold two peaks
    result = postprocess(one_hot(classes), PostprocessConfig(), PX, DT)
    assert result.spark_peaks.tolist() == [[3, 5, 5]]
    movie = np.full(classes.shape, 100.0) + gaussian_blob(classes.shape, (2, 7, 3), (0.7, 0.7, 0.7))
    result = postprocess(one_hot(classes), PostprocessConfig(), PX, DT, movie=movie)
    t, y, x = result.spark_peaks[0]
    assert t <= 3 and y >= 6 and x <= 4


def test_without_a_movie_the_spark_probability_splits_touching_blobs():
    # two 9-px discs touching through a 1-px neck: one component, two thick parts 2.4 µm apart
    classes = np.zeros((8, 16, 40), np.uint8)
    yy, xx = np.ogrid[:16, :40]
    discs = ((yy - 8) ** 2 + (xx - 10) ** 2 <= 20) | ((yy - 8) ** 2 + (xx - 22) ** 2 <= 20)
    neck = (yy == 8) & (xx >= 10) & (xx <= 22)
    classes[1:7][:, discs | neck] = SPARK
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert np.array_equal(cleaned, classes)
    assert events.max() == 2
    assert events[4, 8, 10] != events[4, 8, 22]


def test_spark_split_on_chooses_the_movie_or_the_spark_probability():
    movie, classes, first, second = spark_pair(0, 12)  # two bright spots 2.4 µm apart
    between = tuple((a + b) // 2 for a, b in zip(first, second))
    one_bump = np.clip(gaussian_blob(classes.shape, between, (2.0, 6.0, 6.0), amplitude=1.0), 0, 1)
    two_bumps = np.clip(gaussian_blob(classes.shape, first, (1.0, 2.0, 2.0), amplitude=1.0)
                        + gaussian_blob(classes.shape, second, (1.0, 2.0, 2.0), amplitude=1.0), 0, 1)
    flat = np.full(classes.shape, 100.0)

    def n_sparks(spark_probability, movie, split_on):
        p = one_hot(classes)
        p[SPARK] = np.where(classes == SPARK, spark_probability, 0.0)
        p[BACKGROUND] = 1.0 - p[SPARK]
        config = PostprocessConfig(spark_split_on=split_on, **NO_SMOOTHING)
        return int(separate_events(classes, p, config, PX, DT, movie=movie)[1].max())

    assert n_sparks(one_bump, movie, "movie") == 2  # the movie's two spots
    assert n_sparks(one_bump, movie, "probability") == 1  # the network saw one spark
    assert n_sparks(two_bumps, flat, "movie") == 1
    assert n_sparks(two_bumps, flat, "probability") == 2
    assert n_sparks(two_bumps, None, "movie") == 2  # no movie: the probability, as before
    with pytest.raises(PostprocessError, match="spark_split_on is 'probability' but no probabilities"):
        separate_events(classes, None, PostprocessConfig(spark_split_on="probability"), PX, DT, movie=movie)


# ----------------------------------------------------------------------------------------------
# waves and puffs: temporal gaps


def wave_with_gap(gap_frames: int):
    classes = np.zeros((40, 10, 90), np.uint8)
    classes[2:14, 1:9, 2:88] = WAVE  # 12 frames, 17.2 µm wide
    classes[14 + gap_frames : 30 + gap_frames, 1:9, 3:89] = WAVE
    return classes


@pytest.mark.parametrize("gap_frames, expected", [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_a_wave_with_a_short_gap_is_one_event_a_long_gap_two(gap_frames, expected):
    classes = wave_with_gap(gap_frames)  # gap 2 frames = 13.6 ms ≤ 20 ms; 3 frames = 20.4 ms > 20 ms
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert events.max() == expected
    assert np.array_equal(events > 0, classes == WAVE)
    assert np.array_equal(cleaned, classes)  # the gap is not painted
    assert not events[14 : 14 + gap_frames].any()


def test_gap_merging_is_in_ms_and_can_be_turned_off():
    classes = wave_with_gap(2)
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(merge_gap_ms=0), PX, DT)
    assert events.max() == 2
    # at 12 ms per frame the same 2-frame gap lasts 24 ms > 20 ms: two waves
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_min_duration_ms=0), PX, 12.0)
    assert events.max() == 2


def two_waves_in_turn(second_width_px: int = 150, second_rows: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A wave from x = 100 both ways, and a second one that starts at x = 50 just after the
    first has passed there and runs to the right through pixels the first left earlier: one
    connected component (they touch at x = 50). Each pixel is in a wave for 8 frames; 4 px per
    frame (0.8 µm / 6.8 ms = 118 µm/s); 40 rows (8 µm), the second wave in its first
    ``second_rows``. Returns the class label and the true wave of each voxel."""
    frames, width = 80, 200
    t = np.arange(frames)[:, None]
    x = np.arange(width)[None, :]
    first_at = 2 + np.abs(x - 100) // 4
    second_at = first_at[0, 50] + 8 + (x - 50) // 4
    first = (t >= first_at) & (t < first_at + 8)
    second = (t >= second_at) & (t < second_at + 8) & (x >= 50) & (x < 50 + second_width_px)
    truth = np.repeat(np.where(second, 2, np.where(first, 1, 0))[:, None, :], 40, axis=1)
    truth[:, second_rows:][truth[:, second_rows:] == 2] = 0
    return np.where(truth > 0, WAVE, BACKGROUND).astype(np.uint8), truth


def test_a_second_wave_through_the_pixels_of_the_first_becomes_an_event_of_its_own():
    classes, truth = two_waves_in_turn()
    _, merged = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert merged.max() == 1  # connected where the second starts: one wave without the split
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_split_gap_ms=50), PX, DT)
    assert events.max() == 2 and np.array_equal(cleaned, classes) and np.array_equal(events > 0, classes == WAVE)
    # the first wave keeps its voxels; the second gets every voxel that came > 50 ms (7 frames)
    # after its pixel's first passage: all of it but where it starts right behind the first
    assert np.array_equal(np.unique(events[truth == 1]), [1])
    assert np.unique(events[truth == 2]).tolist() == [1, 2]
    assert (events[truth == 2] == 2).mean() > 0.85
    # in ms: the quiet frames between the passages (at most 25) last less than 50 ms at 1.5 ms per frame
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_split_gap_ms=50, wave_min_duration_ms=0), PX, 1.5)
    assert events.max() == 1


def waves_passing(arrivals: list[np.ndarray], shape: tuple[int, int, int], frames_in_wave: int = 25) -> np.ndarray:
    """The true wave (1, 2, …) of each voxel of waves arriving at each column x at the frames
    ``arrivals`` (each an array over x, NaN where a wave never comes), ``frames_in_wave`` each."""
    t = np.arange(shape[0])[:, None]
    truth = np.zeros((shape[0], shape[2]), np.uint8)
    for k, at in enumerate(arrivals, 1):
        truth[(t >= at[None]) & (t < at[None] + frames_in_wave)] = k
    return np.repeat(truth[:, None, :], shape[1], axis=1)


def test_a_second_wave_keeps_its_voxels_at_pixels_the_first_never_reached():
    """Wave 1 runs left from x = 100 out of the field; wave 2 starts at the left edge as wave 1
    leaves and crosses the whole field. Wave 2's voxels at x > 100 stayed with wave 1, which then
    lasted twice as long and reached x 149."""
    shape = (200, 16, 150)
    x = np.arange(shape[2], dtype=float)
    truth = waves_passing([np.where(x <= 100, 5 + (100 - x) / 1.5, np.nan), 5 + 100 / 1.5 + 25 + x / 1.5], shape)
    classes = np.where(truth > 0, WAVE, BACKGROUND).astype(np.uint8)
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_split_gap_ms=100), PX, DT)
    assert events.max() == 2
    assert np.array_equal(np.unique(events[truth == 1]), [1])
    assert (events[truth == 2] == 2).mean() > 0.95
    assert np.flatnonzero((events == 1).any(axis=(0, 1))).max() == 100  # wave 1 ends where it began


def test_three_waves_in_turn_through_the_same_pixels_are_three():
    """A wave crossing the field, reflected back, and again: each starts where the last one ends.
    Waves 2 and 3 came out as one event (every passage after the first was one)."""
    shape = (330, 16, 150)
    x, length = np.arange(shape[2], dtype=float), shape[2] - 1
    truth = waves_passing([x / 1.5 + 5, (2 * length - x) / 1.5 + 5, (2 * length + x) / 1.5 + 5], shape)
    classes = np.where(truth > 0, WAVE, BACKGROUND).astype(np.uint8)
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_split_gap_ms=100), PX, DT)
    assert events.max() == 3
    # each true wave mostly one event of its own, in order (where a wave turns back, its pixels
    # never leave it between the two passages: those voxels go to the earlier wave)
    for k in (1, 2, 3):
        assert (events[truth == k] == k).mean() > 0.75


def test_a_later_passage_needs_more_empty_frames_than_the_gap():
    """The gap counts the frames a pixel spends outside the wave, as ``merge_gap_ms`` does: a
    hole of exactly ``gap`` frames is the same passage, one frame more is a later one."""
    from casparks.postprocess import _later_passages

    def later(course: list[int], gap: int) -> list[bool]:
        return _later_passages(np.array(course, bool)[:, None, None], gap)[:, 0, 0].tolist()

    assert later([1, 0, 0, 1, 1], 2) == [False] * 5
    assert later([1, 0, 0, 0, 1, 1], 2) == [False, False, False, False, True, True]
    assert later([0, 0, 0, 1, 0, 1], 0) == [False, False, False, False, False, True]
    assert later([1, 1, 1], 0) == [False] * 3


@pytest.mark.parametrize("width, rows", [(70, 40), (150, 2)])
def test_a_later_passage_too_small_for_a_wave_stays_with_its_wave(width, rows):
    """Too narrow (a later passage over ~50 px = 10 µm < 15 µm), or a sliver (2 rows × 27 µm =
    11 µm² < 50 µm²): one wave."""
    classes, _ = two_waves_in_turn(second_width_px=width, second_rows=rows)
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_split_gap_ms=50), PX, DT)
    assert events.max() == 1
    _, events = separate_events(classes, one_hot(classes),
                                PostprocessConfig(wave_split_gap_ms=50, wave_split_min_area_um2=10), PX, DT)
    assert events.max() == (1 if width == 70 else 2)


def test_a_wave_is_not_split_by_a_short_hole_or_without_the_setting():
    classes = wave_with_gap(2)  # pieces 2 frames apart at every pixel, merged into one wave
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(wave_split_gap_ms=50), PX, DT)
    assert events.max() == 1
    with pytest.raises(PostprocessError, match="wave_split_gap_ms"):
        PostprocessConfig(wave_split_gap_ms=0)
    assert PostprocessConfig.from_dict({"wave_split_gap_ms": 200}).wave_split_gap_ms == 200.0


def test_puff_pieces_are_merged_but_sparks_are_not():
    classes = np.zeros((30, 10, 10), np.uint8)
    classes[1:9, 2:8, 2:8] = PUFF
    classes[11:19, 2:8, 2:8] = PUFF  # 2-frame gap: one puff
    classes[21:24, 2:8, 2:8] = SPARK
    classes[26:29, 2:8, 2:8] = SPARK  # 2-frame gap: still two sparks
    _, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert events.max() == 3
    assert events[1, 4, 4] == events[18, 4, 4] == 1
    assert events[22, 4, 4] == 2 and events[27, 4, 4] == 3


# ----------------------------------------------------------------------------------------------
# minimum sizes


def test_minimum_sizes_are_in_micrometres_and_milliseconds():
    classes = np.zeros((10, 12, 12), np.uint8)
    classes[3:5, 4:8, 4:8] = SPARK  # 2 frames × 4 × 4 px
    config = PostprocessConfig()  # sparks ≥ 10 ms and ≥ 0.6 µm
    p = one_hot(classes)

    cleaned, events = separate_events(classes, p, config, 0.2, 6.8)  # 13.6 ms, 0.8 µm: kept
    assert events.max() == 1 and np.array_equal(cleaned, classes)

    cleaned, events = separate_events(classes, p, config, 0.1, 6.8)  # 0.4 µm: removed
    assert not events.any() and not cleaned.any()

    cleaned, events = separate_events(classes, p, config, 0.2, 4.0)  # 8 ms: removed
    assert not events.any() and not cleaned.any()

    _, events = separate_events(classes, p, PostprocessConfig(spark_min_diameter_um=0.3), 0.1, 6.8)
    assert events.max() == 1


def test_a_narrow_wave_and_a_short_puff_are_removed():
    classes = np.zeros((20, 10, 100), np.uint8)
    classes[1:15, 1:9, 2:60] = WAVE  # 11.6 µm < 15 µm
    classes[1:5, 1:9, 70:78] = PUFF  # 27.2 ms < 34 ms
    classes[8:14, 1:9, 70:78] = PUFF  # 3-frame gap (20.4 ms): not merged, 40.8 ms: kept
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert events.max() == 1
    assert np.array_equal(cleaned == PUFF, events == 1)
    assert not (cleaned == WAVE).any()


# ----------------------------------------------------------------------------------------------
# ids


def test_ids_are_consecutive_uint16_in_onset_order():
    rng = np.random.default_rng(1)
    classes = np.zeros((60, 40, 80), np.uint8)
    for t in range(0, 60, 6):
        for y in range(0, 40, 8):
            for x in range(0, 80, 8):
                if rng.random() < 0.7:
                    classes[t : t + 3, y : y + 4, x : x + 4] = SPARK
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    n = int(events.max())
    assert events.dtype == np.uint16
    assert n > 100
    assert np.array_equal(np.unique(events), np.arange(n + 1))
    onsets = [int(np.flatnonzero((events == i).any(axis=(1, 2)))[0]) for i in range(1, n + 1)]
    assert onsets == sorted(onsets)
    assert np.array_equal(cleaned, classes)


def test_more_than_65535_events_are_stored_as_uint32():
    classes = np.zeros((1, 514, 512), np.uint8)
    classes[0, ::2, ::2] = PUFF  # 257 × 256 = 65 792 isolated one-voxel puffs
    config = PostprocessConfig(puff_min_duration_ms=0, puff_min_diameter_um=0)
    _, events = separate_events(classes, one_hot(classes), config, PX, DT)
    assert events.dtype == np.uint32
    assert int(events.max()) == 65_792
    assert np.array_equal(np.unique(events[0, ::2, ::2]), np.arange(1, 65_793))


def test_no_events():
    classes = np.zeros((5, 6, 7), np.uint8)
    result = postprocess(one_hot(classes), PostprocessConfig(), PX, DT)
    assert result.n_events == 0 and not result.event_label.any() and not result.class_label.any()
    assert result.spark_peaks.shape == (0, 3) and result.event_label.dtype == np.uint16


# ----------------------------------------------------------------------------------------------
# blobs of several classes


def test_a_fragment_too_small_for_its_class_joins_the_event_it_touches():
    classes = np.zeros((20, 16, 16), np.uint8)
    classes[4:10, 4:12, 4:12] = SPARK  # a spark, 6 frames × 8 × 8 px
    classes[10, 5:11, 5:11] = PUFF  # a one-frame puff-coloured tail: too short for a puff
    classes[5:9, 12, 6:10] = PUFF  # a thin puff-coloured fringe on its side: 27 ms, too short too
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert events.max() == 1
    assert np.array_equal(events > 0, classes > 0)
    assert np.array_equal(cleaned, np.where(classes > 0, SPARK, 0))


def test_an_event_big_enough_for_its_class_keeps_its_class_when_touching_another():
    classes = np.zeros((30, 12, 100), np.uint8)
    classes[2:28, 1:11, 10:95] = WAVE  # a wave, 17 µm wide
    classes[10:14, 4:8, 6:10] = SPARK  # a spark touching its side: 4 frames, 0.8 µm
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert np.array_equal(cleaned, classes)
    assert events.max() == 2
    assert events[12, 5, 7] != events[12, 5, 50]
    assert len(np.unique(cleaned[events == events[12, 5, 7]])) == 1


def test_absorption_repeats_until_small_fragments_reach_a_big_event():
    classes = np.zeros((30, 12, 100), np.uint8)
    classes[2:28, 1:11, 10:95] = WAVE  # a wave
    classes[10:13, 4:8, 7:10] = PUFF  # a 3-frame puff fragment on its side (too short)
    classes[11, 5:7, 5:7] = SPARK  # a one-frame spark fragment touching only the puff fragment
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert events.max() == 1
    assert np.array_equal(cleaned, np.where(classes > 0, WAVE, 0))


def test_small_fragments_touching_nothing_bigger_are_removed():
    classes = np.zeros((10, 10, 10), np.uint8)
    classes[4, 4:6, 4:6] = PUFF  # one frame: too short
    classes[4, 6, 4:6] = SPARK  # smaller, touching it: joins the puff, which is still too short
    cleaned, events = separate_events(classes, one_hot(classes), PostprocessConfig(), PX, DT)
    assert not events.any() and not cleaned.any()


def test_ignore_voxels_stay_ignore_and_are_no_events():
    classes = np.zeros((8, 8, 8), np.uint8)
    classes[:, :, 6:] = IGNORE
    classes[2:6, 2:6, 2:6] = SPARK
    cleaned, events = separate_events(classes, None, PostprocessConfig(), PX, DT, movie=np.ones(classes.shape))
    assert np.array_equal(cleaned, classes)
    assert np.array_equal(events > 0, classes == SPARK)


# ----------------------------------------------------------------------------------------------
# inputs


def test_bad_inputs_say_what_is_wrong():
    classes = np.zeros((4, 5, 6), np.uint8)
    p = one_hot(classes)
    with pytest.raises(PostprocessError, match="pixel_size_um"):
        separate_events(classes, p, PostprocessConfig(), 0.0, DT)
    with pytest.raises(PostprocessError, match="movie"):
        separate_events(classes, p, PostprocessConfig(), PX, DT, movie=np.zeros((4, 5, 7)))
    with pytest.raises(PostprocessError, match="codes"):
        separate_events(np.full((4, 5, 6), 7, np.uint8), p, PostprocessConfig(), PX, DT)
    with pytest.raises(PostprocessError, match="probabilities or the movie"):
        separate_events(classes, None, PostprocessConfig(), PX, DT)


# ----------------------------------------------------------------------------------------------
# configuration


def test_config_rejects_unknown_keys_naming_the_known_ones():
    with pytest.raises(CasparksError, match="merge_gap_mss") as info:
        PostprocessConfig.from_dict({"merge_gap_mss": 10})
    assert "merge_gap_ms" in str(info.value).split(";")[1]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "values",
    [
        {"event_threshold": 1.5},
        {"event_threshold": "auto"},
        {"event_threshold": True},
        {"spark_min_distance_um": 0},
        {"puff_min_duration_ms": -1},
        {"wave_min_diameter_um": float("nan")},
        {"otsu_min": 0.9, "otsu_max": 0.5},
        {"merge_gap_ms": "20"},
        {"spark_split_on": "pixels"},
        {"wave_fringe_min_probability": 1.5},
        {"wave_fringe_min_probability": "high"},
    ],
)
def test_config_rejects_bad_values(values):
    with pytest.raises(PostprocessError):
        PostprocessConfig.from_dict(values)


def test_config_round_trips_through_dict_yaml_and_json():
    config = PostprocessConfig(event_threshold=0.4, merge_gap_ms=30.0, wave_min_diameter_um=10.0,
                               spark_split_on="probability", wave_fringe_min_probability=0.2)
    assert PostprocessConfig.from_dict(config.to_dict()) == config
    assert PostprocessConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert PostprocessConfig.from_dict(json.loads(json.dumps(PostprocessConfig().to_dict()))) == PostprocessConfig()
    assert PostprocessConfig(event_threshold="0.3").event_threshold == 0.3
    assert PostprocessConfig(event_threshold="Otsu").event_threshold == "otsu"
    assert config.min_duration_ms(PUFF) == 34.0 and config.min_diameter_um(WAVE) == 10.0


# ----------------------------------------------------------------------------------------------
# round trip on simulated movies


SMALL = {"n_frames": 100, "height_px": 32, "width_px": 128}
#: seeds of the small simulation with events, among them a spark and a puff touching a wave
SEEDS = (1, 2, 12, 13, 16, 17, 18)


@pytest.mark.parametrize("use_movie", [False, True])
def test_perfect_probabilities_of_simulated_movies_give_back_the_truth(use_movie):
    sim_config = load_simulation_config("default", SMALL)
    # the small field is 6.4 × 25.6 µm: its waves cannot be 15 µm wide
    config = PostprocessConfig(wave_min_diameter_um=5.0)
    counts = None
    for seed in SEEDS:
        sim = simulate_movie(sim_config, seed=seed)
        truth = sim.class_label
        result = postprocess(
            one_hot(truth), config, sim.movie.pixel_size_um, sim.movie.frame_interval_ms,
            movie=sim.movie if use_movie else None,
        )
        assert isinstance(result, PostprocessResult)
        outside = truth != IGNORE
        assert np.array_equal(result.class_label[outside], truth[outside]), f"seed {seed}"
        assert not result.class_label[~outside].any()
        assert result.event_label.dtype == np.uint16
        movie_eval = evaluate_movie(truth, sim.event_label, result.class_label, result.event_label)
        counts = movie_eval.counts if counts is None else counts + movie_eval.counts
    from casparks.metrics import scores

    total = scores(counts)
    for name, values in total["classes"].items():
        if values["annotations"]:
            assert values["reference"]["f1"] == 1.0, name
            assert values["one_to_one"]["f1"] >= 0.9, name
    assert sum(v["annotations"] for v in total["classes"].values()) >= 10
    assert {name for name, v in total["classes"].items() if v["annotations"]} == {"spark", "wave", "puff"}


def test_per_class_thresholds_apply_to_the_most_probable_event_class():
    p = np.zeros((4, 1, 1, 3), np.float32)
    # voxel 0: spark-like, event probability 0.9; voxel 1: puff-like, 0.9; voxel 2: puff-like, 0.8
    for x, (cls, event) in enumerate([(1, 0.9), (3, 0.9), (3, 0.8)]):
        p[0, 0, 0, x] = 1 - event
        p[cls, 0, 0, x] = event
    config = PostprocessConfig(event_threshold=0.95, puff_threshold=0.85)
    classes, threshold = probabilities_to_classes(p, config)
    assert threshold == 0.95
    assert classes[0, 0].tolist() == [0, 3, 0]
    assert config.class_threshold(1, 0.95) == 0.95 and config.class_threshold(3, 0.95) == 0.85
    assert PostprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(PostprocessError, match="puff_threshold"):
        PostprocessConfig(puff_threshold=1.5)


# ----------------------------------------------------------------------------------------------
# minimum mean probability of an event's class


def _two_puffs_and_a_spark() -> tuple[np.ndarray, np.ndarray]:
    """Two puffs (one confident throughout, one doubtful throughout) split by a 2-frame gap for
    the first, and a spark; probabilities with p(puff) 0.6 / 0.35 and p(spark) 0.7 inside."""
    classes = np.zeros((40, 12, 40), np.uint8)
    classes[2:10, 2:8, 2:8] = PUFF
    classes[12:20, 2:8, 2:8] = PUFF  # the same puff after a 2-frame gap
    classes[2:20, 2:8, 20:26] = PUFF  # a doubtful one
    classes[25:30, 3:7, 32:36] = SPARK
    p = np.zeros((4, *classes.shape), np.float32)
    p[0] = 1.0
    confident = np.zeros(classes.shape, bool)
    confident[:, :, :12] = True
    for code, inside, value in ((PUFF, confident, 0.6), (PUFF, ~confident, 0.35), (SPARK, True, 0.7)):
        where = (classes == code) & inside
        p[code][where] = value
        p[0][where] = 1.0 - value  # event probability: the class's own (0.6, 0.35, 0.7)
    return classes, p


def test_events_below_their_class_min_mean_probability_are_removed():
    classes, p = _two_puffs_and_a_spark()
    cleaned, events = separate_events(classes, p, PostprocessConfig(), PX, DT)
    assert events.max() == 3  # off by default: every event is kept

    config = PostprocessConfig(puff_min_mean_probability=0.5)
    cleaned, events = separate_events(classes, p, config, PX, DT)
    assert events.max() == 2
    assert events[5, 4, 4] == events[15, 4, 4] > 0  # the confident puff, both pieces (mean over them)
    assert not events[:, :, 20:26].any() and not cleaned[:, :, 20:26].any()  # the doubtful one: gone
    assert (cleaned == SPARK).sum() == (classes == SPARK).sum()  # a spark is judged by p(spark)

    _, events = separate_events(classes, p, PostprocessConfig(puff_min_mean_probability=0.3), PX, DT)
    assert events.max() == 3
    _, events = separate_events(classes, p, PostprocessConfig(spark_min_mean_probability=0.75), PX, DT)
    assert events.max() == 2 and not events[25:30].any()

    # through postprocess, with a low puff threshold that lets the doubtful puff in
    result = postprocess(p, PostprocessConfig(event_threshold=0.9, puff_threshold=0.3, spark_threshold=0.5,
                                              puff_min_mean_probability=0.5), PX, DT)
    assert result.counts == {"spark": 1, "wave": 0, "puff": 1}


def test_a_min_mean_probability_is_checked_and_needs_the_probabilities():
    classes, p = _two_puffs_and_a_spark()
    movie = np.random.default_rng(0).normal(size=classes.shape).astype(np.float32)
    with pytest.raises(PostprocessError, match="needs the probabilities"):
        separate_events(classes, None, PostprocessConfig(puff_min_mean_probability=0.5), PX, DT, movie=movie)
    _, events = separate_events(classes, None, PostprocessConfig(), PX, DT, movie=movie)  # off: no need
    assert events.max() == 3
    for bad in (1.0, -0.1, "0.5", float("nan")):
        with pytest.raises(PostprocessError, match="wave_min_mean_probability"):
            PostprocessConfig(wave_min_mean_probability=bad)
    config = PostprocessConfig(puff_min_mean_probability=0.45)
    assert config.min_mean_probability(PUFF) == 0.45 and config.min_mean_probability(SPARK) == 0.0
    assert PostprocessConfig.from_dict(config.to_dict()) == config


# ----------------------------------------------------------------------------------------------
# puffs must be transients


def _static_patch_and_a_transient_puff(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Poisson movie (F0 30 photons) with a static bright patch (+20 %, all movie long) and a
    real puff (+50 % at its peak, 40 frames) elsewhere; both marked puff, 40 frames, in the probabilities."""
    rng = np.random.default_rng(seed)
    shape = (200, 32, 64)
    f0 = np.full(shape[1:], 30.0)
    f0 += gaussian_blob(shape[1:], (16, 16), (4, 4), amplitude=6.0)  # the static patch
    expected = np.repeat(f0[None], shape[0], axis=0)
    expected[80:120] += gaussian_blob(shape, (100, 16, 48), (12, 4, 4), amplitude=15.0)[80:120]
    movie = (rng.poisson(expected) * 5 + 300).astype(np.uint16)  # gain 5 ADU/photon, dark level 300
    classes = np.zeros(shape, np.uint8)
    classes[60:100, 10:23, 10:23] = PUFF  # over the static patch
    classes[85:115, 10:23, 42:55] = PUFF  # over the real puff
    return movie, classes, one_hot(classes)


def test_transient_snr_tells_a_puff_from_a_static_bright_patch():
    from casparks.postprocess import transient_snr

    movie, classes, _ = _static_patch_and_a_transient_puff()
    labels = (classes > 0).astype(np.int32)
    lo, hi = np.array([60, 10, 10]), np.array([100, 23, 23])
    patch = transient_snr(movie, labels, classes[60:100, 10:23, 10:23] > 0, lo, hi, window=30, gap=2)
    lo, hi = np.array([85, 10, 42]), np.array([115, 23, 55])
    puff = transient_snr(movie, labels, classes[85:115, 10:23, 42:55] > 0, lo, hi, window=30, gap=2)
    assert abs(patch) < 2.5 and puff > 6.0
    # the tail of a longer event: its earlier side lies inside the event, its later side is quiet
    lo, hi = np.array([100, 10, 42]), np.array([112, 23, 55])
    tail = classes[100:112, 10:23, 42:55] > 0
    assert transient_snr(movie, np.zeros_like(labels), tail, lo, hi, window=30, gap=2) > 3.0
    # an event over the whole movie has no baseline to compare with: kept
    lo, hi = np.array([0, 10, 10]), np.array([200, 23, 23])
    assert transient_snr(movie, labels, np.ones((200, 13, 13), bool), lo, hi, window=30, gap=2) == np.inf


def test_a_puff_that_is_a_static_bright_patch_is_removed_with_the_transient_test():
    movie, classes, p = _static_patch_and_a_transient_puff()
    off = postprocess(p, PostprocessConfig(event_threshold=0.5), PX, DT, movie=movie)
    assert off.counts["puff"] == 2
    on = postprocess(p, PostprocessConfig(event_threshold=0.5, puff_min_transient_snr=3.0), PX, DT, movie=movie)
    assert on.counts["puff"] == 1
    assert on.event_label[100, 16, 48] == 1 and on.event_label[70, 16, 16] == 0
    # the offset and gain of the detector do not matter: the test is in noise units
    rescaled = (movie.astype(np.float32) * 3 + 1000).astype(np.float32)
    again = postprocess(p, PostprocessConfig(event_threshold=0.5, puff_min_transient_snr=3.0), PX, DT, movie=rescaled)
    assert np.array_equal(again.event_label, on.event_label)


def test_the_transient_test_needs_the_movie_and_a_number():
    _, classes, p = _static_patch_and_a_transient_puff()
    with pytest.raises(PostprocessError, match="needs the movie"):
        postprocess(p, PostprocessConfig(event_threshold=0.5, puff_min_transient_snr=3.0), PX, DT)
    for bad in ("3", float("nan"), True):
        with pytest.raises(PostprocessError, match="puff_min_transient_snr"):
            PostprocessConfig(puff_min_transient_snr=bad)
    for name in ("transient_window_ms", "transient_gap_ms"):
        with pytest.raises(PostprocessError, match=name):
            PostprocessConfig(**{name: -1.0})
    with pytest.raises(PostprocessError, match="transient_window_ms"):
        PostprocessConfig(transient_window_ms=0.0)
    config = PostprocessConfig(puff_min_transient_snr=3)
    assert config.puff_min_transient_snr == 3.0 and PostprocessConfig.from_dict(config.to_dict()) == config


def _boxed(p: np.ndarray, box: tuple, values: list[float]) -> None:
    """Set the (background, spark, wave, puff) probabilities of a box of voxels."""
    for code, value in enumerate(values):
        p[(code, *box)] = value


def test_an_isolated_faint_spark_is_rescued_by_the_lower_threshold_but_not_at_an_events_fringe():
    """A faint spark the network saw (p(event) 0.85) but split between spark and puff stays below
    the spark threshold of 0.9. With spark_rescue_threshold 0.8 it is added where it keeps 1 µm /
    20 ms from every event found, not where it touches one (a fringe), nor when it lasts longer
    than a spark; ids stay in onset order and every spark keeps its peak."""
    shape = (60, 30, 120)  # frames, rows, columns at 0.2 µm / 6.8 ms
    p = np.zeros((4, *shape), np.float32)
    p[0] = 1.0
    _boxed(p, (slice(20, 26), slice(10, 16), slice(10, 16)), [0.02, 0.95, 0.0, 0.03])  # a bright spark
    faint = [0.15, 0.5, 0.0, 0.35]
    _boxed(p, (slice(5, 10), slice(10, 16), slice(80, 86)), faint)  # alone, 70 columns (14 µm) away
    _boxed(p, (slice(20, 25), slice(10, 16), slice(17, 23)), faint)  # 1 column (0.2 µm) beside the spark
    _boxed(p, (slice(30, 50), slice(10, 16), slice(50, 56)), faint)  # alone but 136 ms long
    base = dict(event_threshold=0.9, spark_threshold=0.9, spark_min_diameter_um=0.6, spark_min_duration_ms=10,
                spark_split_on="probability", **NO_SMOOTHING)
    plain = postprocess(p, PostprocessConfig(**base), PX, DT)
    assert plain.event_classes.tolist() == [SPARK]

    found = postprocess(p, PostprocessConfig(**base, spark_rescue_threshold=0.8), PX, DT)
    assert found.event_classes.tolist() == [SPARK, SPARK]
    assert found.event_label[7, 12, 82] == 1 and found.event_label[22, 12, 12] == 2  # onset order
    assert found.class_label[7, 12, 82] == SPARK
    assert found.event_label[22, 12, 19] == 0 and found.event_label[40, 12, 52] == 0
    assert [found.event_label[tuple(peak)] for peak in found.spark_peaks] == [1, 2]
    # the rescued spark is what the lower threshold alone finds there
    low = postprocess(p, PostprocessConfig(**{**base, "event_threshold": 0.8, "spark_threshold": 0.8}), PX, DT)
    np.testing.assert_array_equal(found.event_label[:, :, 70:] > 0, low.event_label[:, :, 70:] > 0)
    # near means within both reaches: 15 µm alone keeps it in (it is 68 ms before the bright one),
    # 15 µm and 100 ms keep it out; a longer maximum duration lets the long one in
    assert postprocess(p, PostprocessConfig(**base, spark_rescue_threshold=0.8, spark_rescue_distance_um=15.0),
                       PX, DT).event_classes.size == 2
    assert postprocess(p, PostprocessConfig(**base, spark_rescue_threshold=0.8, spark_rescue_distance_um=15.0,
                                            spark_rescue_distance_ms=100.0), PX, DT).event_classes.size == 1
    assert postprocess(p, PostprocessConfig(**base, spark_rescue_threshold=0.8, spark_rescue_max_duration_ms=200.0),
                       PX, DT).event_classes.size == 3
    with pytest.raises(PostprocessError, match="spark_rescue_threshold must be a number between 0 and 1"):
        PostprocessConfig(spark_rescue_threshold=1.5)


@pytest.mark.parametrize("start, rescued", [
    ((27, 10, 10), True),   # 3 frames after the bright spark's last: 20.4 ms, farther than 20 ms (the box: within)
    ((26, 10, 10), False),  # 13.6 ms
    ((20, 15, 15), True),   # beside it, 4 px diagonally from its corner: 1.13 µm, farther than 1 µm (the box: within)
    ((20, 14, 14), False),  # 0.85 µm
    ((20, 10, 16), False),  # 5 px: exactly 1 µm, not farther
    ((20, 10, 17), True),   # 1.2 µm
])
def test_the_rescue_distances_are_what_they_say(start, rescued):
    """A faint spark is rescued when it keeps farther than spark_rescue_distance_ms in time or
    spark_rescue_distance_um in space (a disc) from every event: the zone was a box of rounded
    sizes, 3 frames for 20 ms at 6.8 ms and 1.41 µm along its diagonal for 1 µm."""
    p = np.zeros((4, 50, 30, 40), np.float32)
    p[0] = 1.0
    _boxed(p, (slice(20, 25), slice(10, 12), slice(10, 12)), [0.02, 0.95, 0.0, 0.03])  # bright: frames 20-24, 2 × 2 px
    t, y, x = start
    _boxed(p, (slice(t, t + 5), slice(y, y + 2), slice(x, x + 2)), [0.15, 0.5, 0.0, 0.35])  # faint, the same size
    config = PostprocessConfig(event_threshold=0.9, spark_threshold=0.9, spark_min_diameter_um=0.2,
                               spark_min_duration_ms=10, spark_split_on="probability", **NO_SMOOTHING,
                               spark_rescue_threshold=0.8, spark_rescue_max_duration_ms=100)
    assert postprocess(p, config, PX, DT).event_classes.size == (2 if rescued else 1)


def test_the_spark_rescue_runs_only_on_movies_sampled_as_finely_as_its_limits():
    """Coarse movies, upsampled to the model's sampling, carry spark-sized blobs of interpolated
    noise: with its sampling limits the rescue adds the isolated faint spark at 0.2 µm / 6.8 ms and
    finer, and nothing at a coarser pixel or frame interval (1 % tolerance at the limit)."""
    shape = (60, 30, 120)
    p = np.zeros((4, *shape), np.float32)
    p[0] = 1.0
    _boxed(p, (slice(20, 26), slice(10, 16), slice(10, 16)), [0.02, 0.95, 0.0, 0.03])
    _boxed(p, (slice(5, 10), slice(10, 16), slice(80, 86)), [0.15, 0.5, 0.0, 0.35])
    config = PostprocessConfig(event_threshold=0.9, spark_threshold=0.9, spark_min_diameter_um=0.6,
                               spark_min_duration_ms=10, spark_split_on="probability", **NO_SMOOTHING,
                               spark_rescue_threshold=0.8, spark_rescue_max_pixel_size_um=0.2,
                               spark_rescue_max_frame_interval_ms=6.8)
    counts = {(px, dt): postprocess(p, config, px, dt).event_classes.size
              for px, dt in ((0.2, 6.8), (0.2015, 6.85), (0.15, 5.0), (0.25, 6.8), (0.2, 8.5), (0.3, 10.0))}
    assert counts == {(0.2, 6.8): 2, (0.2015, 6.85): 2, (0.15, 5.0): 2, (0.25, 6.8): 1, (0.2, 8.5): 1, (0.3, 10.0): 1}
    unlimited = replace(config, spark_rescue_max_pixel_size_um=None, spark_rescue_max_frame_interval_ms=None)
    assert postprocess(p, unlimited, 0.3, 10.0).event_classes.size == 2
    with pytest.raises(PostprocessError, match="spark_rescue_max_pixel_size_um must be a positive number"):
        PostprocessConfig(spark_rescue_max_pixel_size_um=0)


def test_a_peak_on_a_sparks_edge_does_not_cut_off_a_piece_below_the_spark_minima():
    """The watershed gave a peak on a blob's rim a piece of its own: 4 voxels, 0.4 µm, written
    and counted as a spark below every minimum (spark_min_diameter_um, spark_min_duration_ms)."""
    T, Y, X = 12, 12, 16
    p = np.zeros((4, T, Y, X), np.float32)
    blob = (slice(2, 10), slice(2, 10), slice(2, 10))
    t, y, x = np.ogrid[:T, :Y, :X]
    p[1][blob] = (0.93 + 0.05 * np.exp(-((t - 6) ** 2 + (y - 6) ** 2 + (x - 6) ** 2) / 8.0))[blob]
    p[1][6, 6, 10], p[1][6, 6, 9] = 0.99, 0.91  # a one-voxel appendage with a maximum of its own
    p[0] = 1 - p[1]
    config = PostprocessConfig(event_threshold=0.9, spark_min_distance_um=0.4, spark_min_distance_ms=7,
                               spark_min_diameter_um=1.0, spark_min_duration_ms=20, spark_smooth_sigma_um=0,
                               spark_smooth_sigma_ms=0, spark_rescue_threshold=None,
                               wave_fringe_min_probability=None, puff_min_transient_snr=None)
    found = postprocess(p, config, 0.2, 6.8)
    assert found.n_events == 1 and (found.event_label > 0).sum() == (p[1] > 0.9).sum()
    # a second peak far enough to hold a spark of its own still splits
    p[1][2:10, 2:10, 10:15] = 0.93
    p[1][6, 6, 13] = 0.99
    p[0] = 1 - p[1]
    assert postprocess(p, config, 0.2, 6.8).n_events == 2


def _a_puff_with_sparks_at_its_start_and_side() -> np.ndarray:
    """One-hot probabilities: a puff (frames 10-39, 2 × 2 µm), a spark at its site just before it
    (its first burst, touching it in time), a spark touching its side (2 of its 4 columns inside
    the puff's footprint), a spark one column beside it (not touching), and a lone spark."""
    classes = np.zeros((60, 32, 64), np.uint8)
    classes[10:40, 10:20, 10:20] = PUFF
    classes[5:10, 12:18, 12:18] = SPARK  # the first burst
    classes[20:26, 10:16, 18:22] = SPARK  # on the side: columns 18-21, the puff's are 10-19
    classes[20:26, 22:28, 21:25] = SPARK  # column 21: one empty column from the puff
    classes[45:52, 2:6, 40:45] = SPARK
    return one_hot(classes)


@pytest.mark.parametrize("overlap, expected", [
    (None, [SPARK, PUFF, SPARK, SPARK, SPARK]),  # off: every spark stays
    (0.9, [PUFF, SPARK, SPARK, SPARK]),  # the first burst only: its whole footprint lies in the puff's
    (0.5, [PUFF, SPARK, SPARK]),  # the side spark too: half its footprint in the puff's
    (0.0, [PUFF, SPARK, SPARK]),  # touching is needed: the spark one column away stays
])
def test_sparks_nested_in_a_puff_become_part_of_it(overlap, expected):
    """The network often calls a puff's first, brightest burst a spark: a false spark beside a
    puff that lost its rise. spark_in_puff_min_overlap joins a spark that touches a puff and lies
    at least that fraction of its y-x footprint inside the puff's to the puff; ids stay in onset
    order, every remaining spark keeps its peak on itself."""
    p = _a_puff_with_sparks_at_its_start_and_side()
    config = PostprocessConfig(event_threshold=0.5, spark_split_on="probability", **NO_SMOOTHING,
                               spark_in_puff_min_overlap=overlap)
    found = postprocess(p, config, PX, DT)
    assert found.event_classes.tolist() == expected
    assert [found.event_label[tuple(peak)] for peak in found.spark_peaks] == found.spark_ids.tolist()
    assert np.unique(found.event_label).tolist() == list(range(len(expected) + 1))
    if overlap is not None:
        puff = found.event_label[20, 15, 15]
        assert found.event_label[7, 15, 15] == puff == 1  # the puff now starts with its first burst
        assert found.class_label[7, 15, 15] == PUFF
        assert found.event_label[22, 23, 22] != puff  # not touching: its own spark
    if overlap is not None and overlap <= 0.5:
        assert found.event_label[22, 12, 20] == found.event_label[20, 15, 15]
        assert found.class_label[22, 12, 20] == PUFF
    assert (found.class_label == PUFF).sum() == sum(
        (found.event_label == i).sum() for i in np.flatnonzero(found.event_classes == PUFF) + 1)


def test_a_spark_touching_two_puffs_joins_the_one_it_touches_most():
    classes = np.zeros((40, 20, 60), np.uint8)
    classes[10:30, 2:9, 5:20] = PUFF  # left: touches the spark's corner rows (14 voxels of contact)
    classes[10:30, 5:15, 25:40] = PUFF  # right: touches its whole side (42 voxels)
    classes[15:20, 8:12, 20:25] = SPARK
    config = PostprocessConfig(event_threshold=0.5, spark_split_on="probability", **NO_SMOOTHING,
                               spark_in_puff_min_overlap=0.0)
    found = postprocess(one_hot(classes), config, PX, DT)
    assert found.event_classes.tolist() == [PUFF, PUFF]
    assert found.event_label[17, 10, 22] == found.event_label[20, 10, 30] != found.event_label[20, 10, 10]


@pytest.mark.parametrize("value", [1.5, -0.1, "half", True])
def test_spark_in_puff_min_overlap_is_a_fraction_or_null(value):
    with pytest.raises(PostprocessError, match="spark_in_puff_min_overlap must be a number in"):
        PostprocessConfig(spark_in_puff_min_overlap=value)
    config = PostprocessConfig(spark_in_puff_min_overlap=1)
    assert config.spark_in_puff_min_overlap == 1.0 and PostprocessConfig.from_dict(config.to_dict()) == config

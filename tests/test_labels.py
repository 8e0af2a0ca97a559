"""Training-label preparation: anisotropic dilation, ignore shells, spark peaks, data-set folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from casparks.classes import BACKGROUND, IGNORE, PUFF, SPARK, WAVE
from casparks.cli import main
from casparks.errors import CasparksError
from casparks.instances import complete_instances
from casparks.io import (
    read_stack,
    read_units,
    write_class_label,
    write_event_label,
    write_stack,
)
from casparks.labels import (
    LabelConfig,
    dilate,
    find_spark_peaks,
    paint_ellipsoids,
    prepare_dataset_labels,
    prepare_labels,
)

PX, DT = 0.2, 6.8  # µm, ms: the reference data set

NO_SHELL = dict(ignore_width_um=0.0, ignore_width_ms=0.0)


def point(shape, *where):
    mask = np.zeros(shape, dtype=bool)
    mask[where] = True
    return mask


def extent(mask, axis):
    """(first, last) index along an axis of the True voxels."""
    idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
    return int(idx[0]), int(idx[-1])


def ellipsoid_offsets(rt, ry, rx):
    """Set of integer offsets inside the (inclusive) ellipsoid with radii in voxels."""
    out = set()
    for dt in range(-int(rt), int(rt) + 1):
        for dy in range(-int(ry), int(ry) + 1):
            for dx in range(-int(rx), int(rx) + 1):
                d = sum((o / r) ** 2 if r else (0 if o == 0 else np.inf) for o, r in ((dt, rt), (dy, ry), (dx, rx)))
                if d <= 1 + 1e-9:
                    out.add((dt, dy, dx))
    return out


def offsets_from(mask, centre):
    return {tuple(int(v) for v in p - np.array(centre)) for p in np.argwhere(mask)}


# ----------------------------------------------------------------------------------------------
# dilate


def test_dilate_exact_anisotropic_extent():
    mask = point((21, 31, 31), 10, 15, 15)
    out = dilate(mask, radius_um=1.0, radius_ms=13.6, pixel_size_um=PX, frame_interval_ms=DT)
    assert extent(out, 0) == (8, 12)  # 13.6 ms = 2 frames
    assert extent(out, 1) == (10, 20)  # 1.0 µm = 5 px
    assert extent(out, 2) == (10, 20)
    assert offsets_from(out, (10, 15, 15)) == ellipsoid_offsets(2, 5, 5)
    assert out[11, 18, 18] and not out[11, 19, 18]  # (1/2)²+(3/5)²+(3/5)² ≤ 1 < (1/2)²+(4/5)²+(3/5)²


def test_dilate_radius_that_is_a_whole_number_of_voxels_in_floating_point():
    # 0.6 / 0.2 = 2.9999999999999996: must still reach 3 pixels
    out = dilate(point((9, 15, 15), 4, 7, 7), 0.6, 20.4, PX, DT)
    assert extent(out, 1) == (4, 10) and extent(out, 2) == (4, 10)
    assert extent(out, 0) == (1, 7)


def test_dilate_zero_radius_sub_voxel_radius_and_empty_mask():
    mask = point((5, 7, 7), 2, 3, 3)
    assert np.array_equal(dilate(mask, 0.0, 0.0, PX, DT), mask)
    assert np.array_equal(dilate(mask, 0.1, 3.0, PX, DT), mask)  # less than one voxel
    empty = np.zeros((5, 7, 7), dtype=bool)
    assert not dilate(empty, 1.0, 10.0, PX, DT).any()


def test_dilate_along_one_axis_only():
    mask = point((9, 9, 9), 4, 4, 4)
    time_only = dilate(mask, 0.0, 2 * DT, PX, DT)
    assert np.argwhere(time_only)[:, 0].tolist() == [2, 3, 4, 5, 6]
    assert (np.argwhere(time_only)[:, 1:] == 4).all()
    space_only = dilate(mask, 2 * PX, 0.0, PX, DT)
    assert (np.argwhere(space_only)[:, 0] == 4).all()
    assert extent(space_only, 2) == (2, 6)


@pytest.mark.parametrize("big_event", [False, True])
def test_dilate_of_far_apart_events_in_a_large_movie_equals_the_whole_volume_transform(big_event):
    rng = np.random.default_rng(1)
    mask = np.zeros((60, 64, 320), dtype=bool)  # > 1 M voxels: split into boxes
    mask[2:6, 1:4, 2:9] = True
    mask[50:58, 55:63, 300:318] = True
    mask[30, 30, 160] = True
    mask |= rng.random(mask.shape) < 2e-5
    if big_event:  # too many voxels to paint: boxes with a distance transform or a structuring element
        mask[10:40, 5:60, 20:280] = True
    for radius_um, radius_ms in ((0.2, 6.8), (1.0, 30.0), (0.6, 0.0)):
        got = dilate(mask, radius_um, radius_ms, PX, DT)
        sampling = tuple(s / r if r else 1e6 for s, r in ((DT, radius_ms), (PX, radius_um), (PX, radius_um)))
        expected = ndimage.distance_transform_edt(~mask, sampling=sampling) <= 1 + 1e-9
        assert np.array_equal(got, expected), (radius_um, radius_ms)


def test_paint_ellipsoids_equals_dilate_of_the_points_also_at_the_borders():
    shape = (12, 10, 14)
    points = np.array([[0, 0, 0], [6, 5, 7], [11, 9, 13], [3, 9, 2]])
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(points.T)] = True
    for radius_um, radius_ms in ((0.58, 20.0), (1.0, 6.8), (0.0, 13.6), (0.0, 0.0)):
        painted = paint_ellipsoids(shape, points, radius_um, radius_ms, PX, DT)
        assert np.array_equal(painted, dilate(mask, radius_um, radius_ms, PX, DT))
    assert not paint_ellipsoids(shape, np.zeros((0, 3)), 1.0, 10.0, PX, DT).any()


# ----------------------------------------------------------------------------------------------
# ignore shells, raw labels, only sparks


def test_raw_without_shell_leaves_labels_unchanged():
    classes = np.zeros((10, 12, 12), dtype=np.uint8)
    classes[2:5, 2:5, 2:5] = SPARK
    classes[6:9, 6:10, 1:11] = WAVE
    classes[1:3, 8:11, 8:11] = PUFF
    classes[0, 0, :] = IGNORE
    out = prepare_labels(classes, None, None, PX, DT, LabelConfig(**NO_SHELL))
    assert out.dtype == np.uint8
    assert np.array_equal(out, classes)


def test_ignore_shell_has_the_configured_width():
    classes = np.zeros((20, 20, 20), dtype=np.uint8)
    classes[8:12, 7:13, 6:14] = SPARK  # 4 × 6 × 8
    out = prepare_labels(classes, None, None, PX, DT, LabelConfig(ignore_width_um=0.2, ignore_width_ms=6.8))
    shell = out == IGNORE
    # one voxel in every direction, faces only (the reference's 6-connected dilation step)
    assert shell.sum() == 2 * (4 * 6 + 6 * 8 + 4 * 8)
    assert np.array_equal(out == SPARK, classes == SPARK)
    wide = prepare_labels(classes, None, None, PX, DT, LabelConfig(ignore_width_um=0.4, ignore_width_ms=13.6))
    assert extent(wide == IGNORE, 0) == (6, 13)
    assert extent(wide == IGNORE, 1) == (5, 14)
    assert extent(wide == IGNORE, 2) == (4, 15)
    # the shell is an ellipsoid around the box, not a box: no corner voxels
    assert wide[6, 5, 4] == BACKGROUND and wide[6, 9, 9] == IGNORE


@pytest.mark.parametrize("px, dt", [(0.21, 7.0), (0.3, 10.0)])
def test_an_ignore_shell_of_a_voxel_survives_a_slightly_coarser_sampling(px, dt):
    """0.2 µm / 6.8 ms at 0.21 µm / 7 ms is 0.95 voxel: it used to round down to no shell."""
    classes = np.zeros((20, 20, 20), dtype=np.uint8)
    classes[8:12, 7:13, 6:14] = SPARK
    out = prepare_labels(classes, None, None, px, dt, LabelConfig(ignore_width_um=0.2, ignore_width_ms=6.8))
    assert (out == IGNORE).sum() == 2 * (4 * 6 + 6 * 8 + 4 * 8)  # one voxel, as at 0.2 µm / 6.8 ms


def test_ignore_shell_never_covers_events_and_keeps_existing_ignore():
    classes = np.zeros((12, 16, 16), dtype=np.uint8)
    classes[3:7, 3:7, 3:7] = SPARK
    classes[3:7, 3:7, 7:12] = PUFF  # touching the spark
    classes[8:10, 3:12, 3:12] = WAVE  # one frame after the spark and puff
    classes[0:2, 0:3, 0:3] = IGNORE
    out = prepare_labels(classes, None, None, PX, DT, LabelConfig(ignore_width_um=0.6, ignore_width_ms=13.6))
    events = np.isin(classes, (SPARK, WAVE, PUFF))
    assert np.array_equal(out[events], classes[events])
    assert (out[classes == IGNORE] == IGNORE).all()
    assert (out[(classes == BACKGROUND)] != SPARK).all()
    assert out[7, 5, 5] == IGNORE  # between spark and wave
    assert out[11, 15, 15] == BACKGROUND


def test_only_sparks_turns_puffs_and_waves_to_ignore():
    classes = np.zeros((10, 12, 12), dtype=np.uint8)
    classes[2:5, 2:5, 2:5] = SPARK
    classes[6:9, 6:10, 1:11] = WAVE
    classes[1:3, 8:11, 8:11] = PUFF
    out = prepare_labels(classes, None, None, PX, DT, LabelConfig(only_sparks=True, **NO_SHELL))
    assert (out[(classes == WAVE) | (classes == PUFF)] == IGNORE).all()
    assert np.array_equal(out == SPARK, classes == SPARK)
    assert (out[classes == BACKGROUND] == BACKGROUND).all()


# ----------------------------------------------------------------------------------------------
# spark peaks


def gaussian(shape, centre, sigma_t=2.0, sigma_xy=3.0):
    t, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return np.exp(
        -((t - centre[0]) ** 2) / (2 * sigma_t**2)
        - ((y - centre[1]) ** 2 + (x - centre[2]) ** 2) / (2 * sigma_xy**2)
    )


def test_two_separated_maxima_give_two_balls_of_the_right_size_and_the_rest_is_ignore():
    shape = (40, 30, 60)
    movie = 1000.0 + 300 * gaussian(shape, (20, 15, 15)) + 200 * gaussian(shape, (18, 14, 44))
    classes = np.zeros(shape, dtype=np.uint8)
    classes[12:28, 7:23, 5:56] = SPARK  # one annotated spark holding both maxima
    config = LabelConfig(sparks_type="peaks", peak_radius_um=0.6, peak_radius_ms=13.6, **NO_SHELL)
    out = prepare_labels(classes, None, movie, PX, DT, config)
    sparks = out == SPARK
    components, n = ndimage.label(sparks)
    assert n == 2
    expected_ball = ellipsoid_offsets(2, 3, 3)  # 13.6 ms = 2 frames, 0.6 µm = 3 px
    centres = [(20, 15, 15), (18, 14, 44)]
    for k, centre in enumerate(centres, start=1):
        assert components[centre] > 0
        assert offsets_from(components == components[centre], centre) == expected_ball
    assert np.array_equal(out == IGNORE, (classes == SPARK) & ~sparks)
    assert (out[classes == BACKGROUND] == BACKGROUND).all()


def test_peak_balls_get_an_ignore_shell():
    shape = (30, 30, 30)
    movie = 100 * gaussian(shape, (15, 15, 15))
    classes = np.zeros(shape, dtype=np.uint8)
    classes[13:18, 13:18, 13:18] = SPARK
    config = LabelConfig(sparks_type="peaks", peak_radius_um=0.6, peak_radius_ms=13.6,
                         ignore_width_um=0.2, ignore_width_ms=6.8)
    out = prepare_labels(classes, None, movie, PX, DT, config)
    ball = out == SPARK
    assert offsets_from(ball, (15, 15, 15)) == ellipsoid_offsets(2, 3, 3)
    face_neighbours = ndimage.binary_dilation(ball) & ~ball
    assert (out[face_neighbours] == IGNORE).all()
    assert extent(out == IGNORE, 2) == (11, 19)


def test_reference_peak_labels_are_reproduced_at_the_reference_sampling():
    # reference: ball = voxels closer than 3 voxels to the maximum, ignore up to 4 voxels
    shape = (21, 21, 21)
    movie = gaussian(shape, (10, 10, 10), sigma_t=2.0, sigma_xy=2.0)
    classes = np.zeros(shape, dtype=np.uint8)
    classes[9:12, 9:12, 9:12] = SPARK
    out = prepare_labels(classes, None, movie, PX, DT, LabelConfig(sparks_type="peaks"))
    distance = ndimage.distance_transform_edt(~point(shape, 10, 10, 10))
    assert np.array_equal(out == SPARK, distance < 3)
    assert np.array_equal(out == IGNORE, (distance >= 3) & (distance < 4))


@pytest.mark.parametrize("box", [(slice(7, 8), slice(4, 7), slice(4, 9)), (slice(7, 8), slice(5, 6), slice(6, 7))])
def test_thin_and_single_voxel_sparks_get_a_ball(box):
    shape = (15, 11, 13)
    movie = gaussian(shape, (7, 5, 6))
    classes = np.zeros(shape, dtype=np.uint8)
    classes[box] = SPARK
    out = prepare_labels(classes, None, movie, PX, DT, LabelConfig(sparks_type="peaks", **NO_SHELL))
    assert out[7, 5, 6] == SPARK
    assert offsets_from(out == SPARK, (7, 5, 6)) == offsets_from(dilate(point(shape, 7, 5, 6), 0.58, 20.0, PX, DT), (7, 5, 6))


def test_peak_balls_do_not_cover_other_events_or_annotated_ignore():
    shape = (20, 20, 30)
    movie = 100 * gaussian(shape, (10, 10, 10))
    classes = np.zeros(shape, dtype=np.uint8)
    classes[9:12, 9:12, 9:12] = SPARK
    classes[:, :, 12:14] = PUFF  # 2 px from the maximum, inside a 0.6 µm ball
    classes[10, 7, 10] = IGNORE
    config = LabelConfig(sparks_type="peaks", peak_radius_um=0.6, peak_radius_ms=13.6, **NO_SHELL)
    out = prepare_labels(classes, None, movie, PX, DT, config)
    assert out[10, 10, 10] == SPARK and out[10, 10, 8] == SPARK
    assert np.array_equal(out == PUFF, classes == PUFF)
    assert out[10, 7, 10] == IGNORE


@pytest.mark.parametrize(
    "second, n_expected",
    [
        ((10, 10, 15), 1),  # 1.0 µm away, same frame: closer than 1.8 µm
        ((10, 10, 20), 2),  # 2.0 µm away
        ((12, 10, 10), 1),  # 13.6 ms later, same place: closer than 20 ms
        ((13, 10, 10), 2),  # 20.4 ms later
    ],
)
def test_maxima_closer_than_the_min_distance_give_one_ball(second, n_expected):
    shape = (25, 21, 31)
    movie = np.zeros(shape)
    movie[10, 10, 10] = 10.0
    movie[second] = 9.0
    classes = np.zeros(shape, dtype=np.uint8)
    classes[5:20, 5:16, 5:26] = SPARK
    config = LabelConfig(sparks_type="peaks", smooth_sigma_um=0.0, smooth_sigma_ms=0.0,
                         peak_radius_um=0.0, peak_radius_ms=0.0, **NO_SHELL)
    out = prepare_labels(classes, None, movie, PX, DT, config)
    balls = np.argwhere(out == SPARK).tolist()
    assert [10, 10, 10] in balls
    assert len(balls) == n_expected
    assert (out[(classes == SPARK) & (out != SPARK)] == IGNORE).all()


def test_equal_maxima_within_the_min_distance_give_one_peak():
    shape = (9, 11, 21)
    movie = np.zeros(shape)
    movie[4, 5, 8] = movie[4, 5, 12] = 5.0  # equal, 0.8 µm apart
    instances = np.zeros(shape, dtype=np.int64)
    instances[2:7, 2:9, 2:19] = 7
    peaks = find_spark_peaks(movie, instances, PX, DT, sigma_um=0.0, sigma_ms=0.0)
    assert peaks.tolist() == [[4, 5, 8, 7]]


def test_a_flat_topped_maximum_gives_one_peak_at_its_centre():
    shape = (15, 15, 21)
    movie = np.minimum(1000 * gaussian(shape, (7, 7, 10), sigma_t=3.0, sigma_xy=4.0), 800.0)  # saturated top
    instances = np.zeros(shape, dtype=np.int64)
    instances[2:13, 2:13, 3:18] = 3
    peaks = find_spark_peaks(movie, instances, PX, DT, sigma_um=0.0, sigma_ms=0.0)
    assert peaks.tolist() == [[7, 7, 10, 3]]


def test_peaks_are_found_per_spark_instance():
    # two touching sparks: the brighter one must not suppress the other's maximum
    shape = (20, 16, 40)
    movie = 500 * gaussian(shape, (10, 8, 15), sigma_xy=2.0) + 300 * gaussian(shape, (10, 8, 21), sigma_xy=2.0)
    classes = np.zeros(shape, dtype=np.uint8)
    classes[5:16, 3:13, 8:30] = SPARK
    events = np.zeros(shape, dtype=np.uint16)
    events[5:16, 3:13, 8:18] = 1
    events[5:16, 3:13, 18:30] = 2
    peaks = find_spark_peaks(movie, np.where(classes == SPARK, events, 0), PX, DT)
    assert sorted(peaks[:, 3].tolist()) == [1, 2]
    config = LabelConfig(sparks_type="peaks", peak_radius_um=0.0, peak_radius_ms=0.0, **NO_SHELL)
    with_ids = prepare_labels(classes, events, movie, PX, DT, config)
    assert np.count_nonzero(with_ids == SPARK) == 2
    # without instance ids the two touching sparks are one connected component: one peak
    without_ids = prepare_labels(classes, None, movie, PX, DT, config)
    (peak,) = np.argwhere(without_ids == SPARK).tolist()
    assert peak[:2] == [10, 8] and 15 <= peak[2] <= 17  # the brighter spark, pulled a bit by the other


def test_peak_position_does_not_depend_on_the_movie_baseline():
    shape = (20, 20, 30)
    movie = 100 * gaussian(shape, (10, 10, 22))
    instances = np.zeros(shape, dtype=np.int64)
    instances[4:16, 4:16, 4:26] = 1  # the maximum sits near the spark's edge
    low = find_spark_peaks(movie, instances, PX, DT)
    high = find_spark_peaks(movie + 10_000, instances, PX, DT)
    assert low.tolist() == high.tolist()
    assert low[0, :3].tolist() in ([10, 10, 22], [10, 10, 23])  # the masked reference drifts to the middle


def test_peaks_need_the_movie():
    classes = np.zeros((5, 5, 5), dtype=np.uint8)
    classes[2, 2, 2] = SPARK
    with pytest.raises(ValueError, match="movie"):
        prepare_labels(classes, None, None, PX, DT, LabelConfig(sparks_type="peaks"))


def test_raw_labels_refuse_a_boolean_mask_and_event_ids_of_another_shape_in_one_line():
    """sparks_type='raw' took a boolean mask as sparks (True = code 1) and event ids of another
    movie's shape without a word: both are refused as evaluate refuses them."""
    classes = np.zeros((5, 6, 7), dtype=np.uint8)
    classes[1:3, 1:3, 1:3] = WAVE
    raw = LabelConfig(sparks_type="raw")
    with pytest.raises(CasparksError, match="class labels must be integer codes 0-4.*boolean") as info:
        prepare_labels(classes > 0, None, None, PX, DT, raw)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(CasparksError, match=r"event ids have shape \(2, 2, 2\), the class labels \(5, 6, 7\)") as info:
        prepare_labels(classes, np.zeros((2, 2, 2), np.uint16), None, PX, DT, raw)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(CasparksError, match="event ids must be integers.*boolean"):
        prepare_labels(classes, classes > 0, None, PX, DT, raw)


def test_event_instances_complete_missing_ids_by_connected_components():
    classes = np.zeros((6, 6, 10), dtype=np.uint8)
    classes[1:3, 1:3, 1:3] = SPARK
    classes[1:3, 1:3, 6:9] = SPARK
    classes[4:6, 0:6, 0:10] = WAVE
    derived = complete_instances(classes)
    assert len(np.unique(derived[classes == SPARK])) == 2
    assert len(np.unique(derived[classes == WAVE])) == 1
    assert (derived[classes == BACKGROUND] == 0).all()
    given = np.zeros(classes.shape, dtype=np.uint16)
    given[1:3, 1:3, 1:3] = 5
    completed = complete_instances(classes, given)
    assert (completed[1:3, 1:3, 1:3] == 5).all()
    assert set(np.unique(completed[classes > 0]).tolist()) == {5, 6, 7}


# ----------------------------------------------------------------------------------------------
# physical units


def test_same_physical_config_gives_the_same_physical_extent_at_another_sampling():
    config = LabelConfig(ignore_width_um=0.4, ignore_width_ms=13.6)
    coarse = np.zeros((20, 20, 20), dtype=np.uint8)
    coarse[8:12, 8:12, 8:12] = SPARK
    fine = coarse.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)  # 0.1 µm, 3.4 ms
    out_coarse = prepare_labels(coarse, None, None, PX, DT, config)
    out_fine = prepare_labels(fine, None, None, PX / 2, DT / 2, config)
    for axis, step in ((0, DT), (1, PX), (2, PX)):
        lo_c, hi_c = extent(out_coarse == IGNORE, axis)
        lo_f, hi_f = extent(out_fine == IGNORE, axis)
        # first ignore voxel lies the same physical distance before the event
        assert (8 - lo_c) * step == pytest.approx((16 - lo_f) * step / 2)
        assert (hi_c - 11) * step == pytest.approx((hi_f - 23) * step / 2)
    assert 8 - extent(out_coarse == IGNORE, 1)[0] == 2  # 0.4 µm at 0.2 µm


def test_peak_ball_has_the_same_physical_radius_at_another_sampling():
    config = LabelConfig(sparks_type="peaks", peak_radius_um=0.6, peak_radius_ms=20.4, **NO_SHELL)
    for step_um, step_ms, n in ((PX, DT, 3), (PX / 2, DT / 2, 6)):
        shape = (8 * n, 8 * n, 8 * n)
        c = 4 * n
        movie = gaussian(shape, (c, c, c), sigma_t=n, sigma_xy=n)
        classes = np.zeros(shape, dtype=np.uint8)
        classes[c - 1 : c + 2, c - 1 : c + 2, c - 1 : c + 2] = SPARK
        out = prepare_labels(classes, None, movie, step_um, step_ms, config)
        assert extent(out == SPARK, 1) == (c - n, c + n)  # 0.6 µm either side
        assert extent(out == SPARK, 0) == (c - n, c + n)  # 20.4 ms either side


# ----------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    "field, value",
    [
        ("ignore_width_um", -0.2),
        ("ignore_width_ms", float("nan")),
        ("peak_radius_um", "big"),
        ("peak_min_distance_ms", 0.0),
        ("smooth_sigma_um", -1),
        ("only_sparks", "no"),
        ("sparks_type", "dilated"),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field) as info:
        LabelConfig(**{field: value})
    assert isinstance(info.value, CasparksError)


def test_config_is_frozen_and_round_trips():
    config = LabelConfig(sparks_type="peaks", ignore_width_um=0.4, only_sparks=True)
    assert LabelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="wave_width"):
        LabelConfig.from_dict({"wave_width": 1.0})
    with pytest.raises(AttributeError):
        config.sparks_type = "raw"  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# data-set folders and CLI


def make_dataset(folder, units=True, n=2):
    """Two samples; 01 has an event label and an events table, 02 has neither."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = (30, 20, 40)
    rng = np.random.default_rng(0)
    pixel, frame = (PX, DT) if units else (None, None)
    for i in range(1, n + 1):
        movie = (1000 + 10 * rng.standard_normal(shape) + 400 * gaussian(shape, (15, 10, 12))).astype(np.uint16)
        classes = np.zeros(shape, dtype=np.uint8)
        classes[10:20, 5:15, 6:18] = SPARK
        classes[5:25, 4:16, 26:36] = PUFF
        classes[0, 0, 0] = IGNORE
        write_stack(folder / f"{i:02d}_video.tif", movie, pixel, frame)
        write_class_label(folder / f"{i:02d}_class_label.tif", classes, pixel, frame)
        if i == 1:
            write_event_label(folder / "01_event_label.tif", np.where(classes == SPARK, 1, 0) + np.where(classes == PUFF, 2, 0))
            pd.DataFrame({"id": [1, 2], "class": ["spark", "puff"]}).to_csv(folder / "01_events.csv", index=False)
    return shape


def test_prepare_dataset_labels_writes_the_layout_with_units(tmp_path):
    make_dataset(tmp_path / "raw")
    calls = []
    config = LabelConfig(sparks_type="peaks")
    written = prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", config,
                                     progress=lambda done, total: calls.append((done, total)))
    out = tmp_path / "train"
    assert written == [out / "01_class_label.tif", out / "02_class_label.tif"]
    assert sorted(p.name for p in out.iterdir()) == [
        "01_class_label.tif", "01_event_label.tif", "01_events.csv", "01_video.tif",
        "02_class_label.tif", "02_event_label.tif", "02_video.tif", "prepared_labels.json",
    ]
    assert calls == [(1, 2), (2, 2)]
    for name in ("01_video.tif", "01_class_label.tif", "02_event_label.tif"):
        pixel, frame = read_units(out / name)
        assert pixel == pytest.approx(PX) and frame == pytest.approx(DT)
    raw_classes = read_stack(tmp_path / "raw" / "01_class_label.tif")
    movie = read_stack(tmp_path / "raw" / "01_video.tif")
    expected = prepare_labels(raw_classes, None, movie, PX, DT, config)
    assert np.array_equal(read_stack(out / "01_class_label.tif"), expected)
    assert np.array_equal(read_stack(out / "01_video.tif"), movie)
    events_02 = read_stack(out / "02_event_label.tif")
    assert len(np.unique(events_02[raw_classes == SPARK])) == 1 and events_02[raw_classes == PUFF].min() > 0
    assert (out / "01_events.csv").read_text() == (tmp_path / "raw" / "01_events.csv").read_text()


def test_a_prepared_set_of_spark_peaks_passes_its_own_check(tmp_path):
    """Peak balls reaching past their annotated spark were voxels of no instance: `casparks
    check` warned about prepare-labels' own output. They now take their spark's id."""
    from casparks.dataset import check_dataset

    make_dataset(tmp_path / "raw")
    prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", LabelConfig(sparks_type="peaks", peak_radius_um=1.2))
    labels = read_stack(tmp_path / "train" / "01_class_label.tif")
    events = read_stack(tmp_path / "train" / "01_event_label.tif")
    raw_events = read_stack(tmp_path / "raw" / "01_event_label.tif")
    assert ((labels == SPARK) & (raw_events == 0)).any()  # a ball reaches past the annotation
    assert not ((labels == SPARK) & (events == 0)).any()
    assert set(np.unique(events[labels == SPARK])) == {1}  # the spark's own id
    assert not [p for p in check_dataset(tmp_path / "train") if "no instance" in p.message]


def test_peak_balls_cut_off_by_annotated_ignore_make_no_sparks_of_their_own(tmp_path):
    """A ball reaching past the annotator's ignore margin around its spark: the part beyond was
    cut off from its peak and given a new id, a spark of a few voxels in no annotation (simulated
    movie 01: ids 4, 5, 6 of 2, 14 and 8 voxels). The parts are ignore now; and a spark whose two
    balls do not touch is one spark to `casparks check`, joined by the rest of it, now ignore."""
    from casparks.dataset import check_dataset

    shape = (30, 20, 40)
    movie = 1000 + 300 * (gaussian(shape, (11, 10, 10)) + gaussian(shape, (8, 10, 30)) + gaussian(shape, (20, 10, 30)))
    classes = np.zeros(shape, dtype=np.uint8)
    events = np.zeros(shape, dtype=np.uint16)
    classes[8:15, 6:15, 6:15] = IGNORE  # the annotator's margin around spark 1
    classes[10:13, 8:13, 8:13] = SPARK
    events[10:13, 8:13, 8:13] = 1
    classes[6:23, 8:13, 28:33] = SPARK  # spark 2: maxima 12 frames apart, balls apart
    events[6:23, 8:13, 28:33] = 2
    raw, train = tmp_path / "raw", tmp_path / "train"
    raw.mkdir()
    write_stack(raw / "01_video.tif", movie.astype(np.uint16), PX, DT)
    write_class_label(raw / "01_class_label.tif", classes, PX, DT)
    write_event_label(raw / "01_event_label.tif", events, PX, DT)
    prepare_dataset_labels(raw, train, LabelConfig(sparks_type="peaks", peak_radius_um=1.2))
    labels = read_stack(train / "01_class_label.tif")
    prepared = read_stack(train / "01_event_label.tif")
    assert ((labels == SPARK) & (classes == BACKGROUND)).any()  # balls do reach past their sparks
    assert set(np.unique(prepared).tolist()) == {0, 1, 2}  # no id the annotation lacks
    assert set(np.unique(prepared[labels == SPARK]).tolist()) == {1, 2}
    assert labels[11, 10, 16] == labels[11, 16, 10] == IGNORE  # 6 px from spark 1's peak, beyond its margin
    _, n_balls = ndimage.label((labels == SPARK) & (prepared == 2), structure=np.ones((3, 3, 3)))
    assert n_balls == 2
    assert check_dataset(train) == []


def test_adopting_orphans_gives_an_untouched_region_a_new_id():
    from casparks.labels import adopt_orphan_voxels

    labels = np.zeros((6, 8, 8), np.uint8)
    instances = np.zeros(labels.shape, np.uint16)
    labels[1:3, 1:3, 1:3] = SPARK
    instances[1:3, 1:3, 1:2] = 5  # part of the spark annotated
    labels[4:6, 6:8, 6:8] = PUFF  # nothing annotated near it
    out = adopt_orphan_voxels(labels, instances)
    assert (out[1:3, 1:3, 1:3] == 5).all() and (out[4:6, 6:8, 6:8] == 6).all()
    assert out[labels == 0].max() == 0 and instances.max() == 5  # the input is not changed


def test_prepare_dataset_labels_refuses_to_overwrite_and_writes_nothing(tmp_path):
    make_dataset(tmp_path / "raw")
    out = tmp_path / "train"
    out.mkdir()
    (out / "02_class_label.tif").write_bytes(b"old")
    with pytest.raises(CasparksError, match="--overwrite"):
        prepare_dataset_labels(tmp_path / "raw", out, LabelConfig())
    assert [p.name for p in out.iterdir()] == ["02_class_label.tif"]
    assert (out / "02_class_label.tif").read_bytes() == b"old"
    prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(), overwrite=True)
    assert read_stack(out / "02_class_label.tif").shape == (30, 20, 40)


def test_prepare_dataset_labels_refuses_an_output_holding_movies_the_input_no_longer_has(tmp_path):
    """Movie 02 removed from the raw annotations, prepared again with --overwrite: the prepared
    folder kept 02, check found it clean and training used it."""
    import shutil

    make_dataset(tmp_path / "raw")
    out = tmp_path / "train"
    prepare_dataset_labels(tmp_path / "raw", out, LabelConfig())
    for path in (tmp_path / "raw").glob("02_*"):
        path.unlink()
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(CasparksError, match=r"holds 1 movie\(s\) the input folder does not \(02\)"):
        prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written
    for path in out.glob("02_*"):
        path.unlink()
    prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(), overwrite=True)
    shutil.rmtree(out)


def test_prepare_dataset_labels_needs_units(tmp_path):
    make_dataset(tmp_path / "raw", units=False)
    with pytest.raises(CasparksError, match="--pixel-size") as info:
        prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", LabelConfig())
    assert "--frame-interval" in str(info.value)
    assert not (tmp_path / "train").exists()
    prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", LabelConfig(), pixel_size_um=PX, frame_interval_ms=DT)
    pixel, frame = read_units(tmp_path / "train" / "01_video.tif")  # the copy carries the units
    assert pixel == pytest.approx(PX) and frame == pytest.approx(DT)


def test_prepare_labels_names_given_units_that_differ_from_a_movies_own(tmp_path, caplog):
    make_dataset(tmp_path / "raw", n=1)
    with caplog.at_level("WARNING", logger="casparks"):
        assert main(["prepare-labels", str(tmp_path / "raw"), "--out", str(tmp_path / "train"),
                     "--pixel-size", str(PX * 2), "--frame-interval", str(DT)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("01_video.tif" in m and f"{PX * 2:g} µm (--pixel-size / pixel_size_um=)" in m and f"{PX:g} µm" in m for m in warned)
    assert read_units(tmp_path / "train" / "01_video.tif")[0] == pytest.approx(PX * 2)  # given units override


def test_prepare_dataset_labels_rejects_same_folder_and_mismatched_shapes(tmp_path):
    make_dataset(tmp_path / "raw")
    with pytest.raises(CasparksError, match="input folder"):
        prepare_dataset_labels(tmp_path / "raw", tmp_path / "raw" / ".." / "raw", LabelConfig())
    write_class_label(tmp_path / "raw" / "02_class_label.tif", np.zeros((3, 20, 40), np.uint8), PX, DT, overwrite=True)
    with pytest.raises(CasparksError, match="differs from the movie"):
        prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", LabelConfig())
    assert not (tmp_path / "train").exists()
    # two bad movies: both named in one error, a line each
    write_class_label(tmp_path / "raw" / "01_class_label.tif", np.zeros((3, 20, 40), np.uint8), PX, DT, overwrite=True)
    with pytest.raises(CasparksError, match="2 of 2 movies cannot be prepared") as info:
        prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", LabelConfig())
    assert [line for line in str(info.value).splitlines() if "differs from the movie" in line][1:]
    assert not (tmp_path / "train").exists()


def test_prepare_labels_refuses_what_check_refuses_naming_every_movie_and_writing_nothing(tmp_path, capsys):
    """Class code 5 and float32 class labels (Fiji's 32-bit) crashed with a traceback after the
    earlier movies were written; an event of two classes was written with exit 0 (and its
    output failed `casparks check`). All three are now one error, a line per movie, exit 2."""
    import tifffile

    make_dataset(tmp_path / "raw", n=3)
    raw = tmp_path / "raw"
    classes = read_stack(raw / "01_class_label.tif").copy()
    coded = classes.copy()
    coded[10, 5, 6] = 5  # an annotator's "unsure" code
    write_class_label(raw / "01_class_label.tif", coded, PX, DT, overwrite=True)
    tifffile.imwrite(raw / "02_class_label.tif", classes.astype(np.float32))
    mixed = classes.copy()
    mixed[10:15, 5:15, 6:18] = PUFF  # half of the spark painted puff, one id for both
    write_class_label(raw / "03_class_label.tif", mixed, PX, DT, overwrite=True)
    write_event_label(raw / "03_event_label.tif", (mixed == SPARK) | (mixed == PUFF))
    out = tmp_path / "train"
    assert main(["prepare-labels", str(raw), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "3 of 3 movies cannot be prepared" in err
    lines = err.splitlines()
    assert any("01_class_label.tif" in line and "unknown class codes [5]" in line for line in lines)
    assert any("02_class_label.tif" in line and "float32" in line for line in lines)
    assert any("03_event_label.tif" in line and "1 (spark/puff)" in line for line in lines)
    assert not out.exists()


def test_prepare_labels_says_how_to_turn_a_binary_mask_of_0_and_255_into_codes(tmp_path, capsys):
    """Fiji's thresholded mask (0/255) was refused as "unknown class codes [255]" with no hint."""
    make_dataset(tmp_path / "raw", n=1)
    raw = tmp_path / "raw"
    mask = (read_stack(raw / "01_class_label.tif") > 0).astype(np.uint8) * 255
    write_class_label(raw / "01_class_label.tif", mask, PX, DT, overwrite=True)
    assert main(["prepare-labels", str(raw), "--out", str(tmp_path / "train")]) == 2
    err = capsys.readouterr().err
    assert "unknown class codes [255]" in err
    assert "it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks" in err


def test_prepare_labels_names_a_detection_folder_as_one_and_writes_nothing(detection_output, tmp_path, capsys):
    """Its labels without movies were "sample(s) 01 have no video file", as evaluate says "swapped?"."""
    det = detection_output
    assert main(["prepare-labels", str(det), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "det: holds the output of `casparks detect`, not annotated movies" in err
    assert "no video file" not in err and not (tmp_path / "out").exists()


def test_prepare_labels_refuses_an_event_of_two_classes(tmp_path):
    """Which class the event has is the annotator's call: refused as `check` and `evaluate` do,
    naming the movie's file and the event id, not written for training to learn."""
    make_dataset(tmp_path / "raw", n=1)
    classes = read_stack(tmp_path / "raw" / "01_class_label.tif").copy()
    events = read_stack(tmp_path / "raw" / "01_event_label.tif").copy()
    classes[10:15, 5:15, 6:18] = PUFF  # half of spark 1 painted puff
    write_class_label(tmp_path / "raw" / "01_class_label.tif", classes, PX, DT, overwrite=True)
    with pytest.raises(CasparksError, match=r"01_event_label.tif: 1 event\(s\) carry more than one class: 1 \(spark/puff\)"):
        prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", LabelConfig())
    assert not (tmp_path / "train").exists()
    assert events[10, 5, 6] == 1


def test_cli_prepare_labels(tmp_path, capsys):
    make_dataset(tmp_path / "raw", units=False)
    out = tmp_path / "train"
    argv = ["prepare-labels", str(tmp_path / "raw"), "--out", str(out), "--sparks-type", "peaks",
            "--pixel-size", "0.2", "--frame-interval", "6.8"]
    assert main(argv) == 0
    assert "2 sample(s)" in capsys.readouterr().out
    labels = read_stack(out / "01_class_label.tif")
    assert set(np.unique(labels).tolist()) == {BACKGROUND, SPARK, PUFF, IGNORE}
    assert main(argv) == 2  # exists already
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prepare-labels", str(tmp_path / "raw"), "--out", str(tmp_path / "t3"), "--sparks-type", "peaks",
                 "--peak-radius-um", "0", "--peak-radius-ms", "0", "--ignore-width-um", "0", "--ignore-width-ms", "0",
                 "--only-sparks", "--pixel-size", "0.2", "--frame-interval", "6.8"]) == 0
    single = read_stack(tmp_path / "t3" / "01_class_label.tif")
    assert np.count_nonzero(single == SPARK) == 1 and not (single == PUFF).any()
    assert main(["prepare-labels", str(tmp_path / "raw"), "--out", str(tmp_path / "t2"),
                 "--ignore-width-um", "-1", "--pixel-size", "0.2", "--frame-interval", "6.8"]) == 2
    assert "ignore_width_um" in capsys.readouterr().err


@pytest.mark.parametrize("radius_um, radius_ms", [(0.4, 13.6), (0.6, 6.8), (0.2, 0.0), (0.0, 20.0), (1.0, 30.0)])
def test_dilate_strategies_match_a_whole_volume_distance_transform(radius_um, radius_ms):
    """Small stencils OR shifted copies, large ones use distance transforms: same voxels as brute force."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    mask = rng.random((30, 20, 40)) > 0.99
    mask[5:25, 2:18, 10:30] |= rng.random((20, 16, 20)) > 0.7  # a dense region as well
    sampling = tuple((step / r) if r > 0 else 1e6 for step, r in ((6.8, radius_ms), (0.2, radius_um), (0.2, radius_um)))
    expected = ndimage.distance_transform_edt(~mask, sampling=sampling) <= 1.0 + 1e-9
    np.testing.assert_array_equal(dilate(mask, radius_um, radius_ms, 0.2, 6.8), expected)


@pytest.mark.parametrize("pixel, frame", [(-1, 6.8), (0.2, 0), (float("nan"), 6.8)])
def test_prepare_labels_refuses_units_with_a_casparks_error(pixel, frame):
    """Units are a user's input: the README says their mistakes raise CasparksError (a plain
    ValueError came out here)."""
    from casparks import CasparksError

    classes, events = np.zeros((10, 8, 8), np.uint8), np.zeros((10, 8, 8), np.uint16)
    with pytest.raises(CasparksError, match="must be a positive number") as info:
        prepare_labels(classes, events, None, pixel, frame)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_an_interrupted_preparation_goes_on_with_skip_existing(tmp_path, capsys):
    """A preparation cut short (SIGTERM, a full disk) left samples 01-03 of 4; a rerun was refused
    ("output files exist already") and --overwrite redid all of them."""
    from casparks.cli import main

    make_dataset(tmp_path / "raw")
    out = tmp_path / "train"

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(), progress=interrupt)
    (out / "02_class_label.tif").write_bytes(b"half")  # what the interruption left of sample 02
    kept = (out / "01_class_label.tif").stat().st_mtime_ns
    with pytest.raises(CasparksError, match="--skip-existing"):
        prepare_dataset_labels(tmp_path / "raw", out, LabelConfig())
    written = prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(), skip_existing=True)
    assert [p.name for p in written] == ["02_class_label.tif"]
    assert (out / "01_class_label.tif").stat().st_mtime_ns == kept
    assert read_stack(out / "02_class_label.tif").shape == (30, 20, 40)
    # other settings: refused, naming them (the samples prepared with the old ones were replaced
    # without --overwrite, peaks labels rewritten as raw), as detect --skip-existing refuses
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(CasparksError, match=r"01_class_label.tif: was prepared with other settings \(ignore_width_um: "
                                            r"0.2 → 0.4\).*--overwrite"):
        prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(ignore_width_um=0.4), skip_existing=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    again = prepare_dataset_labels(tmp_path / "raw", out, LabelConfig(ignore_width_um=0.4), overwrite=True)
    assert [p.name for p in again] == ["01_class_label.tif", "02_class_label.tif"]
    assert main(["prepare-labels", str(tmp_path / "raw"), "--out", str(out), "--overwrite", "--skip-existing"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_label_options_may_be_a_mapping_as_the_config_files_give_them(tmp_path):
    """prepare_labels(..., {"sparks_type": "peaks"}) was an AttributeError deep inside; a mapping
    is read as LabelConfig.from_dict reads it, with its check of the keys."""
    shape = (21, 21, 21)
    movie = gaussian(shape, (10, 10, 10), sigma_t=2.0, sigma_xy=2.0)
    classes = np.zeros(shape, dtype=np.uint8)
    classes[9:12, 9:12, 9:12] = SPARK
    expected = prepare_labels(classes, None, movie, PX, DT, LabelConfig(sparks_type="peaks"))
    assert np.array_equal(prepare_labels(classes, None, movie, PX, DT, {"sparks_type": "peaks"}), expected)
    with pytest.raises(CasparksError, match=r"unknown label option\(s\) sparks_typ; did you mean sparks_type"):
        prepare_labels(classes, None, movie, PX, DT, {"sparks_typ": "peaks"})
    with pytest.raises(CasparksError, match="config must be a LabelConfig or a mapping of its options, got str 'peaks'"):
        prepare_labels(classes, None, movie, PX, DT, "peaks")
    with pytest.raises(CasparksError, match="config must be a LabelConfig or a mapping"):
        prepare_dataset_labels(tmp_path / "raw", tmp_path / "train", "peaks")

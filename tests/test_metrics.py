"""Event and voxel metrics on hand-built arrays with answers computed by hand."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from casparks.classes import IGNORE, PUFF, SPARK, WAVE
from casparks.instances import instances_from_classes
from casparks.metrics import (
    EventCounts,
    LabelArrayError,
    check_codes,
    count_events,
    f1_score,
    label_instances,
    one_to_one_pairs,
    overlaps,
    ratio,
    scores,
    voxel_confusion,
)

SHAPE = (12, 8, 40)


def empty(dtype=np.uint8):
    return np.zeros(SHAPE, dtype=dtype)


def put(array, t, y, x, value):
    array[t[0]:t[1], y[0]:y[1], x[0]:x[1]] = value
    return array


def score(truth, pred, truth_events=None, pred_events=None, **kwargs):
    return scores(count_events(truth, truth_events, pred, pred_events, **kwargs))


def cls(result, name):
    return result["classes"][name]


def three_events():
    truth = empty()
    put(truth, (0, 4), (0, 4), (0, 4), SPARK)
    put(truth, (0, 12), (0, 8), (10, 20), WAVE)
    put(truth, (2, 10), (2, 6), (25, 30), PUFF)
    return truth


# ----------------------------------------------------------------------------------------------
# instances


def test_instances_from_classes_splits_touching_classes_and_joins_diagonals():
    classes = empty()
    put(classes, (0, 2), (0, 2), (0, 2), SPARK)
    put(classes, (0, 2), (0, 2), (2, 4), PUFF)  # touches the spark: a separate instance
    classes[6, 6, 20] = SPARK
    classes[7, 7, 21] = SPARK  # diagonal neighbour: 26-connected, not 6-connected
    put(classes, (5, 6), (5, 6), (10, 12), SPARK)  # far away
    labels = instances_from_classes(classes)
    assert np.unique(labels).tolist() == [0, 1, 2, 3, 4]  # compact ids
    assert len(np.unique(labels[0:2, 0:2, 0:2])) == 1
    assert labels[0, 0, 0] != labels[0, 0, 2]
    assert labels[6, 6, 20] == labels[7, 7, 21] != labels[0, 0, 0]
    assert (labels[classes == 0] == 0).all() and (labels[classes > 0] > 0).all()
    # 6-connectivity separates the diagonal voxels
    assert instances_from_classes(classes, connectivity=6).max() == 5


def test_label_instances_splits_ids_by_class_and_derives_orphans():
    classes = empty()
    events = empty(np.uint16)
    put(classes, (0, 2), (0, 2), (0, 4), SPARK)
    put(events, (0, 2), (0, 2), (0, 4), 7)
    put(classes, (0, 2), (0, 2), (2, 4), PUFF)  # same id 7, another class: another instance
    put(classes, (5, 6), (5, 6), (10, 12), WAVE)  # no id: derived
    put(classes, (8, 9), (0, 1), (0, 1), IGNORE)
    put(events, (8, 9), (0, 1), (0, 1), 9)  # an id on ignore voxels is no instance
    labels, codes = label_instances(classes, events)
    assert sorted(codes.tolist()) == [SPARK, WAVE, PUFF]
    assert labels.max() == 3
    assert labels[0, 0, 0] != labels[0, 0, 3]
    assert codes[labels[5, 5, 10] - 1] == WAVE
    assert labels[8, 0, 0] == 0


# ----------------------------------------------------------------------------------------------
# reference and one-to-one scores


def test_perfect_prediction_scores_one():
    truth = three_events()
    result = score(truth, truth.copy())
    for name in ("spark", "wave", "puff"):
        c = cls(result, name)
        assert c["reference"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "detected": 1.0, "correctly_classified": 1.0}
        assert c["one_to_one"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
        assert c["voxel_iou"] == 1.0
        assert c["annotations"] == c["predictions"] == 1
    assert result["average"]["reference"]["f1"] == 1.0
    assert result["confusion"]["counts"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("bad, expected", [
    (1.5, "must be whole numbers"), (np.nan, "must be whole numbers"), (-2, "must be 0 (no event) or positive"),
])
def test_event_ids_that_are_not_whole_non_negative_numbers_are_refused(bad, expected):
    """1.5 was truncated to 1, -2 counted as an event, NaN a NumPy error about negative elements."""
    truth = three_events()
    ids = (truth > 0).astype(float if np.isnan(bad) or bad % 1 else np.int64)
    ids[truth > 0] = 1
    ids.flat[np.flatnonzero(truth > 0)[0]] = bad
    with pytest.raises(ValueError, match=re.escape(expected)):
        count_events(truth, None, truth.copy(), ids)


def test_empty_prediction_recall_zero_precision_undefined():
    truth = three_events()
    result = score(truth, empty())
    for name in ("spark", "wave", "puff"):
        c = cls(result, name)
        assert c["reference"]["recall"] == 0.0
        assert math.isnan(c["reference"]["precision"])
        assert c["reference"]["f1"] == 0.0  # recall 0, precision undefined
        assert c["reference"]["detected"] == 0.0
        assert math.isnan(c["reference"]["correctly_classified"])
        assert c["one_to_one"]["recall"] == 0.0 and math.isnan(c["one_to_one"]["precision"])
        assert c["voxel_iou"] == 0.0
    assert math.isnan(result["average"]["reference"]["precision"])
    assert result["average_paper_convention"]["precision"] == 0.0
    assert [row[3] for row in result["confusion"]["counts"][:3]] == [1, 1, 1]  # all missed


def test_shifted_event_matches_above_threshold_only():
    truth = put(empty(), (0, 4), (0, 4), (0, 4), SPARK)  # 64 voxels
    near = put(empty(), (1, 5), (0, 4), (0, 4), SPARK)  # overlap 48 → IoMin 0.75
    far = put(empty(), (3, 7), (0, 4), (0, 4), SPARK)  # overlap 16 → IoMin 0.25
    assert cls(score(truth, near), "spark")["reference"]["f1"] == 1.0
    assert cls(score(truth, near), "spark")["one_to_one"]["f1"] == 1.0
    assert cls(score(truth, near, iomin_threshold=0.8), "spark")["reference"]["recall"] == 0.0
    result = score(truth, far)
    spark = cls(result, "spark")
    assert spark["reference"]["precision"] == 0.0 and spark["reference"]["recall"] == 0.0
    assert spark["reference_counts"]["unmatched"] == 1
    assert result["confusion"]["counts"][0][3] == 1  # missed
    assert result["confusion"]["counts"][3][0] == 1  # spurious spark


def test_iomin_uses_the_smaller_event():
    truth = put(empty(), (0, 10), (0, 8), (0, 10), PUFF)  # 800 voxels
    small = put(empty(), (2, 4), (2, 4), (2, 4), PUFF)  # 8 voxels inside: IoMin 1, IoU 0.01
    labels_t, _ = label_instances(truth)
    labels_p, _ = label_instances(small)
    ov = overlaps(labels_t, 1, labels_p, 1, truth == IGNORE)
    assert ov.iomin[0, 0] == 1.0
    assert cls(score(truth, small), "puff")["reference"]["f1"] == 1.0


def test_split_annotation_many_to_many_both_tp_one_to_one_one_fp():
    truth = put(empty(), (0, 10), (0, 4), (0, 4), PUFF)
    pred = empty()
    put(pred, (0, 4), (0, 4), (0, 4), PUFF)
    put(pred, (6, 10), (0, 4), (0, 4), PUFF)  # two separate pieces, each inside the annotation
    result = score(truth, pred)
    puff = cls(result, "puff")
    assert puff["predictions"] == 2
    assert puff["reference_counts"]["tp_predictions"] == 2
    assert puff["reference"]["precision"] == 1.0 and puff["reference"]["recall"] == 1.0
    assert puff["one_to_one_counts"] == {"tp": 1, "fp": 1, "fn": 0, "ignored": 0}
    assert puff["one_to_one"]["precision"] == 0.5 and puff["one_to_one"]["recall"] == 1.0
    assert puff["one_to_one"]["f1"] == pytest.approx(2 / 3)
    assert result["confusion"]["counts"][2][2] == 1 and result["confusion"]["counts"][3][2] == 1


def test_merged_annotations_many_to_many_both_recalled_one_to_one_one_missed():
    truth, events = empty(), empty(np.uint16)
    put(truth, (0, 3), (0, 3), (0, 3), SPARK)
    put(events, (0, 3), (0, 3), (0, 3), 1)
    put(truth, (0, 3), (0, 3), (5, 8), SPARK)
    put(events, (0, 3), (0, 3), (5, 8), 2)
    pred = put(empty(), (0, 3), (0, 3), (0, 8), SPARK)  # one event over both
    spark = cls(score(truth, pred, truth_events=events), "spark")
    assert spark["annotations"] == 2 and spark["predictions"] == 1
    assert spark["reference"]["precision"] == 1.0 and spark["reference"]["recall"] == 1.0
    assert spark["one_to_one"]["precision"] == 1.0 and spark["one_to_one"]["recall"] == 0.5
    assert spark["one_to_one"]["f1"] == pytest.approx(2 / 3)
    assert spark["one_to_one_counts"]["fn"] == 1


def test_wrong_class_detected_but_not_correctly_classified():
    truth = put(empty(), (0, 6), (0, 4), (0, 4), PUFF)
    pred = put(empty(), (0, 6), (0, 4), (0, 4), SPARK)
    result = score(truth, pred)
    puff, spark = cls(result, "puff"), cls(result, "spark")
    assert puff["reference"]["detected"] == 1.0
    assert puff["reference"]["recall"] == 0.0
    assert spark["reference"]["precision"] == 0.0
    assert spark["reference"]["correctly_classified"] == 0.0  # matched, but to a puff
    assert spark["reference_counts"]["matched_predictions"] == 1
    assert math.isnan(spark["reference"]["recall"])  # no spark annotated
    assert result["confusion"]["counts"][2][0] == 1  # annotated puff → predicted spark
    assert result["all_events"]["reference"]["detected"] == 1.0
    assert result["all_events"]["reference"]["correctly_classified"] == 0.0


def test_prediction_on_ignore_is_ignored_not_a_false_positive():
    truth = put(empty(), (0, 12), (0, 8), (10, 20), IGNORE)
    pred = empty()
    put(pred, (0, 2), (0, 2), (8, 13), WAVE)  # 3 of 5 columns on ignore: 60 % → ignored
    put(pred, (5, 7), (0, 2), (18, 23), SPARK)  # 2 of 5 columns: 40 % → false positive
    result = score(truth, pred)
    wave, spark = cls(result, "wave"), cls(result, "spark")
    assert wave["reference_counts"]["ignored"] == 1 and wave["reference_counts"]["unmatched"] == 0
    assert math.isnan(wave["reference"]["precision"])  # 1 prediction − 1 ignored
    assert wave["one_to_one_counts"] == {"tp": 0, "fp": 0, "fn": 0, "ignored": 1}
    assert spark["reference_counts"]["ignored"] == 0 and spark["reference_counts"]["unmatched"] == 1
    assert spark["reference"]["precision"] == 0.0
    assert result["confusion"]["counts"][3] == [1, 0, 0, 0]  # spurious spark only


def test_ignore_fraction_is_configurable():
    truth = put(empty(), (0, 12), (0, 8), (10, 20), IGNORE)
    pred = put(empty(), (5, 7), (0, 2), (18, 23), SPARK)  # 40 % on ignore
    assert cls(score(truth, pred, ignore_fraction=0.4), "spark")["reference_counts"]["ignored"] == 1


def test_voxel_iou_outside_ignore():
    truth = empty()
    put(truth, (0, 2), (0, 2), (0, 2), SPARK)  # 8 voxels
    put(truth, (0, 2), (0, 2), (10, 12), IGNORE)
    pred = empty()
    put(pred, (0, 2), (0, 2), (0, 3), SPARK)  # 12 voxels, 8 shared
    put(pred, (0, 2), (0, 2), (10, 12), SPARK)  # on ignore: not counted
    put(pred, (5, 6), (5, 6), (30, 31), IGNORE)  # predicted ignore = background
    assert cls(score(truth, pred), "spark")["voxel_iou"] == pytest.approx(8 / 12)
    voxels = voxel_confusion(truth, pred)
    assert voxels[SPARK, SPARK] == 8 and voxels[0, SPARK] == 4
    assert voxels.sum() == truth.size - 8  # ignore voxels left out


def test_class_with_nothing_is_undefined():
    truth = put(empty(), (0, 4), (0, 4), (0, 4), SPARK)
    result = score(truth, truth.copy())
    wave = cls(result, "wave")
    for group in ("reference", "one_to_one"):
        assert all(math.isnan(v) for v in wave[group].values())
    assert math.isnan(wave["voxel_iou"])
    assert result["average"]["reference"]["precision"] == 1.0  # mean over defined classes
    assert result["average_paper_convention"]["precision"] == pytest.approx(1 / 3)


def _sparks_and_a_false_puff(found, false_puff):
    """Four annotated sparks, no puff; ``found`` of them predicted, and a false puff or not."""
    truth, pred = empty(), empty()
    for k in range(4):
        put(truth, (0, 2), (0, 2), (10 * k, 10 * k + 2), SPARK)
    for k in range(found):
        put(pred, (0, 2), (0, 2), (10 * k, 10 * k + 2), SPARK)
    if false_puff:
        put(pred, (4, 8), (4, 8), (0, 3), PUFF)
    return count_events(truth, None, pred, None)


def test_average_leaves_out_a_class_nobody_annotated():
    """One false puff where no puff is annotated put an F1 of 0 into the average at full weight:
    all 4 sparks + 1 false puff averaged 0.50, below 2 of 4 sparks (0.67)."""
    all_found, half = scores(_sparks_and_a_false_puff(4, True)), scores(_sparks_and_a_false_puff(2, False))
    assert all_found["average"]["one_to_one"]["f1"] == 1.0
    assert half["average"]["one_to_one"]["f1"] == pytest.approx(2 / 3)
    assert all_found["average"]["reference"]["f1"] == 1.0 and all_found["average"]["voxel_iou"] == 1.0
    puff = cls(all_found, "puff")  # the false puff stays visible in its own class and in all events
    assert puff["predictions"] == 1 and puff["one_to_one"]["f1"] == 0.0 and puff["one_to_one_counts"]["fp"] == 1
    assert all_found["all_events"]["one_to_one"]["precision"] == pytest.approx(4 / 5)
    assert all_found["average_paper_convention"]["f1"] == pytest.approx(1 / 3)  # the paper's rule unchanged


def test_average_without_any_annotation_takes_the_defined_classes():
    pred = put(empty(), (0, 2), (0, 2), (0, 2), SPARK)
    result = score(empty(), pred)
    assert result["average"]["one_to_one"]["f1"] == 0.0  # the false spark, as before
    assert math.isnan(score(empty(), empty())["average"]["one_to_one"]["f1"])


def test_counts_sum_across_movies_before_ratios():
    truth_a = empty()
    for x in (0, 10, 20):
        put(truth_a, (0, 3), (0, 3), (x, x + 3), SPARK)
    movie_a = count_events(truth_a, None, truth_a.copy(), None)  # 3 of 3 found
    truth_b = put(empty(), (0, 3), (0, 3), (0, 3), SPARK)
    movie_b = count_events(truth_b, None, empty(), None)  # 0 of 1 found
    total = movie_a + movie_b
    assert isinstance(total, EventCounts)
    assert total.annotations.tolist() == [4, 0, 0]
    assert sum([movie_a, movie_b]).annotations.tolist() == [4, 0, 0]
    spark = scores(total)["classes"]["spark"]
    assert spark["reference"]["recall"] == 0.75  # (3 + 0) / (3 + 1), not mean(1, 0) = 0.5
    assert spark["one_to_one"]["recall"] == 0.75
    assert spark["reference"]["precision"] == 1.0


def test_one_to_one_maximises_number_of_pairs():
    iomin = np.array([[0.9, 0.6], [0.7, 0.0]])
    rows, cols = one_to_one_pairs(iomin, 0.5)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = one_to_one_pairs(np.array([[0.4]]), 0.5)
    assert rows.size == cols.size == 0
    rows, cols = one_to_one_pairs(np.zeros((0, 3)), 0.5)
    assert rows.size == 0


def test_one_to_one_prefers_pairs_of_the_same_class():
    # an annotated wave (row 0) covered by a predicted wave (IoMin 0.99) and containing a small
    # predicted spark (IoMin 1.0): the wave pairs with the wave, the spark is left over
    iomin = np.array([[0.99, 1.0]])
    same = np.array([[True, False]])
    rows, cols = one_to_one_pairs(iomin, 0.5, same)
    assert (rows.tolist(), cols.tolist()) == ([0], [0])
    rows, cols = one_to_one_pairs(iomin, 0.5)  # without classes: the larger IoMin
    assert (rows.tolist(), cols.tolist()) == ([0], [1])
    # a pair of the same class beats two pairs of other classes, which give no true positive
    # (they were preferred before session 33, and cost a correct wave its pair)
    iomin = np.array([[0.9, 0.8], [0.0, 0.7]])
    same = np.array([[False, True], [False, False]])
    rows, cols = one_to_one_pairs(iomin, 0.5, same)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1)]
    # without a same-class pair at stake, still as many pairs as possible
    same = np.array([[False, False], [False, False]])
    rows, cols = one_to_one_pairs(iomin, 0.5, same)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1)]


def test_a_wave_keeps_its_true_positive_when_it_also_covers_an_annotated_spark():
    """An annotated wave and an annotated spark before it, both covered by one predicted wave, and a
    small predicted spark inside the wave: the predicted wave paired with the annotated spark (two
    pairs of other classes), wave F1 0 where 1 is right."""
    truth, pred = np.zeros((20, 10, 40), np.uint8), np.zeros((20, 10, 40), np.uint8)
    truth_ids, pred_ids = np.zeros(truth.shape, np.int32), np.zeros(truth.shape, np.int32)
    truth[5:15], truth_ids[5:15] = WAVE, 1
    truth[1:3, 2:4, 2:4], truth_ids[1:3, 2:4, 2:4] = SPARK, 2
    pred[0:15], pred_ids[0:15] = WAVE, 1
    pred[8:10, 5:7, 5:7], pred_ids[8:10, 5:7, 5:7] = SPARK, 2
    result = score(truth, pred, truth_ids, pred_ids)
    assert result["classes"]["wave"]["one_to_one"]["f1"] == 1.0
    assert result["classes"]["spark"]["one_to_one_counts"] == {"tp": 0, "fp": 1, "fn": 1, "ignored": 0}


def test_ratio_and_f1_conventions():
    assert math.isnan(ratio(1, 0))
    assert ratio(1, 4) == 0.25
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1_score(0.0, 0.0) == 0.0
    assert f1_score(float("nan"), 0.0) == 0.0
    assert math.isnan(f1_score(float("nan"), float("nan")))


def test_unknown_codes_and_shape_mismatch_are_errors():
    truth = empty()
    with pytest.raises(ValueError, match="unknown codes"):
        count_events(truth, None, put(empty(), (0, 1), (0, 1), (0, 1), 7), None)
    with pytest.raises(ValueError, match="shape"):
        count_events(truth, None, np.zeros((2, 2, 2), np.uint8), None)


def test_a_binary_mask_of_0_and_255_is_refused_with_how_to_turn_it_into_codes():
    """Fiji saves a thresholded mask as 0/255: refused as "unknown codes [255]" with no hint."""
    mask = put(empty(), (0, 1), (0, 1), (0, 1), 255)
    with pytest.raises(LabelArrayError, match=r"unknown codes \[255\]") as caught:
        check_codes(mask)
    assert caught.value.fix == "it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks (* 2 waves, * 3 puffs)"
    mask[1, 1, 1] = 2  # codes of their own beside 255: no mask
    with pytest.raises(LabelArrayError) as caught:
        check_codes(mask)
    assert caught.value.fix is None


# ----------------------------------------------------------------------------------------------
# bootstrap intervals over movies


def _movie(tp, predictions, annotations):
    """Counts of one movie from per-class one-to-one true positives, predictions and annotations."""
    from casparks.metrics import EventCounts

    confusion = np.zeros((4, 4), np.int64)
    confusion[:3, :3] = np.diag(tp)
    return EventCounts(annotations=np.array(annotations), predictions=np.array(predictions), confusion=confusion)


def test_f1_intervals_resample_movies_and_cover_the_pooled_score():
    from casparks.metrics import f1_intervals, scores

    good = _movie([9, 1, 3], [10, 1, 3], [10, 1, 4])
    poor = _movie([3, 1, 1], [6, 1, 2], [10, 1, 4])
    movies = [good, poor, good, poor, good, poor]
    interval = f1_intervals(movies)
    pooled = scores(sum(movies))["classes"]["spark"]["one_to_one"]["f1"]
    lo, hi = interval["spark"]
    assert lo < pooled < hi and hi - lo > 0.1  # movies disagree: a real width
    # per movie: F1 0.947 and 0.375, so no resample leaves that range
    assert 0.375 <= lo and hi <= 0.948
    assert interval["wave"] == (1.0, 1.0)  # every movie alike: no width
    assert f1_intervals(movies) == interval  # the same counts, the same interval
    assert f1_intervals([good]) is None  # one movie: nothing to resample
    # identical movies: the interval is the score itself
    same = f1_intervals([good] * 5)
    assert same["spark"] == pytest.approx((2 * 9 / 20, 2 * 9 / 20))


def test_f1_intervals_average_the_classes_the_movies_annotate():
    """A false puff in movies that annotate no puff entered every resample's mean at 0."""
    from casparks.metrics import f1_intervals

    movies = [_movie([4, 0, 0], [4, 0, 1], [4, 0, 0]), _movie([2, 0, 0], [3, 0, 0], [4, 0, 0])] * 3
    interval = f1_intervals(movies)
    assert interval["average"] == interval["spark"]
    assert interval["puff"] == (0.0, 0.0)  # the false puffs: in the puff's own interval
    # a class annotated in some movies only: in every resample's mean, 0 where a resample holds
    # false puffs without their annotation, left out where it holds no puff at all
    with_puff = [_movie([4, 0, 1], [4, 0, 1], [4, 0, 1]), _movie([4, 0, 0], [4, 0, 1], [4, 0, 0]),
                 _movie([4, 0, 0], [4, 0, 0], [4, 0, 0])]
    lo, hi = f1_intervals(with_puff, resamples=500)["average"]
    assert lo == 0.5 and hi == 1.0


def test_paired_f1_intervals_tell_a_consistently_better_prediction_apart():
    from casparks.metrics import f1_intervals

    truth = [10, 0, 4]
    better = [_movie([8 + k % 2, 0, 3], [9, 0, 3], truth) for k in range(6)]
    worse = [_movie([6 + k % 2, 0, 2], [9, 0, 3], truth) for k in range(6)]
    diff = f1_intervals(better, worse)
    assert diff["spark"][0] > 0 and diff["puff"][0] > 0 and diff["average"][0] > 0
    assert diff["wave"] is None  # no wave annotated or predicted: undefined in every resample
    assert f1_intervals(better, better)["spark"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="same movies"):
        f1_intervals(better, worse[:5])


def test_why_events_were_missed_and_predictions_false_adds_up_to_fn_and_fp():
    """Each kind once, on hand-built events (12 × 8 × 40): a model that merges touching sparks
    needs better separation, one that leaves events unseen needs to see more."""
    truth, events, pred, pred_events = empty(), empty(np.uint16), empty(), empty(np.uint16)

    def annotate(box, code, event_id):
        put(truth, *box, code)
        put(events, *box, event_id)

    def predict(box, code, event_id):
        put(pred, *box, code)
        put(pred_events, *box, event_id)

    annotate(((0, 3), (0, 3), (0, 3)), SPARK, 1)  # two touching sparks found as one: one is merged
    annotate(((0, 3), (0, 3), (3, 6)), SPARK, 2)
    predict(((0, 3), (0, 3), (0, 6)), SPARK, 1)
    annotate(((0, 3), (0, 4), (10, 14)), SPARK, 3)  # partly covered: 2 shared voxels, IoMin 2 / 32
    predict(((0, 2), (3, 7), (13, 17)), SPARK, 2)  # ... by a prediction mostly beside it: partly on an event
    annotate(((5, 8), (0, 3), (20, 23)), SPARK, 4)  # unseen
    annotate(((0, 12), (5, 8), (0, 10)), PUFF, 5)  # a puff found in two pieces: one is split off
    predict(((0, 5), (5, 8), (0, 10)), PUFF, 3)
    predict(((7, 12), (5, 8), (0, 10)), PUFF, 4)
    annotate(((8, 12), (0, 4), (30, 34)), PUFF, 6)  # a puff called a spark: other class on both sides
    predict(((8, 12), (0, 4), (30, 34)), SPARK, 5)
    predict(((0, 3), (0, 3), (36, 39)), WAVE, 6)  # on background

    result = score(truth, pred, events, pred_events)
    expected = {
        "spark": ({"other_class": 0, "merged": 1, "partly_covered": 1, "unseen": 1},
                  {"other_class": 1, "split_off": 0, "partly_on_event": 1, "on_background": 0}),
        "puff": ({"other_class": 1, "merged": 0, "partly_covered": 0, "unseen": 0},
                 {"other_class": 0, "split_off": 1, "partly_on_event": 0, "on_background": 0}),
        "wave": ({"other_class": 0, "merged": 0, "partly_covered": 0, "unseen": 0},
                 {"other_class": 0, "split_off": 0, "partly_on_event": 0, "on_background": 1}),
    }
    for name, (missed, false) in expected.items():
        errors, counts = cls(result, name)["one_to_one_errors"], cls(result, name)["one_to_one_counts"]
        assert errors == {"missed": missed, "false": false}, name
        assert sum(missed.values()) == counts["fn"] and sum(false.values()) == counts["fp"], name
    # the kinds add up over movies, as every count
    twice = count_events(truth, events, pred, pred_events) + count_events(truth, events, pred, pred_events)
    assert cls(scores(twice), "spark")["one_to_one_errors"]["missed"]["merged"] == 2
    from casparks.evaluation import format_scores

    table = format_scores(result).splitlines()
    missed = table.index("Missed annotations, why (one-to-one):")
    assert table[missed + 1].split() == ["class", "other", "class", "merged", "partly", "covered", "unseen"]
    assert table[missed + 2].split() == ["spark", "0", "1", "1", "1"]
    false = table.index("False predictions, why (one-to-one):")
    assert table[false + 4].split() == ["puff", "0", "1", "0", "0"]


def test_sparks_whose_8_bit_ids_wrapped_are_counted_one_each():
    """The reference code's files store ids as 8-bit, which wrap past 255: 300 separate sparks
    became 255 ids, 45 of them on two sparks, and a perfect prediction scored F1 0.8. A spark is
    one region: an 8-bit id file that reaches 255 has each region of a spark id read as a spark."""
    shape = (40, 8, 400)
    classes = np.zeros(shape, np.uint8)
    ids = np.zeros(shape, np.uint32)
    k = 0
    for t in range(0, 40, 8):
        for x in range(0, 400, 7):
            k += 1
            classes[t:t + 3, 2:5, x:x + 4] = SPARK
            ids[t:t + 3, 2:5, x:x + 4] = k
    assert k == 290
    wrapped = (ids % 256).astype(np.uint8)
    spark = cls(score(classes, classes, wrapped, ids.astype(np.uint16)), "spark")
    assert spark["annotations"] == 290 and spark["one_to_one"]["f1"] == 1.0
    # the two parts of a wrapped id that each touch another spark (repeated sparks at one site) are two
    bridged = wrapped.copy()
    bridged_classes = classes.copy()
    bridged_classes[0:3, 2:5, 4:14] = SPARK  # spark 2 (x 7-10) widened to touch sparks 1 (0-3) and 3 (14-17) ...
    bridged[0:3, 2:5, 4:14] = 2
    bridged[bridged == 3] = 1  # ... and spark 3 given spark 1's id
    truth_ids = ids.astype(np.uint16).copy()
    truth_ids[0:3, 2:5, 4:14] = 2
    spark = cls(score(bridged_classes, bridged_classes, bridged, truth_ids), "spark")
    assert spark["annotations"] == 290 and spark["one_to_one"]["f1"] == 1.0
    # 16-bit ids are as given: two separate regions of one id stay one event (two sparks sharing an id)
    shared = ids.astype(np.uint16)
    shared[shared == 2] = 1
    assert cls(score(classes, classes, shared, ids.astype(np.uint16)), "spark")["annotations"] == 289

"""Event and voxel scores: pure array functions, numpy in, numpy out.

Three families of scores compare annotated (truth) and predicted T×Y×X label stacks
(codes 0 background, 1 sparks, 2 waves, 3 puffs, 4 ignore):

**Reference metrics** (Dotti et al. 2024, to compare with the paper). Events are matched
many-to-many by the intersection over minimum, ``IoMin(A, P) = |A∩P| / min(|A|, |P|)``; a pair
matches when IoMin ≥ the threshold (0.5). Per class c:

* precision = predictions of class c matched with ≥ 1 annotation of class c
  / (predictions of class c − ignored ones);
* recall = annotations of class c matched by ≥ 1 prediction of class c / annotations of class c;
* F1 = harmonic mean of that precision and recall;
* detected = annotations of class c matched by a prediction of any class / annotations of class c;
* correctly classified = matched predictions of class c whose match includes class c
  / (predictions of class c − ignored − unmatched), i.e. among the predictions of class c that
  match some annotation, the fraction that match one of their own class. As in the reference,
  a prediction matching annotations of its own and of another class counts as correct.

A prediction that matches no annotation is *ignored* when ≥ 50 % of its voxels lie on ignore
voxels (truth code 4), otherwise it is a false positive ("unmatched").

**One-to-one metrics** (stricter): a Hungarian assignment (``scipy.optimize.linear_sum_assignment``)
between all annotations and all predictions, whatever their class, maximising first the number
of pairs with IoMin ≥ threshold whose classes agree, then the number of pairs with IoMin ≥
threshold, then their summed IoMin; pairs below the threshold are dropped. (Without the class
step, a small predicted spark inside an annotated wave, IoMin 1, would take the wave from the
predicted wave that covers it with IoMin 0.99, and a correct wave would count as spurious.
Before session 33 the number of pairs came first: a predicted wave covering an annotated spark
as well then paired with the spark, so that the small spark could pair with the wave, two pairs
of other classes and no true positive where one exists; per-class F1 counts only pairs of
the same class, so agreement comes first.) A pair is a true positive of class c when both are of class c. An unpaired prediction
lying ≥ 50 % on ignore voxels is ignored; any other unpaired prediction is spurious. The
confusion matrix counts truth class × predicted class, with a "missed" column (annotation
unpaired) and a "spurious" row (prediction unpaired and not ignored).

**Why an event was missed, or a prediction false** (one-to-one; they say whether a model has to
see more or to separate better). An unpaired annotation is *merged* when a prediction covers it
(IoMin ≥ threshold) that was paired with another annotation (two touching sparks found as one:
a maximum pairing leaves no such prediction unpaired), *partly covered* when predicted voxels
touch it but no prediction reaches the threshold, and *unseen* when no predicted voxel lies on
it. A spurious prediction is *split off* when it covers an annotation (IoMin ≥ threshold) that
was paired with another prediction (one event found in pieces), *partly on an event* when it
touches annotated event voxels below the threshold, and *on background* otherwise. With the
pairs of another class (the confusion matrix), these add up to each class's misses (fn) and
false events (fp).

**Voxel IoU** per class, over the voxels whose truth is not ignore (code 4); predicted code 4 is
background.

Counts (:class:`EventCounts`) add up across movies; every ratio is computed from the summed
counts (as the reference code does). A ratio whose denominator is 0 is NaN ("undefined"),
never 0 or 1.

Where the reference code (``evaluation/metrics_tools.py`` and the test function of
``dottipr/sparks_project``) and the domain brief differ, we follow:

1. **IoMin without ignore masking.** ``get_score_matrix`` can intersect predictions with the
   complement of the ignore mask, but the evaluation calls it with ``ignore_mask=None`` (and the
   masking branch would turn instance ids into booleans). We compute IoMin on the full instances,
   as the evaluation that produced the paper's numbers did, and as the brief's formula says.
2. **Ignored fraction.** The reference tests ``|P ∩ ignore| / |P| ≥ t`` with ``t`` the IoMin
   threshold; the brief says ≥ 50 %. We keep a separate ``ignore_fraction`` (default 0.5), so
   both agree at the default threshold and a stricter IoMin does not change what is ignored.
3. **Undefined ratios.** The reference returns 0 when a denominator is 0 (a class nobody
   annotated or predicted scores precision 0, recall 0) and averages those zeros into the
   class average. We return NaN, and average the classes annotated in the scored movies,
   where defined (a class nobody annotated would enter at F1 0 from one false event; where no
   class is annotated, every defined class); the paper's convention (NaN → 0, mean over the
   three classes) is also reported, as ``average_paper_convention``, so numbers stay exactly
   comparable. F1 is 0 when one of precision/recall is undefined and the other is 0 (true
   positives are then necessarily 0), NaN when both are undefined.
4. **Annotated instances.** As the reference, an annotation is an (event id, class) pair: the
   voxels of an event id that carry class c (voxels of an event on ignore do not belong to it).
   Event-class voxels that no event id covers, and files without instance ids, get instances by
   connected components per class (26-connectivity), as ``casparks check`` announces.
5. **Voxel IoU** is pooled over movies (sums of intersections and unions), as the reference
   does by concatenating movies; the reference additionally drops the first and last frames
   used as chunk margins during training, which we do not (whole movies are scored), and it
   returns 1.0 for an empty union, where we return NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from .classes import CLASS_NAMES, EVENT_CLASSES, IGNORE, KNOWN_CODES, binary_mask_hint
from .errors import CasparksError
from .instances import _event_mask, corrected_instances

#: Number of event classes and their position in every per-class array (spark, wave, puff).
N_CLASSES = len(EVENT_CLASSES)
_CLASS_INDEX = np.full(max(KNOWN_CODES) + 1, -1, dtype=np.int64)
_CLASS_INDEX[list(EVENT_CLASSES)] = np.arange(N_CLASSES)
_N_CODES = max(KNOWN_CODES) + 1  # 5: keys event_id * 5 + code stay unique
assert EVENT_CLASSES == tuple(range(min(EVENT_CLASSES), max(EVENT_CLASSES) + 1))

#: Default IoMin needed for two events to match, and fraction of a prediction on ignore voxels
#: that makes an unmatched prediction "ignored".
IOMIN_THRESHOLD = 0.5
IGNORE_FRACTION = 0.5

_CODES = "0 background, 1 sparks, 2 waves, 3 puffs, 4 ignore"

#: why an unpaired annotation was missed, and why an unpaired prediction is false (see the module
#: docstring); the columns of :attr:`EventCounts.missed_kinds` and :attr:`EventCounts.spurious_kinds`
MISSED_KINDS = ("merged", "partly_covered", "unseen")
SPURIOUS_KINDS = ("split_off", "partly_on_event", "on_background")


class LabelArrayError(CasparksError, ValueError):
    """Label arrays that cannot be scored (shape, dtype, codes): a user's mistake, and a
    ValueError as every array-level check of the API."""


# ----------------------------------------------------------------------------------------------
# instances


def label_instances(classes: np.ndarray, events: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Compact instance labels and the class code of each instance.

    An instance is an (event id, class) pair: the voxels of one event id carrying one event
    class. Voxels of an event class that no event id covers (or all of them when ``events`` is
    None) get instances by connected components per class. Background and ignore voxels
    belong to no instance.

    Returns ``(labels, instance_classes)``: ``labels`` is an int32 T×Y×X array with ids
    1..n (0 elsewhere) and ``instance_classes[i - 1]`` is the class code of instance ``i``.
    """
    labels, codes, _ = _instances(classes, events)
    return labels, codes


def _instances(classes: np.ndarray, events: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`label_instances`, and the event id of each instance (``ids[i - 1]`` of instance
    ``i``): the id ``events`` gives it, or the id it was derived with (connected components,
    numbered after the largest id given on event or ignore voxels, as ``casparks measure`` and
    napari's *Save training sample* number them: :func:`casparks.instances.corrected_instances`)."""
    classes = np.asarray(classes)
    is_event = _event_mask(classes)
    event_ids = corrected_instances(classes, events)[is_event]
    keys = event_ids * _N_CODES + classes[is_event].astype(np.int64)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    labels = np.zeros(classes.shape, dtype=np.int32)
    labels[is_event] = inverse.reshape(-1) + 1
    return labels, (unique_keys % _N_CODES).astype(np.int64), unique_keys // _N_CODES


# ----------------------------------------------------------------------------------------------
# overlaps


@dataclass(frozen=True, eq=False)
class Overlaps:
    """Voxel overlaps between truth and predicted instances of one movie.

    ``intersection[i, j]`` = |truth i+1 ∩ pred j+1|; sizes in voxels; ``pred_on_ignore[j]`` =
    voxels of prediction j+1 lying on ignore voxels of the truth.
    """

    intersection: np.ndarray
    truth_sizes: np.ndarray
    pred_sizes: np.ndarray
    pred_on_ignore: np.ndarray

    @property
    def iomin(self) -> np.ndarray:
        """IoMin matrix (n_truth × n_pred): |A∩P| / min(|A|, |P|)."""
        smaller = np.minimum(self.truth_sizes[:, None], self.pred_sizes[None, :])
        return np.divide(
            self.intersection, smaller, out=np.zeros(self.intersection.shape), where=smaller > 0
        )

    @property
    def ignore_fraction(self) -> np.ndarray:
        """Fraction of each prediction's voxels that lie on ignore voxels."""
        return np.divide(
            self.pred_on_ignore, self.pred_sizes, out=np.zeros(self.pred_sizes.shape), where=self.pred_sizes > 0
        )


def overlaps(
    truth_labels: np.ndarray, n_truth: int, pred_labels: np.ndarray, n_pred: int, ignore: np.ndarray
) -> Overlaps:
    """Intersections and sizes of all instance pairs in one pass over the voxels (bincount)."""
    truth_flat = truth_labels.reshape(-1)
    pred_flat = pred_labels.reshape(-1)
    truth_sizes = np.bincount(truth_flat, minlength=n_truth + 1)[1:].astype(np.int64)
    pred_sizes = np.bincount(pred_flat, minlength=n_pred + 1)[1:].astype(np.int64)
    on_pred = pred_flat > 0
    pred_ids = pred_flat[on_pred]
    on_ignore = np.bincount(pred_ids[ignore.reshape(-1)[on_pred]], minlength=n_pred + 1)[1:]
    truth_ids = truth_flat[on_pred]
    both = truth_ids > 0
    pair = (truth_ids[both].astype(np.int64) - 1) * n_pred + (pred_ids[both].astype(np.int64) - 1)
    if n_truth * n_pred <= 50_000_000:
        inter = np.bincount(pair, minlength=n_truth * n_pred).reshape(n_truth, n_pred)
    else:  # many events: count the pairs that occur only
        keys, counts = np.unique(pair, return_counts=True)
        inter = np.zeros((n_truth, n_pred), dtype=np.int64)
        inter.reshape(-1)[keys] = counts
    return Overlaps(inter.astype(np.int64), truth_sizes, pred_sizes, on_ignore.astype(np.int64))


def one_to_one_pairs(iomin: np.ndarray, threshold: float = IOMIN_THRESHOLD,
                     same_class: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one pairs (truth index, pred index) with IoMin ≥ threshold.

    Maximises (given ``same_class``, a boolean matrix like ``iomin``) the number of matching pairs
    whose classes agree, then the number of matching pairs, then their summed IoMin (Hungarian
    algorithm): the true positives the per-class scores count come first. Only truth rows and
    pred columns with at least one candidate enter the assignment.
    """
    candidate = iomin >= threshold
    rows = np.flatnonzero(candidate.any(axis=1))
    cols = np.flatnonzero(candidate.any(axis=0))
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    sub_ok = candidate[np.ix_(rows, cols)]
    sub_score = np.where(sub_ok, iomin[np.ix_(rows, cols)], 0.0)
    # a pair of the same class is worth more than any number of other pairs, and a pair more than
    # any sum of IoMin increments (each IoMin ≤ 1)
    n = min(rows.size, cols.size) + 1.0
    agree = 0.0 if same_class is None else sub_ok * np.asarray(same_class, dtype=bool)[np.ix_(rows, cols)]
    weight = agree * n * n + sub_ok * n + sub_score
    r, c = optimize.linear_sum_assignment(weight, maximize=True)
    keep = sub_ok[r, c]
    return rows[r[keep]], cols[c[keep]]


# ----------------------------------------------------------------------------------------------
# counts


def _zeros() -> np.ndarray:
    return np.zeros(N_CLASSES, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class EventCounts:
    """Every count the scores derive from; counts of several movies add up with ``+``.

    Per-class arrays are ordered as :data:`casparks.classes.EVENT_CLASSES` (spark, wave, puff).
    """

    annotations: np.ndarray = field(default_factory=_zeros)
    predictions: np.ndarray = field(default_factory=_zeros)
    #: reference: predictions matched with ≥ 1 annotation of their class (true positives)
    ref_tp_predictions: np.ndarray = field(default_factory=_zeros)
    #: reference: predictions matched with ≥ 1 annotation of any class
    ref_matched_predictions: np.ndarray = field(default_factory=_zeros)
    #: reference: unmatched predictions ≥ 50 % on ignore voxels
    ref_ignored: np.ndarray = field(default_factory=_zeros)
    #: reference: unmatched predictions not ignored (false positives)
    ref_unmatched: np.ndarray = field(default_factory=_zeros)
    #: reference: annotations matched by ≥ 1 prediction of their class
    ref_tp_annotations: np.ndarray = field(default_factory=_zeros)
    #: reference: annotations matched by ≥ 1 prediction of any class
    ref_detected: np.ndarray = field(default_factory=_zeros)
    #: one-to-one: rows truth spark/wave/puff/spurious, columns predicted spark/wave/puff/missed
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES + 1, N_CLASSES + 1), np.int64))
    #: one-to-one: unpaired predictions ≥ 50 % on ignore voxels, per predicted class
    o2o_ignored: np.ndarray = field(default_factory=_zeros)
    #: voxels outside ignore: truth code 0-3 × predicted code 0-3
    voxels: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES + 1, N_CLASSES + 1), np.int64))
    #: one-to-one: missed annotations per class (rows) and :data:`MISSED_KINDS` (columns)
    missed_kinds: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES, len(MISSED_KINDS)), np.int64))
    #: one-to-one: spurious predictions per class (rows) and :data:`SPURIOUS_KINDS` (columns)
    spurious_kinds: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES, len(SPURIOUS_KINDS)), np.int64))

    def __add__(self, other: "EventCounts") -> "EventCounts":
        if not isinstance(other, EventCounts):
            return NotImplemented
        return EventCounts(**{name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventCounts):
            return NotImplemented
        return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in _COUNT_FIELDS)

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    def __radd__(self, other: Any) -> "EventCounts":
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        """Counts as plain ints/lists (JSON-ready)."""
        return {name: getattr(self, name).tolist() for name in _COUNT_FIELDS}


_COUNT_FIELDS = tuple(EventCounts.__dataclass_fields__)


@dataclass(frozen=True, eq=False)
class EventPairs:
    """The one-to-one matching of one movie, event by event: what :class:`EventCounts` counts.

    ``truth_*`` arrays hold one entry per annotated instance, ``pred_*`` one per predicted
    instance (an instance is an event id's voxels of one class, :func:`label_instances`). ``*_ids``
    are the ids of the event-id arrays given (the component ids derived where none was given, as
    the scoring derives them); ``*_codes`` class codes. ``truth_index[k]`` and ``pred_index[k]``
    are the k-th pair (indices into those arrays) and ``iomin[k]`` its IoMin. ``missed_kind``
    (per annotation) and ``false_kind`` (per prediction) index :data:`MISSED_KINDS` and
    :data:`SPURIOUS_KINDS` for the unpaired ones, -1 elsewhere; ``ignored``: unpaired predictions
    ≥ ``ignore_fraction`` on ignore voxels (neither false nor scored).
    """

    truth_ids: np.ndarray
    truth_codes: np.ndarray
    pred_ids: np.ndarray
    pred_codes: np.ndarray
    truth_index: np.ndarray
    pred_index: np.ndarray
    iomin: np.ndarray
    missed_kind: np.ndarray
    false_kind: np.ndarray
    ignored: np.ndarray


def count_events(
    truth_classes: np.ndarray,
    truth_events: np.ndarray | None,
    pred_classes: np.ndarray,
    pred_events: np.ndarray | None,
    iomin_threshold: float = IOMIN_THRESHOLD,
    ignore_fraction: float = IGNORE_FRACTION,
) -> EventCounts:
    """Count everything the scores of one movie need.

    ``truth_classes``/``pred_classes``: T×Y×X codes 0-4 (a predicted 4 counts as background);
    ``*_events``: instance ids of the same shape, or None to derive them by connected components.
    """
    return match_events(truth_classes, truth_events, pred_classes, pred_events, iomin_threshold, ignore_fraction)[0]


def match_events(
    truth_classes: np.ndarray,
    truth_events: np.ndarray | None,
    pred_classes: np.ndarray,
    pred_events: np.ndarray | None,
    iomin_threshold: float = IOMIN_THRESHOLD,
    ignore_fraction: float = IGNORE_FRACTION,
) -> tuple[EventCounts, EventPairs]:
    """:func:`count_events`, and the one-to-one pairs those counts count (:class:`EventPairs`)."""
    truth_classes = np.asarray(truth_classes)
    pred_classes = np.asarray(pred_classes)
    if truth_classes.shape != pred_classes.shape:
        raise LabelArrayError(f"truth {truth_classes.shape} and prediction {pred_classes.shape} differ in shape")
    check_codes(truth_classes, "truth class labels")
    check_codes(pred_classes, "predicted class labels")
    for events, what in ((truth_events, "truth event ids"), (pred_events, "predicted event ids")):
        check_ids(events, truth_classes.shape, what)
    ignore = truth_classes == IGNORE
    truth_labels, truth_codes, truth_ids = _instances(truth_classes, truth_events)
    pred_labels, pred_codes, pred_ids = _instances(pred_classes, pred_events)
    ov = overlaps(truth_labels, truth_codes.size, pred_labels, pred_codes.size, ignore)
    truth_cls = _CLASS_INDEX[truth_codes]
    pred_cls = _CLASS_INDEX[pred_codes]
    iomin = ov.iomin
    ignored_like = ov.ignore_fraction >= ignore_fraction

    # reference: many-to-many
    match = iomin >= iomin_threshold
    same = truth_cls[:, None] == pred_cls[None, :]
    pred_matched = match.any(axis=0)
    pred_tp = (match & same).any(axis=0)
    ref_ignored = ~pred_matched & ignored_like

    # one-to-one
    ti, pj = one_to_one_pairs(iomin, iomin_threshold, same)
    confusion = np.zeros((N_CLASSES + 1, N_CLASSES + 1), dtype=np.int64)
    np.add.at(confusion, (truth_cls[ti], pred_cls[pj]), 1)
    truth_paired = np.zeros(truth_cls.size, dtype=bool)
    truth_paired[ti] = True
    pred_paired = np.zeros(pred_cls.size, dtype=bool)
    pred_paired[pj] = True
    confusion[:N_CLASSES, N_CLASSES] = _per_class(truth_cls, ~truth_paired)
    spurious = ~pred_paired & ~ignored_like
    confusion[N_CLASSES, :N_CLASSES] = _per_class(pred_cls, spurious)
    missed_kind, false_kind = _error_kind_of_each(ov.intersection, match, ~truth_paired, spurious)
    missed_kinds, spurious_kinds = _error_kinds(missed_kind, truth_cls, pred_cls, false_kind)

    counts = EventCounts(
        annotations=_per_class(truth_cls),
        predictions=_per_class(pred_cls),
        ref_tp_predictions=_per_class(pred_cls, pred_tp),
        ref_matched_predictions=_per_class(pred_cls, pred_matched),
        ref_ignored=_per_class(pred_cls, ref_ignored),
        ref_unmatched=_per_class(pred_cls, ~pred_matched & ~ref_ignored),
        ref_tp_annotations=_per_class(truth_cls, (match & same).any(axis=1)),
        ref_detected=_per_class(truth_cls, match.any(axis=1)),
        confusion=confusion,
        o2o_ignored=_per_class(pred_cls, ~pred_paired & ignored_like),
        voxels=voxel_confusion(truth_classes, pred_classes),
        missed_kinds=missed_kinds,
        spurious_kinds=spurious_kinds,
    )
    pairs = EventPairs(truth_ids=truth_ids, truth_codes=truth_codes, pred_ids=pred_ids, pred_codes=pred_codes,
                       truth_index=ti, pred_index=pj, iomin=iomin[ti, pj], missed_kind=missed_kind,
                       false_kind=false_kind, ignored=~pred_paired & ignored_like)
    return counts, pairs


def _error_kind_of_each(intersection: np.ndarray, match: np.ndarray, missed: np.ndarray,
                        spurious: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Why each missed annotation was missed (index into :data:`MISSED_KINDS`) and why each
    spurious prediction is false (into :data:`SPURIOUS_KINDS`); -1 for the others (see the module
    docstring). ``match``: IoMin ≥ threshold."""
    touched = intersection > 0
    missed_kind = np.select([match.any(axis=1), touched.any(axis=1)], [0, 1], 2)
    spurious_kind = np.select([match.any(axis=0), touched.any(axis=0)], [0, 1], 2)
    return np.where(missed, missed_kind, -1), np.where(spurious, spurious_kind, -1)


def _error_kinds(missed_kind: np.ndarray, truth_cls: np.ndarray, pred_cls: np.ndarray,
                 spurious_kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missed annotations by :data:`MISSED_KINDS` and spurious predictions by
    :data:`SPURIOUS_KINDS`, per class, from :func:`_error_kind_of_each`."""
    missed, spurious = missed_kind >= 0, spurious_kind >= 0
    missed_kinds = np.zeros((N_CLASSES, len(MISSED_KINDS)), dtype=np.int64)
    np.add.at(missed_kinds, (truth_cls[missed], missed_kind[missed]), 1)
    spurious_kinds = np.zeros((N_CLASSES, len(SPURIOUS_KINDS)), dtype=np.int64)
    np.add.at(spurious_kinds, (pred_cls[spurious], spurious_kind[spurious]), 1)
    return missed_kinds, spurious_kinds


def _per_class(cls: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    selected = cls if where is None else cls[where]
    return np.bincount(selected, minlength=N_CLASSES)[:N_CLASSES].astype(np.int64)


def voxel_confusion(truth_classes: np.ndarray, pred_classes: np.ndarray) -> np.ndarray:
    """Voxel counts truth code (0-3) × predicted code (0-3) outside truth ignore voxels.

    A predicted ignore (4) counts as background. Both stacks must hold codes 0-4.
    """
    n = _N_CODES
    truth = np.asarray(truth_classes).astype(np.uint8, copy=False).reshape(-1)
    pred = np.asarray(pred_classes).astype(np.uint8, copy=False).reshape(-1)
    keys = truth * np.uint8(n) + pred  # ≤ 24: fits uint8, no wide temporaries
    full = np.bincount(keys, minlength=n * n)[: n * n].reshape(n, n).astype(np.int64)
    voxels = full[:IGNORE, :IGNORE].copy()  # drop truth ignore row
    voxels[:, 0] += full[:IGNORE, IGNORE]  # predicted ignore = background
    return voxels


def check_ids(events: np.ndarray | None, shape: tuple[int, ...], what: str = "event ids") -> None:
    """Raise LabelArrayError unless ``events`` (None allowed) holds whole, non-negative ids in ``shape``:
    a float id of 1.5 was truncated, negative and NaN ids reached NumPy's own errors."""
    if events is None:
        return
    events = np.asarray(events)
    if events.shape != shape:
        raise LabelArrayError(f"{what} have shape {events.shape}, the class labels {shape}")
    if events.dtype.kind == "b":  # every event one id: refused as a boolean label file is
        raise LabelArrayError(f"{what} must be integers (0 = no event), got a boolean array",
                              fix="give each event its own id (e.g. scipy.ndimage.label(mask)[0]), or None to "
                                  "derive them")
    if events.dtype.kind == "f":
        if not np.isfinite(events).all() or not np.array_equal(events, np.round(events)):
            raise LabelArrayError(f"{what} must be whole numbers (0 = no event), got non-integer or NaN values")
    elif events.dtype.kind not in "ui":
        raise LabelArrayError(f"{what} must be integers, got dtype {events.dtype}")
    if events.size and events.dtype.kind in "if" and events.min() < 0:
        raise LabelArrayError(f"{what} must be 0 (no event) or positive, got {events.min()}")


def check_codes(classes: np.ndarray, what: str = "class labels") -> None:
    """Raise LabelArrayError if a class stack holds codes outside 0-4 or is not integer-valued.

    A boolean array is refused as a boolean TIFF is (:func:`casparks.io.read_stack`): True
    would be code 1, so an event mask of waves or puffs would silently score as sparks.
    """
    classes = np.asarray(classes)
    if classes.dtype.kind == "b":
        raise LabelArrayError(f"{what} must be integer codes 0-4 ({_CODES}), got a boolean array",
                              fix="turn an event mask into codes, e.g. mask.astype(np.uint8) * 2 for waves")
    if classes.dtype.kind not in "ui":
        raise LabelArrayError(f"{what} must be integers, got dtype {classes.dtype}")
    if classes.size and (int(classes.min()) < 0 or int(classes.max()) > max(KNOWN_CODES)):
        codes = np.unique(classes)
        bad = codes[(codes < 0) | (codes > max(KNOWN_CODES))][:5]
        raise LabelArrayError(f"{what} hold unknown codes {bad.tolist()}; known: {_CODES}",
                              fix=binary_mask_hint(codes.tolist()))


# ----------------------------------------------------------------------------------------------
# scores


def ratio(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, NaN where the denominator is 0 (element-wise for arrays)."""
    num = np.asarray(numerator, dtype=float)
    den = np.asarray(denominator, dtype=float)
    out = np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)
    return out if out.ndim else float(out)


def f1_score(precision: Any, recall: Any) -> Any:
    """Harmonic mean; 0 when precision + recall is 0 or when one is undefined (NaN) and the other
    0; NaN when both are undefined."""
    p = np.asarray(precision, dtype=float)
    r = np.asarray(recall, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    f = np.where(np.isnan(p) & np.isnan(r), np.nan, np.where(np.isnan(p) | np.isnan(r), 0.0, f))
    return f if f.ndim else float(f)


def averaged_classes(annotations: Any) -> np.ndarray:
    """Which classes an average takes (boolean, spark/wave/puff): those annotated at least once, or
    all where none is. A class nobody annotated scores F1 0 from one false event (NaN without):
    averaged in, one spurious puff outweighed two missed sparks (0.50 against 0.67)."""
    annotated = np.asarray(annotations) > 0
    return annotated if annotated.any() else np.ones(annotated.shape, dtype=bool)


def mean_over_classes(values: Any, annotations: Any) -> float:
    """Mean of the per-class ``values`` over :func:`averaged_classes` where defined; NaN where none is."""
    values = np.asarray(values, dtype=float)[averaged_classes(annotations)]
    return float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else float("nan")


SCORE_NAMES = ("precision", "recall", "f1")
REFERENCE_NAMES = ("precision", "recall", "f1", "detected", "correctly_classified")


def scores(counts: EventCounts) -> dict[str, Any]:
    """All scores from (summed) counts, as nested plain dicts (NaN where undefined).

    Keys: ``classes`` (per class name: ``reference``, ``one_to_one``, ``voxel_iou``, counts),
    ``average`` (mean over the annotated classes where the score is defined, see
    :func:`averaged_classes`; over all defined classes where none is annotated),
    ``average_paper_convention`` (reference scores only: undefined → 0, mean over the three classes, as the research code),
    ``all_events`` (counts of all classes pooled), ``confusion`` (one-to-one, with labels).
    """
    c = counts
    ref = {}
    ref["precision"] = ratio(c.ref_tp_predictions, c.predictions - c.ref_ignored)
    ref["recall"] = ratio(c.ref_tp_annotations, c.annotations)
    ref["f1"] = f1_score(ref["precision"], ref["recall"])
    ref["detected"] = ratio(c.ref_detected, c.annotations)
    ref["correctly_classified"] = ratio(c.ref_tp_predictions, c.predictions - c.ref_ignored - c.ref_unmatched)

    tp = np.diag(c.confusion)[:N_CLASSES]
    o2o = {}
    o2o["precision"] = ratio(tp, c.predictions - c.o2o_ignored)
    o2o["recall"] = ratio(tp, c.annotations)
    o2o["f1"] = f1_score(o2o["precision"], o2o["recall"])

    v = c.voxels
    inter = np.diag(v)[1:]
    union = v[1:, :].sum(axis=1) + v[:, 1:].sum(axis=0) - inter
    iou = ratio(inter, union)

    classes: dict[str, Any] = {}
    for k, code in enumerate(EVENT_CLASSES):
        classes[CLASS_NAMES[code]] = {
            "code": code,
            "annotations": int(c.annotations[k]),
            "predictions": int(c.predictions[k]),
            "reference": {name: float(ref[name][k]) for name in REFERENCE_NAMES},
            "reference_counts": {
                "tp_predictions": int(c.ref_tp_predictions[k]),
                "matched_predictions": int(c.ref_matched_predictions[k]),
                "ignored": int(c.ref_ignored[k]),
                "unmatched": int(c.ref_unmatched[k]),
                "tp_annotations": int(c.ref_tp_annotations[k]),
                "detected_annotations": int(c.ref_detected[k]),
            },
            "one_to_one": {name: float(o2o[name][k]) for name in SCORE_NAMES},
            "one_to_one_counts": {
                "tp": int(tp[k]),
                "fp": int(c.predictions[k] - c.o2o_ignored[k] - tp[k]),
                "fn": int(c.annotations[k] - tp[k]),
                "ignored": int(c.o2o_ignored[k]),
            },
            # fn and fp above, by why (module docstring); other_class: paired with an event of another class
            "one_to_one_errors": {
                "missed": {"other_class": int(c.annotations[k] - tp[k] - c.confusion[k, N_CLASSES]),
                           **{kind: int(n) for kind, n in zip(MISSED_KINDS, c.missed_kinds[k])}},
                "false": {"other_class": int(c.predictions[k] - c.o2o_ignored[k] - tp[k] - c.confusion[N_CLASSES, k]),
                          **{kind: int(n) for kind, n in zip(SPURIOUS_KINDS, c.spurious_kinds[k])}},
            },
            "voxel_iou": float(iou[k]),
        }

    average = {
        "reference": {name: mean_over_classes(ref[name], c.annotations) for name in REFERENCE_NAMES},
        "one_to_one": {name: mean_over_classes(o2o[name], c.annotations) for name in SCORE_NAMES},
        "voxel_iou": mean_over_classes(iou, c.annotations),
    }
    paper = {name: float(np.mean(np.nan_to_num(ref[name], nan=0.0))) for name in REFERENCE_NAMES}
    paper["f1"] = float(np.mean(np.nan_to_num(f1_score(
        np.nan_to_num(ref["precision"], nan=0.0), np.nan_to_num(ref["recall"], nan=0.0)), nan=0.0)))

    n_pred, n_truth = c.predictions.sum(), c.annotations.sum()
    all_ref_p = ratio(c.ref_tp_predictions.sum(), n_pred - c.ref_ignored.sum())
    all_ref_r = ratio(c.ref_tp_annotations.sum(), n_truth)
    all_o2o_p = ratio(tp.sum(), n_pred - c.o2o_ignored.sum())
    all_o2o_r = ratio(tp.sum(), n_truth)
    all_events = {
        "annotations": int(n_truth),
        "predictions": int(n_pred),
        "reference": {
            "precision": all_ref_p,
            "recall": all_ref_r,
            "f1": f1_score(all_ref_p, all_ref_r),
            "detected": ratio(c.ref_detected.sum(), n_truth),
            "correctly_classified": ratio(
                c.ref_tp_predictions.sum(), n_pred - c.ref_ignored.sum() - c.ref_unmatched.sum()
            ),
        },
        "one_to_one": {"precision": all_o2o_p, "recall": all_o2o_r, "f1": f1_score(all_o2o_p, all_o2o_r)},
        # any event class versus background, outside ignore
        "voxel_iou": ratio(v[1:, 1:].sum(), v.sum() - v[0, 0]),
    }
    names = [CLASS_NAMES[code] for code in EVENT_CLASSES]
    return {
        "classes": classes,
        "average": average,
        "average_paper_convention": paper,
        "all_events": all_events,
        "confusion": {
            "rows": [*names, "spurious"],
            "columns": [*names, "missed"],
            "counts": c.confusion.tolist(),
        },
    }


#: resamples and coverage of :func:`f1_intervals` (fixed: the same folders give the same interval)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95
#: the keys of :func:`f1_intervals`: the event classes, then their mean
F1_NAMES = (*(CLASS_NAMES[code] for code in EVENT_CLASSES), "average")


def _one_to_one_parts(movie_counts: Any) -> np.ndarray:
    """Per movie: one-to-one true positives, predictions not ignored, annotations (movies × 3 × classes)."""
    return np.array([[np.diag(c.confusion)[:N_CLASSES], c.predictions - c.o2o_ignored, c.annotations]
                     for c in movie_counts], dtype=float)


def _one_to_one_f1(parts: np.ndarray, averaged: np.ndarray) -> np.ndarray:
    """One-to-one F1 per class and their mean over the ``averaged`` classes where defined (last
    axis: spark, wave, puff, mean)."""
    f1 = f1_score(ratio(parts[..., 0, :], parts[..., 1, :]), ratio(parts[..., 0, :], parts[..., 2, :]))
    defined = ~np.isnan(f1) & averaged
    with np.errstate(invalid="ignore"):
        total = np.where(defined, f1, 0.0).sum(axis=-1)
        mean = np.where(defined.any(axis=-1), total / np.maximum(defined.sum(axis=-1), 1), np.nan)
    return np.concatenate([f1, mean[..., None]], axis=-1)


def f1_intervals(movie_counts: Any, against: Any = None, *, resamples: int = BOOTSTRAP_RESAMPLES,
                 level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> dict[str, tuple[float, float] | None] | None:
    """Bootstrap intervals of the one-to-one F1 per class and of their mean ("average").

    Movies, not events, are resampled with replacement: events of one movie share its noise,
    cell and settings, so resampling events would claim more certainty than a few movies hold.
    Each resample sums its movies' counts and scores them as :func:`scores` does. With
    ``against`` (the counts of another prediction of the same movies, in the same order) the
    interval is that of the difference, this − against, over the same resamples (paired), which
    is what tells two models apart on one test set. None for fewer than 2 movies; a class
    undefined in most resamples (no annotation, no prediction) gets None.

    Every resample averages the same classes, those the movies annotate (:func:`averaged_classes`
    of all movies), as the pooled "average" does. A resample without an annotation of such a
    class scores it as :func:`scores` would any class: F1 0 where it predicts some (all false),
    left out of that resample's mean where it predicts none (nothing to score).
    """
    counts = list(movie_counts)
    if len(counts) < 2:
        return None
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"level must lie in (0, 1) and resamples be ≥ 1, got {level}, {resamples}")
    parts = _one_to_one_parts(counts)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(resamples, len(counts)))
    averaged = averaged_classes(parts[:, 2, :].sum(axis=0))
    values = _one_to_one_f1(parts[draws].sum(axis=1), averaged)
    if against is not None:
        other = list(against)
        if len(other) != len(counts):
            raise ValueError(f"against holds {len(other)} movies, this {len(counts)}: the same movies are needed")
        values = values - _one_to_one_f1(_one_to_one_parts(other)[draws].sum(axis=1), averaged)
    tail = 100 * (1 - level) / 2
    out: dict[str, tuple[float, float] | None] = {}
    for k, name in enumerate(F1_NAMES):
        column = values[:, k]
        column = column[~np.isnan(column)]
        if column.size < resamples / 2:
            out[name] = None
            continue
        lo, hi = np.percentile(column, [tail, 100 - tail])
        out[name] = (float(lo), float(hi))
    return out

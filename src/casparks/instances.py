"""Event instances from class labels: connected components per class, completing given ids.

One implementation for every module that needs instances (label preparation, evaluation, and
later post-processing), so "an event" means the same everywhere.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .classes import BACKGROUND, EVENT_CLASSES, KNOWN_CODES, SPARK

_N_CODES = max(KNOWN_CODES) + 1


def _event_mask(classes: np.ndarray) -> np.ndarray:
    """Voxels of an event class (codes 1-3), without np.isin's sort."""
    return (classes >= min(EVENT_CLASSES)) & (classes <= max(EVENT_CLASSES))


def instances_from_classes(classes: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Instance ids by 3-D connected components per event class (sparks, waves, puffs).

    Two touching regions of different classes are different instances. Ids are 1..n, unique
    across classes; background and ignore voxels are 0. ``connectivity`` is 6, 18 or 26.
    """
    classes = np.asarray(classes)
    if classes.ndim != 3:
        raise ValueError(f"expected a T×Y×X class stack, got shape {classes.shape}")
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    structure = ndimage.generate_binary_structure(3, rank)
    is_event = _event_mask(classes)
    # one labelling pass over all event voxels; only components mixing classes are split again
    components, n = ndimage.label(is_event, structure=structure)
    components = components.astype(np.int32, copy=False)
    if n == 0:
        return components
    keys = np.unique(components[is_event].astype(np.int64) * _N_CODES + classes[is_event])
    n_classes = np.bincount(keys // _N_CODES, minlength=n + 1)
    mixed = np.flatnonzero(n_classes > 1)
    if mixed.size == 0:
        return components
    boxes = ndimage.find_objects(components)
    next_id = n + 1
    for comp in mixed:
        box = boxes[comp - 1]
        region = components[box]
        inside = region == comp
        region_classes = classes[box]
        for code in EVENT_CLASSES:
            labels, k = ndimage.label(inside & (region_classes == code), structure=structure)
            hit = labels > 0
            region[hit] = labels[hit] + (next_id - 1)
            next_id += k
    keep = np.ones(next_id, dtype=bool)
    keep[0] = False
    keep[mixed] = False
    lookup = np.zeros(next_id, dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[components]



def complete_instances(class_label: np.ndarray, event_label: np.ndarray | None = None) -> np.ndarray:
    """Instance ids of the events (int64, 0 = none), completing ``event_label`` where it is missing.

    Event-class voxels without an id (or all of them when ``event_label`` is None) get new ids by
    3-D connected components (26-connectivity) per class, numbered after the existing ids. In an
    8-bit ``event_label`` whose ids reach 255 (ids past 255 wrapped, a known fault of the
    reference code's files), a spark id covering separate regions is split into one id per
    region: a spark is one region, and 640 sparks were scored as 257.
    """
    class_label = np.asarray(class_label)
    instances = (
        np.zeros(class_label.shape, dtype=np.int64)
        if event_label is None
        else np.asarray(event_label).astype(np.int64, copy=True)
    )
    if instances.shape != class_label.shape:
        raise ValueError(f"event label shape {instances.shape} differs from class label shape {class_label.shape}")
    split = None if event_label is None else split_wrapped_sparks(class_label, event_label)
    if split is not None:
        instances = split[0]
    orphans = _event_mask(class_label) & (instances == 0)
    if orphans.any():
        derived = instances_from_classes(np.where(orphans, class_label, 0))
        instances[orphans] = derived[orphans] + int(instances.max(initial=0))
    return instances


def corrected_instances(class_label: np.ndarray, event_label: np.ndarray | None = None) -> np.ndarray:
    """:func:`complete_instances` of ids the class labels have the last word on: ids on background
    voxels (an erased event, ids painted on the events alone) are no event, so they are dropped
    first and new ids are numbered after the ids left on event or ignore voxels. One numbering for
    napari's *Save training sample*, ``casparks measure`` and scoring arrays (``evaluate_movie``)."""
    if event_label is None:
        return complete_instances(class_label, None)
    classes, events = np.asarray(class_label), np.asarray(event_label)
    if events.shape == classes.shape:  # else complete_instances names the shapes
        on_background = (classes == BACKGROUND) & (events != 0)
        if on_background.any():  # a copy only then; dtype kept: 8-bit wraps
            events = np.where(on_background, 0, events).astype(events.dtype, copy=False)
    return complete_instances(classes, events)


def split_wrapped_sparks(class_label: np.ndarray, event_label: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """Where an 8-bit ``event_label`` reaches id 255 (ids past 255 wrapped) and a spark id covers
    separate regions (26-connected voxels of that id): its ids (int64) with each region after an
    id's first given a new id, how many ids were split and into how many sparks; else None."""
    events = np.asarray(event_label)
    if events.dtype.itemsize != 1 or int(events.max(initial=0)) < 255:
        return None
    ids = events.astype(np.int64)
    sparks = (np.asarray(class_label) == SPARK) & (ids > 0)
    if not sparks.any():
        return None
    from skimage.measure import label

    # regions of equal id: two parts of one id that each touch another spark stay apart
    regions = label(np.where(sparks, ids, 0), connectivity=3)
    region_ids, first_voxel = np.unique(regions[sparks], return_index=True)
    owner = ids[sparks][first_voxel]  # each region's spark id
    order = np.argsort(owner, kind="stable")
    first = np.ones(order.size, bool)
    first[1:] = owner[order][1:] != owner[order][:-1]  # each id keeps its first region
    if first.all():
        return None
    new_of_region = np.zeros(int(region_ids.max()) + 1, dtype=np.int64)
    new_of_region[region_ids[order]] = owner[order]
    extra = region_ids[order][~first]
    new_of_region[extra] = int(ids.max()) + 1 + np.arange(extra.size)
    ids[sparks] = new_of_region[regions[sparks]]
    n_split = int(np.unique(owner[order][~first]).size)
    return ids, n_split, n_split + int(extra.size)

"""Event instances from class labels: connected components per class, completing given ids.

One implementation for every module that needs instances (label preparation, evaluation, and
later post-processing), so "an event" means the same everywhere.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from .classes import EVENT_CLASSES, KNOWN_CODES, SPARK

log = logging.getLogger(__name__)

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
    if event_label is not None and np.asarray(event_label).dtype.itemsize == 1 and instances.max(initial=0) >= 255:
        _split_wrapped_sparks(class_label, instances)
    orphans = _event_mask(class_label) & (instances == 0)
    if orphans.any():
        derived = instances_from_classes(np.where(orphans, class_label, 0))
        instances[orphans] = derived[orphans] + int(instances.max(initial=0))
    return instances


def _split_wrapped_sparks(class_label: np.ndarray, instances: np.ndarray) -> None:
    """Give each separate 26-connected region of a spark id after its first a new id, in place."""
    sparks = (class_label == SPARK) & (instances > 0)
    if not sparks.any():
        return
    regions, n_regions = ndimage.label(sparks, structure=np.ones((3, 3, 3), bool))
    keys = instances[sparks] * (n_regions + 1) + regions[sparks]
    pairs, inverse = np.unique(keys, return_inverse=True)
    ids = pairs // (n_regions + 1)
    first = np.ones(pairs.size, bool)
    first[1:] = ids[1:] != ids[:-1]  # pairs are sorted by id: each id keeps its first region
    if first.all():
        return
    new_ids = ids.copy()
    new_ids[~first] = int(instances.max()) + 1 + np.arange(int(np.count_nonzero(~first)))
    instances[sparks] = new_ids[inverse.reshape(-1)]
    log.warning("8-bit event ids reach 255 and have wrapped: %d spark id(s) covering separate regions split into "
                "%d sparks (save the instances as uint16)", int(np.unique(ids[~first]).size),
                int(np.count_nonzero(~first)) + int(np.unique(ids[~first]).size))

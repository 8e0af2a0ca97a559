"""Raw annotations → training labels: ignore regions around events, spark peaks, only-sparks.

Also home of the anisotropic morphology (sizes in µm and ms) that the simulator reuses for its
ignore shells, so both define "around an event" the same way.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dilate(
    mask: np.ndarray,
    radius_um: float,
    radius_ms: float,
    pixel_size_um: float,
    frame_interval_ms: float,
) -> np.ndarray:
    """Dilate a T×Y×X boolean mask by an ellipsoid of radius ``radius_ms`` in t and ``radius_um`` in y, x.

    Uses an anisotropic Euclidean distance transform restricted to the mask's bounding box (plus
    the radius), so the cost follows the events, not the movie size.
    """
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    if not mask.any() or (radius_um <= 0 and radius_ms <= 0):
        return out
    radius_vox = (
        int(np.floor(radius_ms / frame_interval_ms)) if radius_ms > 0 else 0,
        *(2 * [int(np.floor(radius_um / pixel_size_um)) if radius_um > 0 else 0]),
    )
    coords = np.nonzero(mask)
    box = tuple(
        slice(max(int(c.min()) - r, 0), min(int(c.max()) + r + 1, n))
        for c, r, n in zip(coords, radius_vox, mask.shape)
    )
    # distance in units of the radius along each axis; an axis with radius 0 gets a huge step
    sampling = tuple(
        (step / radius) if radius > 0 else 1e6
        for step, radius in ((frame_interval_ms, radius_ms), (pixel_size_um, radius_um), (pixel_size_um, radius_um))
    )
    distance = ndimage.distance_transform_edt(~mask[box], sampling=sampling)
    out[box] = distance <= 1.0 + 1e-9
    return out

"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from casparks.dataset import write_sample
from casparks.simulate import load_simulation_config, simulate_movie


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """A data-set folder of one annotated dense movie (120 × 48 × 160: 16 events, sparks and puffs),
    for scoring post-processing settings (casparks calibrate, models/calibrate.py)."""
    folder = tmp_path_factory.mktemp("val")
    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 48, "width_px": 160}),
                         seed=[0, 1])
    write_sample(folder, sim.movie, sim.class_label, sim.event_label)
    return folder

"""Fixtures shared by several test modules."""

from __future__ import annotations

import signal

import pytest

from casparks.dataset import write_sample
from casparks.simulate import load_simulation_config, simulate_movie


def pytest_configure(config):
    """The Ctrl-C tests need Python's Ctrl-C handler. A suite started in the background of a
    non-interactive shell (`pytest &`) inherits SIGINT ignored, so Python never installs it, and
    those tests failed there only (three of them, session 40): install it as an interactive run has it."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def detection_output(tmp_path):
    """A folder ``det`` as `casparks detect` leaves it (labels and a summary, no movie; the files'
    contents are never read): what calibrate, prepare-labels and training must name as a detection's output."""
    folder = tmp_path / "det"
    folder.mkdir()
    for name in ("01_video_class_label.tif", "01_video_event_label.tif", "01_video_detection.json"):
        (folder / name).write_text("x")
    return folder


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """A data-set folder of one annotated dense movie (120 × 48 × 160: 16 events, sparks and puffs),
    for scoring post-processing settings (casparks calibrate, models/calibrate.py)."""
    folder = tmp_path_factory.mktemp("val")
    sim = simulate_movie(load_simulation_config("dense", {"n_frames": 120, "height_px": 48, "width_px": 160}),
                         seed=[0, 1])
    write_sample(folder, sim.movie, sim.class_label, sim.event_label)
    return folder

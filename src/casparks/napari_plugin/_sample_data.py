"""Sample data: the README's example movie, simulated on the spot, so a new user can try the
plugin with no files of their own.

The simulator is deterministic: this is ``casparks simulate example --movies 1 --seed 0``'s
``01_video.tif`` (500 × 64 × 512 px, 0.2 µm, 6.8 ms; about 2 s to make), with or without its
ground truth (what the detector should find).
"""

from __future__ import annotations

from . import _layers
from ._layers import LayerData

#: seed of movie 01 in ``casparks simulate --seed 0`` (movie k gets [seed, k])
SEED = (0, 1)
NAME = "simulated 01_video"


def _simulate(overrides: dict | None = None):
    from ..simulate import load_simulation_config, simulate_movie

    return simulate_movie(load_simulation_config("default", overrides or {}), seed=list(SEED))


def simulated_movie(overrides: dict | None = None) -> list[LayerData]:
    """The example movie alone: run "Detect events" on it."""
    sim = _simulate(overrides)
    movie = sim.movie
    return [_layers.image_layer(movie.data, NAME, movie.pixel_size_um, movie.frame_interval_ms)]


def simulated_movie_with_truth(overrides: dict | None = None) -> list[LayerData]:
    """The example movie with its ground-truth classes and events (features: the simulated events)."""
    sim = _simulate(overrides)
    movie = sim.movie
    truth = sim.events.rename(columns={"event_id": "id"})
    truth = truth[truth["labelled"].astype(bool)] if "labelled" in truth else truth
    layers = [_layers.image_layer(movie.data, NAME, movie.pixel_size_um, movie.frame_interval_ms)]
    layers += _layers.result_layers(sim.class_label, sim.event_label, truth, f"{NAME} truth", movie.pixel_size_um,
                                    movie.frame_interval_ms)
    return layers

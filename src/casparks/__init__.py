"""casparks: find, classify and measure Ca²⁺ sparks, puffs and waves in confocal x-y-t movies.

The public API, in the order data flows::

    movie = casparks.read_movie("01_video.tif")                     # T×Y×X with µm and ms
    sim = casparks.simulate_movie(casparks.load_simulation_config("default"), seed=0)
    labels = casparks.prepare_labels(classes, events, movie.data, 0.2, 6.8, casparks.LabelConfig())
    scores = casparks.evaluate("truth_dir", "pred_dir")             # reference + one-to-one metrics
    found = casparks.detect("movie.tif")                            # events separated, classified, measured
"""

from __future__ import annotations

__version__ = "0.1.0"

from .dataset import Sample, check_dataset, list_samples
from .errors import CasparksError
from .evaluation import Evaluation, MovieEvaluation, evaluate, evaluate_movie
from .io import Movie, read_movie, read_stack, write_movie
from .labels import LabelConfig, prepare_dataset_labels, prepare_labels
from .simulate import (
    SimulatedMovie,
    list_presets,
    load_simulation_config,
    simulate_dataset,
    simulate_movie,
)
from .simulation_params import SimulationConfig


def __getattr__(name: str):
    """Import the PyTorch-based parts on first use, so `import casparks` and the CLI stay fast."""
    if name in ("train", "load_checkpoint", "finetune_config", "TrainResult", "LoadedModel"):
        from . import training

        return getattr(training, name)
    if name in ("detect", "detect_files", "load_detector", "Detection", "DetectSettings", "Detector"):
        from . import detection as detect_module

        return getattr(detect_module, name)
    if name in ("write_report", "Report"):
        from . import report

        return getattr(report, name)
    if name in ("list_models", "ModelInfo"):
        from . import models

        return getattr(models, name)
    if name in ("TrainConfig", "load_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'casparks' has no attribute {name!r}")


__all__ = [
    "__version__",
    "CasparksError",
    "Evaluation",
    "LoadedModel",
    "LabelConfig",
    "Movie",
    "MovieEvaluation",
    "Sample",
    "SimulatedMovie",
    "SimulationConfig",
    "TrainConfig",
    "TrainResult",
    "DetectSettings",
    "Detection",
    "Detector",
    "ModelInfo",
    "Report",
    "check_dataset",
    "detect",
    "detect_files",
    "list_models",
    "load_detector",
    "evaluate",
    "evaluate_movie",
    "finetune_config",
    "list_presets",
    "list_samples",
    "load_checkpoint",
    "load_config",
    "load_simulation_config",
    "prepare_dataset_labels",
    "prepare_labels",
    "read_movie",
    "read_stack",
    "simulate_dataset",
    "simulate_movie",
    "train",
    "write_movie",
    "write_report",
]

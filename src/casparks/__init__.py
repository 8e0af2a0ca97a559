"""casparks: find, classify and measure Ca²⁺ sparks, puffs and waves in confocal x-y-t movies.

The public API, in the order data flows::

    movies = casparks.convert("session.lif", "movies")              # a Leica project's x-y-t movies as TIFFs
    movie = casparks.read_movie("01_video.tif")                     # T×Y×X with µm and ms
    sim = casparks.simulate_movie(casparks.load_simulation_config("default"), seed=0)
    labels = casparks.prepare_labels(classes, events, movie.data, 0.2, 6.8, casparks.LabelConfig())
    scores = casparks.evaluate("truth_dir", "pred_dir")             # reference + one-to-one metrics
    found = casparks.detect("movie.tif")                            # events separated, classified, measured
    mine = casparks.measure_labels("01_video.tif", classes, events)  # labels drawn by hand, measured as detect does
    best = casparks.calibrate("runs/mine", ["my_val"]).best         # post-processing chosen on annotated movies
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what editors and type checkers see; at run time the table below imports on use
    from .calibration import Calibration, calibrate
    from .config import TrainConfig, load_config
    from .dataset import Sample, check_dataset, list_samples
    from .detection import (Detection, DetectSettings, Detector, detect, detect_files, load_detector, read_detection,
                            read_events, read_movies, write_detection)
    from .errors import CasparksError
    from .evaluation import Evaluation, MovieEvaluation, evaluate, evaluate_movie
    from .io import Movie, read_movie, read_stack, write_movie
    from .labels import LabelConfig, prepare_dataset_labels, prepare_labels
    from .labelled import measure_files, measure_labels
    from .models import ModelInfo, list_models
    from .projects import ProjectImage, convert, list_images
    from .report import Report, write_report
    from .simulate import SimulatedMovie, list_presets, load_simulation_config, simulate_dataset, simulate_movie
    from .simulation_params import SimulationConfig
    from .training import LoadedModel, TrainResult, finetune_config, load_checkpoint, train

#: public name → the module that defines it. Everything is imported on first use, so that a
#: command pays only for what it needs (``casparks detect`` never imports the simulator or the
#: metrics: ~0.3 s of a 10 s command on a 2-core CPU).
_LAZY = {
    **dict.fromkeys(("Sample", "check_dataset", "list_samples"), "dataset"),
    "CasparksError": "errors",
    **dict.fromkeys(("Evaluation", "MovieEvaluation", "evaluate", "evaluate_movie"), "evaluation"),
    **dict.fromkeys(("Movie", "read_movie", "read_stack", "write_movie"), "io"),
    **dict.fromkeys(("LabelConfig", "prepare_dataset_labels", "prepare_labels"), "labels"),
    **dict.fromkeys(("measure_labels", "measure_files"), "labelled"),
    **dict.fromkeys(("SimulatedMovie", "list_presets", "load_simulation_config", "simulate_dataset",
                     "simulate_movie"), "simulate"),
    "SimulationConfig": "simulation_params",
    **dict.fromkeys(("train", "load_checkpoint", "finetune_config", "TrainResult", "LoadedModel"), "training"),
    **dict.fromkeys(("detect", "detect_files", "load_detector", "read_detection", "read_events", "read_movies", "write_detection",
                     "Detection", "DetectSettings", "Detector"), "detection"),
    **dict.fromkeys(("write_report", "Report"), "report"),
    **dict.fromkeys(("list_models", "ModelInfo"), "models"),
    **dict.fromkeys(("convert", "list_images", "ProjectImage"), "projects"),
    **dict.fromkeys(("TrainConfig", "load_config"), "config"),
    **dict.fromkeys(("calibrate", "Calibration"), "calibration"),
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'casparks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", *_LAZY]

"""Trained models by name: the ones bundled inside the package, or any checkpoint file or run.

A bundled model is two files in ``casparks/bundled_models/``: ``NAME.ckpt`` (a self-describing
casparks checkpoint, weights only) and ``NAME.yaml``, its card:

* ``description``: one line for ``casparks models``;
* ``native_pixel_size_um`` / ``native_frame_interval_ms``: the sampling of its training movies.
  :func:`casparks.detect` resamples other movies to it (and the results back);
* ``window_frames`` / ``overlap``: the inference windows it was validated with;
* ``postprocess``: :class:`~casparks.postprocess.PostprocessConfig` values calibrated for it;
* free-form sections (training data, measured accuracy, limits) that the README's model card
  repeats.

A user's checkpoint may have a card too: ``my_model.yaml`` beside ``my_model.ckpt``; a run's
checkpoint has its run's ``card.yaml``, and carries a copy of it inside (so a checkpoint copied
out of its run detects as it did there). Without any, detection uses the default settings. A
checkpoint's model was trained at its training configuration's ``data.resample_to``: that
sampling is the native one, whatever a card copied from another model says.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from .config import read_numbers_yaml
from .errors import CasparksError
from .paths import home_path

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled_models"
DEFAULT_MODEL = "sim-v3"

__all__ = ["BUNDLED_DIR", "DEFAULT_MODEL", "RUN_CARD", "ModelInfo", "at_step", "inherited_card", "list_models", "with_trained_sampling",
           "resolve_model", "run_card"]

#: a training run's own card (in its folder): the detection settings a fine-tuned run inherits
RUN_CARD = "card.yaml"
#: what a fine-tuned run inherits from its model's card: how detection reads movies with it.
#: Not its accuracy, training or samplings, which belong to the model it started from (the
#: run's native sampling is its own data.resample_to).
INHERITED_KEYS = ("window_frames", "overlap", "postprocess")
#: how an inherited card's description begins
FINE_TUNED_FROM = "fine-tuned from"
#: how the card of a run trained from scratch begins (detection's default settings until calibrated)
TRAINED_FROM_SCRATCH = "trained by casparks train"


def inherited_card(card: dict[str, Any], source: str, resample_to: Sequence[float] | None = None) -> dict[str, Any]:
    """The card of a run fine-tuned from a model with ``card``: its detection settings, at the
    run's own native sampling (``resample_to``, the run's ``data.resample_to``: a run fine-tuned
    at 0.15 µm / 4 ms detected at its source's 0.2 µm / 6.8 ms, spark F1 0.92 → 0.25); a run
    trained on its movies as they are has none (its movies are not resampled)."""
    kept = {key: card[key] for key in INHERITED_KEYS if key in card}
    if not kept:
        return {}
    if resample_to:
        kept["native_pixel_size_um"], kept["native_frame_interval_ms"] = (float(v) for v in resample_to)
    return {"description": f"{FINE_TUNED_FROM} {source}; detection settings from its card, not calibrated for "
                           "this run (casparks calibrate RUN --val DIR --write-card chooses them on your validation movies)", **kept}


def with_trained_sampling(card: dict[str, Any], samplings: Iterable[tuple[float, float]]) -> dict[str, Any]:
    """``card`` whose ``trained_sampling`` (the range :func:`casparks.detection.check_sampling`
    warns outside) spans ``samplings`` (µm, ms) and any range it had. A fine-tuned run's card
    starts without one (its source's range is not inherited: fine-tuned on one microscope's
    movies, a model is trusted at their sampling), so detection warns outside its movies'."""
    samplings = list(samplings)
    if not samplings:
        return card
    trained = dict(card.get("trained_sampling") or {})
    for key, values in zip(("pixel_size_um", "frame_interval_ms"), zip(*samplings)):
        bounds = [float(v) for v in trained.get(key) or ()] + [float(v) for v in values]
        trained[key] = [round(min(bounds), 6), round(max(bounds), 6)]
    return {**card, "trained_sampling": trained}


@dataclass(frozen=True)
class ModelInfo:
    """Where a model's checkpoint is, and what its card says (empty dict without a card)."""

    name: str
    checkpoint: Path
    card: dict[str, Any] = field(default_factory=dict)
    bundled: bool = False

    @property
    def description(self) -> str:
        return str(self.card.get("description", ""))

    @property
    def native_sampling(self) -> tuple[float, float] | None:
        """(pixel size µm, frame interval ms) of the training movies, if the card says."""
        px, dt = self.card.get("native_pixel_size_um"), self.card.get("native_frame_interval_ms")
        return (float(px), float(dt)) if px and dt else None


def at_step(info: ModelInfo, step: int) -> ModelInfo:
    """``info`` named after the step its checkpoint holds where the file is a run's ``last.ckpt``.

    ``last.ckpt`` is rewritten as training goes on, so ``<run>-last`` would name different
    weights over time; ``<run>-step_0000450`` is the name the step's own checkpoint gets.
    Any other model (bundled, a step checkpoint, a loose file) is returned unchanged.
    """
    path = info.checkpoint
    if info.bundled or path.name != "last.ckpt" or path.parent.name != "checkpoints":
        return info
    return replace(info, name=f"{path.parent.parent.name}-step_{int(step):07d}")


def _read_card(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        card = read_numbers_yaml(path.read_text(encoding="utf-8")) or {}  # puff_threshold: 6e-1 is 0.6
    except yaml.YAMLError as exc:
        raise CasparksError(f"the model card is not valid YAML ({exc})".replace("\n", " "), path=path,
                            fix="fix or delete the card") from None
    if not isinstance(card, dict):
        raise CasparksError("the model card is not a mapping", path=path, fix="fix or delete the card")
    return card


def run_card(run_dir: Path) -> dict[str, Any]:
    """A training run's own card (:data:`RUN_CARD` in its folder); empty without one."""
    return _read_card(Path(run_dir) / RUN_CARD)


def list_models() -> list[ModelInfo]:
    """The bundled models, the default first."""
    found = [ModelInfo(p.stem, p, _read_card(p.with_suffix(".yaml")), bundled=True)
             for p in sorted(BUNDLED_DIR.glob("*.ckpt"))]
    return sorted(found, key=lambda m: (m.name != DEFAULT_MODEL, m.name))


def resolve_model(model: str | Path | None = None) -> ModelInfo:
    """A bundled model's name, a checkpoint file, or a training run folder (its last checkpoint)."""
    model = DEFAULT_MODEL if model is None else model
    bundled = {m.name: m for m in list_models()}
    if isinstance(model, str) and model in bundled:
        return bundled[model]
    path = home_path(model)
    if path.is_dir():
        from .training import CHECKPOINT_DIR, checkpoint_path

        if path.name == CHECKPOINT_DIR and not (path / CHECKPOINT_DIR).is_dir():  # a run's checkpoints folder
            path = path.parent
        path = checkpoint_path(path, None)
    if path.is_file():
        card = _read_card(path.with_suffix(".yaml"))
        name = path.stem
        if path.parent.name == "checkpoints":  # a run's checkpoint: named after the run, the run's card
            name = f"{path.parent.parent.name}-{path.stem}"  # e.g. sim-v3-finetune-step_0002000
            card = card or run_card(path.parent.parent)
        return ModelInfo(name, path, _checkpoint_card(card, path, name))
    names = ", ".join(bundled) or "none installed"
    in_runs = Path("runs") / str(model)  # a run named as it was trained (run.output_dir's default is runs)
    if (in_runs / "checkpoints").is_dir():
        raise CasparksError(f"no model {str(model)!r}: neither a bundled model nor a checkpoint file or run folder here",
                            fix=f"give the run's folder: --model {in_runs}")
    raise CasparksError(
        f"no model {str(model)!r}: neither a bundled model nor a checkpoint file or run folder",
        path=None, fix=f"bundled models: {names} (casparks models); or give the path of a .ckpt file or a run folder",
    )


def _checkpoint_card(card: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    """The card a checkpoint detects with: ``card`` (beside it, or its run's), else the copy it
    carries inside (a checkpoint copied out of its run detected with the default settings: Otsu's
    threshold, no puff filters, another window), with the native sampling of its own training:
    ``data.resample_to`` where the card says another, none where a card inherited by a
    fine-tuning says its source's and the run trained on its movies as they are."""
    from .training import CHECKPOINT_KEY, _torch_load

    meta = _torch_load(path)[CHECKPOINT_KEY]
    card = dict(card or meta.get("card") or {})
    config = meta.get("config") or {}
    # checkpoints saved since 2026-12-06 carry their run's card, empty for a run without one
    if not card and "card" not in meta and (config.get("run") or {}).get("load_run_name"):
        log.warning("%s: no model card (its run's card.yaml, or %s beside it): detection uses the default settings; "
                    "if it was fine-tuned from a model with a card, copy its run's card.yaml beside it as %s",
                    name, path.with_suffix(".yaml").name, path.with_suffix(".yaml").name)
    resample_to = (config.get("data") or {}).get("resample_to")
    said = (card.get("native_pixel_size_um"), card.get("native_frame_interval_ms"))
    if resample_to:
        trained_at = (float(resample_to[0]), float(resample_to[1]))
        if said[0] and said[1] and (float(said[0]), float(said[1])) != trained_at:
            log.warning("%s: its card says a native sampling of %g µm, %g ms, but it was trained at %g µm, %g ms "
                        "(data.resample_to): movies are resampled to the latter", name, *said, *trained_at)
        card["native_pixel_size_um"], card["native_frame_interval_ms"] = trained_at
    elif said[0] and said[1] and str(card.get("description", "")).startswith(FINE_TUNED_FROM):
        log.warning("%s: its card says a native sampling of %g µm, %g ms (its source model's), but it was trained on "
                    "its movies as they are (data.resample_to null): movies are not resampled", name, *said)
        card.pop("native_pixel_size_um")
        card.pop("native_frame_interval_ms")
    return card

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

A user's checkpoint may have a card too: ``my_model.yaml`` beside ``my_model.ckpt``. Without
one, detection uses the default settings and no resampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import CasparksError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled_models"
DEFAULT_MODEL = "sim-v3"

__all__ = ["BUNDLED_DIR", "DEFAULT_MODEL", "RUN_CARD", "ModelInfo", "at_step", "inherited_card", "list_models",
           "resolve_model", "run_card"]

#: a training run's own card (in its folder): the detection settings a fine-tuned run inherits
RUN_CARD = "card.yaml"
#: what a fine-tuned run inherits from its model's card: how detection reads movies with it.
#: Not its accuracy, training or trained samplings, which belong to the model it started from.
INHERITED_KEYS = ("native_pixel_size_um", "native_frame_interval_ms", "window_frames", "overlap", "postprocess")


def inherited_card(card: dict[str, Any], source: str) -> dict[str, Any]:
    """The card of a run fine-tuned from a model with ``card``: its detection settings."""
    kept = {key: card[key] for key in INHERITED_KEYS if key in card}
    if not kept:
        return {}
    return {"description": f"fine-tuned from {source}; detection settings from its card, not calibrated for "
                           "this run (models/calibrate.py chooses them on your validation movies)", **kept}


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
        card = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
    path = Path(model).expanduser()
    if path.is_dir():
        from .training import checkpoint_path

        path = checkpoint_path(path, None)
    if path.is_file():
        card = _read_card(path.with_suffix(".yaml"))
        name = path.stem
        if path.parent.name == "checkpoints":  # a run's checkpoint: named after the run, the run's card
            name = f"{path.parent.parent.name}-{path.stem}"  # e.g. sim-v3-finetune-step_0002000
            card = card or run_card(path.parent.parent)
        return ModelInfo(name, path, card)
    names = ", ".join(bundled) or "none installed"
    raise CasparksError(
        f"no model {str(model)!r}: neither a bundled model nor a checkpoint file or run folder",
        path=None, fix=f"bundled models: {names} (casparks models); or give the path of a .ckpt file",
    )

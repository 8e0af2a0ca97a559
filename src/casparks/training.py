"""Training engine: a PyTorch Lightning module and trainer around casparks' data, network and loss.

``train(config)`` (``casparks train CONFIG.yaml``) runs one training run in
``<run.output_dir>/<run.run_name>/``::

    config.yaml          the resolved configuration (reloadable with casparks.config.load_config)
    card.yaml            a fine-tuned run's detection settings, inherited from its model's card
    checkpoints/         step_0001000.ckpt … (every run.save_every steps and at the end), last.ckpt
    metrics.csv          one row per validation: step, loss, per-class F1 (reference and
                         one-to-one), voxel IoU
    metrics_eval.csv     the same, one row per evaluation (run.training false), beside the history
    test_metrics.json    with run.testing: scores on data.test_dir
    logs/                TensorBoard events, train.log (text log)
    labels_cache/        prepared training labels and movie statistics (reused between runs)

A run stopped by an input error before its first step (found as the movies are read into the
label cache) removes the folder again if it made it, never one that existed. While a run writes
its folder no other run may (a second ``casparks train`` of the same run name is refused).

The engine is Lightning's: ``max_steps = run.train_epochs`` optimisation steps over an endless
stream of training chunks, validation every ``run.test_every`` steps, ``ModelCheckpoint`` every
``run.save_every`` steps, mixed precision on GPUs, data-parallel training on several devices or
nodes with the DDP strategy (gloo on the CPU).

**Validation** predicts each validation movie whole (:func:`casparks.inference.predict_movie`,
overlapping windows of ``data.data_duration`` frames blended with a Gaussian, the edge frames
detection uses), turns the probabilities into events with the post-processing ``casparks
detect`` would use for the run (the run's ``card.yaml``, which a fine-tuned run inherits from
its model, else the defaults) and scores them against the movie's annotation files (class and
event labels, as ``casparks evaluate`` does) with :func:`casparks.evaluation.evaluate_movie`
(the argmax class per voxel, scored before session 19, gave the bundled sim-v3 a mean F1 of
0.02 on a movie detection scores 1.0 on); counts are summed
over movies before ratios are taken. The validation loss is the training criterion on the
blended probabilities of whole movies (the logits given to the criterion are their logarithm,
whose softmax is the probabilities) against the prepared training labels. When
``run.train_epochs`` is not a multiple of ``run.test_every`` the final weights are validated
once more after training. Under DDP every rank validates every movie (the same numbers; rank 0
writes metrics.csv), which costs no more wall time than validating on one device.

**Exact resume.** Lightning restores the weights, the optimiser, the scheduler and the step
counters, but not random states. The training data is a pure function of the position in the
stream: the sampler numbers its draws g = 0, 1, 2 … (rank r of w takes g ≡ r mod w), draw g is
chunk ``perm_e[g mod n]`` with ``e = g // n`` and ``perm_e`` a permutation seeded by
(run.seed, e), and the chunk's augmentation comes from ``default_rng([seed, e, chunk])``
(:class:`casparks.data.ChunkDataset`). A checkpoint stores the number of draws consumed
(``step · batch_size`` per rank), so a resumed run continues the same stream whatever the
prefetching or worker processes did. The global python/numpy/torch (and CUDA) random states are
saved in ``on_save_checkpoint`` and restored at the start of the resumed training (dropout and
anything else that draws from them continues exactly); data loaders get their own generators,
so creating one never consumes a global random number. Train 4 steps, or 2 then resume to 4:
the weights are identical (``tests/test_train.py``). A Ctrl-C or SIGTERM inside a step (before
its update) saves the previous step: the step's forward pass is undone (batch-norm statistics and
random states as the step began, :meth:`rewind_unfinished_step`) and Lightning's count of its batch
dropped (:func:`_drop_unfinished_batch`), so the resumed run equals an uninterrupted one in every
tensor and validates at the same steps. A Ctrl-C from the start of a step's update to the end of
its bookkeeping is held until the step is complete (:class:`_HeldCtrlC`): the run stops with that
step saved, never half an update. A run is resumed only with the settings that define its
model and optimisation unchanged (:data:`RESUME_MAY_CHANGE`), and not once it has finished. A checkpoint of a step that validates is
written before that validation (Lightning saves in ``on_train_batch_end``), so it is saved as
"validation not done" and a resumed run validates that step again (its earlier row of
metrics.csv replaced): the plateau scheduler, fed val/loss after each validation, gets every
validation once, as in an uninterrupted run.

**A non-finite loss** (an overflow, a diverging step) makes no update: the step's batch is
skipped on every rank (no backward; batch-norm statistics restored); so does a finite loss whose
gradient is not finite somewhere (its gradients are dropped before Adam, which would otherwise
turn one NaN into NaN weights and moments for good). A warning says so, the step
still counts (as Lightning counts it), and after ``MAX_NONFINITE_IN_A_ROW`` (20) such steps in a
row the run stops with a one-line error; its last checkpoint stays usable. A run that went NaN
would otherwise train on silently and save NaN weights.

Checkpoints are self-describing: besides Lightning's state they hold, under the key
``"casparks"``, the resolved configuration, the class codes and names, the pre-processing
settings, the casparks version and a checkpoint format version; :func:`load_checkpoint` needs
nothing but the file.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import datetime
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from .classes import CLASS_NAMES, CODE_NAMES, EVENT_CLASSES, IGNORE
from .config import RunConfig, TrainConfig, config_from_dict, save_config
from .errors import CasparksError, Terminated
from .hardware import emulated_bf16_message, native_bf16
from .paths import home_path

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_KEY = "casparks"
CHECKPOINT_DIR = "checkpoints"
METRICS_CSV = "metrics.csv"
#: an evaluation's scores (run.training false): one row per evaluation, beside the training history
METRICS_EVAL_CSV = "metrics_eval.csv"
TEST_METRICS_JSON = "test_metrics.json"
LABELS_CACHE = "labels_cache"
LOG_DIR = "logs"
_STEP_FILE = re.compile(r"^step_(\d+)\.ckpt$")
#: steps in a row with a non-finite loss (each makes no update) after which training stops as diverged
MAX_NONFINITE_IN_A_ROW = 20
FINETUNE_LR = 1e-4  # the reference's learning rate; fine-tuning starts no higher

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "LoadedModel",
    "TrainResult",
    "checkpoint_path",
    "find_run_dir",
    "find_source",
    "finetune_config",
    "list_checkpoints",
    "load_checkpoint",
    "train",
]


# ----------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class TrainResult:
    """What a training run leaves: its folder, its last checkpoint, its step and scores.

    ``metrics`` are the scores of the last validation (None when nothing was validated):
    ``loss`` and, per class (spark, wave, puff), ``<class>/f1_reference``,
    ``<class>/f1_one_to_one``, ``<class>/voxel_iou`` and averages ``mean/…``; NaN where
    undefined. ``test_metrics`` is the full scores dict of data.test_dir with run.testing.
    """

    run_dir: Path
    checkpoint: Path | None
    step: int
    metrics: dict[str, float] | None
    test_metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A trained network ready for inference, rebuilt from a checkpoint file alone.

    ``network`` is in eval mode on the map location; ``metadata`` holds the casparks version,
    the checkpoint format version, the step, the class codes/names and the run name.
    """

    network: torch.nn.Module
    config: TrainConfig
    preprocessing: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def step(self) -> int:
        return int(self.metadata.get("step", 0))


# ----------------------------------------------------------------------------------------------
# run folders and checkpoints


def find_run_dir(name: str, output_dir: str | Path) -> Path:
    """The folder of run ``name``: ``output_dir/name`` or, failing that, ``name`` as a path."""
    candidates = [Path(output_dir) / name, home_path(name)]
    for candidate in candidates:
        if (candidate / CHECKPOINT_DIR).is_dir() or (candidate / "config.yaml").is_file():
            return candidate
    raise CasparksError(
        f"run {name!r} not found (looked for {candidates[0]} and {candidates[1]})",
        fix="set run.load_run_name to an existing run name under run.output_dir or to a run folder",
    )


def list_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """Step-numbered checkpoints of a run folder, by step."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _STEP_FILE.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def checkpoint_path(run_dir: str | Path, step: int | None = None) -> Path:
    """The checkpoint of ``step`` (None: the latest) in a run folder; CasparksError if absent."""
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir)
    if step is None:
        if found:
            return found[max(found)]
        last = run_dir / CHECKPOINT_DIR / "last.ckpt"
        if last.is_file():
            return last
        runs = sorted(d.name for d in run_dir.iterdir() if (d / CHECKPOINT_DIR).is_dir()) if run_dir.is_dir() else []
        if runs and not (run_dir / CHECKPOINT_DIR).is_dir():  # the folder of runs, not a run
            raise CasparksError(f"is a folder of runs ({', '.join(runs[:4])}{' …' if len(runs) > 4 else ''}), not a run",
                                path=run_dir, fix=f"give one of them, e.g. {run_dir / runs[0]}")
        loose = sorted(run_dir.glob("*.ckpt")) if run_dir.is_dir() else []
        if loose:  # a folder holding checkpoint files, not a run
            raise CasparksError(f"is a folder holding {loose[0].name}, not a run", path=run_dir,
                                fix=f"give the checkpoint file itself, e.g. {loose[0]}")
        raise CasparksError("the run has no checkpoint", path=run_dir, fix="train it first or choose another run")
    if step not in found:
        steps = ", ".join(map(str, list(found)[-10:])) or "none"
        raise CasparksError(
            f"the run has no checkpoint of step {step} (steps saved: {steps})",
            path=run_dir, fix="set run.load_epoch to a saved step, or null for the latest",
        )
    return found[step]


#: the first 4 bytes of a TIFF (little or big endian) or BigTIFF file
_TIFF_HEADS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _torch_load(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise CasparksError("checkpoint file not found", path=path, fix="give the path of a .ckpt file")
    with open(path, "rb") as file:
        head = file.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # PyTorch's zip, or a legacy pickle
        kind = (" (it is empty)" if not head else " (it is a TIFF image: a movie?)" if head in _TIFF_HEADS
                else " (it is a text file: a config?)" if head.isascii() else "")
        raise CasparksError(f"is not a checkpoint file{kind}",
                            path=path, fix="give a .ckpt file written by casparks train, a run folder or a bundled "
                                           "model's name (casparks models)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise CasparksError(
            f"cannot be read as a checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            path=path, fix="use another checkpoint of the run (a crash may have cut the last one)",
        ) from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CasparksError("is not a casparks checkpoint", path=path, fix="give a checkpoint written by casparks train")
    version = checkpoint[CHECKPOINT_KEY].get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CasparksError(
            f"checkpoint format version {version} is newer than this casparks reads ({CHECKPOINT_FORMAT_VERSION})",
            path=path, fix="update casparks",
        )
    return checkpoint


def _network_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "network."
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _check_compatible(
    network: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: str, path: Path,
    fix: str = "use the network settings of that run (its config.yaml), or train a new run",
) -> None:
    """One-line CasparksError naming the source (``"run NAME"`` or ``"model NAME"``) and the first
    layer that differs."""
    own = network.state_dict()
    for key, value in own.items():
        if key not in weights:
            raise CasparksError(f"{source} has no layer {key} that this network has", path=path, fix=fix)
        if tuple(weights[key].shape) != tuple(value.shape):
            raise CasparksError(
                f"{source} has layer {key} of shape {tuple(weights[key].shape)}, this network {tuple(value.shape)}",
                path=path, fix=fix,
            )
    extra = sorted(set(weights) - set(own))
    if extra:
        raise CasparksError(f"{source} has layer {extra[0]} that this network lacks", path=path, fix=fix)


def find_source(run: RunConfig) -> tuple[Path | None, Path]:
    """The run folder (None for a model file) and the checkpoint that ``run.load_run_name`` names.

    A *run* (a name under ``run.output_dir``, or a run folder) can be resumed, fine-tuned or
    evaluated. A *model file* (a bundled model's name as ``casparks models`` lists it, or a
    ``.ckpt`` path) holds weights only, so it can be fine-tuned or evaluated but not resumed:
    this is how a user trains the bundled model further on their own movies. A run of the same
    name as a bundled model wins (it is the user's own).
    """
    name = str(run.load_run_name)
    try:
        run_dir: Path | None = find_run_dir(name, run.output_dir)
    except CasparksError:
        run_dir = None
    if run_dir is not None:
        return run_dir, checkpoint_path(run_dir, run.load_epoch)
    from .models import resolve_model

    try:
        path = resolve_model(name).checkpoint
    except CasparksError as exc:
        if home_path(name).is_file():  # there, but not a model: say what is wrong with it
            raise
        raise CasparksError(
            f"run or model {name!r} not found (looked for {Path(run.output_dir) / name}, a folder {name}, "
            "a bundled model and a checkpoint file)",
            fix=f"set run.load_run_name to a run under run.output_dir or to a model; {exc.fix}",
        ) from None
    if run.load_epoch is not None:
        _refuse_a_runs_checkpoint(path, run)
        raise CasparksError(f"run.load_epoch is {run.load_epoch} but {name} is a model file (one step), not a run",
                            fix="remove run.load_epoch")
    if run.training and run.load_mode == "resume":
        _refuse_a_runs_checkpoint(path, run)
        raise CasparksError(f"{name} is a model file (weights only): it can be fine-tuned, not resumed",
                            fix="set run.load_mode: finetune")
    return None, path


def _refuse_a_runs_checkpoint(path: Path, run: RunConfig) -> None:
    """A run's own step checkpoint given by path to resume: say so and how to resume the run (it
    was called "a model file (weights only)", which it is not)."""
    match = _STEP_FILE.match(path.name)
    run_dir = path.parent.parent
    if path.parent.name != CHECKPOINT_DIR or not (run_dir / "config.yaml").is_file():
        return
    own = (Path(run.output_dir) / run_dir.name).resolve() == run_dir.resolve()
    name = run_dir.name if own else str(run_dir)
    step = f" --set run.load_epoch={int(match.group(1))}" if match else ""
    raise CasparksError(f"{path} is a checkpoint of run {name}: a run is loaded by its name (and step), not a file",
                        fix=f"load it with --set run.load_run_name={name}{step}")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> LoadedModel:
    """Rebuild the trained network of a checkpoint file (nothing else needed)."""
    from .nn import build_network
    from .preprocess import Preprocessing

    path = Path(path)
    checkpoint = _torch_load(path, map_location)
    meta = checkpoint[CHECKPOINT_KEY]
    config = config_from_dict(meta["config"])
    network = build_network(config.network)
    weights = _network_weights(checkpoint["state_dict"])
    _check_compatible(network, weights, f"checkpoint of run {meta.get('run_name', path.stem)}", path,
                      "the file does not match the network its own configuration builds: use another checkpoint")
    network.load_state_dict(weights)
    network.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    network.eval()
    metadata = {k: v for k, v in meta.items() if k not in ("config", "preprocessing", "rng", "draws")}
    return LoadedModel(network, config, Preprocessing.from_dict(meta["preprocessing"]), metadata, path)


def finetune_config(model: str | Path) -> TrainConfig:
    """The configuration that fine-tunes ``model`` (a bundled model's name, a ``.ckpt`` file or a
    run folder) on new movies: its own network, pre-processing, augmentation and loss (from the
    checkpoint), ``run.load_run_name`` set to it with ``run.load_mode: finetune``, no data folders
    (the user's to set), at most :data:`FINETUNE_LR` as learning rate, 2000 steps, no time limit,
    ``run.precision: auto``,
    at most as many loader workers as this machine has cores, and movies resampled to the
    model's native sampling (its card's, when it was trained at its movies' own), so that new
    movies look to it as its training movies did and detection with the result resamples alike.
    """
    from .models import resolve_model

    info = resolve_model(model)
    meta = _torch_load(info.checkpoint)[CHECKPOINT_KEY]
    trained = config_from_dict(meta["config"])
    source = info.name if info.bundled else str(info.checkpoint.resolve())
    run = dataclasses.replace(
        RunConfig(), run_name=f"{info.name}-finetune", load_run_name=source, load_mode="finetune",
        train_epochs=2000, save_every=500, test_every=500, print_every=50, seed=trained.run.seed,
        # auto, not the trained run's: bf16-mixed is refused where bfloat16 is only emulated (an
        # AVX2 CPU, a T4 or V100), and auto picks it wherever it is native
        precision="auto", memory_format=trained.run.memory_format,
    )
    data = dataclasses.replace(trained.data, data_dir=(), val_ids=(), val_dir=(), test_dir=(),
                               num_workers=min(trained.data.num_workers, os.cpu_count() or 1),
                               resample_to=trained.data.resample_to or info.native_sampling)
    loss = dataclasses.replace(trained.loss, lr_start=min(trained.loss.lr_start, FINETUNE_LR))
    return dataclasses.replace(trained, run=run, data=data, loss=loss)


def write_finetune_config(model: str | Path, path: str | Path, overwrite: bool = False) -> Path:
    """Write :func:`finetune_config` as YAML with a header saying what to fill in (atomically;
    an existing file is replaced only with ``overwrite``)."""
    import yaml

    from .io import atomic_output

    config = finetune_config(model)
    header = (
        f"# Fine-tune {config.run.load_run_name} on your own annotated movies (the original layout:\n"
        "# NN_video.tif, NN_class_label.tif, NN_event_label.tif). Its network, pre-processing and loss are\n"
        "# the model's own: keep the network section as it is. Set data.data_dir and a validation set\n"
        "# (data.val_dir or data.val_ids), then:  casparks train THIS_FILE.yaml\n"
        "# Data folders written in this file are relative to it; those given with --set, and\n"
        "# run.output_dir, to the working directory. The run goes to run.output_dir/run.run_name.\n"
    )
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(header + yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------------------------
# random states


def _rng_state() -> dict[str, Any]:
    """Python, numpy and torch random states as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------
# the endless training stream


class _DrawSampler(torch.utils.data.Sampler):
    """Endless stream of (draw number, chunk index) for one rank; see the module docstring."""

    def __init__(self, n_items: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.n_items, self.seed = int(n_items), int(seed)
        self.rank, self.world_size, self.start = int(rank), int(world_size), int(start)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 7919, epoch]).permutation(self.n_items)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        local = self.start
        epoch, perm = -1, None
        while True:
            g = local * self.world_size + self.rank
            e = g // self.n_items
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            yield g, int(perm[g % self.n_items])
            local += 1


class _Draws(torch.utils.data.Dataset):
    """A ChunkDataset addressed by (draw number, chunk index): the draw's epoch picks the augmentation."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        g, index = key
        self.dataset.set_epoch(g // len(self.dataset))
        return self.dataset[index]


# ----------------------------------------------------------------------------------------------
# evaluation of whole movies


@dataclass
class _EvalMovie:
    """A validation or test movie: the TrainingMovie (data, units, stats, prepared labels) and
    the annotation files the scores use."""

    movie: Any
    sample: Any
    #: the post-processing that turns its probabilities into events before scoring
    #: (:func:`_scoring_postprocess`); None scores the argmax class of each voxel
    postprocess: Any = None

    def truth(self) -> tuple[np.ndarray, np.ndarray | None]:
        from .io import read_stack

        classes = np.asarray(read_stack(self.sample.class_label))
        events = None
        if self.sample.event_label is not None:
            events = np.asarray(read_stack(self.sample.event_label))
            if events.shape != classes.shape:
                raise CasparksError(
                    f"shape {events.shape} differs from the class labels' {classes.shape}",
                    path=self.sample.event_label, fix="check that the labels belong to this movie",
                )
        return classes, events


#: frames of a validation movie whose loss is computed when validating on a CPU
VAL_LOSS_FRAMES = 64


def _inherit_card(run_dir: Path, source: str, source_ckpt: Path, resample_to: Sequence[float] | None) -> None:
    """A run fine-tuned from a model with a card detects as that model did (its window, overlap
    and calibrated post-processing; without it, Otsu's threshold and no puff filters), at the
    run's own sampling (``resample_to``): ``card.yaml`` in the run folder, until calibrated for
    the run."""
    from .io import write_json
    from .models import RUN_CARD, inherited_card, resolve_model

    card = inherited_card(resolve_model(source_ckpt).card, source, resample_to)
    if card:
        write_json(run_dir / RUN_CARD, card, overwrite=True)  # JSON is YAML


def _trained_class_weights(config: TrainConfig, checkpoint: Mapping[str, Any] | None, samples: Sequence[Any],
                           cache: Path) -> Any:
    """The class weights the evaluated checkpoint was trained with (its validation loss is the
    training criterion; the unweighted one gave another number for the same weights): saved in
    the checkpoint, else resolved again from the training movies (checkpoints saved before)."""
    from .data import ChunkDataset, load_movies
    from .losses import resolve_class_weights

    meta = (checkpoint or {}).get(CHECKPOINT_KEY) or {}
    if "class_weights" in meta:
        return None if meta["class_weights"] is None else torch.tensor(meta["class_weights"], dtype=torch.float32)
    if config.loss.class_weights not in ("auto", "sqrt"):
        return resolve_class_weights(config.loss, None)
    movies = load_movies(samples, config.data, cache)
    return resolve_class_weights(config.loss, ChunkDataset(movies, config.data, train=True,
                                                           seed=config.run.seed).class_counts())


def _set_aside_old_metrics(run_dir: Path) -> None:
    """A new run (no checkpoint to resume) starts its own metrics.csv: one killed before its first
    checkpoint and started again appended to the old one (rows 2, 2, 4 …). The old file is kept
    as metrics.csv.old (.old-2 …), with a warning."""
    path = run_dir / METRICS_CSV
    if not path.is_file():
        return
    aside = path.with_name(f"{METRICS_CSV}.old")
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = path.with_name(f"{METRICS_CSV}.old-{n}")
    os.replace(path, aside)
    log.warning("%s is of an earlier run of this name that saved no checkpoint: kept as %s; this run starts a new one",
                path, aside.name)


def _refuse_nothing_to_learn(counts: np.ndarray, data_dirs: Sequence[str]) -> None:
    """Refuse training movies whose labels hold no event voxel (all background, or all ignored):
    such a run trained to its end on nothing, with a warning that sounded harmless."""
    if counts.size > 1 and not counts[1:].sum() > 0:
        raise CasparksError("the training movies' labels hold no spark, wave or puff (every voxel is background or "
                            "ignored): there is nothing to learn", path=data_dirs[0] if data_dirs else None,
                            fix="check the class label files (casparks check DIR), or add annotated movies")


def _warn_if_no_events(val_movies: Sequence[_EvalMovie]) -> None:
    """Warn once where no validation movie holds an annotated event: every F1 of metrics.csv is
    then blank, which read as a broken run."""
    if not val_movies or any(_has_events(item.movie.labels) for item in val_movies):
        return
    folders = ", ".join(dict.fromkeys(str(Path(item.sample.video).parent) for item in val_movies))
    log.warning("the validation movies (in %s) hold no annotated event: the F1 scores of metrics.csv say nothing "
                "(blank, or 0 where the network finds events)", folders)


def _has_events(labels: Any) -> bool:
    """Whether prepared labels hold a voxel of an event class (read in blocks of frames)."""
    for start in range(0, labels.shape[0], 64):
        part = np.asarray(labels[start:start + 64])
        if np.any((part > 0) & (part != IGNORE)):
            return True
    return False


def _copy_card(source_dir: Path, run_dir: Path) -> None:
    """A run resumed (or evaluated) under a new ``run.run_name`` detects as the run it continues:
    that run's card (a fine-tuned run's inherited post-processing, a calibration) is copied,
    unless the new folder has one. Without it the new run's card was the default one."""
    from .models import RUN_CARD

    if (source_dir / RUN_CARD).is_file() and not (run_dir / RUN_CARD).exists():
        shutil.copy2(source_dir / RUN_CARD, run_dir / RUN_CARD)


def _add_trained_sampling(run_dir: Path, movies: Sequence[Any], resample_to: Sequence[float] | None) -> None:
    """The run's card's ``trained_sampling`` spans its training movies' own samplings too (a
    fine-tuned model kept its source's range, and detection warned outside that alone). A run
    without a card (trained from scratch, or from a model without one) gets one: detection
    warned about no sampling for it and, with ``resample_to``, refused nothing (a movie tagged
    200 µm per pixel was detected, at 200 µm)."""
    from .io import write_json
    from .models import RUN_CARD, TRAINED_FROM_SCRATCH, run_card, with_trained_sampling

    card = run_card(run_dir)
    if not card:
        card = {"description": f"{TRAINED_FROM_SCRATCH}; detection settings are the defaults until calibrated "
                               "(casparks calibrate RUN --val DIR --write-card)"}
        if resample_to:
            card["native_pixel_size_um"], card["native_frame_interval_ms"] = (float(v) for v in resample_to)
    samplings = [getattr(m, "source_units", None) or (m.pixel_size_um, m.frame_interval_ms) for m in movies]
    write_json(run_dir / RUN_CARD, with_trained_sampling(card, samplings), overwrite=True)


def _scoring_postprocess(run_dir: Path) -> Any:
    """The post-processing validation and test scores use: the run's card's (a fine-tuned run
    inherits its model's), else the defaults `casparks detect` would use for the run. Scoring the
    argmax class of each voxel instead gave the bundled sim-v3 a mean F1 of 0.02 on a movie that
    `casparks detect` + `evaluate` score 1.0 on: no guide to a fine-tuning."""
    from .models import run_card
    from .postprocess import PostprocessConfig

    return PostprocessConfig.from_dict(dict(run_card(run_dir).get("postprocess") or {}))


#: settings a resumed run may change: where and how fast it runs, how long, what it saves and
#: logs. Every other one defines the model or its optimisation (data, pre-processing,
#: augmentation, loss, learning rate and schedule, network, batch size, seed, devices)
RESUME_MAY_CHANGE = frozenset({
    "run.run_name", "run.load_run_name", "run.load_epoch", "run.load_mode", "run.train_epochs", "run.max_minutes",
    "run.device", "run.precision", "run.memory_format", "run.save_every", "run.test_every", "run.print_every",
    "run.training", "run.testing", "run.output_dir", "run.tensorboard", "run.wandb_enable", "run.wandb_project",
    "data.num_workers", "data.test_dir",
})
_FOLDER_KEYS = ("data.data_dir", "data.val_dir", "data.test_dir")


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict as {"section.key": value}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        elif key != "format_version":
            out[f"{prefix}{key}"] = value
    return out


def _resume_changes(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """``"key old → new"`` for each setting that ``new`` changes and a resumed run must keep
    (:data:`RESUME_MAY_CHANGE`; run.test_every too under the plateau scheduler, which steps at
    each validation). Folders are compared resolved."""
    before, after = _flat(saved.to_dict()), _flat(new.to_dict())
    for key in _FOLDER_KEYS:
        if not all(home_path(p).is_absolute() for p in before[key]):
            # saved before folders were made absolute: relative to a directory no longer known
            before[key] = after[key]
        before[key], after[key] = ([str(home_path(p).resolve()) for p in d[key]] for d in (before, after))
    kept = RESUME_MAY_CHANGE - ({"run.test_every"} if saved.loss.scheduler == "plateau" else set())
    if _id_values(before["data.val_ids"]) == _id_values(after["data.val_ids"]):
        kept |= {"data.val_ids"}  # an id written another way (03 or 3) names the same movie
    return [f"{key} {_shown(before.get(key))} → {_shown(after.get(key))}"
            for key in after if key not in kept and before.get(key) != after.get(key)]


def _id_values(ids: Sequence[str]) -> list[str]:
    """Validation ids as :func:`casparks.data.split_samples` matches them: 03 and 3 alike."""
    return [str(int(i)) if str(i).isdigit() else str(i) for i in ids]


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _check_resume_config(config: TrainConfig, checkpoint: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume a run with settings that define the model or its optimisation changed.

    Resumed, the optimiser and scheduler are restored whatever the new learning rate, so the
    run's records (config.yaml, the checkpoint's config, which detection reads for its
    pre-processing) named values it never trained with, or half its steps did (percentile
    normalisation up to step 14, zscore after, and zscore recorded).
    """
    saved = config_from_dict((checkpoint.get(CHECKPOINT_KEY) or {}).get("config") or {})
    changes = _resume_changes(saved, config)
    if changes:
        name = config.run.load_run_name
        raise CasparksError(
            f"run {name} cannot be resumed with other settings than it was trained with: {'; '.join(changes)}",
            path=path,
            fix=f"resume it with its own (the run's config.yaml), or train the new settings as a new run: another "
            f"run.run_name with run.load_run_name {name} and run.load_mode finetune",
        )


def _movie_lists(train_samples: Sequence[Any], val_samples: Sequence[Any]) -> dict[str, Any]:
    """The ids of the training and validation movies, and their annotation files' size and time of
    change, recorded in each checkpoint: a resumed run compares them (the folders' paths alone
    were compared)."""
    return {"train": [s.id for s in train_samples], "val": [s.id for s in val_samples],
            "train_annotations": {s.id: _annotation_stamp(s) for s in train_samples},
            "val_annotations": {s.id: _annotation_stamp(s) for s in val_samples}}


def _annotation_stamp(sample: Any) -> list[int | None]:
    """Size and time of change (ns) of a movie's class and event label files (None: no file)."""
    stamp: list[int | None] = []
    for path in (sample.class_label, sample.event_label):
        info = Path(path).stat() if path is not None and Path(path).is_file() else None
        stamp += [info.st_size, info.st_mtime_ns] if info is not None else [None, None]
    return stamp


def _check_resume_movies(config: TrainConfig, checkpoint: Mapping[str, Any], path: Path,
                         movies: Mapping[str, list[str]]) -> None:
    """Refuse to resume a run whose data folders now hold other movies: it went on training on 3
    movies where it had 2 (or 1), without a word, and a resumed run continues the saved one
    exactly. Checkpoints written before the list was recorded are not checked."""
    saved = (checkpoint.get(CHECKPOINT_KEY) or {}).get("movies")
    if not saved:
        return
    changes = []
    for kind, what in (("train", "training"), ("val", "validation")):
        before, now = set(saved.get(kind, [])), set(movies.get(kind, []))
        added, removed = sorted(now - before), sorted(before - now)
        if added or removed:
            changes.append(f"{what} movies" + (f" + {', '.join(added)}" if added else "")
                           + (f" − {', '.join(removed)}" if removed else ""))
    if changes:
        name = config.run.load_run_name
        raise CasparksError(f"run {name} cannot be resumed: its data folders hold other movies than it was trained "
                            f"on: {'; '.join(changes)}", path=path,
                            fix=f"restore the folders as they were, or train on the new movies as a new run: another "
                                f"run.run_name with run.load_run_name {name} and run.load_mode finetune")
    # the same movies, their annotations edited (or copied anew): the run goes on, on the new labels
    edited = [f"{what} movie(s) {', '.join(ids)}" for kind, what in (("train", "training"), ("val", "validation"))
              if (ids := sorted(i for i, stamp in (saved.get(f"{kind}_annotations") or {}).items()
                                if i in movies.get(f"{kind}_annotations", {})
                                and list(movies[f"{kind}_annotations"][i]) != list(stamp)))]
    if edited:
        log.warning("run %s resumes on annotations changed since its checkpoint (the size or time of change of the "
                    "label files of %s): it goes on training on the new labels, not exactly as it was",
                    config.run.load_run_name, "; ".join(edited))


def _check_unfinished(config: TrainConfig, checkpoint: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume a run that has taken run.train_epochs steps: there is nothing to train,
    and resuming it validated its last step again (a second row in metrics.csv) and rewrote its
    config.yaml."""
    step = int((checkpoint.get(CHECKPOINT_KEY) or {}).get("step", 0))
    if step < config.run.train_epochs:
        return
    if step not in _metrics_steps(path.parent.parent / METRICS_CSV):
        return  # its last validation was cut short (Ctrl-C, a SIGTERM): resuming runs it, nothing else
    further = "" if config.loss.scheduler == "cosine" else "raise run.train_epochs to train it further, or "
    raise CasparksError(
        f"run {config.run.load_run_name} has finished: its checkpoint is of step {step} and run.train_epochs is "
        f"{config.run.train_epochs}", path=path,
        fix=f"{further}fine-tune from it: another run.run_name with run.load_run_name {config.run.load_run_name} and "
        "run.load_mode finetune",
    )


def _check_schedule_kept(config: TrainConfig, checkpoint: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume a cosine schedule to another length: the restored scheduler keeps the
    planned length, so the learning rate would climb back up after it (not what training longer
    means), and no schedule then matches a straight run of the new length."""
    planned = (((checkpoint.get(CHECKPOINT_KEY) or {}).get("config") or {}).get("run") or {}).get("train_epochs")
    if config.loss.scheduler == "cosine" and planned is not None and int(planned) != config.run.train_epochs:
        raise CasparksError(
            f"this run's cosine learning-rate schedule was planned over {planned} steps, not "
            f"{config.run.train_epochs}", path=path,
            fix=f"resume with run.train_epochs {planned} to finish it, or train further with run.load_mode finetune "
            "(a new schedule from its weights)",
        )


def _evaluate_movie(
    network: torch.nn.Module, item: _EvalMovie, config: TrainConfig, criterion: torch.nn.Module | None, device: Any,
    channels_last: bool = False,
) -> tuple[Any, float]:
    """(MovieEvaluation, loss) of one whole movie, in float32 always: inside a bf16-mixed run's
    trainer validation ran under its autocast (bf16), the final validation after it in float32."""
    kind = torch.device(device).type if device is not None else "cpu"
    with torch.autocast(kind, enabled=False):
        return _evaluate_movie_float32(network, item, config, criterion, device, channels_last)


def _evaluate_movie_float32(
    network: torch.nn.Module, item: _EvalMovie, config: TrainConfig, criterion: torch.nn.Module | None, device: Any,
    channels_last: bool = False,
) -> tuple[Any, float]:
    """:func:`_evaluate_movie` without autocast."""
    from .evaluation import evaluate_movie
    from .inference import predict_movie
    from .preprocess import Preprocessing, resample_probabilities

    movie = item.movie
    probs = predict_movie(
        network, movie.data, Preprocessing.from_data_config(config.data), movie.stats,
        movie.pixel_size_um, movie.frame_interval_ms, config.data.data_duration,
        overlap=0.5, device=device, batch_size=1, channels_last=channels_last,
        # as detection does: the movie's first and last frames never on a window's unlearnt edge
        edge_frames=config.data.ignore_frames_loss,
    )
    # scored against the annotation at the movie's own sampling, as detection would report it
    resampled = getattr(movie, "factors", None) is not None
    own = resample_probabilities(probs, movie.source_shape) if resampled else probs
    truth_classes, truth_events = item.truth()
    if item.postprocess is not None:  # the events `casparks detect` would report with this network
        from .io import read_stack
        from .postprocess import postprocess

        px, dt = movie.source_units if resampled else (movie.pixel_size_um, movie.frame_interval_ms)
        found = postprocess(own, item.postprocess, px, dt, movie=read_stack(item.sample.video) if resampled else movie.data)
        pred, pred_events = found.class_label, found.event_label
    else:
        pred, pred_events = own.argmax(axis=0).astype(np.uint8), None
    del own
    # not refused mid-run: an event of two classes counts as one per class (casparks check names it)
    evaluation = evaluate_movie(truth_classes, truth_events, pred, pred_events, id=movie.id, check_annotation=False)
    loss = float("nan")
    if criterion is not None:
        # The loss of a whole movie is only a monitor, and Lovász-softmax sorts every voxel: on a
        # CPU that takes ~40 s for 500 × 64 × 512. So it runs on the network's device, and on a
        # CPU over evenly spaced frames (at most VAL_LOSS_FRAMES of them).
        frames = np.arange(probs.shape[1])
        loss_device = torch.device(device) if device is not None else torch.device("cpu")
        if loss_device.type == "cpu" and frames.size > VAL_LOSS_FRAMES:
            frames = np.linspace(0, frames.size - 1, VAL_LOSS_FRAMES).round().astype(int)
        target = torch.from_numpy(np.asarray(movie.labels, dtype=np.int64)[frames])[None].to(loss_device)
        logits = torch.log(torch.from_numpy(probs[:, frames]).clamp_min(1e-8))[None].to(loss_device)
        with torch.inference_mode():
            loss = float(copy.deepcopy(criterion).to(loss_device)(logits, target))
    return evaluation, loss


def _summary(counts: Any, loss: float) -> dict[str, float]:
    """Flat metrics (for TensorBoard and metrics.csv) from summed EventCounts."""
    from .metrics import scores

    s = scores(counts)
    out: dict[str, float] = {"loss": float(loss)}
    for name, values in s["classes"].items():
        out[f"{name}/f1_reference"] = float(values["reference"]["f1"])
        out[f"{name}/precision_reference"] = float(values["reference"]["precision"])
        out[f"{name}/recall_reference"] = float(values["reference"]["recall"])
        out[f"{name}/f1_one_to_one"] = float(values["one_to_one"]["f1"])
        out[f"{name}/voxel_iou"] = float(values["voxel_iou"])
    out["mean/f1_reference"] = float(s["average"]["reference"]["f1"])
    out["mean/f1_one_to_one"] = float(s["average"]["one_to_one"]["f1"])
    out["mean/voxel_iou"] = float(s["average"]["voxel_iou"])
    return out


def _metric_columns() -> list[str]:
    columns = ["step", "loss"]
    for code in EVENT_CLASSES:
        name = CLASS_NAMES[code]
        columns += [f"{name}/f1_reference", f"{name}/precision_reference", f"{name}/recall_reference",
                    f"{name}/f1_one_to_one", f"{name}/voxel_iou"]
    return columns + ["mean/f1_reference", "mean/f1_one_to_one", "mean/voxel_iou"]


def _append_metrics(path: Path, step: int, metrics: Mapping[str, float]) -> None:
    columns = _metric_columns()
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(columns)
        row = [step] + [_csv_value(metrics.get(c, float("nan"))) for c in columns[1:]]
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def _csv_value(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def _metrics_steps(path: Path) -> set[int]:
    """The steps metrics.csv has a row of (none without the file)."""
    if not path.is_file():
        return set()
    with open(path, newline="", encoding="utf-8") as handle:
        return {int(row[0]) for row in list(csv.reader(handle))[1:] if row and row[0].isdigit()}


def _truncate_metrics(path: Path, after_step: int) -> None:
    """Drop rows of steps after ``after_step`` (validations a crash made the run repeat)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= after_step]
    if len(kept) != len(rows):
        from .io import atomic_output

        with atomic_output(path, overwrite=True) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(kept)


# ----------------------------------------------------------------------------------------------
# the Lightning module


def _lightning():
    import pytorch_lightning as pl

    _quiet_lightning_console()
    return pl


def _quiet_lightning_console() -> None:
    """Lightning prints its notices (GPU/TPU available, tips, "max_steps reached") through its own
    console handlers; keep them out of the terminal (warnings still show) but in train.log, which
    listens to the ``pytorch_lightning`` logger through the root logger."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)


def _make_module(config: TrainConfig, class_weights: Any, train_data: Any, val_movies: Sequence[_EvalMovie],
                 run_dir: Path | None, metadata: Mapping[str, Any]):
    pl = _lightning()
    from .losses import build_loss
    from .nn import build_network
    from .preprocess import Preprocessing

    class SparksModule(pl.LightningModule):
        """Network + criterion + optimiser; data streams and validation on whole movies."""

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.network = build_network(config.network)
            # not a registered submodule: the class weights are recomputed from the data, never
            # part of the state that checkpoints carry or that resuming must match
            object.__setattr__(self, "criterion", build_loss(config.loss, class_weights))
            self.preprocessing = Preprocessing.from_data_config(config.data)
            self.train_data = train_data
            self.val_movies = list(val_movies)
            self.run_dir = run_dir
            self.metadata = dict(metadata)
            self.draws_start = 0
            self.pending_rng: Mapping[str, Any] | None = None
            self.last_metrics: dict[str, float] | None = None
            self.last_validated_step = -1
            self._val_results: list[tuple[Any, float]] = []
            self.channels_last = False
            self.skipped = 0  # steps that made no update: a non-finite loss or gradient
            self.nonfinite_in_a_row = 0
            self._step_start: _StepStart | None = None
            self.ctrl_c = _HeldCtrlC()

        def use_channels_last(self, enabled: bool) -> None:
            """Put the network (and, per step, its input) in channels-last 3-D layout."""
            self.channels_last = enabled
            self.network.to(memory_format=torch.channels_last_3d if enabled else torch.contiguous_format)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.network(x)

        # -- training --
        def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
            image = batch["image"]
            # batch-norm statistics move and dropout draws in the forward pass: kept, so that a
            # skipped batch, or a step cut short by Ctrl-C, leaves no trace
            self._step_start = _StepStart(int(self.global_step), [b.detach().clone() for b in self.network.buffers()],
                                          _rng_state())
            if self.channels_last:
                image = image.contiguous(memory_format=torch.channels_last_3d)
            logits = self.network(image)
            # uint8 from the loader (8× fewer bytes to copy), widened on the device; the chunk's
            # first/last ignore_frames_loss frames are ignore (4) already
            target = batch["label"].long()
            if tuple(logits.shape[2:]) != tuple(target.shape[1:]):
                target = _centre_crop(target, logits.shape[2:])
            loss = self.criterion(logits.float(), target)
            if not self._finite_everywhere(loss):
                return self._skip(f"the loss is {float(loss.detach())}")
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                     batch_size=target.shape[0])
            return loss

        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            def closure() -> Any:
                result = optimizer_closure()  # forward and backward: a Ctrl-C here is rewound
                if result is not None:  # a finite loss (a skipped batch made no backward pass)
                    if self._finite_everywhere(self._gradients_finite()):
                        self.nonfinite_in_a_row = 0
                    else:  # a finite loss can still give a NaN gradient (bf16): no update either
                        for parameter in self.network.parameters():
                            parameter.grad = None
                        self._skip("a gradient is not finite")
                self.ctrl_c.hold()  # the update and the step's bookkeeping: held to on_train_batch_end
                return result

            super().optimizer_step(epoch, batch_idx, optimizer, closure)

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            # the step is counted, its scheduler step taken and its checkpoint (if due) written:
            # a Ctrl-C held since its update stops the run here
            self.ctrl_c.release()

        def _finite_everywhere(self, loss: torch.Tensor) -> bool:
            """Whether the loss is finite on every rank (all ranks then skip or step together)."""
            finite = torch.isfinite(loss.detach()).to(torch.float32)
            if self.trainer.world_size > 1:
                finite = self.trainer.strategy.reduce(finite, reduce_op="sum") / self.trainer.world_size
            return bool(finite >= 1.0)

        def _gradients_finite(self) -> torch.Tensor:
            """1.0 where every gradient of the network is finite, else NaN: a stand-in loss for
            :meth:`_finite_everywhere` (one device sync, not one per parameter)."""
            grads = [torch.isfinite(p.grad).all() for p in self.network.parameters() if p.grad is not None]
            if not grads:
                return torch.ones((), device=self.device)
            finite = torch.stack(grads).all()
            return torch.where(finite, 1.0, float("nan")).to(device=self.device, dtype=torch.float32)

        def _skip(self, reason: str) -> None:
            """A non-finite loss or gradient (a diverging step, an overflow): the step makes no
            update (no backward, or its gradients dropped; Adam skips parameters without
            gradients; batch-norm statistics restored), so one bad batch cannot poison the
            weights. The step still counts, as Lightning counts it. Too many in a row stop the
            run, whose last checkpoint stays usable."""
            self._restore_buffers()
            self.skipped += 1
            self.nonfinite_in_a_row += 1
            step = self.global_step + 1
            log.warning("step %d: %s; no update (%d such steps in a row, %d in all)", step, reason,
                        self.nonfinite_in_a_row, self.skipped)
            if self.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise CasparksError(
                    f"training diverged: the loss or its gradient was not finite in steps "
                    f"{step - self.nonfinite_in_a_row + 1}-{step}",
                    fix="lower loss.lr_start, or train in run.precision 32, or resume from an earlier checkpoint "
                    "(run.load_epoch)",
                )
            return None

        def _restore_buffers(self) -> None:
            with torch.no_grad():
                for buffer, before in zip(self.network.buffers(), self._step_start.buffers):
                    buffer.copy_(before)

        def rewind_unfinished_step(self) -> bool:
            """Undo what a step stopped before its update (Ctrl-C, a SIGTERM) did: its forward pass
            moved the batch-norm statistics and drew random numbers, so a checkpoint saved now held
            state of no completed step (54 buffers of a resumed fine-tuning differed from an
            uninterrupted run's; ``num_batches_tracked`` one ahead). Whether it rewound."""
            start = self._step_start
            if start is None or start.step != int(self.global_step):  # no step begun, or its update done
                return False
            self._restore_buffers()
            _set_rng_state(start.rng)
            self._step_start = None
            return True

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            sampler = _DrawSampler(len(self.train_data), config.run.seed, self.global_rank, self.trainer.world_size,
                                   start=self.draws_start)
            workers = config.data.num_workers
            from .data import collate_chunks

            return torch.utils.data.DataLoader(
                _Draws(self.train_data), batch_size=config.data.batch_size, sampler=sampler, collate_fn=collate_chunks,
                num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                generator=torch.Generator().manual_seed(config.run.seed),
            )

        def configure_optimizers(self) -> Any:
            loss = config.loss
            optimizer = torch.optim.Adam(self.network.parameters(), lr=loss.lr_start, weight_decay=loss.weight_decay)
            if loss.scheduler == "none":
                return optimizer
            if loss.scheduler == "step":
                scheduler = torch.optim.lr_scheduler.StepLR(optimizer, loss.scheduler_step, loss.scheduler_gamma)
                return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
            if loss.scheduler == "cosine":
                scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.run.train_epochs)
                return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=loss.scheduler_gamma)
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": scheduler, "interval": "step", "frequency": config.run.test_every,
                "monitor": "val/loss", "strict": False}}

        # -- validation on whole movies --
        def val_dataloader(self) -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(
                list(range(len(self.val_movies))), batch_size=None,
                generator=torch.Generator().manual_seed(0),
            )

        def on_validation_epoch_start(self) -> None:
            self._val_results = []

        def validation_step(self, index: Any, batch_idx: int) -> None:
            item = self.val_movies[int(index)]
            self._val_results.append(_evaluate_movie(self.network, item, config, self.criterion, self.device,
                                                     channels_last=self.channels_last))

        def on_validation_epoch_end(self) -> None:
            if not self._val_results:
                return
            counts = sum((e.counts for e, _ in self._val_results), start=_zero_counts())
            losses = [l for _, l in self._val_results if not math.isnan(l)]
            metrics = _summary(counts, float(np.mean(losses)) if losses else float("nan"))
            self.last_metrics = metrics
            self.last_validated_step = int(self.global_step)
            # the plateau scheduler monitors val/loss; the loggers get every score at the optimiser
            # step (Lightning's own epoch-level logging would stamp them one step earlier)
            self.log("val/loss", metrics["loss"], on_step=False, on_epoch=True, batch_size=1, logger=False)
            for logger in self.loggers:
                logger.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=int(self.global_step))
            if self.trainer.is_global_zero and self.run_dir is not None:
                _append_metrics(self.run_dir / METRICS_CSV, int(self.global_step), metrics)
                log.info("step %d validation: loss %.4g, F1 (reference) %s", self.global_step, metrics["loss"],
                         ", ".join(f"{CLASS_NAMES[c]} {metrics[f'{CLASS_NAMES[c]}/f1_reference']:.3f}"
                                   for c in EVENT_CLASSES))

        # -- checkpoints: self-description and random states --
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            from .models import run_card

            checkpoint[CHECKPOINT_KEY] = {
                **self.metadata,
                "step": int(self.global_step),
                "draws": int(self.global_step) * int(config.data.batch_size),
                "skipped": self.skipped,
                "rng": _rng_state(),
                "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                # the run's card travels with the checkpoint (empty for a run without one): one
                # copied out of the run detects alike
                "card": run_card(self.run_dir) if self.run_dir is not None else {},
            }
            loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
            _drop_unfinished_batch(loop)
            if self.val_movies and _saved_before_validation(loop, config.run.test_every):
                # the step's validation runs after this save: a resumed run must run it (see the function)
                progress = loop[_VAL_PROGRESS]
                loop[_VAL_PROGRESS] = _not_validated(progress, progress["total"]["ready"])

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
            _drop_unfinished_batch(loop)  # a checkpoint saved before the fix
            _set_loggers_step(loop, config.run.test_every)
            _forget_elapsed_time(checkpoint)
            meta = checkpoint.get(CHECKPOINT_KEY, {})
            self.draws_start = int(meta.get("draws", 0))
            self.skipped = int(meta.get("skipped", 0))
            self.pending_rng = meta.get("rng")

        def on_fit_start(self) -> None:
            self.criterion.to(self.device)

        def on_train_start(self) -> None:
            # the last moment before the first step: nothing consumes random numbers after this
            if self.pending_rng is not None:
                _set_rng_state(self.pending_rng)
                self.pending_rng = None
            log.info("rank %d of %d: training on %s from step %d", self.global_rank, self.trainer.world_size,
                     self.device, self.global_step)

    return SparksModule()


class _HeldCtrlC:
    """Holds a Ctrl-C (SIGINT) that lands between a step's update and the end of its bookkeeping.

    Python raises KeyboardInterrupt wherever the signal lands. Inside Adam's update it left some
    weights and moments updated and others not; just after it, the update done but the step not
    yet counted, so the checkpoint saved on the way out was labelled with the step before and
    the resumed run trained the step twice. Held, the Ctrl-C stops the run once the step is
    complete (tens of ms later). A second Ctrl-C while one is held is not held. Only the main
    thread can set a signal handler; elsewhere (a GUI's worker thread) nothing is held.
    """

    def __init__(self) -> None:
        self._holding = False
        self._previous: Any = None
        self._pending = False

    def hold(self) -> None:
        if self._holding:
            return
        try:
            self._previous = signal.signal(signal.SIGINT, self._note)
        except ValueError:  # not the main thread
            return
        self._holding, self._pending = True, False

    def _note(self, signum: int, frame: Any) -> None:
        if self._pending:
            raise KeyboardInterrupt
        self._pending = True

    def release(self, deliver: bool = True) -> None:
        """Put the previous handler back; a held Ctrl-C then reaches it, as if it came now."""
        if not self._holding:
            return
        # None: a handler set outside Python, which Python cannot put back; the default's stands in
        signal.signal(signal.SIGINT, signal.default_int_handler if self._previous is None else self._previous)
        self._holding, self._previous = False, None
        pending, self._pending = self._pending, False
        if pending and deliver:
            signal.raise_signal(signal.SIGINT)


@dataclass
class _StepStart:
    """The state a training step starts from: the step counter, the network's buffers (batch-norm
    statistics) and the random states, as the previous step left them."""

    step: int
    buffers: list[torch.Tensor]
    rng: dict[str, Any]


def _zero_counts() -> Any:
    from .metrics import EventCounts

    return EventCounts()


def _centre_crop(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    slices = [slice(None)]
    for size, want in zip(target.shape[1:], shape):
        lo = (size - want) // 2
        slices.append(slice(lo, lo + want))
    return target[tuple(slices)]


def _callbacks(config: TrainConfig, ckpt_dir: Path) -> list[Any]:
    pl = _lightning()
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    class StepCheckpoint(ModelCheckpoint):
        """ModelCheckpoint that also saves the final step (and last.ckpt) when training ends."""

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
                self.save_now(trainer)
            else:
                super().on_train_end(trainer, pl_module)

        def save_now(self, trainer: Any) -> None:
            """Save the step (and last.ckpt) unless it is saved already."""
            if self._last_global_step_saved != trainer.global_step:
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                self._save_last_checkpoint(trainer, candidates)

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            # Ctrl-C kept none of the steps since the last save (all of them before the first
            # run.save_every, 45 min on a CPU): save them, as run.max_minutes does. Between steps
            # the weights are those of trainer.global_step. One process only: DDP ranks would
            # have to agree to save.
            stopped = isinstance(exception, KeyboardInterrupt) or trainer.received_sigterm  # a scheduler's SIGTERM
            if not (stopped and trainer.world_size == 1 and trainer.global_step > 0):
                return
            # stopped inside a step (before its update): its batch-norm statistics and random draws go
            pl_module.rewind_unfinished_step()
            # stopped while validating the step: its checkpoint says so, and a resumed run validates
            # every movie of the step again (its row of metrics.csv was not written)
            cut_validation = trainer.validating and pl_module.last_validated_step != trainer.global_step
            if cut_validation:
                _validate_again_on_resume(trainer.fit_loop.epoch_loop.val_loop.batch_progress)
            # otherwise a step saved already (by this run, or the one a resumed run stopped before
            # its first new step started from) is never written again
            if cut_validation or trainer.global_step not in list_checkpoints(ckpt_dir.parent):
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                self._save_last_checkpoint(trainer, candidates)

    class TimeLimit(pl.Callback):
        """run.max_minutes: stop after the step that reaches it, with that step saved at once.
        Lightning's own limit (Trainer max_time) forced a validation of that step (one an
        uninterrupted run lacks, its row in metrics.csv) and saved it only after it, so a kill
        while validating lost every step since the last save."""

        def __init__(self, minutes: float) -> None:
            self.seconds, self.start = 60 * minutes, time.monotonic()

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.start = time.monotonic()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if not trainer.strategy.broadcast(time.monotonic() - self.start >= self.seconds):
                return
            trainer.should_stop = True
            if trainer.global_step % config.run.test_every:  # Lightning validates a step that stops: not due here
                trainer.limit_val_batches = 0
            checkpoint.save_now(trainer)  # before a validation that is due (run again on resume)

    class StepLog(pl.Callback):
        """Training loss in the text log every print_every steps."""

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            step = trainer.global_step
            if outputs is None:  # a skipped batch (non-finite loss): no step was taken
                return
            if step % config.run.print_every == 0 and trainer.is_global_zero:
                loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
                log.info("step %d/%d: loss %.5g", step, config.run.train_epochs, float(loss))

    class ProgressBar(TQDMProgressBar):
        """Lightning's bar, closed when a run fails, so a dead run leaves no half-drawn bar behind."""

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar", "_predict_progress_bar"):
                bar = getattr(self, name, None)
                if bar is not None:
                    bar.close()

    checkpoint = StepCheckpoint(
        dirpath=ckpt_dir, filename="step_{step:07d}", auto_insert_metric_name=False,
        every_n_train_steps=config.run.save_every, save_top_k=-1, save_last=True,
        save_on_train_epoch_end=False,
        # a resumed run replaces last.ckpt (and a step it saves again) instead of writing
        # last-v1.ckpt beside it, which left last.ckpt at the step the run was stopped
        enable_version_counter=False,
    )
    limit = [TimeLimit(config.run.max_minutes)] if config.run.max_minutes else []
    bar = [ProgressBar(refresh_rate=config.run.print_every)] if _draws_bar() else []
    return [checkpoint, *limit, *bar, StepLog()]


def _draws_bar() -> bool:
    """Whether Lightning's bar is drawn: on a terminal only (it writes to stdout, and a job's log
    or a captured output got its carriage returns and cursor moves; train.log has the steps)."""
    return sys.stdout.isatty()


#: where a checkpoint's fit loop keeps Lightning's training-batch and validation progress
_BATCH_PROGRESS = "epoch_loop.batch_progress"
_VAL_PROGRESS = "epoch_loop.val_loop.batch_progress"


def _total(fit_loop: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The ``total`` counters (ready, started, processed, completed) of a progress in a
    checkpoint's fit-loop state; empty where it has none."""
    return ((fit_loop.get(key) or {}).get("total")) or {}


def _at_batch_end(total: Mapping[str, Any]) -> bool:
    """Counters of a batch that has run and not yet completed (Lightning's on_train_batch_end)."""
    return bool(total) and total["ready"] == total["started"] == total["processed"] == total["completed"] + 1


def _mid_validation(total: Mapping[str, Any]) -> bool:
    """Validation counters of a validation stopped in a movie (Lightning's own test for one to
    finish on restart)."""
    return bool(total) and total["started"] == total["ready"] == total["processed"] + 1 == total["completed"] + 1


def _validate_again_on_resume(progress: Any) -> None:
    """Set Lightning's live validation progress to "stopped in its first movie" (:func:`_not_validated`).

    Saved as they were, a validation stopped after some movies (a SIGTERM stops between movies)
    was skipped on resume, or ran the movies not done yet counted from the start of the list (the
    first movie scored again): metrics.csv lost the step's row or got one of the wrong movies.
    """
    earlier = progress.total.ready - progress.current.ready  # movies of the epoch's earlier validations
    progress.load_state_dict(_not_validated(progress.state_dict(), earlier))


def _not_validated(progress: Mapping[str, Any], earlier: int) -> dict[str, Any]:
    """Lightning's validation progress (a state dict) as "stopped in its first movie", after
    ``earlier`` movies of earlier validations: the state from which a resumed run validates
    every movie of the step again."""
    total = {**progress["total"], "ready": earlier + 1, "started": earlier + 1, "processed": earlier,
             "completed": earlier}
    current = {**progress["current"], "ready": 1, "started": 1, "processed": 0, "completed": 0}
    return {**progress, "total": total, "current": current, "is_last_batch": False}


def _saved_before_validation(fit_loop: Mapping[str, Any], test_every: int) -> bool:
    """Whether a checkpoint (its fit loop's state dict) is saved after a training step that
    validates and before that validation: where ModelCheckpoint saves every run.save_every steps
    (Lightning's on_train_batch_end), and so the last step's too.

    Saved as it was, its validation counted as done on resume and was skipped: the plateau
    scheduler, fed val/loss after each validation, never got that step's (the resumed run's
    scheduler one validation behind an uninterrupted run's: another best, another step at which
    the learning rate falls), and a crash during that validation left metrics.csv without its row.
    """
    batches = _total(fit_loop, _BATCH_PROGRESS)
    if _VAL_PROGRESS not in fit_loop or not _at_batch_end(batches):
        return False
    return batches["ready"] > 0 and batches["ready"] % test_every == 0


def _forget_elapsed_time(checkpoint: dict[str, Any]) -> None:
    """Drop the training time Lightning's Timer (run.max_minutes) saved in a checkpoint (in
    place): run.max_minutes is each job's limit. Restored, it counted the whole run's time, so a
    job resumed by a scheduler with the run's own command took no step at all (and validated its
    last step again)."""
    for key in list((checkpoint.get("callbacks") or {})):
        if key == "Timer" or str(key).startswith("Timer{"):
            del checkpoint["callbacks"][key]


def _drop_unfinished_batch(fit_loop: dict[str, Any]) -> None:
    """Count a training batch stopped before its update (Ctrl-C in its forward pass) as never
    started, in a checkpoint's fit-loop state (in place).

    Lightning saves it as started (``ready`` one ahead of ``completed``) and restores that
    ``total`` as it is, and validation is due when ``total.ready`` is a multiple of
    run.test_every: a run stopped in step 15 and resumed validated at 29 and 44, not 30 and 45.
    """
    batches = fit_loop.get(_BATCH_PROGRESS) or {}
    total = batches.get("total") or {}
    if not total or not total["ready"] == total["started"] == total["processed"] + 1 == total["completed"] + 1:
        return
    optimizer = ((fit_loop.get("epoch_loop.automatic_optimization.optim_progress") or {}).get("optimizer") or {})
    for progress in (batches, optimizer.get("step") or {}):
        for part in ("total", "current"):
            if part in progress:
                done = progress[part]["completed"]
                progress[part] = {key: done for key in progress[part]}


def _set_loggers_step(fit_loop: dict[str, Any], test_every: int) -> None:
    """Set the step the loggers count (``_batches_that_stepped``, the step of train/loss in
    TensorBoard) in a checkpoint's fit-loop state, in place, so that it is the uninterrupted
    run's once Lightning has restarted: its restart adds one unless the checkpoint was saved
    between steps, and one more for the iteration that first runs, or skips, the saved step's
    validation. A run resumed from a step that validates logged one step late for the rest
    of the run."""
    total = _total(fit_loop, _BATCH_PROGRESS)
    state = fit_loop.get("epoch_loop.state_dict")
    if not total or state is None:
        return
    steps = total["ready"]
    between = total["ready"] == total["started"] == total["processed"] == total["completed"]
    if steps <= 0 or not (between or _at_batch_end(total)):
        return
    replayed = steps % test_every == 0 and (between or _mid_validation(_total(fit_loop, _VAL_PROGRESS)))
    state["_batches_that_stepped"] = max(steps - (0 if between else 1) - int(replayed), 0)


def _validates_on_resume(checkpoint: Mapping[str, Any], test_every: int) -> bool:
    """Whether a run resumed from ``checkpoint`` validates the checkpoint's step first (saved
    before, or during, that validation), so that its earlier row of metrics.csv goes."""
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    batches = int(_total(loop, _BATCH_PROGRESS).get("ready", 0))
    return _mid_validation(_total(loop, _VAL_PROGRESS)) and batches > 0 and batches % test_every == 0


def _atomic_checkpoint_io():
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Write each checkpoint to a temporary file and rename it: a crash never leaves a cut file."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.part")
            try:
                super().save_checkpoint(checkpoint, tmp, storage_options)
                os.replace(tmp, path)
            except OSError as exc:  # a full disk: fsspec names its own /tmp file, and the cut .part stayed
                tmp.unlink(missing_ok=True)
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc

    return AtomicCheckpointIO()


# ----------------------------------------------------------------------------------------------
# devices


def _accelerator(config: TrainConfig) -> tuple[str, str]:
    """(Lightning accelerator, precision) for run.device and run.precision."""
    run = config.run
    cuda = torch.cuda.is_available()
    if run.device == "cuda" and not cuda:
        raise CasparksError(
            "run.device is cuda but PyTorch sees no CUDA GPU",
            fix="set run.device to auto or cpu, or install a CUDA build of PyTorch",
        )
    accelerator = "gpu" if run.device == "cuda" or (run.device == "auto" and cuda) else "cpu"
    device_type = "cuda" if accelerator == "gpu" else "cpu"
    precision = run.precision
    if precision == "auto":
        without_bf16 = "16-mixed" if accelerator == "gpu" else "32"
        precision = "bf16-mixed" if native_bf16(device_type) else without_bf16
    elif precision == "16-mixed" and accelerator == "cpu":
        raise CasparksError("run.precision 16-mixed needs a GPU", fix="use auto or 32 on the CPU")
    elif precision == "bf16-mixed" and not native_bf16(device_type):
        raise CasparksError(f"run.precision bf16-mixed: {emulated_bf16_message(device_type)}",
                            fix="set run.precision to auto (it picks bf16 only where it is native) or 32")
    return accelerator, precision


def _strategy(config: TrainConfig, accelerator: str) -> Any:
    if config.run.devices * config.run.num_nodes == 1:
        return "auto"
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else "nccl")


def _global_rank(config: TrainConfig) -> int:
    """This process's rank when launched as a DDP child (0 for the launching process)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    return node * config.run.devices + int(os.environ.get("LOCAL_RANK", "0"))


def _loggers(config: TrainConfig, run_dir: Path) -> list[Any]:
    from pytorch_lightning.loggers import TensorBoardLogger

    loggers: list[Any] = []
    if config.run.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name=LOG_DIR, version="", default_hp_metric=False))
    if config.run.wandb_enable:
        _require_wandb()
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(project=config.run.wandb_project, name=config.run.run_name, save_dir=str(run_dir),
                                   config=config.to_dict()))
    return loggers


def _require_wandb() -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise CasparksError(
            "run.wandb_enable is true but Weights & Biases (wandb) is not installed",
            fix="pip install casparks[wandb], or set run.wandb_enable=false",
        ) from None


@contextlib.contextmanager
def _file_log(path: Path | None) -> Iterator[None]:
    """Also write casparks' and Lightning's log records to ``path`` during the run."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    # Lightning advertises its cloud products in an INFO record ("💡 Tip: … try installing
    # litlogger"): not a record of this run
    handler.addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))
    loggers = [logging.getLogger("casparks"), logging.getLogger("pytorch_lightning"),
               logging.getLogger("lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


# ----------------------------------------------------------------------------------------------
# the entry point


def _metadata(config: TrainConfig) -> dict[str, Any]:
    from . import __version__
    from .preprocess import Preprocessing

    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "casparks_version": __version__,
        "run_name": config.run.run_name,
        "config": config.to_dict(),
        "preprocessing": Preprocessing.from_data_config(config.data).to_dict(),
        "classes": {"names": {int(k): v for k, v in CODE_NAMES.items()}, "event_classes": list(EVENT_CLASSES),
                    "ignore": IGNORE},
        "torch_version": str(torch.__version__),
    }


def _check_run_dir(config: TrainConfig, run_dir: Path, source: Path | None) -> None:
    """A new run must not write into a folder that holds another run's checkpoints."""
    existing = list_checkpoints(run_dir) or (run_dir / CHECKPOINT_DIR / "last.ckpt").is_file()
    here = source is not None and source.resolve() == run_dir.resolve()
    if existing and here and config.run.training and config.run.load_mode == "finetune":
        raise CasparksError(
            f"fine-tuning run {config.run.run_name!r} into its own folder would mix two runs' checkpoints",
            path=run_dir, fix="set run.load_mode resume to continue it, or choose another run.run_name",
        )
    if existing and not here and config.run.training:
        raise CasparksError(
            f"run {config.run.run_name!r} already has checkpoints",
            path=run_dir, fix="choose another run.run_name, or set run.load_run_name to it and run.load_mode "
            "resume to continue it",
        )


def train(config: TrainConfig) -> TrainResult:
    """Train (or, with run.training false, only evaluate) as the configuration says.

    See the module docstring for the run folder, resuming and validation. Raises
    :class:`~casparks.errors.CasparksError` for every mistake in the input.
    """
    from .config import absolute_data_paths

    config = absolute_data_paths(config)  # as load_config makes them: the run's records name its folders
    pl = _lightning()
    from .data import ChunkDataset, load_movies, split_samples
    from .losses import resolve_class_weights
    from .nn import build_network

    run = config.run
    accelerator, precision = _accelerator(config)
    rank = _global_rank(config)
    writer = rank == 0
    run_dir = Path(run.output_dir) / run.run_name

    # every check that needs no data comes first, so that a mistake costs nothing
    if config.network.border_mode != "same":
        raise CasparksError(
            f"network.border_mode {config.network.border_mode} is not supported for training yet: "
            "validation predicts whole movies, which needs outputs the size of their input",
            fix="use network.border_mode: same",
        )
    source_dir = source_ckpt = checkpoint = None
    if run.load_run_name is not None:
        source_dir, source_ckpt = find_source(run)
        checkpoint = _torch_load(source_ckpt)
        if source_dir is None:
            source, fix = f"model {run.load_run_name}", ("use the model's network settings: casparks models "
                                                          f"{run.load_run_name} --config FILE.yaml writes them")
        else:
            source, fix = f"run {run.load_run_name}", "use the network settings of that run (its config.yaml), or train a new run"
        _check_compatible(build_network(config.network), _network_weights(checkpoint["state_dict"]), source,
                          source_ckpt, fix)
        if run.training and run.load_mode == "resume":
            _check_resume_config(config, checkpoint, source_ckpt)
            _check_schedule_kept(config, checkpoint, source_ckpt)
            _check_unfinished(config, checkpoint, source_ckpt)
    elif not run.training:
        raise CasparksError("run.training is false but there is nothing to evaluate",
                            fix="set run.load_run_name to the run to evaluate")
    elif run.load_epoch is not None:
        raise CasparksError(f"run.load_epoch is {run.load_epoch} but run.load_run_name is not set",
                            fix="set run.load_run_name to the run to load, or remove run.load_epoch")
    if writer:
        _check_run_dir(config, run_dir, source_dir)
    if run.wandb_enable:
        _require_wandb()
    train_samples, val_samples, test_samples = split_samples(config.data)
    if run.testing and not test_samples:
        raise CasparksError("run.testing is true but data.test_dir holds no movies", fix="set data.test_dir")
    if checkpoint is not None and run.training and run.load_mode == "resume":
        _check_resume_movies(config, checkpoint, source_ckpt, _movie_lists(train_samples, val_samples))
    with _claimed(run_dir, run.run_name) if writer else contextlib.nullcontext(False) as made, \
            _removed_if_unstarted(run_dir, made) as started:
        if writer:
            evaluating_in_place = (not run.training and source_dir is not None
                                   and source_dir.resolve() == run_dir.resolve())
            if not evaluating_in_place:  # evaluating a run keeps the config that trained it
                save_config(run_dir / "config.yaml", config)
            if run.training and run.load_mode == "finetune" and source_ckpt is not None:
                _inherit_card(run_dir, str(run.load_run_name), source_ckpt, config.data.resample_to)
            elif source_dir is not None and source_dir.resolve() != run_dir.resolve():
                _copy_card(source_dir, run_dir)  # the run resumed, or evaluated, under another name
            if run.training and not (source_dir is not None and source_dir.resolve() == run_dir.resolve()):
                _set_aside_old_metrics(run_dir)

        with _file_log(run_dir / LOG_DIR / "train.log"):
            pl.seed_everything(run.seed, workers=True, verbose=False)
            cache = run_dir / LABELS_CACHE
            scoring = _scoring_postprocess(run_dir)
            val_movies = [_EvalMovie(m, s, scoring)
                          for m, s in zip(load_movies(val_samples, config.data, cache), val_samples)]
            _warn_if_no_events(val_movies)
            metadata = {**_metadata(config), "movies": _movie_lists(train_samples, val_samples)}

            train_data = class_weights = None
            if run.training:
                train_movies = load_movies(train_samples, config.data, cache)
                if writer:
                    _add_trained_sampling(run_dir, train_movies, config.data.resample_to)
                train_data = ChunkDataset(train_movies, config.data, train=True, seed=run.seed)
                counts = train_data.class_counts()
                _refuse_nothing_to_learn(counts, config.data.data_dir)
                class_weights = resolve_class_weights(config.loss, counts)
                metadata["class_weights"] = None if class_weights is None else class_weights.tolist()
                log.info("training on %d movie(s) (%d chunks), validating on %d", len(train_movies), len(train_data),
                         len(val_movies))
            else:  # evaluated with the loss it was trained with
                class_weights = _trained_class_weights(config, checkpoint, train_samples, cache)
            module = _make_module(config, class_weights, train_data, val_movies, run_dir, metadata)
            module.use_channels_last(run.memory_format == "channels_last"
                                     or (run.memory_format == "auto" and accelerator == "cpu"))

            if checkpoint is not None:
                if run.load_mode == "finetune" or not run.training:
                    module.network.load_state_dict(_network_weights(checkpoint["state_dict"]))
                    log.info("loaded the weights of %s", source_ckpt)
                elif writer and source_dir.resolve() == run_dir.resolve():
                    kept = int(checkpoint[CHECKPOINT_KEY].get("step", 0))
                    _abandon_later_checkpoints(run_dir, kept)
                    if val_movies and _validates_on_resume(checkpoint, run.test_every):
                        kept -= 1  # the step is validated again: its row is written again
                    _truncate_metrics(run_dir / METRICS_CSV, kept)

            step = int(checkpoint[CHECKPOINT_KEY].get("step", 0)) if checkpoint and not run.training else 0
            last_ckpt: Path | None = source_ckpt if not run.training else None
            if run.training:
                if accelerator == "gpu":  # let cuDNN pick the fastest 3-D convolution for the fixed chunk shape
                    torch.backends.cudnn.benchmark = True
                trainer = pl.Trainer(
                    accelerator=accelerator, devices=run.devices, num_nodes=run.num_nodes,
                    strategy=_strategy(config, accelerator), precision=precision,
                    max_steps=run.train_epochs, max_epochs=-1,
                    val_check_interval=run.test_every, check_val_every_n_epoch=None,
                    limit_val_batches=1.0 if val_movies else 0, num_sanity_val_steps=0,
                    callbacks=_callbacks(config, run_dir / CHECKPOINT_DIR),
                    logger=_loggers(config, run_dir) or False, log_every_n_steps=run.print_every,
                    default_root_dir=str(run_dir), use_distributed_sampler=False,
                    plugins=[_atomic_checkpoint_io()], enable_model_summary=False,
                    enable_progress_bar=_draws_bar(),
                )
                resume = source_ckpt if run.load_mode == "resume" and source_ckpt is not None else None
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                    # a skipped step (non-finite loss) returns None on purpose; our own warning says so
                    warnings.filterwarnings("ignore", message=".*training_step. returned .None.*")
                    warnings.filterwarnings("ignore", message=".*infinite.*|.*inf.*")
                    # Lightning 2.6 with torch ≥ 2.10: a deprecation inside Lightning, not ours to fix
                    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
                    if resume:  # a resumed run's own checkpoints, not a sign of trouble (a user took it for one)
                        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
                        # a run moved to another folder resumes there: its step checkpoints go on, and
                        # Lightning's best-model bookkeeping, which casparks does not use, is all it drops
                        warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
                    try:
                        trainer.fit(module, ckpt_path=str(resume) if resume else None)
                    except BaseException as exc:
                        module.ctrl_c.release(deliver=False)  # an error between a step's update and its end
                        started.stepped = trainer.global_step > 0
                        if writer:
                            _log_stopped(run_dir, int(trainer.global_step), run, exc, trainer.received_sigterm)
                        # a SIGTERM to the process group kills the data workers first: their RuntimeError,
                        # or Lightning's SIGTERMException (a SystemExit), is the signal's; exit 143, not 130
                        if trainer.received_sigterm:
                            raise Terminated(signal.SIGTERM) from None
                        if isinstance(exc, SystemExit) and trainer.interrupted:  # Lightning ends a Ctrl-C in exit(1)
                            raise KeyboardInterrupt from None
                        raise
                step = int(trainer.global_step)
                started.stepped = True
                if writer:
                    if step < run.train_epochs:
                        # on the terminal too: a run cut by its time limit is not finished (a user took it for one)
                        log.warning("training stopped by run.max_minutes (%g min) at step %d of %d; resume it with the "
                                    "same command and %s", run.max_minutes, step, run.train_epochs, _resume_args(run))
                    else:
                        log.info("training finished at step %d", step)
                if val_movies and module.last_validated_step != step and writer and step >= run.train_epochs:
                    # a last validation of the final weights (run.train_epochs not a multiple of test_every)
                    try:
                        _validate_now(module, step, trainer.loggers)
                    except KeyboardInterrupt:  # the terminal said "interrupted" and nothing of how to go on
                        log.warning("stopped in the validation of the last step, %d: its weights are saved; the same "
                                    "command and %s validates them", step, _resume_args(run))
                        raise
                saved = list_checkpoints(run_dir)
                last_ckpt = saved[max(saved)] if saved else None
            else:
                if val_movies and writer:  # beside the training history, never in it
                    in_place = source_dir is not None and source_dir.resolve() == run_dir.resolve()
                    _validate_now(module, step, () if in_place else _loggers(config, run_dir), METRICS_EVAL_CSV)
                started.stepped = True  # an evaluation-only run's metrics are its results: kept

            test_metrics = None
            if run.testing and writer:
                test_metrics = _test(module.network, test_samples, config, run_dir, module.device)
        return TrainResult(run_dir, last_ckpt, step, module.last_metrics, test_metrics)


@dataclass
class _Start:
    """Whether a run took a step: a folder left before its first step holds nothing to resume."""

    stepped: bool = False


@contextlib.contextmanager
def _claimed(run_dir: Path, name: str) -> Iterator[bool]:
    """Make ``run_dir`` if needed and hold it while this run writes into it; yields whether this
    call made it (atomically: a folder another process made a moment before is not ours).

    Two runs of one ``run.run_name`` in one ``run.output_dir`` at once wrote one folder (each
    other's config.yaml, train.log, checkpoints), and an input error in the one that made it
    removed the folder the other was writing into: the second is refused. The hold is an
    advisory ``flock`` on the folder, released when the process ends, however it ends; where
    the file system has none (Windows, some network file systems) runs are not guarded.
    """
    try:
        run_dir.mkdir(parents=True)
        made = True
    except FileExistsError:
        if not run_dir.is_dir():
            raise
        made = False
    try:
        import fcntl
    except ImportError:  # Windows
        yield made
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CasparksError(f"run {name!r} is being written by another casparks train now", path=run_dir,
                            fix="choose another run.run_name, or wait until that run has ended") from None
    except OSError as exc:  # a file system without locks on folders: the run goes on unguarded
        log.debug("cannot lock %s (%s): concurrent runs of this name are not detected", run_dir, exc)
    try:
        yield made
    finally:
        os.close(fd)


@contextlib.contextmanager
def _removed_if_unstarted(run_dir: Path, made: bool) -> Iterator[_Start]:
    """Remove ``run_dir`` again if the run stops on an input error before its first step, and
    only if this run ``made`` it: an input error found while the movies are read (a label of the
    wrong shape, a movie without units; found after the folder is made, as their label cache
    lives in it) must not leave a half-made run behind. A folder that existed (a run being
    resumed) is kept, and so is one a crash or Ctrl-C stopped: its train.log says why."""
    start = _Start()
    try:
        yield start
    except CasparksError:
        if made and not start.stepped and not list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _abandon_later_checkpoints(run_dir: Path, step: int) -> None:
    """Move the checkpoints of steps after ``step`` (and last.ckpt, theirs) into
    ``checkpoints/abandoned-<step>/`` with the metrics.csv of that branch, when a run resumes from
    an earlier step: left in place, "the latest checkpoint" (the printed resume command,
    detection) was the abandoned branch's, and its metrics.csv rows were mixed with the live
    one's. Nothing is deleted."""
    folder = run_dir / CHECKPOINT_DIR
    later = [path for saved, path in list_checkpoints(run_dir).items() if saved > step]
    if not later:
        return
    aside = folder / f"abandoned-{step}"
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = folder / f"abandoned-{step}-{n}"
    aside.mkdir()
    for path in later + [p for p in (folder / "last.ckpt", run_dir / METRICS_CSV) if p.is_file()]:
        (shutil.copy2 if path.name == METRICS_CSV else shutil.move)(path, aside / path.name)
    log.warning("resuming from step %d: the later checkpoints (%s) of the run are moved to %s", step,
                ", ".join(p.name for p in later), aside)


def _log_stopped(run_dir: Path, step: int, run: Any, exc: BaseException, terminated: bool = False) -> None:
    """A line in train.log when a run ends before its last step: why, and how to go on
    (``terminated``: a SIGTERM came, whatever error it caused)."""
    interrupted = terminated or isinstance(exc, (KeyboardInterrupt, SystemExit))
    why = "interrupted (Ctrl-C or a signal)" if interrupted else f"by an error: {type(exc).__name__}: {exc}"
    saved = list_checkpoints(run_dir)
    if saved:
        kept = f"its last checkpoint is step {max(saved)}; resume it with the same command and {_resume_args(run)}"
    else:
        kept = "no checkpoint was saved (one is saved every run.save_every steps): the same command starts it over"
    # an interruption on the terminal too (how to go on); an error is reported there by the caller
    log.log(logging.WARNING if interrupted else logging.INFO, "training stopped at step %d of %d, %s: %s",
            step, run.train_epochs, why, kept)


def _resume_args(run: Any) -> str:
    """The --set options that turn a run's own command into the one that resumes it (whatever
    its config's run.load_mode, and from its latest checkpoint)."""
    args = f"--set run.load_run_name={run.run_name} --set run.load_mode=resume"
    return args + (" --set run.load_epoch=null" if run.load_epoch is not None else "")


def _validate_now(module: Any, step: int, loggers: Sequence[Any] = (), csv_name: str = METRICS_CSV) -> None:
    """Validate outside the trainer (after training, or for run.training false, whose row goes
    to ``csv_name`` metrics_eval.csv: appended to a run's metrics.csv it repeated a step of its
    training history, out of order)."""
    device = next(module.network.parameters()).device
    results = [_evaluate_movie(module.network, item, module.config, module.criterion, device,
                               channels_last=module.channels_last) for item in module.val_movies]
    counts = sum((e.counts for e, _ in results), start=_zero_counts())
    losses = [l for _, l in results if not math.isnan(l)]
    metrics = _summary(counts, float(np.mean(losses)) if losses else float("nan"))
    module.last_metrics = metrics
    module.last_validated_step = step
    if module.run_dir is not None:
        _append_metrics(module.run_dir / csv_name, step, metrics)
        log.info("step %d validation: loss %.4g, F1 (reference) %s", step, metrics["loss"],  # as during training
                 ", ".join(f"{CLASS_NAMES[c]} {metrics[f'{CLASS_NAMES[c]}/f1_reference']:.3f}" for c in EVENT_CLASSES))
    for logger in loggers:
        logger.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=step)
        logger.finalize("success")


def _test(network: torch.nn.Module, samples: Sequence[Any], config: TrainConfig, run_dir: Path, device: Any) -> dict[str, Any]:
    """Scores on data.test_dir, written to test_metrics.json."""
    from .data import load_movies
    from .evaluation import Evaluation
    from .io import write_json

    device = next(network.parameters()).device
    movies = load_movies(samples, config.data, run_dir / LABELS_CACHE)
    scoring = _scoring_postprocess(run_dir)
    results = [_evaluate_movie(network, _EvalMovie(m, s, scoring), config, None, device)[0]
               for m, s in zip(movies, samples)]
    evaluation = Evaluation(tuple(results))
    out = evaluation.to_dict()
    write_json(run_dir / TEST_METRICS_JSON, out, overwrite=True)
    log.info("test scores written to %s", run_dir / TEST_METRICS_JSON)
    return out

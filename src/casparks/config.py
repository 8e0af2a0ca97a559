"""The training configuration: one typed, validated, frozen object, saved with every run.

YAML files have four sections, ``run``, ``data``, ``loss`` and ``network``, whose keys are the
reference system's parameter names (Dotti et al. 2024) plus ours. An unknown key or a value of
the wrong type is an error that names the key. ``--set key=value`` overrides take either the
full name (``data.batch_size=8``) or the bare key when it is unique (``batch_size=8``); values are
parsed as YAML, so ``true``/``false``/``null``/``[1, 2]`` work and ``"no"`` is never true by
accident.

Sizes of tensors (``data_duration``, ``data_step``, ``ignore_frames_loss``) are in frames, as in
the reference, because they are network input sizes; every physical threshold is in µm or ms.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml

from .errors import CasparksError, yaml_error_line
from .paths import home_path

CONFIG_FORMAT_VERSION = 1


class _Loader(yaml.SafeLoader):
    """YAML with numbers written with a leading zero kept as the text typed: YAML 1.1 reads
    ``010`` as octal 8, so ``val_ids: [010]`` validated on movie 008 without a word."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "+-0":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:str", re.compile(r"^[-+]?0[0-9_]+$")))


def read_yaml(text: str) -> Any:
    """A config file's or a ``--set`` value's YAML (``010`` stays the text ``"010"``)."""
    return yaml.load(text, Loader=_Loader)


_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")
#: a number with an exponent that YAML 1.1 reads as text: ``9e-1`` (no dot), ``1.0e5`` (no sign)
_EXPONENT = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+")


def read_numbers_yaml(text: str) -> Any:
    """YAML of settings that hold no ids or names (post-processing, simulation parameters, model
    cards): a number written with a leading zero is the decimal number typed (``020`` is 20, not
    YAML 1.1's octal 16), and one with an exponent is a number (``9e-1`` is 0.9, not YAML 1.1's
    text, which the settings' checks refused while training configs took it)."""
    def decimal(value: Any) -> Any:
        if isinstance(value, str) and _LEADING_ZERO.fullmatch(value):
            return int(value.replace("_", ""))
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            return float(value.replace("_", ""))
        if isinstance(value, list):
            return [decimal(v) for v in value]
        if isinstance(value, dict):
            return {k: decimal(v) for k, v in value.items()}
        return value

    return decimal(read_yaml(text))


@dataclass(frozen=True)
class RunConfig:
    """What to run, where results go, and how often to save, validate and log."""

    run_name: str = "casparks"
    #: resume or fine-tune from this run (a name under output_dir, or a run folder path)
    load_run_name: str | None = None
    #: step of the checkpoint to load (None: the latest of load_run_name)
    load_epoch: int | None = None
    #: optimisation steps (the reference calls them epochs; they are iterations)
    train_epochs: int = 20000
    #: stop (with a checkpoint) after this many minutes even if train_epochs is not reached; None: no limit
    max_minutes: float | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: number of devices per node (GPUs; processes on the CPU) and nodes for data-parallel training
    devices: int = 1
    num_nodes: int = 1
    #: "auto": bf16 mixed precision where the device has bfloat16 natively (GPUs from Ampere on;
    #: CPUs with AVX-512 BF16 or AMX), else 16-mixed on GPUs and 32 on CPUs. bf16-mixed where
    #: bfloat16 is only emulated is refused: ~200x slower (casparks.hardware)
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = "auto"
    #: layout of activations: "channels_last" (channels-last 3-D) runs oneDNN's fast convolutions,
    #: 1.6× per training step on a CPU; "auto": channels_last on the CPU, contiguous on GPUs
    #: (not measured there yet)
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    save_every: int = 1000
    test_every: int = 1000
    print_every: int = 100
    training: bool = True
    #: evaluate on data.test_dir at the end
    testing: bool = False
    output_dir: str = "runs"
    tensorboard: bool = True
    wandb_enable: bool = False
    wandb_project: str = "casparks"
    #: with load_run_name: "resume" continues the run exactly (optimizer, scheduler, step, random
    #: state); "finetune" loads only the network weights and starts a new optimisation
    load_mode: Literal["resume", "finetune"] = "resume"


@dataclass(frozen=True)
class DataConfig:
    """Which movies, how they are cut into chunks, pre-processed and augmented."""

    #: data-set folders in the original layout (NN_video.tif, NN_class_label.tif, NN_event_label.tif)
    data_dir: tuple[str, ...] = ()
    #: validation: sample ids taken out of data_dir (e.g. ["05", "12"]) ...
    val_ids: tuple[str, ...] = ()
    #: ... or whole folders; validation must not be the test set
    val_dir: tuple[str, ...] = ()
    #: folders evaluated when run.testing is true (never used for validation)
    test_dir: tuple[str, ...] = ()
    #: "minimal" keeps two training movies and one validation movie (for quick checks)
    dataset_size: Literal["full", "minimal"] = "full"
    #: units for movies whose TIFFs carry none (null: the metadata must have them); a movie's own
    #: units win, with a warning naming it where they differ
    pixel_size_um: float | None = None
    frame_interval_ms: float | None = None
    #: [µm, ms]: train at this sampling; movies of other samplings are resampled to it exactly as
    #: detection resamples them (linear; labels nearest), so one model serves several
    #: microscopes and learns what interpolated movies look like. Detection then resamples new
    #: movies to it (null: every movie is used at its own sampling)
    resample_to: tuple[float, float] | None = None
    batch_size: int = 4
    num_workers: int = 0
    #: chunk length and stride in frames
    data_duration: int = 256
    data_step: int = 32
    data_smoothing: Literal["none", "2d", "3d"] = "none"
    smoothing_sigma_um: float = 0.2
    smoothing_sigma_ms: float = 6.8
    #: "percentile" (0.1th-99.9th percentile to 0-1) is robust to bright non-event structures
    norm_video: Literal["abs_max", "chunk", "movie", "percentile", "zscore", "none"] = "movie"
    remove_background: Literal["none", "average", "moving"] = "none"
    #: window of the moving-average background (ms)
    background_window_ms: float = 1000.0
    only_sparks: bool = False
    sparks_type: Literal["raw", "peaks"] = "raw"
    #: ignore shell added around annotated events (µm, ms); 0 disables it
    ignore_width_um: float = 0.2
    ignore_width_ms: float = 6.8
    #: augmentation (training only; never time reversal: kinetics are not symmetric)
    flip_x: bool = True
    flip_y: bool = True
    intensity_scale: tuple[float, float] = (0.8, 1.25)
    intensity_offset: float = 0.05
    noise_data_augmentation: bool = True
    #: temporal rescaling factor range (1.0, 1.0 disables it)
    time_rescale: tuple[float, float] = (0.9, 1.1)
    #: frames at each end of a chunk that the loss ignores
    ignore_frames_loss: int = 6
    #: [height, width] µm: train on a random crop of each chunk's frames (null: whole frames). The
    #: same voxels per step then buy more chunks or longer ones; frames smaller than the crop stay
    #: whole. Validation always sees whole frames
    crop_size_um: tuple[float, float] | None = None
    #: [background, sparks, waves, puffs]: where crops are centred (needs crop_size_um). Each
    #: training crop is centred, in y and x, on a voxel of a class drawn with these weights among
    #: the classes its chunk holds (MONAI's RandCropByLabelClasses rule); null: uniform position.
    #: Rare classes (puffs) and sparse lab annotations then reach the loss more often per step
    crop_class_ratios: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class LossConfig:
    """Loss and optimiser; every loss honours the ignore label (4) and padded voxels."""

    criterion: Literal["nll_loss", "focal_loss", "lovasz_softmax", "sum_losses"] = "sum_losses"
    #: class weights for nll/focal: "auto" = total/(4·count_c) from the training labels, "sqrt" =
    #: their square root (milder), "none", or four numbers (background, sparks, waves, puffs)
    class_weights: str | tuple[float, float, float, float] = "auto"
    gamma: float = 2.0
    #: sum_losses = w · focal + (1 − w) · lovasz
    w: float = 0.5
    lr_start: float = 1e-4
    weight_decay: float = 0.0
    scheduler: Literal["none", "step", "cosine", "plateau"] = "cosine"
    #: step scheduler: multiply the learning rate by scheduler_gamma every scheduler_step steps
    scheduler_step: int = 10000
    scheduler_gamma: float = 0.5


@dataclass(frozen=True)
class NetworkConfig:
    """The 3-D U-Net (built from MONAI blocks) or a user's own network."""

    #: "unet" or "package.module:Class", called as Class(config) (this NetworkConfig; see casparks.nn)
    nn_architecture: str = "unet"
    unet_steps: int = 4
    first_layer_channels: int = 16
    num_channels: int = 1
    num_classes: int = 4
    #: pool time only in the first n steps (null: every step), space in every step
    time_pooling_steps: int | None = None
    #: a strided convolution front end that shortens time before the U-Net (and restores it)
    temporal_reduction: bool = False
    temporal_reduction_factor: int = 2
    dilation: int = 1
    border_mode: Literal["same", "valid"] = "same"
    batch_normalization: Literal["batch", "instance", "none"] = "batch"
    #: Kaiming-normal initialisation of every 3-D convolution (else PyTorch's default)
    initialize_weights: bool = False
    attention: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``casparks train`` saves it as ``config.yaml``."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready dict (tuples become lists)."""
        return {"format_version": CONFIG_FORMAT_VERSION, **_plain(dataclasses.asdict(self))}

    def replace(self, **sections: Any) -> "TrainConfig":
        return dataclasses.replace(self, **sections)


SECTIONS: dict[str, type] = {"run": RunConfig, "data": DataConfig, "loss": LossConfig, "network": NetworkConfig}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# validation


class ConfigError(CasparksError, ValueError):
    """A configuration key or value is wrong (one line in the CLI, a ValueError for Python)."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}", fix="fix the value in the config or --set")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        if str(value) in [str(a) for a in allowed]:
            return next(a for a in allowed if str(a) == str(value))
        raise bad
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and args[-1] is Ellipsis:
            value = [value]  # a single folder for a list of folders
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value):  # 010 (kept as text): ten
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _section_from_dict(name: str, cls: type, values: Mapping[str, Any], base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            # the right key under another section (run.lr_start for loss.lr_start) was told the whole list
            elsewhere = [other for other, section in SECTIONS.items()
                         if other != name and key in {f.name for f in fields(section)}]
            raise ConfigError(
                f"unknown key {name}.{key}",
                fix=f"did you mean {name}.{close[0]}?" if close else f"did you mean {elsewhere[0]}.{key}?"
                if elsewhere else f"known keys: {', '.join(sorted(known))}",
            )
        changes[key] = _coerce(f"{name}.{key}", value, hints[key])
    return dataclasses.replace(base, **changes)


def config_from_dict(values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Build a validated config from nested dicts (as in YAML); missing keys keep ``base``'s values."""
    base = base or TrainConfig()
    values = dict(values or {})
    version = values.pop("format_version", CONFIG_FORMAT_VERSION)
    if version != CONFIG_FORMAT_VERSION:
        raise ConfigError(f"config format_version {version} is not supported (this casparks reads {CONFIG_FORMAT_VERSION})")
    sections = {}
    for name, section_values in values.items():
        if name not in SECTIONS:
            close = difflib.get_close_matches(name, SECTIONS, n=1)
            raise ConfigError(
                f"unknown section {name!r}",
                fix=f"did you mean {close[0]!r}?" if close else f"sections are {', '.join(SECTIONS)}",
            )
        if not isinstance(section_values, Mapping):
            raise ConfigError(f"section {name!r} must be a mapping of keys to values")
        sections[name] = _section_from_dict(name, SECTIONS[name], section_values, getattr(base, name))
    config = dataclasses.replace(base, **sections)
    validate(config)
    return config


def _qualify(key: str) -> str:
    """'batch_size' → 'data.batch_size' when unique; 'data.batch_size' stays."""
    if "." in key:
        return key
    owners = [name for name, cls in SECTIONS.items() if key in {f.name for f in fields(cls)}]
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if len(owners) > 1:
        raise ConfigError(f"key {key!r} is ambiguous", fix=f"write one of {', '.join(o + '.' + key for o in owners)}")
    every = [f"{n}.{f.name}" for n, cls in SECTIONS.items() for f in fields(cls)]
    close = difflib.get_close_matches(key, [k.split(".")[1] for k in every], n=1)
    raise ConfigError(f"unknown key {key!r}", fix=f"did you mean {close[0]!r}?" if close else
                      "the keys of each section are in README.md, 'Training' → 'The configuration' "
                      "(e.g. loss.lr_start, data.batch_size, run.train_epochs)")


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any] | list[tuple[str, Any]]) -> TrainConfig:
    """Apply ``key=value`` overrides; string values are parsed as YAML."""
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    nested: dict[str, dict[str, Any]] = {}
    for key, value in items:
        section, _, name = _qualify(key).partition(".")
        if isinstance(value, str):
            try:
                value = read_yaml(value) if value.strip() else ""
            except yaml.YAMLError:
                pass
        nested.setdefault(section, {})[name] = value
    return config_from_dict(nested, base=config)


def validate(config: TrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    run, data, loss, net = config.run, config.data, config.loss, config.network
    positive = {
        "run.train_epochs": run.train_epochs, "run.save_every": run.save_every, "run.test_every": run.test_every,
        "run.print_every": run.print_every, "run.devices": run.devices, "run.num_nodes": run.num_nodes,
        "data.batch_size": data.batch_size, "data.data_duration": data.data_duration,
        "data.data_step": data.data_step, "network.unet_steps": net.unet_steps,
        "network.first_layer_channels": net.first_layer_channels, "network.num_channels": net.num_channels,
        "network.dilation": net.dilation, "network.temporal_reduction_factor": net.temporal_reduction_factor,
        "loss.lr_start": loss.lr_start, "loss.scheduler_step": loss.scheduler_step,
        "loss.scheduler_gamma": loss.scheduler_gamma,  # the factor of the learning rate (0: lr 0; < 0: lr < 0)
        "data.background_window_ms": data.background_window_ms,
    }
    if run.max_minutes is not None:
        positive["run.max_minutes"] = run.max_minutes
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    non_negative = {
        "data.num_workers": data.num_workers, "data.ignore_frames_loss": data.ignore_frames_loss,
        "data.ignore_width_um": data.ignore_width_um, "data.ignore_width_ms": data.ignore_width_ms,
        "data.intensity_offset": data.intensity_offset, "data.smoothing_sigma_um": data.smoothing_sigma_um,
        "data.smoothing_sigma_ms": data.smoothing_sigma_ms, "loss.gamma": loss.gamma,
        "loss.weight_decay": loss.weight_decay, "network.dropout": net.dropout,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {value}")
    if loss.scheduler == "plateau" and not loss.scheduler_gamma < 1:  # PyTorch's ReduceLROnPlateau raised
        raise ConfigError(f"loss.scheduler_gamma must be below 1 under the plateau scheduler (the factor that lowers "
                          f"the learning rate), got {loss.scheduler_gamma}", fix="set it to e.g. 0.5")
    if not 0 <= loss.w <= 1:
        raise ConfigError(f"loss.w must lie in [0, 1], got {loss.w}")
    if not net.dropout < 1:  # PyTorch's traceback, at the network's making
        raise ConfigError(f"network.dropout must lie in [0, 1) (a probability of dropping a unit), got {net.dropout}",
                          fix="set it to e.g. 0.1, or 0 for none")
    if isinstance(loss.class_weights, str) and loss.class_weights not in ("auto", "sqrt", "none"):
        raise ConfigError(f"loss.class_weights must be 'auto', 'sqrt', 'none' or four numbers, got {loss.class_weights!r}")
    if 2 * data.ignore_frames_loss >= data.data_duration:
        raise ConfigError(
            f"data.ignore_frames_loss ({data.ignore_frames_loss}) leaves no frame of a "
            f"{data.data_duration}-frame chunk for the loss"
        )
    for key, (low, high) in (("data.intensity_scale", data.intensity_scale), ("data.time_rescale", data.time_rescale)):
        if not 0 < low <= high:
            raise ConfigError(f"{key} must be [low, high] with 0 < low <= high, got [{low}, {high}]")
    if net.time_pooling_steps is not None and not 0 <= net.time_pooling_steps <= net.unet_steps:
        raise ConfigError(f"network.time_pooling_steps must lie in 0..unet_steps ({net.unet_steps})")
    if data.pixel_size_um is not None and not data.pixel_size_um > 0:
        raise ConfigError("data.pixel_size_um must be positive")
    if data.frame_interval_ms is not None and not data.frame_interval_ms > 0:
        raise ConfigError("data.frame_interval_ms must be positive")
    if data.crop_size_um is not None and not all(v > 0 for v in data.crop_size_um):
        raise ConfigError(f"data.crop_size_um must be [height, width] in µm, both positive, got {list(data.crop_size_um)}")
    if data.crop_size_um is not None:  # the U-Net halves a crop unet_steps times (a 1-px crop raised NumPy's error)
        pixel = (data.resample_to or (data.pixel_size_um,))[0] or 0.1  # unknown: the finest sampling supported
        smallest = 2 ** net.unet_steps * pixel
        if min(data.crop_size_um) < smallest:
            raise ConfigError(f"data.crop_size_um {list(data.crop_size_um)} is under {2 ** net.unet_steps} pixels "
                              f"({smallest:g} µm at {pixel:g} µm) along an axis, which the network's "
                              f"{net.unet_steps} halvings need",
                              fix=f"crop at least {smallest:g} µm (12.8 × 25.6 µm is a usual crop), or crop_size_um: null")
    if data.crop_class_ratios is not None:
        if data.crop_size_um is None:
            raise ConfigError("data.crop_class_ratios needs data.crop_size_um (the crop it centres)",
                              fix="set data.crop_size_um, e.g. [12.8, 25.6], or crop_class_ratios: null")
        if any(v < 0 for v in data.crop_class_ratios) or not sum(data.crop_class_ratios) > 0:
            raise ConfigError(f"data.crop_class_ratios must be four weights >= 0 (background, sparks, waves, puffs), "
                              f"not all 0, got {list(data.crop_class_ratios)}")
    if data.resample_to is not None and not all(v > 0 for v in data.resample_to):
        raise ConfigError(f"data.resample_to must be [pixel size µm, frame interval ms], both positive, "
                          f"got {list(data.resample_to)}")
    overlap = set(map(_norm, data.val_dir)) & set(map(_norm, data.test_dir))
    if overlap:
        raise ConfigError(f"data.val_dir and data.test_dir share {sorted(overlap)[0]}", fix="validation must not be the test set")


def _norm(path: str) -> str:
    return str(home_path(path).resolve())


# ----------------------------------------------------------------------------------------------
# files


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | list[tuple[str, Any]] = ()) -> TrainConfig:
    """Read a YAML config (None: the defaults) and apply ``key=value`` overrides.

    Relative data folders are resolved against the config file's folder, so a config and its
    data can move together; those of ``overrides`` against the working directory. All are
    absolute in the result.
    """
    config = TrainConfig()
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError("is a folder, not a config file", path=path,
                              fix="give the path of a YAML config (casparks models NAME --config ft.yaml writes one)")
        if not path.is_file():
            raise ConfigError("config file not found", path=path, fix="give the path of a YAML config")
        try:
            values = read_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"is not valid YAML{yaml_error_line(exc)}", path=path, fix="fix the syntax") from None
        except UnicodeDecodeError:  # a movie or an image given for the config: it was a traceback
            raise ConfigError("is not a YAML config (not text: a movie or an image?)", path=path,
                              fix="give the training config (casparks models NAME --config ft.yaml writes one)") from None
        if not isinstance(values, Mapping):
            raise ConfigError("must hold the sections run, data, loss, network", path=path)
        try:
            config = config_from_dict(values)
        except ConfigError as exc:
            raise ConfigError(exc.what, path=path, fix=exc.fix) from None
        config = _resolve_data_paths(config, path.parent)
    config = apply_overrides(config, overrides) if overrides else config
    return absolute_data_paths(config)


def absolute_data_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with relative data folders (``--set`` values, or a config file's under a
    relative path) made absolute against the working directory: a run's config.yaml and
    checkpoints then name the folders it trained on wherever they are read from (a resume from
    another directory compared the run's ``sim`` with that directory's)."""
    return _resolve_data_paths(config, Path.cwd())


def _resolve_data_paths(config: TrainConfig, root: Path) -> TrainConfig:
    """Data folders made absolute against ``root``, and ``~`` expanded in them and in
    ``run.output_dir``: YAML values are no shell words, and ``~/trs`` was read as ``root/~/trs``
    (a runs folder named ``~`` was made, and the label cache looked for in the home folder)."""
    def resolve(folders: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(p if p.is_absolute() else (root / p)) for p in (home_path(f) for f in folders))

    data = dataclasses.replace(
        config.data,
        data_dir=resolve(config.data.data_dir),
        val_dir=resolve(config.data.val_dir),
        test_dir=resolve(config.data.test_dir),
    )
    run = dataclasses.replace(config.run, output_dir=str(home_path(config.run.output_dir)))
    return dataclasses.replace(config, data=data, run=run)


def save_config(path: str | Path, config: TrainConfig, overwrite: bool = True) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from .io import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return Path(path)

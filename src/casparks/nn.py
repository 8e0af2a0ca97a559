"""The segmentation network: a configurable 3-D U-Net built from MONAI blocks, or the user's own.

Tensors are ``(batch, channels, T, Y, X)``: time first, as in the movies. The network returns
logits ``(batch, num_classes, T', Y', X')``; the losses apply the softmax.

The U-Net (``nn_architecture: unet``) follows the reference (Dotti et al. 2024) and adds options:

* ``unet_steps`` pooling steps; level ``l`` has ``first_layer_channels · 2**l`` channels, from
  level 0 down to the bottleneck at level ``unet_steps``; two 3×3×3 convolutions per level, each
  followed by the normalisation (``batch_normalization``), dropout and ReLU (MONAI ``Convolution``).
* Max-pooling by 2 in Y and X at every step and in T only in the first ``time_pooling_steps``
  steps (None: every step). Upsampling is a transposed convolution (MONAI ``UpSample``,
  ``mode="deconv"``) whose kernel and stride equal that step's pooling; skips are concatenated
  (without gradients the first convolution of a level is applied to the skip and the upsampled
  tensor apart and summed instead: the same numbers, without the concatenated copy).
* ``attention``: the skip features of every level are gated by the upsampled decoder features
  (MONAI's ``AttentionBlock`` of the Attention U-Net). The gate has its own batch
  normalisation whatever ``batch_normalization`` says (MONAI's block is built that way).
* ``dilation`` of every 3×3×3 convolution (wider receptive field at the same cost).
* ``border_mode``: ``same`` pads every convolution, so the output has the input's size; any
  input size works: the input is padded (replicating its border) up to a multiple of
  :func:`input_multiple` and the output cropped back. Give inputs that are multiples to avoid
  the padding. ``valid`` does not pad: the output is smaller (:func:`output_shape`), skip
  connections are centre-cropped, and an input whose size does not pool evenly is an error that
  names the nearest valid sizes.
* ``temporal_reduction``: a front end, a convolution with kernel and stride
  ``(temporal_reduction_factor, 1, 1)``, shortens time before the U-Net; at the end a
  transposed convolution restores it, and a 3×3×3 convolution over those features
  concatenated with the input movie recovers frame-level timing.
* ``initialize_weights``: Kaiming-normal (fan-in, ReLU gain) weights and zero biases in every
  ``Conv3d`` and ``ConvTranspose3d`` (the reference's option did nothing for 3-D layers).
* A final 1×1×1 convolution to ``num_classes``.

With the reference settings (``unet_steps=6``, ``first_layer_channels=8``, no normalisation) the
network has 22,631,764 parameters, as the reference.

A user's network (``nn_architecture: "package.module:Class"``) is imported and called as
``Class(config)`` with the :class:`~casparks.config.NetworkConfig` (which carries
``num_channels`` and ``num_classes``). It must be a ``torch.nn.Module`` mapping
``(B, num_channels, T, Y, X)`` to logits ``(B, num_classes, T', Y', X')``. Optionally, the class
may define ``input_multiple``, the (t, y, x) multiples its input needs, as a class attribute
(an int or a 3-tuple; the form :mod:`casparks.inference` also reads from the network) or as a
static method of the config, and ``output_shape(config, input_shape) -> (T', Y', X')`` as a
static or class method. Without them any size is accepted and the output has the input's size.
"""

from __future__ import annotations

import copy
import importlib
import logging
import platform
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._monai import AttentionBlock, Convolution, UpSample
from .config import NetworkConfig
from .errors import CasparksError

log = logging.getLogger(__name__)

Shape3 = tuple[int, int, int]

__all__ = [
    "OneDnnConv3d",
    "UNet3D",
    "build_network",
    "count_parameters",
    "fold_batch_norm",
    "for_inference",
    "initialize_weights",
    "input_multiple",
    "output_shape",
]


# ----------------------------------------------------------------------------------------------
# public functions


def build_network(config: NetworkConfig) -> nn.Module:
    """Build the network that ``config`` describes (weights initialised, in training mode)."""
    if config.nn_architecture == "unet":
        return UNet3D(config)
    cls = _custom_class(config.nn_architecture)
    model = cls(config)
    if not isinstance(model, nn.Module):
        raise CasparksError(
            f"network {config.nn_architecture!r} built a {type(model).__name__}, not a torch.nn.Module",
            fix="the class must subclass torch.nn.Module",
        )
    if config.initialize_weights:
        initialize_weights(model)
    # what inference reads the input multiples from: a static input_multiple(config) needs the
    # config, which a user's network need not keep (its windows were then cut to any size)
    model.casparks_network_config = config
    return model


def input_multiple(config: NetworkConfig) -> Shape3:
    """(T, Y, X) multiples that an input must have for the pooling to divide evenly.

    In ``same`` mode other sizes are padded internally (so they work, at some cost); in
    ``valid`` mode see :func:`output_shape` for the sizes that work.
    """
    if config.nn_architecture != "unet":
        cls = _custom_class(config.nn_architecture)
        multiple = getattr(cls, "input_multiple", 1)
        if isinstance(multiple, property):  # a value of the network itself: inference reads it there
            multiple = 1
        if callable(multiple):
            multiple = multiple(config)
        if isinstance(multiple, int):
            return (multiple,) * 3
        return tuple(int(m) for m in multiple)  # type: ignore[return-value]
    t, y, x = 1, 1, 1
    for pt, py, px in _pool_factors(config):
        t, y, x = t * pt, y * py, x * px
    return (t * _reduction(config), y, x)


def output_shape(config: NetworkConfig, input_shape: Sequence[int]) -> Shape3:
    """Output (T', Y', X') for an input of (T, Y, X) frames and pixels.

    ``same`` mode: the input's shape. ``valid`` mode: smaller; raises CasparksError when the
    input does not pool evenly or is too small, naming the nearest valid sizes.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise CasparksError(f"input shape must be (T, Y, X), got {tuple(input_shape)}")
    if config.nn_architecture != "unet":
        cls = _custom_class(config.nn_architecture)
        if hasattr(cls, "output_shape"):
            return tuple(int(s) for s in cls.output_shape(config, shape))  # type: ignore[return-value]
        return shape  # type: ignore[return-value]
    if config.border_mode == "same":
        return shape  # type: ignore[return-value]
    out = tuple(_valid_size(config, axis, n) for axis, n in enumerate(shape))
    bad = [axis for axis, n in enumerate(out) if n is None]
    if bad:
        names = "TYX"
        sizes = ", ".join(
            f"{names[a]}={shape[a]} (nearest valid: {_nearest_valid(config, a, shape[a])})" for a in bad
        )
        raise CasparksError(
            f"input {shape} does not fit the valid-mode U-Net: {sizes}",
            fix="crop or pad the input to valid sizes, or use border_mode 'same'",
        )
    return out  # type: ignore[return-value]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def initialize_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal weights (fan-in, ReLU gain) and zero biases in every 3-D (transposed) conv."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """An inference copy of ``network``: each batch norm that directly follows a 3-D convolution
    is folded into that convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``).

    In eval mode a batch norm is a fixed per-channel affine map, so in float32 the outputs are
    unchanged (to rounding). Why: on the CPU the network runs ~20 % faster, and under bfloat16
    autocast its probabilities lie ~10× closer to float32's, because the normalisation no longer
    rescales a convolution output already rounded to bfloat16. The copy is for inference only
    (its state dict has no batch-norm entries); the original is not changed.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(network).eval()
    for sequence in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = [name for name, _ in sequence.named_children()]
        for before, after in zip(names, names[1:]):
            conv, norm = _last_conv(sequence, before), _first_batch_norm(sequence, after)
            if conv is None or norm is None:
                continue
            (conv_parent, conv_name), (norm_parent, norm_name) = conv, norm
            setattr(conv_parent, conv_name,
                    fuse_conv_bn_eval(getattr(conv_parent, conv_name), getattr(norm_parent, norm_name)))
            setattr(norm_parent, norm_name, nn.Identity())
    return folded


def for_inference(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` that only infers: :func:`fold_batch_norm`, every
    ``Conv3d`` an :class:`OneDnnConv3d`, every ``MaxPool3d`` a :class:`SliceMaxPool3d`, and in
    casparks' own U-Net every ReLU in place (each acts on a tensor nothing else reads).

    On this 2-core CPU one 192 × 64 × 512 window of sim-v1's network in bfloat16 takes ~1.1 s
    instead of ~1.6 s (benchmarks/results/detect.md). A user's network gets the folding and the
    convolutions, not the in-place ReLUs: one could overwrite a tensor its forward still needs.
    """
    copy_ = fold_batch_norm(network)
    for module in copy_.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = OneDnnConv3d  # same parameters and options, another forward
        elif type(module) is nn.MaxPool3d:
            module.__class__ = SliceMaxPool3d
    if isinstance(copy_, UNet3D):
        for module in copy_.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = True
    return copy_


class SliceMaxPool3d(nn.MaxPool3d):
    """A ``MaxPool3d`` whose windows tile the input (stride = kernel, no padding) taken, in CPU
    inference, as the element-wise maximum of strided slices, one axis after the other.

    PyTorch's channels-last bfloat16 max-pool kernel took 130-140 ms for the first pooling of a
    208 × 64 × 512 window of the default network on the 2-core CPU (0.9 s of a movie's 4.3 s of
    network time, under a profiler); the slices' maxima, 0.35 s less per movie (inference 4.56 →
    4.22 s, median of 6 alternating runs; float32 unchanged, benchmarks/results/detect.md).
    Maxima are exact, so the output is the same tensor (NaN propagates as in PyTorch's kernel),
    in the input's memory layout. Gradients, other devices and other pooling options run the
    plain ``MaxPool3d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = _triple(self.kernel_size)
        if not (x.device.type == "cpu" and x.ndim == 5 and not torch.is_grad_enabled()
                and _triple(self.stride) == kernel and _triple(self.padding) == (0, 0, 0)
                and _triple(self.dilation) == (1, 1, 1) and not self.ceil_mode and not self.return_indices
                and all(n >= k for n, k in zip(x.shape[2:], kernel))):
            return super().forward(x)
        for axis, k in zip((2, 3, 4), kernel):
            if k == 1:
                continue
            whole = x.narrow(axis, 0, x.shape[axis] // k * k)  # floor mode: a remainder is dropped
            pooled = None
            for offset in range(k):
                part = whole[(slice(None),) * axis + (slice(offset, None, k),)]
                pooled = part if pooled is None else torch.maximum(pooled, part)
            x = pooled
        return x


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3  # type: ignore[return-value]


class OneDnnConv3d(nn.Conv3d):
    """A ``Conv3d`` that runs oneDNN's convolution in float32 CPU inference, where PyTorch's own
    choice is its slow native kernel.

    For float32 CPU inputs of batch 1 whose batch × channels × frames × rows is below 20 480,
    PyTorch runs ``slow_conv3d`` instead of oneDNN: in the U-Net that is the first convolution
    (one input channel) and the deepest levels. There oneDNN was 3-4× faster on a 2-core AVX2
    CPU (the first convolution of a 208 × 64 × 512 window: 0.13 s against 0.47 s, measured
    while another job shared the CPU), and it keeps the channels-last layout of the other
    layers: the native kernel returns channel-first tensors, whose concatenation with
    channels-last skips is a slow strided copy. The result is the same convolution (to float32
    rounding). Anything else (gradients, autocast, other dtypes or devices, CPUs other than
    x86-64, padding modes other than zeros) runs the plain ``Conv3d``, and so does a layer whose
    oneDNN call once failed (a PyTorch build or CPU where it does not work).
    """

    onednn_failed = False

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # Conv3d.forward calls this with the layer's own weight; UNet3D's decoder with parts of it
        if self.onednn_failed or not _onednn_applies(self, x):
            return super()._conv_forward(x, weight, bias)
        try:
            return _onednn_conv3d(self, x, weight, bias)
        except RuntimeError as error:
            log.warning("oneDNN convolution failed (%s); using PyTorch's own from now on", str(error).splitlines()[0])
            self.onednn_failed = True
            return super()._conv_forward(x, weight, bias)


def _onednn_conv3d(conv: nn.Conv3d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.aten.mkldnn_convolution(x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)


def _onednn_applies(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    """Whether :class:`OneDnnConv3d` may call oneDNN directly for ``x``."""
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
        and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
        and not torch.is_grad_enabled() and not _cpu_autocast_enabled()
        and _X86_64 and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    )


#: oneDNN's direct call is measured on x86-64 only; on ARM CPUs its 3-D convolutions may fall
#: back to reference kernels, so there PyTorch keeps its own choice.
_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch < 2.4
        return torch.is_autocast_cpu_enabled()


def _last_conv(parent: nn.Module, name: str) -> tuple[nn.Module, str] | None:
    """(container, name) of the Conv3d that child ``name`` of ``parent`` ends with (itself, or its last child's)."""
    module = getattr(parent, name)
    if isinstance(module, nn.Conv3d):
        return parent, name
    if isinstance(module, nn.Sequential) and len(module):
        return _last_conv(module, [name for name, _ in module.named_children()][-1])
    return None


def _first_batch_norm(parent: nn.Module, name: str) -> tuple[nn.Module, str] | None:
    """(container, name) of the running-statistics BatchNorm3d that child ``name`` of ``parent`` starts with."""
    module = getattr(parent, name)
    if isinstance(module, nn.BatchNorm3d):
        return (parent, name) if module.track_running_stats and module.running_mean is not None else None
    if isinstance(module, nn.Sequential) and len(module):
        return _first_batch_norm(module, next(name for name, _ in module.named_children()))
    return None


# ----------------------------------------------------------------------------------------------
# the U-Net


class UNet3D(nn.Module):
    """Configurable 3-D U-Net over (T, Y, X); see the module docstring for the options."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        if config.unet_steps < 1 or config.first_layer_channels < 1 or config.dilation < 1:
            raise CasparksError("network.unet_steps, first_layer_channels and dilation must be positive")
        if config.border_mode not in ("same", "valid"):
            raise CasparksError(f"network.border_mode must be 'same' or 'valid', got {config.border_mode!r}")
        self.config = config
        steps = config.unet_steps
        channels = [config.first_layer_channels * 2**level for level in range(steps + 1)]
        pools = _pool_factors(config)
        r = _reduction(config)

        in_channels = config.num_channels
        if r > 1:
            self.reduce = _conv(config, in_channels, channels[0], kernel_size=(r, 1, 1), strides=(r, 1, 1))
            in_channels = channels[0]
        self.down = nn.ModuleList(
            [_double_conv(config, in_channels if level == 0 else channels[level - 1], channels[level])
             for level in range(steps)]
        )
        self.pools = nn.ModuleList([nn.MaxPool3d(kernel_size=p, stride=p) for p in pools])
        self.bottom = _double_conv(config, channels[steps - 1], channels[steps])
        self.ups = nn.ModuleList(
            [UpSample(3, channels[level + 1], channels[level], scale_factor=pools[level], mode="deconv")
             for level in range(steps)]
        )
        self.gates = (
            nn.ModuleList(
                [AttentionBlock(3, f_int=max(channels[level] // 2, 1), f_g=channels[level], f_l=channels[level],
                                dropout=config.dropout)
                 for level in range(steps)]
            )
            if config.attention
            else None
        )
        self.up_convs = nn.ModuleList(
            [_double_conv(config, 2 * channels[level], channels[level]) for level in range(steps)]
        )
        if r > 1:
            self.restore = nn.Sequential(
                UpSample(3, channels[0], channels[0], scale_factor=(r, 1, 1), mode="deconv"), nn.ReLU()
            )
            self.refine = _conv(config, channels[0] + config.num_channels, channels[0], kernel_size=3)
        self.head = Convolution(3, channels[0], config.num_classes, kernel_size=1, conv_only=True)
        if config.initialize_weights:
            initialize_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        config = self.config
        if x.ndim != 5 or x.shape[1] != config.num_channels:
            raise CasparksError(
                f"the network expects input (batch, {config.num_channels}, T, Y, X), got {tuple(x.shape)}"
            )
        crop = None
        if config.border_mode == "same":
            x, crop = _pad_to_multiple(x, input_multiple(config))
        else:
            output_shape(config, x.shape[2:])  # raises a clear error for sizes that do not fit
        movie = x
        if hasattr(self, "reduce"):
            x = self.reduce(x)
        skips = []
        for conv, pool in zip(self.down, self.pools):
            x = conv(x)
            skips.append(x)
            x = pool(x)
        x = self.bottom(x)
        for level in reversed(range(config.unet_steps)):
            x = self.ups[level](x)
            skip = _center_crop(skips.pop(), x.shape[2:])
            if self.gates is not None:
                skip = self.gates[level](g=x, x=skip)
            first, *rest = self.up_convs[level]
            if torch.is_grad_enabled() or not _joins_by_parts(first):
                x = first(torch.cat([skip, x], dim=1))
            else:
                # inference: a convolution of [skip, x] is the sum of convolutions of the skip and
                # of x with the matching halves of the weight, so the concatenated copy (436 MB at
                # full resolution in float32, 0.3-0.6 s per 208-frame window on a 2-core CPU) is
                # never made, and each part is freed as soon as it has been read
                conv, channels = first.conv, skip.shape[1]
                y = conv._conv_forward(skip, conv.weight[:, :channels], conv.bias)
                del skip
                y += conv._conv_forward(x, conv.weight[:, channels:], None)
                x = first.adn(y) if hasattr(first, "adn") else y
                del y
            for layer in rest:  # one by one: each input is freed once read
                x = layer(x)
        if hasattr(self, "restore"):
            x = self.restore(x)
            x = self.refine(torch.cat([_center_crop(movie, x.shape[2:]), x], dim=1))
        x = self.head(x)
        if crop is not None:
            x = x[(..., *crop)]
        return x


# ----------------------------------------------------------------------------------------------
# helpers


def _joins_by_parts(layer: nn.Module) -> bool:
    """Whether ``layer`` is a MONAI ``Convolution`` (a ``Conv3d``, then optionally its ``adn``)
    whose input concatenation can be convolved part by part."""
    conv = getattr(layer, "conv", None)
    return (isinstance(layer, Convolution) and type(conv) in (nn.Conv3d, OneDnnConv3d) and conv.groups == 1
            and conv.padding_mode == "zeros" and set(dict(layer.named_children())) <= {"conv", "adn"})


def _reduction(config: NetworkConfig) -> int:
    return config.temporal_reduction_factor if config.temporal_reduction else 1


def _time_pooling_steps(config: NetworkConfig) -> int:
    if config.time_pooling_steps is None:
        return config.unet_steps
    return max(0, min(config.time_pooling_steps, config.unet_steps))


def _pool_factors(config: NetworkConfig) -> list[Shape3]:
    """Pooling (T, Y, X) of each step, from the top."""
    tp = _time_pooling_steps(config)
    return [(2 if step < tp else 1, 2, 2) for step in range(config.unet_steps)]


def _norm(config: NetworkConfig):
    if config.batch_normalization == "none":
        return None
    if config.batch_normalization in ("batch", "instance"):
        return (config.batch_normalization, {"affine": True})
    raise CasparksError(
        f"network.batch_normalization must be 'batch', 'instance' or 'none', got {config.batch_normalization!r}"
    )


def _conv(config: NetworkConfig, in_channels: int, out_channels: int, kernel_size, strides=1) -> Convolution:
    """Convolution → normalisation → dropout → ReLU."""
    is_3x3 = kernel_size == 3
    dilation = config.dilation if is_3x3 else 1
    padding = dilation if (is_3x3 and config.border_mode == "same") else 0
    return Convolution(
        3, in_channels, out_channels, strides=strides, kernel_size=kernel_size, dilation=dilation, padding=padding,
        act="RELU", norm=_norm(config), dropout=config.dropout or None, adn_ordering="NDA",
    )


def _double_conv(config: NetworkConfig, in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        _conv(config, in_channels, out_channels, kernel_size=3),
        _conv(config, out_channels, out_channels, kernel_size=3),
    )


def _pad_to_multiple(x: torch.Tensor, multiple: Shape3) -> tuple[torch.Tensor, tuple[slice, ...] | None]:
    """Pad (T, Y, X) by replicating the border, centred, up to ``multiple``; return the crop back."""
    sizes = x.shape[2:]
    extra = [(-n) % m for n, m in zip(sizes, multiple)]
    if not any(extra):
        return x, None
    before = [e // 2 for e in extra]
    pad: list[int] = []
    for e, b in reversed(list(zip(extra, before))):  # F.pad lists the last axis first
        pad += [b, e - b]
    crop = tuple(slice(b, b + n) for b, n in zip(before, sizes))
    return F.pad(x, pad, mode="replicate"), crop


def _center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the trailing (T, Y, X) axes of ``x`` to ``size``, centred."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    starts = [(n - s) // 2 for n, s in zip(x.shape[2:], size)]
    return x[(..., *(slice(b, b + s) for b, s in zip(starts, size)))]


def _valid_size(config: NetworkConfig, axis: int, n: int) -> int | None:
    """Output size along ``axis`` (0=T) of the valid-mode U-Net, or None when ``n`` does not fit."""
    shrink = 4 * config.dilation  # two unpadded 3×3×3 convolutions
    r = _reduction(config) if axis == 0 else 1
    if n % r:
        return None
    n //= r
    pools = [p[axis] for p in _pool_factors(config)]
    for p in pools:
        n -= shrink
        if n <= 0 or n % p:
            return None
        n //= p
    n -= shrink
    if n <= 0:
        return None
    for p in reversed(pools):
        n = n * p - shrink
        if n <= 0:
            return None
    if _reduction(config) > 1:
        n = n * r - 2 * config.dilation  # the refining convolution (every axis)
        if n <= 0:
            return None
    return n


def _nearest_valid(config: NetworkConfig, axis: int, n: int) -> str:
    below = next((m for m in range(n - 1, 0, -1) if _valid_size(config, axis, m) is not None), None)
    above = next((m for m in range(n + 1, 10 * n + 100_000) if _valid_size(config, axis, m) is not None), None)
    return " or ".join(str(m) for m in (below, above) if m is not None) or "none"


def _custom_class(spec: str) -> type:
    """Import ``package.module:Class``; one-line CasparksError when that fails."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise CasparksError(
            f"network.nn_architecture {spec!r} is neither 'unet' nor 'package.module:Class'",
            fix="write 'unet' or the import path of your network class, e.g. 'mypackage.nets:MyNet'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CasparksError(
            f"network.nn_architecture {spec!r}: cannot import module {module_name!r} ({exc})",
            fix="install the package or add its folder to PYTHONPATH",
        ) from None
    cls = module
    for part in class_name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise CasparksError(
                f"network.nn_architecture {spec!r}: module {module_name!r} has no {class_name!r}",
                fix="check the class name after the colon",
            )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CasparksError(
            f"network.nn_architecture {spec!r} is not a torch.nn.Module class",
            fix="point to a class that subclasses torch.nn.Module and takes the NetworkConfig",
        )
    return cls

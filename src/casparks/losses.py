"""Training losses; every one skips the ignore label (4) exactly.

A loss built by :func:`build_loss` is called as ``loss(logits, target)``: ``logits`` are the
network's raw outputs ``(B, C, T, Y, X)``, ``target`` the class labels ``(B, T, Y, X)`` (int64;
``(B, 1, T, Y, X)`` is accepted too) with 0 background, 1 sparks, 2 waves, 3 puffs and
4 = ignore. It returns a scalar. When the logits are smaller than the target (``valid`` border
mode) the target is centre-cropped to them. Ignored voxels never contribute to the value nor
receive a gradient, and a batch with no labelled voxel gives a loss of 0 (not NaN). No loss
synchronises with the GPU (no ``.item()``, no boolean indexing). Class weights are buffers that
move with the module but are not saved in its ``state_dict`` (a checkpoint loads whatever the
weights of the new run).

Criteria (``LossConfig.criterion``), as in the reference (Dotti et al. 2024):

``nll_loss``
    Cross-entropy (NLL of the log-softmax) with class weights, averaged as PyTorch does:
    ``Σ w_y · CE / Σ w_y`` over the labelled voxels (the reference's ``nn.NLLLoss``).
``focal_loss``
    MONAI's ``FocalLoss`` (softmax, ``gamma``, class weights, ``ignore_index``), which averages
    over the labelled voxels: ``Σ w_y (1 − p_y)^γ (−log p_y) / N``. With ``gamma = 0`` and no
    class weights it equals ``nll_loss``; with weights it differs from ``nll_loss`` by the
    factor ``Σ w_y / N``, which is 1 on average with the "auto" weights. The reference's focal
    loss also averaged over voxels.
``lovasz_softmax``
    Lovász-softmax (Berman, Rannen Triki & Blaschko, CVPR 2018), the convex surrogate of the
    per-class Jaccard loss: for each class present among the labelled voxels of the batch, the
    errors ``|1[y = c] − p_c|`` sorted in decreasing order are weighted by the gradient of the
    Lovász extension; the loss is the mean over present classes, over the whole batch at once
    (not per movie), as in the reference. Ignored voxels get error 0 and are not foreground,
    which places them after every labelled voxel with a positive error and so gives exactly
    the value computed on labelled voxels only, with zero gradient, without boolean indexing.
    Intersections and unions are counted in int64 and the Jaccard steps taken in float64, so
    batches beyond 2²⁴ voxels stay exact. It takes no class weights (each class is averaged
    with the same weight by construction).
``sum_losses``
    ``w · focal_loss + (1 − w) · lovasz_softmax``.

Class weights (``LossConfig.class_weights``): "auto" = ``total / (C · count_c)`` from the
training labels' class counts (:func:`class_weights_from_counts`; C = 4 classes as in the
reference), "sqrt" = their square root, "none", or four numbers. "auto" weighs a rare class by
up to ~50 on simulated data, which pushes the network to over-predict sparks and puffs (sim-v1's
event probabilities needed a 0.975 threshold); "sqrt" is the usual milder compromise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._monai import FocalLoss as MonaiFocalLoss
from .classes import CODE_NAMES, IGNORE
from .config import LossConfig
from .errors import CasparksError

log = logging.getLogger(__name__)

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "SumLosses",
    "build_loss",
    "class_weights_from_counts",
    "crop_target",
    "lovasz_softmax",
    "resolve_class_weights",
]


# ----------------------------------------------------------------------------------------------
# public functions


def build_loss(config: LossConfig, class_weights: torch.Tensor | None = None) -> nn.Module:
    """The loss module for ``config.criterion``; ``class_weights`` (C,) apply to nll and focal."""
    criterion = config.criterion
    if criterion == "nll_loss":
        return CrossEntropyLoss(class_weights)
    if criterion == "focal_loss":
        return FocalLoss(gamma=config.gamma, class_weights=class_weights)
    if criterion == "lovasz_softmax":
        if class_weights is not None:
            log.info("lovasz_softmax takes no class weights; they are not used")
        return LovaszSoftmaxLoss()
    if criterion == "sum_losses":
        return SumLosses(w=config.w, gamma=config.gamma, class_weights=class_weights)
    raise CasparksError(
        f"loss.criterion {criterion!r} is unknown",
        fix="use one of nll_loss, focal_loss, lovasz_softmax, sum_losses",
    )


def class_weights_from_counts(counts: np.ndarray | Sequence[int], power: float = 1.0) -> torch.Tensor:
    """Reference class weights ``total / (C · count_c)`` from per-class voxel counts, raised to
    ``power`` (0.5: the square-root weights of ``class_weights: sqrt``).

    ``counts`` holds the number of voxels of each class (background, sparks, waves, puffs),
    ignored voxels excluded; C is its length (4). A class with no voxel gets the largest weight
    of the others (it cannot weigh anything in training, and a huge weight would blow up if it
    appears after all); a warning says so.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise CasparksError(f"class counts must be one number per class, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise CasparksError(f"class counts must be finite and non-negative, got {counts.tolist()}")
    total = counts.sum()
    if total <= 0:
        raise CasparksError("the training labels hold no labelled voxel", fix="check the class label files")
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = total / (counts.size * counts[present])
    if not present.all():
        # by name: "classes [1]" told a user nothing
        missing = ", ".join(f"{CODE_NAMES.get(c, c)}s ({c})" for c in np.flatnonzero(~present).tolist())
        log.warning("no voxel of %s in the training labels: given the largest weight", missing)
        weights[~present] = weights[present].max()
    return torch.tensor(weights**power, dtype=torch.float32)


def resolve_class_weights(config: LossConfig, counts: np.ndarray | None) -> torch.Tensor | None:
    """Class weights that ``config.class_weights`` asks for ("auto" needs ``counts``)."""
    spec = config.class_weights
    if isinstance(spec, str):
        if spec == "none":
            return None
        if spec in ("auto", "sqrt"):
            if counts is None:
                raise CasparksError(
                    f"loss.class_weights '{spec}' needs the class counts of the training labels",
                    fix="pass the counts, or set loss.class_weights to 'none' or four numbers",
                )
            return class_weights_from_counts(counts, power=1.0 if spec == "auto" else 0.5)
        raise CasparksError(f"loss.class_weights must be 'auto', 'sqrt', 'none' or four numbers, got {spec!r}")
    weights = torch.tensor([float(v) for v in spec], dtype=torch.float32)
    if not torch.isfinite(weights).all() or (weights < 0).any() or not (weights > 0).any():
        raise CasparksError(f"loss.class_weights must be non-negative numbers, not all zero, got {list(spec)}")
    return weights


def crop_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``target`` as (B, T, Y, X), centre-cropped to the logits' (T', Y', X') when smaller."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != logits.ndim - 1 or target.shape[0] != logits.shape[0]:
        raise CasparksError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}",
            fix="give targets (batch, T, Y, X) for logits (batch, classes, T, Y, X)",
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise CasparksError(f"target must hold integer class codes, got {target.dtype}")
    out, size = tuple(logits.shape[2:]), tuple(target.shape[1:])
    if out == size:
        return target
    if any(o > s for o, s in zip(out, size)):
        raise CasparksError(f"logits {out} are larger than the target {size}")
    starts = [(s - o) // 2 for o, s in zip(out, size)]
    return target[(slice(None), *(slice(b, b + o) for b, o in zip(starts, out)))]


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Lovász-softmax loss of ``logits`` (B, C, ...) against ``target`` (B, ...); see the module."""
    probs = logits.float().softmax(dim=1)
    valid = target != ignore_index
    losses, present = [], []
    for c in range(probs.shape[1]):
        fg = (target == c) & valid
        errors = torch.where(valid, (fg.to(probs.dtype) - probs[:, c]).abs(), 0.0).flatten()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg.flatten()[order])))
        present.append(fg.any())
    loss = torch.stack(losses)
    weight = torch.stack(present).to(loss.dtype)
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------------------------
# loss modules


class CrossEntropyLoss(nn.Module):
    """Weighted cross-entropy over labelled voxels: ``Σ w_y · CE / Σ w_y`` (0 when none)."""

    def __init__(self, class_weights: torch.Tensor | None = None, ignore_index: int = IGNORE):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", _weights_tensor(class_weights), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = crop_target(logits, target).long()
        ce = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=self.ignore_index)
        weight = _voxel_weights(target, logits.shape[1], self.class_weights, self.ignore_index)
        return (weight * ce).sum() / weight.sum().clamp(min=torch.finfo(ce.dtype).eps)


class FocalLoss(nn.Module):
    """MONAI's softmax focal loss with class weights, averaged over labelled voxels."""

    def __init__(self, gamma: float = 2.0, class_weights: torch.Tensor | None = None, ignore_index: int = IGNORE):
        super().__init__()
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        # MONAI keeps the weights as its buffer ``class_weight`` (moved with the module); it is
        # made non-persistent, as ours, so checkpoints load whatever the class weights
        self.focal = MonaiFocalLoss(
            include_background=True, to_onehot_y=True, gamma=self.gamma, use_softmax=True,
            weight=_weights_tensor(class_weights), ignore_index=ignore_index, reduction="mean",
        )
        self.focal._non_persistent_buffers_set.add("class_weight")

    @property
    def class_weights(self) -> torch.Tensor | None:
        return self.focal.class_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = crop_target(logits, target).long()
        _check_weights(self.class_weights, logits.shape[1])
        return self.focal(logits.float(), target[:, None])


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax over labelled voxels, averaged over the classes present in the batch."""

    def __init__(self, ignore_index: int = IGNORE):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(logits, crop_target(logits, target), self.ignore_index)


class SumLosses(nn.Module):
    """``w · focal + (1 − w) · lovasz``; the parts are the submodules ``focal`` and ``lovasz``."""

    def __init__(self, w: float = 0.5, gamma: float = 2.0, class_weights: torch.Tensor | None = None,
                 ignore_index: int = IGNORE):
        super().__init__()
        if not 0.0 <= w <= 1.0:
            raise CasparksError(f"loss.w must lie in [0, 1], got {w}")
        self.w = float(w)
        self.focal = FocalLoss(gamma=gamma, class_weights=class_weights, ignore_index=ignore_index)
        self.lovasz = LovaszSoftmaxLoss(ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.w * self.focal(logits, target) + (1.0 - self.w) * self.lovasz(logits, target)


# ----------------------------------------------------------------------------------------------
# helpers


def _weights_tensor(class_weights: torch.Tensor | Sequence[float] | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if (weights < 0).any():
        raise CasparksError(f"class weights must be non-negative, got {weights.tolist()}")
    return weights


def _check_weights(weights: torch.Tensor | None, num_classes: int) -> None:
    if weights is not None and weights.numel() != num_classes:
        raise CasparksError(f"{weights.numel()} class weights given for {num_classes} classes")


def _voxel_weights(target: torch.Tensor, num_classes: int, weights: torch.Tensor | None,
                   ignore_index: int) -> torch.Tensor:
    """Weight of each voxel's class; 0 for ignored voxels."""
    _check_weights(weights, num_classes)
    table = torch.ones(max(num_classes, ignore_index + 1), device=target.device)
    if weights is not None:
        table[:num_classes] = weights.to(target.device)
    table[ignore_index] = 0.0
    return table[target]


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order."""
    fg = fg_sorted.to(torch.int64)
    gts = fg.sum()
    intersection = gts - fg.cumsum(0)
    union = gts + (1 - fg).cumsum(0)
    jaccard = 1.0 - intersection.double() / union.double()
    return torch.diff(jaccard, prepend=jaccard.new_zeros(1)).float()

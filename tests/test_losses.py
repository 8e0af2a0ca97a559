"""Losses: known values on hand-built cases, class weights, the ignore label, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from casparks.config import LossConfig
from casparks.errors import CasparksError
from casparks.losses import (
    CrossEntropyLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    SumLosses,
    build_loss,
    class_weights_from_counts,
    crop_target,
    lovasz_softmax,
    resolve_class_weights,
)

CRITERIA = ["nll_loss", "focal_loss", "lovasz_softmax", "sum_losses"]
IGNORE = 4
WEIGHTS = torch.tensor([0.5, 4.0, 2.0, 3.0])


def case(seed: int = 0, shape=(2, 3, 4, 5), ignore_fraction: float = 0.3):
    """Random logits (B, 4, T, Y, X) and labels with every class and some ignored voxels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], 4, *shape[1:]), generator=g)
    target = torch.randint(0, 4, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_fraction] = IGNORE
    return logits, target


def loss_for(criterion: str, weights=None, **config) -> torch.nn.Module:
    return build_loss(LossConfig(criterion=criterion, **config), weights)


def manual_ce(logits, target, weights=None):
    """−log softmax of the target class, (weighted) mean over labelled voxels."""
    logp = logits - logits.exp().sum(1, keepdim=True).log()
    valid = target != IGNORE
    t = torch.where(valid, target, 0)
    nll = -logp.gather(1, t[:, None])[:, 0]
    w = torch.ones_like(nll) if weights is None else weights[t]
    w = w * valid
    return (w * nll).sum() / w.sum()


def reference_lovasz(logits, target):
    """Berman et al.'s algorithm, written plainly over the labelled voxels only."""
    probs = logits.softmax(1).permute(0, 2, 3, 4, 1).reshape(-1, logits.shape[1])
    labels = target.reshape(-1)
    keep = labels != IGNORE
    probs, labels = probs[keep], labels[keep]
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        fg_sorted = fg[order]
        gts = fg_sorted.sum()
        intersection = gts - fg_sorted.cumsum(0)
        union = gts + (1 - fg_sorted).cumsum(0)
        jaccard = 1 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()


def hard_logits(pred: torch.Tensor, num_classes: int = 4, scale: float = 50.0) -> torch.Tensor:
    """Logits whose softmax is (almost exactly) the one-hot of ``pred`` (B, T, Y, X)."""
    return scale * torch.nn.functional.one_hot(pred, num_classes).permute(0, 4, 1, 2, 3).float()


# ----------------------------------------------------------------------------------------------
# known values


def test_build_loss_types():
    assert isinstance(loss_for("nll_loss"), CrossEntropyLoss)
    assert isinstance(loss_for("focal_loss"), FocalLoss)
    assert isinstance(loss_for("lovasz_softmax"), LovaszSoftmaxLoss)
    assert isinstance(loss_for("sum_losses"), SumLosses)


def test_cross_entropy_equals_manual_computation():
    logits, target = case()
    assert torch.allclose(loss_for("nll_loss")(logits, target), manual_ce(logits, target), atol=1e-6)
    weighted = loss_for("nll_loss", WEIGHTS)(logits, target)
    assert torch.allclose(weighted, manual_ce(logits, target, WEIGHTS), atol=1e-6)
    # PyTorch's weighted mean with ignore_index, as in the reference's nn.NLLLoss
    expected = torch.nn.functional.cross_entropy(logits, target, weight=WEIGHTS, ignore_index=IGNORE)
    assert torch.allclose(weighted, expected, atol=1e-6)


def test_cross_entropy_two_voxel_example():
    # voxel 1: logits (0, 0, 0, 0), class 1 → log 4; voxel 2: ignored
    logits = torch.zeros(1, 4, 1, 1, 2)
    logits[0, :, 0, 0, 1] = torch.tensor([5.0, -3.0, 1.0, 2.0])
    target = torch.tensor([1, IGNORE]).reshape(1, 1, 1, 2)
    assert loss_for("nll_loss")(logits, target).item() == pytest.approx(np.log(4), abs=1e-6)


def test_focal_with_gamma_zero_equals_cross_entropy():
    logits, target = case(1)
    focal = loss_for("focal_loss", gamma=0.0)(logits, target)
    assert torch.allclose(focal, manual_ce(logits, target), atol=1e-6)


def test_focal_equals_manual_computation():
    logits, target = case(2)
    valid = target != IGNORE
    t = torch.where(valid, target, 0)
    p = logits.softmax(1).gather(1, t[:, None])[:, 0]
    for gamma, weights in [(2.0, None), (1.5, WEIGHTS)]:
        w = (torch.ones_like(p) if weights is None else weights[t]) * valid
        expected = (w * (1 - p) ** gamma * -p.log()).sum() / valid.sum()  # mean over labelled voxels
        got = loss_for("focal_loss", weights, gamma=gamma)(logits, target)
        assert torch.allclose(got, expected, atol=1e-6)
    # focusing lowers the loss of well-classified voxels
    assert loss_for("focal_loss", gamma=2.0)(logits, target) < loss_for("focal_loss", gamma=0.0)(logits, target)


def test_lovasz_perfect_prediction_is_zero_and_worst_is_one():
    _, target = case(3)
    assert lovasz_softmax(hard_logits(torch.where(target == IGNORE, 0, target)), target).item() == pytest.approx(
        0.0, abs=1e-6
    )
    wrong = (torch.where(target == IGNORE, 0, target) + 1) % 4  # every labelled voxel in another class
    assert lovasz_softmax(hard_logits(wrong), target).item() == pytest.approx(1.0, abs=1e-6)


def test_lovasz_of_hard_predictions_is_one_minus_mean_iou_of_present_classes():
    _, target = case(4)
    target[target == 3] = 0  # class 3 absent: not averaged
    pred = torch.randint(0, 4, target.shape, generator=torch.Generator().manual_seed(9))
    valid = target != IGNORE
    ious = []
    for c in range(3):
        a, b = (target == c) & valid, (pred == c) & valid
        ious.append((a & b).sum() / (a | b).sum())
    expected = 1 - torch.stack(ious).mean()
    assert lovasz_softmax(hard_logits(pred), target).item() == pytest.approx(expected.item(), abs=1e-5)


def test_lovasz_matches_plain_reference_algorithm():
    for seed in range(3):
        logits, target = case(seed, ignore_fraction=0.4)
        assert torch.allclose(loss_for("lovasz_softmax")(logits, target), reference_lovasz(logits, target), atol=1e-6)


def test_sum_losses_is_weighted_sum():
    logits, target = case(5)
    for w in (0.0, 0.3, 1.0):
        focal = loss_for("focal_loss", WEIGHTS, gamma=2.0)(logits, target)
        lovasz = loss_for("lovasz_softmax")(logits, target)
        total = loss_for("sum_losses", WEIGHTS, gamma=2.0, w=w)(logits, target)
        assert torch.allclose(total, w * focal + (1 - w) * lovasz, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# class weights


@pytest.mark.parametrize("criterion", ["nll_loss", "focal_loss", "sum_losses"])
def test_class_weights_change_the_loss(criterion):
    logits, target = case(6)
    assert not torch.allclose(loss_for(criterion)(logits, target), loss_for(criterion, WEIGHTS)(logits, target))


def test_lovasz_takes_no_weights():
    logits, target = case(6)
    assert torch.equal(loss_for("lovasz_softmax")(logits, target), loss_for("lovasz_softmax", WEIGHTS)(logits, target))


def test_wrong_number_of_weights_is_an_error():
    logits, target = case(6)
    for criterion in ("nll_loss", "focal_loss"):
        with pytest.raises(CasparksError, match="3 class weights given for 4 classes"):
            loss_for(criterion, torch.ones(3))(logits, target)


def test_class_weights_from_counts_reference_formula():
    counts = np.array([1000, 10, 50, 40])
    weights = class_weights_from_counts(counts)
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, torch.tensor([1100 / 4000, 1100 / 40, 1100 / 200, 1100 / 160]))
    # the weighted voxel count equals the voxel count
    assert float((weights.double() * torch.tensor(counts)).sum()) == pytest.approx(counts.sum())


def test_class_weights_from_counts_guards_zero_counts():
    weights = class_weights_from_counts(np.array([1000, 10, 0, 40]))
    assert torch.isfinite(weights).all()
    assert weights[2] == weights.max() == pytest.approx(1050 / 40)
    with pytest.raises(CasparksError, match="no labelled voxel"):
        class_weights_from_counts(np.zeros(4))
    with pytest.raises(CasparksError, match="non-negative"):
        class_weights_from_counts(np.array([1, -1, 2, 3]))


def test_resolve_class_weights():
    counts = np.array([100, 1, 2, 3])
    auto = resolve_class_weights(LossConfig(class_weights="auto"), counts)
    assert torch.equal(auto, class_weights_from_counts(counts))
    assert resolve_class_weights(LossConfig(class_weights="none"), counts) is None
    sqrt = resolve_class_weights(LossConfig(class_weights="sqrt"), counts)
    assert torch.allclose(sqrt, auto.sqrt()) and sqrt.max() / sqrt.min() == pytest.approx(10.0)  # counts 100 : 1
    assert torch.equal(resolve_class_weights(LossConfig(class_weights=(1.0, 2.0, 3.0, 4.0)), None),
                       torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(CasparksError, match="'auto' needs the class counts") as info:
        resolve_class_weights(LossConfig(class_weights="auto"), None)
    assert "\n" not in str(info.value)
    with pytest.raises(CasparksError, match="non-negative"):
        resolve_class_weights(LossConfig(class_weights=(1.0, -2.0, 3.0, 4.0)), None)


# ----------------------------------------------------------------------------------------------
# ignore, cropping, gradients


@pytest.mark.parametrize("criterion", CRITERIA)
def test_ignored_voxels_never_contribute(criterion):
    logits, target = case(7, ignore_fraction=0.4)
    ignored = (target == IGNORE)[:, None].expand_as(logits)
    loss = loss_for(criterion, WEIGHTS)
    a = logits.clone().requires_grad_(True)
    changed = torch.where(ignored, 100 * torch.randn_like(logits), logits).requires_grad_(True)
    la, lb = loss(a, target), loss(changed, target)
    assert torch.allclose(la, lb, atol=1e-6)
    la.backward()
    lb.backward()
    assert torch.count_nonzero(a.grad[ignored]) == 0 and torch.count_nonzero(changed.grad[ignored]) == 0
    assert torch.count_nonzero(a.grad[~ignored]) > 0  # gradients flow to labelled voxels
    assert torch.allclose(a.grad, changed.grad, atol=1e-6)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_all_ignored_batch_gives_zero(criterion):
    logits, target = case(8)
    target[:] = IGNORE
    logits.requires_grad_(True)
    value = loss_for(criterion, WEIGHTS)(logits, target)
    assert value.item() == 0.0
    value.backward()
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("criterion", CRITERIA)
def test_training_step_lowers_the_loss(criterion):
    logits, target = case(9, ignore_fraction=0.1)
    logits.requires_grad_(True)
    loss = loss_for(criterion, WEIGHTS)
    before = loss(logits, target)
    before.backward()
    with torch.no_grad():
        after = loss(logits - 0.5 * logits.grad / logits.grad.abs().max(), target)
    assert after < before


@pytest.mark.parametrize("criterion", CRITERIA)
def test_target_is_centre_cropped_to_smaller_logits(criterion):
    logits, target = case(10, shape=(1, 7, 8, 9))
    small = logits[:, :, 2:5, 1:7, 3:6]
    loss = loss_for(criterion, WEIGHTS)
    assert torch.allclose(loss(small, target), loss(small, target[:, 2:5, 1:7, 3:6]), atol=1e-6)
    assert loss(small, target[:, None]).shape == ()  # (B, 1, T, Y, X) targets are accepted
    with pytest.raises(CasparksError, match="larger than the target"):
        loss(logits, target[:, :3])


def test_crop_target_rejects_bad_targets():
    logits, target = case(11)
    with pytest.raises(CasparksError, match="integer class codes"):
        crop_target(logits, target.float())
    with pytest.raises(CasparksError, match="does not match"):
        crop_target(logits, target[0])


def test_class_weights_move_with_the_module_but_are_not_saved():
    for criterion in ("nll_loss", "focal_loss", "sum_losses"):
        loss = loss_for(criterion, WEIGHTS)
        assert len(list(loss.buffers())) == 1
        assert loss.state_dict() == {}
        assert loss.to(torch.float64) is loss  # .to() works (Lightning moves the loss with the model)
    loss_for("nll_loss").load_state_dict(loss_for("nll_loss", WEIGHTS).state_dict())  # strict load works


@pytest.mark.parametrize("criterion", CRITERIA)
def test_two_class_networks(criterion):
    # e.g. sparks only: logits for background and sparks, labels 0, 1 and 4 (ignore)
    logits, target = case(12)
    target[(target == 2) | (target == 3)] = 1
    weights = torch.tensor([0.5, 5.0])
    logits = logits[:, :2].clone().requires_grad_(True)
    value = loss_for(criterion, weights)(logits, target)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert torch.count_nonzero(logits.grad[(target == IGNORE)[:, None].expand_as(logits)]) == 0
    if criterion == "nll_loss":
        assert torch.allclose(value, manual_ce(logits.detach(), target, weights), atol=1e-6)

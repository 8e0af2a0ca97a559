"""The network factory: every option changes the network, shapes are as documented, user networks load."""

from __future__ import annotations

import dataclasses
import math
import textwrap

import pytest
import torch
from monai.networks.nets.attentionunet import AttentionBlock
from torch import nn

import casparks.nn
from casparks.config import NetworkConfig
from casparks.errors import CasparksError
from casparks.nn import (
    OneDnnConv3d,
    SliceMaxPool3d,
    UNet3D,
    _valid_size,
    build_network,
    count_parameters,
    fold_batch_norm,
    for_inference,
    input_multiple,
    output_shape,
)

TINY = NetworkConfig(unet_steps=2, first_layer_channels=2, batch_normalization="none")
SHAPE = (16, 16, 32)  # T, Y, X


def tiny(**changes) -> NetworkConfig:
    return dataclasses.replace(TINY, **changes)


def build(seed: int = 0, **changes) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(tiny(**changes))


def movie(shape=SHAPE, seed: int = 1) -> torch.Tensor:
    return torch.randn((1, 1, *shape), generator=torch.Generator().manual_seed(seed))


def module_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


def shape_at(model: nn.Module, module: nn.Module, x: torch.Tensor, inputs: bool = False) -> tuple[int, ...]:
    """Shape of what ``module`` receives (inputs=True) or returns during ``model(x)``."""
    seen = {}
    def record(module, args, output):
        seen.setdefault("shape", tuple((args[0] if inputs else output).shape))

    hook = module.register_forward_hook(record)
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen["shape"]


# ----------------------------------------------------------------------------------------------
# the reference and the basics


def test_reference_parameter_count():
    config = NetworkConfig(
        unet_steps=6, first_layer_channels=8, num_channels=1, num_classes=4, batch_normalization="none",
        time_pooling_steps=None, attention=False, dilation=1, border_mode="same", temporal_reduction=False,
    )
    assert count_parameters(build_network(config)) == 22_631_764


def test_forward_backward_tiny():
    model = build()
    x = movie()
    logits = model(x)
    assert logits.shape == (1, 4, *SHAPE)
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channels_double_per_level():
    model = build(first_layer_channels=3, unet_steps=3)
    assert [block[0].conv.out_channels for block in model.down] == [3, 6, 12]
    assert model.bottom[0].conv.out_channels == 24
    assert model.head.conv.out_channels == 4


def test_num_channels_and_classes():
    model = build(num_channels=2, num_classes=3)
    assert model(torch.randn(1, 2, *SHAPE)).shape == (1, 3, *SHAPE)


def test_wrong_input_channels_is_one_line_error():
    with pytest.raises(CasparksError, match=r"expects input \(batch, 1, T, Y, X\)") as info:
        build()(torch.zeros(1, 2, *SHAPE))
    assert "\n" not in str(info.value)


def test_count_parameters_trainable_only():
    model = build()
    total = count_parameters(model)
    model.head.conv.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model.head.conv.weight.numel()


# ----------------------------------------------------------------------------------------------
# sizes: same mode pads internally, valid mode shrinks as output_shape says


def test_input_multiple():
    assert input_multiple(tiny()) == (4, 4, 4)
    assert input_multiple(tiny(unet_steps=3, time_pooling_steps=1)) == (2, 8, 8)
    assert input_multiple(tiny(time_pooling_steps=0)) == (1, 4, 4)
    assert input_multiple(tiny(temporal_reduction=True, temporal_reduction_factor=3)) == (12, 4, 4)


def test_same_mode_pads_non_multiples_and_crops_back():
    model = build().eval()
    x = movie((14, 15, 30))
    out = model(x)
    assert out.shape == (1, 4, 14, 15, 30)
    assert output_shape(tiny(), (14, 15, 30)) == (14, 15, 30)
    # the same as running the replicate-padded movie (centred padding) and cropping
    padded = torch.nn.functional.pad(x, (1, 1, 0, 1, 1, 1), mode="replicate")
    with torch.no_grad():
        assert torch.allclose(out, model(padded)[:, :, 1:15, 0:15, 1:31], atol=1e-6)


def test_valid_mode_shrinks_output_as_output_shape_predicts():
    config = tiny(border_mode="valid")
    shape = (44, 48, 52)
    expected = output_shape(config, shape)
    assert expected == (4, 8, 12)  # 44 -4 → 40 /2 → 20 -4 → 16 /2 → 8 -4 → 4 ×2 -4 → 4 ×2 -4 → 4
    assert build(border_mode="valid")(movie(shape)).shape == (1, 4, *expected)
    # same weights, padded: the output is larger
    assert build(border_mode="same")(movie(shape)).shape == (1, 4, *shape)


@pytest.mark.parametrize(
    "changes",
    [
        {"dilation": 2},
        {"time_pooling_steps": 1},
        {"attention": True},
        {"temporal_reduction": True},
        {"temporal_reduction": True, "dilation": 2, "attention": True, "time_pooling_steps": 0},
    ],
)
def test_valid_mode_with_other_options(changes):
    config = tiny(border_mode="valid", **changes)
    shape = tuple(_smallest_valid(config, axis, 40) for axis in range(3))
    expected = output_shape(config, shape)
    assert all(0 < o < s for o, s in zip(expected, shape))
    assert build(border_mode="valid", **changes)(movie(shape)).shape == (1, 4, *expected)


def _smallest_valid(config, axis, start):
    return next(n for n in range(start, 2000) if _valid_size(config, axis, n) is not None)


def test_valid_mode_bad_size_names_nearest_valid():
    config = tiny(border_mode="valid")
    with pytest.raises(CasparksError, match=r"T=45 \(nearest valid: 44 or 48\)") as info:
        output_shape(config, (45, 44, 44))
    assert "\n" not in str(info.value)
    with pytest.raises(CasparksError, match="nearest valid"):
        build(border_mode="valid")(movie((45, 44, 44)))


# ----------------------------------------------------------------------------------------------
# every option changes the network


def test_attention_adds_gates():
    plain, gated = build(), build(attention=True)
    assert AttentionBlock not in module_types(plain)
    assert sum(isinstance(m, AttentionBlock) for m in gated.modules()) == TINY.unet_steps
    assert count_parameters(gated) > count_parameters(plain)
    assert gated(movie()).shape == (1, 4, *SHAPE)


@pytest.mark.parametrize(
    "norm, present, absent",
    [
        ("batch", nn.BatchNorm3d, nn.InstanceNorm3d),
        ("instance", nn.InstanceNorm3d, nn.BatchNorm3d),
        ("none", None, (nn.BatchNorm3d, nn.InstanceNorm3d)),
    ],
)
def test_normalisation_module_types(norm, present, absent):
    model = build(batch_normalization=norm)
    types = module_types(model)
    if present is not None:
        assert present in types
        # one normalisation per 3×3×3 convolution
        assert sum(isinstance(m, present) for m in model.modules()) == 2 * (2 * TINY.unet_steps + 1)
    absent = absent if isinstance(absent, tuple) else (absent,)
    assert not any(t in types for t in absent)
    assert model(movie()).shape == (1, 4, *SHAPE)


def _receptive_extent(model: nn.Module, shape=(4, 4, 96)) -> int:
    """Width along X of the input voxels that influence the centre output voxel."""
    x = movie(shape).requires_grad_(True)
    out = model(x)
    out[0, :, shape[0] // 2, shape[1] // 2, shape[2] // 2].sum().backward()
    cols = torch.nonzero(x.grad[0, 0].abs().sum((0, 1)))
    return int(cols.max() - cols.min() + 1)


def test_dilation_changes_convs_and_receptive_field():
    plain = build(unet_steps=1, initialize_weights=True)
    dilated = build(unet_steps=1, dilation=2, initialize_weights=True)
    convs = [m for m in dilated.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert convs and all(m.dilation == (2, 2, 2) and m.padding == (2, 2, 2) for m in convs)
    assert count_parameters(plain) == count_parameters(dilated)
    # 1 + 4 convs·2 + 2 convs·2·2 (+1 pooling) = 18 without dilation; twice the convs' share with it
    plain_rf, dilated_rf = _receptive_extent(plain), _receptive_extent(dilated)
    assert plain_rf <= 18 and dilated_rf > plain_rf + 10


def test_time_pooling_steps_change_bottleneck_time():
    x = movie((16, 16, 16))
    for steps, frames in [(None, 4), (2, 4), (1, 8), (0, 16)]:
        model = build(time_pooling_steps=steps)
        assert shape_at(model, model.bottom, x) == (1, 8, frames, 4, 4)
        assert model(x).shape == (1, 4, 16, 16, 16)
    assert count_parameters(build(time_pooling_steps=0)) < count_parameters(build())  # 1×2×2 deconvs


def test_temporal_reduction_halves_time_inside_and_restores_it():
    model = build(temporal_reduction=True)
    x = movie((16, 16, 16))
    assert shape_at(model, model.down[0], x, inputs=True) == (1, 2, 8, 16, 16)
    assert shape_at(model, model.bottom, x) == (1, 8, 2, 4, 4)
    assert model(x).shape == (1, 4, 16, 16, 16)
    assert count_parameters(model) > count_parameters(build())
    model3 = build(temporal_reduction=True, temporal_reduction_factor=4)
    assert shape_at(model3, model3.down[0], x, inputs=True) == (1, 2, 4, 16, 16)
    assert model3(x).shape == (1, 4, 16, 16, 16)


def test_initialize_weights_kaiming_normal_deterministic():
    a, b = build(seed=3, first_layer_channels=4, initialize_weights=True), build(seed=3, first_layer_channels=4,
                                                                                  initialize_weights=True)
    default = build(seed=3, first_layer_channels=4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    layers = [m for m in a.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers)
    # bottleneck conv 16→16, 3×3×3: fan-in 432, Kaiming std sqrt(2/432) = 0.068 (default init: 0.028)
    weight, weight_default = a.bottom[1].conv.weight, default.bottom[1].conv.weight
    expected = math.sqrt(2 / (16 * 27))
    assert abs(weight.std().item() / expected - 1) < 0.1
    assert weight_default.std().item() < 0.6 * expected
    assert torch.count_nonzero(default.bottom[1].conv.bias) > 0


def test_dropout_adds_dropout_modules():
    assert nn.Dropout not in module_types(build())
    model = build(dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) >= 2 * (2 * TINY.unet_steps + 1)
    x = movie()
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_unet_keeps_its_config():
    config = tiny(attention=True)
    model = build_network(config)
    assert isinstance(model, UNet3D) and model.config == config


# ----------------------------------------------------------------------------------------------
# user networks by import path


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "casparks_test_usernets.py").write_text(
        textwrap.dedent(
            """
            import torch

            class TinyNet(torch.nn.Module):
                def __init__(self, config):
                    super().__init__()
                    self.config = config
                    self.conv = torch.nn.Conv3d(config.num_channels, config.num_classes, 3, padding=1)

                def forward(self, x):
                    return self.conv(x)

            class Shrinking(TinyNet):
                input_multiple = (1, 2, 4)

                @staticmethod
                def output_shape(config, shape):
                    return tuple(s - 2 for s in shape)

            class Computed(TinyNet):
                input_multiple = 8

            class FromConfig(TinyNet):
                @staticmethod
                def input_multiple(config):
                    return (2**config.unet_steps, 2, 2)

            class KeepsNoConfig(torch.nn.Module):
                def __init__(self, config):
                    super().__init__()
                    self.conv = torch.nn.Conv3d(config.num_channels, config.num_classes, 3, padding=1)

                @staticmethod
                def input_multiple(config):
                    return (4, 2, 8)

                def forward(self, x):
                    return self.conv(x)

            class OnTheInstance(TinyNet):
                def __init__(self, config):
                    super().__init__(config)
                    del self.config
                    self.input_multiple = (4, 2, 8)

            class AsAProperty(TinyNet):
                @property
                def input_multiple(self):
                    return (2, 4, 4)

            class NotAModule:
                def __init__(self, config):
                    pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "casparks_test_usernets"


def test_user_network_by_import_path(user_module):
    config = tiny(nn_architecture=f"{user_module}:TinyNet", num_classes=3, initialize_weights=True)
    model = build_network(config)
    assert type(model).__name__ == "TinyNet" and model.config is config
    assert model(movie()).shape == (1, 3, *SHAPE)
    assert torch.count_nonzero(model.conv.bias) == 0  # initialize_weights applies to user networks too
    assert input_multiple(config) == (1, 1, 1) and output_shape(config, (5, 6, 7)) == (5, 6, 7)
    shrinking = tiny(nn_architecture=f"{user_module}:Shrinking")
    assert input_multiple(shrinking) == (1, 2, 4) and output_shape(shrinking, (5, 6, 7)) == (3, 4, 5)
    assert input_multiple(tiny(nn_architecture=f"{user_module}:Computed")) == (8, 8, 8)
    assert input_multiple(tiny(nn_architecture=f"{user_module}:FromConfig", unet_steps=3)) == (8, 2, 2)


def test_inference_reads_a_static_input_multiple_of_a_network_that_keeps_no_config(user_module):
    """The docstring's static input_multiple(config) was ignored by detection and validation for a
    network without a ``config`` attribute: windows were cut to any size."""
    from casparks.inference import _multiples

    model = build_network(tiny(nn_architecture=f"{user_module}:KeepsNoConfig"))
    assert not hasattr(model, "config") and _multiples(model, None) == (4, 2, 8)
    assert _multiples(build_network(tiny()), None) == input_multiple(tiny())
    # the network's own value, set on it or a property, comes first (as before the config was kept)
    assert _multiples(build_network(tiny(nn_architecture=f"{user_module}:OnTheInstance")), None) == (4, 2, 8)
    assert _multiples(build_network(tiny(nn_architecture=f"{user_module}:AsAProperty")), None) == (2, 4, 4)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("casparks_no_such_module_xyz:Net", "cannot import module 'casparks_no_such_module_xyz'"),
        ("{mod}:Missing", "has no 'Missing'"),
        ("{mod}:NotAModule", "is not a torch.nn.Module class"),
        ("resnet", "neither 'unet' nor 'package.module:Class'"),
        ("{mod}:", "neither 'unet' nor 'package.module:Class'"),
    ],
)
def test_user_network_errors_are_one_line(user_module, spec, message):
    with pytest.raises(CasparksError, match=message) as info:
        build_network(tiny(nn_architecture=spec.format(mod=user_module)))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# inference copies


def trained_like(model: nn.Module, seed: int = 2) -> nn.Module:
    """Give every batch norm statistics and an affine map far from the identity, as training does."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=generator) * 2 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.parametrize("attention", [False, True])
def test_folding_removes_every_batch_norm_and_keeps_the_output(attention):
    model = trained_like(build(batch_normalization="batch", attention=attention))
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
    # the original is untouched: still every normalisation (plus the gates' own)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) >= 2 * (2 * TINY.unet_steps + 1)
    with torch.inference_mode():
        expected, got = model(movie()), folded(movie())
    assert not torch.equal(expected, model.eval()(movie() * 0))  # a network whose output depends on its input
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_instance_norm_is_not_folded():
    model = build(batch_normalization="instance").eval()
    folded = fold_batch_norm(model)
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in folded.modules()) == 2 * (2 * TINY.unet_steps + 1)
    with torch.inference_mode():
        torch.testing.assert_close(folded(movie()), model(movie()))


def test_for_inference_runs_relus_in_place_only_in_our_unet():
    ours = for_inference(trained_like(build(batch_normalization="batch", attention=True)))
    relus = [m for m in ours.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)

    class Residual(nn.Module):
        """A user's network whose ReLU input is read again afterwards: in place would change it."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 4, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return y + self.relu(y)

    torch.manual_seed(0)
    theirs = Residual().eval()
    copy_ = for_inference(theirs)
    assert not copy_.relu.inplace
    with torch.inference_mode():
        torch.testing.assert_close(copy_(movie()), theirs(movie()))


@pytest.mark.parametrize("attention", [False, True])
def test_inference_frees_each_decoder_input_once_used(attention):
    """Without autograd, the full-resolution skip and upsampled tensor are gone before the level's
    second convolution runs, and are never concatenated: they set the peak memory of detection."""
    import weakref

    model = for_inference(build(attention=attention)).eval()
    seen: dict[str, weakref.ref] = {}
    alive: dict[str, list[bool]] = {}

    def keep(name):
        return lambda _module, _args, output: seen.__setitem__(name, weakref.ref(output))

    def check(_module, _args):
        alive["second conv"] = [seen[name]() is not None for name in ("skip", "upsampled")]

    (model.gates[0] if attention else model.down[0]).register_forward_hook(keep("skip"))
    model.ups[0].register_forward_hook(keep("upsampled"))
    model.up_convs[0][1].register_forward_pre_hook(check)
    with torch.inference_mode():
        out = model(movie())
    assert out.shape == (1, 4, *SHAPE)
    assert alive == {"second conv": [False, False]}
    assert "aten::cat" not in _aten_ops(model, movie())


@pytest.mark.parametrize("changes", [{}, {"attention": True}, {"border_mode": "valid"}, {"dilation": 2},
                                     {"temporal_reduction": True}])
def test_decoder_without_concatenation_gives_the_same_output(changes):
    """Inference convolves skip and upsampled tensor apart (no concatenated copy); training and
    the network as trained concatenate: the same numbers either way."""
    model = trained_like(build(batch_normalization="batch", **changes))
    x = movie((44, 44, 60)) if changes.get("border_mode") == "valid" else movie()
    with torch.no_grad():
        by_parts = model(x)
    assert "aten::cat" in _aten_ops(model, x, grad=True)
    with torch.enable_grad():
        concatenated = model(x)
    torch.testing.assert_close(by_parts, concatenated.detach(), rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(for_inference(model)(x), concatenated.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", [2, (1, 2, 2), (3, 2, 1)])
def test_inference_pooling_by_slices_gives_pytorchs_max_pool(dtype, kernel):
    """The same tensor as MaxPool3d, remainders dropped, NaN kept, in the input's layout; with
    gradients it is MaxPool3d itself (its gradient goes to one voxel of a tie, the slices' to both)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 13, 10, 17).to(dtype)
    x[0, 1, 4, 5, 6] = float("nan")
    window = tuple(slice(0, k) for k in (kernel if isinstance(kernel, tuple) else (kernel,) * 3))
    x[(1, 2, *window)] = 5.0  # a tie: one window of equal maxima
    plain, sliced = nn.MaxPool3d(kernel), SliceMaxPool3d(kernel)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        inp = x.contiguous(memory_format=layout)
        with torch.inference_mode():
            expected, got = plain(inp), sliced(inp)
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
        assert got.is_contiguous(memory_format=layout)
    assert "aten::max_pool3d" not in _aten_ops(sliced, x.float())
    with torch.enable_grad():
        inp = x.float().requires_grad_()
        sliced(inp).nansum().backward()
    assert inp.grad[(1, 2, *window)].sum() == 1  # one voxel of the tie: MaxPool3d's own gradient ran
    assert isinstance(for_inference(build()).pools[0], SliceMaxPool3d)


def _aten_ops(model: nn.Module, x: torch.Tensor, grad: bool = False) -> set[str]:
    """Names of the operators one forward pass runs (in inference mode, or with gradients)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, (torch.enable_grad() if grad else torch.inference_mode()):
        model(x)
    return {event.name for event in prof.events()}


ONEDNN = pytest.mark.skipif(not (torch.backends.mkldnn.is_available() and casparks.nn._X86_64),
                            reason="OneDnnConv3d calls oneDNN on x86-64 CPUs with oneDNN only")


@ONEDNN
def test_inference_convolutions_run_onednn_and_give_the_same_output():
    """Batch-1 float32 windows of few channels went to PyTorch's slow native kernel; for_inference
    sends every 3-D convolution to oneDNN, with the same result."""
    model = trained_like(build(batch_normalization="batch"))
    fast = for_inference(model)
    assert sum(isinstance(m, OneDnnConv3d) for m in fast.modules()) == 2 * (2 * TINY.unet_steps + 1) + 1
    x = movie()
    assert "aten::slow_conv3d_forward" in _aten_ops(model, x)  # what PyTorch picks for these sizes
    ops = _aten_ops(fast, x)
    assert "aten::slow_conv3d_forward" not in ops and "aten::mkldnn_convolution" in ops
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
        channels_last = fast.to(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(channels_last(x.contiguous(memory_format=torch.channels_last_3d)), model(x),
                                   rtol=1e-4, atol=1e-5)


@ONEDNN
def test_onednn_convolution_is_a_plain_one_with_gradients_or_autocast():
    conv = for_inference(build(batch_normalization="batch")).down[0][0].conv
    assert isinstance(conv, OneDnnConv3d)
    x = movie()
    with torch.no_grad():
        direct = conv(x)
    assert "aten::mkldnn_convolution" in _aten_ops(conv, x)
    with torch.enable_grad():
        trained = conv(x.requires_grad_())
        trained.sum().backward()  # a gradient flows: the plain Conv3d ran
    assert x.grad is not None
    torch.testing.assert_close(trained.detach(), direct, rtol=1e-4, atol=1e-5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(movie()).dtype == torch.bfloat16  # autocast still applies


@ONEDNN
def test_a_failing_onednn_convolution_falls_back_to_pytorchs(monkeypatch, caplog):
    model = trained_like(build(batch_normalization="batch"))
    fast = for_inference(model)

    def broken(conv, x, weight, bias):
        raise RuntimeError("could not create a primitive descriptor\nmore detail")

    monkeypatch.setattr(casparks.nn, "_onednn_conv3d", broken)
    with torch.inference_mode(), caplog.at_level("WARNING"):
        torch.testing.assert_close(fast(movie()), model(movie()), rtol=1e-4, atol=1e-5)
    convs = [m for m in fast.modules() if isinstance(m, OneDnnConv3d)]
    assert all(m.onednn_failed for m in convs)
    assert "could not create a primitive descriptor" in caplog.text and "more detail" not in caplog.text
    assert "aten::mkldnn_convolution" not in _aten_ops(fast, movie())


def _run(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_monai_is_imported_without_the_optional_packages_it_does_not_need_here():
    out = _run(
        "import sys\n"
        "from casparks._monai import Convolution, OPTIONAL_PACKAGES\n"
        "print(sorted(n for n in OPTIONAL_PACKAGES if n in sys.modules))\n"
        "import matplotlib.pyplot, scipy.signal\n"  # importable again for everyone else
        "print(type(matplotlib.pyplot).__name__, scipy.signal.hilbert.__name__)\n")
    assert out.splitlines() == ["[]", "module hilbert"]


def test_monai_is_imported_in_full_when_it_needs_a_blocked_package():
    out = _run(
        "import sys\n"
        "from casparks._monai import _import_without\n"
        "parts = _import_without(('monai.networks.layers.factories',))\n"  # a module MONAI cannot do without
        "print(parts['Convolution'].__name__, sys.modules['monai.networks.layers.factories'] is not None)\n")
    assert out.split() == ["Convolution", "True"]


def test_a_package_imported_before_monai_is_left_alone():
    out = _run(
        "import sys, matplotlib\n"
        "before = sys.modules['matplotlib']\n"
        "from casparks._monai import Convolution\n"
        "import monai.utils.jupyter_utils as j\n"
        "print(sys.modules['matplotlib'] is before, j.has_matplotlib)\n")
    assert out.split() == ["True", "True"]


def test_off_the_main_thread_monai_is_imported_in_full():
    out = _run(
        "import sys, threading\n"
        "from casparks import _monai\n"
        "t = threading.Thread(target=lambda: _monai.Convolution); t.start(); t.join()\n"
        "print('matplotlib' in sys.modules, 'monai' in sys.modules)\n")
    assert out.split() == ["True", "True"]

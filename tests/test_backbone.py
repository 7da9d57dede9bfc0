import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from detzoo.backbones.resnet import ResNet, make_res_layer
from detzoo.layers.norm import ConvWS2d, FrozenBatchNorm2d, SyncBatchNorm, build_norm, conv_class

SMALL = dict(depth=50, stem_width=8)  # ResNet-50 structure at 1/8 width


def _randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize(
    "tv_name, kwargs",
    [
        ("resnet18", dict(depth=18)),
        ("resnet50", dict(depth=50)),
        ("resnext50_32x4d", dict(depth=50, groups=32, width_per_group=4)),
    ],
)
def test_matches_torchvision(tv_name, kwargs):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, tv_name)(weights=None)
    _randomize_bn(tv)
    tv.eval()
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    model = ResNet(**kwargs, norm="FrozenBN").eval()
    model.load_state_dict(state, strict=True)

    getter = IntermediateLayerGetter(tv, {f"layer{i}": f"c{i + 1}" for i in range(1, 5)})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = getter(x), model(x)
    assert list(got) == ["c2", "c3", "c4", "c5"]
    for name in got:  # BN folded into the convolutions: equal to float rounding of the largest value
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=2e-5 * scale, msg=f"{name} {scale}")


@pytest.mark.parametrize("style, strided", [("pytorch", "conv2"), ("caffe", "conv1")])
def test_style_puts_stride(style, strided):
    block = ResNet(**SMALL, style=style).layer2[0]
    strides = {name: getattr(block, name).stride for name in ("conv1", "conv2", "conv3")}
    assert strides == {n: (2, 2) if n == strided else (1, 1) for n in strides}
    assert block.downsample[0].stride == (2, 2)


@pytest.mark.parametrize(
    "tv_name, kwargs",
    [
        ("resnet50", dict(depth=50)),
        ("resnet101", dict(depth=101)),
        ("resnet152", dict(depth=152)),
        ("resnext101_32x8d", dict(depth=101, groups=32, width_per_group=8)),
        ("resnext101_64x4d", dict(depth=101, groups=64, width_per_group=4)),
    ],
)
def test_parameters_match_torchvision(tv_name, kwargs):
    with torch.device("meta"):
        tv = getattr(torchvision.models, tv_name)(weights=None)
        model = ResNet(**kwargs, norm="BN")
    tv_params = {k: v.shape for k, v in tv.named_parameters() if not k.startswith("fc.")}
    params = {k: v.shape for k, v in model.named_parameters()}
    assert params == tv_params
    assert sum(p.numel() for p in model.parameters()) == sum(s.numel() for s in tv_params.values())


def test_frozen_stages_and_bn_eval():
    model = ResNet(**SMALL, norm="BN", frozen_stages=2)
    frozen = ("conv1", "bn1", "layer1")
    for name, p in model.named_parameters():
        assert p.requires_grad != (name.split(".")[0] in frozen), name
    model.train()
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert "bn1" in bns and "layer2.0.bn1" in bns
    for name, bn in bns.items():
        assert bn.training != (name.split(".")[0] in frozen), name
    stats = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, stats)

    model = ResNet(**SMALL, norm="BN", frozen_stages=0, norm_eval=True).train()
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.layer4.training


def test_frozen_bn_loads_bn_checkpoint():
    bn = nn.BatchNorm2d(4)
    frozen = FrozenBatchNorm2d(4)
    frozen.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked dropped
    assert build_norm("FrozenBN", 4).__class__ is FrozenBatchNorm2d
    assert isinstance(build_norm("SyncBN", 4), SyncBatchNorm)
    # the crop640 configs train SyncBN in one process too: there it is plain BN
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(build_norm("SyncBN", 4).train()(x), build_norm("BN", 4).train()(x))
    assert isinstance(build_norm("GN", 64), nn.GroupNorm)


def test_conv_ws_standardizes():
    torch.manual_seed(0)
    conv = ConvWS2d(4, 8, 3, padding=1, bias=False)
    conv.weight.data.mul_(5).add_(3)
    w = conv.standardized_weight().flatten(1)
    torch.testing.assert_close(w.mean(1), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.std(1), torch.ones(8), atol=1e-4, rtol=0)
    # a WS conv is a plain conv with the standardised weights, computed here independently
    raw = conv.weight.detach()
    mean, std = raw.mean(dim=(1, 2, 3), keepdim=True), raw.std(dim=(1, 2, 3), keepdim=True)
    x = torch.randn(1, 4, 8, 8)
    expected = nn.functional.conv2d(x, (raw - mean) / (std + 1e-5), padding=1)
    torch.testing.assert_close(conv(x), expected)
    assert not torch.allclose(conv(x), nn.functional.conv2d(x, raw, padding=1), atol=1e-2)
    assert conv_class(True) is ConvWS2d and conv_class(False) is nn.Conv2d


@pytest.mark.parametrize("conv_ws", [False, True])
def test_gn_builds_and_runs(conv_ws):
    model = ResNet(depth=50, stem_width=32, norm="GN", conv_ws=conv_ws, frozen_stages=0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(m, ConvWS2d) == conv_ws for m in convs)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    out = model(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[1] for k, v in out.items()} == model.out_channels
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=42), "18, 34, 50, 101, 152"),
        (dict(style="tf"), "pytorch, caffe"),
        (dict(norm="LN"), "FrozenBN, BN, SyncBN, GN"),
        (dict(frozen_stages=6), "0 to 5"),
        (dict(out_features=("c1",)), "'c2', 'c3', 'c4', 'c5'"),
        (dict(depth=18, groups=32, width_per_group=4), "groups=32"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**{**SMALL, **kwargs})


def test_out_features_subset():
    model = ResNet(**SMALL, out_features=("c5", "c3"))
    assert model.out_channels == {"c3": 64, "c5": 256}
    assert model.strides == {"c3": 8, "c5": 32}
    out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["c3", "c5"]
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"c3": (1, 64, 8, 8), "c5": (1, 256, 2, 2)}

    basic = ResNet(depth=18, stem_width=8, out_features=("c4",))
    assert basic.out_channels == {"c4": 32} and basic.strides == {"c4": 16}
    assert not hasattr(basic, "layer4")  # C4: res5 belongs to the RoI head


def test_make_res_layer_is_res5():
    model = ResNet(**SMALL, style="caffe")
    res5 = make_res_layer(
        block="bottleneck", in_channels=128, planes=64, num_blocks=3, stride=2, style="caffe"
    )
    res5.load_state_dict(model.layer4.state_dict(), strict=True)
    assert res5(torch.randn(1, 128, 8, 8)).shape == (1, 256, 4, 4)
    with pytest.raises(ValueError, match="basic, bottleneck"):
        make_res_layer(block="dense", in_channels=8, planes=8, num_blocks=1, stride=1)

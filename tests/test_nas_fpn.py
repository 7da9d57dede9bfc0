"""NASFPN against mmdetection 3.3's ``NASFPN`` built from the RetinaNet NAS-FPN config (at
narrow widths), with mmdetection's state dict renamed by detzoo's mmdet converter."""

from __future__ import annotations


import pytest
import torch

from detzoo.engine.checkpoint import load_state
from devtools.reference_models import converted_neck_state, import_mmdet, mmdet_config_path


from detzoo.necks.nas_fpn import NASFPN, resize_to

CONFIG = "nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco"
IN_CHANNELS = {"c2": 16, "c3": 32, "c4": 64, "c5": 128}
IN_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
OUT_CHANNELS = 16

# mmcv warns that the cells' conv has a bias before BN; mmdetection builds them that way.
pytestmark = pytest.mark.filterwarnings("ignore:Unnecessary conv bias:UserWarning")





def randomize(model: torch.nn.Module) -> None:
    """Random conv weights and biases; every BN with non-trivial affine params and running stats."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, fan_in**-0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """mmdetection's NASFPN with the config's arguments, narrow widths, random weights, eval."""
    import_mmdet()
    from mmdet.registry import MODELS
    from mmengine.config import Config

    neck = Config.fromfile(mmdet_config_path(CONFIG)).model.neck.to_dict()
    assert neck == {
        "type": "NASFPN",
        "in_channels": [256, 512, 1024, 2048],
        "out_channels": 256,
        "num_outs": 5,
        "stack_times": 7,
        "start_level": 1,
        "norm_cfg": {"type": "BN", "requires_grad": True},
    }
    torch.manual_seed(0)
    narrow = {"in_channels": list(IN_CHANNELS.values()), "out_channels": OUT_CHANNELS}
    ref = MODELS.build({**neck, **narrow})
    randomize(ref)
    return ref.eval()


def build_ours() -> NASFPN:
    return NASFPN(in_channels=IN_CHANNELS, in_strides=IN_STRIDES, out_channels=OUT_CHANNELS)


def test_attributes():
    neck = build_ours()
    assert neck.strides == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    assert neck.out_channels == {name: OUT_CHANNELS for name in neck.strides}
    assert len(neck.stages) == 7


@pytest.mark.parametrize("image_size", [(320, 256), (200, 152)])
def test_matches_mmdetection(reference, image_size):
    ours = build_ours()
    load_state(ours, converted_neck_state(reference), "mmdetection's NASFPN")  # strict, counters aside
    ours.eval()
    torch.manual_seed(1)
    features = {  # backbone map sizes: ceil(image / stride)
        name: torch.randn(1, c, -(-image_size[0] // s), -(-image_size[1] // s))
        for (name, c), s in zip(IN_CHANNELS.items(), IN_STRIDES.values())
    }
    with torch.no_grad():
        expected = reference(tuple(features.values()))
        actual = ours(features)
    assert list(actual) == ["p3", "p4", "p5", "p6", "p7"]
    for (name, out), ref in zip(actual.items(), expected):
        assert out.shape == ref.shape, name
        diff = (out - ref).abs().max().item()
        print(f"{image_size} {name} {tuple(out.shape)} max abs diff {diff:.3g} max {ref.abs().max().item():.3g}")
        assert diff <= 4e-6 * ref.abs().max().item(), name  # float rounding: ~30 ulps of the largest value


@pytest.mark.parametrize(
    "in_size, out_size",
    [
        ((13, 10), (7, 5)),  # non-divisible: zero padding then max-pool
        ((25, 19), (7, 5)),
        ((7, 5), (3, 2)),
        ((1, 1), (3, 2)),  # nearest upsampling
        ((6, 3), (3, 4)),  # mixed: (h, w) compares as a tuple, so this downsamples
        ((3, 6), (4, 3)),  # ... and this interpolates
    ],
)
def test_resize_matches_mmcv(in_size, out_size):
    import_mmdet()
    from mmcv.ops.merge_cells import SumCell

    x = torch.randn(2, 3, *in_size)
    expected = SumCell(3, 3, with_out_conv=False)._resize(x, torch.Size(out_size))
    assert torch.equal(resize_to(x, out_size), expected)


def test_train_backward():
    torch.manual_seed(0)
    neck = build_ours().train()
    features = {
        name: torch.randn(2, c, 256 // s, 256 // s)
        for (name, c), s in zip(IN_CHANNELS.items(), IN_STRIDES.values())
    }
    outs = neck(features)
    sum(out.square().mean() for out in outs.values()).backward()
    for conv in [*neck.lateral_convs, *neck.extra_convs]:
        assert conv[0].weight.grad is not None and conv[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in neck.parameters())

"""FPG against mmdetection 3.3's own ``FPG``, built from its FPG configs' neck arguments at
narrow widths (9 stages kept), on random weights and backbone features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devtools.reference_models import converted_neck_state, import_mmdet, mmdet_config_path

from detzoo.engine.checkpoint import load_state
from detzoo.necks.fpg import FPG


BACKBONE_CHANNELS = {"c2": 16, "c3": 32, "c4": 64, "c5": 128}
BACKBONE_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
WIDTH = 16

# config -> (detzoo FPG arguments, output strides)
CASES = {
    "fpg/faster-rcnn_r50_fpg_crop640-50e_coco": (
        dict(in_features=("c2", "c3", "c4", "c5"), num_extra_levels=1, extra_downsample="maxpool"),
        {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64},
    ),
    "fpg/retinanet_r50_fpg_crop640_50e_coco": (
        dict(in_features=("c3", "c4", "c5"), num_extra_levels=2, extra_downsample="conv"),
        {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128},
    ),
}




def build_reference(config: str) -> nn.Module:
    """mmdetection's FPG with the config's neck arguments, narrowed."""
    import_mmdet()
    from mmdet.registry import MODELS
    from mmengine.config import Config

    neck = dict(Config.fromfile(mmdet_config_path(config)).model.neck)
    neck.update(in_channels=list(BACKBONE_CHANNELS.values()), out_channels=WIDTH, inter_channels=WIDTH)
    return MODELS.build(neck)


def build_ours(config: str) -> FPG:
    arguments = CASES[config][0]
    return FPG(in_channels=BACKBONE_CHANNELS, in_strides=BACKBONE_STRIDES, out_channels=WIDTH, **arguments)


def randomize(model: nn.Module) -> None:
    """Non-trivial conv biases and BN affine parameters / running statistics (the conv
    weights are those of the seeded constructor)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 0.6)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def backbone_features(batch: int, height: int, width: int) -> dict[str, Tensor]:
    """Random maps at ResNet's sizes (each stride-2 step rounds up)."""
    return {
        name: torch.randn(batch, channels, math.ceil(height / stride), math.ceil(width / stride))
        for (name, channels), stride in zip(BACKBONE_CHANNELS.items(), BACKBONE_STRIDES.values())
    }


def crop_across_down(
    reference: nn.Module, level_sizes: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mmdetection upsamples its across-down edges by x2, so its sums fail where a level is
    not exactly twice the one above; crop the x2 map to the level before the conv (the same
    as nearest upsampling to the level's size)."""

    def cropped_forward(up: nn.Module, size: tuple[int, int]):
        def forward(x: Tensor) -> Tensor:
            x = F.interpolate(x, scale_factor=up.scale_factor, mode=up.mode, align_corners=up.align_corners)
            return up.conv(x[..., : size[0], : size[1]])

        return forward

    for stage in reference.fpn_transitions:
        for level, edges in enumerate(stage):
            if "across_down" in edges and edges["across_down"] is not None:
                up = edges["across_down"]
                monkeypatch.setattr(up, "forward", cropped_forward(up, level_sizes[level]))


@pytest.mark.parametrize("size", [(256, 128), (256, 192), (200, 152)])
@pytest.mark.parametrize("config", list(CASES))
def test_matches_mmdetection(config: str, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = build_reference(config)
    randomize(reference)
    reference.eval()
    ours = build_ours(config).eval()
    load_state(ours, converted_neck_state(reference), "mmdetection's FPG")  # strict, counters aside

    strides = CASES[config][1]
    assert ours.strides == strides
    assert ours.out_channels == {name: WIDTH for name in strides}

    features = backbone_features(1, *size)
    level_sizes = [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in strides.values()]
    inputs = [features[name] for name in BACKBONE_CHANNELS]
    with torch.no_grad():
        if all(s % max(strides.values()) == 0 for s in size):
            expected = reference(inputs)
        else:
            with pytest.raises(RuntimeError):
                reference(inputs)
            crop_across_down(reference, level_sizes, monkeypatch)
            expected = reference(inputs)
        got = ours(features)
    assert list(got) == list(strides)
    for name, level_size, want in zip(strides, level_sizes, expected):
        assert got[name].shape == (1, WIDTH, *level_size)
        torch.testing.assert_close(got[name], want, rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("config", list(CASES))
def test_init_is_mmdetection_caffe2xavier(config: str) -> None:
    """mmdetection's init_cfg (Caffe2Xavier on every conv, norms 1/0) gives the same law."""
    torch.manual_seed(0)
    reference = build_reference(config)
    reference.init_weights()
    for model in (reference, build_ours(config)):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                bound = math.sqrt(3 / m.weight[0].numel())  # kaiming-uniform, a=1, fan-in
                assert 0.9 * bound <= m.weight.abs().max() <= bound
                assert m.bias is None or not m.bias.any()
            if isinstance(m, nn.BatchNorm2d):
                assert (m.weight == 1).all() and not m.bias.any()


@pytest.mark.parametrize("config", list(CASES))
def test_train_forward_backward(config: str) -> None:
    torch.manual_seed(0)
    ours = build_ours(config).train()
    outputs = ours(backbone_features(2, 128, 96))
    sum(out.square().mean() for out in outputs.values()).backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name

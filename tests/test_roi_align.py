"""detzoo's RoIAlign (``detzoo.layers.roi_pool``) against ``torchvision.ops.roi_align``:
forward and gradients, aligned or not, fixed or adaptive sampling, boxes partly or wholly
outside the map, degenerate (zero or negative size) or larger than it, no boxes; the
multi-level pooler against torchvision per level; channels-last maps; bf16 autocast; the
path a traced (ONNX-exported) model takes."""

import warnings

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align as tv_roi_align

from detzoo.layers.roi_pool import MultiLevelRoIAlign, roi_align, roi_align_kernel

STRIDES = [4, 8, 16, 32]


def _rois(n: int, images: int, image_hw: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """(n, 5) RoIs in image pixels: centres up to 20% outside the image, sizes up to 1.5x it;
    the first four of zero, negative, one-pixel and twice the image's size."""
    hw = torch.tensor(image_hw[::-1])
    centre = (torch.rand(n, 2, generator=gen) * 1.4 - 0.2) * hw
    size = torch.rand(n, 2, generator=gen) * 1.5 * hw
    size[:4] = torch.stack([torch.zeros(2), torch.tensor([-3.0, 5.0]), torch.ones(2), 2 * hw])
    index = torch.randint(0, images, (n, 1), generator=gen).float()
    return torch.cat([index, centre - size / 2, centre + size / 2], dim=1)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> tuple[torch.Tensor, ...]:
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, weights.to(out.dtype))


def _assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal within ``tol`` times the data's scale (its largest magnitude, at least 1)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol * max(1.0, expected.abs().max().item()))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0, 1])
def test_roi_align_equals_torchvision(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(sampling_ratio)
    feature = torch.randn(3, 5, 13, 17, generator=gen, requires_grad=True)
    rois = _rois(120, 3, (13 * 4, 17 * 4), gen)
    kwargs = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    for size in (7, 4):
        expected = tv_roi_align(feature, rois, size, spatial_scale=0.25, **kwargs)
        out = roi_align([feature], rois, scales=[0.25], output_size=size, **kwargs)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        _assert_close_to_scale(out, expected)
        _assert_close_to_scale(_grads(out, [feature])[0], _grads(expected, [feature])[0])


def _per_level(pooler: MultiLevelRoIAlign, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
    """The pooler's result by torchvision's roi_align, one level at a time."""
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    levels = pooler.assign_levels(rois[:, 1:])
    out = torch.zeros(len(rois), features[0].shape[1], pooler.output_size, pooler.output_size)
    for level, (feature, scale) in enumerate(zip(features, pooler.scales)):
        idx = torch.nonzero(levels == level).flatten()
        out = out.index_put((idx,), tv_roi_align(feature, rois[idx], pooler.output_size, scale,
                                                 pooler.sampling_ratio, pooler.aligned))
    return out


@pytest.mark.parametrize("sampling_ratio, aligned", [(2, False), (0, True)])
def test_multilevel_pooling_equals_torchvision_per_level(sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(0)
    image_hw = (200, 264)
    features = [torch.randn(2, 6, -(-200 // s), -(-264 // s), generator=gen, requires_grad=True) for s in STRIDES]
    boxes = [_rois(n, 1, image_hw, gen)[:, 1:] for n in (70, 50)]
    pooler = MultiLevelRoIAlign(strides=STRIDES, output_size=7, sampling_ratio=sampling_ratio, aligned=aligned)
    assert pooler.assign_levels(torch.cat(boxes)).unique().tolist() == [0, 1, 2, 3]  # every level is used
    expected = _per_level(pooler, features, boxes)
    out = pooler(features, boxes)
    _assert_close_to_scale(out, expected)
    grads = _grads(out, features)
    for got, ref in zip(grads, _grads(expected, features)):
        _assert_close_to_scale(got, ref)
    assert all(torch.equal(a, b) for a, b in zip(grads, _grads(pooler(features, boxes), features)))  # deterministic

    channels_last = [f.detach().to(memory_format=torch.channels_last).requires_grad_() for f in features]
    _assert_close_to_scale(pooler(channels_last, boxes), expected)
    single = MultiLevelRoIAlign(strides=[8], output_size=7, sampling_ratio=sampling_ratio, aligned=aligned)
    _assert_close_to_scale(single(channels_last[1:2], boxes), single(features[1:2], boxes))


def test_no_boxes():
    feature = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = roi_align([feature], torch.zeros(0, 5), scales=[0.5], output_size=7)
    assert out.shape == (0, 3, 7, 7)
    assert torch.equal(_grads(out, [feature])[0], torch.zeros_like(feature))
    pooler = MultiLevelRoIAlign(strides=[4, 8], output_size=5)
    assert pooler([feature, feature[..., :4, :4]], [torch.zeros(0, 4), torch.zeros(0, 4)]).shape == (0, 3, 5, 5)
    with pytest.raises(ValueError, match="2 feature maps but 1 scales"):
        roi_align([feature, feature], torch.zeros(0, 5), scales=[0.5], output_size=7)


def test_bf16_autocast_equals_torchvision_under_autocast():
    """bf16 maps pooled in fp32 and returned in bf16, as torchvision's autocast wrapper does."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    image = torch.randn(2, 3, 24, 32, generator=gen)
    rois = _rois(30, 2, (48, 64), gen)

    def pool(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feature = conv(image)
            out = fn(feature)
        assert feature.dtype == out.dtype == torch.bfloat16
        return out.float(), _grads(out, [conv.weight])[0]

    out, grad = pool(lambda f: roi_align([f], rois, scales=[0.5], output_size=7, sampling_ratio=0, aligned=True))
    expected, expected_grad = pool(lambda f: tv_roi_align(f, rois, 7, 0.5, sampling_ratio=0, aligned=True))
    torch.testing.assert_close(out, expected, rtol=0, atol=expected.abs().max().item() / 128)  # 2 bf16 steps
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=expected_grad.abs().max().item() / 128)


def test_traced_pooler_runs_torchvision_roi_align_per_level():
    """What ``detzoo export onnx`` traces: the same result, for boxes of another count too."""

    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pooler = MultiLevelRoIAlign(strides=STRIDES[:2], output_size=5)

        def forward(self, p2: torch.Tensor, p3: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
            return self.pooler([p2, p3], [boxes])

    gen = torch.Generator().manual_seed(0)
    p2, p3 = torch.randn(1, 4, 32, 40, generator=gen), torch.randn(1, 4, 16, 20, generator=gen)
    pool = Pool()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings
        traced = torch.jit.trace(pool, (p2, p3, _rois(12, 1, (128, 160), gen)[:, 1:]))
    boxes = _rois(20, 1, (128, 160), gen)[:, 1:]
    _assert_close_to_scale(traced(p2, p3, boxes), pool(p2, p3, boxes))


@pytest.mark.parametrize("sampling_ratio, aligned", [(2, False), (0, True)])
def test_torchvision_kernel_equals_detzoo_kernel(sampling_ratio, aligned):
    """The branch a GPU runs (torchvision's kernel per level, ``kernel="auto"`` on CUDA),
    selected on the CPU: the same values and gradients as detzoo's gather."""
    gen = torch.Generator().manual_seed(3)
    features = [torch.randn(2, 6, -(-96 // s), -(-128 // s), generator=gen, requires_grad=True) for s in STRIDES]
    boxes = [_rois(n, 1, (96, 128), gen)[:, 1:] for n in (40, 30)]
    pooled = {}
    for kernel in ("detzoo", "torchvision"):
        pooler = MultiLevelRoIAlign(strides=STRIDES, output_size=7, sampling_ratio=sampling_ratio, aligned=aligned,
                                    kernel=kernel)
        out = pooler(features, boxes)
        pooled[kernel] = out, _grads(out, features)
    _assert_close_to_scale(pooled["torchvision"][0], pooled["detzoo"][0])
    for got, ref in zip(pooled["torchvision"][1], pooled["detzoo"][1]):
        _assert_close_to_scale(got, ref)


def test_auto_kernel_is_torchvision_on_cuda_and_when_traced():
    assert roi_align_kernel(torch.device("cpu"), tracing=False) == "detzoo"
    assert roi_align_kernel(torch.device("cuda", 0), tracing=False) == "torchvision"
    assert roi_align_kernel(torch.device("cpu"), tracing=True) == "torchvision"
    with pytest.raises(ValueError, match="kernel must be one of 'auto', 'detzoo', 'torchvision', got 'cudnn'"):
        MultiLevelRoIAlign(strides=STRIDES, output_size=7, kernel="cudnn")

"""The speed paths keep the results: frozen / eval-mode BN folded into the convolution
(forward and gradients), channels-last features, the box head's first fc as a convolution,
``runtime.compile`` and ``runtime.amp`` at inference."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import detzoo
from detzoo.detectors.model import memory_format
from detzoo.engine.inference import _warn_emulated_bf16, autocast_dtype
from detzoo.heads.box import ConvFCBoxHead, map_linear
from detzoo.layers.norm import ConvWS2d, FrozenBatchNorm2d, build_norm, conv_norm_forward

IMAGE = sorted((Path(__file__).parent / "data" / "coco" / "images").glob("*.jpg"))[0]
TINY = str(Path(__file__).parent / "configs" / "tiny_faster_rcnn.py")


def _randomized(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 1.5)
    return norm


@pytest.mark.parametrize("norm_name, eval_mode", [("FrozenBN", False), ("BN", True), ("BN", False), ("GN", False)])
@pytest.mark.parametrize("conv_class", [nn.Conv2d, ConvWS2d])
def test_conv_norm_forward_equals_the_unfolded_norm_and_its_gradients(norm_name, eval_mode, conv_class):
    torch.manual_seed(0)
    conv = conv_class(8, 32, 3, padding=1, bias=True)
    norm = build_norm(norm_name, 32)
    if norm_name != "GN":
        _randomized(norm)
    norm.train(not eval_mode)
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    grads = []
    for fold in (True, False):
        conv.zero_grad(), norm.zero_grad()
        x.grad = None
        out = conv_norm_forward(conv, norm, x) if fold else norm(conv(x))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        trainable = [p.grad for p in [*conv.parameters(), *norm.parameters()]]
        grads.append((out.detach(), x.grad.clone(), [g.clone() for g in trainable]))
    (folded, gx, gp), (plain, rx, rp) = grads
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
    for g, r in zip(gp, rp):  # to float rounding of the largest entry
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * r.abs().max().item())
    if norm_name == "BN" and not eval_mode:  # batch statistics: nothing folded, the running stats move
        assert not torch.equal(norm.running_mean, torch.zeros(32))


@pytest.mark.parametrize("capability, op", [("AVX512", "convolution"), ("AVX2", "addmm")])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("num", [0, 5])
def test_map_linear_is_the_fc_of_the_flattened_maps_and_its_gradients(monkeypatch, capability, op, layout, num):
    """On a CPU with AVX-512 the first fc runs as a convolution over the whole map, on one
    with AVX2 as the matrix product (oneDNN's convolution of that shape is ~10x slower there):
    the same outputs and gradients as ``fc(x.flatten(1))`` (float64), for RoIAlign's
    channels-last maps and contiguous ones, and for no RoIs."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    torch.manual_seed(0)
    head = ConvFCBoxHead(in_channels=8, pooled_size=7, fc_dim=16).double()
    fc = head.fcs[0]
    x = torch.randn(num, 8, 7, 7, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    results = []
    for as_conv in (True, False):
        x.grad = None
        fc.zero_grad()
        with FlopCounterMode(display=False) as counter:
            out = map_linear(fc, x) if as_conv else fc(x.flatten(1))
        if as_conv and num:
            assert {str(o).split(".")[1] for o in counter.get_flop_counts()["Global"]} == {op}
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad.clone(), fc.weight.grad.clone(), fc.bias.grad.clone()))
    assert results[0][0].shape == (num, 16)
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_map_linear_is_a_matrix_product_in_a_traced_model():
    """A trace (ONNX export) keeps the fc a matrix product (ONNX ``Gemm``)."""
    head = ConvFCBoxHead(in_channels=8, pooled_size=7, fc_dim=16).eval()
    with torch.no_grad():
        graph = str(torch.jit.trace(head, torch.randn(3, 8, 7, 7)).inlined_graph)
    assert "aten::linear" in graph and "aten::_convolution" not in graph and "aten::conv2d" not in graph


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_bn_is_folded_in_the_backbone_at_inference(norm):
    """The backbone's convolutions run with the folded weight: the frozen BN (or, in eval
    mode, BN) modules themselves are never called."""
    detector = detzoo.load_model(TINY, overrides=[f"model.backbone.norm={norm!r}"])
    called = []
    kind = FrozenBatchNorm2d if norm == "FrozenBN" else nn.BatchNorm2d
    hooks = [m.register_forward_hook(lambda *_: called.append(1)) for m in detector.model.modules()
             if isinstance(m, kind)]
    assert hooks
    detector.predict(IMAGE)
    assert not called


def test_features_are_channels_last():
    detector = detzoo.load_model(TINY)
    model = detector.model
    batch = model.preprocess([torch.rand(3, 64, 96)], None)
    with torch.inference_mode():
        features = model.features(batch)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in features.values())


@pytest.mark.parametrize("capability, layout", [("AVX2", torch.contiguous_format), ("AVX512", torch.channels_last),
                                                ("AVX512_BF16", torch.channels_last)])
def test_training_layout_follows_the_cpu(monkeypatch, capability, layout):
    """Training runs NCHW on a CPU without AVX-512 (its channels-last conv backward is slow),
    channels-last elsewhere; inference is channels-last everywhere."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert memory_format(torch.device("cpu"), training=True) == layout
    assert memory_format(torch.device("cpu"), training=False) == torch.channels_last
    assert memory_format(torch.device("cuda", 0), training=True) == torch.channels_last
    model = detzoo.load_model(TINY).model.train()
    features = model.features(model.preprocess([torch.rand(3, 64, 96)], None))
    assert all(f.is_contiguous(memory_format=layout) for f in features.values())


def test_compiled_network_predicts_as_the_eager_one():
    eager = detzoo.load_model(TINY)
    compiled = detzoo.load_model(TINY, overrides=["runtime.compile=True"])
    compiled.model.load_state_dict(eager.model.state_dict())
    ours, ref = compiled.predict(IMAGE)[0], eager.predict(IMAGE)[0]
    assert len(ref["boxes"]) > 0 and len(ours["boxes"]) == len(ref["boxes"])
    np.testing.assert_allclose(ours["boxes"], ref["boxes"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours["scores"], ref["scores"], rtol=0, atol=1e-4)


def test_bf16_inference_runs_the_network_in_bf16_and_returns_fp32():
    fp32 = detzoo.load_model(TINY)
    bf16 = detzoo.load_model(TINY, overrides=["runtime.amp='bf16'"])
    bf16.model.load_state_dict(fp32.model.state_dict())
    dtypes = []
    hook = bf16.model.backbone.register_forward_hook(lambda m, i, o: dtypes.append(o["c5"].dtype))
    ours, ref = bf16.predict(IMAGE)[0], fp32.predict(IMAGE)[0]
    hook.remove()
    assert dtypes == [torch.bfloat16]
    assert ours["boxes"].dtype == np.float32 and ours["scores"].dtype == np.float32
    assert len(ours["boxes"]) > 0
    # the best fp32 detection is found in bf16 too, within bf16's rounding
    best = ref["boxes"][0]
    assert np.abs(ours["boxes"] - best).max(1).min() < 0.05 * np.abs(best).max()


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_warns_once(monkeypatch, caplog, native):
    """bf16 without AVX512-BF16 / AMX is several times slower than fp32: one warning a
    process says so; a CPU with native bf16 (or fp32) gets none."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    _warn_emulated_bf16.cache_clear()
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="detzoo.runtime"):
        assert autocast_dtype(None, cpu) is None
        assert [autocast_dtype("bf16", cpu) for _ in range(3)] == [torch.bfloat16] * 3
    warned = [r.getMessage() for r in caplog.records if r.name == "detzoo.runtime"]
    assert len(warned) == (0 if native else 1)
    assert all("no native bf16" in w for w in warned)
    _warn_emulated_bf16.cache_clear()

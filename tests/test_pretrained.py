"""ImageNet backbone weights (``model.backbone.init``): every layout detzoo reads, written
as the toolbox that publishes it writes it (seeded random weights, non-trivial BN
statistics), loaded through ``init`` and compared with the reference implementation loaded
from the same file, on a real image; the weights table, hash checks, the cache and the
offline line; frozen stages keeping the file's weights through training."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from conftest import TESTS, tiny_config
from devtools.reference_models import import_mmdet

from detzoo.backbones.resnet import ResNet
from detzoo.backbones.imagenet import WEIGHTS, ImageNetWeights, PretrainedError
from detzoo.config import apply_overrides, load_config, merge
from detzoo.data.images import read_image
from detzoo.detectors.build import build_model
from detzoo.download import sha256_file
from detzoo.engine.initialize import init_backbone
from detzoo.engine.trainer import train
from detzoo.errors import CheckpointError
from detzoo.zoo.metafile import load_zoo

IMAGE = TESTS / "data" / "coco" / "images" / "000000000338.jpg"
EPS = 1e-5


def _image(size: int = 128) -> torch.Tensor:
    """A real COCO image, resized to ``size`` on its long side and standardised, as (1, 3, H, W)."""
    image = read_image(IMAGE)
    scale = size / max(image.shape[1:])
    image = nn.functional.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)
    return (image - 120.0) / 60.0


def _randomize_norms(model: nn.Module, *, stats: bool = True) -> None:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
        if stats and isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)


def _model(name: str = "tiny_faster_rcnn", **backbone) -> nn.Module:
    """A narrow-headed detector of tests/configs/``name``, its backbone settings updated by ``backbone``."""
    return build_model(merge(tiny_config(TESTS, name=name), {"model": {"backbone": backbone}})["model"])


def _detector(path: Path, **backbone) -> nn.Module:
    """A narrow-headed detector whose backbone is ``backbone``, started from the file ``path``."""
    model = _model(**{"stem_width": 64, **backbone, "init": str(path)}).eval()
    init_backbone(model)
    return model


def _assert_features(expected: list[torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert list(got) == ["c2", "c3", "c4", "c5"]
    for name, want in zip(got, expected):  # BN is folded into the convolutions: float rounding of the scale
        scale = want.abs().max().item()
        torch.testing.assert_close(got[name], want, rtol=0, atol=3e-5 * scale, msg=f"{name} (scale {scale})")


@pytest.mark.parametrize("name, kwargs", [
    ("resnet50", dict(depth=50)),
    ("resnet101", dict(depth=101)),
    ("resnext101_32x8d", dict(depth=101, groups=32, width_per_group=8)),
])
def test_torchvision_layout(tmp_path, name, kwargs):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    _randomize_norms(reference)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)  # torchvision publishes bare state dicts, fc included
    getter = IntermediateLayerGetter(reference.eval(), {f"layer{i}": f"c{i + 1}" for i in range(1, 5)})
    x = _image()
    with torch.no_grad():
        expected = list(getter(x).values())
        got = _detector(path, **kwargs).backbone(x)
    _assert_features(expected, got)


def _mmdet_backbone(kind: str, **kwargs) -> nn.Module:
    import_mmdet()
    from mmdet.models.backbones import ResNet, ResNeXt

    model = (ResNeXt if kind == "resnext" else ResNet)(out_indices=(0, 1, 2, 3), frozen_stages=-1, **kwargs)
    _randomize_norms(model)
    model.eval()  # mmdetection's ResNet.train returns None
    return model


@pytest.mark.parametrize("kind, norm, ws, kwargs", [
    ("resnet", "GN", False, dict(depth=50)),                          # open-mmlab://detectron/resnet50_gn
    ("resnet", "GN", True, dict(depth=101)),                          # open-mmlab://jhu/resnet101_gn_ws
    ("resnext", "GN", True, dict(depth=50, groups=32, base_width=4)),  # open-mmlab://jhu/resnext50_32x4d_gn_ws
])
def test_openmmlab_layout(tmp_path, kind, norm, ws, kwargs):
    reference = _mmdet_backbone(kind, norm_cfg=dict(type=norm, num_groups=32, requires_grad=True),
                                conv_cfg=dict(type="ConvWS") if ws else None, **kwargs)
    state = reference.state_dict()
    assert any(".gn1." in k for k in state)  # mmcv names GroupNorm layers gnN
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # as saved from a wrapped model
    x = _image()
    with torch.no_grad():
        expected = reference(x)
        ours = dict(depth=kwargs["depth"], norm=norm, conv_ws=ws)
        if kind == "resnext":
            ours.update(groups=kwargs["groups"], width_per_group=kwargs["base_width"])
        got = _detector(path, **ours).backbone(x)
    _assert_features(list(expected), got)


def _detectron_blobs(reference: nn.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The Caffe2 blobs of ``reference`` (an mmdetection ResNet whose BNs hold affine
    channels: running mean 0, variance 1 - eps), named by hand as Detectron names them."""
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    blobs = {"conv1_w": state["conv1.weight"], "res_conv1_bn_s": state["bn1.weight"],
             "res_conv1_bn_b": state["bn1.bias"]}
    for stage in range(1, 5):
        for block in range(len(getattr(reference, f"layer{stage}"))):
            ours, theirs = f"layer{stage}.{block}.", f"res{stage + 1}_{block}_branch"
            for i, branch in enumerate("abc", start=1):
                blobs[f"{theirs}2{branch}_w"] = state[f"{ours}conv{i}.weight"]
                blobs[f"{theirs}2{branch}_bn_s"] = state[f"{ours}bn{i}.weight"]
                blobs[f"{theirs}2{branch}_bn_b"] = state[f"{ours}bn{i}.bias"]
            if f"{ours}downsample.0.weight" in state:
                blobs[f"{theirs}1_w"] = state[f"{ours}downsample.0.weight"]
                blobs[f"{theirs}1_bn_s"] = state[f"{ours}downsample.1.weight"]
                blobs[f"{theirs}1_bn_b"] = state[f"{ours}downsample.1.bias"]
    blobs["pred_w"] = rng.normal(size=(1000, 2048)).astype(np.float32)  # the ImageNet classifier
    blobs["pred_b"] = np.zeros(1000, np.float32)
    return blobs


@pytest.mark.parametrize("kind, style, kwargs", [
    ("resnet", "caffe", dict(depth=50)),                               # MSRA R-50.pkl
    ("resnet", "caffe", dict(depth=101, base_channels=16)),            # MSRA R-101.pkl, at 1/4 width
    ("resnext", "pytorch", dict(depth=101, groups=64, base_width=4)),  # FB X-101-64x4d.pkl
])
def test_detectron_layout(tmp_path, kind, style, kwargs):
    reference = _mmdet_backbone(kind, style=style, norm_cfg=dict(type="BN", requires_grad=False), norm_eval=True,
                                **kwargs)
    for m in reference.modules():  # Detectron's norms are affine channels
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
            m.running_var.fill_(1 - EPS)
    blobs = _detectron_blobs(reference, np.random.default_rng(0))
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:  # Detectron's files: Python 2 pickles, protocol 2
        pickle.dump({"blobs": blobs} if kind == "resnext" else blobs, f, protocol=2)
    x = _image(96)
    with torch.no_grad():
        expected = reference(x)
        ours = dict(depth=kwargs["depth"], style=style, stem_width=kwargs.get("base_channels", 64))
        if kind == "resnext":
            ours.update(groups=kwargs["groups"], width_per_group=kwargs["base_width"])
        got = _detector(path, **ours).backbone(x)
    _assert_features(list(expected), got)


def test_c4_res5_comes_from_the_file(tmp_path):
    """A C4 model's res5 lives in its box head (and is shared by its mask branch): it takes
    the file's layer4; an RPN on C4 builds no res5 and leaves layer4 unused."""
    torch.manual_seed(0)
    state = ResNet(depth=50, stem_width=8, norm="BN").state_dict()  # the C4 test model's, with res5
    path = tmp_path / "narrow.pth"
    torch.save({**state, "fc.weight": torch.zeros(10, 256), "fc.bias": torch.zeros(10)}, path)
    model = _model("tiny_mask_rcnn_c4", init=str(path))
    init_backbone(model)
    res5 = model.pretrained_modules()["layer4."]
    for key, value in res5.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, state[f"layer4.{key}"], rtol=0, atol=0)
    rpn = build_model(merge(tiny_config(TESTS, name="tiny_mask_rcnn_c4"),
                            {"model": {"roi_heads": None, "backbone": {"init": str(path)}}})["model"])
    assert "unused: layer4.0.conv1.weight" in init_backbone(rpn)


def test_every_zoo_config_names_its_init():
    """Each seed row names the ImageNet weights its source started from, which resolve to a
    URL and a hash check, and whose depth and ResNeXt shape are the config's."""
    zoo = load_zoo()
    for model in zoo.models.values():
        backbone = load_config(model.config)["model"]["backbone"]
        init = backbone.get("init")
        if model.name == "faster_rcnn_r18_fpn_synth":
            assert init is None  # the demo trains from scratch
            continue
        assert init in WEIGHTS, model.name
        weights = WEIGHTS[init]
        assert weights.url.startswith("https://") and (weights.sha256 or weights.md5_url), init
        assert str(backbone["depth"]) in init, (model.name, init)
        if backbone.get("groups", 1) > 1:
            assert f"{backbone['groups']}x{backbone['width_per_group']}d" in init, (model.name, init)
        assert weights.style == backbone["style"] and weights.conv_ws == backbone.get("conv_ws", False), model.name


def test_named_weights_are_fetched_checked_and_cached(tmp_path, monkeypatch):
    source = tmp_path / "published"
    source.mkdir()
    state = {k.removeprefix("backbone."): v for k, v in _model().state_dict().items() if k.startswith("backbone.")}
    file = source / "narrow.pth"
    torch.save(state, file)
    digest = sha256_file(file)
    published = source / f"narrow-{digest[:8]}.pth"
    file.rename(published)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DETZOO_CACHE", str(cache))
    monkeypatch.setitem(WEIGHTS, "test://narrow", ImageNetWeights(published.as_uri(), "pytorch", "pytorch", digest[:8]))
    line = init_backbone(_model(init="test://narrow"))
    assert (cache / published.name).is_file() and "test://narrow" in line
    published.unlink()  # the cached copy is used (and checked) from now on
    init_backbone(_model(init="test://narrow"))

    (cache / published.name).write_bytes(b"tampered")  # a cached file failing its hash is refused and removed
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        init_backbone(_model(init="test://narrow"))
    assert not (cache / published.name).exists()

    with pytest.raises(CheckpointError) as offline:  # offline: one line naming the URL and where to put the file
        init_backbone(_model(init="test://narrow"))
    assert published.as_uri() in str(offline.value) and str(cache / published.name) in str(offline.value)


def test_detectron_weights_checked_by_md5(tmp_path, monkeypatch):
    import hashlib

    source = tmp_path / "ImageNetPretrained"
    source.mkdir()
    blobs = {"conv1_w": _model().backbone.conv1.weight.detach().numpy()}
    with open(source / "R-tiny.pkl", "wb") as f:
        pickle.dump(blobs, f, protocol=2)
    (source / "R-tiny.pkl.md5sum").write_text("0" * 32 + "\n")
    monkeypatch.setenv("DETZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(WEIGHTS, "detectron://R-tiny.pkl",
                        ImageNetWeights((source / "R-tiny.pkl").as_uri(), "detectron", "caffe"))
    with pytest.raises(CheckpointError, match="md5 mismatch"):
        init_backbone(_model(init="detectron://R-tiny.pkl", style="caffe"))
    (source / "R-tiny.pkl.md5sum").write_text(hashlib.md5((source / "R-tiny.pkl").read_bytes()).hexdigest())
    # a stem alone: the rest is missing
    with pytest.raises(PretrainedError, match="do not fit model.backbone.*missing"):
        init_backbone(_model(init="detectron://R-tiny.pkl", style="caffe"))


def test_conventions_and_names_are_checked(tmp_path):
    with pytest.raises(PretrainedError, match="caffe-style.*model.backbone.style='caffe'"):
        init_backbone(_model(init="detectron://MSRA/R-50.pkl"))
    with pytest.raises(PretrainedError, match="weight standardisation; set model.backbone.conv_ws=True"):
        init_backbone(_model(init="open-mmlab://jhu/resnet50_gn_ws"))
    with pytest.raises(PretrainedError, match="unknown ImageNet weights 'torchvision://resnet51'"):
        _model(init="torchvision://resnet51")
    with pytest.raises(CheckpointError, match="no such file"):
        init_backbone(_model(init=str(tmp_path / "absent.pth")))
    wrong = tmp_path / "wrong_width.pth"
    torch.save(torchvision.models.resnet18().state_dict(), wrong)  # full width, the tiny model's is 1/8
    with pytest.raises(PretrainedError, match="with another shape"):
        init_backbone(_model(init=str(wrong)))


def test_frozen_stages_keep_the_files_weights(tmp_path, synth_data):
    """Loaded before training: the frozen stem and res2 and every frozen BN keep the file's
    values through training, while the stages after them learn."""
    torch.manual_seed(0)
    cfg = tiny_config(synth_data, "model.backbone.norm='FrozenBN'", "model.backbone.frozen_stages=2",
                      "schedule.iters=3", "schedule.steps=(2,)", "runtime.checkpoint_interval=3")
    source = build_model(cfg["model"])
    for m in source.backbone.modules():
        if hasattr(m, "running_var"):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    state = {k.removeprefix("backbone."): v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    path = tmp_path / "init.pth"
    torch.save(state, path)
    train(apply_overrides(cfg, [f"model.backbone.init={str(path)!r}"]), work_dir=tmp_path / "run")
    trained = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)["model"]
    frozen = [k for k in state if k.startswith(("conv1.", "bn1.", "layer1.")) or "running_" in k or "bn" in k]
    for key in frozen:
        torch.testing.assert_close(trained[f"backbone.{key}"], state[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(trained["backbone.layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])


def test_zoo_show_prints_the_init(capsys):
    from detzoo.cli import main

    assert main(["zoo", "show", "mask_rcnn_r50_caffe_c4_1x_coco"]) == 0
    out = capsys.readouterr().out
    assert ("init:       detectron://MSRA/R-50.pkl: https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/"
            "MSRA/R-50.pkl (md5 from https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl.md5sum"
            ) in out
    assert main(["zoo", "show", "faster_rcnn_r50_fpn_1x_coco"]) == 0
    assert "torchvision://resnet50: https://download.pytorch.org/models/resnet50-0676ba61.pth (sha256 0676ba61..." in (
        capsys.readouterr().out)

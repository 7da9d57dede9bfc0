"""ResNet and ResNeXt backbones, pytorch and caffe style.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, blocks with
``conv1``/``bn1``/.../``downsample.0``/``downsample.1``), so a torchvision ResNet state dict
without ``fc.*`` loads with ``strict=True``.
"""

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn

from detzoo.backbones.imagenet import check_init
from detzoo.layers.conv import ConvNorm
from detzoo.layers.norm import build_norm, conv_class, conv_norm_forward, is_batch_norm

__all__ = ["DEPTHS", "FEATURES", "STYLES", "BasicBlock", "Bottleneck", "ResNet", "make_res_layer"]

# depth -> (block, number of blocks in layer1..layer4)
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STYLES = ("pytorch", "caffe")
FEATURES = ("c2", "c3", "c4", "c5")


def _downsample(
    in_channels: int, out_channels: int, stride: int, norm: str, conv_ws: bool
) -> ConvNorm | None:
    """Projection shortcut (1x1 conv + norm) where the identity does not fit, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    conv = conv_class(conv_ws)(in_channels, out_channels, 1, stride=stride, bias=False)
    return ConvNorm(conv, build_norm(norm, out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34), stride on the first."""

    expansion = 1

    def __init__(
        self,
        *,
        in_channels: int,
        planes: int,
        stride: int = 1,
        norm: str = "FrozenBN",
        conv_ws: bool = False,
    ) -> None:
        super().__init__()
        conv = conv_class(conv_ws)
        self.conv1 = conv(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = build_norm(norm, planes)
        self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = build_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, planes, stride, norm, conv_ws)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(conv_norm_forward(self.conv1, self.bn1, x))
        out = conv_norm_forward(self.conv2, self.bn2, out)
        return self.relu(out.add_(identity))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 x4 block.

    ``stride_in_1x1`` puts the stride on the first 1x1 conv (caffe style) instead of the 3x3
    (pytorch style). Inner width is ``int(planes * width_per_group / 64) * groups``, as torchvision.
    """

    expansion = 4

    def __init__(
        self,
        *,
        in_channels: int,
        planes: int,
        stride: int = 1,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        norm: str = "FrozenBN",
        conv_ws: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * width_per_group / 64) * groups
        if width == 0:
            raise ValueError(
                f"bottleneck width is 0 for planes={planes}, groups={groups}, "
                f"width_per_group={width_per_group}; use wider planes"
            )
        out_channels = planes * self.expansion
        stride1, stride3 = (stride, 1) if stride_in_1x1 else (1, stride)
        conv = conv_class(conv_ws)
        self.conv1 = conv(in_channels, width, 1, stride=stride1, bias=False)
        self.bn1 = build_norm(norm, width)
        self.conv2 = conv(width, width, 3, stride=stride3, padding=1, groups=groups, bias=False)
        self.bn2 = build_norm(norm, width)
        self.conv3 = conv(width, out_channels, 1, bias=False)
        self.bn3 = build_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride, norm, conv_ws)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(conv_norm_forward(self.conv1, self.bn1, x))
        out = self.relu(conv_norm_forward(self.conv2, self.bn2, out))
        out = conv_norm_forward(self.conv3, self.bn3, out)
        return self.relu(out.add_(identity))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming normal (fan_out) for every conv; norms keep their 1/0 defaults."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def make_res_layer(
    *,
    block: str,
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    groups: int = 1,
    width_per_group: int = 64,
    style: str = "pytorch",
    norm: str = "FrozenBN",
    conv_ws: bool = False,
) -> nn.Sequential:
    """One ResNet stage (torchvision's ``layerN``), also usable alone, e.g. as the C4 res5 head.

    ``num_blocks`` blocks of type ``block`` ("basic" or "bottleneck"); the first has ``stride``
    and a projection shortcut. Output channels: ``planes * block.expansion``.
    """
    if style not in STYLES:
        raise ValueError(f"unknown ResNet style {style!r}; valid: {', '.join(STYLES)}")
    if block == "basic":
        if groups != 1 or width_per_group != 64:
            raise ValueError(
                "basic blocks need groups=1 and width_per_group=64, "
                f"got groups={groups}, width_per_group={width_per_group}"
            )
        make = partial(BasicBlock, planes=planes, norm=norm, conv_ws=conv_ws)
    elif block == "bottleneck":
        make = partial(
            Bottleneck,
            planes=planes,
            groups=groups,
            width_per_group=width_per_group,
            stride_in_1x1=style == "caffe",
            norm=norm,
            conv_ws=conv_ws,
        )
    else:
        raise ValueError(f"unknown block {block!r}; valid: {', '.join(BLOCKS)}")
    out_channels = planes * BLOCKS[block].expansion
    layer = nn.Sequential(
        make(in_channels=in_channels, stride=stride),
        *(make(in_channels=out_channels, stride=1) for _ in range(num_blocks - 1)),
    )
    _kaiming_init(layer)
    return layer


class ResNet(nn.Module):
    """ResNet / ResNeXt backbone returning ``{"c2".."c5"}`` feature maps (no fc).

    - ResNeXt: X-101-32x8d is ``depth=101, groups=32, width_per_group=8``.
    - ``frozen_stages`` (detectron2's FREEZE_AT): 0 none, 1 stem, 2 stem + layer1, ... 5 all.
      Frozen parameters get ``requires_grad=False`` and their BN stays in eval mode.
    - ``norm_eval``: keep every BN/SyncBN in eval mode during training (mmdetection).
    - ``stem_width``: stem channels; stage ``i`` has ``stem_width * 2**i`` planes (64 = standard).
    - ``out_channels`` / ``strides``: per requested feature. Stages after the last requested
      one are not built: a C4 model's res5 lives in its RoI head.
    - ``init``: where the weights come from before training (``detzoo.backbones.imagenet``):
      a name of its ``WEIGHTS`` (``torchvision://resnet50``), a file, or None (the Kaiming
      init here). The backbone only records it; training loads it
      (``detzoo.engine.initialize``), a checkpoint's weights replace it.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        groups: int = 1,
        width_per_group: int = 64,
        style: str = "pytorch",
        norm: str = "FrozenBN",
        conv_ws: bool = False,
        frozen_stages: int = 1,
        norm_eval: bool = False,
        out_features: Sequence[str] = FEATURES,
        stem_width: int = 64,
        init: str | None = None,
    ) -> None:
        super().__init__()
        check_init(init)
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth}; valid: {', '.join(map(str, DEPTHS))}")
        if not 0 <= frozen_stages <= 5:
            raise ValueError(f"frozen_stages={frozen_stages} out of range; valid: 0 to 5")
        if not out_features or any(f not in FEATURES for f in out_features):
            raise ValueError(
                f"out_features {tuple(out_features)} must be a non-empty subset of {FEATURES}"
            )
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init = init
        self.style = style
        self.conv_ws = conv_ws
        self.out_features = tuple(f for f in FEATURES if f in out_features)

        self.conv1 = conv_class(conv_ws)(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = build_norm(norm, stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        _kaiming_init(self.conv1)

        block, self._stage_blocks = DEPTHS[depth]
        self._stage_args = dict(
            block=block, groups=groups, width_per_group=width_per_group, style=style, norm=norm, conv_ws=conv_ws
        )
        self._stem_width = stem_width
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        self._last_channels = stem_width
        for i, name in enumerate(FEATURES[: FEATURES.index(self.out_features[-1]) + 1]):
            stage, self._last_channels = self._make_stage(i, self._last_channels)
            self.add_module(f"layer{i + 1}", stage)
            if name in self.out_features:
                self.out_channels[name] = self._last_channels
                self.strides[name] = 4 * 2**i

        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train()

    def _make_stage(self, i: int, in_channels: int) -> tuple[nn.Sequential, int]:
        """Stage ``i`` (0 = res2) and its output channels."""
        planes = self._stem_width * 2**i
        stage = make_res_layer(
            in_channels=in_channels,
            planes=planes,
            num_blocks=self._stage_blocks[i],
            stride=1 if i == 0 else 2,
            **self._stage_args,
        )
        return stage, planes * BLOCKS[self._stage_args["block"]].expansion

    def make_res5(self) -> tuple[nn.Sequential, int]:
        """A res5 stage with this backbone's settings, fed by its last stage (res4), for
        a C4 model's RoI head; returns it and its output channels."""
        if self.out_features[-1] != "c4":
            raise ValueError("make_res5 needs a backbone that ends at res4 (out_features ending with 'c4')")
        return self._make_stage(3, self._last_channels)

    def _frozen_modules(self) -> list[nn.Module]:
        stem = [self.conv1, self.bn1] if self.frozen_stages >= 1 else []
        stages = [f"layer{i}" for i in range(1, self.frozen_stages)]
        return stem + [getattr(self, name) for name in stages if hasattr(self, name)]

    def train(self, mode: bool = True) -> "ResNet":
        """Set train mode, keeping frozen stages (and every BN when ``norm_eval``) in eval."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if is_batch_norm(module):
                        module.eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(conv_norm_forward(self.conv1, self.bn1, x)))
        features = {}
        for i, name in enumerate(FEATURES[: FEATURES.index(self.out_features[-1]) + 1]):
            x = getattr(self, f"layer{i + 1}")(x)
            if name in self.out_features:
                features[name] = x
        return features

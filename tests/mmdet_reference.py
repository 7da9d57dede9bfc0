"""mmdetection 3.3 as a reference to test against, on the CPU, without mmcv's compiled ops.

mmcv-lite ships mmcv without its compiled extension ``mmcv._ext``, which ``mmcv.ops``
(and so ``mmdet.models``) imports. ``install_ext_stand_in()`` registers a stand-in module
under that name whose ``nms`` and ``roi_align_forward`` compute with torchvision.ops (the
same arithmetic as mmcv's CPU kernels: greedy IoU suppression in score order; average
RoIAlign with bilinear sampling); any other op raises when called, so a reference model
that needs one fails loudly instead of computing something else.

``import_mmdet()`` returns the ``mmdet`` package (registered), or skips the calling test
when mmdetection is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align as tv_roi_align


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    if offset != 0:
        raise NotImplementedError("mmcv._ext stand-in: nms with offset=1 (legacy +1 box widths)")
    return tv_nms(boxes, scores, float(iou_threshold))


def _roi_align_forward(
    input, rois, output, argmax_y, argmax_x, *, aligned_height, aligned_width, spatial_scale,
    sampling_ratio, pool_mode, aligned
) -> None:
    if pool_mode != 1:  # mmcv: {'max': 0, 'avg': 1}
        raise NotImplementedError("mmcv._ext stand-in: RoIAlign max pooling")
    output.copy_(
        tv_roi_align(input, rois, (aligned_height, aligned_width), spatial_scale, sampling_ratio, aligned)
    )


class _StandIn(types.ModuleType):
    """``mmcv._ext``: the two ops above; every other name exists (mmcv checks them at
    import) but raises if a model calls it."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext stand-in has no {name}")

        return missing


def install_ext_stand_in() -> None:
    if "mmcv._ext" in sys.modules:
        return
    module = _StandIn("mmcv._ext")
    module.nms = _nms
    module.roi_align_forward = _roi_align_forward
    sys.modules["mmcv._ext"] = module


def import_mmdet():
    pytest.importorskip("mmcv")
    install_ext_stand_in()
    mmdet = pytest.importorskip("mmdet")
    from mmdet.utils import register_all_modules

    register_all_modules()
    return mmdet


def mmdet_config_path(name: str) -> Path:
    """The config file mmdetection ships for ``name`` (e.g. ``fpg/faster-rcnn_r50_fpg_crop640-50e_coco``)."""
    mmdet = import_mmdet()
    path = Path(mmdet.__file__).parent / ".mim" / "configs" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path

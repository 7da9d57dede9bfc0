"""Inference over a dataset and COCO evaluation of the results."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from detzoo.data.coco import CocoDataset
from detzoo.data.loader import build_test_loader
from detzoo.engine import distributed
from detzoo.evaluation.coco import evaluate_coco, instances_to_coco_results


@torch.no_grad()
def run_inference(
    model: nn.Module, dataset: CocoDataset, *, cat_ids: Sequence[int], num_workers: int = 0
) -> list[dict]:
    """COCO results for every image, in original image pixels, label ``i`` written as
    category ``cat_ids[i]`` (the model's classes, which may differ from the dataset's);
    under torch.distributed each rank runs a share and every rank gets all results."""
    was_training = model.training
    model.eval()
    shard = Subset(dataset, range(distributed.rank(), len(dataset), distributed.world_size()))
    results = []
    for samples in tqdm(
        build_test_loader(shard, num_workers=num_workers), desc="inference", disable=not distributed.is_main()
    ):
        preds = model([s.image for s in samples], original_sizes=[s.original_size for s in samples])
        results += instances_to_coco_results(
            [s.image_id for s in samples], [p.to("cpu") for p in preds], cat_ids
        )
    model.train(was_training)
    return [r for part in distributed.gather(results) for r in part]


def iou_types(model: nn.Module) -> list[str]:
    """What ``model`` predicts, as COCO evaluation types."""
    heads = model.roi_heads
    return ["bbox"] + ["segm"] * (heads.mask is not None) + ["keypoints"] * (heads.keypoint is not None)


def evaluate(
    model: nn.Module, dataset: CocoDataset, *, cat_ids: Sequence[int], num_workers: int = 0
) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """COCO metrics of ``model`` on ``dataset`` per evaluation type (``bbox``, and
    ``segm`` / ``keypoints`` when the model predicts them); returns (metrics, results)."""
    results = run_inference(model, dataset, cat_ids=cat_ids, num_workers=num_workers)
    metrics = {
        t: evaluate_coco(dataset.coco, results, iou_type=t, img_ids=dataset.image_ids) for t in iou_types(model)
    }
    return metrics, results

"""Inference over a dataset and its COCO evaluation: boxes, masks and keypoints for
detectors, proposal recall for RPNs."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from detzoo.data.coco import CocoDataset, Sample
from detzoo.data.loader import build_test_loader
from detzoo.data.proposals import save_proposals
from detzoo.engine import distributed
from detzoo.engine.inference import predict_images
from detzoo.engine.tta import TestTimeAug
from detzoo.errors import DataError
from detzoo.evaluation.coco import evaluate_coco, instances_to_coco_results, write_results
from detzoo.evaluation.proposals import evaluate_proposals
from detzoo.evaluation.types import BBOX, KEYPOINTS, PROPOSALS, SEGM
from detzoo.structures import Instances

logger = logging.getLogger("detzoo.evaluation")
_SHOWN = 5  # categories listed in a message


def model_inputs(samples: Sequence[Sample]) -> dict[str, Any]:
    """Keyword arguments of the detector's forward and of ``predict_images`` for a batch of
    samples (targets aside): Fast R-CNN's proposals."""
    proposals = [s.proposals for s in samples]
    return {"proposals": None if proposals[0] is None else proposals}


def predict_dataset(
    model: nn.Module,
    dataset: CocoDataset,
    *,
    num_workers: int = 0,
    tta: TestTimeAug | None = None,
    amp: str | None = None,
) -> list[tuple[int, Instances]]:
    """(image id, predictions in original image pixels on the CPU) for every image: the
    images as read go through ``predict_images`` with the dataset's test transform, or
    ``tta``, under autocast with ``amp`` (``runtime.amp``); under torch.distributed each
    rank runs a share and every rank gets all predictions."""
    was_training = model.training
    model.eval()
    as_read = copy.copy(dataset)
    as_read.transforms = None  # images and proposals as read; predict_images applies dataset.transforms
    shard = Subset(as_read, range(distributed.rank(), len(dataset), distributed.world_size()))
    out = []
    for samples in tqdm(
        build_test_loader(shard, num_workers=num_workers), desc="inference", disable=not distributed.is_main()
    ):
        preds = predict_images(
            model, [s.image for s in samples], transform=dataset.transforms, tta=tta, amp=amp, **model_inputs(samples)
        )
        out += [(s.image_id, p.to("cpu")) for s, p in zip(samples, preds)]
    model.train(was_training)
    return [p for part in distributed.gather(out) for p in part]


def compare_classes(cat_ids: Sequence[int], class_names: Sequence[str], source: str, dataset: CocoDataset) -> None:
    """Before a model predicting categories ``cat_ids`` named ``class_names`` (those of
    ``source``: a checkpoint, or the training annotation file) is evaluated on ``dataset``:
    a ``DataError`` naming both when it predicts category ids the dataset lacks (their
    results could not be scored), and a warning saying what differs when a category id has
    another name in the dataset (swapped, renamed) or the dataset has categories it never
    predicts (their AP is 0)."""
    theirs = dict(zip(dataset.cat_ids, dataset.class_names))
    ours = dict(zip(cat_ids, class_names))
    lacking = [f"{i} ({name!r})" for i, name in ours.items() if i not in theirs]
    if lacking:
        raise DataError(f"{source} predicts category ids {_listed(lacking)}, which {dataset.ann_file} lacks (its "
                        f"categories: {_listed([f'{i} ({n!r})' for i, n in theirs.items()])}): evaluate it on a "
                        "dataset of its categories")
    renamed = [f"id {i} is {name!r} there but {theirs[i]!r} here" for i, name in ours.items() if theirs[i] != name]
    if renamed:
        logger.warning("%s and %s name their categories differently (%s): detections are scored against the "
                       "dataset's category of the same id", source, dataset.ann_file, _listed(renamed, "; "))
    unpredicted = [f"{i} ({name!r})" for i, name in theirs.items() if i not in ours]
    if unpredicted:
        logger.warning("%s has categories %s that %s does not predict: their AP is 0", dataset.ann_file,
                       _listed(unpredicted), source)


def _listed(items: Sequence[str], separator: str = ", ") -> str:
    return separator.join(items[:_SHOWN]) + (f"{separator}..." if len(items) > _SHOWN else "")


OUTPUT_EVAL_TYPES = {"proposals": PROPOSALS, "boxes": BBOX, "masks": SEGM, "keypoints": KEYPOINTS}


def iou_types(model: nn.Module) -> list[str]:
    """What ``model`` predicts, as evaluation types."""
    return [OUTPUT_EVAL_TYPES[o] for o in model.outputs]


def evaluate(
    model: nn.Module,
    dataset: CocoDataset,
    *,
    cat_ids: Sequence[int],
    num_workers: int = 0,
    out: str | Path | None = None,
    tta: TestTimeAug | None = None,
    amp: str | None = None,
) -> dict[str, dict[str, float]]:
    """COCO metrics per evaluation type: ``bbox`` (+ ``segm`` / ``keypoints``) with label
    ``i`` written as category ``cat_ids[i]``, or ``proposals`` (AR@100/300/1000) for an
    RPN. ``out``: write the COCO results json, or for an RPN the proposals ``.npz``.
    ``tta``: test-time augmentation (``detzoo.engine.tta``) instead of the test transform.
    ``amp``: ``runtime.amp``, inference under autocast in that dtype."""
    preds = predict_dataset(model, dataset, num_workers=num_workers, tta=tta, amp=amp)
    if model.is_proposal_generator:
        proposals = {i: (p.boxes.numpy(), p.scores.numpy()) for i, p in preds}
        if out is not None and distributed.is_main():
            save_proposals(out, proposals)
        return {PROPOSALS: evaluate_proposals(dataset.coco, proposals, img_ids=dataset.image_ids)}
    results = instances_to_coco_results([i for i, _ in preds], [p for _, p in preds], cat_ids)
    if out is not None and distributed.is_main():
        write_results(out, results)
    return {t: evaluate_coco(dataset.coco, results, iou_type=t, img_ids=dataset.image_ids) for t in iou_types(model)}

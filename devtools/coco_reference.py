"""pycocotools, the reference of ``detzoo.evaluation.fast_coco`` (tests/test_fast_coco.py,
benchmarks/coco_eval_speed.py)."""

from __future__ import annotations

import copy

from pycocotools.coco import COCO

from detzoo.evaluation.coco import coco_index


def make_coco(dataset: dict) -> COCO:
    """A COCO of its own copy of ``dataset`` (COCOeval's segm evaluation rewrites the ground truth)."""
    return coco_index(copy.deepcopy(dataset))
